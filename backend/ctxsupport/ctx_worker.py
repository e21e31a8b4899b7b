"""Long-lived worker: loads the context file once, then executes it for each requested run.

Protocol (docs/design.md, contract 1): JSON-line requests on stdin; frames on the result fd, each a
protocol-5 pickle of a tuple of builtins/numpy objects whose large buffers (array data) travel out of
band, so that handing a value over copies it neither here nor in the parent: the pickle's length and
the number of buffers (``<QI``), each buffer's length (``<Q``), the pickle, then the buffers.
While a run is processed, fds 1 and 2 point at that run's log file, so user prints land there too.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import pickle
import struct
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ctx_storable import cell_record, error_record
from ctx_storable import max_variable_bytes as resolve_limit
from ctxrunner import ContextFile, error_info, mock_run, variable_traceback
from damnit_ctx import RunData

log = logging.getLogger("ctxrunner")


class FrameWriter:
    def __init__(self, fd: int):
        self.fd = fd
        self.pid = os.getpid()

    def send(self, obj) -> None:
        if os.getpid() != self.pid:
            # A process forked by user code came back into the runner (it did not end with
            # os._exit): it must neither send results nor go on with the run.
            os._exit(0)
        buffers: list[pickle.PickleBuffer] = []
        payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        head = struct.pack("<QI", len(payload), len(raws)) + b"".join(
            struct.pack("<Q", raw.nbytes) for raw in raws)
        self._write_all(head)
        self._write_all(payload)
        for raw in raws:
            self._write_all(raw)

    def _write_all(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


class StandardStreams:
    """Puts fds 1/2 and ``sys.stdout``/``sys.stderr`` back before each variable, so that one that
    closes or replaces them costs no other variable its output (or the runner its log)."""

    def __init__(self):
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.target: str | None = None  # the run's log, while a run is processed

    def repair(self) -> None:
        for fd in (1, 2):
            try:
                os.fstat(fd)
            except OSError:  # closed by user code
                new = os.open(self.target or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
                if new != fd:
                    os.dup2(new, fd)
                    os.close(new)
        for attr, fd in (("stdout", 1), ("stderr", 2)):
            own = getattr(self, attr)
            if own is None or own.closed:
                own = open(fd, "w", buffering=1, closefd=False, errors="backslashreplace")
                setattr(self, attr, own)
            setattr(sys, attr, own)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is not self.stderr:
                handler.acquire()  # (not setStream: it flushes the old stream, which may be closed)
                try:
                    handler.stream = self.stderr
                finally:
                    handler.release()


STREAMS: StandardStreams | None = None


@contextmanager
def output_to(path: str | None):
    """Point fds 1 and 2 at ``path`` (appending) for the duration of the block."""
    if not path:
        yield
        return
    _repair_streams()
    sys.stdout.flush()
    sys.stderr.flush()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    if STREAMS is not None:
        STREAMS.target = path
    try:
        yield
    finally:
        _repair_streams()
        if STREAMS is not None:
            STREAMS.target = None
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _repair_streams() -> None:
    if STREAMS is not None:
        STREAMS.repair()


def rebuild_error(cls_name: str, message: str) -> Exception:
    """An exception whose class is called ``cls_name`` (for errors decided by the parent)."""
    builtin = getattr(builtins, cls_name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        return builtin(message)
    return type(cls_name, (RuntimeError,), {})(message)


def _open_run(request: dict, selection: ContextFile):
    import extra_data

    proposal, run, run_data = request["proposal"], request["run"], request.get("run_data", "all")
    if run_data != "raw" and any(v.data is RunData.PROC for v in selection.vars.values()):
        try:
            extra_data.open_run(proposal, run, data="proc")
        except FileNotFoundError:
            log.warning("Proc data is unavailable, only raw variables will be executed.")
            selection = selection.filter(run_data=RunData.RAW)
    data = extra_data.open_run(proposal, run, data="raw" if run_data == "raw" else "all")
    return data, selection


def _close_figures() -> None:
    """Long-lived workers must not accumulate the figures user code left open."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


