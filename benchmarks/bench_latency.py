"""Event-to-values latency: a ``migration_complete`` event on the broker until ``run_values_updated``
for that run arrives on the database's topic (values in runs.sqlite by then).

Starts its own Tansu broker and one-node Slurm cluster (the test-suite's helpers), writes small mock
runs, and times N events through Slurm jobs, then N through the listener's local processing
(Slurm refusing the job, ``allow_local_processing`` on), then N with a new listener set to
``use_slurm 0`` (context workers started with the listener). Events are sent one at a time.

    python benchmarks/bench_latency.py [--runs 5] [--ntrains 20]

Targets: < 5 s through Slurm, < 2 s with local processing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONTEXT = '''
from damnit_ctx import Variable

@Variable(title="XGM mean", summary="mean")
def xgm_flux(run):
    return run["SA1_XTD2_XGM/DOOCS/MAIN", "pulseEnergy.photonFlux"].ndarray()

@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)

@Variable(title="Sample X", summary="mean")
def sample_x(run):
    return run["SPB_IRU_MOTORS/MOTOR/SAMPLE_X", "actualPosition"].ndarray()
'''


def send_event(address: str, proposal: int, run: int) -> None:
    from aiokafka import AIOKafkaProducer

    from tests.infra.aio import run_async

    async def send():
        prod = AIOKafkaProducer(bootstrap_servers=address)
        await prod.start()
        try:
            await prod.send_and_wait("test.r2d2", json.dumps(
                {"event": "migration_complete", "proposal": proposal, "run": run}).encode())
        finally:
            await prod.stop()

    run_async(send)


class Timeline:
    def __init__(self):
        self.cond = threading.Condition()
        self.seen: dict[tuple[str, int], float] = {}

    def __call__(self, kind, data):
        now = time.monotonic()
        key = (kind if kind != "processing_state_set" else data["status"], data.get("run"))
        with self.cond:
            self.seen.setdefault(key, now)
            self.cond.notify_all()

    def wait(self, key, timeout=120) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while key not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key} within {timeout} s")
                self.cond.wait(left)
            return self.seen[key]


def measure(label, runs, broker, timeline, proposal, db_dir, producer_hint):
    rows = []
    for run in runs:
        t0 = time.monotonic()
        send_event(broker.address, proposal, run)
        t_done = timeline.wait(("run_values_updated", run))
        t_pending = timeline.seen.get(("PENDING", run))
        t_running = timeline.seen.get(("RUNNING", run))
        conn = sqlite3.connect(db_dir / "runs.sqlite")
        n = conn.execute("SELECT count(*) FROM run_variables WHERE run=? AND value IS NOT NULL", (run,)).fetchone()[0]
        conn.close()
        rows.append((run, t_done - t0, (t_pending - t0) if t_pending else None,
                     (t_running - t0) if t_running else None, n))
        print(f"  {label} r{run}: values after {t_done - t0:.2f} s "
              f"(PENDING {fmt(t_pending, t0)}, RUNNING {fmt(t_running, t0)}; {n} values in DB)")
        time.sleep(0.3)
    return rows


def fmt(t, t0):
    return f"{t - t0:.2f} s" if t else "-"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ntrains", type=int, default=20)
    args = parser.parse_args()

    from backend.base import mockruns
    from backend.base.messages import UpdateSubscriber
    from backend.services.listener import Listener
    from backend.services.listener_db import ListenerDB
    from backend.storage.damnit_folder import initialize_proposal
    from tests.infra.kafka import FAST_GROUP_CONSUMER_SETTINGS, TansuBroker
    from tests.infra.slurm import SlurmCluster

    work = Path(tempfile.mkdtemp(prefix="bench-latency-", dir="/tmp"))
    broker = TansuBroker(work / "tansu")
    cluster = SlurmCluster(work / "slurm")
    proposal = 2345
    try:
        broker.start()
        cluster.start()
        os.environ.update(SLURM_CONF=str(cluster.conf), AMORE_BROKER=broker.address,
                          EXTRA_DATA_DATA_ROOT=str(work / "exp"))
        n = args.runs
        mockruns.make_proposal(work / "exp", proposal, range(1, 3 * n + 1), ntrains=args.ntrains)
        ctx = work / "context_src.py"
        ctx.write_text(CONTEXT)
        db_dir = work / "db"
        db = initialize_proposal(db_dir, proposal, context_file_src=ctx)
        db.metameta.update({"noncluster_cpus": 1, "noncluster_mem": "300M"})
        db_id = db.metameta["db_id"]
        db.close()
        ldir = work / "listener"
        ldir.mkdir()
        with ListenerDB(ldir) as ldb:
            ldb.add_proposal_db(proposal, db_dir, False)
            ldb.settings["allow_local_processing"] = True

        timeline = Timeline()
        sub = UpdateSubscriber(db_id, timeline, broker=broker.address).start()
        bg = Listener(ldir, broker=broker.address, consumer_options=FAST_GROUP_CONSUMER_SETTINGS).start_background()
        if not bg.wait_connected(60):
            raise RuntimeError("listener did not connect")

        starts = []
        for i in range(3):  # Slurm's own start-up: an empty job, for comparison
            out = work / f"empty{i}.txt"
            t0 = time.time()
            jid = cluster.sbatch("--cpus-per-task=1", "--mem=10M", f"-o{out}", wrap="date +%s.%N")
            cluster.wait_job(jid)
            starts.append(float(out.read_text().strip()) - t0)
        slurm_start = statistics.median(starts)
        print(f"An empty Slurm job starts {slurm_start:.2f} s after sbatch (median of 3)")

        print(f"Slurm jobs ({n} runs, {args.ntrains} trains, 3 variables):")
        slurm_rows = measure("slurm", range(1, n + 1), broker, timeline, proposal, db_dir, None)

        with sqlite3.connect(db_dir / "runs.sqlite") as conn:  # make Slurm refuse: local fallback
            conn.execute("INSERT OR REPLACE INTO metameta VALUES ('slurm_partition', 'no-such-partition')")
        print(f"Local processing ({n} runs):")
        local_rows = measure("local", range(n + 1, 2 * n + 1), broker, timeline, proposal, db_dir, None)
        bg.stop()

        # A machine without Slurm (`use_slurm 0`): the listener starts the context workers with itself.
        with ListenerDB(ldir) as ldb:
            ldb.settings["use_slurm"] = False
        bg = Listener(ldir, broker=broker.address, consumer_options=FAST_GROUP_CONSUMER_SETTINGS).start_background()
        if not bg.wait_connected(60):
            raise RuntimeError("listener did not connect")
        print(f"Local processing, use_slurm 0 ({n} runs, new listener):")
        only_local_rows = measure("use_slurm 0", range(2 * n + 1, 3 * n + 1), broker, timeline, proposal,
                                  db_dir, None)
        bg.stop()
        sub.stop()

        def summary(rows):
            lat = [r[1] for r in rows]
            return statistics.median(lat), min(lat), max(lat)

        s_med, s_min, s_max = summary(slurm_rows)
        l_med, l_min, l_max = summary(local_rows)
        l_warm = statistics.median([r[1] for r in local_rows[1:]]) if len(local_rows) > 1 else l_med
        print(f"RESULT slurm median {s_med:.2f} s (min {s_min:.2f}, max {s_max:.2f}; target < 5 s; "
              f"of which Slurm job start-up {slurm_start:.2f} s); "
              f"local median {l_med:.2f} s (min {l_min:.2f}, max {l_max:.2f}, first {local_rows[0][1]:.2f}, "
              f"warm median {l_warm:.2f}; target < 2 s); use_slurm 0: first {only_local_rows[0][1]:.2f} s, "
              f"median {summary(only_local_rows)[0]:.2f} s")
        return 0
    finally:
        cluster.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
