"""Helpers for the context-engine tests: import ``damnit_ctx``/``ctxrunner`` in-process and build
contexts from source text."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from backend.processing.workers import CTXSUPPORT_DIR

if str(CTXSUPPORT_DIR) not in sys.path:
    sys.path.insert(0, str(CTXSUPPORT_DIR))

import ctxrunner  # noqa: E402
import damnit_ctx  # noqa: E402

HEADER = "from damnit_ctx import Variable, Cell, Group, GroupError, Skip, RunData\nimport numpy as np\n"


def build(code: str, tmp_path: Path | None = None, *, header: bool = True) -> ctxrunner.ContextFile:
    """A ContextFile from ``code`` (dedented), written to ``tmp_path/context.py`` if given."""
    text = (HEADER if header else "") + textwrap.dedent(code)
    if tmp_path is not None:
        path = tmp_path / "context.py"
        path.write_text(text)
        return ctxrunner.ContextFile.from_py_file(path)
    return ctxrunner.ContextFile.from_str(text, "<test>")


def write_context(db_dir: Path, code: str, *, header: bool = True) -> Path:
    db_dir.mkdir(parents=True, exist_ok=True)
    path = db_dir / "context.py"
    path.write_text((HEADER if header else "") + textwrap.dedent(code))
    return path


def run_mock(ctx, run_number: int = 1, proposal: int = 1234, **kw):
    return ctx.execute(ctxrunner.mock_run(), run_number, proposal, {}, **kw)


__all__ = ["build", "ctxrunner", "damnit_ctx", "run_mock", "write_context"]
