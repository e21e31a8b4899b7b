"""The Slurm executor against the suite's one-node Slurm cluster.

Jobs here run a stand-in for ``python`` (a shell script recording its arguments) so these tests cover
submission, arrays, tracking and cancelling on their own; tests/backend/services/test_services_e2e.py runs real jobs.
"""
from __future__ import annotations

import shlex
import sqlite3
from pathlib import Path

import pytest

from backend.processing.requests import RunRequest
from backend.services import slurm
from backend.services.slurm import SlurmSettings, SlurmSubmitter, SubmissionError, job_command
from tests.infra.wait import wait_for

SMALL = {"noncluster_cpus": 1, "noncluster_mem": "50M", "slurm_time": "00:05:00"}


def fake_python(tmp_path: Path, sleep: float = 0.0) -> str:
    """A 'python' that appends its arguments to calls.txt, then sleeps."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/bash\necho \"$@\" >> {tmp_path}/calls.txt\necho job-output-$SLURM_JOB_ID\n"
                      f"sleep {sleep}\n")
    script.chmod(0o755)
    return str(script)



def calls(tmp_path: Path) -> list[str]:
    p = tmp_path / "calls.txt"
    return p.read_text().splitlines() if p.exists() else []


def test_resource_options_follow_db_settings():
    s = SlurmSettings.from_settings({"slurm_time": "01:00:00", "noncluster_cpus": "2", "noncluster_mem": "4G",
                                     "slurm_partition": "upex", "slurm_reservation": "beamtime",
                                     "slurm_cluster": "solaris", "slurm_cluster_full_node": "maxwell"})
    assert s.resource_options(False) == ["--time", "01:00:00", "--clusters", "solaris", "--cpus-per-task", "2",
                                         "--mem", "4G", "--partition", "upex"]
    # reservation wins over the partition for cluster jobs
    assert s.resource_options(True) == ["--time", "01:00:00", "--clusters", "maxwell", "--reservation",
                                        "beamtime"]
    # no cluster names configured: no --clusters at all
    assert "--clusters" not in SlurmSettings.from_settings({}).resource_options(False)
    assert SlurmSettings.from_settings({}).concurrent_jobs == 15


def test_request_command():
    req = RunRequest(1234, 5, "proc", cluster=True, variables=("a",), match=("m",), mock=True,
                            update_vars=True, processing_id="pid")
    assert job_command(req, Path("/db"), "py") == [
        "py", "-m", "backend.services.job", "1234", "5", "proc", "--db-dir", "/db", "--processing-id", "pid",
        "--cluster-job", "--var", "a", "--match", "m", "--mock", "--update-vars"]
    with pytest.raises(ValueError, match="run_data"):
        RunRequest(1, 2, "everything")


class RecordingProducer:
    def __init__(self):
        self.sent = []

    def processing_state_set(self, db, *args, **kw):
        self.sent.append((db, args, kw))

    def flush(self):
        pass


def test_submit_runs_job_appending_to_run_log(slurm_cluster, tmp_path):
    producer = RecordingProducer()
    sub = SlurmSubmitter(tmp_path, SMALL, python=fake_python(tmp_path), producer=producer,
                         db_topic="test.damnit.db-x")
    job = sub.submit(RunRequest(1234, 7, "raw", processing_id="p1"))
    assert job.job_id.isdigit() and job.cluster is None
    assert slurm_cluster.wait_job(int(job.job_id)) == "COMPLETED"
    log = (tmp_path / "process_logs" / "r7-p1234.out").read_text()
    assert f"job-output-{job.job_id}" in log
    assert calls(tmp_path) == [f"-m backend.services.job 1234 7 raw --db-dir {tmp_path} --processing-id p1"]
    # announced as PENDING with the Slurm id
    (db, args, kw), = producer.sent
    assert db == "test.damnit.db-x" and args[:5] == ("p1", 1234, 7, "raw", "PENDING")
    assert kw["slurm_job_id"] == job.job_id


def test_duplicate_jobs_for_a_run_never_overlap(slurm_cluster, tmp_path):
    """Two jobs for one run (a duplicate event) run one after the other (singleton dependency)."""
    script = tmp_path / "py"
    script.write_text(f"#!/bin/bash\necho start $(date +%s.%N) >> {tmp_path}/t.txt\nsleep 1.5\n"
                      f"echo end $(date +%s.%N) >> {tmp_path}/t.txt\n")
    script.chmod(0o755)
    sub = SlurmSubmitter(tmp_path, SMALL, python=str(script))
    a = sub.submit(RunRequest(1234, 8, "raw"))
    b = sub.submit(RunRequest(1234, 8, "raw"))
    assert slurm_cluster.wait_job(int(b.job_id)) == "COMPLETED"
    assert slurm_cluster.job_state(int(a.job_id)) == "COMPLETED"
    lines = [line.split() for line in (tmp_path / "t.txt").read_text().splitlines()]
    assert [w for w, _ in lines] == ["start", "end", "start", "end"]
    assert float(lines[1][1]) <= float(lines[2][1])


def test_array_with_limit_and_tracking(slurm_cluster, tmp_path):
    reqs = [RunRequest(1234, r, "all", update_vars=(r == 1)) for r in (1, 2, 3)]
    sub = SlurmSubmitter(tmp_path, SMALL, python=fake_python(tmp_path, sleep=2))
    jobs = sub.submit_array(reqs, limit_running=1)
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(3)]
    # %1: never more than one task running; the others are listed one by one as PENDING
    states = slurm.squeue_states([j.job_id for j in jobs])
    assert list(states.values()).count("RUNNING") <= 1
    assert set(states) <= {j.job_id for j in jobs}
    assert wait_for(lambda: not slurm.squeue_states([j.job_id for j in jobs]), timeout=60)
    got = calls(tmp_path)
    assert sorted(c.split()[3] for c in got) == ["1", "2", "3"]
    assert sum("--update-vars" in c for c in got) == 1
    for r in (1, 2, 3):
        assert "job-output" in (tmp_path / "process_logs" / f"r{r}-p1234.out").read_text()
    assert not list((tmp_path / ".tmp").glob("launch-*.sh"))  # task scripts clean up after themselves


def test_cancel_queued_job_notes_it_in_the_run_log(slurm_cluster, tmp_path):
    sub = SlurmSubmitter(tmp_path, SMALL, python=fake_python(tmp_path, sleep=30))
    # Occupy both CPUs so the next job stays PENDING
    blockers = [sub.submit(RunRequest(1234, 100 + i, "raw")) for i in range(2)]
    queued = sub.submit(RunRequest(1234, 9, "raw"))
    try:
        assert wait_for(lambda: slurm.squeue_states([queued.job_id]).get(queued.job_id) == "PENDING", 20)
        res = slurm.cancel_job(queued.job_id, db_dir=tmp_path, proposal=1234, run=9)
        assert res.cancelled and res.state == "PENDING" and res.error is None
        assert wait_for(lambda: queued.job_id not in slurm.squeue_states([queued.job_id]), 20)
        assert f"Cancelled PENDING Slurm job {queued.job_id} by" in (
            tmp_path / "process_logs" / "r9-p1234.out").read_text()
        again = slurm.cancel_job(queued.job_id)
        assert again.already_gone and not again.cancelled
    finally:
        for b in blockers:
            slurm.cancel_job(b.job_id)


def test_tracker_drops_jobs_slurm_no_longer_has(slurm_cluster, tmp_path):
    sub = SlurmSubmitter(tmp_path, SMALL, python=fake_python(tmp_path, sleep=30))
    job = sub.submit(RunRequest(1234, 11, "raw"))
    tracker = slurm.JobTracker()
    tracker.on_message("processing_state_set", {"processing_id": "a", "proposal": 1234, "run": 11, "data": "raw",
                                                "status": "PENDING", "slurm_cluster": "", "slurm_job_id": job.job_id})
    tracker.on_message("processing_state_set", {"processing_id": "gone", "proposal": 1234, "run": 12,
                                                "data": "raw", "status": "RUNNING", "slurm_cluster": "",
                                                "slurm_job_id": "999999"})
    assert [j.processing_id for j in tracker.check_slurm_jobs()] == ["gone"]
    results = tracker.cancel_jobs_for_runs([(1234, 11)], tmp_path)
    assert [r.cancelled for r in results] == [True]
    assert wait_for(lambda: [j.processing_id for j in tracker.check_slurm_jobs()] == ["a"], 20)
    assert tracker.on_message("processing_finished", {"processing_id": "zzz"}) is False


def test_sbatch_refusal_is_a_clear_error(slurm_cluster, tmp_path):
    sub = SlurmSubmitter(tmp_path, {**SMALL, "slurm_partition": "no-such-partition"},
                         python=fake_python(tmp_path))
    with pytest.raises(SubmissionError, match="sbatch failed.*(partition|Partition)"):
        sub.submit(RunRequest(1234, 1, "raw"))


def test_no_slurm_on_path_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SubmissionError, match="sbatch not found"):
        SlurmSubmitter(tmp_path, SMALL).submit(RunRequest(1234, 1, "raw"))


def test_settings_read_from_runs_sqlite(tmp_path):
    conn = sqlite3.connect(tmp_path / "runs.sqlite")
    conn.execute("CREATE TABLE metameta(key PRIMARY KEY NOT NULL, value)")
    conn.executemany("INSERT INTO metameta VALUES (?, ?)", [("noncluster_mem", "3G"), ("concurrent_jobs", 4)])
    conn.commit()
    conn.close()
    s = SlurmSubmitter(tmp_path).settings
    assert s.mem == "3G" and s.concurrent_jobs == 4 and s.cpus == 4


def _small_db(path: Path) -> None:
    conn = sqlite3.connect(path / "runs.sqlite")
    conn.execute("CREATE TABLE metameta(key PRIMARY KEY NOT NULL, value)")
    conn.executemany("INSERT INTO metameta VALUES (?, ?)", list(SMALL.items()))
    conn.commit()
    conn.close()


@pytest.mark.timeout(120)
def test_reprocess_watch_runs_jobs_one_by_one(slurm_cluster, tmp_path, capsys):
    from backend.processing.workers import RunRequest

    _small_db(tmp_path)  # not a full DAMNIT database: the real job reports that and fails
    jobs = slurm.submit_reprocess(tmp_path, [RunRequest(proposal=1234, run=3), RunRequest(proposal=1234, run=4)],
                                  watch=True)
    assert jobs == []  # srun waited for each job
    out = capsys.readouterr().out
    assert out.count("cannot open DAMNIT database") == 2
    assert "cannot open DAMNIT database" in (tmp_path / "process_logs" / "r3-p1234.out").read_text()


@pytest.mark.timeout(120)
def test_watched_job_output_is_shown_and_logged(slurm_cluster, tmp_path, capsys):
    sub = SlurmSubmitter(tmp_path, SMALL, python=fake_python(tmp_path))
    assert sub.run_watched(RunRequest(1234, 4, "all", processing_id="w")) == 0
    out = capsys.readouterr().out
    assert "job-output-" in out
    assert "job-output-" in (tmp_path / "process_logs" / "r4-p1234.out").read_text()
    assert calls(tmp_path)[0].endswith("--processing-id w")


@pytest.mark.timeout(120)
def test_sandbox_args_are_passed_to_the_job(slurm_cluster, tmp_path):
    sub = SlurmSubmitter(tmp_path, SMALL, python=fake_python(tmp_path), sandbox_args="sandbox --user x")
    job = sub.submit(RunRequest(1234, 5, "raw", processing_id="s"))
    assert slurm_cluster.wait_job(int(job.job_id)) == "COMPLETED"
    assert calls(tmp_path)[0].endswith("--processing-id s --sandbox-args sandbox --user x")


def test_jobs_run_the_databases_damnit_python_when_it_can(tmp_path, caplog):
    """`damnit_python` (set when a database is made) names the jobs' interpreter; one that cannot run
    this implementation (the original's environment, for a database it made) is replaced, with a warning."""
    from backend.services.slurm import job_python

    ours = tmp_path / "ours-python"
    ours.write_text("#!/bin/sh\nexit 0\n")  # answers the `import backend.processing.run_processor` probe
    theirs = tmp_path / "original-python"
    theirs.write_text("#!/bin/sh\nexit 1\n")
    for p in (ours, theirs):
        p.chmod(0o755)
    assert job_python(None, "/default/python") == "/default/python"
    assert job_python(str(ours), "/default/python") == str(ours)
    with caplog.at_level("WARNING", logger="backend.services.slurm"):
        assert job_python(str(theirs), "/default/python") == "/default/python"
    assert "cannot run this DAMNIT" in caplog.text and str(theirs) in caplog.text
    sub = SlurmSubmitter(tmp_path, {**SMALL, "damnit_python": str(ours)}, python="/default/python")
    assert shlex.split(sub.sbatch_command(RunRequest(1234, 5, "raw"))[-1])[0] == str(ours)
