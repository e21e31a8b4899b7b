"""The test infrastructure itself: each real component starts and does its basic job."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from backend.base import mockruns
from tests.infra.aio import run_async
from tests.infra.kafka import FAST_GROUP_CONSUMER_SETTINGS


@pytest.mark.browser
def test_chromium_renders_data_url(page):
    page.goto("data:text/html,<html><body><h1 id='t'>hello damnit</h1>"
              "<script>document.title = 'ok ' + (6 * 7)</script></body></html>")
    assert page.text_content("#t") == "hello damnit"
    assert page.title() == "ok 42"
    assert page.console_errors == []


@pytest.mark.browser
@pytest.mark.kafka
def test_async_code_inside_a_browser_test(page, kafka_broker):
    page.goto("data:text/html,<p>x</p>")
    received = run_async(_round_trip, kafka_broker.address, "test.infra.in-browser-test", [{"y": 2}])
    assert received == [{"y": 2}]


async def _round_trip(address: str, topic: str, payloads: list[dict]) -> list[dict]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=address)
    await producer.start()
    try:
        for p in payloads:
            await producer.send_and_wait(topic, json.dumps(p).encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=address, group_id="infra-test",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **FAST_GROUP_CONSUMER_SETTINGS)
    await consumer.start()
    received = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(payloads) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                received += [json.loads(r.value) for r in records]
        await consumer.commit()
    finally:
        await consumer.stop()
    return received


@pytest.mark.kafka
def test_kafka_produce_consume_round_trip(kafka_broker):
    payloads = [{"msg_kind": "run_values_updated", "data": {"run": i}} for i in range(5)]
    received = asyncio.run(_round_trip(kafka_broker.address, "test.infra.roundtrip", payloads))
    assert sorted(m["data"]["run"] for m in received) == list(range(5))


@pytest.mark.kafka
def test_kafka_broker_restarts_on_same_port(kafka_broker):
    address = kafka_broker.address
    kafka_broker.kill()
    assert not kafka_broker.running
    kafka_broker.start()
    assert kafka_broker.address == address
    received = asyncio.run(_round_trip(address, "test.infra.after-restart", [{"x": 1}]))
    assert received == [{"x": 1}]


@pytest.mark.kafka
def test_kafka_broker_left_stopped_is_restarted_for_the_next_test(kafka_broker):
    # The fixture calls start() for every test; start() must bring a stopped broker back on its port.
    address = kafka_broker.address
    kafka_broker.stop()
    kafka_broker.start()
    assert kafka_broker.running and kafka_broker.address == address
    kafka_broker.stop()  # left stopped on purpose: the following tests get it running again


@pytest.mark.kafka
def test_amore_broker_env(amore_broker):
    import os

    assert os.environ["AMORE_BROKER"] == amore_broker.address


@pytest.mark.slurm
def test_slurm_job_runs_to_completion(slurm_cluster, monkeypatch):
    monkeypatch.setenv("INFRA_MARKER", "exported-env")
    job = slurm_cluster.sbatch("--job-name=infra", wrap="echo $INFRA_MARKER; echo done on $SLURM_JOB_NODELIST")
    assert slurm_cluster.wait_job(job, timeout=60) == "COMPLETED"
    assert slurm_cluster.job_output(job).split() == ["exported-env", "done", "on", "localhost"]


@pytest.mark.slurm
def test_slurm_cancelled_job_state(slurm_cluster):
    import subprocess

    job = slurm_cluster.sbatch(wrap="sleep 120")
    # The fixture exported SLURM_CONF, so plain commands reach the cluster.
    subprocess.run(["scancel", str(job)], check=True)
    assert slurm_cluster.wait_job(job, timeout=30) == "CANCELLED"
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["CANCELLED"]


def test_supervisor_controls_a_program(make_supervisor):
    sup = make_supervisor({"sleeper": "sleep 600"})
    deadline = time.monotonic() + 10
    while "RUNNING" not in sup.ctl("status", "sleeper").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "RUNNING" in sup.ctl("status", "sleeper").stdout
    assert sup.ctl("stop", "sleeper").returncode == 0
    status = sup.ctl("status", "sleeper")
    assert status.returncode == 3 and "STOPPED" in status.stdout


@pytest.mark.oracle
def test_oracle_imports_damnit_and_reads_mock_runs(damnit_oracle, make_mock_runs, mock_data_root, tmp_path):
    make_mock_runs(4321, [1])
    result = damnit_oracle.run_json(
        "import json, damnit, damnit.backend, extra_data\n"
        "run = extra_data.open_run(4321, 1)\n"
        "e = run['SA1_XTD2_XGM/DOOCS/MAIN', 'pulseEnergy.photonFlux'].ndarray()\n"
        "print(json.dumps({'version': damnit.__version__, 'file': damnit.__file__, 'mean': float(e.mean())}))",
        cwd=tmp_path)
    assert result["version"] == "0.4.0"
    assert str(damnit_oracle.venv) in result["file"]
    assert result["mean"] > 0
    help_text = damnit_oracle.damnit("--help", cwd=tmp_path).stdout
    assert "reprocess" in help_text


@pytest.mark.oracle
def test_oracle_builds_a_reference_database(damnit_oracle, make_mock_runs, tmp_path):
    make_mock_runs(4321, [2])
    ctx = tmp_path / "context.py"
    ctx.write_text(
        "from damnit_ctx import Variable\n"
        "@Variable(title='XGM energy', summary='mean')\n"
        "def xgm_energy(run):\n"
        "    return run['SA1_XTD2_XGM/DOOCS/MAIN', 'pulseEnergy.photonFlux'].ndarray()\n")
    db_dir = damnit_oracle.make_reference_db(tmp_path / "db", 4321, [2], ctx)
    assert [p.name for p in (db_dir / "extracted_data").iterdir()] == ["p4321_r2.h5"]
    table = damnit_oracle.run_json(
        "import json; from damnit import Damnit\n"
        f"df = Damnit({str(db_dir)!r}).table()\n"
        "print(json.dumps({'energy': df['xgm_energy'].tolist(),"
        " 'start': [t.timestamp() for t in df['start_time']]}))")
    assert table["energy"][0] > 100
    assert table["start"] == [mockruns.BASE_START_TIME + mockruns.RUN_SPACING_S]
