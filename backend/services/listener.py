"""The run-event listener (``damnit listen``, docs/spec.md "Listener"): Kafka run events → processing jobs.

Guarantees (docs/design.md, "Services"):

- *At-least-once.* An event's offset is committed only once its run is submitted to Slurm, processed
  in the listener, or kept in the durable queue of ``listener.sqlite``; commits advance per partition up
  to the oldest event not yet there. A crash or broker loss re-delivers rather than drops events.
- *No outage loses a run.* A run whose job cannot be submitted (Slurm away, sbatch refusing it) and
  may not be processed here waits in ``listener.sqlite`` and is submitted when Slurm answers again,
  with back-off (``damnit listener waiting`` shows it, and why).
- *No message stops the listener.* A message that cannot be decoded or validated is logged once with
  topic, partition and offset, counted, kept in the dead-letter record (``damnit listener
  dead-letters``) and committed past.
- *Processing never blocks the consumer.* Events are handed to a pool of threads (bounded: at most
  ``submit_concurrency`` submissions at once; local processing has its own bound), so the consumer
  polls, heartbeats and commits however long a batch takes, and stays in its group. When too many
  events are in flight, reading pauses (``consumer.pause``) rather than piling them up.
- *Duplicates*: a repeat of an event whose run is still waiting, queued, or being processed (a Slurm
  job not yet ended, started less than ``duplicate_window`` s ago) is not queued again. Slurm jobs of
  one run are serialised by name (``--dependency=singleton``) anyway.

A new listener reads its topics from the beginning but ignores events older than its first start
(``listening_since`` setting), so a broker that restarts empty, or a listener started before its
broker, loses nothing, while a fresh listener does not replay a week of history.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from backend.base.messages import UpdateProducer, brokers_from_env, update_topic
from backend.base.paths import amore_dir, append_run_log
from backend.processing.requests import RunRequest
from backend.services.listener_db import ListenerDB, WaitingEntry, WatchedJob
from backend.services.local_processing import DUPLICATE, LocalProcessing
from backend.services.outages import KafkaClientLog, Outage
from backend.services.slurm import (
    JobWatcher,
    SlurmSubmitter,
    SlurmUnavailable,
    SubmissionError,
    SubmittedJob,
    squeue_states,
)
from backend.storage import processing_state
from backend.storage.database import DamnitDB

log = logging.getLogger(__name__)

# Event topics and the run data each event announces (offline cluster and online cluster variants).
EVENT_TOPICS = ("test.r2d2", "cal.offline-corrections", "test.euxfel.hed.daq", "test.euxfel.hed.cal")
EVENT_RUN_DATA = {
    "migration_complete": "raw",
    "run_corrections_complete": "proc",
    "daq_run_complete": "raw",
    "online_correction_complete": "proc",
}
CONSUMER_GROUP = "xfel-da-damnit-{}"
MAX_NUMBER = 2**31 - 1  # proposal and run numbers above this are not real
READONLY_RETRY_WAIT_S = 2.0
JOB_CHECK_INTERVAL_S = 15.0  # how often submitted jobs are checked for having been killed/failed
MAINTENANCE_INTERVAL_S = 1.0  # how often waiting runs and re-tried events are looked at
MAX_BACKOFF_S = 30.0  # of reconnecting to the broker
MAX_IN_FLIGHT = 1000  # events read but not yet submitted/processed/queued: beyond this, reading pauses
EVENT_RETRY_MAX_S = 300.0  # back-off of an event whose handling raised (listener.sqlite unusable, say)
RUN_LOCKS = 64  # events for one run are handled one at a time (runs share these locks by hash)
LOCAL_WAIT_S = 86400.0  # a waiting run processed in the listener is not retried meanwhile (up to this)

DEFAULTS = {"submit_concurrency": 4, "duplicate_window": 300.0, "slurm_retry_interval": 15.0,
            "slurm_retry_max_interval": 300.0, "kafka_max_poll_interval": 300.0}


class EventError(ValueError):
    """A message on an event topic that is not a usable run event."""


@dataclass(frozen=True)
class RunEvent:
    event: str
    proposal: int
    run: int
    run_data: str
    added_at: float  # broker timestamp, seconds


def _positive_int(value, what: str) -> int:
    """A proposal or run number: a JSON integer or a string of digits, 1 … 2³¹-1 (not 150.7, not true)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        shown = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
        raise EventError(f"{what} must be a positive integer, not {shown[:40]}")
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise EventError(f"{what} must be a positive integer, not {value[:40]!r}")
        value = int(text[:12])  # (longer is out of range anyway)
    if not 0 < value <= MAX_NUMBER:
        raise EventError(f"{what} {str(value)[:20]} is out of range")
    return value


