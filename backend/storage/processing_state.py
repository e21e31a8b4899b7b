"""Runs whose processing failed, and runs waiting to be submitted, in two tables of our own in runs.sqlite.

The original DAMNIT's format (v4) has no place for either, so they live in extra tables that the original
ignores (it still opens and reads the database; its data format version is unchanged):

``processing_failures``: one row per run whose last processing failed, with why. Written when a Slurm
job ends badly (cancelled, killed, timed out, out of memory), when the context file cannot be loaded,
or when the run cannot be processed at all; cleared when the run is next processed successfully. The
context file's SHA-256 and mtime at the time are kept, so a dashboard can offer to reprocess the runs
that failed with a context version that has since changed (``failed_with_other_context``).

``processing_waiting``: runs the listener could not hand to Slurm (an outage, or sbatch refusing the
job) and keeps in its durable queue until Slurm answers again; a mirror of the listener's own queue
(``listener.sqlite``, ``damnit listener waiting``) for dashboards, which do not know where the
listener lives.

Writes take a ``DamnitDB`` (busy retries, one transaction); reads take a ``DamnitDB`` or a plain
``sqlite3.Connection`` (``connections.connect_readonly``), or ``read_state(db_dir)`` opens one itself.
A database without these tables reads as having no failures and nothing waiting.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .connections import connect_readonly
from .database import DB_NAME, DamnitDB

FAILURES_TABLE = "processing_failures"
WAITING_TABLE = "processing_waiting"

SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {FAILURES_TABLE}(proposal INTEGER NOT NULL, run INTEGER NOT NULL,"
    " kind TEXT NOT NULL, reason TEXT NOT NULL, failed_at REAL NOT NULL, context_sha256 TEXT,"
    " context_mtime REAL, slurm_job_id TEXT, PRIMARY KEY (proposal, run))",
    f"CREATE TABLE IF NOT EXISTS {WAITING_TABLE}(proposal INTEGER NOT NULL, run INTEGER NOT NULL,"
    " run_data TEXT NOT NULL, reason TEXT NOT NULL, since REAL NOT NULL, attempts INTEGER NOT NULL,"
    " next_attempt REAL, PRIMARY KEY (proposal, run))",
)

# What failed (``ProcessingFailure.kind``)
CONTEXT = "context"        # the context file could not be loaded: every run fails until it is fixed
RUN = "run"                # this run could not be processed (its data could not be opened, the worker died)
JOB = "job"                # the Slurm job ended badly: FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, killed
CANCELLED = "cancelled"    # the Slurm job was cancelled (by a user, an admin or Slurm)
PROCESSING = "processing"  # processing could not start (e.g. the context interpreter is missing)
KINDS = (CONTEXT, RUN, JOB, CANCELLED, PROCESSING)


@dataclass(frozen=True)
class ProcessingFailure:
    proposal: int
    run: int
    kind: str                    # one of KINDS
    reason: str                  # one line for people ("Slurm job 123 ended as TIMEOUT", "SyntaxError: ...")
    failed_at: float             # Unix time
    context_sha256: str | None   # the context file it failed with (None: there was none)
    context_mtime: float | None
    slurm_job_id: str | None     # the job that failed, if it was one


@dataclass(frozen=True)
class WaitingRun:
    proposal: int
    run: int
    run_data: str                # raw | proc | all
    reason: str                  # why it is not submitted yet (Slurm's own error)
    since: float                 # Unix time it started waiting
    attempts: int                # submissions tried so far
    next_attempt: float | None   # Unix time of the next try (None: when Slurm answers again)


@dataclass(frozen=True)
class ProcessingState:
    """What a dashboard shows about processing, by ``(proposal, run)``."""
    failures: dict[tuple[int, int], ProcessingFailure]
    waiting: dict[tuple[int, int], WaitingRun]


def read_state(db_dir: str | os.PathLike) -> ProcessingState:
    """Failed and waiting runs of the database in ``db_dir``, read through a short read-only connection."""
    with connect_readonly(Path(db_dir) / DB_NAME) as conn:
        return ProcessingState({(f.proposal, f.run): f for f in failures(conn)},
                               {(w.proposal, w.run): w for w in waiting(conn)})


def context_fingerprint(db_dir: str | os.PathLike) -> tuple[str | None, float | None]:
    """SHA-256 (hex) and mtime of ``<db_dir>/context.py``; ``(None, None)`` if there is none."""
    path = Path(db_dir) / "context.py"
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError:
        return None, None
    return hashlib.sha256(data).hexdigest(), mtime


def _ensure_tables(db: DamnitDB) -> None:
    for statement in SCHEMA:
        db.conn.execute(statement)


def _reader(db: DamnitDB | sqlite3.Connection) -> sqlite3.Connection:
    return db.conn if isinstance(db, DamnitDB) else db


def _select(db: DamnitDB | sqlite3.Connection, sql: str, params: tuple = ()) -> list[tuple]:
    try:
        return [tuple(r) for r in _reader(db).execute(sql, params).fetchall()]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


# ---------------------------------------------------------------- failures

def record_failure(db: DamnitDB, proposal: int, run: int, kind: str, reason: str, *,
                   context: tuple[str | None, float | None] | None = None, slurm_job_id: str | None = None,
                   failed_at: float | None = None) -> None:
    """Mark the run as failed (replacing an earlier failure). ``context`` is ``context_fingerprint()``
    of the file it failed with (read now from the database's folder when not given)."""
    if kind not in KINDS:
        raise ValueError(f"unknown failure kind {kind!r} (one of {', '.join(KINDS)})")
    sha, mtime = context if context is not None else context_fingerprint(db.path.parent)
    reason = " ".join(str(reason).split())[:2000] or kind

    def txn():
        _ensure_tables(db)
        db.conn.execute(
            f"INSERT OR REPLACE INTO {FAILURES_TABLE} (proposal, run, kind, reason, failed_at, context_sha256,"
            " context_mtime, slurm_job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (int(proposal), int(run), kind, reason, failed_at or time.time(), sha, mtime,
             str(slurm_job_id) if slurm_job_id else None))

    db.write(txn, "record a processing failure")


