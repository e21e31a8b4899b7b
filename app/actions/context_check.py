"""Validate and save a context file edited in the browser.

Validation runs in three steps, stopping at the first error: Python's own compile (syntax errors with a
line number), the engine's checks (``ctxrunner ctx`` in the database's ``context_python``, so imports and
``@Variable`` rules are checked exactly as processing will), then pyflakes for likely mistakes, which
only warn. Saving refuses errors, detects that the file changed on disk since it was loaded, and keeps
the version it replaces in ``.context_history/`` so a bad edit can be undone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import count
from pathlib import Path

from pyflakes.api import check as pyflakes_check
from pyflakes.reporter import Reporter

from backend.base.paths import DB_NAME
from backend.processing.workers import CTXSUPPORT_DIR, worker_env
from backend.storage import catalog
from backend.storage.arrow_reader import ArrowReader

OK, WARNING, ERROR = "ok", "warning", "error"
REPO = CTXSUPPORT_DIR.parents[1]  # where `backend` is importable from
ENGINE_TIMEOUT = 120
HISTORY_DIR = ".context_history"  # next to context.py: earlier versions replaced from the browser
# Context files may use these names in string annotations ("var#x", "meta#...", "mymdc#..."): pyflakes
# would call them undefined.
_ANNOTATION_NAMES = re.compile(r"undefined name '(var|self|meta|mymdc)'$")


@dataclass
class CheckResult:
    status: str                 # OK | WARNING | ERROR
    message: str = ""           # traceback or warnings, plain text
    lineno: int | None = None   # 1-based line of the error, when known
    offset: int | None = None

    @property
    def summary(self) -> str:
        where = f" at line {self.lineno}" if self.lineno else ""
        if self.status == ERROR:
            first = self.message.strip().splitlines()[-1] if self.message.strip() else "error"
            return f"Error{where}: {first}"
        if self.status == WARNING:
            return f"Warnings (saving is allowed): {len(self.message.splitlines())}"
        return "No problems found"


def file_fingerprint(path: Path) -> str | None:
    """SHA-256 of the file's bytes, or None if it does not exist (used to notice edits on disk)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def check_syntax(code: str, filename: str = "context.py") -> CheckResult | None:
    try:
        compile(code, filename, "exec")
    except SyntaxError as e:
        text = f'  File "{filename}", line {e.lineno}\n    {(e.text or "").rstrip()}\n{type(e).__name__}: {e.msg}'
        return CheckResult(ERROR, text, e.lineno, e.offset)
    return None


def context_python_for(db_dir: Path) -> str:
    """The interpreter the engine uses for this database (metameta ``context_python``), else ours."""
    try:
        with ArrowReader(Path(db_dir) / DB_NAME) as reader:
            python = catalog.settings(reader).get("context_python")
    except (OSError, sqlite3.Error):
        python = None
    return str(python) if python else sys.executable


def check_with_engine(code: str, db_dir: Path, context_python: str | None = None) -> CheckResult | None:
    """Load the code with the engine (``python -m ctxrunner ctx``) in the context's own interpreter."""
    db_dir = Path(db_dir)
    python = context_python or context_python_for(db_dir)
    env = worker_env()
    with tempfile.TemporaryDirectory(prefix=".tmp_ctx", dir=db_dir) as tmp:
        ctx_path = Path(tmp) / "context.py"
        out_path = Path(tmp) / "out.json"
        ctx_path.write_text(code)
        try:
            proc = subprocess.run([python, "-m", "ctxrunner", "ctx", str(ctx_path), str(out_path)],
                                  cwd=db_dir, env=env, capture_output=True, text=True,
                                  timeout=ENGINE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            return CheckResult(ERROR, f"Could not run the context checker with {python}: {e}")
        if not out_path.exists():
            return CheckResult(ERROR, f"The context checker ({python} -m ctxrunner ctx) failed "
                                      f"(exit code {proc.returncode}):\n{proc.stderr[-4000:]}")
        info = json.loads(out_path.read_text())
    error = info.get("error")
    if error:
        message = (error.get("traceback") or error.get("message") or "").replace(str(ctx_path), "context.py")
        return CheckResult(ERROR, message, error.get("lineno") or None, error.get("offset") or None)
    return None


def pyflakes_warnings(code: str) -> list[str]:
    out = io.StringIO()
    pyflakes_check(code, "context.py", Reporter(out, out))
    return [line for line in out.getvalue().splitlines()
            if line.strip() and not _ANNOTATION_NAMES.search(line)]


def check_context(code: str, db_dir: Path, context_python: str | None = None) -> CheckResult:
    """Full validation of unsaved context code: syntax, engine checks, then pyflakes warnings."""
    for step in (lambda: check_syntax(code), lambda: check_with_engine(code, db_dir, context_python)):
        result = step()
        if result is not None:
            return result
    warnings = pyflakes_warnings(code)
    if warnings:
        return CheckResult(WARNING, "\n".join(warnings))
    return CheckResult(OK)


class ContextChangedOnDisk(Exception):
    """The file was modified by someone else after it was loaded into the editor."""


def keep_previous_version(path: Path, user: str) -> Path | None:
    """Copy the file about to be replaced to ``.context_history/context-<UTC time>-<user>.py`` (folder
    0o700, file 0o600: for whoever runs the dashboard to recover from a bad edit). None if no file."""
    path = Path(path)
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        return None
    folder = path.parent / HISTORY_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    who = re.sub(r"[^\w.@-]", "_", user)[:64] or "local"
    for n in count(1):
        dest = folder / f"context-{stamp}{f'-{n}' if n > 1 else ''}-{who}.py"
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(old)
        return dest


def save_context(path: Path, code: str, loaded_fingerprint: str | None, *, force: bool = False,
                 user: str | None = None) -> str:
    """Write the code atomically; refuse if the file changed since it was loaded (unless force). With
    ``user`` (who saves), the replaced version is kept first (``keep_previous_version``).

    Returns the new fingerprint. Keeps the file's permission bits (context files are often 0666).
    """
    path = Path(path)
    current = file_fingerprint(path)
    if not force and current != loaded_fingerprint:
        raise ContextChangedOnDisk(f"{path} was changed on disk after it was loaded")
    if user is not None:
        keep_previous_version(path, user)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666
    fd, tmp = tempfile.mkstemp(prefix=".tmp_ctx_save", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(code)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(code.encode()).hexdigest()


def update_variable_list(db_dir: Path) -> tuple[bool, str]:
    """Run ``damnit read-context`` in the database directory so the variable list matches the file."""
    proc = subprocess.run([sys.executable, "-m", "backend.cli", "read-context"], cwd=db_dir,
                          capture_output=True, text=True, timeout=ENGINE_TIMEOUT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
