"""Message shapes (docs/spec.md "Kafka: topics and messages"), offline mode, and round trips through the real Tansu broker."""
from __future__ import annotations

import json
import threading
import time

import pytest

from backend.base import messages
from backend.base.messages import UpdateProducer, UpdateSubscriber


def test_shapes_match_the_original():
    assert messages.run_values_updated_msg(1234, 5, ["a", "b"]) == {
        "msg_kind": "run_values_updated", "data": {"proposal": 1234, "run": 5, "values": {"a": None, "b": None}}}
    msg = messages.processing_state_set_msg("id1", 1234, 5, "raw", "PENDING", "", "17_2", hostname="h",
                                            username="u")
    assert msg == {"msg_kind": "processing_state_set", "data": {
        "processing_id": "id1", "proposal": 1234, "run": 5, "data": "raw", "status": "PENDING",
        "hostname": "h", "username": "u", "slurm_cluster": "", "slurm_job_id": "17_2"}}
    assert messages.processing_finished_msg("id1") == {"msg_kind": "processing_finished",
                                                       "data": {"processing_id": "id1"}}
    var = messages.variable_set_msg("x", "X title", "desc", tags=["t"])
    assert var["data"] == {"name": "x", "title": "X title", "description": "desc", "tags": ["t"],
                           "attributes": None, "type": None}
    # From the GUI there are no tags: the key is absent, as in the original
    assert "tags" not in messages.variable_set_msg("x", "X", None, type="number")["data"]
    sub = messages.file_submission_msg("/db", "/db/extracted_data/p1_r2.abc.ready.h5", 1, 2)["data"]
    assert sub["damnit_dir"] == "/db" and sub["proposal"] == 1 and set(sub["computed_by"]) == {"hostname", "username"}
    with pytest.raises(ValueError, match="PENDING or RUNNING"):
        messages.processing_state_set_msg("id", 1, 2, "raw", "DONE")


def test_shapes_are_what_the_original_produces(damnit_oracle):
    """The original's own msg_dict gives byte-identical JSON for the same envelope."""
    ours = messages.run_values_updated_msg(1234, 5, ["a"])
    code = ("import json; from damnit.backend.db import msg_dict, MsgKind; "
            "print(json.dumps(msg_dict(MsgKind.run_values_updated, "
            "{'proposal': 1234, 'run': 5, 'values': {'a': None}})))")
    assert damnit_oracle.run_json(code) == ours


def test_parse_rejects_foreign_messages():
    assert messages.parse_message(b'{"msg_kind": "x", "data": {}}') == ("x", {})
    for bad in (b"\xff\xfe", b"not json", b"[1, 2]", b'{"event": "migration_complete"}'):
        with pytest.raises(messages.MessageError):
            messages.parse_message(bad)


def test_broker_addresses(monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "a:1, b:2")
    assert messages.brokers_from_env() == ["a:1", "b:2"]
    monkeypatch.setenv("AMORE_BROKER", "none")
    assert messages.brokers_from_env() is None
    monkeypatch.delenv("AMORE_BROKER")
    assert messages.brokers_from_env() == [messages.DEFAULT_BROKER]
    with pytest.raises(ValueError, match="host:port"):
        messages.brokers_from_env("localhost")


def test_topic_from_db_like_objects():
    class FakeDB:
        metameta = {"db_id": "abc"}

    assert messages.update_topic("abc") == "test.damnit.db-abc"
    assert messages.update_topic("test.damnit.db-abc") == "test.damnit.db-abc"
    assert messages.update_topic(FakeDB()) == "test.damnit.db-abc"


def test_offline_mode_is_a_silent_noop(monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "none")
    with UpdateProducer.from_env() as p:
        assert not p.online
        p.run_values_updated("db", 1, 2, ["x"])
        p.processing_finished("db", "id")
    sub = UpdateSubscriber("db", lambda *a: None).start()
    assert not sub.online and sub.ready.is_set()
    sub.stop()


def test_unreachable_broker_goes_offline_quickly():
    t0 = time.monotonic()
    p = UpdateProducer.from_env("127.0.0.1:1", connect_timeout=2)
    assert not p.online
    assert time.monotonic() - t0 < 10
    p.run_values_updated("db", 1, 2, ["x"])  # must not raise


def test_round_trip_in_order(kafka_broker):
    got: list = []
    arrived = threading.Event()

    def on_msg(kind, data):
        got.append((kind, data))
        if kind == "processing_finished":
            arrived.set()

    with UpdateSubscriber("rt1", on_msg, broker=kafka_broker.address) as sub:
        assert sub.ready.is_set()
        with UpdateProducer.from_env(kafka_broker.address) as p:
            assert p.online
            p.processing_state_set("rt1", "pid", 1234, 5, "raw", "PENDING", "", "12")
            p.processing_state_set("rt1", "pid", 1234, 5, "raw", "RUNNING", None, "12")
            p.run_values_updated("rt1", 1234, 5, ["a"])
            p.processing_finished("rt1", "pid")
        assert arrived.wait(10), got
    assert [k for k, _ in got] == ["processing_state_set", "processing_state_set", "run_values_updated",
                                   "processing_finished"]
    assert got[0][1]["status"] == "PENDING" and got[1][1]["status"] == "RUNNING"
    assert got[2][1] == {"proposal": 1234, "run": 5, "values": {"a": None}}


def test_subscriber_skips_garbage_and_survives_broker_restart(kafka_broker):
    """Foreign bytes on the topic are skipped; after the broker restarts the subscriber reconnects."""
    from aiokafka import AIOKafkaProducer

    from tests.infra.aio import run_async

    got: list = []
    with UpdateSubscriber("rt2", lambda k, d: got.append(k), broker=kafka_broker.address):
        async def send_raw():
            prod = AIOKafkaProducer(bootstrap_servers=kafka_broker.address)
            await prod.start()
            await prod.send_and_wait("test.damnit.db-rt2", b"\x00garbage", key=b"k")
            await prod.send_and_wait("test.damnit.db-rt2", json.dumps(
                messages.processing_finished_msg("a")).encode(), key=b"k")
            await prod.stop()

        run_async(send_raw)
        deadline = time.monotonic() + 10
        while got != ["processing_finished"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == ["processing_finished"]

        kafka_broker.kill()
        kafka_broker.start()
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            with UpdateProducer.from_env(kafka_broker.address) as p:
                p.processing_finished("rt2", "b")
            time.sleep(1)
        assert got[-1] == "processing_finished" and len(got) >= 2


def test_producer_started_while_broker_down_connects_later(kafka_broker, monkeypatch):
    """The listener's producer outlives broker outages: it retries and later messages get through."""
    monkeypatch.setattr(messages, "RECONNECT_INTERVAL_S", 0.2)
    got: list = []
    kafka_broker.stop()
    p = UpdateProducer.from_env(kafka_broker.address, connect_timeout=1)
    assert not p.online
    p.processing_finished("rt3", "lost")  # dropped: nobody to send it to
    kafka_broker.start()
    with UpdateSubscriber("rt3", lambda k, d: got.append(d["processing_id"]), broker=kafka_broker.address):
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            p.processing_finished("rt3", "later")
            time.sleep(0.3)
        p.close()
    assert "later" in got and "lost" not in got
