"""panel_serve.sh's check that the active Python has the project's dependencies (looked up, not
imported: importing Panel alone would add a second to every start) names all of them."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def stack_modules() -> list[str]:
    script = (REPO / "panel_serve.sh").read_text()
    return re.search(r'^STACK="([^"]*)"', script, re.M)[1].split()


def test_stack_check_names_every_dependency():
    block = (REPO / "pyproject.toml").read_text().split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    deps = re.findall(r'^\s*"([^"]+)"', block, re.M)  # (tomllib needs Python 3.11)
    assert len(deps) > 10
    wanted = {_canonical(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}
    dists = packages_distributions()
    found = {_canonical(dist) for module in stack_modules() for dist in dists.get(module, [])}
    assert wanted <= found, f"panel_serve.sh's STACK misses {sorted(wanted - found)}"


def test_stack_check_passes_here_and_fails_for_a_missing_module():
    check = ("source <(sed -n '/^STACK=/,/^}/p' panel_serve.sh); has_stack python3 && echo yes || echo no; "
             "STACK=\"$STACK no_such_module_damnit\"; has_stack python3 && echo yes || echo no")
    out = subprocess.run(["bash", "-c", check], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["yes", "no"], out.stderr
