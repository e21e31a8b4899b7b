"""A real supervisord for tests that need a supervised process of their own.

(``damnit listen --daemonize`` writes its own configuration; use ``supervisorctl(conf, ...)`` to
inspect that one.)
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .kafka import free_port


class SupervisorError(RuntimeError):
    """supervisord did not start or supervisorctl failed unexpectedly."""


def _exe(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise SupervisorError(f"{name} not found: pip install supervisor")
    return found


def supervisorctl(conf: Path | str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run supervisorctl against ``conf``; exit code 3 means a program is not running."""
    return subprocess.run([_exe("supervisorctl"), "-c", str(conf), *args], capture_output=True, text=True,
                          timeout=timeout)


class Supervisor:
    """supervisord on a free loopback port with a random password; ``programs`` is {name: command}."""

    def __init__(self, workdir: Path, programs: dict[str, str], *, autostart: bool = True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.username, self.password = "tests", secrets.token_hex(8)
        self.conf = self.dir / "supervisord.conf"
        sections = [
            f"[inet_http_server]\nport=127.0.0.1:{self.port}\nusername={self.username}\n"
            f"password={self.password}\n",
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
            f"[supervisorctl]\nserverurl=http://127.0.0.1:{self.port}\nusername={self.username}\n"
            f"password={self.password}\n",
            f"[supervisord]\nlogfile={self.dir}/supervisord.log\npidfile={self.dir}/supervisord.pid\n"
            f"childlogdir={self.dir}\ndirectory={self.dir}\n",
        ]
        for name, command in programs.items():
            sections.append(f"[program:{name}]\ncommand={command}\nautostart={str(autostart).lower()}\n"
                            f"autorestart=true\nstartsecs=1\nstopasgroup=true\nkillasgroup=true\n"
                            f"stdout_logfile={self.dir}/{name}.log\nredirect_stderr=true\n")
        self.conf.write_text("\n".join(sections))

    def start(self, timeout: float = 20) -> None:
        proc = subprocess.run([_exe("supervisord"), "-c", str(self.conf)], capture_output=True, text=True,
                              env={**os.environ})
        if proc.returncode != 0:
            raise SupervisorError(f"supervisord failed to start: {proc.stderr or proc.stdout}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ctl("pid").stdout.strip().isdigit():
                return
            time.sleep(0.1)
        raise SupervisorError(f"supervisord did not answer on port {self.port}; log:\n{self.log_tail()}")

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return supervisorctl(self.conf, *args)

    def stop(self) -> None:
        """Shut supervisord and its programs down."""
        self.ctl("shutdown")
        pidfile = self.dir / "supervisord.pid"
        for _ in range(100):
            if not pidfile.exists():
                return
            time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.dir / "supervisord.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
