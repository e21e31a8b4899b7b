"""Kafka messages DAMNIT exchanges (docs/spec.md "Kafka: topics and messages"): their exact shapes, a producer and a subscriber.

Messages are notifications only: the database is the source of truth, so a broker that is down or
unset never makes processing fail. With ``AMORE_BROKER=none`` everything here is a silent no-op.

The sync API (``UpdateProducer``, ``UpdateSubscriber``) runs aiokafka on one private event-loop
thread, so extraction code, the listener's worker threads and the dashboard can share it without
caring about asyncio.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_BROKER = "exflwgs06.desy.de:9091"
UPDATE_TOPIC = "test.damnit.db-{}"
FILE_SUBMISSION_TOPIC = "test.damnit.file_submissions"

# Message kinds (the `msg_kind` field of the envelope).
RUN_VALUES_UPDATED = "run_values_updated"
VARIABLE_SET = "variable_set"
PROCESSING_STATE_SET = "processing_state_set"
PROCESSING_FINISHED = "processing_finished"
FILE_SUBMISSION = "file_submission"
KNOWN_KINDS = frozenset({RUN_VALUES_UPDATED, VARIABLE_SET, PROCESSING_STATE_SET, PROCESSING_FINISHED,
                         FILE_SUBMISSION})

# How long a producer may take to reach the broker before it gives up and runs offline.
CONNECT_TIMEOUT_S = 5.0
RECONNECT_INTERVAL_S = 10.0  # how often a producer whose broker was down tries again
RETRY_MAX_S = 10.0  # longest wait between a subscriber's attempts to reach a broker that is away

# aiokafka logs every failed connection attempt (an error each time); a process that reports outages
# itself (``UpdateSubscriber``, ``UpdateProducer``) hides these with ``quiet_client_connection_logs()``.
_CLIENT_CONNECTION_NOISE = ("Unable connect to", "Unable to request metadata", "Unable to update metadata",
                            "Failed fetch messages from", "Failed fetch offsets from",
                            "Got error produce response")


class MessageError(ValueError):
    """A message that is not valid JSON or not a DAMNIT envelope."""


# ---------------------------------------------------------------- broker address & topics

def brokers_from_env(broker: str | Iterable[str] | None = None) -> list[str] | None:
    """Broker addresses from the argument, else ``AMORE_BROKER``, else the facility default.

    Returns None for offline mode (``none``). Accepts ``host:port`` lists separated by commas.
    """
    if broker is None:
        broker = os.environ.get("AMORE_BROKER", "").strip() or DEFAULT_BROKER
    if isinstance(broker, str):
        parts = [b.strip() for b in broker.split(",") if b.strip()]
    else:
        parts = [str(b).strip() for b in broker]
    if not parts or [p.lower() for p in parts] == ["none"]:
        return None
    for p in parts:
        host, sep, port = p.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"Invalid Kafka broker address {p!r}: expected host:port (from AMORE_BROKER "
                             "or the broker setting), or 'none' to run offline")
    return parts


def update_topic(db: Any) -> str:
    """The per-database update topic, from a db_id string, a topic name, or a DamnitDB-like object."""
    if isinstance(db, str):
        return db if db.startswith("test.damnit.db-") else UPDATE_TOPIC.format(db)
    for attr in ("kafka_topic", "update_topic"):
        topic = getattr(db, attr, None)
        if isinstance(topic, str):
            return topic
    db_id = getattr(db, "db_id", None)
    if db_id is None and hasattr(db, "metameta"):
        db_id = db.metameta.get("db_id")
    if not db_id:
        raise ValueError(f"Cannot find a db_id for {db!r}")
    return UPDATE_TOPIC.format(db_id)


# ---------------------------------------------------------------- message shapes

def msg_dict(kind: str, data: dict) -> dict:
    return {"msg_kind": kind, "data": data}


def run_values_updated_msg(proposal: int, run: int, names: Iterable[str]) -> dict:
    return msg_dict(RUN_VALUES_UPDATED, {"proposal": int(proposal), "run": int(run),
                                          "values": {name: None for name in names}})


def variable_set_msg(name: str, title: str | None = None, description: str | None = None,
                     tags: Iterable[str] | None = None, type: str | None = None,
                     attributes: Any = None, **extra: Any) -> dict:
    """``variable_set``; ``tags`` is left out when None (the GUI's form), as in the original."""
    data = {"name": name, "title": title, "description": description}
    if tags is not None:
        data["tags"] = list(tags)
    data["attributes"] = attributes
    data["type"] = type
    data.update(extra)
    return msg_dict(VARIABLE_SET, data)


def processing_state_set_msg(processing_id: str, proposal: int, run: int, data: str, status: str,
                             slurm_cluster: str | None = None, slurm_job_id: str | None = None,
                             hostname: str | None = None, username: str | None = None) -> dict:
    if status not in ("PENDING", "RUNNING"):
        raise ValueError(f"processing status must be PENDING or RUNNING, not {status!r}")
    return msg_dict(PROCESSING_STATE_SET, {
        "processing_id": str(processing_id), "proposal": int(proposal), "run": int(run),
        "data": data, "status": status,
        "hostname": hostname or socket.gethostname(), "username": username or _username(),
        "slurm_cluster": slurm_cluster, "slurm_job_id": None if slurm_job_id is None else str(slurm_job_id),
    })


def processing_finished_msg(processing_id: str) -> dict:
    return msg_dict(PROCESSING_FINISHED, {"processing_id": str(processing_id)})


def file_submission_msg(damnit_dir: str | Path, new_file: str | Path, proposal: int, run: int) -> dict:
    return msg_dict(FILE_SUBMISSION, {
        "damnit_dir": str(Path(damnit_dir).absolute()), "new_file": str(new_file),
        "proposal": int(proposal), "run": int(run),
        "computed_by": {"hostname": socket.gethostname(), "username": _username()},
    })


def parse_message(raw: bytes | str) -> tuple[str, dict]:
    """Decode an envelope into ``(kind, data)``; raises MessageError saying what is wrong."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise MessageError(f"not JSON: {e}") from None
    if not isinstance(msg, dict) or "msg_kind" not in msg or not isinstance(msg.get("data"), dict):
        raise MessageError("not a DAMNIT message (expected {'msg_kind': ..., 'data': {...}})")
    return msg["msg_kind"], msg["data"]


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__  # aiokafka's errors name their class already


class _ConnectionNoise(logging.Filter):
    """Drops aiokafka's per-attempt connection errors unless its logger is at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno > logging.ERROR or not str(record.msg).startswith(_CLIENT_CONNECTION_NOISE)
                or logging.getLogger(record.name).isEnabledFor(logging.DEBUG))


