"""Re-queueing runs whose processing failed, or that wait in the listener's queue for Slurm.

Re-queueing a run is reprocessing it, every variable, through the dashboard's ``JobBoard``: on Slurm
when it answers, else on this machine (``processing_jobs``). A successful run clears its failure mark.

The listener owns its queue of waiting runs (``listener.sqlite``, in the listener's folder); runs.sqlite
only mirrors it, and does not say where the listener lives. The dashboard reaches the queue when the
listener runs in the database's own folder (``damnit listen --daemonize`` there, the usual set-up of a
proposal's own listener). Then "Retry now" makes the run due at once and asks the running listener to
try Slurm now, "Drop" takes it out of the queue (both as ``damnit listener waiting --retry / --drop``),
and a waiting run reprocessed from here leaves the queue, so the listener does not process it again.
Any other listener is out of reach: ``QueueUnreachable`` says so, and reprocessing from here is what
remains (that listener then submits the run again when Slurm answers: processed twice, harmless).

Every action checks the session's write right here, on the server, and is logged with the user.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app.actions.edits import get_producer
from app.actions.processing_jobs import Job, job_board
from app.live.session import SessionState
from backend.base.runs import format_runs
from backend.services.listener import forget_waiting
from backend.services.listener_db import LISTENER_DB_NAME, ListenerDB, WaitingEntry

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # who re-queued what: an audit trail, always in the server log


class QueueUnreachable(RuntimeError):
    """The listener's queue is not where this dashboard can change it."""


@dataclass
class Requeued:
    job: Job
    left_queue: list[int] = field(default_factory=list)    # waiting runs taken out of the listener's queue
    still_queued: list[int] = field(default_factory=list)  # waiting runs the listener will submit anyway
    queue_error: str = ""                                  # why they are still queued

    @property
    def message(self) -> str:
        text = f"Launched processing for {format_runs(self.job.runs)} ({self.job.message})"
        if self.left_queue:
            text += f"; {format_runs(self.left_queue)} left the listener's queue"
        if self.still_queued:
            text += (f"; the listener still has {format_runs(self.still_queued)} queued and will process "
                     f"{'them' if len(self.still_queued) > 1 else 'it'} again when Slurm answers "
                     f"({self.queue_error})")
        return text


def listener_folder(db_dir: str | Path) -> Path | None:
    """The folder of the listener whose queue this dashboard can reach: the database's own, when a
    listener keeps its ``listener.sqlite`` there; else None."""
    folder = Path(db_dir)
    return folder if (folder / LISTENER_DB_NAME).is_file() else None


UNREACHABLE = ("this dashboard cannot reach the listener's queue (no {name} in the database folder {folder}): "
               "the listener submits waiting runs when Slurm answers, or use `damnit listener waiting --retry` "
               "/ `--drop ID` in the listener's folder; reprocessing from here also works")


@contextmanager
def _listener_db(db_dir: Path) -> Iterator[ListenerDB]:
    folder = listener_folder(db_dir)
    if folder is None:
        raise QueueUnreachable(UNREACHABLE.format(name=LISTENER_DB_NAME, folder=db_dir))
    try:
        with ListenerDB(folder) as ldb:
            yield ldb
    except sqlite3.Error as e:
        raise QueueUnreachable(f"the listener's queue in {folder / LISTENER_DB_NAME} cannot be changed: {e}") \
            from e


def _entries(ldb: ListenerDB, db_dir: Path, proposal: int, runs: Iterable[int]) -> dict[int, WaitingEntry]:
    """The queue's entries of these runs of this database, by run."""
    db_dir = Path(db_dir).resolve()
    found = {}
    for run in runs:
        for e in ldb.waiting(proposal=proposal, run=int(run)):
            if Path(e.db_dir).resolve() == db_dir:
                found[int(run)] = e
    return found


def _audit(session: SessionState, what: str) -> None:
    log.info("%s by %s on %s", what, session.user or "local user", session.source.db_dir)


def requeue(session: SessionState, runs: Iterable[int]) -> Requeued:
    """Reprocess these runs (failed, waiting, or any), every variable; RuntimeError if nothing could
    be started. Runs of the session's proposal."""
    session.check_write()
    src = session.source
    runs = sorted({int(r) for r in runs})
    job = job_board(src.db_dir, src.proposal).submit(runs, [], backend="auto", user=session.user)
    _audit(session, f"Re-queued r{format_runs(runs)} ({job.backend}: {job.message})")
    done = Requeued(job)
    waiting = [r for r in runs if src.waiting_for(src.key_for(src.proposal, r)) is not None]
    if waiting:
        try:
            done.left_queue = drop(session, waiting, audit=False)
        except QueueUnreachable as e:
            done.still_queued, done.queue_error = waiting, str(e)
    return done


def retry_now(session: SessionState, runs: Iterable[int]) -> list[int]:
    """Make these waiting runs due now and ask the running listener to try Slurm at once (not at its
    back-off); returns the runs found in its queue. QueueUnreachable if it is out of reach."""
    session.check_write()
    src = session.source
    with _listener_db(src.db_dir) as ldb:
        entries = _entries(ldb, src.db_dir, src.proposal, runs)
        ldb.retry_waiting_now(ask_listener=True, ids=[e.id for e in entries.values()])
    if entries:
        _audit(session, f"Retry now of waiting r{format_runs(entries)}")
    return sorted(entries)


def drop(session: SessionState, runs: Iterable[int], *, audit: bool = True) -> list[int]:
    """Take these runs out of the listener's queue for good (they are not submitted; reprocess them by
    hand); returns the runs that were in it. QueueUnreachable if it is out of reach."""
    session.check_write()
    src = session.source
    with _listener_db(src.db_dir) as ldb:
        entries = _entries(ldb, src.db_dir, src.proposal, runs)
        for entry in entries.values():
            forget_waiting(ldb, entry, get_producer())
    if entries and audit:
        _audit(session, f"Dropped waiting r{format_runs(entries)} from the listener's queue")
    src.wake()
    return sorted(entries)
