"""``damnit listen [DIR] [--test|--daemonize]``: process new runs as their events arrive on Kafka."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.services import listener
from backend.services.supervisord import start_listener


def cmd_listen(args: argparse.Namespace) -> int:
    listener_dir = Path(args.listener_dir or ".").absolute()
    if args.daemonize:
        try:
            start_listener(listener_dir)
        except RuntimeError as e:
            print(f"Error: could not start the listener under supervisord: {e}", file=sys.stderr)
            return 1
        print(f"Listener running under supervisord; control it with "
              f"`supervisorctl -c {listener_dir / 'supervisord.conf'} status|restart|stop damnit`")
        return 0
    if args.test:
        return listener.listen_test(listener_dir)
    return listener.listen(listener_dir)


def register(subparsers) -> None:
    p = subparsers.add_parser("listen", help="Listen for run events and process new runs")
    p.add_argument("listener_dir", nargs="?", default=None, help="Listener folder (default: current directory)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--test", action="store_true", help="Type fake run events instead of reading Kafka")
    mode.add_argument("--daemonize", action="store_true", help="Run the listener under supervisord")
    p.set_defaults(func=cmd_listen)