def quiet_client_connection_logs() -> None:
    """Hide aiokafka's error for every failed attempt to reach a broker, in this process (idempotent).

    For a process whose producer and subscribers report outages themselves: once when the broker is
    away, once when it answers again; without this, a broker that is down fills the log every few
    seconds with the same news."""
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.consumer.fetcher", "aiokafka.producer.sender"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ConnectionNoise) for f in logger.filters):
            logger.addFilter(_ConnectionNoise())


# ---------------------------------------------------------------- the shared event loop thread

class _LoopThread:
    """One daemon thread running an asyncio loop, shared by all producers/subscribers in a process."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="damnit-kafka", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def submit(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


# ---------------------------------------------------------------- producer

class UpdateProducer:
    """Sends DAMNIT messages. Offline (all methods no-ops) when the broker is ``none`` or unreachable.

    Sends are fire-and-forget (the broker is local or on the facility network and the DB is the
    truth); ``flush()``/``close()`` wait for outstanding ones.
    """

    def __init__(self, brokers: list[str] | None, *, connect_timeout: float = CONNECT_TIMEOUT_S):
        self.brokers = brokers
        self.connect_timeout = connect_timeout
        self._producer = None
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        self._reconnecting: Future | None = None
        self._last_attempt = 0.0
        if brokers is None:
            return
        self._loop = _LoopThread.get()
        self._last_attempt = time.monotonic()
        try:
            self._producer = self._loop.submit(self._start(brokers, connect_timeout)).result(
                connect_timeout + 5)
        except Exception as e:
            log.warning("Kafka broker %s unreachable (%s): update messages are dropped until it answers "
                        "(retrying quietly)", ",".join(brokers), _describe(e))
            self._producer = None

    def _maybe_reconnect(self) -> None:
        """A long-lived producer (the listener) that started while the broker was down retries, in the
        background, at most every RECONNECT_INTERVAL_S; messages until then are dropped."""
        if self.brokers is None or self._closed:
            return
        if self._reconnecting is not None and not self._reconnecting.done():
            return
        if time.monotonic() - self._last_attempt < RECONNECT_INTERVAL_S:
            return
        self._last_attempt = time.monotonic()
        fut = self._loop.submit(self._start(self.brokers, self.connect_timeout))

        def connected(f: Future) -> None:
            if f.cancelled() or f.exception() is not None:
                return
            if self._closed:
                self._loop.submit(f.result().stop())
                return
            self._producer = f.result()
            log.info("Connected to Kafka broker %s", ",".join(self.brokers))

        fut.add_done_callback(connected)
        self._reconnecting = fut

    _closed = False

    @classmethod
    def from_env(cls, broker: str | None = None, **kwargs) -> UpdateProducer:
        """Producer for ``broker`` or ``AMORE_BROKER`` (``none`` → offline)."""
        return cls(brokers_from_env(broker), **kwargs)

    @classmethod
    def offline(cls) -> UpdateProducer:
        return cls(None)

    @property
    def online(self) -> bool:
        return self._producer is not None

    @staticmethod
    async def _start(brokers, timeout):
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=brokers,
            value_serializer=lambda d: json.dumps(d).encode(),
            request_timeout_ms=int(timeout * 1000), linger_ms=0,
        )
        try:
            await asyncio.wait_for(producer.start(), timeout)
        except BaseException:
            await producer.stop()
            raise
        return producer

    def send(self, topic: str, message: dict) -> None:
        if self._producer is None:
            self._maybe_reconnect()
            if self._producer is None:
                log.debug("Kafka broker unavailable; dropping a %s message", message.get("msg_kind"))
                return
        # One key per topic puts all of a database's messages in one partition, so they stay in order
        # (PENDING before RUNNING before finished).
        fut = self._loop.submit(self._producer.send_and_wait(topic, message, key=topic.encode()))
        with self._pending_lock:
            self._pending.add(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: Future) -> None:
        with self._pending_lock:
            self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("Could not send a Kafka message: %s", fut.exception())

    def flush(self, timeout: float = 10.0) -> None:
        with self._pending_lock:
            pending = list(self._pending)
        for fut in pending:
            try:
                fut.result(timeout)
            except Exception:
                pass  # already logged by _sent

    def close(self) -> None:
        self._closed = True
        if self._producer is None:
            return
        self.flush()
        try:
            self._loop.submit(self._producer.stop()).result(10)
        except Exception as e:
            log.debug("Error stopping Kafka producer: %s", e)
        self._producer = None

    def __enter__(self) -> UpdateProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the DAMNIT messages. `db` is a db_id, a topic name or a DamnitDB.
    def run_values_updated(self, db: Any, proposal: int, run: int, names: Iterable[str]) -> None:
        self.send(update_topic(db), run_values_updated_msg(proposal, run, names))

    def variable_set(self, db: Any, var: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """``var`` is a variable dict (name, title, description, tags, attributes, type)."""
        self.send(update_topic(db), variable_set_msg(**{**dict(var or {}), **fields}))

    def processing_state_set(self, db: Any, processing_id: str, proposal: int, run: int, data: str,
                             status: str, slurm_cluster: str | None = None,
                             slurm_job_id: str | None = None, **kwargs: Any) -> None:
        self.send(update_topic(db), processing_state_set_msg(
            processing_id, proposal, run, data, status, slurm_cluster, slurm_job_id, **kwargs))

    def processing_finished(self, db: Any, processing_id: str) -> None:
        self.send(update_topic(db), processing_finished_msg(processing_id))

    def file_submission(self, damnit_dir: str | Path, new_file: str | Path, proposal: int, run: int) -> None:
        self.send(FILE_SUBMISSION_TOPIC, file_submission_msg(damnit_dir, new_file, proposal, run))


# ---------------------------------------------------------------- subscriber

async def _topic_partitions(consumer, topic: str, timeout: float = 5.0) -> set[int]:
    """Partitions of ``topic``, asking the broker to create it (auto-creation) if it is new."""
    client = consumer._client
    client.add_topic(topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (parts := consumer.partitions_for_topic(topic)):
        if loop.time() > deadline:
            raise TimeoutError(f"Kafka topic {topic} has no partitions")
        await client.force_metadata_update()
        await asyncio.sleep(0.05)
    return parts


async def iter_messages(topics: str | Iterable[str], brokers: list[str], *, from_beginning: bool = False,
                        stop: asyncio.Event | None = None, on_ready: Callable[[], None] | None = None,
                        on_down: Callable[[BaseException], None] | None = None,
                        ) -> AsyncIterator[tuple[str, dict]]:
    """Yield ``(kind, data)`` for each valid DAMNIT message on ``topics``; bad messages are logged.

    Reads every partition directly (no consumer group, nothing committed), like a GUI watching a
    database. ``on_ready`` is called each time positions are fixed (at the start and after every
    reconnection): nothing sent after that is missed. While the broker is away it retries with back-off
    (at most every RETRY_MAX_S), resuming where it stopped, and says so once per outage: ``on_down(error)``
    at the first failed attempt (a warning when not given); the retries after it log at debug level only.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    topics = [topics] if isinstance(topics, str) else list(topics)
    delay = 0.5
    down = False
    positions: dict = {}
    while stop is None or not stop.is_set():
        # fetch_max_wait_ms: a broker that does not wake a waiting fetch early (Tansu) would
        # otherwise hold each message up to the 500 ms default; dashboards want it at once.
        consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False, fetch_max_wait_ms=100,
                                    auto_offset_reset="earliest" if from_beginning else "latest")
        try:
            await consumer.start()
            tps = [TopicPartition(t, p) for t in topics for p in await _topic_partitions(consumer, t)]
            consumer.assign(tps)
            for tp in tps:
                if tp in positions:
                    consumer.seek(tp, positions[tp])
                elif from_beginning:
                    await consumer.seek_to_beginning(tp)
                else:
                    await consumer.seek_to_end(tp)
                positions[tp] = await consumer.position(tp)
            down = False
            if on_ready is not None:
                on_ready()
            delay = 0.5
            while stop is None or not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for rec in records:
                        positions[tp] = rec.offset + 1
                        try:
                            parsed = parse_message(rec.value)
                        except MessageError as e:
                            log.warning("Skipping message at %s[%d]@%d: %s", rec.topic, rec.partition,
                                        rec.offset, e)
                            continue
                        yield parsed
            return
        except (KafkaError, OSError, TimeoutError) as e:
            if down:
                log.debug("Kafka subscription to %s still failing (%s); retrying in %.1f s", topics, e, delay)
            elif on_down is not None:
                on_down(e)
            else:
                log.warning("Kafka subscription to %s failed (%s); retrying quietly until the broker answers",
                            topics, e)
            down = True
        finally:
            try:
                await consumer.stop()
            except Exception:
                pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)


