"""The original DAMNIT from PyPI in its own virtual environment, used as a test oracle.

The venv is built once (about a minute) and reused across test sessions: it lives in
``$DAMNIT_TEST_VENVS`` or ``<repo>/.test-venvs`` (gitignored), in a folder named after the pip
requirement so that changing ``DAMNIT_ORACLE_SPEC`` builds a fresh one. Builds are serialised with a
file lock, and a venv counts as built only once a marker file is written after damnit imports, so an
interrupted build is redone rather than trusted.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = "damnit[backend]==0.4.0"


class OracleError(RuntimeError):
    """The oracle venv could not be built, or a command in it failed."""


def venvs_dir() -> Path:
    return Path(os.environ.get("DAMNIT_TEST_VENVS") or REPO / ".test-venvs")


def _clean_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Our environment minus anything that would let this project's code leak into the oracle."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    base.setdefault("AMORE_BROKER", "none")
    base.update(env or {})
    return base


@dataclass
class Oracle:
    """Runs code and the ``damnit`` CLI of the original DAMNIT."""

    venv: Path
    spec: str

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def damnit_exe(self) -> Path:
        return self.venv / "bin" / "damnit"

    def _run(self, cmd: list[str], *, cwd, env, timeout: float, check: bool, stdin: str | None = None):
        proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(env), capture_output=True, text=True,
                              timeout=timeout, input=stdin)
        if check and proc.returncode != 0:
            raise OracleError(
                f"oracle command failed with exit code {proc.returncode}: {' '.join(map(str, cmd))}\n"
                f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
        return proc

    def run_python(self, code: str, *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
                   timeout: float = 300) -> str:
        """Run ``code`` in the oracle's Python; returns stdout, raises OracleError on failure."""
        return self._run([str(self.python), "-c", code], cwd=cwd, env=env, timeout=timeout,
                         check=True).stdout

    def run_json(self, code: str, **kw):
        """Run ``code``, which must print one JSON document as its last line of output; returns it."""
        out = self.run_python(code, **kw).strip().splitlines()
        if not out:
            raise OracleError(f"oracle code printed nothing; expected JSON on the last line:\n{code}")
        try:
            return json.loads(out[-1])
        except json.JSONDecodeError as e:
            raise OracleError(f"last line of oracle output is not JSON ({e}): {out[-1][:500]!r}") from None

    def damnit(self, *args: str | Path, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
               timeout: float = 600, check: bool = True, stdin: str | None = None
               ) -> subprocess.CompletedProcess:
        """Run the original ``damnit`` command; raises OracleError on a non-zero exit if ``check``."""
        return self._run([str(self.damnit_exe), *map(str, args)], cwd=cwd, env=env, timeout=timeout,
                         check=check, stdin=stdin)

    def make_reference_db(self, db_dir: Path | str, proposal: int, runs, context: Path | str | None = None,
                          *, env: Mapping[str, str] | None = None, timeout: float = 600) -> Path:
        """Build a database with the original backend: ``init``, ``reprocess --direct``, ``combiner now``.

        ``context`` is a context file to copy in (default: the original's template); run data is found
        through ``EXTRA_DATA_DATA_ROOT`` in ``env`` or our environment. About 2-5 s per run.
        """
        db_dir = Path(db_dir)
        init = ["init", db_dir, "--proposal", str(proposal)]
        if context is not None:
            init += ["--context", Path(context).resolve()]
        self.damnit(*init, env=env, timeout=timeout)
        self.damnit("db-config", "context_python", self.python, cwd=db_dir, env=env)
        self.damnit("reprocess", "--direct", *map(str, runs), cwd=db_dir, env=env, timeout=timeout)
        self.damnit("combiner", "now", db_dir, cwd=db_dir, env=env, timeout=timeout)
        return db_dir


def _pip_install(python: Path, spec: str, log: Path) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", spec]
    with open(log, "ab") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_clean_env({"PIP_NO_INPUT": "1"}),
                              timeout=1800)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise OracleError(f"pip install {spec!r} into the oracle venv failed (log {log}):\n{tail}")


def ensure_oracle(spec: str | None = None, *, base_python: str | None = None) -> Oracle:
    """Return the oracle venv for ``spec``, building it if needed (thread/process safe)."""
    spec = spec or os.environ.get("DAMNIT_ORACLE_SPEC") or DEFAULT_SPEC
    base_python = base_python or sys.executable
    root = venvs_dir()
    root.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(f"{spec}|{sys.version_info[:2]}".encode()).hexdigest()[:10]
    venv = root / f"damnit-oracle-{tag}"
    marker = venv / ".damnit-oracle-ok"
    with open(root / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A venv whose base interpreter has gone (its python symlink dangles) is rebuilt too.
        if not marker.is_file() or not (venv / "bin" / "python").resolve().is_file():
            shutil.rmtree(venv, ignore_errors=True)
            log = root / f"{venv.name}.log"
            log.write_text(f"building oracle venv for {spec} at {time.ctime()}\n")
            # Built at its final path (venv scripts embed it); only the marker says it is complete.
            proc = subprocess.run([base_python, "-m", "venv", str(venv)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise OracleError(f"creating the oracle venv {venv} failed:\n{proc.stderr}")
            _pip_install(venv / "bin" / "python", spec, log)
            check = subprocess.run([str(venv / "bin" / "python"), "-c",
                                    "import damnit, damnit.backend, extra_data; print(damnit.__version__)"],
                                   capture_output=True, text=True, env=_clean_env(None))
            if check.returncode != 0:
                raise OracleError(f"the oracle venv {venv} cannot import damnit:\n{check.stderr}")
            marker.write_text(json.dumps({"spec": spec, "version": check.stdout.strip(),
                                          "built": time.time()}))
    return Oracle(venv=venv, spec=spec)
