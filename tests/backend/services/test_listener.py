"""The listener against the real broker and Slurm, with a stand-in job command.

Real processing jobs are covered by tests/backend/services/test_services_e2e.py; here jobs run a script that records its
arguments, so these tests pin down event handling, registration, delivery and faults.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from backend.services import listener as listener_mod
from backend.services.listener import EventError, Listener, OffsetTracker, parse_event
from backend.services.listener_db import ListenerDB
from backend.storage.damnit_folder import initialize_proposal
from tests.infra.aio import run_async
from tests.infra.kafka import FAST_GROUP_CONSUMER_SETTINGS

SMALL = {"noncluster_cpus": 1, "noncluster_mem": "50M", "slurm_time": "00:05:00"}


def wait_for(cond, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def make_db(path: Path, proposal: int, **settings) -> Path:
    db = initialize_proposal(path, proposal)
    db.metameta.update({**SMALL, **settings})
    db.close()
    return path


def registered_db(tmp_path: Path, settings: dict | None = None, **db_settings) -> tuple[Path, Path]:
    """A listener folder with one database for p1234 registered; ``settings`` go to listener.sqlite,
    ``db_settings`` to the database's metameta. Returns (listener_dir, db_dir)."""
    ldir, db_dir = tmp_path / "listener", tmp_path / "db"
    ldir.mkdir()
    make_db(db_dir, 1234, **db_settings)
    with ListenerDB(ldir) as ldb:
        ldb.add_proposal_db(1234, db_dir, False)
        for key, value in (settings or {}).items():
            ldb.settings[key] = value
    return ldir, db_dir


def fake_python(tmp_path: Path) -> str:
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/bash\necho \"$@\" >> {tmp_path}/calls.txt\n")
    script.chmod(0o755)
    return str(script)


def calls(tmp_path: Path) -> list[list[str]]:
    p = tmp_path / "calls.txt"
    return [line.split() for line in p.read_text().splitlines()] if p.exists() else []


