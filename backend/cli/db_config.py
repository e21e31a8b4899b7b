"""``damnit db-config [-d] [--num] [KEY [VALUE]]``: the database's settings (its ``metameta`` table)."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.cli.common import CLIError, command, open_db


@command
def cmd_db_config(args: argparse.Namespace) -> int:
    db = open_db(Path.cwd())
    settings = db.metameta
    key = args.key.replace("-", "_") if args.key else None
    if args.delete:
        if not key:
            raise CLIError("no key specified to delete")
        if key not in settings:
            raise CLIError(f"key {key} not found")
        del settings[key]
    elif key and args.value is not None:
        value = args.value
        if args.num:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise CLIError(f"--num given but {args.value!r} is not a number") from None
        settings[key] = value
    elif key:
        if key not in settings:
            raise CLIError(f"key {key} not found")
        print(repr(settings[key]))
    else:
        for k, v in settings.items():
            print(f"{k}={v!r}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("db-config", help="See or change config in this database")
    p.add_argument("-d", "--delete", action="store_true", help="Delete the specified key")
    p.add_argument("--num", action="store_true", help="Set the given value as a number instead of a string")
    p.add_argument("key", nargs="?", help="The config key to see/change. If not given, list all config")
    p.add_argument("value", nargs="?", help="A new value for the given key")
    p.set_defaults(func=cmd_db_config)
