"""A one-node Slurm cluster for tests, started by our own start-slurm.sh on free loopback ports."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .kafka import free_port

HERE = Path(__file__).resolve().parent
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE"}


class SlurmError(RuntimeError):
    """The cluster did not start, or a Slurm command failed."""


def stop_abandoned_clusters(parent: Path = Path("/tmp"), pattern: str = "slurm-*") -> list[Path]:
    """Stop and remove clusters left by test sessions that were killed before their teardown ran."""
    stopped = []
    for d in parent.glob(pattern):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
            continue  # its session is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        subprocess.run(["bash", str(HERE / "stop-slurm.sh"), str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        stopped.append(d)
    return stopped


class SlurmCluster:
    """munge + slurmctld + slurmd in ``workdir``; ``conf`` is the SLURM_CONF to use."""

    def __init__(self, workdir: Path, *, with_dbd: bool = False):
        self.dir = Path(workdir)
        self.with_dbd = with_dbd
        self.conf = self.dir / "slurm.conf"
        self.jobs_dir = self.dir / "jobs"
        self.startup_seconds: float | None = None
        self._started = False

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm commands: ours plus SLURM_CONF."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 90) -> None:
        for exe in ("munged", "slurmctld", "slurmd", "sbatch"):
            if shutil.which(exe) is None:
                raise SlurmError(f"{exe} not found: apt-get install -y slurm-wlm slurm-client munge")
        env = {**os.environ, "WITH_DBD": "1" if self.with_dbd else "0",
               "SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port()),
               "SLURMDBD_PORT": str(free_port()), "MYSQL_PORT": str(free_port())}
        env.pop("SLURM_CONF", None)
        t0 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        self._started = True  # even a failed start may have left daemons to stop
        proc = subprocess.run(["bash", str(HERE / "start-slurm.sh"), str(self.dir)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            self.stop()
            raise SlurmError(f"start-slurm.sh failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        self.startup_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Cancel leftover jobs (so no job process outlives the cluster), then stop the daemons."""
        if self._started:
            if self.conf.exists():
                subprocess.run(["scancel", "--user", str(os.getuid())], env=self.env, capture_output=True,
                               timeout=30)
            subprocess.run(["bash", str(HERE / "stop-slurm.sh"), str(self.dir)], capture_output=True)
            self._started = False

    def stop_controller(self, timeout: float = 15) -> None:
        """Stop slurmctld (an outage: sbatch and squeue fail; running jobs go on under slurmd)."""
        pid_file = self.dir / "slurmctld.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError) as e:
            raise SlurmError(f"slurmctld is not running here ({pid_file}: {e})") from None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                pid_file.unlink(missing_ok=True)
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)

    def start_controller(self, timeout: float = 30) -> None:
        """Start slurmctld again (it recovers its jobs from its state folder); returns once it answers."""
        proc = subprocess.run(["slurmctld"], env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise SlurmError(f"slurmctld did not start (exit {proc.returncode}): {proc.stderr}\n{self.log_tail()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("squeue", "--noheader", check=False, timeout=timeout).returncode == 0:
                return
            time.sleep(0.2)
        raise SlurmError(f"slurmctld did not answer within {timeout} s\n{self.log_tail()}")

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm command (``sbatch``, ``squeue``, ...) against this cluster."""
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise SlurmError(f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}\n"
                             f"{self.log_tail()}")
        return proc

    def sbatch(self, *args: str, wrap: str | None = None) -> int:
        """Submit a job; returns its id. Output goes to ``jobs_dir/<id>.out`` unless ``-o`` is given."""
        cmd = ["sbatch", "--parsable"]
        if not any(a.startswith(("-o", "--output")) for a in args):
            cmd.append(f"--output={self.jobs_dir}/%j.out")
        cmd += list(args)
        if wrap is not None:
            cmd += ["--wrap", wrap]
        return int(self.run(*cmd).stdout.strip().split(";")[0])

    def job_state(self, job_id: int) -> str:
        """State from ``scontrol show job`` (kept for MinJobAge=300 s after the job ends)."""
        out = self.run("scontrol", "show", "job", str(job_id)).stdout
        for field in out.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        raise SlurmError(f"no JobState for job {job_id} in: {out[:500]}")

    def wait_job(self, job_id: int, timeout: float = 60) -> str:
        """Wait until the job reaches a final state; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in FINAL_STATES:
                return state
            time.sleep(0.2)
        raise SlurmError(f"job {job_id} still {state} after {timeout} s\n{self.log_tail()}")

    def job_output(self, job_id: int) -> str:
        return (self.jobs_dir / f"{job_id}.out").read_text(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)