def runs_in_db(db_dir: Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    try:
        return conn.execute("SELECT proposal, run FROM run_info ORDER BY run").fetchall()
    finally:
        conn.close()


def send_events(address: str, *messages, topic: str = "test.r2d2") -> None:
    from aiokafka import AIOKafkaProducer

    async def send():
        prod = AIOKafkaProducer(bootstrap_servers=address)
        await prod.start()
        try:
            sent = []
            for m in messages:
                value = m if m is None or isinstance(m, bytes) else json.dumps(m).encode()
                key = b"tombstone" if value is None else None  # (a null value needs a key)
                sent.append(await prod.send_and_wait(topic, value, key=key))
            return sent
        finally:
            await prod.stop()

    return run_async(send)


def migration(proposal: int, run: int) -> dict:
    return {"event": "migration_complete", "proposal": str(proposal), "run": run, "data": "raw"}


@pytest.fixture
def listener_setup(tmp_path, kafka_broker, slurm_cluster):
    """A listener dir with one registered DB for p1234; yields (start(), listener_dir, db_dir)."""
    python = fake_python(tmp_path)
    ldir, db_dir = registered_db(tmp_path, damnit_python=python)  # jobs run the database's damnit_python
    started = []

    def start(connect=True):
        lst = Listener(ldir, broker=kafka_broker.address, consumer_options=FAST_GROUP_CONSUMER_SETTINGS,
                       job_python=python)
        bg = lst.start_background()
        started.append(bg)
        if connect:
            assert bg.wait_connected(30), "listener did not connect to the broker"
        return bg

    yield start, ldir, db_dir
    for bg in started:
        bg.stop()


# ---------------------------------------------------------------- pure logic

def test_parse_event():
    ev = parse_event(json.dumps(migration(1234, 5)), 1_700_000_000_000)
    assert (ev.proposal, ev.run, ev.run_data, ev.added_at) == (1234, 5, "raw", 1_700_000_000.0)
    assert parse_event(b'{"event": "run_corrections_complete", "proposal": 1, "run": 2}').run_data == "proc"
    assert parse_event(b'{"event": "online_correction_complete", "proposal": 1, "run": 2}').run_data == "proc"
    assert parse_event(b'{"event": "daq_run_complete", "proposal": 1, "run": 2}').run_data == "raw"
    assert parse_event(b'{"event": "migration_complete", "proposal": " 0042 ", "run": "7"}').proposal == 42
    assert parse_event(b'{"event": "something_else", "proposal": 1}') is None
    assert parse_event(b'{"msg_kind": "run_values_updated", "data": {}}') is None
    for bad, why in [(b"garbage", "not JSON"), (b"[1]", "JSON object"), (b"\xff\xfe", "not JSON"),
                     (b'{"event": "migration_complete", "run": 2}', "without 'proposal'"),
                     (b'{"event": "migration_complete", "proposal": "x", "run": 2}', "positive integer, not 'x'")]:
        with pytest.raises(EventError, match=why):
            parse_event(bad)


@pytest.mark.parametrize("raw, why", [
    (None, "tombstone"),
    (b'{"event": ["migration_complete"], "proposal": 1234, "run": 1}', "'event' is a list"),
    (b'{"event": {"name": "migration_complete"}, "proposal": 1234, "run": 1}', "'event' is a dict"),
    (b'{"event": "migration_complete", "proposal": Infinity, "run": 1}', "positive integer, not inf"),
    (b'{"event": "migration_complete", "proposal": NaN, "run": 1}', "positive integer, not nan"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"event": "migration_complete", "proposal": 1234, "run": 150.7}', "run must be a positive integer, not 150.7"),
    (b'{"event": "migration_complete", "proposal": 1234, "run": 150.0}', "not 150.0"),
    (b'{"event": "migration_complete", "proposal": 1234, "run": true}', "not True"),
    (b'{"event": "migration_complete", "proposal": 1234, "run": -3}', "run -3 is out of range"),
    (b'{"event": "migration_complete", "proposal": 1234, "run": 0}', "run 0 is out of range"),
    (b'{"event": "migration_complete", "proposal": 1234, "run": 1e400}', "not inf"),
    (b'{"event": "migration_complete", "proposal": 12345678901234567890, "run": 1}', "out of range"),
    (b'{"event": "migration_complete", "proposal": "1\\u0662", "run": 1}', "positive integer"),  # Arabic-Indic digit
    (b'{"event": "migration_complete", "proposal": null, "run": 1}', "not None"),
])
def test_poison_messages_are_event_errors(raw, why):
    """Whatever a message holds, decoding it raises EventError (its own problem), never anything else."""
    with pytest.raises(EventError, match=why):
        parse_event(raw)


def test_offsets_commit_only_up_to_the_oldest_unfinished_event():
    t = OffsetTracker()
    for off in (5, 6, 7):
        t.add("tp", off)
    t.done("tp", 6)
    assert t.to_commit() == {}          # 5 is not finished: nothing may be committed
    t.done("tp", 5)
    assert t.to_commit() == {"tp": 7}   # 5 and 6 done → next offset to read is 7
    assert t.outstanding == 1
    t.done("tp", 7)
    assert t.to_commit() == {"tp": 8}


def test_listener_db_settings_and_registration(tmp_path):
    with ListenerDB(tmp_path) as db:
        assert db.setting("static_mode") is True and db.setting("allow_local_processing") is False
        assert db.add_proposal_db(1, tmp_path / "a", True)
        assert not db.add_proposal_db(1, tmp_path / "a", True)
        db.add_proposal_db(1, tmp_path / "b", False)
        assert [(i.db_dir.name, i.official) for i in db.all_databases()] == [("a", True), ("b", False)]
        assert db.remove_proposal_db(tmp_path / "a") and not db.remove_proposal_db(tmp_path / "a")
    # The original damnit reads our listener.sqlite the same way
    conn = sqlite3.connect(tmp_path / "listener.sqlite")
    assert conn.execute("SELECT proposal, official FROM proposal_databases").fetchall() == [(1, 0)]


def test_listener_cli(tmp_path, monkeypatch, capsys):
    from backend.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["listener", "add", "1234", str(tmp_path / "db")]) == 0
    assert main(["listener", "databases"]) == 0
    assert f"p1234: {tmp_path / 'db'} (unofficial)" in capsys.readouterr().out
    assert main(["listener", "config", "allow-local-processing", "1"]) == 0
    assert main(["listener", "config", "use_slurm", "off"]) == 0
    assert main(["listener", "config", "static_mode", "maybe"]) == 1
    assert main(["listener", "config"]) == 0
    out = capsys.readouterr()
    assert "allow_local_processing=1" in out.out and "static_mode must be 0/1" in out.err
    assert "use_slurm=0" in out.out
    assert main(["listener", "rm", str(tmp_path / "db")]) == 0
    assert main(["listener", "rm", str(tmp_path / "db")]) == 1


