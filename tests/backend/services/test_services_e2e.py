"""End to end on real components: Tansu broker → listener → Slurm (or local) → HDF5 + runs.sqlite →
``run_values_updated`` on the database's topic. Mock runs have non-zero data.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest

from backend.base.messages import UpdateSubscriber
from backend.processing.requests import RunRequest
from backend.services import slurm
from backend.services.listener import Listener
from backend.services.listener_db import ListenerDB
from backend.storage.damnit_folder import initialize_proposal
from tests.infra import REPO
from tests.infra.aio import run_async
from tests.infra.kafka import FAST_GROUP_CONSUMER_SETTINGS
from tests.infra.wait import wait_for

PROPOSAL = 1234
SMALL = {"noncluster_cpus": 1, "noncluster_mem": "300M", "slurm_time": "00:05:00"}

CONTEXT = '''
from pathlib import Path

import numpy as np
from damnit_ctx import Variable


@Variable(title="XGM mean", summary="mean")
def xgm_flux(run):
    return run["SA1_XTD2_XGM/DOOCS/MAIN", "pulseEnergy.photonFlux"].ndarray()


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)


@Variable(title="Spectrum peak", data="proc")
def spec_peak(run):
    return float(run["SPB_XTD9_SPECTROMETER/PROC/SPECTRUM:output", "data.spectrum"].ndarray().max())


@Variable(title="Big")
def big(run):
    # Size from a file next to the context, so a test can make one run's write slow
    size = Path("big_size.txt")
    n = int(size.read_text()) if size.exists() else 10
    return np.arange(n, dtype=np.float64) + 1
'''


class Collector:
    """Messages from a DB topic, with waiting helpers."""

    def __init__(self):
        self.msgs: list[tuple[str, dict]] = []
        self.cond = threading.Condition()

    def __call__(self, kind, data):
        with self.cond:
            self.msgs.append((kind, data))
            self.cond.notify_all()

    def wait(self, pred, timeout=90):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.msgs if pred(*m)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"message not seen in {timeout} s; got {self.msgs}")
                self.cond.wait(left)

    def of_kind(self, kind):
        with self.cond:
            return [d for k, d in self.msgs if k == kind]


def values_updated_for(run):
    return lambda k, d: k == "run_values_updated" and d["run"] == run and "n_trains" in d["values"]


def db_values(db_dir: Path, run: int) -> dict:
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    try:
        rows = conn.execute("SELECT name, value FROM run_variables WHERE proposal=? AND run=?",
                            (PROPOSAL, run)).fetchall()
        return dict(rows)
    finally:
        conn.close()


def send_events(address, *events):
    from aiokafka import AIOKafkaProducer

    async def send():
        prod = AIOKafkaProducer(bootstrap_servers=address)
        await prod.start()
        try:
            for ev in events:
                await prod.send_and_wait("test.r2d2", json.dumps(ev).encode())
        finally:
            await prod.stop()

    run_async(send)


def migration(run):
    return {"event": "migration_complete", "proposal": PROPOSAL, "run": run}


@pytest.fixture
def setup(tmp_path, make_mock_runs, amore_broker, slurm_cluster):
    """Mock runs 1-3 (raw + proc), a DB with CONTEXT, a listener dir, and a subscriber to the DB topic."""
    make_mock_runs(PROPOSAL, [1, 2, 3], with_proc=True, ntrains=20)
    db_dir = tmp_path / "db"
    ctx = tmp_path / "context_src.py"
    ctx.write_text(CONTEXT)
    db = initialize_proposal(db_dir, PROPOSAL, context_file_src=ctx)
    db.metameta.update(SMALL)
    db_id = db.metameta["db_id"]
    db.close()
    ldir = tmp_path / "listener"
    ldir.mkdir()
    with ListenerDB(ldir) as ldb:
        ldb.add_proposal_db(PROPOSAL, db_dir, False)
    collector = Collector()
    sub = UpdateSubscriber(db_id, collector, broker=amore_broker.address).start()
    listeners = []

    def start_listener():
        lst = Listener(ldir, broker=amore_broker.address, consumer_options=FAST_GROUP_CONSUMER_SETTINGS)
        bg = lst.start_background()
        listeners.append(bg)
        assert bg.wait_connected(30)
        return bg

    yield {"db_dir": db_dir, "ldir": ldir, "msgs": collector, "start_listener": start_listener,
           "broker": amore_broker}
    for bg in listeners:
        bg.stop()
    sub.stop()


def test_new_run_processed_by_slurm_job(setup, slurm_cluster):
    s = setup
    s["start_listener"]()
    send_events(s["broker"].address, migration(1))
    s["msgs"].wait(values_updated_for(1))
    values = db_values(s["db_dir"], 1)
    assert values["n_trains"] == 20
    assert values["xgm_flux"] > 100  # mean photon flux of non-zero mock data
    assert "spec_peak" not in values  # a raw event runs raw variables only
    pending = [d for d in s["msgs"].of_kind("processing_state_set") if d["status"] == "PENDING"]
    running = [d for d in s["msgs"].of_kind("processing_state_set") if d["status"] == "RUNNING"]
    assert pending and pending[0]["slurm_job_id"].isdigit() and pending[0]["run"] == 1
    assert running and running[0]["processing_id"] == pending[0]["processing_id"]
    assert running[0]["slurm_job_id"] == pending[0]["slurm_job_id"]  # RUNNING comes from inside the job
    s["msgs"].wait(lambda k, d: k == "processing_finished" and d["processing_id"] == pending[0]["processing_id"])
    with h5py.File(s["db_dir"] / "extracted_data" / f"p{PROPOSAL}_r1.h5", "r") as f:
        assert f["n_trains/data"][()] == 20
    assert "Processing r1" in (s["db_dir"] / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()

    # A proc event for the same run adds the proc variable
    send_events(s["broker"].address, {"event": "run_corrections_complete", "proposal": PROPOSAL, "run": 1})
    s["msgs"].wait(lambda k, d: k == "run_values_updated" and "spec_peak" in d["values"])
    assert db_values(s["db_dir"], 1)["spec_peak"] > 0


def test_local_fallback_when_slurm_refuses(setup):
    s = setup
    with sqlite3.connect(s["db_dir"] / "runs.sqlite") as conn:
        conn.execute("INSERT OR REPLACE INTO metameta VALUES ('slurm_partition', 'no-such-partition')")
    with ListenerDB(s["ldir"]) as ldb:
        ldb.settings["allow_local_processing"] = True
    s["start_listener"]()
    send_events(s["broker"].address, migration(2))
    s["msgs"].wait(values_updated_for(2))
    assert db_values(s["db_dir"], 2)["n_trains"] == 20
    pending = [d for d in s["msgs"].of_kind("processing_state_set") if d["status"] == "PENDING"]
    assert pending and pending[0]["slurm_job_id"] is None
    log = (s["db_dir"] / "process_logs" / f"r2-p{PROPOSAL}.out").read_text()
    assert "Slurm submission failed" in log and "processing locally" in log


def test_reprocess_through_slurm_array(setup, slurm_cluster):
    s = setup
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", "1", "2", "3", "--concurrent-jobs",
                          "2"], cwd=s["db_dir"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Submitted 3 run(s)" in res.stdout
    for run in (1, 2, 3):
        s["msgs"].wait(lambda k, d, run=run: k == "run_values_updated" and d["run"] == run
                       and "spec_peak" in d["values"], timeout=120)
        assert db_values(s["db_dir"], run)["n_trains"] == 20
    ids = {d["slurm_job_id"] for d in s["msgs"].of_kind("processing_state_set") if d["status"] == "PENDING"}
    array_ids = {i.split("_")[0] for i in ids}
    assert len(array_ids) == 1 and sorted(i.split("_")[1] for i in ids) == ["0", "1", "2"]
    out = slurm_cluster.run("scontrol", "show", "job", next(iter(array_ids))).stdout
    assert "ArrayTaskThrottle=2" in out


def test_cancel_queued_job(setup, slurm_cluster, tmp_path):
    s = setup
    blockers = [slurm_cluster.sbatch("--cpus-per-task=1", "--mem=10M", wrap="sleep 120") for _ in range(2)]
    try:
        assert all(wait_for(lambda b=b: slurm_cluster.job_state(b) == "RUNNING", 30) for b in blockers)
        s["start_listener"]()
        send_events(s["broker"].address, migration(3))
        pending = s["msgs"].wait(lambda k, d: k == "processing_state_set" and d["run"] == 3)[1]
        tracker = slurm.JobTracker()
        for kind, data in list(s["msgs"].msgs):
            tracker.on_message(kind, data)
        assert slurm.squeue_states([pending["slurm_job_id"]]) == {pending["slurm_job_id"]: "PENDING"}
        results = tracker.cancel_jobs_for_runs([(PROPOSAL, 3)], s["db_dir"])
        assert [(r.cancelled, r.state) for r in results] == [(True, "PENDING")]
        assert slurm_cluster.wait_job(int(pending["slurm_job_id"])) == "CANCELLED"
        log = (s["db_dir"] / "process_logs" / f"r3-p{PROPOSAL}.out").read_text()
        assert f"Cancelled PENDING Slurm job {pending['slurm_job_id']} by" in log
        assert db_values(s["db_dir"], 3) == {}
        assert tracker.check_slurm_jobs() and not tracker.jobs
    finally:
        for b in blockers:
            slurm_cluster.run("scancel", str(b), check=False)



def test_job_killed_mid_write_leaves_previous_file_intact(setup, slurm_cluster):
    s = setup
    db_dir = s["db_dir"]
    with sqlite3.connect(db_dir / "runs.sqlite") as conn:
        conn.execute("INSERT OR REPLACE INTO metameta VALUES ('noncluster_mem', '900M')")
    from backend.base.messages import UpdateProducer

    sub = slurm.SlurmSubmitter(db_dir)
    first = sub.submit(RunRequest(PROPOSAL, 1, "raw"))
    assert slurm_cluster.wait_job(int(first.job_id), 120) == "COMPLETED"
    run_file = db_dir / "extracted_data" / f"p{PROPOSAL}_r1.h5"
    assert db_values(db_dir, 1)["big"] is not None

    (db_dir / "big_size.txt").write_text(str(15_000_000))  # ~120 MB: the merge takes a while
    job = sub.submit(RunRequest(PROPOSAL, 1, "raw"))
    producer = UpdateProducer.from_env()
    watcher = slurm.JobWatcher(producer)  # what the listener runs for the jobs it submits
    watcher.watch(job, db_dir, slurm._db_topic(db_dir))
    assert watcher.poll() == []  # still running
    tmp_files = lambda: list(run_file.parent.glob(f".{run_file.name}.*.tmp"))  # noqa: E731
    assert wait_for(lambda: tmp_files(), 120, 0.01), "the job never started writing"
    slurm_cluster.run("scancel", "--signal=KILL", "--full", job.job_id)
    state = slurm_cluster.wait_job(int(job.job_id), 60)
    assert state in ("CANCELLED", "FAILED"), state
    # The run file is the previous, complete one
    with h5py.File(run_file, "r") as f:
        assert f["big/data"].shape == (10,)
        assert f["n_trains/data"][()] == 20
    assert db_values(db_dir, 1)["n_trains"] == 20
    # The run is marked failed: a line in its log and processing_finished for the dashboards
    assert [(j.job_id, st) for j, st in watcher.poll()] == [(job.job_id, state)]
    producer.close()
    log = db_dir / "process_logs" / f"r1-p{PROPOSAL}.out"
    assert f"Slurm job {job.job_id} for r1 (p{PROPOSAL}, raw data) ended as {state}" in log.read_text()
    s["msgs"].wait(lambda k, d: k == "processing_finished" and d["processing_id"] == job.request.processing_id,
                   timeout=20)
    # A dashboard's tracker fed from the topic no longer shows the killed job as processing
    tracker = slurm.JobTracker()
    for kind, data in list(s["msgs"].msgs):
        tracker.on_message(kind, data)
    assert tracker.jobs == {} and tracker.check_slurm_jobs() == []


def test_cluster_variables_get_a_second_job(setup, slurm_cluster):
    s = setup
    ctx = s["db_dir"] / "context.py"
    ctx.write_text(ctx.read_text() + '''

@Variable(title="Heavy", cluster=True)
def heavy(run, n: "var#n_trains"):
    return n * 2
''')
    s["start_listener"]()
    send_events(s["broker"].address, migration(2))
    s["msgs"].wait(values_updated_for(2))
    s["msgs"].wait(lambda k, d: k == "run_values_updated" and d["run"] == 2 and "heavy" in d["values"],
                   timeout=120)
    assert db_values(s["db_dir"], 2)["heavy"] == 40
    job_ids = {d["slurm_job_id"] for d in s["msgs"].of_kind("processing_state_set") if d["run"] == 2}
    assert len(job_ids) == 2  # the listener's job and the cluster job it submitted
