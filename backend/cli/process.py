"""``damnit process PROPOSAL RUN raw|proc|all ...``: process one run, as a Slurm job does."""

from __future__ import annotations

import argparse

from backend.cli.common import command
from backend.services.job import add_process_arguments, run_process_command


@command
def cmd_process(args: argparse.Namespace) -> int:
    return run_process_command(args)


def register(subparsers) -> None:
    p = subparsers.add_parser("process", help="Process one run (what a Slurm job runs)")
    add_process_arguments(p)
    p.set_defaults(func=cmd_process)