# ---------------------------------------------------------------- with the broker and Slurm

def test_event_submits_job_and_commits_after(listener_setup, kafka_broker, slurm_cluster, tmp_path):
    start, ldir, db_dir = listener_setup
    bg = start()
    sent = send_events(kafka_broker.address, migration(1234, 5),
                       {"event": "run_corrections_complete", "proposal": 1234, "run": 5},
                       migration(9999, 1))  # no DB registered for p9999
    assert wait_for(lambda: len(calls(tmp_path)) >= 2, 60), calls(tmp_path)
    got = sorted(c[2:5] for c in calls(tmp_path))
    assert got == [["1234", "5", "proc"], ["1234", "5", "raw"]]
    assert all("--update-vars" in c for c in calls(tmp_path))
    assert runs_in_db(db_dir) == [(1234, 5)]
    # Every event, including the ignored one, ends up committed
    assert wait_for(lambda: all(
        (_committed(kafka_broker.address, bg.listener.group_id, m.topic, m.partition) or 0) > m.offset
        for m in sent), 20)


def _committed(address: str, group_id: str, topic: str, partition: int) -> int | None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def get():
        c = AIOKafkaConsumer(bootstrap_servers=address, group_id=group_id, enable_auto_commit=False)
        await c.start()
        try:
            return await c.committed(TopicPartition(topic, partition))
        finally:
            await c.stop()

    return run_async(get)


def test_malformed_and_foreign_messages_are_skipped(listener_setup, kafka_broker, tmp_path, caplog):
    start, ldir, db_dir = listener_setup
    start()
    send_events(kafka_broker.address, b"\x00\x01binary", b"[1,2]",
                {"event": "migration_complete", "proposal": "abc", "run": 1},
                {"msg_kind": "run_values_updated", "data": {}},
                migration(1234, 6))
    assert wait_for(lambda: calls(tmp_path), 60)
    assert [c[2:5] for c in calls(tmp_path)] == [["1234", "6", "raw"]]
    assert "Dead-lettered the message at test.r2d2[" in caplog.text and "positive integer" in caplog.text


def test_dynamic_mode_registers_official_databases(listener_setup, kafka_broker, tmp_path, monkeypatch):
    start, ldir, db_dir = listener_setup
    root = tmp_path / "exp"
    official = make_db(root / "SPB" / "202501" / "p005678" / "usr" / "Shared" / "amore", 5678,
                       damnit_python=fake_python(tmp_path))
    monkeypatch.setenv("XFEL_DATA_ROOT", str(root))
    unused = make_db(root / "SPB" / "202501" / "p007777" / "usr" / "Shared" / "amore", 7777)
    with ListenerDB(ldir) as ldb:
        ldb.settings["static_mode"] = False
    start()
    send_events(kafka_broker.address, migration(5678, 3))
    assert wait_for(lambda: calls(tmp_path), 60)
    assert calls(tmp_path)[0][2:7] == ["5678", "3", "raw", "--db-dir", str(official)]
    with ListenerDB(ldir) as ldb:
        assert [(i.proposal, i.official) for i in ldb.all_databases()] == [(1234, False), (5678, True)]
    assert runs_in_db(unused) == []


def test_static_mode_ignores_unregistered_official_databases(listener_setup, kafka_broker, tmp_path, monkeypatch):
    start, ldir, db_dir = listener_setup
    root = tmp_path / "exp"
    official = make_db(root / "SPB" / "202501" / "p005678" / "usr" / "Shared" / "amore", 5678,
                       damnit_python=fake_python(tmp_path))
    monkeypatch.setenv("XFEL_DATA_ROOT", str(root))
    start()
    send_events(kafka_broker.address, migration(5678, 3), migration(1234, 4))
    assert wait_for(lambda: calls(tmp_path), 60)
    time.sleep(1)
    assert [c[2] for c in calls(tmp_path)] == ["1234"]
    assert runs_in_db(official) == []


