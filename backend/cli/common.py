"""What every ``damnit`` command shares: the user-facing error, finding the DAMNIT folder and its
database, and run-number specs."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from backend.base.paths import ProposalNotFound, amore_dir
from backend.storage.database import DamnitDB, DatabaseVersionError, LegacyDatabaseError


class CLIError(Exception):
    """A user-facing error: printed as ``Error: ...`` and the command exits with status 1."""


def command(func: Callable) -> Callable:
    """A command function whose ``CLIError`` (or missing proposal) becomes ``Error: ...`` and status 1."""
    def run(args) -> int:
        try:
            return func(args) or 0
        except (CLIError, ProposalNotFound) as e:
            print(f"Error: {e}", file=sys.stderr)
            return 1
    run.__name__ = run.__qualname__ = func.__name__
    run.__doc__ = func.__doc__
    return run


def damnit_dir_for(proposal_or_dir: str | None) -> Path | None:
    """A DAMNIT directory from a path or a proposal number (its official <proposal>/usr/Shared/amore)."""
    if proposal_or_dir is None:
        return None
    path = Path(proposal_or_dir)
    if path.is_dir():
        return path.resolve()
    if proposal_or_dir.isdigit():
        return amore_dir(int(proposal_or_dir))
    raise CLIError(f"{proposal_or_dir} is not a proposal number or DAMNIT database directory")


def open_db(db_dir: Path) -> DamnitDB:
    """Open an existing database, with a clear error if `db_dir` is not a DAMNIT directory."""
    db_dir = Path(db_dir)
    if not db_dir.is_dir():
        raise CLIError(f"{db_dir} does not exist or is not a directory")
    if not (db_dir / "runs.sqlite").is_file():
        raise CLIError(f"{db_dir} is not a DAMNIT directory (no runs.sqlite); create one with `damnit init`")
    try:
        return DamnitDB.from_dir(db_dir)
    except (LegacyDatabaseError, DatabaseVersionError, sqlite3.DatabaseError) as e:
        raise CLIError(f"cannot open {db_dir / 'runs.sqlite'}: {e}") from None
