"""Run selections as people type them: ``1-10, 15``, ``3 5-7``, or ``all`` (on the command line, in the
dashboard, for mock data). One parser, so the same text means the same runs everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MAX_RANGE = 100_000  # runs in one range: more is surely a typo (and would take a while)


class RunSpecError(ValueError):
    """A run selection that cannot be understood; the message quotes the bad part."""


def parse_run_spec(spec: str | Sequence[str]) -> list[int] | None:
    """Sorted run numbers without duplicates, or None for ``all``. Parts are separated by commas or
    spaces (or given as separate strings, as argparse does)."""
    parts = [p for text in ([spec] if isinstance(spec, str) else spec) for p in re.split(r"[,\s]+", text) if p]
    if not parts:
        raise RunSpecError("no runs given: type run numbers like 1-10,15 or 'all'")
    if [p.lower() for p in parts] == ["all"]:
        return None
    runs: set[int] = set()
    for part in parts:
        if part.lower() == "all":
            raise RunSpecError("'all' cannot be combined with run numbers")
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise RunSpecError(f"bad run number {part!r}: give integers (e.g. 12), ranges (12-20) or 'all'")
        first, last = int(m[1]), int(m[2] or m[1])
        if last < first:
            raise RunSpecError(f"bad run range {part!r}: the end is before the start")
        if last - first >= MAX_RANGE:
            raise RunSpecError(f"bad run range {part!r}: more than {MAX_RANGE} runs")
        runs.update(range(first, last + 1))
    return sorted(runs)


def format_runs(runs: Iterable[int]) -> str:
    """Compact ranges: [1, 2, 3, 5] -> '1-3, 5' (what ``parse_run_spec`` reads back)."""
    runs = sorted(set(runs))
    parts, i = [], 0
    while i < len(runs):
        j = i
        while j + 1 < len(runs) and runs[j + 1] == runs[j] + 1:
            j += 1
        parts.append(str(runs[i]) if i == j else f"{runs[i]}-{runs[j]}")
        i = j + 1
    return ", ".join(parts)