def test_broker_down_at_start(listener_setup, kafka_broker, tmp_path):
    start, ldir, db_dir = listener_setup
    kafka_broker.stop()
    bg = start(connect=False)
    time.sleep(2)  # the listener is retrying with back-off
    assert not bg.listener.connected.is_set()
    kafka_broker.start()
    send_events(kafka_broker.address, migration(1234, 21))
    assert wait_for(lambda: calls(tmp_path), 90), "event sent after the broker came up was lost"
    assert [c[2:4] for c in calls(tmp_path)] == [["1234", "21"]]


def test_broker_killed_mid_run_loses_no_event(listener_setup, kafka_broker, tmp_path):
    start, ldir, db_dir = listener_setup
    start()
    send_events(kafka_broker.address, migration(1234, 31))
    assert wait_for(lambda: len(calls(tmp_path)) == 1, 60)
    kafka_broker.kill()
    time.sleep(1)
    kafka_broker.start()  # empty: topics, offsets and groups are gone
    send_events(kafka_broker.address, migration(1234, 32))
    assert wait_for(lambda: any(c[3] == "32" for c in calls(tmp_path)), 90), calls(tmp_path)
    assert sorted({c[3] for c in calls(tmp_path)}) == ["31", "32"]


def test_slurm_unavailable_without_local_processing_records_error(listener_setup, kafka_broker, tmp_path,
                                                                  monkeypatch):
    start, ldir, db_dir = listener_setup
    with sqlite3.connect(db_dir / "runs.sqlite") as conn:
        conn.execute("UPDATE metameta SET value='no-such-partition' WHERE key='slurm_partition'")
        conn.execute("INSERT OR REPLACE INTO metameta VALUES ('slurm_partition', 'no-such-partition')")
    start()
    send_events(kafka_broker.address, migration(1234, 41))
    log_path = db_dir / "process_logs" / "r41-p1234.out"  # (created before sbatch is called, for its output)
    assert wait_for(lambda: log_path.exists() and "Could not submit" in log_path.read_text(), 60)
    text = log_path.read_text()
    assert "Could not submit a Slurm job for r41" in text and "allow_local_processing" in text
    assert "partition" in text.lower()
    assert runs_in_db(db_dir) == [(1234, 41)]  # the run is still recorded


def test_event_topics_include_online_variants():
    assert set(listener_mod.EVENT_TOPICS) == {"test.r2d2", "cal.offline-corrections", "test.euxfel.hed.daq",
                                              "test.euxfel.hed.cal"}


# ---------------------------------------------------------------- local processing

class FakeProcessor:
    """Stands in for extraction.RunProcessor: records batches and overlapping work per run, and like it
    announces each run's processing_id finished when its outcome is ready."""

    active: set = set()
    overlaps: list = []
    batches: list = []
    block_first = None  # a threading.Event the first batch waits on (at most block_timeout s)
    block_timeout = 3
    delay = 0.3

    fail = False  # raise instead of processing (a worker pool that cannot start)

    def __init__(self, db_dir, producer=None, **kw):
        self.db_dir = db_dir
        self.producer = producer

    def process(self, requests, processing_ids=None, **kw):
        import threading

        from backend.processing.workers import RunOutcome

        cls = FakeProcessor
        keys = [(self.db_dir, r.run) for r in requests]
        with _fake_lock:
            cls.overlaps += [k for k in keys if k in cls.active]
            cls.active |= set(keys)
            cls.batches.append([(Path(self.db_dir).name, r.run, r.run_data) for r in requests])
            first, cls.block_first = cls.block_first, None
        if isinstance(first, threading.Event):
            first.wait(cls.block_timeout)
        time.sleep(cls.delay)
        if cls.fail:
            with _fake_lock:
                cls.active -= set(keys)
            raise RuntimeError("no workers")
        for r in requests:
            with _fake_lock:
                cls.active.discard((self.db_dir, r.run))
            if self.producer is not None:
                self.producer.processing_finished("test.damnit.db-fake", (processing_ids or {})[id(r)])
            yield RunOutcome(request=r)

    def warm_up(self):
        pass

    def close(self):
        pass