def _parse_event(raw, timestamp_ms) -> RunEvent | None:
    if raw is None:
        raise EventError("empty message (a null value: a tombstone)")
    try:
        msg = json.loads(raw)
    except RecursionError:
        raise EventError("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise EventError(f"not JSON ({e})") from None
    if not isinstance(msg, dict):
        raise EventError(f"expected a JSON object, got {type(msg).__name__}")
    event = msg.get("event")
    if not isinstance(event, str):
        if event is None:
            return None  # another kind of message on a shared topic
        raise EventError(f"'event' is a {type(event).__name__}, not a name")
    if event not in EVENT_RUN_DATA:
        return None
    for key in ("proposal", "run"):
        if key not in msg:
            raise EventError(f"{event} event without {key!r}")
    proposal = _positive_int(msg["proposal"], "proposal")
    run = _positive_int(msg["run"], "run")
    added_at = timestamp_ms / 1000 if isinstance(timestamp_ms, int) and timestamp_ms > 0 else time.time()
    return RunEvent(event, proposal, run, EVENT_RUN_DATA[event], added_at)


def parse_event(raw: bytes | str | None, timestamp_ms: int | None = None) -> RunEvent | None:
    """A run event from a Kafka message; None for other events; EventError if it can't be used.

    Every problem with a message is that message's own (EventError), whatever Python raises decoding
    it: a poison message must never stop the listener.
    """
    try:
        return _parse_event(raw, timestamp_ms)
    except EventError:
        raise
    except Exception as e:  # anything else decoding one message is that message's problem too
        raise EventError(f"cannot decode ({type(e).__name__}: {e})") from None


def mirror_waiting(entry: WaitingEntry, gone: bool = False) -> None:
    """Show a waiting run in its runs.sqlite too (``processing_state``), where dashboards look; best effort."""
    try:
        with DamnitDB.from_dir(entry.db_dir) as db:
            if gone:
                processing_state.clear_waiting(db, entry.proposal, entry.run)
            else:
                processing_state.set_waiting(db, entry.proposal, entry.run, entry.run_data, entry.reason,
                                             since=entry.queued_at, attempts=entry.attempts,
                                             next_attempt=entry.next_attempt)
    except Exception as e:
        log.debug("Could not show waiting runs in %s: %s", entry.db_dir, e)


def forget_waiting(ldb: ListenerDB, entry: WaitingEntry, producer: UpdateProducer | None = None) -> None:
    """Take a run out of the durable queue for good (it will not be submitted; reprocess it by hand),
    and clear its waiting state where dashboards see it."""
    ldb.remove_waiting(entry.id)
    mirror_waiting(entry, gone=True)
    if producer is not None:
        try:
            with DamnitDB.from_dir(entry.db_dir) as db:
                topic = update_topic(db)
            producer.processing_finished(topic, entry.processing_id)
        except Exception as e:
            log.debug("Could not announce the end of waiting p%d r%d: %s", entry.proposal, entry.run, e)


def official_db_dir(proposal: int) -> Path | None:
    """The proposal's official DAMNIT folder, or None when the proposal has no data folder."""
    try:
        return amore_dir(proposal)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- handling one event

@dataclass(frozen=True)
class ProcessingPolicy:
    """How the listener runs jobs, from its settings (re-read for every event)."""
    use_slurm: bool = True     # submit Slurm jobs; off: always process in the listener
    allow_local: bool = False  # process in the listener when a submission fails
    sandbox: str = ""          # command prefix for the context-file runner in jobs
    duplicate_window: float = DEFAULTS["duplicate_window"]
    retry_interval: float = DEFAULTS["slurm_retry_interval"]
    retry_max_interval: float = DEFAULTS["slurm_retry_max_interval"]

    @classmethod
    def from_settings(cls, ldb: ListenerDB) -> ProcessingPolicy:
        return cls(use_slurm=bool(ldb.setting("use_slurm", True)),
                   allow_local=bool(ldb.setting("allow_local_processing", False)),
                   sandbox=ldb.setting("sandbox_args") or "",
                   duplicate_window=ldb.number("duplicate_window", DEFAULTS["duplicate_window"]),
                   retry_interval=ldb.number("slurm_retry_interval", DEFAULTS["slurm_retry_interval"]),
                   retry_max_interval=ldb.number("slurm_retry_max_interval", DEFAULTS["slurm_retry_max_interval"]))

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failed ones."""
        return min(self.retry_interval * 2 ** min(max(attempts - 1, 0), 20), self.retry_max_interval)


class SlurmGate:
    """Whether to call sbatch now. Once Slurm has not answered, only one try (a probe) per back-off
    interval, so an outage costs one sbatch time-out rather than one per run, and the log says it once
    (``Outage``)."""

    def __init__(self, outage: Outage, on_recovered: Callable[[], None] = lambda: None):
        self.outage = outage
        self.on_recovered = on_recovered
        self._lock = threading.Lock()
        self.retry_at = 0.0
        self.failed_probes = 0
        self.probing = False

    def blocked(self) -> bool:
        """Slurm is away and it is not time to ask again."""
        with self._lock:
            return self.outage.down and (self.probing or time.monotonic() < self.retry_at)

    def may_try(self) -> bool:
        """True if sbatch may be called now; then ``answered()`` or ``unavailable()`` must follow."""
        with self._lock:
            if not self.outage.down:
                return True
            if self.probing or time.monotonic() < self.retry_at:
                return False
            self.probing = True
            return True

    def answered(self, detail: str = "") -> bool:
        """Slurm answered (it took or refused a job): True if that ends an outage."""
        with self._lock:
            self.probing = False
            self.failed_probes = 0
        if not self.outage.recovered(detail):
            return False
        self.on_recovered()
        return True

    def unavailable(self, error: Exception | str, policy: ProcessingPolicy) -> None:
        with self._lock:
            self.probing = False
            self.failed_probes += 1
            self.retry_at = time.monotonic() + policy.backoff(self.failed_probes)
        self.outage.failed(str(error), "runs wait in the listener's queue (`damnit listener waiting`) or are "
                                       "processed here if allow_local_processing is on")

    def retry_now(self) -> None:
        with self._lock:
            self.retry_at = 0.0


class EventHandler:
    """Turns run events into jobs for every database registered for their proposal. Thread-safe:
    the listener calls ``handle`` from several threads at once."""

    def __init__(self, listener_dir: Path, producer: UpdateProducer, local: LocalProcessing | None = None,
                 job_python: str | None = None):
        self.listener_dir = Path(listener_dir).absolute()
        self.job_python = job_python or sys.executable
        self.db = ListenerDB(self.listener_dir)
        self.producer = producer
        self.local = local or LocalProcessing(producer)
        self.slurm = SlurmGate(Outage("Slurm", log), on_recovered=self._slurm_back)
        self.watcher = JobWatcher(producer, on_end=self._job_ended, on_slurm_error=self._slurm_error)
        self._sbatch_slots = threading.BoundedSemaphore(int(self.db.number("submit_concurrency",
                                                                           DEFAULTS["submit_concurrency"])))
        self._lock = threading.Lock()
        self._run_locks = [threading.RLock() for _ in range(RUN_LOCKS)]
        self._jobs_lock = threading.Lock()
        self._recent_jobs: dict[tuple[Path, int, int], list[tuple[str | None, str, float]]] = {}
        self._next_job_check = 0.0
        self._restore_watched_jobs()
        self.db.retry_waiting_now(ask_listener=False)  # a (re)started listener tries every waiting run at once

    def close(self) -> None:
        self.db.close()

    # -- Slurm jobs

    def _restore_watched_jobs(self) -> None:
        """Jobs an earlier listener submitted and did not see end: watch them again."""
        for wj in self.db.watched_jobs():
            try:
                req = RunRequest(wj.proposal, wj.run, wj.run_data, processing_id=wj.processing_id)
            except ValueError:
                self.db.remove_watched_job(wj.job_id, wj.cluster)
                continue
            self._watch(SubmittedJob(req, wj.job_id, wj.cluster), wj.db_dir, wj.topic, wj.event, wj.submitted_at,
                        persist=False)

    def _watch(self, job: SubmittedJob, db_dir: Path, topic: str | None, event: str | None,
               submitted_at: float, persist: bool = True) -> None:
        if persist:
            r = job.request
            self.db.add_watched_job(WatchedJob(job.job_id, job.cluster, db_dir, r.proposal, r.run, r.run_data, event,
                                               r.processing_id, topic, submitted_at))
        self.watcher.watch(job, db_dir, topic)
        with self._jobs_lock:
            self._recent_jobs.setdefault((db_dir, job.request.proposal, job.request.run), []).append(
                (event, job.job_id, submitted_at))

    def _job_ended(self, job: SubmittedJob, db_dir: Path, state: str) -> None:
        self.db.remove_watched_job(job.job_id, job.cluster)
        key = (db_dir, job.request.proposal, job.request.run)
        with self._jobs_lock:
            left = [j for j in self._recent_jobs.get(key, []) if j[1] != job.job_id]
            if left:
                self._recent_jobs[key] = left
            else:
                self._recent_jobs.pop(key, None)

    def _slurm_back(self) -> None:
        """Slurm answers again: every waiting run goes now, not at its back-off."""
        try:
            self.db.retry_waiting_now(ask_listener=False)
        except sqlite3.Error as e:
            log.warning("Could not make the waiting runs due: %s", e)

    def _slurm_error(self, error: Exception) -> None:
        if isinstance(error, SlurmUnavailable):
            self.slurm.unavailable(error, self._policy())
        else:
            log.warning("Cannot check Slurm jobs: %s", error)

    def _job_in_progress(self, db_dir: Path, ev: RunEvent, window: float) -> str | None:
        """The id of a Slurm job submitted for this very event less than ``window`` s ago and not yet
        seen to end, if there is one."""
        with self._jobs_lock:
            jobs = list(self._recent_jobs.get((db_dir, ev.proposal, ev.run), []))
        now = time.time()
        for events, job_id, submitted_at in jobs:
            if ev.event in (events or "").split(",") and now - submitted_at < window and self.watcher.watching(job_id):
                return job_id
        return None

    def check_jobs(self) -> None:
        """Mark runs whose Slurm job was killed, cancelled or failed (see ``JobWatcher``)."""
        try:
            self.watcher.poll()
        except Exception:
            log.exception("Checking Slurm jobs failed")

    # -- events

    def handle(self, ev: RunEvent, on_done: Callable[[], None] = lambda: None) -> None:
        """Submit, process or durably queue jobs for ``ev``; ``on_done`` runs once each database's run
        is submitted, processed or queued. Raises only if it could do none of these (the event must
        then stay uncommitted: the caller tries again later)."""
        with self._lock:
            dirs, policy = self._target_dirs(ev)
        remaining = [len(dirs) + 1]  # +1 released below, so on_done runs once, after the loop
        lock = threading.Lock()

        def one_done() -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                on_done()

        for db_dir in dirs:
            self._handle_db(ev, db_dir, policy, one_done)
        one_done()

    def _policy(self) -> ProcessingPolicy:
        return ProcessingPolicy.from_settings(self.db)

    def _target_dirs(self, ev: RunEvent) -> tuple[list[Path], ProcessingPolicy]:
        try:
            return self._read_listener_db(ev)
        except sqlite3.OperationalError as e:
            if "readonly" not in str(e).lower():
                raise
            log.error("listener.sqlite is read-only; reopening in %.0f s", READONLY_RETRY_WAIT_S)
            self.db.close()
            time.sleep(READONLY_RETRY_WAIT_S)
            self.db = ListenerDB(self.listener_dir)
            return self._read_listener_db(ev)

    def _read_listener_db(self, ev: RunEvent) -> tuple[list[Path], ProcessingPolicy]:
        if not self.db.setting("static_mode", True):
            official = official_db_dir(ev.proposal)
            if official and (official / "runs.sqlite").is_file():
                if self.db.add_proposal_db(ev.proposal, official, True):
                    log.info("Registered official database %s for p%d", official, ev.proposal)
        dirs = self.db.proposal_db_dirs(ev.proposal)
        if not dirs:
            log.debug("No database registered for p%d; ignoring r%d", ev.proposal, ev.run)
        return dirs, self._policy()

    def _prepare(self, db_dir: Path, proposal: int, run: int, added_at: float | None) -> tuple[dict, str]:
        """Add the run to the database; its settings and update topic."""
        for attempt in (1, 2):
            try:
                db = DamnitDB.from_dir(db_dir)
                try:
                    db.conn.execute("pragma user_version=0")  # fail fast on a read-only DB
                    db.ensure_run(proposal, run, added_at=added_at)
                    return dict(db.metameta), update_topic(db)
                finally:
                    db.close()
            except sqlite3.OperationalError as e:
                if attempt == 2 or "readonly" not in str(e).lower():
                    raise
                log.warning("%s is read-only; retrying in %.0f s", db_dir, READONLY_RETRY_WAIT_S)
                time.sleep(READONLY_RETRY_WAIT_S)
        raise AssertionError("unreachable")

    def _run_lock(self, db_dir: Path, proposal: int, run: int) -> threading.RLock:
        """Events for one run are handled one after the other (a repeat then sees the first one's job)."""
        return self._run_locks[hash((str(db_dir), proposal, run)) % RUN_LOCKS]

    def _handle_db(self, ev: RunEvent, db_dir: Path, policy: ProcessingPolicy, done: Callable[[], None]) -> None:
        with self._run_lock(db_dir, ev.proposal, ev.run):
            self._handle_run(ev, db_dir, policy, done)

    def _handle_run(self, ev: RunEvent, db_dir: Path, policy: ProcessingPolicy, done: Callable[[], None]) -> None:
        job_id = self._job_in_progress(db_dir, ev, policy.duplicate_window)
        if job_id is not None:
            log.info("%s for p%d r%d again while its Slurm job %s is queued or running: not submitted again",
                     ev.event, ev.proposal, ev.run, job_id)
            done()
            return
        waiting = self.db.waiting(db_dir, ev.proposal, ev.run)
        if waiting:  # it joins the entry already waiting (raw + proc → all), which keeps its place
            self._queue(db_dir, ev, waiting[0].reason, policy, topic=None, processing_id=waiting[0].processing_id)
            done()
            return
        try:
            settings, topic = self._prepare(db_dir, ev.proposal, ev.run, ev.added_at)
        except Exception as e:
            log.error("Could not add p%d r%d to %s: %s", ev.proposal, ev.run, db_dir, e)
            self._queue(db_dir, ev, f"the database could not be opened: {e}", policy, topic=None)
            done()
            return
        log.info("Added p%d r%d (%s data) to %s", ev.proposal, ev.run, ev.run_data, db_dir)
        req = RunRequest(ev.proposal, ev.run, ev.run_data, update_vars=True)
        why_not = self._start(req, ev.event, db_dir, settings, topic, policy, done)
        if why_not is not None:
            self._queue(db_dir, ev, why_not, policy, topic=topic, processing_id=req.processing_id)
            done()

    def _start(self, req: RunRequest, event: str | None, db_dir: Path, settings: dict, topic: str,
               policy: ProcessingPolicy, done: Callable[[], None]) -> str | None:
        """Submit ``req`` to Slurm, or process it here; None if so (``done`` is or will be called),
        else why neither is possible now (``done`` is not called)."""
        if not policy.use_slurm:
            self._local(req, event, db_dir, topic, policy, done)
            return None
        if self.slurm.may_try():
            try:
                with self._sbatch_slots:
                    job = SlurmSubmitter(db_dir, settings, python=self.job_python, producer=self.producer,
                                         db_topic=topic, sandbox_args=policy.sandbox).submit(req)
            except SlurmUnavailable as e:
                self.slurm.unavailable(e, policy)
                error = str(e)
            except SubmissionError as e:  # a refusal: Slurm itself answers
                self.slurm.answered()
                error = str(e)
                log.error("Slurm refused the job for p%d r%d in %s: %s", req.proposal, req.run, db_dir, e)
            else:
                self.slurm.answered()
                self._watch(job, db_dir, topic, event, time.time())
                done()
                return None
        else:
            error = f"Slurm unavailable ({self.slurm.outage.reason})"
        if policy.allow_local:
            append_run_log(db_dir, req.proposal, req.run, f"Slurm submission failed ({error}); processing locally")
            self._local(req, event, db_dir, topic, policy, done)
            return None
        return error

    def _local(self, req: RunRequest, event: str | None, db_dir: Path, topic: str, policy: ProcessingPolicy,
               done: Callable[[], None]) -> None:
        outcome = self.local.submit(db_dir, req, done, topic=topic, event=event, window=policy.duplicate_window)
        if outcome == DUPLICATE:
            log.info("%s for p%d r%d again while it is being processed here: not queued again", event,
                     req.proposal, req.run)

    # -- the durable queue

    def _queue(self, db_dir: Path, ev: RunEvent, reason: str, policy: ProcessingPolicy, *, topic: str | None,
               processing_id: str | None = None) -> WaitingEntry:
        """Keep the run in listener.sqlite until it can be submitted (raises if even that fails)."""
        entry, new = self.db.add_waiting(
            db_dir, ev.proposal, ev.run, ev.run_data, ev.event, added_at=ev.added_at,
            processing_id=processing_id or RunRequest(ev.proposal, ev.run).processing_id, reason=reason,
            next_attempt=time.time() + policy.backoff(1))
        if not new:
            log.info("p%d r%d is already waiting for Slurm in %s; %s merged into it", ev.proposal, ev.run, db_dir,
                     ev.event)
            return entry
        log.info("p%d r%d (%s data) for %s waits for Slurm: %s", ev.proposal, ev.run, ev.run_data, db_dir, reason)
        try:
            append_run_log(db_dir, ev.proposal, ev.run,
                           f"Could not submit a Slurm job for r{ev.run} (p{ev.proposal}, {ev.run_data} data): {reason}. "
                           "The listener keeps the run and submits it when Slurm takes it (`damnit listener waiting` "
                           "lists waiting runs; allow_local_processing 1 processes them in the listener instead).")
        except OSError as e:
            log.warning("Could not write to the run log in %s: %s", db_dir, e)
        if topic:
            self.producer.processing_state_set(topic, entry.processing_id, ev.proposal, ev.run, entry.run_data,
                                               "PENDING", slurm_cluster=None, slurm_job_id=None)
        mirror_waiting(entry)
        return entry

    def retry_waiting(self) -> int:
        """Try the waiting runs that are due (in queue order) while Slurm takes them; returns how many left
        the queue."""
        if self.db.take_retry_request():
            self.slurm.retry_now()
        due = self.db.due_waiting()
        if not due:
            return 0
        policy = self._policy()
        left = 0
        for entry in due:
            if entry.db_dir not in self.db.proposal_db_dirs(entry.proposal):
                log.warning("Dropping waiting p%d r%d: %s is no longer registered", entry.proposal, entry.run,
                            entry.db_dir)
                forget_waiting(self.db, entry, self.producer)
                left += 1
                continue
            if policy.use_slurm and not policy.allow_local and self.slurm.blocked():
                break  # Slurm is still away and it is not time to ask again
            why_not = self._retry(entry, policy)
            if why_not is None:
                left += 1
            elif self.slurm.outage.down:
                break  # the others would fail the same way
        return left

    def _retry(self, entry: WaitingEntry, policy: ProcessingPolicy) -> str | None:
        """One more try for a waiting run; None if it left the queue, else why not."""
        with self._run_lock(entry.db_dir, entry.proposal, entry.run):
            current = self.db.waiting(entry.db_dir, entry.proposal, entry.run)
            if not current:
                return None  # dropped meanwhile
            return self._retry_run(current[0], policy)

    def _retry_run(self, entry: WaitingEntry, policy: ProcessingPolicy) -> str | None:
        try:
            settings, topic = self._prepare(entry.db_dir, entry.proposal, entry.run, entry.added_at)
        except Exception as e:
            reason = f"the database could not be opened: {e}"
            self.db.waiting_failed(entry.id, reason, time.time() + policy.backoff(entry.attempts + 1))
            return reason
        req = RunRequest(entry.proposal, entry.run, entry.run_data, update_vars=True,
                         processing_id=entry.processing_id)
        event = ",".join(entry.events) or None

        def left_queue() -> None:  # submitted, or processed here: only then does it leave the queue
            with self._run_lock(entry.db_dir, entry.proposal, entry.run):
                current = self.db.waiting(entry.db_dir, entry.proposal, entry.run)
                if current and (current[0].events, current[0].run_data) != (entry.events, entry.run_data):
                    # an event merged into it meanwhile: that part is still to do
                    self.db.postpone_waiting(current[0].id, 0, "more to process: another event came meanwhile")
                    return
                mirror_waiting(entry, gone=True)
                self.db.remove_waiting(entry.id)
            log.info("p%d r%d for %s left the queue after waiting %.0f s", entry.proposal, entry.run, entry.db_dir,
                     time.time() - entry.queued_at)

        why_not = self._start(req, event, entry.db_dir, settings, topic, policy, left_queue)
        if why_not is not None:
            self.db.waiting_failed(entry.id, why_not, time.time() + policy.backoff(entry.attempts + 1))
            mirror_waiting(self.db.waiting(entry.db_dir, entry.proposal, entry.run)[0])
            return why_not
        # Being processed here (unless it is done already): not due again; a new listener retries it.
        self.db.postpone_waiting(entry.id, time.time() + LOCAL_WAIT_S, "being processed in the listener")
        return None

    def maintain(self) -> None:
        """Periodic work (one thread): retry waiting runs, check submitted jobs, log outage summaries."""
        self.retry_waiting()
        now = time.monotonic()
        if now >= self._next_job_check:
            self._next_job_check = now + JOB_CHECK_INTERVAL_S
            self.check_jobs()
            if self.slurm.outage.down and not self.db.waiting() and self.slurm.may_try():
                self._probe_slurm()
        self.slurm.outage.tick(lambda: f"{len(self.db.waiting())} runs waiting (`damnit listener waiting`)")

    def _probe_slurm(self) -> None:
        """Ask Slurm something cheap, to notice it is back when no run is waiting to try it with."""
        try:
            squeue_states(["1"])
        except SlurmUnavailable as e:
            self.slurm.unavailable(e, self._policy())
            return
        except SubmissionError:  # an answer all the same
            pass
        self.slurm.answered()


# ---------------------------------------------------------------- offset bookkeeping

class OffsetTracker:
    """Which offsets of each partition are finished; commits stop at the oldest unfinished one."""

    def __init__(self) -> None:
        self.pending: dict = {}      # tp -> {offset: done?}
        self.committed: dict = {}    # tp -> next offset committed

    def add(self, tp, offset: int) -> None:
        self.pending.setdefault(tp, {})[offset] = False

    def done(self, tp, offset: int) -> None:
        if offset in self.pending.get(tp, {}):
            self.pending[tp][offset] = True

    def to_commit(self) -> dict:
        out = {}
        for tp, offsets in self.pending.items():
            upto = None
            for off in sorted(offsets):
                if not offsets[off]:
                    break
                upto = off
            if upto is not None:
                for off in [o for o in offsets if o <= upto]:
                    del offsets[off]
                out[tp] = upto + 1
        return out

    @property
    def outstanding(self) -> int:
        return sum(1 for offs in self.pending.values() for d in offs.values() if not d)


# ---------------------------------------------------------------- the Kafka loop

class _FreshOffsetsOnRebalance(ConsumerRebalanceListener):
    """New partitions → a new offset tracker (events in flight from before are re-delivered)."""

    def __init__(self, listener: Listener):
        self.listener = listener

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        self.listener.offsets = OffsetTracker()
        self.listener.assignments += 1
        self.listener._paused = False  # (a new assignment starts unpaused)


class Listener:
    """Consumes run events and hands them to an ``EventHandler``, reconnecting with back-off."""

    def __init__(self, listener_dir: str | Path, *, broker: str | None = None, consumer_options: dict | None = None,
                 producer: UpdateProducer | None = None, job_python: str | None = None):
        self.listener_dir = Path(listener_dir).absolute()
        configured = broker or os.environ.get("AMORE_BROKER")
        if configured:  # a listener that cannot run says so before anything else (supervisord is waiting)
            self._check_brokers(configured)
        with ListenerDB(self.listener_dir) as ldb:
            configured = configured or ldb.setting("broker")
            self.since = float(ldb.settings.setdefault("listening_since", time.time()))
            max_local = ldb.setting("local_processing_concurrency")
            use_slurm = ldb.setting("use_slurm", True)
            registered = ldb.all_databases()
            n_threads = int(ldb.number("submit_concurrency", DEFAULTS["submit_concurrency"]))
            max_poll_s = ldb.number("kafka_max_poll_interval", DEFAULTS["kafka_max_poll_interval"])
        self.brokers = self._check_brokers(configured)
        self.producer = producer or UpdateProducer(self.brokers)
        self.handler = EventHandler(self.listener_dir, self.producer,
                                    LocalProcessing(self.producer, int(max_local) if max_local else None),
                                    job_python=job_python)
        self.group_id = CONSUMER_GROUP.format(str(self.listener_dir).replace("/", "_"))
        self.consumer_options = {"max_poll_interval_ms": int(max_poll_s * 1000), **(consumer_options or {})}
        if not use_slurm:  # every run will be processed here: have the context workers ready
            for db in registered:
                self.handler.local.prewarm(db.db_dir)
        self.connected = threading.Event()  # set while consuming (tests and status)
        self.events_handled = 0
        self.dead_lettered = 0
        self.assignments = 0  # partition assignments so far (a rebalance adds one)
        self.offsets = OffsetTracker()  # replaced on each partition assignment
        self.broker = Outage(f"Kafka broker {','.join(self.brokers)}", log)
        self._events = ThreadPoolExecutor(max(1, n_threads), thread_name_prefix="damnit-event")
        self._maintenance = ThreadPoolExecutor(1, thread_name_prefix="damnit-maintenance")
        self._retry_events: list[tuple[float, RunEvent, Callable[[], None], int]] = []
        self._retry_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check_broker: asyncio.Event | None = None
        self._trouble = ""  # what aiokafka last said about reaching the broker
        self._paused = False

    @staticmethod
    def _check_brokers(configured: str | None) -> list[str]:
        brokers = brokers_from_env(configured)
        if brokers is None:
            raise RuntimeError("The listener needs a Kafka broker (AMORE_BROKER is 'none'); "
                               "use `damnit listen --test` to feed events by hand")
        return brokers

    # -- running

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._check_broker = asyncio.Event()
        client_log = KafkaClientLog(self.broker, self._broker_trouble)
        client_log.install()
        tasks = [asyncio.ensure_future(self._maintain(stop)),
                 asyncio.ensure_future(self._watch_broker(stop, client_log))]
        try:
            await self._consume_forever(stop)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            client_log.uninstall()

    async def _consume_forever(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.brokers, group_id=self.group_id,
                client_id=CONSUMER_GROUP.format(f"{os.uname().nodename}-{os.getpid()}"),
                enable_auto_commit=False, auto_offset_reset="earliest", metadata_max_age_ms=10_000,
                **self.consumer_options)
            consumer.subscribe(EVENT_TOPICS, listener=_FreshOffsetsOnRebalance(self))
            try:
                # Stopping must not wait for a slow group join or fetch: race the work against `stop`.
                work = asyncio.ensure_future(self._start_and_consume(consumer, stop))
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not work.done():
                    work.cancel()
                    try:
                        await work
                    except asyncio.CancelledError:
                        pass
                else:
                    work.result()
                delay = 0.5
            except (KafkaError, OSError) as e:
                self.broker.failed(f"{type(e).__name__}: {e}", f"reconnecting (every {MAX_BACKOFF_S:.0f} s at most)")
            except Exception:  # a bug must not end the listener: start afresh
                log.exception("The Kafka consumer failed; starting a new one in %.1f s", delay)
            finally:
                self.connected.clear()
                try:
                    await consumer.stop()
                except Exception as e:
                    log.debug("Error closing consumer: %s", e)
            if not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def _start_and_consume(self, consumer, stop: asyncio.Event) -> None:
        await consumer.start()
        self.broker.recovered()
        log.info("Listening for run events on %s (group %s)", ",".join(self.brokers), self.group_id)
        await self._consume(consumer, stop)

    async def _consume(self, consumer, stop: asyncio.Event) -> None:
        self.offsets = OffsetTracker()
        failed_commits = 0
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=100)
            if consumer.assignment():
                self.connected.set()
            for tp, records in batches.items():
                for rec in records:
                    offsets = self.offsets
                    offsets.add(tp, rec.offset)
                    await self._dispatch(rec, self._done_callback(offsets, tp, rec.offset))
            self._pause_or_resume(consumer)
            offsets = self.offsets
            commit = offsets.to_commit()
            if commit:
                try:
                    await consumer.commit(commit)
                    failed_commits = 0
                except KafkaError as e:
                    failed_commits += 1
                    if not self.broker.down:
                        log.warning("Could not commit offsets (%s); the events will be re-delivered if lost", e)
                    for tp, off in commit.items():  # keep them for the next attempt
                        offsets.pending.setdefault(tp, {})[off - 1] = True
                    if failed_commits >= 5:
                        raise
                    await asyncio.sleep(min(0.2 * 2 ** failed_commits, 5))

    def _done_callback(self, offsets: OffsetTracker, tp, offset: int) -> Callable[[], None]:
        """Marks the event finished from any thread. It keeps the tracker of its own generation: after
        a rebalance (or a broker that restarted empty, reusing offsets) a late finish cannot mark a new
        event."""
        loop = self._loop

        def done() -> None:
            try:
                loop.call_soon_threadsafe(offsets.done, tp, offset)
            except RuntimeError:  # the loop is closed: the listener stopped, the event is re-delivered
                pass

        return done

    def _pause_or_resume(self, consumer) -> None:
        """Stop reading new events while too many are in flight (memory stays bounded), go on when
        half are through. The consumer keeps polling meanwhile, so it stays in its group."""
        outstanding = self.offsets.outstanding
        if not self._paused and outstanding >= MAX_IN_FLIGHT:
            partitions = consumer.assignment()
            if partitions:
                consumer.pause(*partitions)
                self._paused = True
                log.info("%d events in progress: reading new ones resumes when half are through", outstanding)
        elif self._paused and outstanding < MAX_IN_FLIGHT // 2:
            consumer.resume(*consumer.paused())
            self._paused = False

    async def _dispatch(self, rec, done: Callable[[], None]) -> None:
        where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
        try:
            ev = parse_event(rec.value, rec.timestamp)
        except Exception as e:  # parse_event raises only EventError; anything else is a bug, same effect
            await self._dead_letter(rec, where, str(e))
            done()
            return
        if ev is None:
            log.debug("Ignoring a non-run event at %s", where)
            done()
            return
        if ev.added_at < self.since:
            log.debug("Ignoring %s from before this listener started (%s)", ev.event, where)
            done()
            return
        log.info("%s for p%d r%d (%s)", ev.event, ev.proposal, ev.run, where)
        self.events_handled += 1
        self._events.submit(self._handle, ev, done, 0)

    async def _dead_letter(self, rec, where: str, error: str) -> None:
        """Log, count and keep a message that can't be handled; it is then committed past."""
        self.dead_lettered += 1
        value = rec.value if isinstance(rec.value, (bytes, type(None))) else str(rec.value).encode()
        try:
            new = await asyncio.get_running_loop().run_in_executor(
                None, self.handler.db.add_dead_letter, rec.topic, rec.partition, rec.offset,
                rec.timestamp, value, error)
        except Exception as e:
            log.error("Skipping the message at %s: %s; it could not be kept in the dead-letter record (%s): %r",
                      where, error, e, (value or b"")[:500])
            return
        if new:
            log.warning("Dead-lettered the message at %s: %s (`damnit listener dead-letters` lists it)", where, error)
        else:
            log.debug("The message at %s is already in the dead-letter record", where)

    def _handle(self, ev: RunEvent, done: Callable[[], None], attempt: int) -> None:
        """Handle one event in a worker thread; if that fails, try again later (not committed meanwhile)."""
        try:
            self.handler.handle(ev, done)
        except Exception as e:
            delay = min(5.0 * 2 ** attempt, EVENT_RETRY_MAX_S)
            log.error("Could not handle %s for p%d r%d (%s: %s); trying again in %.0f s", ev.event, ev.proposal,
                      ev.run, type(e).__name__, e, delay, exc_info=attempt == 0)
            with self._retry_lock:
                self._retry_events.append((time.monotonic() + delay, ev, done, attempt + 1))

    async def _maintain(self, stop: asyncio.Event) -> None:
        """Retry waiting runs and failed events, check jobs, summarise outages: whether or not the
        broker is there."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with self._retry_lock:
                now = time.monotonic()
                due = [r for r in self._retry_events if r[0] <= now]
                self._retry_events = [r for r in self._retry_events if r[0] > now]
            for _, ev, done, attempt in due:
                self._events.submit(self._handle, ev, done, attempt)
            try:
                await loop.run_in_executor(self._maintenance, self.handler.maintain)
            except Exception:
                log.exception("Listener maintenance failed")
            self.broker.tick()
            try:
                await asyncio.wait_for(stop.wait(), MAINTENANCE_INTERVAL_S)
            except asyncio.TimeoutError:
                pass

    # -- the broker's health

    def _broker_trouble(self, message: str) -> None:
        """aiokafka says it can't reach the broker (any thread): check it."""
        if not self._trouble:  # the first complaint since the last check says best what happened
            self._trouble = message
        loop, event = self._loop, self._check_broker
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass

    async def _watch_broker(self, stop: asyncio.Event, client_log: KafkaClientLog) -> None:
        """Check the broker when aiokafka complains, and every few seconds while it is away."""
        interval = 2.0
        while not stop.is_set():
            if self.broker.down:
                try:
                    await asyncio.wait_for(self._check_broker.wait(), interval)
                except asyncio.TimeoutError:
                    pass
                interval = min(interval * 1.5, 5.0)
            else:
                await self._check_broker.wait()
                interval = 2.0
            self._check_broker.clear()
            problem = await self._probe_broker()
            trouble, self._trouble = self._trouble, ""
            if problem is None:
                self.broker.recovered()
                client_log.resolve(down=False)
            else:
                self.broker.failed(trouble or problem, "events wait in the broker; the listener reconnects")
                client_log.resolve(down=True)
            await asyncio.sleep(1.0)  # at most one check a second, whatever aiokafka says

    async def _probe_broker(self) -> str | None:
        """None if a broker answers a metadata request, else why not."""
        client = AIOKafkaClient(bootstrap_servers=self.brokers, request_timeout_ms=3000,
                                client_id="damnit-listener-check")
        try:
            await asyncio.wait_for(client.bootstrap(), 5)
            return None
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        finally:
            try:
                await client.close()
            except Exception:
                pass

    # -- stopping

    def close(self) -> None:
        self._events.shutdown(wait=True, cancel_futures=True)
        self._maintenance.shutdown(wait=True, cancel_futures=True)
        self.handler.local.close()
        self.handler.close()
        self.producer.close()

    def start_background(self) -> BackgroundListener:
        """Run in a thread of its own (tests, benchmarks); ``.stop()`` ends it."""
        return BackgroundListener(self)


class BackgroundListener:
    def __init__(self, listener: Listener):
        self.listener = listener
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(listener.run(self._stop),),
                                       name="damnit-listener", daemon=True)
        self.thread.start()

    def wait_connected(self, timeout: float = 30) -> bool:
        return self.listener.connected.wait(timeout)

    def stop(self, timeout: float = 15) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)
        self.listener.close()


