"""``damnit listener [status|databases|add|rm|config|waiting|dead-letters]``: the listener folder in the
current directory: what it feeds, its settings, the runs waiting for Slurm and the messages it could not use."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from backend.base.messages import UpdateProducer
from backend.services.listener import forget_waiting, official_db_dir
from backend.services.listener_db import (
    BOOL_SETTINGS,
    KNOWN_SETTINGS,
    NUMERIC_SETTINGS,
    DeadLetter,
    ListenerDB,
    WaitingEntry,
)

STATUS_LIST_MAX = 10  # waiting runs and dead letters shown by `damnit listener status`


def _parse_value(key: str, value: str, numeric: bool):
    if key in BOOL_SETTINGS:
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} must be 0/1 (or true/false), not {value!r}")
    if numeric or key in NUMERIC_SETTINGS:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{key} must be a number, not {value!r}") from None
        if key in NUMERIC_SETTINGS and not number > 0:
            raise ValueError(f"{key} must be greater than 0, not {value!r}")
        return int(number) if number.is_integer() else number
    return value


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _in(t: float) -> str:
    left = t - time.time()
    return "now" if left <= 0 else f"in {left:.0f} s"


def _waiting_line(e: WaitingEntry) -> str:
    tries = f"{e.attempts} attempt{'s' if e.attempts != 1 else ''} so far, next {_in(e.next_attempt)}"
    return (f"#{e.id} p{e.proposal} r{e.run} ({e.run_data} data) for {e.db_dir}: waiting since {_when(e.queued_at)} "
            f"({tries})\n    why: {e.reason}")


def _preview(value: bytes | None, limit: int = 100) -> str:
    if value is None:
        return "(null value)"
    text = value[:limit].decode("utf-8", errors="backslashreplace")
    text = text.encode("unicode_escape").decode("ascii")  # control characters shown, never acted upon
    return text + ("…" if len(value) > limit else "")


def _dead_letter_line(d: DeadLetter) -> str:
    size = "tombstone" if d.size is None else f"{d.size} bytes"
    return (f"#{d.id} {_when(d.received_at)} {d.topic}[{d.partition}]@{d.offset} ({size}): {d.error}\n"
            f"    {_preview(d.value)}")


def _status(db: ListenerDB) -> None:
    dbs = db.all_databases()
    print(f"Listener folder {db.path.parent}: {len(dbs)} database{'s' if len(dbs) != 1 else ''} registered "
          "(`damnit listener databases`)")
    mode = "in the listener (use_slurm 0)" if not db.setting("use_slurm", True) else (
        "Slurm jobs" + (", in the listener when Slurm fails" if db.setting("allow_local_processing") else ""))
    print(f"Runs are processed by {mode}")
    waiting = db.waiting()
    print(f"\n{len(waiting)} run{'s' if len(waiting) != 1 else ''} waiting to be submitted"
          + (" (`damnit listener waiting` lists all)" if len(waiting) > STATUS_LIST_MAX else ""))
    for e in waiting[:STATUS_LIST_MAX]:
        print(_waiting_line(e))
    watched = db.watched_jobs()
    print(f"\n{len(watched)} Slurm job{'s' if len(watched) != 1 else ''} submitted and not yet seen to end")
    n_dead = db.dead_letter_count()
    print(f"\n{n_dead} message{'s' if n_dead != 1 else ''} in the dead-letter record"
          + (" (`damnit listener dead-letters` lists them)" if n_dead > STATUS_LIST_MAX else ""))
    for d in db.dead_letters(limit=STATUS_LIST_MAX):
        print(_dead_letter_line(d))


def _waiting(db: ListenerDB, args: argparse.Namespace) -> int:
    if args.drop_all or args.drop:
        entries = {e.id: e for e in db.waiting()}
        ids = list(entries) if args.drop_all else args.drop
        unknown = [i for i in ids if i not in entries]
        if unknown:
            print(f"Error: no waiting run #{unknown[0]} (see `damnit listener waiting`)", file=sys.stderr)
            return 1
        broker = os.environ.get("AMORE_BROKER") or db.setting("broker")  # as the listener's
        with UpdateProducer.from_env(broker) as producer:  # clears dashboards' PENDING
            for i in ids:
                e = entries[i]
                forget_waiting(db, e, producer)
                print(f"Dropped #{i} p{e.proposal} r{e.run} for {e.db_dir} (reprocess it with `damnit reprocess` "
                      "there)")
        return 0
    if args.retry:
        n = db.retry_waiting_now()
        print(f"{n} waiting run{'s' if n != 1 else ''} will be tried now by the running listener")
        return 0
    waiting = db.waiting()
    if not waiting:
        print("No runs waiting to be submitted")
    for e in waiting:
        print(_waiting_line(e))
    return 0


def _dead_letters(db: ListenerDB, args: argparse.Namespace) -> int:
    if args.delete_all or args.delete:
        n = db.remove_dead_letters(None if args.delete_all else args.delete)
        print(f"Deleted {n} dead letter{'s' if n != 1 else ''}")
        return 0
    if args.show is not None:
        found = [d for d in db.dead_letters() if d.id == args.show]
        if not found:
            print(f"Error: no dead letter #{args.show}", file=sys.stderr)
            return 1
        d = found[0]
        print(f"#{d.id} received {_when(d.received_at)} from {d.topic} partition {d.partition} offset {d.offset}")
        print(f"broker timestamp: {_when(d.timestamp_ms / 1000) if d.timestamp_ms else '-'}")
        print(f"error: {d.error}")
        if d.value is None:
            print("value: null (a tombstone)")
        else:
            kept = f" (the first {len(d.value)} kept)" if d.size and d.size > len(d.value) else ""
            print(f"value: {d.size} bytes{kept}:")
            print(_preview(d.value, limit=len(d.value)))
        return 0
    letters = db.dead_letters(limit=args.limit)
    if not letters:
        print("No messages in the dead-letter record")
    for d in letters:
        print(_dead_letter_line(d))
    return 0


def cmd_listener(args: argparse.Namespace) -> int:
    with ListenerDB(Path.cwd()) as db:
        if args.listener_cmd in (None, "status"):
            _status(db)
        elif args.listener_cmd == "waiting":
            return _waiting(db, args)
        elif args.listener_cmd == "dead-letters":
            return _dead_letters(db, args)
        elif args.listener_cmd == "databases":
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
    sub = p.add_subparsers(dest="listener_cmd")
    sub.add_parser("status", help="What the listener feeds, what waits for Slurm, what it could not use "
                                  "(the default)")
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
    w = sub.add_parser("waiting", help="Runs waiting to be submitted to Slurm, and why")
    w.add_argument("--retry", action="store_true", help="Ask the running listener to try them all now")
    w.add_argument("--drop", type=int, nargs="+", metavar="ID", help="Forget these waiting runs")
    w.add_argument("--drop-all", action="store_true", help="Forget every waiting run")
    d = sub.add_parser("dead-letters", help="Messages the listener could not use (malformed, poison)")
    d.add_argument("-n", "--limit", type=int, default=None, help="Show only the newest N")
    d.add_argument("--show", type=int, metavar="ID", help="Show one in full")
    d.add_argument("--delete", type=int, nargs="+", metavar="ID", help="Delete these")
    d.add_argument("--delete-all", action="store_true", help="Delete all")
    p.set_defaults(func=cmd_listener)
