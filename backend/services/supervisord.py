"""``damnit listen --daemonize``: run the listener for one folder under supervisord.

Writes ``supervisord.conf`` next to ``listener.sqlite`` (HTTP control on a free loopback port with a
random user and password, logs in ``supervisord.log``), starts supervisord or reuses a running one,
so that ``supervisorctl -c supervisord.conf status|restart damnit`` work from that folder.
"""

from __future__ import annotations

import configparser
import logging
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

CONF_NAME = "supervisord.conf"
PROGRAM = "damnit"
# supervisorctl exit codes
RC_STOPPED = 3
RC_NO_SERVER = 4


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listener_command() -> str:
    """The command supervisord runs: this installation's ``damnit listen .``."""
    exe = shutil.which("damnit")
    if exe and Path(exe).resolve().parent == Path(sys.executable).resolve().parent:
        return f"{shlex.quote(exe)} listen ."
    return f"{shlex.quote(sys.executable)} -m backend.cli listen ."


def write_supervisord_conf(listener_dir: Path, host: str = "127.0.0.1") -> Path:
    """A fresh config with a free port and new random credentials (mode 0666, as the original)."""
    listener_dir = Path(listener_dir).absolute()
    port = free_port(host)
    user, password = secrets.token_hex(16), secrets.token_hex(32)
    conf = configparser.ConfigParser(interpolation=None)
    conf["supervisord"] = {"logfile": "%(here)s/supervisord.log", "pidfile": "%(here)s/supervisord.pid"}
    conf["inet_http_server"] = {"port": f"{host}:{port}", "username": user, "password": password}
    conf[f"program:{PROGRAM}"] = {
        "command": listener_command(), "directory": str(listener_dir), "stopasgroup": "true",
        "killasgroup": "true", "autorestart": "true", "startsecs": "1",
        "stdout_logfile": "NONE", "stderr_logfile": "NONE",
        # Whatever the caller's environment says about the broker and data goes to the listener too.
        **({"environment": _environment()} if _environment() else {}),
    }
    conf["supervisorctl"] = {"serverurl": f"http://{host}:{port}", "username": user, "password": password}
    conf["rpcinterface:supervisor"] = {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}
    path = listener_dir / CONF_NAME
    with open(path, "w") as f:
        conf.write(f)
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o666)
    return path


def _environment() -> str:
    keys = ("AMORE_BROKER", "XFEL_DATA_ROOT", "EXTRA_DATA_DATA_ROOT", "SLURM_CONF", "PYTHONPATH", "PATH")
    pairs = []
    for k in keys:
        if k in os.environ:
            value = os.environ[k].replace('"', '\\"').replace("%", "%%")
            pairs.append(f'{k}="{value}"')
    return ",".join(pairs)


def supervisorctl(listener_dir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["supervisorctl", "-c", str(Path(listener_dir) / CONF_NAME), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


STAY_RUNNING_S = 3.0  # how long a newly started listener must keep running to count as started


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def listener_is_running(listener_dir: Path, timeout: float = 5.0) -> bool:
    return _wait_until(lambda: "RUNNING" in supervisorctl(listener_dir, "status", PROGRAM).stdout, timeout)


def _still_running(listener_dir: Path, seconds: float) -> bool:
    """RUNNING now and ``seconds`` later, with the same process."""
    def pid() -> str | None:
        out = supervisorctl(listener_dir, "status", PROGRAM).stdout
        return out.split("pid ", 1)[1].split(",")[0] if "RUNNING" in out and "pid " in out else None

    first = pid()
    time.sleep(seconds)
    return first is not None and pid() == first


def start_listener(listener_dir: str | Path) -> None:
    """Start (or reuse) supervisord and the listener under it; raises RuntimeError saying what failed."""
    listener_dir = Path(listener_dir).absolute()
    listener_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("supervisord") is None or shutil.which("supervisorctl") is None:
        raise RuntimeError("supervisord/supervisorctl not found on PATH (pip install supervisor)")
    conf = listener_dir / CONF_NAME
    if not conf.is_file():
        write_supervisord_conf(listener_dir)
    res = supervisorctl(listener_dir, "status", PROGRAM)
    if res.returncode == RC_NO_SERVER:
        write_supervisord_conf(listener_dir)  # the old port may be taken by now
        started = subprocess.run(["supervisord", "-c", str(conf)], capture_output=True, text=True,
                                 cwd=listener_dir, timeout=60)
        if started.returncode != 0:
            raise RuntimeError(f"supervisord -c {conf} failed (exit {started.returncode}): "
                               f"{(started.stderr or started.stdout).strip()}")
        if not _wait_until(lambda: supervisorctl(listener_dir, "status", PROGRAM).returncode != RC_NO_SERVER,
                           15):
            raise RuntimeError(f"supervisord did not answer; see {listener_dir / 'supervisord.log'}")
    elif res.returncode == RC_STOPPED:
        started = supervisorctl(listener_dir, "start", PROGRAM)
        if started.returncode != 0:
            raise RuntimeError(f"supervisorctl start {PROGRAM} failed: {(started.stdout + started.stderr).strip()}")
    elif res.returncode != 0:
        raise RuntimeError(f"supervisorctl status failed (exit {res.returncode}): "
                           f"{(res.stdout + res.stderr).strip()}")
    for name in ("supervisord.pid", "supervisord.log"):
        path = listener_dir / name
        if _wait_until(path.is_file, 5) and path.stat().st_uid == os.getuid():
            os.chmod(path, 0o666)
    # RUNNING only means it lived for `startsecs` (1 s): on a busy machine a listener that cannot start
    # (no broker configured, say) takes longer than that to fail, so it must still run a while later.
    if not listener_is_running(listener_dir, timeout=10) or not _still_running(listener_dir, STAY_RUNNING_S):
        status = supervisorctl(listener_dir, "status", PROGRAM).stdout.strip()
        raise RuntimeError(f"the listener did not stay running under supervisord ({status}); "
                           f"see {listener_dir / 'damnit.log'} and {listener_dir / 'supervisord.log'}")
