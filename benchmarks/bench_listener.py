"""A burst of run events through the listener: drain time and peak memory (issue 13).

Starts its own Tansu broker and one-node Slurm cluster (the test-suite's helpers), writes small mock
runs and a 3-variable context, runs ``damnit listen`` as a process of its own (as supervisord does),
sends N ``migration_complete`` events as fast as one producer can, and measures

- *acknowledged*: until every event's offset is committed (each run submitted to Slurm, processed
  here, or durably queued: the listener's part of the work);
- *processed*: until every run has its values in runs.sqlite;
- *peak memory*: the listener process's peak RSS (``VmHWM``), and the peak RSS of the listener with
  all its child processes (context workers) sampled every 0.2 s.

Two passes: ``local`` (``use_slurm 0``: processed in the listener) and ``slurm`` (a job per run).

    python benchmarks/bench_listener.py [--events 500] [--ntrains 5] [--passes local,slurm]
                                        [--listener-repo PATH]

``--listener-repo`` runs another checkout's listener (e.g. the commit before issue 13) for a
side-by-side figure; the rest (broker, Slurm, mock data, measuring) stays this checkout's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
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
TOPIC = "test.r2d2"


def send_burst(address: str, proposal: int, runs: list[int]) -> tuple[float, dict[int, tuple[int, int]]]:
    """Send one event per run without waiting for each; returns when the broker has them all, with
    the offsets of the burst in each partition: ``{partition: (first, end)}``."""
    from aiokafka import AIOKafkaProducer

    async def send():
        prod = AIOKafkaProducer(bootstrap_servers=address, linger_ms=5)
        await prod.start()
        try:
            futures = [await prod.send(TOPIC, json.dumps({"event": "migration_complete", "proposal": proposal,
                                                          "run": r}).encode()) for r in runs]
            return await asyncio.gather(*futures)
        finally:
            await prod.stop()

    t0 = time.monotonic()
    sent = asyncio.run(send())
    span: dict[int, tuple[int, int]] = {}
    for meta in sent:
        first, end = span.get(meta.partition, (meta.offset, meta.offset + 1))
        span[meta.partition] = (min(first, meta.offset), max(end, meta.offset + 1))
    return time.monotonic() - t0, span


def committed_fraction(address: str, group: str, span: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(events committed, events sent) for the listener's group, from the offsets of the burst
    (``{partition: (first, end)}``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def ask():
        c = AIOKafkaConsumer(bootstrap_servers=address, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            done = 0
            for partition, (first, end) in span.items():
                done += min(max(((await c.committed(TopicPartition(TOPIC, partition))) or 0) - first, 0), end - first)
            return done, sum(end - first for first, end in span.values())
        finally:
            await c.stop()

    return asyncio.run(ask())


def processed_runs(db_dir: Path, runs: set[int]) -> int:
    conn = sqlite3.connect(f"file:{db_dir / 'runs.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        got = {r for (r,) in conn.execute("SELECT DISTINCT run FROM run_variables WHERE name='n_trains' "
                                          "AND value IS NOT NULL")}
    finally:
        conn.close()
    return len(got & runs)


class MemorySampler(threading.Thread):
    """Peak RSS of a process and its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_tree_kb = 0
        self.stop_event = threading.Event()

    @staticmethod
    def _children() -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                kids.setdefault(ppid, []).append(int(d.name))
        return kids

    @staticmethod
    def _rss_kb(pid: int, field: str = "VmRSS") -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self.stop_event.wait(0.2):
            kids = self._children()
            todo, total = [self.pid], 0
            while todo:
                p = todo.pop()
                total += self._rss_kb(p)
                todo += kids.get(p, [])
            self.peak_tree_kb = max(self.peak_tree_kb, total)

    def listener_peak_kb(self) -> int:
        return self._rss_kb(self.pid, "VmHWM")


