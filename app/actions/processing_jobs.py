"""Reprocessing started from the dashboard: run selections, the jobs launched, and following run logs.

One ``JobBoard`` per database per server process, so every session sees the same jobs and Slurm is
asked about them at most once per ``SQUEUE_CACHE_S`` however many browsers watch. Jobs go to Slurm
(``backend.services.slurm.submit_reprocess``) when ``sbatch`` exists and ``DAMNIT_SLURM`` is not ``off``, else to
a local ``damnit reprocess --direct`` subprocess; ``backend="auto"`` also falls back to the local
process when Slurm does not answer (its controller is down), so a user's reprocess is never lost.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.base.paths import append_run_log, runs_on_disk
from backend.base.runs import format_runs, parse_run_spec

log = logging.getLogger(__name__)

SQUEUE_CACHE_S = 2.0
FINISHED_STATES = {"DONE", "FAILED", "CANCELLED", "GONE"}


def runs_selected(text: str, known_runs: Iterable[int]) -> list[int]:
    """Runs from text like ``"1-10, 15"`` or ``"all"`` (= every known run); RunSpecError if unclear."""
    runs = parse_run_spec(text)
    return sorted(set(int(r) for r in known_runs)) if runs is None else runs


def runs_with_data(proposal: int | None) -> set[int] | None:
    """Runs that have raw data on disk (None if the proposal's data folder can't be found)."""
    if proposal is None:
        return None
    try:
        return runs_on_disk(int(proposal))
    except FileNotFoundError:
        return None


class SlurmDown(RuntimeError):
    """Slurm did not answer (an outage), as opposed to refusing the job."""


@dataclass
class Job:
    """One submission from the dashboard: a Slurm array (one task per run) or a local process."""

    id: str
    runs: list[int]
    variables: list[str]
    backend: str                      # "slurm" | "local"
    user: str = ""
    started: float = field(default_factory=time.time)
    slurm_ids: dict[int, str] = field(default_factory=dict)   # run -> job id ("123_4")
    slurm_cluster: str | None = None
    slurm_states: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    output_path: Path | None = None
    state: str = "PENDING"
    message: str = ""

    @property
    def runs_text(self) -> str:
        return format_runs(self.runs)


def slurm_available() -> bool:
    """sbatch is installed and not switched off (``DAMNIT_SLURM=off``: a Slurm client without a cluster)."""
    if os.environ.get("DAMNIT_SLURM", "").strip().lower() == "off":
        return False
    return shutil.which("sbatch") is not None


class JobBoard:
    """The jobs launched from the dashboard for one database (shared by all sessions)."""

    def __init__(self, db_dir: Path, proposal: int | None):
        self.db_dir = Path(db_dir)
        self.proposal = proposal
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self._last_squeue = 0.0

    # -- launching ----------------------------------------------------------------------------------
    def submit(self, runs: Sequence[int], variables: Sequence[str] = (), *, backend: str = "auto",
               user: str = "") -> Job:
        """Start reprocessing; raises RuntimeError with the submitter's message if it is refused.
        ``"auto"``: Slurm when it is installed and answers, else this machine."""
        if not runs:
            raise RuntimeError("no runs to process")
        if self.proposal is None:
            raise RuntimeError(f"the database in {self.db_dir} has no proposal number")
        fallback = backend == "auto"
        if backend == "auto":
            backend = "slurm" if slurm_available() else "local"
        job = Job(uuid.uuid4().hex[:8], sorted(runs), list(variables), backend, user=user)
        if backend == "slurm":
            try:
                self._submit_slurm(job)
            except SlurmDown as e:
                if not fallback:
                    raise
                log.warning("Processing %s on this machine: %s", job.runs_text, e)
                job.backend = "local"
                self._submit_local(job)
                job.message = f"{job.message}; {e}, so on this machine"
        else:
            self._submit_local(job)
        with self.lock:
            self.jobs[job.id] = job
        return job

    def _submit_slurm(self, job: Job) -> None:
        from backend.base.messages import UpdateProducer
        from backend.services import slurm

        producer = UpdateProducer.from_env()
        try:
            submitted = slurm.submit_reprocess(self.db_dir, self.proposal, job.runs, variables=job.variables,
                                               producer=producer)
        except slurm.SlurmUnavailable as e:
            raise SlurmDown(f"Slurm did not answer ({e})") from e
        except slurm.SubmissionError as e:
            raise RuntimeError(f"Slurm refused the job: {e}") from e
        finally:
            try:
                producer.flush()
            except Exception:
                pass
        job.slurm_ids = {s.request.run: s.job_id for s in submitted}
        job.slurm_cluster = submitted[0].cluster if submitted else None
        job.message = f"Slurm job(s) {', '.join(sorted(set(j.split('_')[0] for j in job.slurm_ids.values())))}"

    def _submit_local(self, job: Job) -> None:
        cmd = [sys.executable, "-m", "backend.cli", "reprocess", "--direct"]
        for v in job.variables:
            cmd += ["--var", v]
        cmd += [str(r) for r in job.runs]
        fd, out = tempfile.mkstemp(prefix=f"damnit-dashboard-{job.id}-", suffix=".log")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        with os.fdopen(fd, "w") as f:
            job.process = subprocess.Popen(cmd, cwd=self.db_dir, stdout=f, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        job.output_path = Path(out)
        job.state = "RUNNING"
        job.message = f"local process {job.process.pid}"

    # -- state --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Update job states (local: exit codes; Slurm: squeue, at most every SQUEUE_CACHE_S)."""
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            if job.backend == "local" and job.process is not None and job.state not in FINISHED_STATES:
                rc = job.process.poll()
                if rc is not None:
                    job.state = "DONE" if rc == 0 else ("CANCELLED" if job.state == "CANCELLING" else "FAILED")
                    job.message = f"exit code {rc}" + (f": {self.output_tail(job, 3)}" if rc else "")
        slurm_jobs = [j for j in jobs if j.backend == "slurm" and j.state not in FINISHED_STATES]
        if slurm_jobs and time.monotonic() - self._last_squeue >= SQUEUE_CACHE_S:
            self._last_squeue = time.monotonic()
            from backend.services.slurm import squeue_states

            ids = [i for j in slurm_jobs for i in j.slurm_ids.values()]
            try:
                states = squeue_states(ids, slurm_jobs[0].slurm_cluster)
            except Exception as e:
                for j in slurm_jobs:
                    j.message = f"squeue failed: {e}"
                return
            for j in slurm_jobs:
                j.slurm_states = {jid: states.get(jid, "GONE") for jid in j.slurm_ids.values()}
                active = [s for s in j.slurm_states.values() if s != "GONE"]
                if not active:
                    j.state = "CANCELLED" if j.state == "CANCELLING" else "DONE"
                elif "RUNNING" in active:
                    j.state = "RUNNING"
                else:
                    j.state = active[0]

    def output_tail(self, job: Job, lines: int = 20) -> str:
        if job.output_path is None or not job.output_path.exists():
            return ""
        text = job.output_path.read_text(errors="replace").replace("\r", "\n")
        return "\n".join([t for t in text.splitlines() if t.strip()][-lines:])

    def cancel(self, job_id: str) -> str:
        """Cancel a queued/running job; returns what happened, in words."""
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            return f"No job {job_id}"
        if job.state in FINISHED_STATES:
            return f"Job {job_id} already finished ({job.state})"
        if job.backend == "local":
            if job.process is not None and job.process.poll() is None:
                job.state = "CANCELLING"
                job.process.terminate()
                try:
                    job.process.wait(10)
                except subprocess.TimeoutExpired:
                    job.process.kill()
                job.state = "CANCELLED"
                for run in job.runs:
                    _note_in_run_log(self.db_dir, self.proposal, run,
                                     f"Cancelled local reprocessing (dashboard job {job.id})")
            return f"Cancelled local job {job_id}"
        from backend.services.slurm import cancel_job

        done = []
        for run, sid in job.slurm_ids.items():
            res = cancel_job(sid, job.slurm_cluster, db_dir=self.db_dir, proposal=self.proposal, run=run)
            if res.cancelled:
                done.append(sid)
            elif res.error:
                return f"Could not cancel Slurm job {sid}: {res.error}"
        job.state = "CANCELLING"
        self._last_squeue = 0.0
        return f"Cancelled {len(done)} Slurm task(s)" if done else "Nothing left to cancel"

    def active_jobs(self) -> list[Job]:
        with self.lock:
            return [j for j in self.jobs.values() if j.state not in FINISHED_STATES]

    def all_jobs(self) -> list[Job]:
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: j.started, reverse=True)


