"""``damnit db-config [-d] [--num] [KEY [VALUE]]``: the database's settings (its ``metameta`` table).

Settings that have a default (the processing time and size limits) are listed with the default in
effect when they are unset, and their values are checked when they are set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.cli.common import CLIError, command, open_db
from backend.storage.settings import SETTINGS_WITH_DEFAULTS, SettingError, find_setting

DEFAULT_MARK = "  (default)"


@command
def cmd_db_config(args: argparse.Namespace) -> int:
    db = open_db(Path.cwd())
    settings = db.metameta
    key = args.key.replace("-", "_") if args.key else None
    known = find_setting(key) if key else None
    if args.delete:
        if not key:
            raise CLIError("no key specified to delete")
        if key not in settings:
            raise CLIError(f"key {key} not found")
        del settings[key]
    elif key and args.value is not None:
        value = args.value
        if known is not None:
            try:
                value = known.parse(value)
            except SettingError:
                raise CLIError(f"{key} must be a positive number of {known.unit}, not {value!r} "
                               f"(its default is {known.default})") from None
            value = _plain_number(value)
        elif args.num:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise CLIError(f"--num given but {args.value!r} is not a number") from None
        settings[key] = value
    elif key:
        if key in settings:
            print(repr(settings[key]))
        elif known is not None:
            print(repr(known.default) + DEFAULT_MARK)
        else:
            raise CLIError(f"key {key} not found")
    else:
        stored = settings.to_dict()
        for k, v in stored.items():
            print(f"{k}={v!r}")
        for setting in SETTINGS_WITH_DEFAULTS:
            if setting.key not in stored:
                print(f"{setting.key}={setting.default!r}{DEFAULT_MARK}")
    return 0


def _plain_number(value: float | int) -> float | int:
    """600.0 is stored as 600, as `--num 600` would."""
    return int(value) if float(value).is_integer() else value


def register(subparsers) -> None:
    p = subparsers.add_parser("db-config", help="See or change config in this database")
    p.add_argument("-d", "--delete", action="store_true", help="Delete the specified key")
    p.add_argument("--num", action="store_true", help="Set the given value as a number instead of a string")
    p.add_argument("key", nargs="?", help="The config key to see/change. If not given, list all config "
                   "(settings left at their default are marked so)")
    p.add_argument("value", nargs="?", help="A new value for the given key")
    p.set_defaults(func=cmd_db_config)
