"""Process runs end to end: context workers → HDF5 files → runs.sqlite → update messages.

`RunProcessor` is the one place that turns "process these runs" into stored results. It is used by
`damnit reprocess --direct`, by Slurm jobs (``python -m backend.processing.run_processor ...``, docs/spec.md "Processing jobs: Slurm submission") and by the
listener's local processing. Results of each run are stored as soon as that run finishes, so a failure
in one run (or in one variable) never costs the others their data.
"""

from __future__ import annotations

import collections
import contextlib
import getpass
import logging
import os
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from backend.base.messages import UpdateProducer
from backend.base.paths import append_log, make_shared_dir, run_log_path
from backend.processing.requests import RunOutcome, RunRequest
from backend.processing.workers import WorkerPool, load_context_info
from backend.storage import h5format
from backend.storage.database import DamnitDB
from backend.storage.settings import (
    CONTEXT_LOAD_TIMEOUT,
    MAX_VARIABLE_BYTES,
    VARIABLE_TIMEOUT,
    SettingError,
    effective,
)

log = logging.getLogger(__name__)

PROVENANCE = "context.py"
HEARTBEAT_INTERVAL = 10.0  # seconds between repeated RUNNING messages (as the original)


class NothingProcessed(RuntimeError):
    """Processing was refused before anything was written (the message says why and where)."""


class ContextLoadError(NothingProcessed):
    """The context file could not be loaded; nothing was processed or written."""

    def __init__(self, context_path: Path, info: dict):
        self.context_path = Path(context_path)
        self.info = info or {}
        super().__init__(format_context_error(self.context_path, self.info))


def format_context_error(context_path: Path, info: dict) -> str:
    """``Error in context file FILE:LINE:COL: Cls: message``, then the traceback if there is one."""
    filename = info.get("filename") or str(context_path)
    where = filename
    if info.get("lineno"):
        where += f":{info['lineno']}"
        if info.get("offset"):
            where += f":{info['offset']}"
    cls = info.get("cls") or "Error"
    message = (info.get("message") or "").strip()
    text = f"Error in context file {where}: {cls}: {message}"
    tb = (info.get("traceback") or "").rstrip()
    if tb and not ("Traceback (most recent call last)" not in tb and tb.endswith(message)):
        text += "\n" + tb  # (a bare "Cls: message" line would only repeat the message)
    return text


class VariableSelectionError(NothingProcessed, ValueError):
    """--var names a variable the context does not have, or no title matches --match."""


def check_selection(info: dict, requests: Iterable[RunRequest], context_path: Path) -> None:
    """Reject a selection that would silently process nothing (a typo in --var or --match)."""
    variables = info.get("variables", {})
    for selection in {(tuple(r.variables), tuple(r.match)) for r in requests}:
        names, match = selection
        unknown = [v for v in names if v not in variables]
        if unknown:
            raise VariableSelectionError(
                f"{context_path} has no variable named {', '.join(map(repr, unknown))}; it defines: "
                f"{', '.join(sorted(variables)) or 'no variables'}")
        if match and not names:
            titles = [(v.get("title") or n).lower() for n, v in variables.items()]
            if not any(m.lower() in t for m in match for t in titles):
                raise VariableSelectionError(
                    f"no variable title in {context_path} contains {' or '.join(map(repr, match))}")


def _node_info() -> str:
    host = socket.gethostname()
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if job_id:
        return f"{host} (job id: {job_id}, cluster: {os.environ.get('SLURM_CLUSTER_NAME', '')})"
    return f"{host} (local)"


def _slurm_job_id() -> str:
    job = os.environ.get("SLURM_JOB_ID", "")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job and task is not None:
        return f"{array_job}_{task}"
    return job


def _append_log(path: Path, text: str) -> None:
    """A note in a run's log; a log that can't be written is worth a warning, never a failed run."""
    try:
        append_log(path, text)
    except OSError as e:
        log.warning("Could not write to log %s: %s", path, e)


