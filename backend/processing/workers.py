"""Parent side of the context worker protocol (docs/design.md, contracts 1 and 5).

A ``WorkerPool`` keeps N long-lived ``ctxrunner worker`` processes in ``context_python``; each loads the
context file once and then takes run after run, which is what makes processing many small runs fast.
A variable that exceeds the time limit, or kills its worker (``os._exit``, a segfault), is recorded as
that variable's error; the worker is replaced and the run re-done with that variable marked as failed,
so every other variable still gets its value.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from backend.processing.requests import RunOutcome, RunRequest
from backend.processing.summaries import summarise
from backend.storage.records import VariableResult

log = logging.getLogger(__name__)

CTXSUPPORT_DIR = Path(__file__).resolve().parent.parent / "ctxsupport"
FRAME_HEAD = struct.Struct("<QI")  # pickle length, number of out-of-band buffers
BUFFER_SIZE = struct.Struct("<Q")
PIPE_SIZE = 1 << 20  # bytes; larger pipes mean fewer system calls when large values are handed over
F_SETPIPE_SZ = 1031  # fcntl command (Linux)
DEFAULT_LOAD_TIMEOUT = 300.0  # s for a worker to start and load the context (imports can be slow)
DEFAULT_MAX_VARIABLE_BYTES = 4 * 1024**3  # as the worker's (ctx_storable); also bounds frame sizes


def worker_env() -> dict:
    """Environment for context processes: ctxsupport importable, non-interactive matplotlib."""
    env = dict(os.environ)
    paths = [str(CTXSUPPORT_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def load_context_info(db_dir, *, context_python: str | None = None,
                      timeout: float = DEFAULT_LOAD_TIMEOUT) -> dict:
    """Evaluate ``<db_dir>/context.py`` in ``context_python``.

    Returns ``{"variables": {name: {title, description, tags, data, cluster, transient, units,
    type}}}`` (transient variables included, flagged) or ``{"error": error_info}``. The evaluation runs
    in its own process group, so that on timeout whatever the context started goes with it.
    """
    db_dir = Path(db_dir)
    python = context_python or sys.executable
    context_path = db_dir / "context.py"
    fd, out_path = tempfile.mkstemp(prefix="damnit-ctx-", suffix=".json")
    os.close(fd)
    try:
        with tempfile.TemporaryFile() as output:
            try:
                proc = subprocess.Popen(
                    [python, "-m", "ctxrunner", "ctx", str(context_path), out_path], cwd=db_dir,
                    env=worker_env(), stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                    start_new_session=True)
            except OSError as exc:
                return {"error": _plain_error(type(exc).__name__,
                                              f"could not evaluate the context file with {python}: {exc}")}
            try:
                returncode = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return {"error": _plain_error(
                    "TimeoutError", f"loading the context file took longer than {timeout:g} s (the "
                    "context_load_timeout setting): does its module-level code wait for something?",
                    _tail(output), str(context_path))}
            finally:
                _kill_group(proc)  # anything it left running
            text = Path(out_path).read_text() if os.path.getsize(out_path) else ""
            if returncode != 0 or not text:
                return {"error": _plain_error(
                    "RuntimeError", f"evaluating the context file with {python} failed "
                    f"({_describe_exit(returncode)})", _tail(output), str(context_path))}
        return json.loads(text)
    finally:
        os.unlink(out_path)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group that ``proc`` leads (it was started with start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(output, limit: int = 5000) -> str:
    """The last ``limit`` characters written to a temporary output file."""
    try:
        output.seek(0, os.SEEK_END)
        output.seek(max(0, output.tell() - limit))
        return output.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""


def _plain_error(cls: str, message: str, tb: str = "", filename=None) -> dict:
    return {"cls": cls, "message": message, "traceback": tb, "filename": filename, "lineno": None,
            "offset": None}


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "it stopped responding"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class FrameError(ValueError):
    """The worker sent something that is not a valid frame."""


# What a frame may reconstruct (numpy arrays, scalars and dtypes, complex numbers; numpy 1 and 2 names):
# nothing else, so that a context (perhaps sandboxed as another user) cannot make the parent run code.
_FRAME_GLOBALS = {
    ("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "set"), ("builtins", "frozenset"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    *((f"numpy.{core}.{module}", name) for core in ("core", "_core")
      for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))),
}


class _FrameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _FRAME_GLOBALS:
            raise pickle.UnpicklingError(f"a frame may not contain {module}.{name}")
        return super().find_class(module, name)


class FrameReader:
    """Reassembles the worker's frames from a non-blocking pipe (docs/design.md, contract 1).

    Each pickle and each out-of-band buffer is read straight into memory of its final size, and the
    values are unpickled on top of those buffers, so a large array is received without being copied.
    Sizes announced beyond ``max_bytes`` are refused (the pipe can be written to by user code, and
    must not make the parent allocate whatever it claims).
    """

    def __init__(self, fd: int, max_bytes: int):
        self.fd = fd
        self.max_bytes = max_bytes
        self._new_frame()

    def _new_frame(self) -> None:
        self._stage = "head"
        self._target: bytearray | np.ndarray = bytearray(FRAME_HEAD.size)
        self._pos = 0
        self._payload = None
        self._sizes: list[int] = []
        self._buffers: list = []

    def _expect(self, stage: str, size: int) -> None:
        self._stage = stage
        self._target = bytearray(size) if size < (1 << 16) else np.empty(size, dtype=np.uint8)
        self._pos = 0

    def read(self) -> tuple[list, bool, FrameError | None]:
        """Frames now complete, whether the worker closed its end, and the error if a frame was bad
        (the frames before it are returned; the reader is then unusable)."""
        frames: list = []
        while True:
            try:
                while self._pos == len(self._target):
                    self._advance(frames)
            except FrameError as exc:
                return frames, False, exc
            try:
                n = os.readv(self.fd, [memoryview(self._target)[self._pos:]])
            except BlockingIOError:
                return frames, False, None
            if n == 0:
                return frames, True, None
            self._pos += n

    def _advance(self, frames: list) -> None:
        if self._stage == "head":
            payload_size, n_buffers = FRAME_HEAD.unpack(self._target)
            if payload_size > self.max_bytes or n_buffers > 1_000_000:
                raise FrameError(f"frame header announces {payload_size} bytes in {n_buffers} buffers")
            self._payload_size = payload_size
            self._expect("sizes", BUFFER_SIZE.size * n_buffers)
        elif self._stage == "sizes":
            self._sizes = [s for (s,) in BUFFER_SIZE.iter_unpack(self._target)]
            if sum(self._sizes) + self._payload_size > self.max_bytes:
                raise FrameError(f"frame announces {sum(self._sizes) + self._payload_size} bytes, more "
                                 f"than the limit of {self.max_bytes}")
            self._expect("payload", self._payload_size)
        else:
            if self._stage == "payload":
                self._payload = self._target
            else:
                self._buffers.append(self._target)
            if len(self._buffers) < len(self._sizes):
                self._expect("buffer", self._sizes[len(self._buffers)])
                return
            payload, buffers = self._payload, self._buffers
            self._new_frame()
            try:
                frames.append(_FrameUnpickler(io.BytesIO(payload), buffers=buffers).load())
            except Exception as exc:
                raise FrameError(f"could not decode a frame: {type(exc).__name__}: {exc}") from exc


def max_variable_bytes(explicit: int | None = None) -> int:
    """The worker's limit on one value, resolved as the worker resolves it."""
    if explicit:
        return int(explicit)
    return int(os.environ.get("DAMNIT_MAX_VARIABLE_BYTES") or DEFAULT_MAX_VARIABLE_BYTES)


