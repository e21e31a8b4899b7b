"""Processing runs inside the listener (``use_slurm 0``, or ``allow_local_processing`` when Slurm fails).

One thread and one ``RunProcessor`` (warm context workers) per database, at most
``local_processing_concurrency`` databases at once. Requests for a run already queued are merged
(raw + proc → all); a repeated event for a run being processed right now is attached to that work
instead of queued again, within the duplicate window.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend.base.messages import UpdateProducer
from backend.base.paths import append_run_log
from backend.processing.requests import RunRequest
from backend.processing.run_processor import ContextLoadError, RunProcessor
from backend.services.listener_db import merge_run_data
from backend.storage import processing_state
from backend.storage.database import DamnitDB

log = logging.getLogger(__name__)

QUEUED, MERGED, DUPLICATE = "queued", "merged", "duplicate"


@dataclass
class _Pending:
    """One queued run. Its first request's id goes to the processor (RUNNING, finished); the ids of
    requests merged into it are finished here once the merged work ends, as each was announced PENDING."""

    topic: str
    run_data: str
    processing_id: str
    queued_at: float = field(default_factory=time.monotonic)
    events: set[str] = field(default_factory=set)
    merged_ids: list[str] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def covers(self, run_data: str, event: str | None) -> bool:
        """Whether this work already does what a request for ``run_data`` from ``event`` (or events,
        comma-separated) asks."""
        return bool(event) and set(event.split(",")) <= self.events and self.run_data in (run_data, "all")


class _DatabaseQueue:
    """Runs queued for local processing in one database, processed in batches by one thread.

    One thread per database keeps one ``RunProcessor`` (its SQLite connection stays in its thread).
    Requests for a run already waiting are merged (raw + proc → all), so a run is never processed
    twice at once. Every request's processing_id, announced PENDING on submission, gets its
    ``processing_finished`` when the work serving it ends, however it ends, or when it is abandoned at
    shutdown: otherwise dashboards would show the run as queued forever.
    """

    def __init__(self, db_dir: Path, owner: LocalProcessing, *, warm: bool = False):
        self.db_dir = db_dir
        self.owner = owner
        self.warm = warm
        self.pending: dict[tuple[int, int], _Pending] = {}
        self.running: dict[tuple[int, int], _Pending] = {}
        self.cond = threading.Condition()
        self.processor = None
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name=f"local-{db_dir.name}", daemon=True)
        self.thread.start()

    def add(self, req: RunRequest, topic: str, on_done: Callable[[], None], *, event: str | None = None,
            window: float = 0.0, announce: Callable[[], None] = lambda: None) -> str:
        """Queue ``req`` (QUEUED), merge it into the request waiting for its run (MERGED), or attach it
        to the same event's work in progress, started less than ``window`` s ago (DUPLICATE: nothing
        new to do or announce). ``announce`` (its PENDING message) is called first unless DUPLICATE."""
        key = (req.proposal, req.run)
        with self.cond:
            if self.stopping:  # too late: the event stays uncommitted and comes back to the next listener
                return QUEUED
            running = self.running.get(key)
            if running is not None and running.covers(req.run_data, event) and \
                    time.monotonic() - running.queued_at < window:
                running.callbacks.append(on_done)
                return DUPLICATE
            announce()
            if key in self.pending:
                p = self.pending[key]
                p.run_data = merge_run_data(p.run_data, req.run_data)
                p.merged_ids.append(req.processing_id)
                p.callbacks.append(on_done)
                if event:
                    p.events.update(event.split(","))
                self.cond.notify()
                return MERGED
            self.pending[key] = _Pending(topic, req.run_data, req.processing_id,
                                         events=set(event.split(",")) if event else set(), callbacks=[on_done])
            self.cond.notify()
            return QUEUED

    def _processor(self):
        if self.processor is None:
            self.processor = RunProcessor(self.db_dir, producer=self.owner.producer, n_workers=self.owner.n_workers)
        return self.processor

    def _loop(self) -> None:
        if self.warm:
            try:
                self._processor().warm_up()
                log.info("Context workers ready for %s", self.db_dir)
            except Exception as e:  # the first run will try again, and report it in its log
                log.warning("Could not start context workers for %s in advance: %s", self.db_dir, e)
                self.processor = None
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    break
            with self.owner.slots:
                with self.cond:
                    if self.stopping:  # stop() was called while this thread waited for a slot
                        break
                    batch, self.pending = self.pending, {}
                    self.running = dict(batch)
                try:
                    self._process(batch)
                finally:
                    with self.cond:
                        finished, self.running = self.running, {}
                    for p in finished.values():  # duplicates attached while the batch ran
                        self._finish(p)
        if self.processor is not None:
            try:
                self.processor.close()
            except Exception as e:
                log.debug("Closing the local processor of %s: %s", self.db_dir, e)

    def stop(self, timeout: float = 10) -> None:
        """Stop after the batch in progress; queued runs are left (their events were not committed, so
        the next listener gets them again, under new processing ids)."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)
        with self.cond:
            abandoned, self.pending = self.pending, {}
        for p in abandoned.values():
            self._announce_finished(p.topic, [p.processing_id, *p.merged_ids])

    def _process(self, batch: dict[tuple[int, int], _Pending]) -> None:
        reqs = {key: RunRequest(proposal=key[0], run=key[1], run_data=p.run_data) for key, p in batch.items()}
        ids = {id(reqs[key]): p.processing_id for key, p in batch.items()}
        try:
            for outcome in self._processor().process(list(reqs.values()), processing_ids=ids):
                key = (outcome.request.proposal, outcome.request.run)
                if outcome.run_error:
                    log.error("Local processing of p%d r%d in %s failed: %s", key[0], key[1], self.db_dir,
                              outcome.run_error.get("message"))
                else:
                    log.info("Processed p%d r%d (%s) locally in %s", key[0], key[1], batch[key].run_data,
                             self.db_dir)
                p = batch.pop(key, None)
                with self.cond:  # done: a repeated event from now on is new work
                    self.running.pop(key, None)
                if p is not None:  # the processor has finished p.processing_id itself
                    self._announce_finished(p.topic, p.merged_ids)
                self._finish(p)
        except Exception as e:
            log.error("Local processing in %s failed: %s", self.db_dir, e, exc_info=not isinstance(e, ContextLoadError))
            for (proposal, run) in batch:
                try:
                    append_run_log(self.db_dir, proposal, run, f"Local processing failed: {e}")
                except OSError:
                    pass
            if not isinstance(e, ContextLoadError):  # (the processor marks those itself)
                self._mark_failed(batch, e)
            self.processor = None  # start afresh next time (e.g. after a DB or context fix)
        finally:
            # No outcome for these: the processor may or may not have finished their first id (it does
            # on a context error). A repeated processing_finished is harmless; receivers drop the id.
            for p in batch.values():
                self._announce_finished(p.topic, [p.processing_id, *p.merged_ids])
                self._finish(p)

    def _mark_failed(self, batch: dict[tuple[int, int], _Pending], error: Exception) -> None:
        """Show the runs as failed in runs.sqlite (dashboards offer to reprocess them)."""
        try:
            with DamnitDB.from_dir(self.db_dir) as db:
                for proposal, run in batch:
                    processing_state.record_failure(db, proposal, run, processing_state.PROCESSING,
                                                    f"processing in the listener failed: {error}")
        except Exception as e:
            log.warning("Could not mark runs as failed in %s: %s", self.db_dir, e)

    def _announce_finished(self, topic: str, processing_ids: list[str]) -> None:
        for processing_id in processing_ids:
            try:
                self.owner.producer.processing_finished(topic, processing_id)
            except Exception as e:  # messages are notifications; never fatal to processing
                log.warning("Could not announce the end of processing %s: %s", processing_id, e)

    def _finish(self, p: _Pending | None) -> None:
        if p is None:
            return
        with self.cond:  # duplicates may attach callbacks until the run leaves `running`
            callbacks, p.callbacks = p.callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("Completion callback failed")


