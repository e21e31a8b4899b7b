"""Fragments from other producers (the original's ``damnit.submit()``) merged by ``damnit combiner``."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import h5py

from backend.base.messages import UpdateSubscriber
from backend.services import combiner
from backend.storage.damnit_folder import initialize_proposal

SUBMIT = """
import numpy as np, damnit
damnit.submit(1234, 7, {{"tool_value": np.float64({value}), "tool_array": np.arange(5.0) + 1}},
              provenance="my-tool", errors={{"tool_err": ValueError("bad input")}}, damnit_dir={db!r})
print("ok")
"""


def make_db(tmp_path):
    ctx = tmp_path / "ctx.py"
    ctx.write_text("")
    db = initialize_proposal(tmp_path / "db", 1234, context_file_src=ctx)
    db_id = db.metameta["db_id"]
    db.close()
    return tmp_path / "db", db_id


def db_rows(db_dir):
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    try:
        return {n: (v, a) for n, v, a in conn.execute(
            "SELECT name, value, attributes FROM run_variables WHERE proposal=1234 AND run=7")}
    finally:
        conn.close()


def test_combiner_now_merges_original_fragments(tmp_path, damnit_oracle, kafka_broker, monkeypatch):
    db_dir, db_id = make_db(tmp_path)
    # Two submissions from the original: the second value wins, the error stays
    for value in (1.5, 2.5):
        damnit_oracle.run_python(SUBMIT.format(value=value, db=str(db_dir)), env={"AMORE_BROKER": "none"})
        time.sleep(0.05)
    fragments = list((db_dir / "extracted_data").glob("*.ready.h5"))
    assert len(fragments) == 2
    got = []
    monkeypatch.setenv("AMORE_BROKER", kafka_broker.address)
    with UpdateSubscriber(db_id, lambda k, d: got.append((k, d)), broker=kafka_broker.address):
        from backend.cli import main

        assert main(["combiner", "now", str(db_dir)]) == 0
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not list((db_dir / "extracted_data").glob("*.ready.h5"))
    rows = db_rows(db_dir)
    assert rows["tool_value"][0] == 2.5
    assert rows["tool_err"][0] is None and "bad input" in rows["tool_err"][1]
    with h5py.File(db_dir / "extracted_data" / "p1234_r7.h5", "r") as f:
        assert list(f["tool_array/data"][()]) == [1, 2, 3, 4, 5]
        assert f.attrs["provenance"] == "my-tool"
    assert got[-1] == ("run_values_updated", {"proposal": 1234, "run": 7, "values": {
        "tool_array": None, "tool_err": None, "tool_value": None}})


def test_combiner_service_consumes_file_submissions(tmp_path, damnit_oracle, kafka_broker):
    db_dir, db_id = make_db(tmp_path)
    got = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    from tests.infra.kafka import FAST_GROUP_CONSUMER_SETTINGS

    thread = threading.Thread(target=loop.run_until_complete, daemon=True, args=(
        combiner.run_combiner(kafka_broker.address, stop, FAST_GROUP_CONSUMER_SETTINGS),))
    thread.start()
    try:
        with UpdateSubscriber(db_id, lambda k, d: got.append((k, d)), broker=kafka_broker.address):
            # A foreign message on the topic is skipped
            from backend.base.messages import UpdateProducer

            with UpdateProducer.from_env(kafka_broker.address) as p:
                p.send(combiner.FILE_SUBMISSION_TOPIC, {"msg_kind": "file_submission", "data": {"oops": 1}})
            damnit_oracle.run_python(SUBMIT.format(value=3.5, db=str(db_dir)),
                                     env={"AMORE_BROKER": kafka_broker.address})
            deadline = time.monotonic() + 60
            while not got and time.monotonic() < deadline:
                time.sleep(0.1)
        assert got and got[0][0] == "run_values_updated" and got[0][1]["run"] == 7
        assert db_rows(db_dir)["tool_value"][0] == 3.5
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
