"""The run-event listener (``damnit listen``, docs/spec.md "Listener"): Kafka run events → processing jobs.

Delivery is at-least-once. Offsets are committed manually, per partition, only up to the oldest event
whose jobs are not yet submitted (Slurm) or finished (local processing); a crash or broker loss
therefore re-delivers rather than drops events. Re-delivered or duplicate events are harmless: Slurm
jobs of one run are serialised by name (``--dependency=singleton``) and local requests for a run that
is already queued are merged.

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
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from backend.base.messages import UpdateProducer, brokers_from_env, update_topic
from backend.base.paths import amore_dir, append_run_log
from backend.processing.requests import RunRequest
from backend.processing.run_processor import RunProcessor
from backend.services.listener_db import ListenerDB
from backend.services.slurm import (
    JobWatcher,
    SlurmSubmitter,
    SubmissionError,
)
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
READONLY_RETRY_WAIT_S = 2.0
JOB_CHECK_INTERVAL_S = 15.0  # how often submitted jobs are checked for having been killed/failed
MAX_BACKOFF_S = 30.0


class EventError(ValueError):
    """A message on an event topic that is not a usable run event."""


@dataclass(frozen=True)
class RunEvent:
    event: str
    proposal: int
    run: int
    run_data: str
    added_at: float  # broker timestamp, seconds


def parse_event(raw: bytes | str, timestamp_ms: int | None = None) -> RunEvent | None:
    """A run event from a Kafka message; None for other events; EventError if malformed."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise EventError(f"not JSON ({e})") from None
    if not isinstance(msg, dict):
        raise EventError(f"expected a JSON object, got {type(msg).__name__}")
    event = msg.get("event")
    if event not in EVENT_RUN_DATA:
        return None
    try:
        proposal, run = int(msg["proposal"]), int(msg["run"])
    except KeyError as e:
        raise EventError(f"{event} event without {e.args[0]!r}") from None
    except (TypeError, ValueError):
        raise EventError(f"{event} event with a non-integer proposal/run: "
                         f"{msg.get('proposal')!r}/{msg.get('run')!r}") from None
    if proposal <= 0 or run <= 0:
        raise EventError(f"{event} event with proposal {proposal}, run {run}")
    added_at = timestamp_ms / 1000 if timestamp_ms else time.time()
    return RunEvent(event, proposal, run, EVENT_RUN_DATA[event], added_at)


def official_db_dir(proposal: int) -> Path | None:
    """The proposal's official DAMNIT folder, or None when the proposal has no data folder."""
    try:
        return amore_dir(proposal)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- local processing

@dataclass
class _Pending:
    """One queued run. Its first request's id goes to the processor (RUNNING, finished); the ids of
    requests merged into it are finished here once the merged work ends, as each was announced PENDING."""

    topic: str
    run_data: str
    processing_id: str
    merged_ids: list[str] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)


def _merge_run_data(a: str, b: str) -> str:
    return a if a == b else "all"


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
        self.cond = threading.Condition()
        self.processor = None
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name=f"local-{db_dir.name}", daemon=True)
        self.thread.start()

    def add(self, req: RunRequest, topic: str, on_done: Callable[[], None]) -> None:
        with self.cond:
            if self.stopping:  # too late: the event stays uncommitted and comes back to the next listener
                self._announce_finished(topic, [req.processing_id])
                return
            key = (req.proposal, req.run)
            if key in self.pending:
                p = self.pending[key]
                p.run_data = _merge_run_data(p.run_data, req.run_data)
                p.merged_ids.append(req.processing_id)
                p.callbacks.append(on_done)
            else:
                self.pending[key] = _Pending(topic, req.run_data, req.processing_id, callbacks=[on_done])
            self.cond.notify()

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
                self._process(batch)
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
                if p is not None:  # the processor has finished p.processing_id itself
                    self._announce_finished(p.topic, p.merged_ids)
                self._finish(p)
        except Exception as e:
            log.error("Local processing in %s failed: %s", self.db_dir, e, exc_info=True)
            for (proposal, run) in batch:
                try:
                    append_run_log(self.db_dir, proposal, run, f"Local processing failed: {e}")
                except OSError:
                    pass
            self.processor = None  # start afresh next time (e.g. after a DB or context fix)
        finally:
            # No outcome for these: the processor may or may not have finished their first id (it does
            # on a context error). A repeated processing_finished is harmless; receivers drop the id.
            for p in batch.values():
                self._announce_finished(p.topic, [p.processing_id, *p.merged_ids])
                self._finish(p)

    def _announce_finished(self, topic: str, processing_ids: list[str]) -> None:
        for processing_id in processing_ids:
            try:
                self.owner.producer.processing_finished(topic, processing_id)
            except Exception as e:  # messages are notifications; never fatal to processing
                log.warning("Could not announce the end of processing %s: %s", processing_id, e)

    @staticmethod
    def _finish(p: _Pending | None) -> None:
        for cb in p.callbacks if p else ():
            try:
                cb()
            except Exception:
                log.exception("Completion callback failed")


