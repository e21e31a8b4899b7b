"""Slurm jobs that process runs: sbatch (single and array), squeue tracking, scancel (docs/spec.md "Processing jobs").

A job runs ``python -m backend.services.job PROPOSAL RUN raw|proc|all --db-dir DIR ...`` and appends
to the run's log. Resources come from the database's settings (``damnit db-config``):
``slurm_time``, ``noncluster_cpus``, ``noncluster_mem``, ``slurm_partition``, ``slurm_reservation``,
``concurrent_jobs``; and, unlike the original which hard-codes Maxwell's ``solaris``/``maxwell``,
``slurm_cluster`` / ``slurm_cluster_full_node`` name the Slurm clusters for ordinary and
``cluster=True`` jobs (``--clusters`` is left out when unset).

Jobs for one run share a name and use ``--dependency=singleton``, so a duplicate run event never has
two listener jobs working on the same run at once: the second starts when the first has ended.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import secrets
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.base.messages import UPDATE_TOPIC, UpdateProducer
from backend.base.paths import append_run_log, run_log_path
from backend.processing.requests import RunRequest
from backend.storage import processing_state
from backend.storage.database import DamnitDB

log = logging.getLogger(__name__)

ARRAY_BATCH = 1000  # Slurm's usual MaxArraySize is 1001
SCRUBBED_ENV = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "DISPLAY", "LD_PRELOAD")
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
SLURM_TIMEOUT_S = 60


class SubmissionError(RuntimeError):
    """sbatch is missing or refused the job; the message says why (sbatch's own error included)."""


class SlurmUnavailable(SubmissionError):
    """Slurm did not answer (its controller is down or unreachable, or it is not installed here): an
    outage that affects every job, unlike a refusal of one job (a bad partition, say)."""


# How Slurm's commands say that they could not reach the controller.
_OUTAGE_MARKERS = ("unable to contact slurm controller", "socket timed out", "connection refused",
                   "zero bytes were transmitted", "communication connection failure", "connect failure",
                   "slurm temporarily unable", "slurmctld not responding", "unable to establish a connection")


def is_outage(message: str) -> bool:
    """Whether a Slurm command's error says the controller could not be reached."""
    low = message.lower()
    return any(m in low for m in _OUTAGE_MARKERS)


def job_command(req: RunRequest, db_dir: Path, python: str = sys.executable) -> list[str]:
    """The command line of a job that processes ``req`` (``backend/services/job.py``)."""
    cmd = [python, "-m", "backend.services.job", str(req.proposal), str(req.run), req.run_data,
           "--db-dir", str(db_dir), "--processing-id", req.processing_id]
    if req.cluster:
        cmd.append("--cluster-job")
    for v in req.variables:
        cmd += ["--var", v]
    for m in req.match:
        cmd += ["--match", m]
    if req.mock:
        cmd.append("--mock")
    if req.update_vars:
        cmd.append("--update-vars")
    return cmd


@dataclass(frozen=True)
class SubmittedJob:
    request: RunRequest
    job_id: str            # "123" or "123_4" for an array task
    cluster: str | None    # Slurm cluster (None when --clusters is not used)

    def __str__(self) -> str:
        return self.job_id


@dataclass
class SlurmSettings:
    """Job resources; ``from_settings`` reads them from a DB's metameta (names as in the original)."""

    time: str = "02:00:00"
    cpus: int = 4
    mem: str = "25G"
    partition: str | None = None
    reservation: str | None = None
    concurrent_jobs: int = 15
    cluster: str | None = None            # for ordinary jobs (the original: solaris)
    cluster_full_node: str | None = None  # for cluster=True jobs (the original: maxwell)
    damnit_python: str | None = None      # the interpreter jobs should run in (see ``job_python``)

    @classmethod
    def from_settings(cls, meta: Mapping[str, Any]) -> SlurmSettings:
        def get(key, default):
            value = meta.get(key)
            return default if value in (None, "") else value

        return cls(time=str(get("slurm_time", cls.time)), cpus=int(get("noncluster_cpus", cls.cpus)),
                   mem=str(get("noncluster_mem", cls.mem)), partition=get("slurm_partition", None),
                   reservation=get("slurm_reservation", None),
                   concurrent_jobs=int(get("concurrent_jobs", cls.concurrent_jobs)),
                   cluster=get("slurm_cluster", None), cluster_full_node=get("slurm_cluster_full_node", None),
                   damnit_python=get("damnit_python", None))

    def resource_options(self, cluster_job: bool) -> list[str]:
        opts = ["--time", self.time]
        if cluster_job:
            if self.cluster_full_node:
                opts += ["--clusters", self.cluster_full_node]
            if self.reservation:
                opts += ["--reservation", self.reservation]
            elif self.partition:
                opts += ["--partition", self.partition]
        else:
            if self.cluster:
                opts += ["--clusters", self.cluster]
            opts += ["--cpus-per-task", str(self.cpus), "--mem", str(self.mem)]
            if self.partition:
                opts += ["--partition", self.partition]
        return opts

    def cluster_for(self, cluster_job: bool) -> str | None:
        return self.cluster_full_node if cluster_job else self.cluster


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    return env


def _run_slurm(cmd: list[str], *, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a Slurm command. SlurmUnavailable if it is missing, hangs, or (with ``check``) cannot reach
    the controller; SubmissionError if it fails otherwise (with ``check``)."""
    if shutil.which(cmd[0]) is None:
        raise SlurmUnavailable(f"{cmd[0]} not found on PATH: Slurm is not available on this machine")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S, **kw)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{cmd[0]} did not answer within {SLURM_TIMEOUT_S} s") from None
    if check and res.returncode != 0:
        error = (res.stderr or res.stdout).strip()
        cls = SlurmUnavailable if is_outage(error) else SubmissionError
        raise cls(f"{shlex.join(cmd[:1])} failed (exit {res.returncode}): {error}")
    return res


def _parse_parsable(stdout: str, default_cluster: str | None) -> tuple[str, str | None]:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id, _, cluster = line.partition(";")
    if not job_id.strip().isdigit():
        raise SubmissionError(f"Unexpected sbatch output: {stdout!r}")
    return job_id.strip(), (cluster.strip() or default_cluster)


def job_python(configured: str | None, default: str) -> str:
    """The interpreter jobs run in: the database's ``damnit_python`` setting when that interpreter can run
    this implementation, else ``default``. A database the original DAMNIT made names the original's
    environment, which has no ``backend`` package; its jobs then run in ours, with a warning."""
    if not configured or configured == default:
        return default
    if _runs_our_backend(configured):
        return configured
    _warn_unusable_python(configured, default)
    return default


@functools.lru_cache(maxsize=64)  # asked once per process and interpreter: restart to see a new install
def _runs_our_backend(python: str) -> bool:
    try:
        res = subprocess.run([python, "-c", "import backend.services.job"], cwd="/", capture_output=True,
                             timeout=120, env=job_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


@functools.lru_cache(maxsize=64)  # once per interpreter
def _warn_unusable_python(configured: str, default: str) -> None:
    log.warning("The database's damnit_python %s cannot run this DAMNIT (no `backend.services.job` there; "
                "it may be the original's environment): jobs use %s. Set it with `damnit db-config "
                "damnit_python PATH`.", configured, default)


class SlurmSubmitter:
    """Submits processing jobs for one database directory."""

    def __init__(self, db_dir: str | Path, settings: SlurmSettings | Mapping[str, Any] | None = None, *,
                 python: str = sys.executable, producer=None, db_topic: str | None = None,
                 sandbox_args: str = ""):
        self.db_dir = Path(db_dir).absolute()
        if settings is None:
            settings = _db_settings(self.db_dir)
        self.settings = settings if isinstance(settings, SlurmSettings) else SlurmSettings.from_settings(settings)
        self.python = job_python(self.settings.damnit_python, python)
        self.producer = producer
        self.db_topic = db_topic
        self.sandbox_args = sandbox_args or ""

    def _announce(self, job: SubmittedJob) -> None:
        if self.producer is not None and self.db_topic:
            r = job.request
            self.producer.processing_state_set(self.db_topic, r.processing_id, r.proposal, r.run, r.run_data,
                                               "PENDING", slurm_cluster=job.cluster or "",
                                               slurm_job_id=job.job_id)

    def _job_command(self, req: RunRequest) -> list[str]:
        cmd = job_command(req, self.db_dir, self.python)
        if self.sandbox_args:  # as the original: the job wraps the context runner with it
            cmd += ["--sandbox-args", self.sandbox_args]
        return cmd

    def sbatch_command(self, req: RunRequest) -> list[str]:
        log_path = run_log_path(self.db_dir, req.proposal, req.run, create=True)
        return ["sbatch", "--parsable", *self.settings.resource_options(req.cluster),
                "-o", str(log_path), "--open-mode=append", "--job-name", req.job_name,
                "--dependency=singleton", "--chdir", str(self.db_dir),
                "--wrap", shlex.join(self._job_command(req))]

    def submit(self, req: RunRequest) -> SubmittedJob:
        """Submit one job; raises SubmissionError (with sbatch's message) if Slurm refuses it."""
        res = _run_slurm(self.sbatch_command(req), env=job_env(), cwd=self.db_dir)
        job_id, cluster = _parse_parsable(res.stdout, self.settings.cluster_for(req.cluster))
        job = SubmittedJob(req, job_id, cluster)
        log.info("Submitted Slurm job %s%s for p%d r%d (%s)", job_id, f" on {cluster}" if cluster else "",
                 req.proposal, req.run, req.run_data)
        self._announce(job)
        return job

    def run_watched(self, req: RunRequest) -> int:
        """Run one job with ``srun``, printing its output live and appending it to the run's log."""
        if shutil.which("srun") is None:
            raise SubmissionError("srun not found on PATH: Slurm is not available on this machine")
        cmd = ["srun", *self.settings.resource_options(req.cluster), "--job-name", req.job_name,
               "--chdir", str(self.db_dir), *self._job_command(req)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=job_env(), cwd=self.db_dir)
        _tee_lines(proc.stdout, run_log_path(self.db_dir, req.proposal, req.run, create=True))
        return proc.wait()

    def submit_array(self, reqs: Sequence[RunRequest], limit_running: int | None = None,
                     ) -> list[SubmittedJob]:
        """Submit many runs as array jobs (≤1000 tasks each, chained), at most ``limit_running`` at once."""
        if not reqs:
            return []
        limit = limit_running if limit_running and limit_running > 0 else self.settings.concurrent_jobs
        tmp = self.db_dir / ".tmp"
        tmp.mkdir(exist_ok=True)
        jobs: list[SubmittedJob] = []
        prev_job: str | None = None
        cluster_job = any(r.cluster for r in reqs)
        for start in range(0, len(reqs), ARRAY_BATCH):
            batch = reqs[start:start + ARRAY_BATCH]
            prefix = tmp / f"launch-{secrets.token_hex(6)}"
            for i, req in enumerate(batch):
                script = Path(f"{prefix}-{i}.sh")
                log_path = run_log_path(self.db_dir, req.proposal, req.run, create=True)
                script.write_text(
                    "#!/bin/bash\n"
                    'rm -f "$0"\n'
                    f"exec {shlex.join(self._job_command(req))} >> {shlex.quote(str(log_path))} 2>&1\n")
            cmd = ["sbatch", "--parsable", *self.settings.resource_options(cluster_job),
                   "--array", f"0-{len(batch) - 1}%{limit}", "-o", "/dev/null",
                   "--job-name", f"p{batch[0].proposal}-damnit", "--chdir", str(self.db_dir)]
            if prev_job:
                cmd.append(f"--dependency=afterany:{prev_job}")
            cmd += ["--wrap", f'exec bash {shlex.quote(str(prefix))}-"$SLURM_ARRAY_TASK_ID".sh']
            try:
                res = _run_slurm(cmd, env=job_env(), cwd=self.db_dir)
            except SubmissionError:
                for i in range(len(batch)):
                    Path(f"{prefix}-{i}.sh").unlink(missing_ok=True)
                raise
            array_id, cluster = _parse_parsable(res.stdout, self.settings.cluster_for(cluster_job))
            prev_job = array_id
            log.info("Submitted Slurm array job %s with %d tasks (at most %d at once)", array_id, len(batch),
                     limit)
            for i, req in enumerate(batch):
                job = SubmittedJob(req, f"{array_id}_{i}", cluster)
                jobs.append(job)
                self._announce(job)
        return jobs


def _tee_lines(stream, log_path: Path) -> None:
    with open(log_path, "a") as log_file:
        for line in stream:
            sys.stdout.write(line)
            sys.stdout.flush()
            log_file.write(line)
            log_file.flush()


def _db_settings(db_dir: Path) -> dict:
    """A database's metameta settings, read without holding the DB open."""
    path = db_dir / "runs.sqlite"
    if not path.is_file():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return dict(conn.execute("SELECT key, value FROM metameta").fetchall())
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def _db_topic(db_dir: Path) -> str | None:
    db_id = _db_settings(db_dir).get("db_id")
    return UPDATE_TOPIC.format(db_id) if db_id else None


def submit_reprocess(db_dir: str | Path, requests: Sequence[Any] | int, runs: Iterable[int] | None = None, *,
                     limit_running: int | None = None, concurrent_jobs: int | None = None, watch: bool = False,
                     match: Sequence[str] = (), variables: Sequence[str] = (), mock: bool = False,
                     run_data: str = "all", producer=None) -> list[SubmittedJob]:
    """``damnit reprocess`` without ``--direct``: Slurm array jobs (or ``srun`` one by one with ``watch``).

    Either ``submit_reprocess(db_dir, [RunRequest, ...])`` (anything with proposal, run, run_data,
    match, variables, mock) or ``submit_reprocess(db_dir, proposal, runs, variables=..., match=...)``.
    The first request also updates the variable list from the context file, as in the original; each
    task is announced as PENDING on the DB's topic. At most ``limit_running`` (or ``concurrent_jobs``,
    else the DB's ``concurrent_jobs``) tasks run at once. Returns the jobs (``str(job)`` is the
    Slurm id ``<array>_<i>``); none with ``watch``, which waits for each job instead.
    """
    db_dir = Path(db_dir).absolute()
    if isinstance(requests, int):
        proposal = requests
        requests = [RunRequest(int(proposal), int(r), run_data, match=tuple(match),
                                      variables=tuple(variables), mock=mock) for r in (runs or ())]
    reqs = [RunRequest(int(r.proposal), int(r.run), getattr(r, "run_data", "all") or "all",
                              match=tuple(getattr(r, "match", ()) or ()),
                              variables=tuple(getattr(r, "variables", ()) or ()),
                              mock=bool(getattr(r, "mock", False)), update_vars=(i == 0))
            for i, r in enumerate(requests)]
    own_producer = producer is None
    if own_producer:
        producer = UpdateProducer.from_env()
    try:
        submitter = SlurmSubmitter(db_dir, producer=producer, db_topic=_db_topic(db_dir))
        if watch:
            for req in reqs:
                submitter.run_watched(req)
            return []
        return submitter.submit_array(reqs, limit_running or concurrent_jobs)
    finally:
        if own_producer:
            producer.close()


def submit_cluster_job(db_dir: str | Path, req: Any, producer=None) -> SubmittedJob:
    """Second job for the ``cluster=True`` variables of a run (docs/spec.md "Processing jobs: inside a job").

    ``req`` is anything with proposal/run/run_data/match/variables/mock (a ``RunRequest``).
    """
    db_dir = Path(db_dir).absolute()
    if producer is None:
        producer = UpdateProducer.from_env()
    job_req = RunRequest(int(req.proposal), int(req.run), req.run_data, cluster=True,
                                match=tuple(req.match or ()), variables=tuple(req.variables or ()),
                                mock=bool(getattr(req, "mock", False)))
    job = SlurmSubmitter(db_dir, producer=producer, db_topic=_db_topic(db_dir)).submit(job_req)
    producer.flush()
    return job


# ---------------------------------------------------------------- tracking & cancelling

def squeue_states(job_ids: Iterable[str], cluster: str | None = None) -> dict[str, str]:
    """``{job_id: STATE}`` for the jobs Slurm still knows as queued/running (array tasks one by one)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    cmd = ["squeue", "--array", "--noheader", "--format=%i %T", f"--jobs={','.join(ids)}"]
    res = _run_slurm(_with_cluster(cmd, cluster), check=False)
    if res.returncode != 0 and cluster and _local_cluster_only(res.stderr):
        res = _run_slurm(cmd, check=False)
    if res.returncode != 0 and "Invalid job id" not in res.stderr:
        cls = SlurmUnavailable if is_outage(res.stderr) else SubmissionError
        raise cls(f"squeue failed: {res.stderr.strip()}")
    states = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("CLUSTER"):
            states[parts[0]] = parts[1]
    return states


def _with_cluster(cmd: list[str], cluster: str | None) -> list[str]:
    return [cmd[0], f"--clusters={cluster}", *cmd[1:]] if cluster else cmd


def _local_cluster_only(stderr: str) -> bool:
    """True if Slurm says --clusters can't be used (no multi-cluster database): the job is local."""
    return "can't be reached" in stderr or "Problem talking to database" in stderr


def _sacct_state(job_id: str, cluster: str | None) -> str | None:
    cmd = ["sacct", "--noheader", "--parsable2", "--format=JobID,State", f"--jobs={job_id}"]
    try:
        res = _run_slurm(_with_cluster(cmd, cluster), check=False)
    except SubmissionError:
        return None
    for line in res.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id:
            return state.split()[0] if state else None
    return None


@dataclass(frozen=True)
class CancelResult:
    cluster: str | None
    job_id: str
    cancelled: bool
    error: str | None = None
    already_gone: bool = False
    state: str | None = None


def cancel_job(job_id: str, cluster: str | None = None, *, db_dir: Path | None = None,
               proposal: int | None = None, run: int | None = None) -> CancelResult:
    """Cancel a queued or running job; with db_dir/proposal/run, note it in the run's log."""
    try:
        state = squeue_states([job_id], cluster).get(job_id)
    except SubmissionError as e:
        return CancelResult(cluster, job_id, False, error=str(e))
    if state is None or state not in ACTIVE_STATES:
        return CancelResult(cluster, job_id, False, already_gone=True,
                            state=state or _sacct_state(job_id, cluster))
    res = _run_slurm(_with_cluster(["scancel", job_id], cluster), check=False)
    if res.returncode != 0 and cluster and _local_cluster_only(res.stderr):
        res = _run_slurm(["scancel", job_id], check=False)
    if res.returncode != 0:
        return CancelResult(cluster, job_id, False, error=f"scancel failed: {res.stderr.strip()}", state=state)
    if db_dir is not None and proposal is not None and run is not None:
        try:
            user = getpass.getuser()
        except Exception:
            user = str(os.getuid())
        where = f" on {cluster}" if cluster else ""
        append_run_log(db_dir, proposal, run, f"Cancelled {state} Slurm job {job_id}{where} by {user}")
        mark_failed(db_dir, proposal, run, processing_state.CANCELLED,
                    f"Slurm job {job_id}{where} was cancelled by {user} while {state}", slurm_job_id=job_id)
    return CancelResult(cluster, job_id, True, state=state)


def mark_failed(db_dir: Path, proposal: int, run: int, kind: str, reason: str, *, slurm_job_id: str | None = None,
                keep_job_failure: bool = False) -> bool:
    """Record in runs.sqlite that the run's processing failed (``processing_state``), for dashboards;
    never raises (a database that can't be written is logged). With ``keep_job_failure`` a failure the
    job itself recorded (same job id, e.g. its context error) is kept, being the more precise reason."""
    try:
        with DamnitDB.from_dir(db_dir) as db:
            if keep_job_failure and slurm_job_id:
                known = processing_state.failure(db, proposal, run)
                if known is not None and known.slurm_job_id == str(slurm_job_id):
                    return False
            processing_state.record_failure(db, proposal, run, kind, reason, slurm_job_id=slurm_job_id)
        return True
    except Exception as e:
        log.warning("Could not mark p%s r%s as failed in %s: %s", proposal, run, db_dir, e)
        return False


@dataclass
class TrackedJob:
    processing_id: str
    proposal: int
    run: int
    data: str
    status: str
    slurm_cluster: str | None
    slurm_job_id: str | None


class JobTracker:
    """Processing jobs known from ``processing_state_set``/``processing_finished`` messages.

    ``check_slurm_jobs`` drops jobs Slurm no longer has as queued or running (killed, timed out), so
    indicators never stay on forever when a job dies without saying so.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, TrackedJob] = {}

    def on_message(self, kind: str, data: dict) -> bool:
        """Feed a DB-topic message; True if the set of jobs changed."""
        if kind == "processing_state_set":
            self.jobs[data["processing_id"]] = TrackedJob(
                data["processing_id"], int(data["proposal"]), int(data["run"]), data.get("data", "all"),
                data.get("status", "PENDING"), data.get("slurm_cluster") or None,
                str(data["slurm_job_id"]) if data.get("slurm_job_id") else None)
            return True
        if kind == "processing_finished":
            return self.jobs.pop(data.get("processing_id"), None) is not None
        return False

    def jobs_for_runs(self, proposal_runs: Iterable[tuple[int, int]]) -> list[TrackedJob]:
        wanted = set(proposal_runs)
        return [j for j in self.jobs.values() if (j.proposal, j.run) in wanted]

    def check_slurm_jobs(self) -> list[TrackedJob]:
        """Forget Slurm jobs that are no longer queued/running; returns the ones dropped."""
        by_cluster: dict[str | None, list[TrackedJob]] = {}
        for j in self.jobs.values():
            if j.slurm_job_id:
                by_cluster.setdefault(j.slurm_cluster, []).append(j)
        dropped = []
        for cluster, jobs in by_cluster.items():
            states = squeue_states([j.slurm_job_id for j in jobs], cluster)
            for j in jobs:
                if states.get(j.slurm_job_id) not in ACTIVE_STATES:
                    dropped.append(self.jobs.pop(j.processing_id))
        return dropped

    def cancel_jobs_for_runs(self, proposal_runs: Iterable[tuple[int, int]], db_dir: Path,
                             ) -> list[CancelResult]:
        results = []
        for j in self.jobs_for_runs(proposal_runs):
            if j.slurm_job_id:
                results.append(cancel_job(j.slurm_job_id, j.slurm_cluster, db_dir=db_dir,
                                          proposal=j.proposal, run=j.run))
        return results


def final_state(job_id: str, cluster: str | None = None) -> str | None:
    """How a job that left the queue ended (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...), if Slurm knows;
    SlurmUnavailable if the controller could not be asked."""
    res = _run_slurm(_with_cluster(["scontrol", "show", "job", job_id], cluster), check=False)
    if res.returncode == 0:
        for word in res.stdout.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
    elif is_outage(res.stderr):
        raise SlurmUnavailable(f"scontrol failed: {res.stderr.strip()}")
    return _sacct_state(job_id, cluster)


# How a job that ended badly is marked in runs.sqlite (processing_state kinds); other states: JOB.
_FAILED_KINDS = {"CANCELLED": processing_state.CANCELLED, "PREEMPTED": processing_state.CANCELLED,
                 "DEADLINE": processing_state.CANCELLED}


class JobWatcher:
    """Notices submitted jobs that end badly (cancelled, killed, failed, timed out) and marks their runs.

    The job itself cannot report a SIGKILL or a cancellation, so whoever submitted it (the listener)
    checks: the run's log gets a line saying how the job ended, runs.sqlite marks the run failed with
    that reason (``processing_state``, shown by dashboards; cleared when the run is next processed), and
    ``processing_finished`` clears the dashboards' processing indicator. The run file is untouched
    (writes are atomic), so earlier results stay. ``on_end(job, db_dir, state)`` is called for every job
    that left the queue, however it ended; ``on_slurm_error(error)`` when Slurm could not be asked
    (default: a warning).
    """

    def __init__(self, producer=None, *, on_end=None, on_slurm_error=None):
        self.producer = producer
        self.on_end = on_end
        self.on_slurm_error = on_slurm_error
        self.jobs: dict[str, tuple[SubmittedJob, Path, str | None]] = {}
        self._lock = threading.Lock()

    def watch(self, job: SubmittedJob, db_dir: Path, db_topic: str | None) -> None:
        with self._lock:
            self.jobs[job.job_id] = (job, Path(db_dir), db_topic)

    def watching(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self.jobs

    def _slurm_error(self, error: Exception) -> None:
        if self.on_slurm_error is not None:
            self.on_slurm_error(error)
        else:
            log.warning("Cannot check Slurm jobs: %s", error)

    def poll(self) -> list[tuple[SubmittedJob, str]]:
        """Check the watched jobs once; returns ``(job, state)`` for those that ended badly."""
        with self._lock:
            watched = dict(self.jobs)
        by_cluster: dict[str | None, list[str]] = {}
        for job_id, (job, _, _) in watched.items():
            by_cluster.setdefault(job.cluster, []).append(job_id)
        failed = []
        for cluster, ids in by_cluster.items():
            try:
                states = squeue_states(ids, cluster)
            except SubmissionError as e:
                self._slurm_error(e)
                continue
            for job_id in ids:
                if states.get(job_id) in ACTIVE_STATES:
                    continue
                job, db_dir, topic = watched[job_id]
                try:
                    state = final_state(job_id, cluster) or "UNKNOWN"
                except SubmissionError as e:  # the controller went away meanwhile: ask again next time
                    self._slurm_error(e)
                    break
                with self._lock:
                    self.jobs.pop(job_id, None)
                if not state.startswith("COMPLETED"):
                    self._ended_badly(job, db_dir, topic, state)
                    failed.append((job, state))
                if self.on_end is not None:
                    try:
                        self.on_end(job, db_dir, state)
                    except Exception:
                        log.exception("Handling the end of Slurm job %s failed", job_id)
        return failed

    def _ended_badly(self, job: SubmittedJob, db_dir: Path, topic: str | None, state: str) -> None:
        req = job.request
        msg = (f"Slurm job {job.job_id} for r{req.run} (p{req.proposal}, {req.run_data} data) ended as {state}; "
               "results from this job were not stored (earlier results are unchanged)")
        log.error("%s [%s]", msg, db_dir)
        try:
            append_run_log(db_dir, req.proposal, req.run, msg)
        except OSError as e:
            log.warning("Could not write to the run log: %s", e)
        if state != "UNKNOWN":  # Slurm forgot it (MinJobAge): it may have worked; don't claim a failure
            kind = _FAILED_KINDS.get(state.split()[0], processing_state.JOB)
            mark_failed(db_dir, req.proposal, req.run, kind, f"Slurm job {job.job_id} ended as {state}",
                        slurm_job_id=job.job_id, keep_job_failure=True)
        if self.producer is not None and topic:
            self.producer.processing_finished(topic, req.processing_id)
