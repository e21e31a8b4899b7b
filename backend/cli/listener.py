"""``damnit listener databases|add|rm|config``: manage the listener folder in the current directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.services.listener import official_db_dir
from backend.services.listener_db import BOOL_SETTINGS, KNOWN_SETTINGS, ListenerDB


def _parse_value(key: str, value: str, numeric: bool):
    if key in BOOL_SETTINGS:
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} must be 0/1 (or true/false), not {value!r}")
    if numeric:
        try:
            return int(value)
        except ValueError:
            return float(value)
    return value


def cmd_listener(args: argparse.Namespace) -> int:
    with ListenerDB(Path.cwd()) as db:
        if args.listener_cmd == "databases":
            rows = db.all_databases()
            if not rows:
                print("No databases registered (add one with `damnit listener add PROPOSAL [DIR]`)")
            for info in rows:
                print(f"p{info.proposal}: {info.db_dir}{'' if info.official else ' (unofficial)'}")
        elif args.listener_cmd == "add":
            official = official_db_dir(args.proposal)
            if args.db_dir is None:
                if official is None:
                    print(f"Error: proposal {args.proposal} not found under XFEL_DATA_ROOT; give its "
                          "database directory", file=sys.stderr)
                    return 1
                db_dir = official
            else:
                db_dir = Path(args.db_dir).absolute()
            if not (db_dir / "runs.sqlite").is_file():
                print(f"Warning: {db_dir} has no runs.sqlite yet (create it with `damnit init`)", file=sys.stderr)
            is_official = official is not None and db_dir.resolve() == official.resolve()
            if db.add_proposal_db(args.proposal, db_dir, is_official):
                print(f"Added p{args.proposal}: {db_dir}{'' if is_official else ' (unofficial)'}")
            else:
                print(f"{db_dir} is already registered")
        elif args.listener_cmd == "rm":
            if not db.remove_proposal_db(args.db_dir):
                print(f"Error: {Path(args.db_dir).absolute()} is not registered", file=sys.stderr)
                return 1
        elif args.listener_cmd == "config":
            key = args.key.replace("-", "_") if args.key else None
            if args.delete:
                if key is None:
                    print("Error: which setting to delete?", file=sys.stderr)
                    return 1
                try:
                    del db.settings[key]
                except KeyError:
                    print(f"Error: no setting {key!r}", file=sys.stderr)
                    return 1
            elif key is None:
                for k, v in db.settings.items():
                    print(f"{k}={v!r}")
            elif args.value is None:
                if key not in db.settings:
                    print(f"Error: no setting {key!r}", file=sys.stderr)
                    return 1
                print(repr(db.settings[key]))
            else:
                if key not in KNOWN_SETTINGS and key != "listening_since":
                    print(f"Warning: {key!r} is not a setting the listener uses (known: "
                          f"{', '.join(sorted(KNOWN_SETTINGS))})", file=sys.stderr)
                try:
                    db.settings[key] = _parse_value(key, args.value, args.num)
                except ValueError as e:
                    print(f"Error: {e}", file=sys.stderr)
                    return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("listener", help="Manage the listener in the current directory")
    sub = p.add_subparsers(dest="listener_cmd", required=True)
    sub.add_parser("databases", help="List the databases the listener feeds")
    a = sub.add_parser("add", help="Register a proposal database")
    a.add_argument("proposal", type=int)
    a.add_argument("db_dir", nargs="?", default=None)
    r = sub.add_parser("rm", help="Unregister a database directory")
    r.add_argument("db_dir")
    c = sub.add_parser("config", help="See or change listener settings")
    c.add_argument("-d", "--delete", action="store_true", help="Delete the setting")
    c.add_argument("--num", action="store_true", help="Store the value as a number")
    c.add_argument("key", nargs="?")
    c.add_argument("value", nargs="?")
    p.set_defaults(func=cmd_listener)
