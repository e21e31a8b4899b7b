"""The `damnit` command: the original's verbs and flags (spec §6).

Each group of verbs is defined next to the code it drives and registers itself here through a
``register(subparsers)`` function, so this module stays a thin dispatcher.
"""

from __future__ import annotations

import argparse
import logging
import sys

# Modules that contribute subcommands. Each has `register(subparsers)`; a command's parser gets
# `func=callable(args) -> int | None` through set_defaults.
COMMAND_MODULES = [
    "backend.cli.core",      # init, proposal, new-id, db-config, read-context, reprocess, process
    "backend.cli.services",  # listen, listener, combiner
]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="damnit", description="Run DAMNIT context files over runs")
    parser.add_argument("--debug", action="store_true", help="Show debug logs")
    subparsers = parser.add_subparsers(dest="subcmd", required=True)
    for modname in COMMAND_MODULES:
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
