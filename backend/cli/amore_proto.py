"""``amore-proto``: the original DAMNIT's former name for ``damnit``, kept so that old scripts run.

Like the original, it prints a rename warning on stderr and then does exactly what ``damnit`` does
with the same arguments (usage messages name ``amore-proto``).
"""

from __future__ import annotations

import os
import sys

from backend.cli import main as damnit_main

RENAME_WARNING = "Warning: 'amore-proto' has been renamed to 'damnit'. Please update your scripts."


def main(argv: list[str] | None = None) -> int:
    warning = RENAME_WARNING
    if sys.stderr.isatty() and "NO_COLOR" not in os.environ:
        warning = f"\033[33m{warning}\033[0m"  # yellow, as the original
    print(warning, file=sys.stderr, flush=True)
    return damnit_main(argv, prog="amore-proto")
