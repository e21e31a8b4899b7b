"""A broker that is away is news once, not at every retry: the subscriber and the producer say it once per
outage and once when the broker answers again, and aiokafka's per-attempt errors can be hidden
(``quiet_client_connection_logs``, as the dashboard does). Real Tansu broker, stopped and started again on
the same port."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from backend.base import messages
from backend.base.messages import UpdateProducer, UpdateSubscriber


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _kafka_lines(caplog, level=logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level
            and (r.name.startswith("aiokafka") or "Kafka" in r.getMessage())]


@pytest.fixture
def fast_retries(monkeypatch):
    """Retry every 0.1 s, so a few seconds hold dozens of attempts."""
    monkeypatch.setattr(messages, "RETRY_MAX_S", 0.1)
    monkeypatch.setattr(messages, "RECONNECT_INTERVAL_S", 0.1)


def test_subscriber_reports_an_outage_once_and_the_return_once(kafka_broker, fast_retries, caplog):
    caplog.set_level(logging.DEBUG, logger="backend.base.messages")
    kafka_broker.stop()
    downs: list[BaseException] = []
    ups: list[float] = []
    got: list[str] = []
    arrived = threading.Event()

    def on_msg(kind, data):
        got.append(data["processing_id"])
        arrived.set()

    sub = UpdateSubscriber("outage1", on_msg, broker=kafka_broker.address,
                           on_down=downs.append, on_up=lambda: ups.append(time.monotonic()))
    sub.start(wait=None)
    try:
        time.sleep(4)  # dozens of attempts at 0.1 s
        attempts = sum("still failing" in r.getMessage() for r in caplog.records)
        assert attempts >= 10, f"only {attempts} retries in 4 s: the test proves nothing"
        assert len(downs) == 1, downs
        assert not ups and not sub.ready.is_set()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == messages.log.name]

        kafka_broker.start()
        assert _wait(sub.ready.is_set, 30), "the subscriber did not reconnect"
        assert len(ups) == 1 and len(downs) == 1
        with UpdateProducer.from_env(kafka_broker.address) as p:
            p.processing_finished("outage1", "after")
        assert arrived.wait(10) and got == ["after"]
    finally:
        sub.stop()


def test_subscriber_without_callbacks_warns_once(kafka_broker, fast_retries, caplog):
    caplog.set_level(logging.INFO, logger="backend.base.messages")
    kafka_broker.stop()
    sub = UpdateSubscriber("outage2", lambda k, d: None, broker=kafka_broker.address).start(wait=None)
    try:
        time.sleep(3)
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno >= logging.WARNING and r.name == messages.log.name]
        assert len(warnings) == 1 and "unreachable" in warnings[0] and kafka_broker.address in warnings[0]
        kafka_broker.start()
        assert _wait(sub.ready.is_set, 30)
        assert _wait(lambda: any("answers again" in r.getMessage() for r in caplog.records), 5)
    finally:
        sub.stop()


def test_aiokafka_retry_errors_are_hidden_when_asked(kafka_broker, fast_retries, caplog):
    """Without the filter aiokafka logs an error for every attempt; with it, only our one line is left."""
    kafka_broker.stop()
    caplog.set_level(logging.WARNING)
    p = UpdateProducer.from_env(kafka_broker.address, connect_timeout=1)
    assert any(r.name.startswith("aiokafka") and r.levelno == logging.ERROR for r in caplog.records), \
        "aiokafka logged no error for a closed port: nothing to hide"
    p.close()

    caplog.clear()
    messages.quiet_client_connection_logs()
    messages.quiet_client_connection_logs()  # idempotent
    assert sum(isinstance(f, messages._ConnectionNoise) for f in logging.getLogger("aiokafka").filters) == 1
    sub = UpdateSubscriber("outage3", lambda k, d: None, broker=kafka_broker.address).start(wait=None)
    p = UpdateProducer.from_env(kafka_broker.address, connect_timeout=1)
    try:
        for _ in range(20):  # sends try to reconnect (at most every 0.1 s here), quietly
            p.processing_finished("outage3", "x")
            time.sleep(0.1)
        lines = _kafka_lines(caplog)
        assert not [r for r in caplog.records if r.name.startswith("aiokafka")], lines
        assert len(lines) == 2, lines  # the subscriber's and the producer's, once each
    finally:
        sub.stop()
        p.close()
        for name in ("aiokafka", "aiokafka.conn", "aiokafka.consumer.fetcher", "aiokafka.producer.sender"):
            logger = logging.getLogger(name)
            for f in [f for f in logger.filters if isinstance(f, messages._ConnectionNoise)]:
                logger.removeFilter(f)