def _note_in_run_log(db_dir: Path, proposal: int | None, run: int, line: str) -> None:
    if proposal is None:
        return
    try:
        append_run_log(db_dir, proposal, run, line)
    except OSError as e:
        log.warning("Could not write to the log of r%s: %s", run, e)


_BOARDS: dict[Path, JobBoard] = {}
_BOARDS_LOCK = threading.Lock()


def job_board(db_dir: Path, proposal: int | None) -> JobBoard:
    key = Path(db_dir).resolve()
    with _BOARDS_LOCK:
        if key not in _BOARDS:
            _BOARDS[key] = JobBoard(key, proposal)
        return _BOARDS[key]


# --------------------------------------------------------------------------------------------------
# Following a run's log
# --------------------------------------------------------------------------------------------------

class LogTail:
    """Follows a growing log file: reads only new bytes, notices truncation and deletion."""

    def __init__(self, path: Path, max_bytes: int = 200_000):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.offset = 0
        self.text = ""
        self.missing = True

    def poll(self) -> bool:
        """Read what was appended since the last call; True if the text changed."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            changed = not self.missing
            if changed:
                self.text += f"\n[Log file {self.path} not found or deleted]\n"
            self.missing, self.offset = True, 0
            return changed
        if self.missing:
            self.missing = False
            self.text = ""
            self.offset = max(0, size - self.max_bytes)
        if size < self.offset:  # truncated or replaced: start again
            self.text, self.offset = "", 0
        if size == self.offset:
            return False
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset = size
        self.text = (self.text + data.decode("utf-8", "replace"))[-self.max_bytes:]
        return True
