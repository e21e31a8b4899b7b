"""``damnit proposal [N]``: see or set the proposal number the database collects metadata from."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.cli.common import command, open_db


@command
def cmd_proposal(args: argparse.Namespace) -> int:
    db = open_db(Path.cwd())
    current = db.metameta.get("proposal")
    if args.proposal is None:
        print("Current proposal number:", current)
    elif args.proposal == current:
        print(f"No change - proposal {current} already set")
    else:
        db.metameta["proposal"] = args.proposal
        print(f"Changed proposal to {args.proposal} (was {current})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("proposal", help="Get or set the proposal number to collect metadata from")
    p.add_argument("proposal", nargs="?", type=int, help="Proposal number to set, e.g. 1234")
    p.set_defaults(func=cmd_proposal)