class Worker:
    def __init__(self, ctx: ContextFile, out: FrameWriter, limit: int):
        self.ctx = ctx
        self.out = out
        self.limit = limit

    def run(self, request: dict) -> None:
        run = request["run"]
        with output_to(request.get("log_path")):
            try:
                self._run(request)
            except BaseException as exc:  # the run itself could not be processed
                log.error("Processing run %s failed", run, exc_info=True)
                self.out.send(("run_failed", run, error_info(exc, self.ctx.path)))
            finally:
                _close_figures()

    def _run(self, request: dict) -> None:
        run, proposal = request["run"], request["proposal"]
        t0 = time.perf_counter()
        self.out.send(("run_start", run))
        selection = self.ctx.filter(
            run_data=RunData(request.get("run_data") or "all"), cluster=request.get("cluster"),
            match=request.get("match") or (), variables=request.get("variables") or ())
        log.info("proposal=%s, run=%s, run_data=%s: %d of %d variables: %s", proposal, run,
                 request.get("run_data"), len(selection.vars), len(self.ctx.vars),
                 ", ".join(selection.ordered_vars()))
        if request.get("mock"):
            log.info("Using mock run for testing")
            data = mock_run()
        else:
            data, selection = _open_run(request, selection)
        prefailed = {name: rebuild_error(cls, msg)
                     for name, (cls, msg) in (request.get("prefailed") or {}).items()}

        def on_start(name):
            _repair_streams()
            self.out.send(("var_start", name))

        def on_done(name, cell, exc, elapsed):
            _repair_streams()
            if exc is None:
                record = cell_record(name, cell, elapsed, self.limit)  # may raise: becomes an error
            else:
                tb = "" if name in prefailed else variable_traceback(exc)
                record = error_record(name, exc, elapsed, tb)
            self.out.send(("var_done", record))

        results = selection.execute(data, run, proposal, request.get("param_values") or {},
                                    prefailed=prefailed, on_start=on_start, on_done=on_done)
        log.info("Run %s done in %.2f s: %d values, %d errors or skips", run, time.perf_counter() - t0,
                 len(results.cells), len(results.errors))
        self.out.send(("run_done", run, {"start_time": float(results.start_time),
                                         "elapsed": time.perf_counter() - t0}))


def _warm_imports() -> None:
    """Import what nearly every context needs once, before the first run."""
    for module in ("extra_data", "xarray"):
        try:
            __import__(module)
        except ImportError:
            pass


def _warm_figure_imports(code: str) -> None:
    """Import matplotlib's Agg canvas now if the context draws figures, so that the first run's
    variables don't pay (or time out on) that import."""
    if "matplotlib" in code:
        try:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except ImportError:
            pass


def _exit_with_parent(interval: float = 1.0) -> None:
    """Stop even in the middle of a run if the process that started us goes away (it can no longer
    read results, and a hung variable would otherwise run forever)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _user_module_files() -> dict[str, int]:
    """Modules the context imported from outside the Python installation (e.g. helpers next to
    context.py), with their mtimes: the parent restarts us when one changes, as it does for
    context.py itself."""
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    own = os.path.dirname(os.path.realpath(__file__))
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        real = os.path.realpath(path)
        if os.path.dirname(real) == own or any(real.startswith(p + os.sep) for p in installed):
            continue
        try:
            files[real] = os.stat(real).st_mtime_ns
        except OSError:
            pass
    return files


def _private_requests():
    """Requests come on stdin; move them to a private fd and give fd 0 /dev/null, so that user code
    (``input()``, or a tool it starts) cannot swallow them."""
    requests = os.fdopen(os.dup(0), "r")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return requests


def serve(context_path: Path, result_fd: int, *, max_variable_bytes: int | None = None) -> int:
    global STREAMS
    os.set_inheritable(result_fd, False)  # processes started by user code must not write frames
    _exit_with_parent()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    STREAMS = StandardStreams()
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = FrameWriter(result_fd)
    _warm_imports()
    context_path = Path(context_path).absolute()
    try:
        ctx = ContextFile.from_py_file(context_path)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt... in the context's own code
        out.send(("context_error", error_info(exc, str(context_path))))
        return 1
    _warm_figure_imports(ctx.code)
    out.send(("ready", {"variables": ctx.vars_to_dict(inc_transient=True), "pid": os.getpid(),
                        "watch": _user_module_files()}))

    worker = Worker(ctx, out, resolve_limit(max_variable_bytes))
    for line in _private_requests():
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("cmd") == "exit":
            break
        if request.get("cmd") == "run":
            worker.run(request)
    return 0
