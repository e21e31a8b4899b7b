"""The processing page's job board against the real backends: local ``damnit reprocess --direct`` and the
one-node Slurm cluster (submit, track with squeue, cancel), with the database checked afterwards."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.actions.processing_jobs import FINISHED_STATES, JobBoard

PROPOSAL = 5678
CONTEXT = '''\
import time
from damnit_ctx import Variable

VERSION = "v1"


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)


@Variable(title="Version")
def version(run):
    return VERSION


@Variable(title="Slow")
def slow(run):
    time.sleep(float(SLOW))
    return 1

SLOW = 0
'''


@pytest.fixture
def db_dir(make_mock_runs, tmp_path):
    make_mock_runs(PROPOSAL, [1, 2, 3], ntrains=5)
    src = tmp_path / "ctx.py"
    src.write_text(CONTEXT)
    db = tmp_path / "db"
    res = subprocess.run([sys.executable, "-m", "backend.cli", "init", str(db), "--proposal", str(PROPOSAL),
                          "--context", str(src)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    from backend.storage.database import DamnitDB

    with DamnitDB.from_dir(db) as d:  # small jobs fit the one-node test cluster
        d.metameta.update({"noncluster_cpus": 1, "noncluster_mem": "200M", "slurm_time": "00:05:00"})
    return db


def _values(db_dir: Path, name: str) -> dict[int, object]:
    from backend.storage.database import DamnitDB

    with DamnitDB.from_dir(db_dir) as d:
        rows = d.conn.execute("SELECT run, value FROM run_variables WHERE name=?", (name,)).fetchall()
    return {r[0]: r[1] for r in rows}


def _wait(board: JobBoard, job, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        board.refresh()
        if job.state in FINISHED_STATES:
            return job.state
        time.sleep(0.5)
    raise AssertionError(f"job {job.id} still {job.state} after {timeout} s: {board.output_tail(job)}")


def _set_context(db_dir: Path, version: str, slow: float = 0) -> None:
    ctx = db_dir / "context.py"
    text = ctx.read_text()
    text = text.replace('VERSION = "v1"', f'VERSION = "{version}"').replace("SLOW = 0", f"SLOW = {slow}")
    ctx.write_text(text)


def test_local_job_runs_and_cancel_stops_it(db_dir, monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "none")
    board = JobBoard(db_dir, PROPOSAL)
    job = board.submit([1, 2], backend="local", user="tester")
    assert _wait(board, job) == "DONE", board.output_tail(job)
    assert _values(db_dir, "version") == {1: "v1", 2: "v1"}
    assert _values(db_dir, "n_trains") == {1: 5, 2: 5}

    _set_context(db_dir, "v2", slow=30)
    job = board.submit([3], backend="local")
    time.sleep(2)
    assert board.cancel(job.id).startswith("Cancelled")
    assert _wait(board, job, 20) == "CANCELLED"
    assert 3 not in _values(db_dir, "slow")  # stopped before it finished
    log = (db_dir / "process_logs" / f"r3-p{PROPOSAL}.out").read_text()
    assert f"Cancelled local reprocessing (dashboard job {job.id})" in log


def test_refuses_what_it_cannot_do(db_dir):
    board = JobBoard(db_dir, PROPOSAL)
    with pytest.raises(RuntimeError, match="no runs"):
        board.submit([], backend="local")
    assert "No job" in board.cancel("nope")
    with pytest.raises(RuntimeError, match="no proposal"):
        JobBoard(db_dir, None).submit([1], backend="local")


@pytest.mark.slurm
def test_slurm_job_processes_runs_and_can_be_cancelled(db_dir, slurm_cluster, monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "none")
    _set_context(db_dir, "v-slurm")
    board = JobBoard(db_dir, PROPOSAL)
    job = board.submit([1, 2], ["version"], backend="slurm", user="tester")
    assert set(job.slurm_ids) == {1, 2}
    assert _wait(board, job, 180) == "DONE", board.output_tail(job)
    assert _values(db_dir, "version") == {1: "v-slurm", 2: "v-slurm"}
    assert 1 not in _values(db_dir, "n_trains")  # only the chosen variable was processed

    _set_context(db_dir, "v-slurm", slow=60)
    job = board.submit([3], backend="slurm")
    sid = job.slurm_ids[3]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        board._last_squeue = 0
        board.refresh()
        if job.state in ("RUNNING", "PENDING"):
            break
        time.sleep(0.5)
    message = board.cancel(job.id)
    assert "Cancelled 1 Slurm task" in message, message
    assert _wait(board, job, 60) == "CANCELLED"
    log = (db_dir / "process_logs" / f"r3-p{PROPOSAL}.out").read_text()
    assert f"Slurm job {sid}" in log and "Cancelled" in log


def test_damnit_slurm_off_keeps_jobs_on_this_machine(tmp_path, monkeypatch):
    """An installed sbatch is used unless DAMNIT_SLURM=off (a Slurm client with no cluster behind it)."""
    from app.actions.processing_jobs import slurm_available

    (tmp_path / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DAMNIT_SLURM", raising=False)
    assert slurm_available()
    monkeypatch.setenv("DAMNIT_SLURM", "off")
    assert not slurm_available()


def _source_and_session(db_dir: Path):
    from app.live.session import SessionState
    from app.live.source import ProposalSource

    source = ProposalSource(db_dir, broker="none", start=False)
    return source, SessionState(source=source, can_write=True, user="tester")


@pytest.mark.slurm
def test_cancelled_slurm_job_marks_the_run_failed_and_the_dashboard_requeues_it(db_dir, slurm_cluster, monkeypatch):
    from app.actions.processing_jobs import job_board
    from app.actions.requeue import requeue
    from backend.storage import processing_state as ps

    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.delenv("DAMNIT_SLURM", raising=False)
    _set_context(db_dir, "v-slurm", slow=60)
    board = job_board(db_dir, PROPOSAL)
    job = board.submit([3], backend="slurm")
    deadline = time.monotonic() + 60
    while job.state not in ("RUNNING", "PENDING") and time.monotonic() < deadline:
        board._last_squeue = 0
        board.refresh()
        time.sleep(0.5)
    assert "Cancelled 1 Slurm task" in board.cancel(job.id)

    source, session = _source_and_session(db_dir)
    try:
        failure = source.failure_for(source.key_for(PROPOSAL, 3))
        assert failure is not None and failure.kind == ps.CANCELLED, failure
        assert failure.slurm_job_id == job.slurm_ids[3] and "was cancelled by" in failure.reason

        (db_dir / "context.py").write_text(CONTEXT.replace('"v1"', '"v-again"'))
        done = requeue(session, [3])
        assert done.job.backend == "slurm" and done.message.startswith("Launched processing for 3 (Slurm job")
        assert _wait(board, done.job, 180) == "DONE", board.output_tail(done.job)
        assert _values(db_dir, "version")[3] == "v-again"
        change = source.poll(force=True)
        assert change.run_states and source.failure_for(source.key_for(PROPOSAL, 3)) is None
    finally:
        source.stop()


@pytest.mark.slurm
def test_reprocessing_falls_back_to_this_machine_while_slurm_does_not_answer(db_dir, slurm_cluster, monkeypatch):
    from app.actions.requeue import requeue

    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.delenv("DAMNIT_SLURM", raising=False)
    _set_context(db_dir, "v-local")
    source, session = _source_and_session(db_dir)
    slurm_cluster.stop_controller()
    try:
        done = requeue(session, [2])
        assert done.job.backend == "local"
        assert "Slurm did not answer" in done.job.message and "so on this machine" in done.job.message
        board = JobBoard(db_dir, PROPOSAL)
        with pytest.raises(RuntimeError, match="Slurm did not answer"):  # asked for Slurm: no fallback
            board.submit([1], backend="slurm")
    finally:
        slurm_cluster.start_controller()
        source.stop()
    from app.actions.processing_jobs import job_board

    assert _wait(job_board(db_dir, PROPOSAL), done.job, 120) == "DONE"
    assert _values(db_dir, "version")[2] == "v-local"