class LocalProcessing:
    """Processes runs inside the listener when Slurm is unavailable, a bounded number of DBs at once."""

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

    def submit(self, db_dir: Path, req: RunRequest, on_done: Callable[[], None], *, topic: str) -> None:
        """Queue ``req``, announcing it PENDING on ``topic`` (the DB's update topic); ``on_done`` runs
        when it has been processed (or failed), and its processing_id is then announced finished."""
        self.producer.processing_state_set(topic, req.processing_id, req.proposal, req.run, req.run_data,
                                           "PENDING", slurm_cluster=None, slurm_job_id=None)
        with self._lock:
            queue = self._queues.get(db_dir)
            if queue is None:
                queue = self._queues[db_dir] = _DatabaseQueue(db_dir, self)
        queue.add(req, topic, on_done)

    def close(self, timeout: float = 10) -> None:
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
        for q in queues:
            q.stop(timeout)


# ---------------------------------------------------------------- handling one event

@dataclass(frozen=True)
class ProcessingPolicy:
    """How the listener runs jobs, from its settings (re-read for every event)."""
    use_slurm: bool = True     # submit Slurm jobs; off: always process in the listener
    allow_local: bool = False  # process in the listener when a submission fails
    sandbox: str = ""          # command prefix for the context-file runner in jobs


class EventHandler:
    """Turns one run event into jobs for every database registered for its proposal."""

    def __init__(self, listener_dir: Path, producer: UpdateProducer, local: LocalProcessing | None = None,
                 job_python: str | None = None):
        self.listener_dir = Path(listener_dir).absolute()
        self.job_python = job_python or sys.executable
        self.watcher = JobWatcher(producer)
        self.db = ListenerDB(self.listener_dir)
        self.producer = producer
        self.local = local or LocalProcessing(producer)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def check_jobs(self) -> None:
        """Mark runs whose Slurm job was killed or failed (see ``JobWatcher``)."""
        try:
            self.watcher.poll()
        except Exception:
            log.exception("Checking Slurm jobs failed")

    def handle(self, ev: RunEvent, on_done: Callable[[], None] = lambda: None) -> None:
        """Submit (or queue) jobs for ``ev``; ``on_done`` runs once they are all submitted/finished."""
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
            try:
                self._handle_db(ev, db_dir, policy, one_done)
            except Exception as e:
                log.error("Processing p%d r%d for %s failed: %s", ev.proposal, ev.run, db_dir, e, exc_info=True)
                one_done()
        one_done()

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
        return dirs, ProcessingPolicy(use_slurm=bool(self.db.setting("use_slurm", True)),
                                      allow_local=bool(self.db.setting("allow_local_processing", False)),
                                      sandbox=self.db.setting("sandbox_args") or "")

    def _handle_db(self, ev: RunEvent, db_dir: Path, policy: ProcessingPolicy,
                   done: Callable[[], None]) -> None:
        for attempt in (1, 2):
            try:
                db = DamnitDB.from_dir(db_dir)
                try:
                    db.conn.execute("pragma user_version=0")  # fail fast on a read-only DB
                    db.ensure_run(ev.proposal, ev.run, added_at=ev.added_at)
                    settings = dict(db.metameta)
                    topic = update_topic(db)
                finally:
                    db.close()
                break
            except sqlite3.OperationalError as e:
                if attempt == 2 or "readonly" not in str(e).lower():
                    raise
                log.warning("%s is read-only; retrying in %.0f s", db_dir, READONLY_RETRY_WAIT_S)
                time.sleep(READONLY_RETRY_WAIT_S)
        log.info("Added p%d r%d (%s data) to %s", ev.proposal, ev.run, ev.run_data, db_dir)

        req = RunRequest(ev.proposal, ev.run, ev.run_data, update_vars=True)
        if not policy.use_slurm:
            self.local.submit(db_dir, req, done, topic=topic)
            return
        try:
            job = SlurmSubmitter(db_dir, settings, python=self.job_python, producer=self.producer,
                                 db_topic=topic, sandbox_args=policy.sandbox).submit(req)
            self.watcher.watch(job, db_dir, topic)
        except SubmissionError as e:
            if policy.allow_local:
                log.warning("Slurm job submission failed (%s); processing p%d r%d locally", e, ev.proposal,
                            ev.run)
                append_run_log(db_dir, ev.proposal, ev.run, f"Slurm submission failed ({e}); processing locally")
                self.local.submit(db_dir, req, done, topic=topic)
                return
            msg = (f"Could not submit a Slurm job for r{ev.run} (p{ev.proposal}, {ev.run_data} data): {e}. "
                   "Local processing is off (damnit listener config allow_local_processing 1).")
            log.error("%s [%s]", msg, db_dir)
            append_run_log(db_dir, ev.proposal, ev.run, msg)
        done()


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


