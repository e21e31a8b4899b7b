"""``panel_serve.sh`` on a machine where nothing is installed: it builds ``.venv`` next to itself, installs
the project there (from the package index) and serves. This is the README's first command, so it is
tested end to end on a copy of the project with a Python that has no packages at all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.launcher import REPO, free_port
from app.synthetic import make_database

pytestmark = pytest.mark.bootstrap

IGNORE = shutil.ignore_patterns(".git", ".venv", ".test-venvs", "__pycache__", "*.egg-info", ".ruff_cache",
                                ".pytest_cache")


def test_bootstrap_installs_into_dot_venv_then_reuses_it(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=IGNORE)
    bare = tmp_path / "bare"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(bare)], check=True)
    bare_python = bare / "bin" / "python"
    assert subprocess.run([bare_python, "-c", "import panel"], capture_output=True).returncode != 0
    db = make_database(tmp_path / "db", proposal=1234, n_runs=3, n_vars=4)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=str(bare_python), AMORE_BROKER="none")

    def serve(log: Path, timeout: float) -> float:
        port = free_port()
        t0 = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen([str(project / "panel_serve.sh"), "--port", str(port), str(db)], cwd=tmp_path,
                                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = t0 + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    pytest.fail(f"panel_serve.sh exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/main", timeout=10) as r:
                        if r.status == 200 and b"DAMNIT" in r.read():
                            return time.monotonic() - t0
                except OSError:
                    pass
                time.sleep(1)
            pytest.fail(f"no dashboard within {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(30)

    first = serve(tmp_path / "first.log", timeout=1500)
    assert "setting up" in (tmp_path / "first.log").read_text()
    venv_python = project / ".venv" / "bin" / "python"
    assert venv_python.exists()
    check = subprocess.run([venv_python, "-c", "import panel, h5py, extra_data, aiokafka; import backend.db"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # Second start: the environment is there, nothing is installed again.
    second = serve(tmp_path / "second.log", timeout=120)
    assert "setting up" not in (tmp_path / "second.log").read_text()
    print(f"bootstrap: first start {first:.0f} s, second {second:.1f} s")