import threading as _threading  # noqa: E402

_fake_lock = _threading.Lock()


@pytest.fixture
def fake_processor(monkeypatch):
    import backend.services.local_processing

    FakeProcessor.active, FakeProcessor.overlaps, FakeProcessor.batches = set(), [], []
    FakeProcessor.block_first, FakeProcessor.fail, FakeProcessor.delay = None, False, 0.3
    FakeProcessor.block_timeout = 3
    monkeypatch.setattr(backend.services.local_processing, "RunProcessor", FakeProcessor)
    return FakeProcessor


TOPIC = "test.damnit.db-fake"


def test_local_requests_for_a_run_are_merged_never_concurrent(fake_processor, tmp_path):
    from backend.base.messages import UpdateProducer
    from backend.processing.requests import RunRequest
    from backend.services.local_processing import LocalProcessing

    local = LocalProcessing(UpdateProducer.offline(), max_concurrent=1)
    done = []
    a, b = tmp_path / "a", tmp_path / "b"
    local.submit(a, RunRequest(1, 1, "raw"), lambda: done.append("a1"), topic=TOPIC)
    time.sleep(0.1)  # the first batch is running now
    local.submit(a, RunRequest(1, 1, "raw"), lambda: done.append("a1 again"), topic=TOPIC)
    local.submit(a, RunRequest(1, 1, "proc"), lambda: done.append("a1 proc"), topic=TOPIC)
    local.submit(a, RunRequest(1, 2, "raw"), lambda: done.append("a2"), topic=TOPIC)
    local.submit(b, RunRequest(1, 1, "raw"), lambda: done.append("b1"), topic=TOPIC)
    assert wait_for(lambda: len(done) == 5, 20), done
    local.close()
    assert fake_processor.overlaps == []
    batches = fake_processor.batches
    assert batches[0] == [("a", 1, "raw")]
    # The duplicate and the proc event were merged into one 'all' request, with run 2 alongside
    assert sorted(batches[1] + batches[2]) == [("a", 1, "all"), ("a", 2, "raw"), ("b", 1, "raw")]


def test_local_processing_is_bounded_across_databases(fake_processor, tmp_path):
    from backend.base.messages import UpdateProducer
    from backend.processing.requests import RunRequest
    from backend.services.local_processing import LocalProcessing

    fake_processor.delay = 0.5
    local = LocalProcessing(UpdateProducer.offline(), max_concurrent=1)
    done, t0 = [], time.monotonic()
    for name in "abc":
        local.submit(tmp_path / name, RunRequest(1, 1, "raw"), lambda: done.append(time.monotonic()),
                     topic=TOPIC)
    assert wait_for(lambda: len(done) == 3, 20)
    local.close()
    fake_processor.delay = 0.3
    assert done[-1] - t0 >= 1.4  # one database at a time: 3 × 0.5 s


class RecordingProducer:
    """Records the processing messages a listener sends, in order."""

    def __init__(self):
        self.sent = []

    def processing_state_set(self, db, processing_id, proposal, run, data, status, **kw):
        self.sent.append((status, processing_id, run, data))

    def processing_finished(self, db, processing_id):
        self.sent.append(("finished", processing_id))

    def ids(self, status):
        return [m[1] for m in self.sent if m[0] == status]

    def flush(self):
        pass

    def close(self):
        pass


@pytest.fixture
def local_handler(fake_processor, tmp_path, monkeypatch):
    """An EventHandler for p1234 that processes locally (no sbatch on PATH); yields (handler, producer)."""
    from backend.services.listener import EventHandler
    from backend.services.local_processing import LocalProcessing

    ldir, db_dir = registered_db(tmp_path, {"allow_local_processing": True})
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    producer = RecordingProducer()
    handler = EventHandler(ldir, producer, LocalProcessing(producer, max_concurrent=1))
    yield handler, producer
    handler.local.close()
    handler.close()