class _Job:
    """A request in progress, with what earlier attempts learned (variables that hung or crashed)."""

    def __init__(self, request: RunRequest, log_path: Path):
        self.request = request
        self.log_path = log_path
        self.prefailed: dict[str, list[str]] = {}
        self.records: list[dict] = []
        self.attempts = 0

    def message(self) -> dict:
        r = self.request
        return {
            "cmd": "run", "proposal": r.proposal, "run": r.run, "run_data": r.run_data,
            "log_path": str(self.log_path), "cluster": r.cluster, "match": list(r.match),
            "variables": list(r.variables), "prefailed": self.prefailed, "mock": bool(r.mock),
        }

    def note(self, text: str) -> None:
        """Append a line from the parent to the run's log."""
        try:
            with open(self.log_path, "a") as f:
                f.write(text.rstrip("\n") + "\n")
        except OSError:
            log.warning("could not write to %s", self.log_path)


class _Worker:
    def __init__(self, pool: WorkerPool, index: int):
        self.index = index
        self.job: _Job | None = None
        self.current_var: str | None = None
        self.var_started = 0.0
        self.ready = False
        self.info: dict | None = None
        self.context_error: dict | None = None
        self.stamp = pool._context_stamp()
        self.started = time.monotonic()
        self.output = tempfile.TemporaryFile()
        read_fd, write_fd = os.pipe()
        try:
            fcntl.fcntl(write_fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # the system's limit for unprivileged users is lower: keep the default size
        cmd = [pool.context_python, "-u", "-m", "ctxrunner", "worker", "--context",
               str(pool.context_path), "--result-fd", str(write_fd)]
        if pool.max_variable_bytes:
            cmd += ["--max-variable-bytes", str(pool.max_variable_bytes)]
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=pool.db_dir, env=worker_env(), stdin=subprocess.PIPE, stdout=self.output,
                stderr=self.output, pass_fds=(write_fd,), start_new_session=True)
        finally:
            os.close(write_fd)
        self.fd = read_fd
        os.set_blocking(read_fd, False)
        # A frame holds one variable's data and preview (each within the limit) and a little more.
        self.reader = FrameReader(read_fd, 3 * max_variable_bytes(pool.max_variable_bytes) + (256 << 20))

    @property
    def loading(self) -> bool:
        return not self.ready and self.context_error is None and self.fd >= 0

    def is_stale(self, context_stamp) -> bool:
        """Whether context.py or a module it imported from outside the installation changed."""
        if self.stamp != context_stamp:
            return True
        for path, mtime in ((self.info or {}).get("watch") or {}).items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    def send(self, message: dict) -> None:
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def read_frames(self) -> tuple[list, bool, Exception | None]:
        """Frames now available, whether the worker closed its end (exited), and the error if a
        frame could not be decoded (the frames before it are returned)."""
        return self.reader.read()

    def output_tail(self, limit: int = 4000) -> str:
        return _tail(self.output, limit)

    def kill(self) -> None:
        """Stop the worker and whatever user code started in its process group (even when the
        worker itself has already exited: a process a variable left running goes too)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc.wait()
        self._close()

    def stop(self, timeout: float = 5) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "exit"})
                self.proc.stdin.close()
                self.proc.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _close(self) -> None:
        for closer in (lambda: os.close(self.fd), self.proc.stdin.close, self.output.close):
            try:
                closer()
            except (OSError, ValueError):
                pass
        self.fd = -1


class WorkerPool:
    """Long-lived context workers; ``process(requests)`` yields a RunOutcome as each run finishes.

    ``variable_timeout``: seconds one variable may take (None: unlimited). ``max_variable_bytes``: the
    largest value a variable may return (default 4 GiB, or ``DAMNIT_MAX_VARIABLE_BYTES``).
    Workers start at once and reload the context when ``context.py`` changes between runs.
    """

    def __init__(self, db_dir, *, context_python: str | None = None, n_workers: int = 1,
                 variable_timeout: float | None = None, max_variable_bytes: int | None = None,
                 load_timeout: float = DEFAULT_LOAD_TIMEOUT):
        self.load_timeout = load_timeout
        self.db_dir = Path(db_dir).resolve()
        self.context_path = self.db_dir / "context.py"
        self.context_python = context_python or sys.executable
        self.n_workers = max(1, int(n_workers))
        self.variable_timeout = variable_timeout
        self.max_variable_bytes = max_variable_bytes
        self._workers: list[_Worker] = []
        self._requeued: list[_Job] = []  # jobs to re-run after a variable hung or crashed
        self._active = False  # a process() iteration is under way
        self._closed = False
        self._selector = selectors.DefaultSelector()
        for i in range(self.n_workers):
            self._start_worker(i)

    # ------------------------------------------------------------------------------ lifecycle

    def _context_stamp(self):
        try:
            st = self.context_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _start_worker(self, index: int) -> _Worker:
        worker = _Worker(self, index)
        self._selector.register(worker.fd, selectors.EVENT_READ, worker)
        if index < len(self._workers):
            self._workers[index] = worker
        else:
            self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker, *, kill: bool = True) -> _Worker:
        if worker.fd >= 0:
            self._selector.unregister(worker.fd)
        if kill:
            worker.kill()
        else:
            worker.stop()
        return self._start_worker(worker.index)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            if worker.fd >= 0:
                self._selector.unregister(worker.fd)
            worker.stop()
        self._selector.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ----------------------------------------------------------------------------- processing

    def _log_path(self, request: RunRequest) -> Path:
        path = Path(request.log_path) if request.log_path else (
            self.db_dir / "process_logs" / f"r{request.run}-p{request.proposal}.out")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def process(self, requests: Iterable[RunRequest]) -> Iterator[RunOutcome]:
        """Yield a RunOutcome per request, in the order runs finish. One iteration at a time per pool;
        closing the iterator early stops the runs still in progress."""
        if self._closed:
            raise RuntimeError("this WorkerPool is closed")
        if self._active:
            raise RuntimeError("WorkerPool.process() is already running; finish or close the "
                               "previous iterator first")
        self._active = True
        try:
            yield from self._process(deque(_Job(r, self._log_path(r)) for r in requests))
        finally:
            self._active = False
            self._requeued.clear()
            for worker in list(self._workers):
                if worker.job is not None and not self._closed:  # abandoned mid-run
                    worker.job.note("Processing was stopped before this run finished.")
                    self._replace(worker)

    def _process(self, queue: deque) -> Iterator[RunOutcome]:
        busy = 0
        while queue or busy:
            for worker in list(self._workers):
                if worker.job is None and worker.ready and queue:
                    if worker.is_stale(self._context_stamp()):  # context.py or a helper edited
                        self._replace(worker, kill=False)
                        continue
                    job = queue.popleft()
                    self._assign(worker, job)
                    busy += 1
                elif worker.context_error is not None and queue:
                    # Every run fails the same way until the file is fixed.
                    if worker.stamp != self._context_stamp():
                        self._replace(worker, kill=False)
                        continue
                    while queue:
                        job = queue.popleft()
                        yield self._context_failure(job, worker.context_error)
            if not (busy or queue):
                break
            for outcome, freed in self._poll():
                busy -= freed
                if outcome is not None:
                    yield outcome
            # runs interrupted by a hung or crashed variable go first, so they finish soon
            while self._requeued:
                queue.appendleft(self._requeued.pop())

    def _assign(self, worker: _Worker, job: _Job) -> None:
        job.attempts += 1
        job.records = []
        worker.job = job
        worker.current_var = None
        try:
            worker.send(job.message())
        except (BrokenPipeError, OSError):
            pass  # the worker died; its EOF is handled by _poll

    def _context_failure(self, job: _Job, info: dict) -> RunOutcome:
        job.note(f"Context file could not be loaded: {info.get('cls')}: {info.get('message')}\n"
                 f"{info.get('traceback') or ''}")
        return RunOutcome(request=job.request, run_error=dict(info))

    def _poll(self) -> list[tuple[RunOutcome | None, int]]:
        """Wait for worker output (or a variable deadline); returns (outcome, jobs freed) pairs."""
        timeout = self._next_deadline()
        events = self._selector.select(timeout)
        done: list[tuple[RunOutcome | None, int]] = []
        for key, _ in events:
            worker: _Worker = key.data
            if worker.fd < 0:
                continue
            frames, eof, bad = worker.read_frames()
            for frame in frames:
                outcome = self._handle(worker, frame)
                if outcome is not None:
                    done.append((outcome, 1))
            if bad is not None:  # an undecodable frame: the worker's state is unknown, replace it
                done.extend(self._broken_result(worker, bad))
            elif eof:
                done.extend(self._handle_exit(worker))
        done.extend(self._check_deadlines())
        return done

    def _next_deadline(self) -> float | None:
        deadlines = [w.started + self.load_timeout for w in self._workers if w.loading]
        if self.variable_timeout is not None:
            deadlines += [w.var_started + self.variable_timeout for w in self._workers
                          if w.job is not None and w.current_var is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _handle(self, worker: _Worker, frame) -> RunOutcome | None:
        kind = frame[0]
        if kind == "ready":
            worker.ready = True
            worker.info = frame[1]
        elif kind == "context_error":
            worker.context_error = frame[1]
        elif kind == "var_start":
            worker.current_var = frame[1]
            worker.var_started = time.monotonic()
        elif kind == "var_done":
            worker.current_var = None
            if worker.job is not None:
                worker.job.records.append(frame[1])
        elif kind in ("run_done", "run_failed"):
            job = worker.job
            worker.job = None
            worker.current_var = None
            if job is None:
                return None
            if kind == "run_failed":
                return RunOutcome(request=job.request, run_error=frame[2])
            return self._finish(job, worker, frame[2])
        return None

    def _finish(self, job: _Job, worker: _Worker, info: dict) -> RunOutcome:
        variables = (worker.info or {}).get("variables", {})
        results = []
        for record in job.records:
            meta = variables.get(record["name"], {})
            if meta.get("transient"):
                continue
            try:
                results.append(summarise(record))
            except Exception as exc:  # summarising must not lose the run's other variables
                log.exception("could not summarise %s", record["name"])
                results.append(VariableResult(name=record["name"], error_cls=type(exc).__name__,
                                              error=f"could not summarise the value: {exc}"))
        return RunOutcome(request=job.request, results=results, start_time=info.get("start_time"))

    def _handle_exit(self, worker: _Worker) -> list[tuple[RunOutcome | None, int]]:
        """The worker closed its result pipe: it exited or died."""
        try:
            worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        how = _describe_exit(worker.proc.poll())
        job, var = worker.job, worker.current_var
        if not worker.ready:
            if worker.context_error is None:
                worker.context_error = _plain_error(
                    "RuntimeError", f"the context worker ({self.context_python}) exited before it was "
                    f"ready ({how})", worker.output_tail(), str(self.context_path))
            self._selector.unregister(worker.fd)
            worker._close()
            worker.ready = False
            return []
        self._replace(worker)
        if job is None:
            return []
        if var is None:
            job.note(f"The context worker died while processing run {job.request.run} ({how}).")
            return [(RunOutcome(request=job.request, run_error=_plain_error(
                "WorkerCrashError", f"the context worker died while processing run {job.request.run} "
                f"outside any variable ({how})", worker.output_tail())), 1)]
        message = f"the worker process died while computing {var!r} ({how})"
        return self._retry(job, var, "WorkerCrashError", message)

    def _broken_result(self, worker: _Worker, exc: Exception) -> list[tuple[RunOutcome | None, int]]:
        job, var = worker.job, worker.current_var
        log.error("could not decode a result from the context worker: %s", exc)
        self._replace(worker)
        if job is None:
            return []
        if var is None:
            return [(RunOutcome(request=job.request, run_error=_plain_error(
                type(exc).__name__, f"could not decode a result of run {job.request.run}: {exc}")), 1)]
        return self._retry(job, var, type(exc).__name__, f"could not decode the result of {var!r}: {exc}")

    def _check_deadlines(self) -> list[tuple[RunOutcome | None, int]]:
        now = time.monotonic()
        for worker in self._workers:
            if worker.loading and now - worker.started >= self.load_timeout:
                output = worker.output_tail()
                self._selector.unregister(worker.fd)
                worker.kill()
                worker.context_error = _plain_error(
                    "TimeoutError", f"loading the context file took longer than {self.load_timeout:g} s "
                    "(the context_load_timeout setting): does its module-level code wait for something?",
                    output, str(self.context_path))
        if self.variable_timeout is None:
            return []
        out = []
        for worker in list(self._workers):
            if worker.job is None or worker.current_var is None:
                continue
            if now - worker.var_started < self.variable_timeout:
                continue
            job, var = worker.job, worker.current_var
            self._replace(worker)
            message = (f"variable {var!r} did not finish within the time limit of "
                       f"{self.variable_timeout:g} s (the variable_timeout setting) and was stopped")
            out.extend(self._retry(job, var, "TimeoutError", message))
        return out

    def _retry(self, job: _Job, var: str, cls: str, message: str):
        job.note(f"{cls}: {message}; re-running the run's other variables in a new worker")
        job.prefailed[var] = [cls, message]
        if job.attempts > len(job.prefailed) + 2:  # cannot happen unless something is badly wrong
            return [(RunOutcome(request=job.request, run_error=_plain_error(cls, message)), 1)]
        self._requeued.append(job)
        return [(None, 1)]
