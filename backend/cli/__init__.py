"""The ``damnit`` command: the original's verbs and flags (docs/spec.md, "Command line").

One module per command in this package; each defines its parser with ``register(subparsers)`` and
sets ``func=callable(args) -> int``. This is the backend's top layer: it may use every layer below.
"""

from __future__ import annotations

import argparse
import logging

from backend.cli import (
    combiner,
    db_config,
    init,
    listen,
    listener,
    new_id,
    process,
    proposal,
    read_context,
    reprocess,
)

# The command modules, in the order `damnit --help` lists them.
COMMANDS = (init, proposal, new_id, db_config, read_context, reprocess, process, listen, listener, combiner)


def build_parser(prog: str = "damnit") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run DAMNIT context files over runs")
    parser.add_argument("--debug", action="store_true", help="Show debug logs")
    subparsers = parser.add_subparsers(dest="subcmd", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None, prog: str = "damnit") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