def test_merged_local_requests_each_get_processing_finished(local_handler, fake_processor):
    """Each event's processing_id is announced PENDING; one merged away into another request's job must
    still be finished, when that job is (not before: its work is still to be done), or the run shows
    as queued forever."""
    import threading

    from backend.services.listener import RunEvent

    handler, producer = local_handler
    release = fake_processor.block_first = threading.Event()
    done = []
    handler.handle(RunEvent("migration_complete", 1234, 7, "raw", time.time()), lambda: done.append("raw"))
    assert wait_for(lambda: fake_processor.batches, 10)  # run 7 is being processed
    for ev, run_data in (("run_corrections_complete", "proc"), ("daq_run_complete", "raw")):  # not a repeat of the first event
        handler.handle(RunEvent(ev, 1234, 7, run_data, time.time()), lambda d=run_data: done.append(d))
    pending = producer.ids("PENDING")
    assert len(set(pending)) == 3
    time.sleep(0.2)
    assert not set(producer.ids("finished")) & set(pending[1:])  # both still waiting
    release.set()
    assert wait_for(lambda: len(done) == 3, 10), done
    assert fake_processor.batches == [[("db", 7, "raw")], [("db", 7, "all")]]  # merged into one job
    finished = producer.ids("finished")
    assert sorted(finished) == sorted(pending)
    # The merged-away id (third event) ends after the id of the job that did its work (second event)
    assert finished.index(pending[2]) > finished.index(pending[1])


def test_failed_or_abandoned_local_requests_get_processing_finished(local_handler, fake_processor):
    """Processing that fails without outcomes, and queued requests left at shutdown, end their ids too."""
    from backend.services.listener import RunEvent

    handler, producer = local_handler
    fake_processor.fail = True
    done = []
    for run_data in ("raw", "proc"):
        handler.handle(RunEvent("x", 1234, 8, run_data, time.time()), lambda: done.append(1))
    assert wait_for(lambda: len(done) == 2, 10)
    assert sorted(set(producer.ids("finished"))) == sorted(producer.ids("PENDING"))

    fake_processor.fail, fake_processor.delay = False, 1.0
    producer.sent.clear()
    handler.handle(RunEvent("x", 1234, 9, "raw", time.time()), lambda: done.append(1))
    assert wait_for(lambda: fake_processor.active, 10)
    handler.handle(RunEvent("x", 1234, 10, "raw", time.time()), lambda: done.append(1))  # queued
    handler.local.close(timeout=0.1)  # the listener stops: run 10 is left for the next one
    assert wait_for(lambda: sorted(producer.ids("finished")) == sorted(producer.ids("PENDING")), 10)
    assert len(done) == 3  # run 10's event was not marked done (not committed)


def test_unfinished_local_event_is_redelivered_after_listener_restart(
        fake_processor, tmp_path, kafka_broker, monkeypatch):
    """At-least-once: the listener stops while a run is being processed locally → the next listener
    gets the event again and processes it."""
    import threading

    ldir, db_dir = registered_db(tmp_path, {"allow_local_processing": True})
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # sbatch not found → local
    fake_processor.block_first = threading.Event()

    def start():
        bg = Listener(ldir, broker=kafka_broker.address,
                      consumer_options=FAST_GROUP_CONSUMER_SETTINGS).start_background()
        assert bg.wait_connected(30)
        return bg

    first = start()
    meta, = send_events(kafka_broker.address, migration(1234, 51))
    assert wait_for(lambda: fake_processor.batches, 30)
    first.stop()  # while run 51 is still being processed

    def committed():
        return _committed(kafka_broker.address, first.listener.group_id, meta.topic, meta.partition) or 0

    assert committed() <= meta.offset  # not past the unfinished event

    second = start()
    try:
        assert wait_for(lambda: len(fake_processor.batches) == 2, 60), fake_processor.batches
        assert fake_processor.batches[1] == [("db", 51, "raw")]
        assert wait_for(lambda: committed() == meta.offset + 1, 20)
        log = (db_dir / "process_logs" / "r51-p1234.out").read_text()
        assert "sbatch not found" in log and "processing locally" in log
    finally:
        second.stop()


