"""``damnit init PROPOSAL_OR_DIR [--proposal N] [--like P] [--context FILE]``: set up a DAMNIT folder."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from backend.base.paths import amore_dir
from backend.cli.common import CLIError, command, damnit_dir_for
from backend.storage.damnit_folder import initialize_proposal


@command
def cmd_init(args: argparse.Namespace) -> int:
    if args.proposal_or_dir.isdigit():
        proposal = int(args.proposal_or_dir)
        damnit_dir = amore_dir(proposal)
    else:
        damnit_dir = Path(args.proposal_or_dir).resolve()
        if args.proposal is not None:
            proposal = args.proposal
        elif m := re.search(r"/p(\d+)/", str(damnit_dir) + "/"):
            proposal = int(m[1])
        else:
            raise CLIError("--proposal is required when the directory is not inside a proposal folder (p<N>/)")

    context_src = user_vars_src = None
    if args.like is not None:
        like_dir = damnit_dir_for(args.like)
        context_src = _existing_file(like_dir / "context.py")
        user_vars_src = _existing_file(like_dir / "runs.sqlite")
    if args.context is not None:
        context_src = _existing_file(Path(args.context))

    print(f"Setting up DAMNIT in {damnit_dir}")
    existed = (damnit_dir / "context.py").is_file()
    initialize_proposal(damnit_dir, proposal, context_file_src=context_src, user_vars_src=user_vars_src)
    if existed and context_src is not None:
        print(f"Kept the existing {damnit_dir / 'context.py'} (not overwritten by {context_src})")
    return 0


def _existing_file(p: Path) -> Path:
    if not p.is_file():
        raise CLIError(f"{p} is not a file")
    return p


def register(subparsers) -> None:
    p = subparsers.add_parser("init", help="Set up a new DAMNIT folder")
    p.add_argument("proposal_or_dir", help="Either a proposal number or a directory path")
    p.add_argument("--proposal", type=int, help="Proposal number (if not in a proposal directory)")
    p.add_argument("--like", help="Proposal number or DAMNIT directory to copy the context file and "
                                  "user-editable variables from")
    p.add_argument("--context", type=Path, help="Context file to copy to the new location")
    p.set_defaults(func=cmd_init)
