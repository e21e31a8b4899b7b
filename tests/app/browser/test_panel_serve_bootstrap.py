"""``panel_serve.sh`` on a machine where nothing is installed: it builds ``.venv`` next to itself, installs
the project there (from the package index) and serves. This is the README's first command, so it is
tested end to end on a copy of the project with a Python that has no packages at all."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.server.launcher import REPO, DashboardServer
from backend.storage.synthetic import make_database

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
    # Nothing of this environment may leak into the bare one (DashboardServer adds os.environ).
    env = {"PYTHON": str(bare_python), "AMORE_BROKER": "none", "PYTHONPATH": "", "VIRTUAL_ENV": ""}

    def serve(log: Path, timeout: float) -> float:
        srv = DashboardServer([db], script=project / "panel_serve.sh", env=env, log_path=log, timeout=timeout)
        t0 = time.monotonic()
        try:
            srv.start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        try:
            with urllib.request.urlopen(srv.url, timeout=30) as r:
                assert b"DAMNIT" in r.read()
            return time.monotonic() - t0
        finally:
            srv.stop()

    first = serve(tmp_path / "first.log", timeout=1500)
    assert "setting up" in (tmp_path / "first.log").read_text()
    venv_python = project / ".venv" / "bin" / "python"
    assert venv_python.exists()
    check = subprocess.run([venv_python, "-c", "import panel, h5py, extra_data, aiokafka; import backend.storage.database"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # Second start: the environment is there, nothing is installed again.
    second = serve(tmp_path / "second.log", timeout=120)
    assert "setting up" not in (tmp_path / "second.log").read_text()
    print(f"bootstrap: first start {first:.0f} s, second {second:.1f} s")
