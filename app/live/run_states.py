"""Runs whose processing failed and runs waiting for Slurm, as one proposal's sessions see them.

The backend keeps both in runs.sqlite (``backend.storage.processing_state``): a failure mark per run
(cleared when the run is next processed successfully) and the listener's mirror of its durable queue.
No Kafka message announces a change of either (the listener re-tries a waiting run without a word), so
``ProposalSource`` reads them again whenever its poll sees the database (or the context file) change:
one read per source per change, shared by every session, never a read per session.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend.base.paths import DB_NAME
from backend.storage import processing_state
from backend.storage.connections import connect_readonly
from backend.storage.processing_state import ProcessingFailure, WaitingRun

KeyFor = Callable[[int, int], int]  # (proposal, run) -> row key


@dataclass(frozen=True)
class RunStates:
    """Failed and waiting runs of one database, by row key; and which failures are worth reprocessing
    since the context file changed."""

    failures: dict[int, ProcessingFailure] = field(default_factory=dict)
    waiting: dict[int, WaitingRun] = field(default_factory=dict)
    context_sha256: str | None = None  # of context.py when read
    stale_context: tuple[ProcessingFailure, ...] = ()  # failed to load an earlier version of context.py

    def changed_keys(self, other: RunStates) -> set[int]:
        """Row keys whose failure or waiting entry differs between the two."""
        keys = set()
        for mine, theirs in ((self.failures, other.failures), (self.waiting, other.waiting)):
            keys.update(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        return keys


def read_run_states(db_dir: str | os.PathLike, key_for: KeyFor) -> RunStates:
    """Read both tables and fingerprint ``context.py`` (one short read-only connection)."""
    sha, _ = processing_state.context_fingerprint(db_dir)
    with connect_readonly(Path(db_dir) / DB_NAME) as conn:
        failures = processing_state.failures(conn)
        waiting = processing_state.waiting(conn)
        stale = (processing_state.failed_with_other_context(conn, sha)
                 if any(f.kind == processing_state.CONTEXT for f in failures) else [])
    return RunStates({key_for(f.proposal, f.run): f for f in failures},
                     {key_for(w.proposal, w.run): w for w in waiting}, sha, tuple(stale))
