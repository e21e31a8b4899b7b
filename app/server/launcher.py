"""Run ``panel_serve.sh`` as a child process and wait until it answers (tests and benchmarks use the
real start-up path, flags and all)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "panel_serve.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DashboardServer:
    """``with DashboardServer([db_dir], "--read-only") as srv: srv.url``"""

    def __init__(self, databases=(), *flags: str, port: int | None = None, env: dict | None = None,
                 log_path: str | os.PathLike | None = None, timeout: float = 90,
                 script: str | os.PathLike = SCRIPT):
        self.port = port or free_port()
        self.args = [str(script), "--port", str(self.port), *flags, *(str(d) for d in databases)]
        self.env = dict(os.environ, **(env or {}))
        self.log_path = Path(log_path) if log_path else Path(f"/tmp/damnit-dashboard-{self.port}.log")
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        prefix = ""
        if "--prefix" in flags:
            prefix = flags[flags.index("--prefix") + 1].rstrip("/")
        self.prefix = prefix

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/main"

    @property
    def health_url(self) -> str:
        """Answers once the server listens, without building a session (app/server/routes.py)."""
        return f"http://127.0.0.1:{self.port}{self.prefix}/health"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def start(self) -> DashboardServer:
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=Path(self.args[0]).parent, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        probe = self.health_url
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"panel_serve.sh exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(probe, timeout=5) as r:
                    if r.status == 200:
                        return self
            except urllib.error.HTTPError as e:
                if e.code == 404:  # a checkout from before /health (benchmarks compare with one)
                    probe = self.url
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)  # the benchmark opens its browser as soon as the server answers
        self.stop()
        raise RuntimeError(f"dashboard did not answer at {self.health_url} within {self.timeout} s:\n{self.log()}")

    def pid_of_panel(self) -> int | None:
        """The `panel serve` child's pid (for CPU/memory figures)."""
        if self.proc is None:
            return None
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            pids = [int(x) for x in out.split()]
            return pids[0] if pids else None
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
