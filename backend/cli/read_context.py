"""``damnit read-context``: re-read the context file and update the variables in the database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.cli.common import command, open_db
from backend.processing.run_processor import NothingProcessed, RunProcessor


@command
def cmd_read_context(args: argparse.Namespace) -> int:
    db_dir = Path.cwd()
    open_db(db_dir)
    processor = RunProcessor(db_dir)
    try:
        info = processor.read_context()
    except NothingProcessed as e:  # the context does not load, or a setting is bad
        print(e, file=sys.stderr)
        return 1
    changed = processor.update_variables(info)
    n = len(info.get("variables", {}))
    print(f"Read {n} variable(s) from {processor.context_path}; {len(changed)} updated in the database")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("read-context", help="Re-read the context file and update variables in the database")
    p.set_defaults(func=cmd_read_context)
