"""The docs stay true to the tree and stand alone.

- docs/design.md's "Package layout" table names every module under backend/ and app/, and nothing
  that does not exist. A row's first column holds one or more paths in backticks: the first is
  relative to the repository, the others may be bare file names in the first one's folder
  (`backend/storage/database.py`, `migrations.py`). A folder (`backend/cli/`) stands for its package
  (`__init__.py`, `__main__.py`), not for the modules in it, which need their own mention.
- Citations of docs/spec.md (the file's path, then a section title in double quotes) name a section that
  exists.
- Nothing in the repository points at files outside it or at the numbered external reference that
  docs/spec.md replaced.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from tests.infra import REPO

DESIGN = REPO / "docs" / "design.md"
SPEC = REPO / "docs" / "spec.md"
LAYOUT_ROOTS = ("backend", "app")
# Spelled in pieces so that this file does not contain what it looks for.
FORBIDDEN = ("../" + "shared/", "/" + "work/", "spec " + "\u00a7")


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/design.md has no '## {title}' section"
    return match.group(1)


def layout_paths(text: str) -> list[str]:
    """The paths the "Package layout" table names, as repository-relative strings."""
    paths = []
    for line in _section(text, "Package layout").splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        first_cell = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", first_cell)
        if not names:
            continue
        base = names[0]
        paths.append(base)
        folder = base if base.endswith("/") else base.rsplit("/", 1)[0] + "/"
        paths.extend(n if "/" in n.rstrip("/") else folder + n for n in names[1:])
    return paths


def _has_code(init: Path) -> bool:
    """Whether a package's __init__.py does more than hold a docstring."""
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
               and not (isinstance(node, ast.ImportFrom) and node.module == "__future__") for node in body)


def required_paths(repo: Path) -> set[str]:
    """Every module under backend/ and app/; packages only where __init__.py holds code."""
    required = set()
    for root in LAYOUT_ROOTS:
        for path in (repo / root).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(repo).as_posix()
            if path.name not in ("__init__.py", "__main__.py"):
                required.add(rel)
            elif path.name == "__init__.py" and _has_code(path):
                required.add(rel.removesuffix("__init__.py"))
    return required


def layout_problems(text: str, repo: Path) -> tuple[list[str], list[str]]:
    """(modules missing from the table, table paths that do not exist)."""
    named = layout_paths(text)
    stale = sorted(p for p in named if not (repo / p).exists() or (p.endswith("/") and not (repo / p).is_dir()))
    covered = set()
    for p in named:
        covered.add(p)
        if p.endswith("/__init__.py"):
            covered.add(p.removesuffix("__init__.py"))
    missing = sorted(required_paths(repo) - covered)
    return missing, stale


def test_package_layout_table_matches_the_tree():
    missing, stale = layout_problems(DESIGN.read_text(), REPO)
    message = ['docs/design.md "Package layout" is out of date.']
    if missing:
        message.append("Add rows (or names to a row) for: " + ", ".join(f"`{p}`" for p in missing))
    if stale:
        message.append("Remove or rename (they do not exist): " + ", ".join(f"`{p}`" for p in stale))
    assert not missing and not stale, "\n".join(message)


def test_layout_check_sees_missing_and_stale_rows(tmp_path):
    """The check itself: a module left out, a row for a deleted file, a package with code."""
    for rel, text in {"backend/a/__init__.py": '"""Doc."""\n', "backend/a/x.py": "", "backend/a/y.py": "",
                      "backend/b/__init__.py": "def main(): pass\n", "backend/b/z.py": "", "app/m.py": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    table = ("## Package layout\n\n| path | job |\n|---|---|\n| `backend/a/x.py`, `gone.py` | x |\n"
             "| `backend/b/z.py` | z |\n| `app/m.py` | m |\n| `app/old.py` | old |\n\n## Next\n")
    missing, stale = layout_problems(table, tmp_path)
    assert missing == ["backend/a/y.py", "backend/b/"]
    assert stale == ["app/old.py", "backend/a/gone.py"]
    table = table.replace("`backend/b/z.py` |", "`backend/b/`, `z.py` |")
    assert layout_problems(table, tmp_path)[0] == ["backend/a/y.py"]


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        return [REPO / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but generated files
        skip = {".git", ".venv", ".test-venvs", "__pycache__", "node_modules"}
        return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


def test_no_file_points_outside_the_repository():
    hits = []
    for path in _tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary (screenshots), or deleted but not yet committed
        for n, line in enumerate(text.splitlines(), 1):
            hits += [f"{path.relative_to(REPO)}:{n}: {word!r}" for word in FORBIDDEN if word in line]
    assert not hits, "Cite docs/spec.md sections, and no machine paths:\n" + "\n".join(hits)


def spec_titles() -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", SPEC.read_text(), re.M)}


def test_spec_citations_name_existing_sections():
    titles = spec_titles()
    cited = re.compile(r'docs/spec\.md,? +"([^"]+)"')
    wrong = []
    for path in _tracked_files():
        if path.suffix not in (".py", ".md", ".toml", ".js", ".sh", ".cfg"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        wrong += [f"{path.relative_to(REPO)}: {m.group(1)!r}" for m in cited.finditer(text)
                  if " ".join(m.group(1).split()) not in titles]  # a citation may wrap a line
    assert not wrong, "No such section in docs/spec.md:\n" + "\n".join(wrong)


def test_spec_section_titles_are_unique():
    text = SPEC.read_text()
    titles = [m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", text, re.M)]
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)