class Listener:
    """Consumes run events and hands them to an ``EventHandler``, reconnecting with back-off."""

    def __init__(self, listener_dir: str | Path, *, broker: str | None = None, consumer_options: dict | None = None,
                 producer: UpdateProducer | None = None, job_python: str | None = None):
        self.listener_dir = Path(listener_dir).absolute()
        with ListenerDB(self.listener_dir) as ldb:
            configured = broker or os.environ.get("AMORE_BROKER") or ldb.setting("broker")
            self.since = float(ldb.settings.setdefault("listening_since", time.time()))
            max_local = ldb.setting("local_processing_concurrency")
            use_slurm = ldb.setting("use_slurm", True)
            registered = ldb.all_databases()
        self.brokers = brokers_from_env(configured)
        if self.brokers is None:
            raise RuntimeError("The listener needs a Kafka broker (AMORE_BROKER is 'none'); "
                               "use `damnit listen --test` to feed events by hand")
        self.producer = producer or UpdateProducer(self.brokers)
        self.handler = EventHandler(self.listener_dir, self.producer,
                                    LocalProcessing(self.producer, int(max_local) if max_local else None),
                                    job_python=job_python)
        self.group_id = CONSUMER_GROUP.format(str(self.listener_dir).replace("/", "_"))
        self.consumer_options = consumer_options or {}
        if not use_slurm:  # every run will be processed here: have the context workers ready
            for db in registered:
                self.handler.local.prewarm(db.db_dir)
        self.connected = threading.Event()  # set while consuming (tests and status)
        self.events_handled = 0
        self.offsets = OffsetTracker()  # replaced on each partition assignment

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
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
                log.warning("Kafka broker %s unavailable (%s); retrying in %.1f s", ",".join(self.brokers),
                            e, delay)
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
        log.info("Listening for run events on %s (group %s)", ",".join(self.brokers), self.group_id)
        await self._consume(consumer, stop)

    async def _consume(self, consumer, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.offsets = OffsetTracker()
        failed_commits = 0
        job_check: asyncio.Future | None = None
        next_job_check = loop.time() + JOB_CHECK_INTERVAL_S
        while not stop.is_set():
            if loop.time() >= next_job_check and (job_check is None or job_check.done()):
                job_check = loop.run_in_executor(None, self.handler.check_jobs)
                next_job_check = loop.time() + JOB_CHECK_INTERVAL_S
            batches = await consumer.getmany(timeout_ms=200, max_records=50)
            if consumer.assignment():
                self.connected.set()
            for tp, records in batches.items():
                for rec in records:
                    # The callback keeps the tracker of its own generation: after a rebalance (or a
                    # broker that restarted empty, reusing offsets) a late finish cannot mark a new event.
                    offsets = self.offsets
                    offsets.add(tp, rec.offset)
                    await self._dispatch(rec, lambda tp=tp, off=rec.offset, t=offsets: loop.call_soon_threadsafe(
                        t.done, tp, off))
            offsets = self.offsets
            commit = offsets.to_commit()
            if commit:
                try:
                    await consumer.commit(commit)
                    failed_commits = 0
                except KafkaError as e:
                    failed_commits += 1
                    log.warning("Could not commit offsets (%s); the events will be re-delivered if lost", e)
                    for tp, off in commit.items():  # keep them for the next attempt
                        offsets.pending.setdefault(tp, {})[off - 1] = True
                    if failed_commits >= 5:
                        raise
                    await asyncio.sleep(min(0.2 * 2 ** failed_commits, 5))

    async def _dispatch(self, rec, done: Callable[[], None]) -> None:
        where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
        try:
            ev = parse_event(rec.value, rec.timestamp)
        except EventError as e:
            log.warning("Skipping malformed message at %s: %s", where, e)
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
        await asyncio.get_running_loop().run_in_executor(None, self.handler.handle, ev, done)

    def close(self) -> None:
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
                if run_data not in ("raw", "proc", "all"):
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