def clear_failure(db: DamnitDB, proposal: int, run: int) -> bool:
    """Forget the run's failure (it was processed successfully); True if there was one."""
    if not failure(db, proposal, run):
        return False

    def txn():
        return db.conn.execute(f"DELETE FROM {FAILURES_TABLE} WHERE proposal=? AND run=?",
                               (int(proposal), int(run))).rowcount

    return bool(db.write(txn, "clear a processing failure"))


_FAILURE_COLUMNS = "proposal, run, kind, reason, failed_at, context_sha256, context_mtime, slurm_job_id"


def failures(db: DamnitDB | sqlite3.Connection) -> list[ProcessingFailure]:
    """Every failed run, by proposal and run."""
    rows = _select(db, f"SELECT {_FAILURE_COLUMNS} FROM {FAILURES_TABLE} ORDER BY proposal, run")
    return [ProcessingFailure(*r) for r in rows]


def failure(db: DamnitDB | sqlite3.Connection, proposal: int, run: int) -> ProcessingFailure | None:
    """The run's failure, or None if its last processing did not fail."""
    rows = _select(db, f"SELECT {_FAILURE_COLUMNS} FROM {FAILURES_TABLE} WHERE proposal=? AND run=?",
                   (int(proposal), int(run)))
    return ProcessingFailure(*rows[0]) if rows else None


def failed_with_context(db: DamnitDB | sqlite3.Connection, context_sha256: str) -> list[ProcessingFailure]:
    """Runs that failed while the context file had this SHA-256 (any kind of failure)."""
    rows = _select(db, f"SELECT {_FAILURE_COLUMNS} FROM {FAILURES_TABLE} WHERE context_sha256=?"
                       " ORDER BY proposal, run", (context_sha256,))
    return [ProcessingFailure(*r) for r in rows]


def failed_with_other_context(db: DamnitDB | sqlite3.Connection, current_sha256: str | None,
                              kinds: tuple[str, ...] = (CONTEXT,)) -> list[ProcessingFailure]:
    """Runs whose failure (of these kinds; default: the context would not load) happened with another
    version of the context file than ``current_sha256``: after a fix, the ones worth reprocessing."""
    return [f for f in failures(db) if f.kind in kinds and f.context_sha256 != current_sha256]


# ---------------------------------------------------------------- waiting runs (the listener's mirror)

def set_waiting(db: DamnitDB, proposal: int, run: int, run_data: str, reason: str, *, since: float,
                attempts: int = 0, next_attempt: float | None = None) -> None:
    """Show the run as waiting for Slurm (replacing an earlier entry for it)."""
    def txn():
        _ensure_tables(db)
        db.conn.execute(
            f"INSERT OR REPLACE INTO {WAITING_TABLE} (proposal, run, run_data, reason, since, attempts,"
            " next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (int(proposal), int(run), run_data, " ".join(str(reason).split())[:2000], since, int(attempts),
             next_attempt))

    db.write(txn, "mark a run waiting")


def clear_waiting(db: DamnitDB, proposal: int, run: int) -> bool:
    """The run is no longer waiting (submitted, processed, or dropped); True if it was."""
    if not _select(db, f"SELECT 1 FROM {WAITING_TABLE} WHERE proposal=? AND run=?", (int(proposal), int(run))):
        return False

    def txn():
        return db.conn.execute(f"DELETE FROM {WAITING_TABLE} WHERE proposal=? AND run=?",
                               (int(proposal), int(run))).rowcount

    return bool(db.write(txn, "clear a waiting run"))


def waiting(db: DamnitDB | sqlite3.Connection) -> list[WaitingRun]:
    """Runs waiting for the listener to submit them, oldest first."""
    rows = _select(db, f"SELECT proposal, run, run_data, reason, since, attempts, next_attempt FROM {WAITING_TABLE}"
                       " ORDER BY since, proposal, run")
    return [WaitingRun(*r) for r in rows]
