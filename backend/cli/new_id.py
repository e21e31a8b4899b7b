"""``damnit new-id [DIR]``: give a (copied) database a new random id, and so its own update topic."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from backend.cli.common import command, open_db


@command
def cmd_new_id(args: argparse.Namespace) -> int:
    db = open_db(args.db_dir or Path.cwd())
    new_id = secrets.token_hex(20)
    db.metameta["db_id"] = new_id
    print(f"New database ID: {new_id}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("new-id", help="Set a new (random) database ID, e.g. for a copied database")
    p.add_argument("db_dir", type=Path, nargs="?", default=None,
                   help="Path to the database directory (default: the current directory)")
    p.set_defaults(func=cmd_new_id)
