"""``damnit db-config [-d] [--num] [KEY [VALUE]]``: the database's settings (its ``metameta`` table).

Settings that have a default (the processing time and size limits) are listed with the default in
effect when they are unset, and their values are checked when they are set.

The logbook settings (``zulip.url``, ``zulip.key``, ``zulip.topics``, ``zulip.email``, ``zulip.stream``)
live in the folder's ``zulip.cfg``, where the original DAMNIT reads them
(``backend/storage/logbook_settings.py``); they are listed, shown and changed here too. The key is a
secret: it is never printed, and ``-`` as its value reads it from standard input (keeping it out of the
shell's history and the process list).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.cli.common import CLIError, command, open_db
from backend.storage.logbook_settings import FIELDS as LOGBOOK_FIELDS
from backend.storage.logbook_settings import (
    LogbookSettingsError,
    read_logbook_settings,
    settings_path,
    update_logbook_settings,
)
from backend.storage.settings import SETTINGS_WITH_DEFAULTS, SettingError, find_setting

DEFAULT_MARK = "  (default)"
LOGBOOK_PREFIX = "zulip."
HIDDEN = "(set, not shown)"


@command
def cmd_db_config(args: argparse.Namespace) -> int:
    db = open_db(Path.cwd())
    settings = db.metameta
    key = args.key.replace("-", "_") if args.key else None
    if key and key.startswith(LOGBOOK_PREFIX):
        return _logbook_config(Path.cwd(), key[len(LOGBOOK_PREFIX):], args)
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
        try:
            logbook = read_logbook_settings(Path.cwd())
        except LogbookSettingsError as e:
            print(f"Warning: {e}", file=sys.stderr)
        else:
            for name in LOGBOOK_FIELDS:
                if getattr(logbook, name):
                    print(f"{LOGBOOK_PREFIX}{name}={_shown(logbook, name)}")
    return 0


def _shown(logbook, name: str) -> str:
    if name == "key":
        return HIDDEN
    value = getattr(logbook, name)
    return repr(list(value) if name == "topics" else value)


def _logbook_config(db_dir: Path, name: str, args: argparse.Namespace) -> int:
    """``zulip.<name>``: a logbook setting in ``zulip.cfg``."""
    full = LOGBOOK_PREFIX + name
    if name not in LOGBOOK_FIELDS:
        raise CLIError(f"unknown logbook setting {full} (known: "
                       f"{', '.join(LOGBOOK_PREFIX + f for f in LOGBOOK_FIELDS)})")
    if args.num:
        raise CLIError(f"--num does not apply to {full}")
    try:
        if args.delete:
            try:
                present = bool(getattr(read_logbook_settings(db_dir), name))
            except LogbookSettingsError:
                present = True  # a broken file: removing the key may be the fix
            if not present:
                raise CLIError(f"key {full} not found")
            update_logbook_settings(db_dir, **{name: None})
        elif args.value is not None:
            value = args.value
            if name == "key" and value == "-":
                value = sys.stdin.readline().strip()
                if not value:
                    raise CLIError("no key on standard input")
            update_logbook_settings(db_dir, **{name: value})
        else:
            current = read_logbook_settings(db_dir)
            if not getattr(current, name):
                raise CLIError(f"key {full} not found")
            print(_shown(current, name) + (f"; it is in {settings_path(db_dir)}" if name == "key" else ""))
    except LogbookSettingsError as e:
        raise CLIError(str(e)) from None
    return 0


def _plain_number(value: float | int) -> float | int:
    """600.0 is stored as 600, as `--num 600` would."""
    return int(value) if float(value).is_integer() else value


def register(subparsers) -> None:
    p = subparsers.add_parser("db-config", help="See or change config in this database")
    p.add_argument("-d", "--delete", action="store_true", help="Delete the specified key")
    p.add_argument("--num", action="store_true", help="Set the given value as a number instead of a string")
    p.add_argument("key", nargs="?", help="The config key to see/change. If not given, list all config "
                   "(settings left at their default are marked so). zulip.url, zulip.key, zulip.topics, "
                   "zulip.email and zulip.stream are the logbook settings, in zulip.cfg")
    p.add_argument("value", nargs="?", help="A new value for the given key (for zulip.key, - reads it from "
                   "standard input)")
    p.set_defaults(func=cmd_db_config)