class LocalProcessing:
    """Processes runs inside the listener, a bounded number of databases at once."""

    def __init__(self, producer: UpdateProducer, max_concurrent: int | None = None, n_workers: int | None = None):
        self.producer = producer
        self.max_concurrent = max_concurrent or max(1, min((os.cpu_count() or 2) // 2, 10))
        self.slots = threading.BoundedSemaphore(self.max_concurrent)
        self.n_workers = n_workers
        self._queues: dict[Path, _DatabaseQueue] = {}
        self._lock = threading.Lock()

    def prewarm(self, db_dir: Path) -> None:
        """Start ``db_dir``'s processor and a context worker now (runs will only be processed here)."""
        with self._lock:
            if db_dir not in self._queues:
                self._queues[db_dir] = _DatabaseQueue(db_dir, self, warm=True)

    def submit(self, db_dir: Path, req: RunRequest, on_done: Callable[[], None], *, topic: str,
               event: str | None = None, window: float = 0.0) -> str:
        """Queue ``req``, announcing it PENDING on ``topic`` (the DB's update topic); ``on_done`` runs
        when it has been processed (or failed), and its processing_id is then announced finished.
        A repeat of ``event`` for a run being processed since less than ``window`` s is not processed
        again: ``on_done`` runs with that work. Returns QUEUED, MERGED or DUPLICATE."""
        def announce() -> None:
            self.producer.processing_state_set(topic, req.processing_id, req.proposal, req.run, req.run_data,
                                               "PENDING", slurm_cluster=None, slurm_job_id=None)

        with self._lock:
            queue = self._queues.get(db_dir)
            if queue is None:
                queue = self._queues[db_dir] = _DatabaseQueue(db_dir, self)
        return queue.add(req, topic, on_done, event=event, window=window, announce=announce)

    def close(self, timeout: float = 10) -> None:
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
        for q in queues:
            q.stop(timeout)
