"""Quiet, useful logs while a service the listener depends on (the Kafka broker, Slurm) is away.

One line when it goes away, one when it is back, and a summary at most once a minute in between,
however many attempts fail meanwhile and however much the client libraries underneath complain
(aiokafka alone logs about a hundred lines a second while its broker is down).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

SUMMARY_INTERVAL_S = 60.0
CLIENT_REPEAT_INTERVAL_S = 60.0  # a given client warning is passed on at most this often
HELD_RECORDS_MAX = 50

# aiokafka messages that mean "cannot reach the broker" (matched in the formatted message)
_CONNECTION_MARKERS = ("unable connect", "connect call failed", "unable to update metadata", "nodenotready",
                       "kafkaconnectionerror", "connection at", "coordinator dead", "coordinator request failed",
                       "unable to request metadata", "unable to bootstrap", "connection refused")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    return f"{seconds / 3600:.1f} h"


class Outage:
    """The state of one service as the listener sees it, and the log lines about it.

    ``failed(reason)`` for every attempt that failed because the service is away (the first is logged),
    ``recovered()`` when it answers again (logged if it was away), ``tick()`` often (logs a summary
    while away, at most every ``summary_interval``), ``suppressed()`` to count a client message that
    was not logged. Thread-safe.
    """

    def __init__(self, name: str, logger: logging.Logger, *, summary_interval: float = SUMMARY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.log = logger
        self.summary_interval = summary_interval
        self.clock = clock
        self._lock = threading.Lock()
        self.since: float | None = None  # clock() when the current outage started
        self.reason = ""                 # the latest failure's reason
        self.failures = 0                # failed attempts in the current outage
        self.suppressed_messages = 0     # client messages not logged in the current outage
        self._last_summary = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, reason: str, hint: str = "") -> bool:
        """An attempt failed: the service is away. True (and one log line) if that is news."""
        reason = " ".join(str(reason).split())
        with self._lock:
            self.failures += 1
            self.reason = reason
            if self.since is not None:
                return False
            self.since = self._last_summary = self.clock()
            self.failures, self.suppressed_messages = 1, 0
        self.log.warning("%s unavailable: %s%s", self.name, reason, f"; {hint}" if hint else "")
        return True

    def recovered(self, detail: str = "") -> bool:
        """The service answered. True (and one log line) if it had been away."""
        with self._lock:
            if self.since is None:
                return False
            lasted = self.clock() - self.since
            failures, suppressed = self.failures, self.suppressed_messages
            self.since = None
        extra = f"{failures} failed attempt{'s' if failures != 1 else ''}"
        if suppressed:
            extra += f", {suppressed} client messages not logged"
        self.log.info("%s available again after %s (%s)%s", self.name, _duration(lasted), extra,
                         f"; {detail}" if detail else "")
        return True

    def suppressed(self) -> bool:
        """Count a client message during an outage; True if there is one (then drop the message)."""
        with self._lock:
            if self.since is None:
                return False
            self.suppressed_messages += 1
            return True

    def tick(self, detail: str | Callable[[], str] = "") -> bool:
        """While away, log a summary if the last line about it is ``summary_interval`` old; True if logged."""
        with self._lock:
            if self.since is None or self.clock() - self._last_summary < self.summary_interval:
                return False
            self._last_summary = self.clock()
            lasted = self._last_summary - self.since
            failures, suppressed, reason = self.failures, self.suppressed_messages, self.reason
        text = detail() if callable(detail) else detail
        self.log.warning("%s still unavailable after %s (%d failed attempts, %d client messages not logged; "
                         "latest: %s)%s", self.name, _duration(lasted), failures, suppressed, reason,
                         f"; {text}" if text else "")
        return True


def is_connection_message(record: logging.LogRecord) -> bool:
    """Whether an aiokafka record says that the broker could not be reached."""
    try:
        text = record.getMessage().lower()
    except Exception:
        return False
    return any(m in text for m in _CONNECTION_MARKERS)


class KafkaClientLog(logging.Handler):
    """Stands between aiokafka's loggers and the log while a listener runs.

    While the broker is away (``outage.down``) aiokafka's messages only count in the outage's summary.
    A message saying the broker can't be reached is held and ``on_connection_error(text)`` asks for a
    check of the broker; ``resolve(down)`` then drops the held messages (an outage, whose own line says
    it) or passes them on (a passing hiccup). Otherwise INFO and below pass only when the log shows
    DEBUG, and each distinct warning at most once a minute.
    """

    LOGGERS = ("aiokafka",)

    def __init__(self, outage: Outage, on_connection_error: Callable[[str], None] | None = None,
                 repeat_interval: float = CLIENT_REPEAT_INTERVAL_S):
        super().__init__(logging.DEBUG)
        self.outage = outage
        self.on_connection_error = on_connection_error
        self.repeat_interval = repeat_interval
        self._last: dict[tuple[str, object], float] = {}
        self._held: list[logging.LogRecord] = []
        self._saved: dict[str, bool] = {}

    def install(self) -> None:
        """Take over aiokafka's records (they stop propagating to the root logger until ``uninstall``)."""
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._saved[name] = logger.propagate
            logger.propagate = False
            logger.addHandler(self)

    def uninstall(self) -> None:
        for name, propagate in self._saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.propagate = propagate
        self._saved.clear()
        self.resolve(down=False)

    def emit(self, record: logging.LogRecord) -> None:
        if self.outage.suppressed():
            return
        if record.levelno >= logging.WARNING and is_connection_message(record):
            with self.lock:  # (re-entrant: emit runs under it already)
                if len(self._held) < HELD_RECORDS_MAX:
                    self._held.append(record)
            if self.on_connection_error is not None:
                self.on_connection_error(record.getMessage())
            return
        self._pass_on(record)

    def resolve(self, down: bool) -> None:
        """The broker check after a connection message: drop (``down``) or pass on the held messages."""
        with self.lock:
            held, self._held = self._held, []
        if down:
            for _ in held:
                self.outage.suppressed()
        else:
            for record in held:
                self._pass_on(record)

    def _pass_on(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if record.levelno < logging.WARNING and not root.isEnabledFor(logging.DEBUG):
            return
        if record.levelno < logging.WARNING:
            root.handle(record)
            return
        key = (record.name, record.msg)
        now = time.monotonic()
        with self.lock:
            if now - self._last.get(key, -self.repeat_interval) < self.repeat_interval:
                return
            self._last[key] = now
        root.handle(record)
