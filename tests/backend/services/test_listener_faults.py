"""The listener under faults, with the real broker and Slurm: poison messages, a Slurm outage, a batch
longer than the Kafka poll interval, a broker outage, a cancelled job (issue 13)."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.cli import main as damnit_main
from backend.services.listener import CONSUMER_GROUP, mirror_waiting
from backend.services.listener_db import ListenerDB
from backend.storage import processing_state
from backend.storage.database import DamnitDB
from tests.backend.services.test_listener import (
    _committed,
    calls,
    fake_processor,  # noqa: F401 (a fixture)
    fake_python,
    listener_setup,  # noqa: F401 (a fixture)
    migration,
    registered_db,
    send_events,
    wait_for,
)
from tests.backend.services.test_services_e2e import (
    PROPOSAL,
    db_values,
    setup,  # noqa: F401 (a fixture)
    values_updated_for,
)
from tests.infra import REPO

POISON = [
    None,  # a tombstone
    {"event": ["migration_complete"], "proposal": 1234, "run": 1},
    {"event": {"name": "migration_complete"}, "proposal": 1234, "run": 1},
    b'{"event": "migration_complete", "proposal": Infinity, "run": 1}',
    b"[" * 200_000 + b"]" * 200_000,  # deeper than Python's recursion limit
    {"event": "migration_complete", "proposal": 1234, "run": 150.7},
]


def job_python(tmp_path: Path) -> str:
    """Like ``fake_python``, for a listener in another process: it passes the probe of the database's
    interpreter (``-c "import backend.services.job"``) without counting it as a job."""
    script = Path(fake_python(tmp_path))
    script.write_text('#!/bin/bash\n[ "$1" = -c ] && exit 0\n' + script.read_text().split("\n", 1)[1])
    return str(script)


class ListenProcess:
    """``damnit listen DIR`` in a process of its own, as supervisord runs it; its log is DIR/damnit.log."""

    def __init__(self, listener_dir: Path, broker_address: str):
        self.dir = listener_dir
        self.log_path = listener_dir / "damnit.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "AMORE_BROKER": broker_address}
        self.stderr = open(listener_dir / "stderr.txt", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "listen", str(listener_dir)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=subprocess.STDOUT)

    def lines(self) -> list[str]:
        return self.log_path.read_text().splitlines() if self.log_path.exists() else []

    def wait_for_line(self, pattern: str, timeout: float, after: int = 0) -> int:
        """Index of the first log line from ``after`` on that contains ``pattern``."""
        def find():
            for i, line in enumerate(self.lines()[after:], after):
                if pattern in line:
                    return i
            return None

        assert wait_for(lambda: find() is not None or self.proc.poll() is not None, timeout)
        assert self.proc.poll() is None, f"damnit listen exited ({self.proc.returncode}):\n" + "\n".join(self.lines())
        return find()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode


# ---------------------------------------------------------------- no message stops the listener

def test_poison_messages_do_not_stop_damnit_listen(tmp_path, kafka_broker, slurm_cluster):
    python = job_python(tmp_path)
    ldir, db_dir = registered_db(tmp_path, damnit_python=python)
    listen = ListenProcess(ldir, kafka_broker.address)
    try:
        listen.wait_for_line("Listening for run events", 90)
        sent = send_events(kafka_broker.address, *POISON, migration(1234, 9))
        assert wait_for(lambda: calls(tmp_path), 90), "the valid event after the poison was not processed"
        assert [c[2:5] for c in calls(tmp_path)] == [["1234", "9", "raw"]]
        assert listen.proc.poll() is None, "damnit listen died"

        # Everything is committed past: a restarted listener will not meet the poison again
        group = CONSUMER_GROUP.format(str(ldir.absolute()).replace("/", "_"))
        assert wait_for(lambda: all((_committed(kafka_broker.address, group, m.topic, m.partition) or 0) > m.offset
                                    for m in sent), 30)
        # ... and each poison message was logged once, with where it came from
        log_text = "\n".join(listen.lines())
        for meta in sent[:len(POISON)]:
            assert log_text.count(f"Dead-lettered the message at {meta.topic}[{meta.partition}]@{meta.offset}:") == 1
        assert "Traceback" not in log_text
    finally:
        assert listen.stop() == 0

    with ListenerDB(ldir) as ldb:
        kept = {(d.topic, d.partition, d.offset): d for d in ldb.dead_letters()}
    assert len(kept) == len(POISON)
    letters = [kept[m.topic, m.partition, m.offset] for m in sent[:len(POISON)]]  # in the order sent
    errors = [d.error for d in letters]
    assert "tombstone" in errors[0] and letters[0].value is None
    assert "'event' is a list" in errors[1] and "'event' is a dict" in errors[2]
    assert "proposal must be a positive integer, not inf" in errors[3]
    assert "nested too deeply" in errors[4] and letters[4].size == 400_000 and len(letters[4].value) == 64 * 1024
    assert "run must be a positive integer, not 150.7" in errors[5]


def test_dead_letters_are_listed_by_the_cli(tmp_path, kafka_broker, monkeypatch, capsys):
    ldir = tmp_path / "listener"
    ldir.mkdir()
    with ListenerDB(ldir) as ldb:
        assert ldb.add_dead_letter("test.r2d2", 0, 17, 1_700_000_000_000, b'{"run": 150.7}\x1b[31m', "run must be...")
        assert not ldb.add_dead_letter("test.r2d2", 0, 17, 1_700_000_000_000, b"again", "x")  # re-delivered: kept once
        assert ldb.add_dead_letter("test.r2d2", 1, 3, None, None, "empty message (a tombstone)")
    monkeypatch.chdir(ldir)
    assert damnit_main(["listener", "dead-letters"]) == 0
    out = capsys.readouterr().out
    assert "test.r2d2[0]@17 (19 bytes): run must be..." in out and "test.r2d2[1]@3 (tombstone)" in out
    assert "\x1b" not in out and "\\x1b[31m" in out  # control characters are shown, never acted upon
    assert damnit_main(["listener"]) == 0
    assert "2 messages in the dead-letter record" in capsys.readouterr().out
    assert damnit_main(["listener", "dead-letters", "--show", "1"]) == 0
    assert "from test.r2d2 partition 0 offset 17" in capsys.readouterr().out
    assert damnit_main(["listener", "dead-letters", "--delete-all"]) == 0
    assert damnit_main(["listener", "dead-letters"]) == 0
    assert "No messages in the dead-letter record" in capsys.readouterr().out


# ---------------------------------------------------------------- no outage loses a run

def test_slurm_outage_loses_no_run(setup, slurm_cluster, monkeypatch, capsys, caplog):  # noqa: F811
    """slurmctld down, local processing off: runs wait in listener.sqlite (durably: the listener is
    restarted meanwhile), are shown with why, and are all processed once slurmctld is back."""
    s = setup
    caplog.set_level(logging.INFO, logger="backend.services")
    with ListenerDB(s["ldir"]) as ldb:
        ldb.settings["slurm_retry_interval"] = 2
        ldb.settings["slurm_retry_max_interval"] = 4
    slurm_cluster.stop_controller()
    try:
        first = s["start_listener"]()
        sent = send_events(s["broker"].address, *[migration(PROPOSAL, r) for r in (1, 2, 3)])
        ldb = ListenerDB(s["ldir"])
        try:
            assert wait_for(lambda: len(ldb.waiting()) == 3, 120), ldb.waiting()
            entries = ldb.waiting()
        finally:
            ldb.close()
        assert sorted(e.run for e in entries) == [1, 2, 3]  # (handled concurrently: in any order)
        assert all("Unable to contact slurm controller" in e.reason for e in entries), entries[0].reason
        # Durably queued, so committed
        assert wait_for(lambda: all((_committed(s["broker"].address, first.listener.group_id, m.topic, m.partition)
                                     or 0) > m.offset for m in sent), 30)
        # Shown where people look: the CLI, and runs.sqlite for dashboards
        monkeypatch.chdir(s["ldir"])
        assert damnit_main(["listener", "waiting"]) == 0
        out = capsys.readouterr().out
        assert all(f"p{PROPOSAL} r{r} (raw data)" in out for r in (1, 2, 3)) and "Unable to contact slurm" in out
        with DamnitDB.from_dir(s["db_dir"]) as db:
            assert sorted((w.run, w.run_data) for w in processing_state.waiting(db)) == [(1, "raw"), (2, "raw"),
                                                                                          (3, "raw")]
        log_text = (s["db_dir"] / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()
        assert "Could not submit a Slurm job for r1" in log_text and "damnit listener waiting" in log_text

        first.stop()  # a restart while Slurm is away: the queue is in listener.sqlite
        s["start_listener"]()
        assert wait_for(lambda: sum(r.getMessage().startswith("Slurm unavailable") for r in caplog.records) == 2, 60)
        time.sleep(5)  # probes fail meanwhile, quietly
    finally:
        slurm_cluster.start_controller()
    for run in (1, 2, 3):
        s["msgs"].wait(values_updated_for(run), timeout=240)
        assert db_values(s["db_dir"], run)["n_trains"] == 20
    with ListenerDB(s["ldir"]) as ldb:
        assert wait_for(lambda: not ldb.waiting(), 30)
    with DamnitDB.from_dir(s["db_dir"]) as db:
        assert processing_state.waiting(db) == []
        assert processing_state.failures(db) == []
    # Quiet logs: one line per listener when Slurm went away, one when it was back
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Slurm unavailable") for m in messages) == 2
    assert not any("still unavailable" in m for m in messages)  # (less than a minute)
    assert sum(m.startswith("Slurm available again") for m in messages) == 1
    # The jobs closed their Kafka producer: no asyncio complaints at the end of their logs
    for run in (1, 2, 3):
        text = (s["db_dir"] / "process_logs" / f"r{run}-p{PROPOSAL}.out").read_text()
        assert "Processing r" in text
        assert "Unclosed AIOKafkaProducer" not in text and "Task was destroyed" not in text


def test_batch_longer_than_the_poll_interval_processes_each_run_once(setup, slurm_cluster):  # noqa: F811
    """The issue's case: local fallback on, slurmctld down (each sbatch takes ~9 s to fail), slow runs,
    and a Kafka poll interval shorter than all that. The consumer keeps polling, stays in its group,
    and no run is processed twice."""
    s = setup
    ctx = s["db_dir"] / "context.py"
    ctx.write_text(ctx.read_text() + '''

@Variable(title="Slow")
def slow(run):
    import time
    time.sleep(3)
    return 1
''')
    with ListenerDB(s["ldir"]) as ldb:
        ldb.settings["allow_local_processing"] = True
        ldb.settings["kafka_max_poll_interval"] = 5
        ldb.settings["local_processing_concurrency"] = 1
    slurm_cluster.stop_controller()
    try:
        bg = s["start_listener"]()
        t0 = time.monotonic()
        send_events(s["broker"].address, *[migration(PROPOSAL, r) for r in (1, 2, 3)])
        for run in (1, 2, 3):
            s["msgs"].wait(values_updated_for(run), timeout=240)
        took = time.monotonic() - t0
        time.sleep(8)  # a consumer dropped from its group would have the events again by now
    finally:
        slurm_cluster.start_controller()
    assert took > 10, f"the batch took {took:.0f} s, not longer than the 5 s poll interval"
    for run in (1, 2, 3):
        log_text = (s["db_dir"] / "process_logs" / f"r{run}-p{PROPOSAL}.out").read_text()
        assert log_text.count(f"----- Processing r{run} ") == 1, log_text
        assert db_values(s["db_dir"], run)["slow"] == 1
    assert bg.listener.assignments == 1, "the consumer left its group (a rebalance)"


def test_repeated_event_is_not_submitted_again_while_its_job_is_queued(listener_setup, kafka_broker,  # noqa: F811
                                                                       tmp_path, caplog):
    start, ldir, db_dir = listener_setup
    caplog.set_level(logging.INFO, logger="backend.services")
    start()
    send_events(kafka_broker.address, migration(1234, 5), migration(1234, 5), migration(1234, 5),
                {"event": "run_corrections_complete", "proposal": 1234, "run": 5})
    assert wait_for(lambda: len(calls(tmp_path)) >= 2, 60)
    time.sleep(2)
    assert sorted(c[4] for c in calls(tmp_path)) == ["proc", "raw"]
    assert caplog.text.count("not submitted again") == 2


# ---------------------------------------------------------------- quiet logs in a broker outage

def test_broker_outage_is_logged_in_a_few_lines(tmp_path, kafka_broker, slurm_cluster):
    python = job_python(tmp_path)
    ldir, db_dir = registered_db(tmp_path, damnit_python=python)
    listen = ListenProcess(ldir, kafka_broker.address)
    try:
        listen.wait_for_line("Listening for run events", 90)
        send_events(kafka_broker.address, migration(1234, 1))
        assert wait_for(lambda: len(calls(tmp_path)) == 1, 60)
        time.sleep(1)
        before = len(listen.lines())
        kafka_broker.stop()
        time.sleep(30)
        kafka_broker.start()  # (empty: Tansu keeps topics and groups in memory)
        back = listen.wait_for_line("available again", 60, after=before)
        time.sleep(5)  # the consumer rejoins meanwhile
        during = listen.lines()[before:]
        send_events(kafka_broker.address, migration(1234, 2))
        assert wait_for(lambda: len(calls(tmp_path)) == 2, 120), "no event processed after the outage"
    finally:
        assert listen.stop() == 0
    text = "\n".join(during)
    assert len(during) < 10, f"{len(during)} lines in a 30 s outage:\n{text}"
    assert sum("Kafka broker" in line and "unavailable:" in line for line in during) == 1, text
    assert re.search(r"available again after 3\d s", during[back - before]), text


# ---------------------------------------------------------------- failed runs are visible

def test_cancelled_job_marks_the_run_failed_and_reprocess_clears_it(setup, slurm_cluster):  # noqa: F811
    s = setup
    blockers = [slurm_cluster.sbatch("--cpus-per-task=1", "--mem=10M", wrap="sleep 300") for _ in range(2)]
    try:
        assert all(wait_for(lambda b=b: slurm_cluster.job_state(b) == "RUNNING", 30) for b in blockers)
        bg = s["start_listener"]()
        send_events(s["broker"].address, migration(PROPOSAL, 3))
        pending = s["msgs"].wait(lambda k, d: k == "processing_state_set" and d["run"] == 3 and d["slurm_job_id"])[1]
        job_id = pending["slurm_job_id"]
        slurm_cluster.run("scancel", job_id)  # by an admin, say: not through DAMNIT
        assert slurm_cluster.wait_job(int(job_id)) == "CANCELLED"
        bg.listener.handler.check_jobs()  # (its own check, every 15 s, may be the one that notices)

        def failure_now():
            with DamnitDB.from_dir(s["db_dir"]) as db:
                return processing_state.failure(db, PROPOSAL, 3)

        assert wait_for(lambda: failure_now() is not None, 30)
        failure = failure_now()
        assert failure.kind == processing_state.CANCELLED
        assert failure.slurm_job_id == job_id and f"Slurm job {job_id} ended as CANCELLED" in failure.reason
        assert failure.context_sha256 == processing_state.context_fingerprint(s["db_dir"])[0]
        s["msgs"].wait(lambda k, d: k == "processing_finished" and d["processing_id"] == pending["processing_id"])
        with ListenerDB(s["ldir"]) as ldb:
            assert wait_for(lambda: ldb.watched_jobs() == [], 30)
    finally:
        for b in blockers:
            slurm_cluster.run("scancel", str(b), check=False)

    # Re-queued with `damnit reprocess`: processed, and no longer marked failed
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", "3"], cwd=s["db_dir"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    s["msgs"].wait(lambda k, d: k == "run_values_updated" and d["run"] == 3 and "spec_peak" in d["values"],
                   timeout=180)
    with DamnitDB.from_dir(s["db_dir"]) as db:
        assert wait_for(lambda: processing_state.failure(db, PROPOSAL, 3) is None, 30)
    assert db_values(s["db_dir"], 3)["n_trains"] == 20


def test_cancel_from_dashboard_marks_the_run_failed(tmp_path, slurm_cluster):
    """``slurm.cancel_job`` (what the dashboard's cancel button calls) marks the run at once, with who."""
    from backend.processing.requests import RunRequest
    from backend.services import slurm

    ldir, db_dir = registered_db(tmp_path, damnit_python=fake_python(tmp_path))
    blockers = [slurm_cluster.sbatch("--cpus-per-task=1", "--mem=10M", wrap="sleep 300") for _ in range(2)]
    try:
        job = slurm.SlurmSubmitter(db_dir).submit(RunRequest(1234, 4, "raw"))
        assert slurm.cancel_job(job.job_id, db_dir=db_dir, proposal=1234, run=4).cancelled
        with DamnitDB.from_dir(db_dir) as db:
            failure = processing_state.failure(db, 1234, 4)
        assert failure.kind == processing_state.CANCELLED and "cancelled by" in failure.reason
        # The listener's watcher, seeing the job CANCELLED later, keeps the more precise reason
        watcher = slurm.JobWatcher()
        watcher.watch(job, db_dir, None)
        assert slurm_cluster.wait_job(int(job.job_id)) == "CANCELLED"
        assert [st for _, st in watcher.poll()][0].startswith("CANCELLED")
        with DamnitDB.from_dir(db_dir) as db:
            assert processing_state.failure(db, 1234, 4).reason == failure.reason
    finally:
        for b in blockers:
            slurm_cluster.run("scancel", str(b), check=False)


def test_context_syntax_error_is_reported_not_hidden(tmp_path):
    """A context file broken while the workers are warm: the batch fails with the SyntaxError (it used
    to be hidden by ``KeyError: 'N is not registered'`` from ``WorkerPool.close()``), and the runs are
    marked failed with that context version; fixing the file and processing again clears them."""
    from backend.base.messages import UpdateProducer
    from backend.processing.requests import RunRequest
    from backend.processing.run_processor import ContextLoadError, RunProcessor
    from backend.storage.damnit_folder import initialize_proposal

    good = "from damnit_ctx import Variable\n\n@Variable()\ndef x(run):\n    return 1\n"
    for trial in range(4):  # the race needed a few tries to show
        db_dir = tmp_path / f"db{trial}"
        initialize_proposal(db_dir, 1234).close()
        (db_dir / "context.py").write_text(good)
        processor = RunProcessor(db_dir, producer=UpdateProducer.offline(), n_workers=1)
        try:
            processor.warm_up()
            time.sleep(0.3)
            (db_dir / "context.py").write_text(good.replace("x(run):", "x(run:"))
            broken = processing_state.context_fingerprint(db_dir)[0]
            with pytest.raises(ContextLoadError, match="SyntaxError"):
                list(processor.process([RunRequest(1234, r, "raw", mock=True) for r in (18, 19)]))
        finally:
            processor.close()
        with DamnitDB.from_dir(db_dir) as db:
            failed = processing_state.failed_with_context(db, broken)
            assert [(f.run, f.kind) for f in failed] == [(18, "context"), (19, "context")]
            assert "SyntaxError" in failed[0].reason
    (db_dir / "context.py").write_text(good)
    with DamnitDB.from_dir(db_dir) as db:
        assert [f.run for f in processing_state.failed_with_other_context(
            db, processing_state.context_fingerprint(db_dir)[0])] == [18, 19]
    with RunProcessor(db_dir, producer=UpdateProducer.offline(), n_workers=1) as processor:
        outcomes = list(processor.process([RunRequest(1234, 18, "raw", mock=True)]))
    assert not outcomes[0].run_error
    with DamnitDB.from_dir(db_dir) as db:
        assert [f.run for f in processing_state.failures(db)] == [19]


# ---------------------------------------------------------------- outage logging, pure logic

def test_outage_logs_once_summarises_each_minute_and_says_when_back(caplog):
    from backend.services.outages import Outage

    now = [0.0]
    outage = Outage("Slurm", logging.getLogger("test.outage"), clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="test.outage")
    assert not outage.recovered()  # was never away: nothing to say
    assert outage.failed("sbatch: Unable to contact slurm controller", "runs wait")
    for t in range(1, 150):  # a failed attempt every second for 2.5 min, client noise too
        now[0] = float(t)
        assert not outage.failed("sbatch: Unable to contact slurm controller")
        assert outage.suppressed()
        outage.tick("3 runs waiting")
    now[0] = 155.0
    assert outage.recovered()
    assert not outage.suppressed()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Slurm unavailable: sbatch: Unable to contact slurm controller; runs wait"
    assert [m.split(" (")[0] for m in lines[1:3]] == ["Slurm still unavailable after 60 s",
                                                      "Slurm still unavailable after 2 min"]
    assert "3 runs waiting" in lines[1] and "149 client messages" not in lines[1]
    assert lines[3] == "Slurm available again after 2 min 35 s (150 failed attempts, 149 client messages not logged)"
    assert len(lines) == 4


def test_kafka_client_log_holds_connection_errors_until_the_broker_is_checked(caplog):
    from backend.services.outages import KafkaClientLog, Outage

    outage = Outage("Kafka broker b:1", logging.getLogger("test.broker"))
    checks = []
    client_log = KafkaClientLog(outage, checks.append)
    client_log.install()
    caplog.set_level(logging.INFO)
    aiokafka_log = logging.getLogger("aiokafka.conn")
    try:
        aiokafka_log.error("Unable connect to node with id %s: %s", 0, "Connect call failed")
        assert checks == ["Unable connect to node with id 0: Connect call failed"]
        assert not [r for r in caplog.records if r.name.startswith("aiokafka")]  # held
        client_log.resolve(down=False)  # a passing hiccup: what aiokafka said is logged after all
        assert [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")] == [checks[0]]
        for _ in range(100):  # the same warning again and again: once a minute at most
            logging.getLogger("aiokafka.consumer").warning("Heartbeat failed: %s", "rebalancing")
        logging.getLogger("aiokafka.consumer").info("Joined group")  # INFO: only with --debug
        assert sum(r.name == "aiokafka.consumer" for r in caplog.records) == 1
        caplog.clear()
        outage.failed("Connect call failed")  # an outage: everything aiokafka says is only counted
        for _ in range(500):
            aiokafka_log.error("Unable to update metadata from %s", [0])
        assert [r.getMessage() for r in caplog.records] == ["Kafka broker b:1 unavailable: Connect call failed"]
        assert outage.suppressed_messages == 500
    finally:
        client_log.uninstall()
    assert logging.getLogger("aiokafka").propagate


def test_consumer_pauses_when_too_many_events_are_in_flight(fake_processor, tmp_path,  # noqa: F811
                                                             kafka_broker, monkeypatch):
    """Local processing blocked: reading stops at MAX_IN_FLIGHT events in progress, goes on when they
    are through, and every event is processed once."""
    import threading

    from backend.services import listener as listener_mod
    from backend.services.listener import Listener
    from tests.infra.kafka import FAST_GROUP_CONSUMER_SETTINGS

    monkeypatch.setattr(listener_mod, "MAX_IN_FLIGHT", 4)
    ldir, db_dir = registered_db(tmp_path, {"use_slurm": False})
    release = fake_processor.block_first = threading.Event()
    fake_processor.block_timeout, fake_processor.delay = 60, 0.05
    bg = Listener(ldir, broker=kafka_broker.address, consumer_options=FAST_GROUP_CONSUMER_SETTINGS).start_background()
    try:
        assert bg.wait_connected(30)
        send_events(kafka_broker.address, *[migration(1234, r) for r in range(1, 11)])
        assert wait_for(lambda: bg.listener._paused, 30), "reading did not pause"
        send_events(kafka_broker.address, *[migration(1234, r) for r in range(11, 21)])
        time.sleep(2)
        assert bg.listener.events_handled == 10  # the next ten wait in the broker
        release.set()
        assert wait_for(lambda: sorted(r for b in fake_processor.batches for _, r, _ in b) == list(range(1, 21)), 60), \
            fake_processor.batches
        assert bg.listener.events_handled == 20
        assert wait_for(lambda: not bg.listener._paused, 10)
    finally:
        release.set()
        bg.stop()


def test_waiting_run_leaves_the_queue_only_once_processed(fake_processor, tmp_path, monkeypatch):  # noqa: F811
    """No sbatch here and local processing off: the run waits. Local processing turned on: the next
    retry processes it in the listener, and it leaves the durable queue only when that is done."""
    import threading

    from backend.services.listener import EventHandler, RunEvent
    from backend.services.local_processing import LocalProcessing
    from tests.backend.services.test_listener import RecordingProducer

    ldir, db_dir = registered_db(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    producer = RecordingProducer()
    handler = EventHandler(ldir, producer, LocalProcessing(producer, max_concurrent=1))
    try:
        done = []
        handler.handle(RunEvent("migration_complete", 1234, 5, "raw", time.time()), lambda: done.append(1))
        assert done == [1]  # durably queued: the event may be acknowledged
        entry, = handler.db.waiting()
        assert "sbatch not found" in entry.reason and fake_processor.batches == []
        assert producer.ids("PENDING") == [entry.processing_id]  # dashboards see it queued
        with DamnitDB.from_dir(db_dir) as db:
            assert [(w.run, w.reason) for w in processing_state.waiting(db)] == [(5, entry.reason)]

        handler.db.settings["allow_local_processing"] = True
        release = fake_processor.block_first = threading.Event()
        handler.db.retry_waiting_now()
        handler.retry_waiting()
        assert wait_for(lambda: fake_processor.batches, 10)
        assert [e.reason for e in handler.db.waiting()] == ["being processed in the listener"]
        handler.retry_waiting()  # not due again while it is processed
        # proc data announced meanwhile: merged into the waiting entry, which stays for that part
        handler.handle(RunEvent("run_corrections_complete", 1234, 5, "proc", time.time()), lambda: done.append(2))
        assert done == [1, 2]
        release.set()
        assert wait_for(lambda: handler.db.waiting() and handler.db.waiting()[0].next_attempt == 0, 10)
        handler.retry_waiting()
        assert wait_for(lambda: not handler.db.waiting(), 10)
        assert fake_processor.batches == [[("db", 5, "raw")], [("db", 5, "all")]]
        with DamnitDB.from_dir(db_dir) as db:
            assert processing_state.waiting(db) == []
    finally:
        handler.local.close()
        handler.close()


def test_waiting_runs_cli(tmp_path, monkeypatch, capsys):
    """`damnit listener waiting` lists, retries and drops waiting runs (dropping clears the dashboards' copy)."""
    ldir, db_dir = registered_db(tmp_path)
    monkeypatch.setenv("AMORE_BROKER", "none")
    with ListenerDB(ldir) as ldb:
        for run in (7, 8):
            entry, new = ldb.add_waiting(db_dir, 1234, run, "raw", "migration_complete", added_at=None,
                                         processing_id=f"id-{run}", reason="sbatch: Invalid partition name specified",
                                         next_attempt=time.time() + 300)
            assert new
            mirror_waiting(entry)
        assert not ldb.add_waiting(db_dir, 1234, 7, "proc", "run_corrections_complete", added_at=None,
                                   processing_id="other", reason="x", next_attempt=0)[1]  # merged
    monkeypatch.chdir(ldir)
    assert damnit_main(["listener", "waiting"]) == 0
    out = capsys.readouterr().out
    assert "#1 p1234 r7 (all data)" in out and "#2 p1234 r8 (raw data)" in out and "next in 30" in out
    assert "why: sbatch: Invalid partition name specified" in out
    assert damnit_main(["listener"]) == 0
    assert "2 runs waiting to be submitted" in capsys.readouterr().out
    assert damnit_main(["listener", "waiting", "--retry"]) == 0
    assert "2 waiting runs will be tried now" in capsys.readouterr().out
    with ListenerDB(ldir) as ldb:
        assert len(ldb.due_waiting()) == 2 and ldb.take_retry_request() and not ldb.take_retry_request()
    assert damnit_main(["listener", "waiting", "--drop", "9"]) == 1
    assert damnit_main(["listener", "waiting", "--drop", "1"]) == 0
    assert "Dropped #1 p1234 r7" in capsys.readouterr().out
    with ListenerDB(ldir) as ldb:
        assert [e.run for e in ldb.waiting()] == [8]
    with DamnitDB.from_dir(db_dir) as db:
        assert [w.run for w in processing_state.waiting(db)] == [8]