def listen(listener_dir: str | Path = ".", *, broker: str | None = None) -> int:
    """``damnit listen``: run until SIGINT/SIGTERM, logging to ``damnit.log`` in the listener dir."""
    listener_dir = Path(listener_dir).absolute()
    listener_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(listener_dir / "damnit.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    log.info("Listener in %s on %s as uid %d, PID %d", listener_dir, os.uname().nodename, os.getuid(), os.getpid())
    try:
        listener = Listener(listener_dir, broker=broker)
    except (RuntimeError, ValueError) as e:
        log.error("%s", e)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await listener.run(stop)

    try:
        asyncio.run(main())
    finally:
        log.info("Listener stopping")
        listener.close()
    return 0


def listen_test(listener_dir: str | Path = ".") -> int:
    """``damnit listen --test``: type ``PROPOSAL RUN [raw|proc|all]`` to fake run events."""
    producer = UpdateProducer.from_env()
    handler = EventHandler(Path(listener_dir), producer)
    print("Enter '<proposal> <run> [raw|proc|all]' per line; Ctrl+D to stop")
    try:
        while True:
            try:
                line = input("> ").strip()
            except EOFError:
                break
            if not line:
                continue
            parts = line.split()
            try:
                proposal, run = int(parts[0]), int(parts[1])
                run_data = parts[2] if len(parts) > 2 else "raw"
                if run_data not in ("raw", "proc", "all") or proposal <= 0 or run <= 0:
                    raise ValueError(run_data)
            except (IndexError, ValueError):
                print("Expected: <proposal> <run> [raw|proc|all]")
                continue
            done = threading.Event()
            handler.handle(RunEvent("test", proposal, run, run_data, time.time()), done.set)
            done.wait()
    finally:
        handler.close()
        producer.close()
    return 0