class RunProcessor:
    """Process runs of one DAMNIT database with a pool of long-lived context workers."""

    def __init__(self, db_dir, *, n_workers: int | None = None, producer=None,
                 variable_timeout: float | None = None, sandbox_args: str | None = None):
        self.db_dir = Path(db_dir).resolve()
        # A command prefix run as `<sandbox_args...> <proposal> -- <python ...>` around every context
        # process (the listener's `sandbox_args` setting, as in the original).
        self.sandbox_args = sandbox_args or None
        self._sandbox_proposal: int | None = None
        self._wrapper_dir: Path | None = None
        self.db = DamnitDB.from_dir(self.db_dir)
        # Update messages go to the DB's topic; resolved once, as the heartbeat thread may not use the DB.
        self.topic = self.db.kafka_topic
        self.n_workers = n_workers
        self.variable_timeout = variable_timeout  # None: the database's variable_timeout setting
        if producer is None:
            producer = UpdateProducer.from_env()
        self.producer = producer
        self._send_lock = threading.Lock()
        self.context_info: dict | None = None  # from the last read of the context file
        self._context_cache: tuple | None = None
        self._pool: WorkerPool | None = None  # kept between process() calls; reloads on context edits

    def close(self) -> None:
        """Stop the context workers (they are otherwise kept for the next `process()` call)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def warm_up(self) -> None:
        """Start a context worker and read the context now, so that the first run does not wait for
        them (the listener does this when every run will be processed locally)."""
        try:
            self._workers_for(1)
            self.read_context()
        except NothingProcessed as e:  # said again, in the run's log, when a run comes
            log.warning("Runs of %s cannot be processed yet: %s", self.db_dir, e)

    def __enter__(self) -> RunProcessor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def limits(self) -> tuple[float, float, int | None]:
        """(variable_timeout, context_load_timeout, max_variable_bytes) from the database's settings,
        read again for every batch of runs so that a long-lived processor (the listener's) follows
        `damnit db-config` changes. A bad value stops processing before anything is written.
        max_variable_bytes is None when unset: the worker then uses DAMNIT_MAX_VARIABLE_BYTES or the
        default."""
        settings = self.db.metameta.to_dict()
        try:
            timeout = self.variable_timeout or effective(settings, VARIABLE_TIMEOUT)
            max_bytes = (effective(settings, MAX_VARIABLE_BYTES)
                         if settings.get(MAX_VARIABLE_BYTES.key) not in (None, "") else None)
            return timeout, effective(settings, CONTEXT_LOAD_TIMEOUT), max_bytes
        except SettingError as e:
            raise NothingProcessed(f"{self.db.path}: {e}") from None

    def _workers_for(self, n_workers: int) -> WorkerPool:
        variable_timeout, load_timeout, max_bytes = self.limits()
        pool = self._pool
        python = self._python()
        if (pool is None or pool.n_workers < n_workers or pool.context_python != python
                or pool.max_variable_bytes != max_bytes):
            self.close()
            pool = self._pool = WorkerPool(self.db_dir, context_python=python, n_workers=n_workers,
                                           variable_timeout=variable_timeout, load_timeout=load_timeout,
                                           max_variable_bytes=max_bytes)
        pool.variable_timeout, pool.load_timeout = variable_timeout, load_timeout
        return pool

    # -- context -------------------------------------------------------------------------------------

    @property
    def context_path(self) -> Path:
        return self.db_dir / "context.py"

    @property
    def context_python(self) -> str | None:
        return self.db.metameta.get("context_python") or None

    def _python(self) -> str:
        """The interpreter for context processes; with sandbox_args, a script that wraps it."""
        python = self.context_python or sys.executable
        if not self.sandbox_args:
            return python
        if self._wrapper_dir is None:
            self._wrapper_dir = Path(tempfile.mkdtemp(prefix="damnit-sandbox-"))
            weakref.finalize(self, shutil.rmtree, self._wrapper_dir, True)
        proposal = self._sandbox_proposal or self.db.metameta.get("proposal") or 0
        wrapper = self._wrapper_dir / f"python-p{proposal}"
        if not wrapper.exists():
            cmd = [*shlex.split(self.sandbox_args), str(proposal), "--", python]
            wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(cmd)} "$@"\n')
            wrapper.chmod(0o755)
        return str(wrapper)

    def read_context(self) -> dict:
        """Evaluate the context file in `context_python`; raise ContextLoadError with file:line on failure.

        A successful result is reused until context.py or the interpreter changes, so a processor
        kept for many calls (the listener's) does not start an extra interpreter for every run.
        """
        try:
            st = self.context_path.stat()
        except FileNotFoundError:
            raise ContextLoadError(self.context_path, {
                "message": f"No context file at {self.context_path}", "cls": "FileNotFoundError"}) from None
        python = self._python()
        key = (st.st_mtime_ns, st.st_size, st.st_ino, python)
        if self._context_cache is not None and self._context_cache[0] == key:
            return self._context_cache[1]
        info = load_context_info(self.db_dir, context_python=python, timeout=self.limits()[1])
        if info.get("error"):
            raise ContextLoadError(self.context_path, info["error"])
        self._context_cache = (key, info)
        return info

    def update_variables(self, info: dict | None = None) -> list[str]:
        """Write the context's variables (and tags) to the `variables` table; announce changed ones."""
        if info is None:
            info = self.read_context()
        variables = info.get("variables", {})
        db_vars = {
            name: {
                "title": v.get("title") or name,
                "description": v.get("description"),
                "tags": list(v.get("tags") or []),
                "attributes": None,
                "type": None,
            }
            for name, v in variables.items()
            if not v.get("transient")
        }
        changed = self.db.update_computed_variables(db_vars)
        if changed is None:  # an implementation that does not report changes: announce all
            changed = db_vars
        for name, var in dict(changed).items():
            self._send(self.producer.variable_set, self.topic, {"name": name, **var})
        return list(changed)

    # -- processing ----------------------------------------------------------------------------------

    def process(self, requests: Iterable[RunRequest], progress: Callable[[RunOutcome], None] | None = None,
                *, update_vars: bool = True, processing_ids: dict | None = None) -> Iterator[RunOutcome]:
        """Process `requests`, storing each run's results as soon as it finishes.

        The context is checked (and, with `update_vars`, the `variables` table updated) before anything
        is stored; if it cannot be loaded, ContextLoadError is raised and nothing is written except
        notes in the run logs. Yields one RunOutcome per run;
        ``outcome.run_error`` is set when the run could not be processed or stored.
        """
        requests = list(requests)
        if not requests:
            if update_vars:
                self.update_variables()
            return
        processing_ids = dict(processing_ids or {})
        for req in requests:
            if req.log_path is None:
                req.log_path = run_log_path(self.db_dir, req.proposal, req.run)
            processing_ids.setdefault(id(req), req.processing_id)

        self._sandbox_proposal = requests[0].proposal
        n_workers = self.n_workers or os.cpu_count() or 1
        n_workers = max(1, min(n_workers, len(requests)))

        make_shared_dir(self.db_dir / "extracted_data")
        make_shared_dir(self.db_dir / "process_logs")
        user, node = self._username(requests[0].proposal), _node_info()
        for req in requests:
            _append_log(req.log_path, f"\n----- Processing r{req.run} (p{req.proposal}) as {user} on {node} -----")

        # The workers start on the runs at once, in a feeder thread, while this thread checks the context
        # and then stores results as they come: neither waits for the other. Nothing is written to the
        # database or the run files before the context has been checked.
        try:
            pool = self._workers_for(n_workers)
        except OSError as e:
            raise NothingProcessed(
                f"cannot start the context interpreter {self.context_python or sys.executable!r} "
                f"(the `context_python` setting, see `damnit db-config`): {e}") from None
        outcomes: queue.Queue = queue.Queue()
        feeder = threading.Thread(target=self._feed, args=(pool, requests, outcomes), daemon=True,
                                  name="damnit-workers")
        completed = False
        stop = threading.Event()
        heartbeat = None
        try:
            feeder.start()
            try:
                info = self.read_context()
                check_selection(info, requests, self.context_path)
            except (ContextLoadError, VariableSelectionError) as e:
                for req in requests:
                    _append_log(req.log_path, f"{e}\nNothing was processed for this run.")
                    # clears a PENDING state announced by whoever submitted the run
                    self._send(self.producer.processing_finished, self.topic, processing_ids[id(req)])
                raise
            self.context_info = info
            if update_vars:
                self.update_variables(info)

            # The pool takes requests in order as workers come free, so the first n_workers are running
            # and the rest wait; each finished run lets the next one start.
            waiting = collections.deque(requests)
            running: dict[int, RunRequest] = {}

            def start_next() -> None:
                if waiting:
                    req = waiting.popleft()
                    running[id(req)] = req
                    self._send_state(req, processing_ids[id(req)], "RUNNING")

            for _ in range(min(pool.n_workers, len(requests))):
                start_next()
            for req in waiting:
                self._send_state(req, processing_ids[id(req)], "PENDING")
            heartbeat = threading.Thread(target=self._heartbeat, args=(stop, running, processing_ids),
                                         daemon=True, name="damnit-heartbeat")
            heartbeat.start()
            while True:
                kind, item = outcomes.get()
                if kind == "done":
                    break
                if kind == "error":
                    raise item
                self._store(item)
                if running.pop(id(item.request), None) is None:  # finished before we marked it running
                    with contextlib.suppress(ValueError):
                        waiting.remove(item.request)
                else:
                    start_next()
                self._send(self.producer.processing_finished, self.topic, processing_ids.get(id(item.request)))
                if progress is not None:
                    progress(item)
                yield item
            completed = True
        finally:
            stop.set()
            if completed:
                feeder.join()  # it has already passed on "done"
            else:
                # Interrupted, or the context failed: stop the workers (the feeder then ends on its own,
                # nothing waits for it) and start afresh next time.
                self.close()
            if heartbeat is not None:
                heartbeat.join(timeout=1)
            flush = getattr(self.producer, "flush", None)
            if flush is not None:
                try:
                    flush()
                except Exception as e:  # an unreachable broker must not fail processing
                    log.warning("Could not flush update messages: %s", e)

    @staticmethod
    def _feed(pool: WorkerPool, requests: list[RunRequest], outcomes: queue.Queue) -> None:
        """Run the requests through the pool, passing each outcome on as soon as it arrives."""
        try:
            for outcome in pool.process(requests):
                outcomes.put(("outcome", outcome))
            outcomes.put(("done", None))
        except BaseException as e:  # handed to the consuming thread, which re-raises it
            outcomes.put(("error", e))

    def _store(self, outcome: RunOutcome) -> None:
        """Merge one run's results into its HDF5 file and the database, then announce them."""
        req = outcome.request
        log_path = req.log_path or run_log_path(self.db_dir, req.proposal, req.run)
        if outcome.run_error:
            err = outcome.run_error
            _append_log(log_path, f"Run r{req.run} (p{req.proposal}) could not be processed: "
                                  f"{err.get('cls') or 'Error'}: {err.get('message')}\n"
                                  f"{(err.get('traceback') or '').rstrip()}")
            log.error("p%s r%s could not be processed: %s", req.proposal, req.run, err.get("message"))
            return
        results = list(outcome.results)
        if not results:
            return
        names = [r.name for r in results]
        path = h5format.run_file_path(self.db_dir, req.proposal, req.run)
        try:
            # A value the database can't take becomes an error in the run file too, and the database is
            # written before the new run file replaces the old one: the two always agree.
            stored = h5format.write_results(
                path, results, vet=lambda summaries: self.db.unstorable(req.proposal, req.run, summaries),
                commit=lambda summaries: self.db.set_variables(req.proposal, req.run, summaries,
                                                               provenance=PROVENANCE))
            outcome.results = stored
            for before, after in zip(results, stored):
                if after is not before:
                    _append_log(log_path, f"Variable {after.name!r} of r{req.run}: {after.error_cls}: "
                                          f"{after.error}")
                    log.error("p%s r%s: %s: %s", req.proposal, req.run, after.name, after.error)
        except Exception as e:
            outcome.run_error = {
                "message": f"Could not store results: {e}", "cls": type(e).__name__,
                "traceback": traceback.format_exc(), "filename": str(path), "lineno": None, "offset": None,
            }
            _append_log(log_path, f"Storing results of r{req.run} failed:\n{traceback.format_exc()}")
            log.error("Could not store results for p%s r%s: %s", req.proposal, req.run, e)
            return
        # Like the original's combiner, every stored name is announced (start_time included).
        self._send(self.producer.run_values_updated, self.topic, req.proposal, req.run, names)

    # -- messages ------------------------------------------------------------------------------------

    def _username(self, proposal: int) -> str:
        """Who the context runs as: the sandbox's `whoami` when sandboxed, else this user."""
        if self.sandbox_args:
            try:
                res = subprocess.run([*shlex.split(self.sandbox_args), str(proposal), "--", "whoami"],
                                     capture_output=True, text=True, timeout=60)
                if res.returncode == 0 and res.stdout.strip():
                    return res.stdout.strip()
            except (OSError, subprocess.SubprocessError) as e:
                log.warning("Could not ask the sandbox who runs the context: %s", e)
        return getpass.getuser()

    def _state_info(self, req: RunRequest, processing_id: str, status: str) -> dict:
        cluster = os.environ.get("SLURM_CLUSTER_NAME", "") if os.environ.get("SLURM_JOB_ID") else None
        return {
            "processing_id": processing_id,
            "proposal": req.proposal,
            "run": req.run,
            "data": req.run_data,
            "status": status,
            "hostname": socket.gethostname(),
            "username": getpass.getuser(),
            "slurm_cluster": cluster,
            "slurm_job_id": _slurm_job_id() or None,
        }

    def _send_state(self, req: RunRequest, processing_id: str, status: str) -> None:
        self._send(self.producer.processing_state_set, self.topic,
                   **self._state_info(req, processing_id, status))

    def _heartbeat(self, stop: threading.Event, running: dict, processing_ids: dict) -> None:
        """Repeat RUNNING for the runs in progress, as the original's jobs do."""
        while not stop.wait(HEARTBEAT_INTERVAL):
            for key, req in list(running.items()):
                self._send_state(req, processing_ids[key], "RUNNING")

    def _send(self, method, *args, **kwargs) -> None:
        """Send an update message; a broker problem is logged, never fatal to processing."""
        try:
            with self._send_lock:
                method(*args, **kwargs)
        except Exception as e:
            log.warning("Could not send update message (%s): %s", getattr(method, "__name__", method), e)