@dataclass
class UpdateSubscriber:
    """Calls ``callback(kind, data)`` (from a background thread) for each message on a DB's topic.

    Offline (no thread, ``online`` False) when the broker is ``none``; callers then poll the DB. While
    the broker is unreachable, ``ready`` is clear and it retries quietly: ``on_down(error)`` is called
    once per outage (default: a warning) and ``on_up()`` when the broker answers again (default: an
    info line), from the Kafka thread.
    """

    db: Any
    callback: Callable[[str, dict], None]
    broker: str | None = None
    from_beginning: bool = False
    on_down: Callable[[BaseException], None] | None = None
    on_up: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.topic = update_topic(self.db)
        self.brokers = brokers_from_env(self.broker)
        self._future: Future | None = None
        self._stop: asyncio.Event | None = None
        self._was_down = False
        self.ready = threading.Event()  # set while the consumer has its partitions

    @property
    def online(self) -> bool:
        return self.brokers is not None

    def start(self, wait: float | None = 10.0) -> UpdateSubscriber:
        """Start reading; with ``wait``, block until messages sent from now on will be seen."""
        if self.brokers is None or self._future is not None:
            self.ready.set()
            return self
        self._future = _LoopThread.get().submit(self._run())
        if wait and not self.ready.wait(wait):
            log.warning("Kafka subscription to %s not ready after %.0f s; still trying", self.topic, wait)
        return self

    def _ready(self) -> None:
        if self._was_down:
            self._was_down = False
            if self.on_up is not None:
                self.on_up()
            else:
                log.info("Kafka broker %s answers again: subscribed to %s", ",".join(self.brokers), self.topic)
        self.ready.set()

    def _down(self, error: BaseException) -> None:
        self.ready.clear()
        self._was_down = True
        if self.on_down is not None:
            self.on_down(error)
        else:
            log.warning("Kafka broker %s unreachable (%s): no updates from %s until it answers "
                        "(retrying quietly)", ",".join(self.brokers), _describe(error), self.topic)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        async for kind, data in iter_messages(self.topic, self.brokers, from_beginning=self.from_beginning,
                                              stop=self._stop, on_ready=self._ready, on_down=self._down):
            try:
                self.callback(kind, data)
            except Exception:
                log.exception("Update callback failed for a %s message", kind)

    def stop(self, timeout: float = 5.0) -> None:
        if self._future is None:
            return
        loop = _LoopThread.get()
        if self._stop is not None:
            loop.loop.call_soon_threadsafe(self._stop.set)
        try:
            self._future.result(timeout)
        except Exception:
            self._future.cancel()
        self._future = None

    def __enter__(self) -> UpdateSubscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
