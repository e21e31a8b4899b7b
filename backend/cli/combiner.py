"""``damnit combiner run|now``: merge HDF5 fragments announced by other producers."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from backend.base.messages import UpdateProducer
from backend.services import combiner


def cmd_combiner(args: argparse.Namespace) -> int:
    if args.combiner_cmd == "now":
        with UpdateProducer.from_env() as producer:
            n = combiner.combine_all(args.db_dir, producer)
        print(f"Combined {n} fragment(s)")
        return 0

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await combiner.run_combiner(stop=stop)

    try:
        asyncio.run(main())
    except RuntimeError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("combiner", help="Merge HDF5 fragments announced by other producers")
    sub = p.add_subparsers(dest="combiner_cmd", required=True)
    sub.add_parser("run", help="Run the combiner service (reads test.damnit.file_submissions)")
    n = sub.add_parser("now", help="Merge pending fragments in a database folder now (no Kafka)")
    n.add_argument("db_dir", type=Path)
    p.set_defaults(func=cmd_combiner)