def test_listen_test_mode_fakes_events(tmp_path, slurm_cluster, monkeypatch):
    """`damnit listen --test` works offline: typed events submit jobs."""
    ldir, db_dir = registered_db(tmp_path, damnit_python=fake_python(tmp_path))
    monkeypatch.setenv("AMORE_BROKER", "none")
    import io

    from backend.services import listener as lm

    monkeypatch.setattr("sys.stdin", io.StringIO("1234 8 proc\nnonsense\n"))
    monkeypatch.setattr(lm.sys, "executable", fake_python(tmp_path))
    assert lm.listen_test(ldir) == 0
    assert wait_for(lambda: calls(tmp_path), 30)
    assert calls(tmp_path)[0][2:5] == ["1234", "8", "proc"]


def test_failed_job_is_marked_in_the_run_log(listener_setup, kafka_broker, slurm_cluster, tmp_path):
    """A job that dies (here: exits 1 at once) is noticed by the listener's job check."""
    start, ldir, db_dir = listener_setup
    bg = start()
    failing = tmp_path / "failing-python"
    failing.write_text('#!/bin/bash\n[ "$1" = -c ] && exit 0  # passes the damnit_python probe\nexit 1\n')
    failing.chmod(0o755)
    with sqlite3.connect(db_dir / "runs.sqlite") as conn:  # the database names the jobs' interpreter
        conn.execute("UPDATE metameta SET value=? WHERE key='damnit_python'", (str(failing),))
    send_events(kafka_broker.address, migration(1234, 61))
    handler = bg.listener.handler
    assert wait_for(lambda: handler.watcher.jobs, 30)
    job_id = next(iter(handler.watcher.jobs))
    assert slurm_cluster.wait_job(int(job_id)) == "FAILED"
    handler.check_jobs()  # (or the listener's own check, every 15 s, notices it first)
    assert not handler.watcher.jobs
    log_path = db_dir / "process_logs" / "r61-p1234.out"
    line = f"Slurm job {job_id} for r61 (p1234, raw data) ended as FAILED"
    assert wait_for(lambda: line in log_path.read_text(), 30), log_path.read_text()


def test_use_slurm_off_processes_locally_without_calling_sbatch(fake_processor, tmp_path, monkeypatch):
    """`use_slurm 0` (a machine without Slurm): sbatch is never run, even when one is on PATH (an
    unreachable slurmctld can take a minute to refuse), and the run is processed in the listener."""
    from backend.services.listener import EventHandler, RunEvent
    from backend.services.local_processing import LocalProcessing

    ldir, db_dir = registered_db(tmp_path, {"use_slurm": False})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "sbatch-was-called"
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with ListenerDB(ldir) as ldb:
        assert ldb.setting("use_slurm") is False and ldb.setting("allow_local_processing") is False
    producer = RecordingProducer()
    handler = EventHandler(ldir, producer, LocalProcessing(producer, max_concurrent=1))
    try:
        done = []
        handler.handle(RunEvent("migration_complete", 1234, 12, "raw", time.time()), lambda: done.append(1))
        assert wait_for(lambda: done, 10)
        assert fake_processor.batches == [[("db", 12, "raw")]]
        assert not marker.exists()
    finally:
        handler.local.close()
        handler.close()


def test_use_slurm_off_starts_context_workers_before_the_first_event(tmp_path):
    """With every run processed in the listener, its processor and a context worker start with the
    listener, so the first event does not pay for them."""
    ldir, db_dir = registered_db(tmp_path, {"use_slurm": False})
    (db_dir / "context.py").write_text("from damnit_ctx import Variable\n\n@Variable()\ndef one(run):\n"
                                       "    return 1\n")
    listener = Listener(ldir, broker="127.0.0.1:9", producer=RecordingProducer())  # never connects
    try:
        queue = listener.handler.local._queues[db_dir]
        assert wait_for(lambda: queue.processor is not None and queue.processor._context_cache is not None, 60)
        assert len(queue.processor._pool._workers) == 1
        assert "one" in queue.processor._context_cache[1]["variables"]
    finally:
        listener.handler.local.close()
        listener.handler.close()
