"""A new user's path through README.md, followed literally on a bare machine: a copy of the repository in
``~/DAMNIT-web`` of an empty home, an environment with nothing but ``PATH=/usr/bin:/bin`` and the machine's
``python3`` (nothing of this test's Python can help), then the README's commands as written: the first run
of ``panel_serve.sh`` sets up ``.venv/``, the PATH line makes ``damnit`` and ``panel_serve.sh`` commands,
the off-site block makes mock runs, a database and its values, and ``panel_serve.sh .`` from the DAMNIT
folder serves them to a browser."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from app.server.launcher import free_port
from tests.infra import REPO

pytestmark = pytest.mark.bootstrap

IGNORE = shutil.ignore_patterns(".git", ".venv", ".test-venvs", "__pycache__", "*.egg-info", ".ruff_cache",
                                ".pytest_cache")
SYSTEM_PYTHON = "/usr/bin/python3"


def readme_block(after: str) -> str:
    """The first ```bash block of README.md after the line containing ``after``."""
    text = (REPO / "README.md").read_text()
    start = text.index(after)
    m = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert m, f"no bash block after {after!r} in README.md"
    return m.group(1)


def commands(block: str) -> list[str]:
    """The block's commands, without their comments."""
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def bare_env(home: Path) -> dict[str, str]:
    """What a fresh login has: a home and the system PATH. The machine's pip configuration (its index
    or mirror, set in PIP_* variables here) is part of the machine, so it is kept."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    return env


def bash(script: str, env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", "-euo", "pipefail", "-c", script], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_readme_from_a_fresh_clone_on_a_bare_machine(tmp_path, page):
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} missing: scripts/install-system-deps.sh installs python3 and python3-venv")
    home = tmp_path / "home"
    clone = home / "DAMNIT-web"
    shutil.copytree(REPO, clone, ignore=IGNORE)
    env = bare_env(home)

    # "Try it": the first run of panel_serve.sh sets up .venv/ (--help instead of --demo: it stops).
    assert "./panel_serve.sh --demo" in commands(readme_block("## Try it"))
    first = bash("./panel_serve.sh --help", env, clone, timeout=1500)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "usage: panel_serve.sh" in first.stdout
    assert f"{clone}/.venv/bin/damnit" in first.stderr, first.stderr  # it says where the command is
    assert (clone / ".venv" / "install.log").is_file()

    # "The commands": the PATH line makes both commands available, from any folder.
    path_line = commands(readme_block("## The commands"))
    assert len(path_line) == 1 and path_line[0].startswith("export PATH="), path_line
    found = bash(f"{path_line[0]}\ncd /\ncommand -v damnit\ncommand -v panel_serve.sh", env, home, timeout=30)
    assert found.stdout.split() == [f"{clone}/.venv/bin/damnit", f"{clone}/panel_serve.sh"], found.stderr

    # "Elsewhere": mock runs, a database and its values, exactly as written.
    offsite = commands(readme_block("Elsewhere (your own copy"))
    assert offsite[-1] == "panel_serve.sh ."
    setup = bash("\n".join([path_line[0], *offsite[:-1], "pwd"]), env, home, timeout=600)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    db_dir = Path(setup.stdout.split()[-1])
    assert (db_dir / "runs.sqlite").is_file() and db_dir.name == "amore", db_dir
    assert "10 succeeded, 0 failed" in setup.stdout + setup.stderr, setup.stdout[-2000:] + setup.stderr[-2000:]

    # ... and `panel_serve.sh .` from that folder serves it (the environment of the block carries on).
    exports = [c for c in offsite if c.startswith("export ")]
    port = free_port()
    log = open(tmp_path / "dashboard.log", "w")
    proc = subprocess.Popen(["/bin/bash", "-c", "\n".join([path_line[0], *exports,
                                                           f"exec panel_serve.sh . --port {port}"])],
                            env=env, cwd=db_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/main"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        assert f"serving {db_dir}" in (tmp_path / "dashboard.log").read_text()
        page.goto(url)
        runs = page.locator(".tabulator-row .tabulator-cell[tabulator-field='run']")
        runs.first.wait_for(timeout=60_000)
        assert sorted(int(t.split()[0]) for t in runs.all_inner_texts()) == list(range(1, 11))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        log.close()