def run_pass(name: str, work: Path, broker, proposal: int, runs: list[int], db_dir: Path, use_slurm: bool,
             listener_repo: Path, timeout: float) -> dict:
    from backend.services.listener import CONSUMER_GROUP
    from backend.services.listener_db import ListenerDB

    ldir = work / f"listener-{name}"
    ldir.mkdir()
    with ListenerDB(ldir) as ldb:
        ldb.add_proposal_db(proposal, db_dir, False)
        ldb.settings["use_slurm"] = use_slurm
        ldb.settings["listening_since"] = time.time() - 5
    env = {**os.environ, "PYTHONPATH": str(listener_repo)}
    log_path = ldir / "stderr.txt"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "listen", str(ldir)], cwd=listener_repo,
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    group = CONSUMER_GROUP.format(str(ldir.absolute()).replace("/", "_"))
    try:
        deadline = time.monotonic() + 120
        log_file = ldir / "damnit.log"
        while not (log_file.exists() and "Listening for run events" in log_file.read_text(errors="replace")):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the listener did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(2)
        idle_kb = sampler.listener_peak_kb()
        t0 = time.monotonic()
        send_s, ends = send_burst(broker.address, proposal, runs)
        print(f"  {name}: {len(runs)} events on the broker in {send_s:.2f} s")
        acked = processed = None
        wanted = set(runs)
        last_report = 0.0
        while time.monotonic() - t0 < timeout:
            now = time.monotonic() - t0
            if acked is None:
                done, total = committed_fraction(broker.address, group, ends)
                if total and done >= total:
                    acked = now
            n = processed_runs(db_dir, wanted)
            if n == len(wanted):
                processed = now
            if now - last_report > float(os.environ.get("BENCH_REPORT_S", 15)):
                done, total = committed_fraction(broker.address, group, ends)
                print(f"    {now:.0f} s: {n} of {len(runs)} runs processed, {done} of {total} events acknowledged",
                      flush=True)
                last_report = now
            if acked is not None and processed is not None:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the listener exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        listener_kb = sampler.listener_peak_kb()
    finally:
        sampler.stop_event.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    result = {"pass": name, "events": len(runs), "acknowledged_s": acked, "processed_s": processed,
              "listener_idle_mb": idle_kb / 1024, "listener_peak_mb": listener_kb / 1024,
              "tree_peak_mb": sampler.peak_tree_kb / 1024,
              "processed": processed_runs(db_dir, wanted)}
    fmt = lambda t: f"{t:.1f} s" if t is not None else f"not within {timeout:.0f} s"  # noqa: E731
    print(f"  {name}: acknowledged after {fmt(acked)}, processed after {fmt(processed)} "
          f"({result['processed']}/{len(runs)} runs); listener peak RSS {result['listener_peak_mb']:.0f} MB "
          f"(idle {result['listener_idle_mb']:.0f} MB), with its workers {result['tree_peak_mb']:.0f} MB", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--ntrains", type=int, default=5)
    parser.add_argument("--passes", default="local,slurm")
    parser.add_argument("--listener-repo", type=Path, default=REPO)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the broker and Slurm on the way out

    from backend.base import mockruns
    from backend.storage.damnit_folder import initialize_proposal
    from tests.infra.kafka import TansuBroker
    from tests.infra.slurm import SlurmCluster

    passes = [p for p in args.passes.split(",") if p]
    work = Path(tempfile.mkdtemp(prefix="bench-listener-", dir="/tmp"))
    broker = TansuBroker(work / "tansu")
    cluster = SlurmCluster(work / "slurm")
    proposal = 4567
    results = []
    try:
        broker.start()
        if "slurm" in passes:
            cluster.start()
            os.environ["SLURM_CONF"] = str(cluster.conf)
        os.environ.update(AMORE_BROKER=broker.address, EXTRA_DATA_DATA_ROOT=str(work / "exp"))
        n = args.events
        t0 = time.monotonic()
        mockruns.make_proposal(work / "exp", proposal, range(1, n * len(passes) + 1), ntrains=args.ntrains)
        print(f"{n * len(passes)} mock runs ({args.ntrains} trains) written in {time.monotonic() - t0:.0f} s; "
              f"listener from {args.listener_repo}")
        ctx = work / "context_src.py"
        ctx.write_text(CONTEXT)
        for i, name in enumerate(passes):
            db_dir = work / f"db-{name}"
            db = initialize_proposal(db_dir, proposal, context_file_src=ctx)
            db.metameta.update({"noncluster_cpus": 1, "noncluster_mem": "300M", "slurm_time": "00:10:00"})
            db.close()
            runs = list(range(i * n + 1, (i + 1) * n + 1))
            results.append(run_pass(name, work, broker, proposal, runs, db_dir, name == "slurm",
                                    args.listener_repo.resolve(), args.timeout))
        print("RESULT " + "; ".join(
            f"{r['pass']}: {r['events']} events acknowledged in {r['acknowledged_s'] or float('nan'):.1f} s, "
            f"processed in {r['processed_s'] or float('nan'):.1f} s, listener peak {r['listener_peak_mb']:.0f} MB, "
            f"with workers {r['tree_peak_mb']:.0f} MB" for r in results))
        return 0
    finally:
        cluster.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
