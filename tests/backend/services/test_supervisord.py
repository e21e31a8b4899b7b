"""``damnit listen --daemonize`` with a real supervisord: config, status/restart, reuse, and a run
processed by the supervised listener.
"""
from __future__ import annotations

import configparser
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from backend.services.listener_db import ListenerDB
from backend.storage.damnit_folder import initialize_proposal
from tests.infra import REPO
from tests.infra.aio import run_async
from tests.infra.supervisor import supervisorctl
from tests.infra.wait import wait_for


def damnit(*args, cwd, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def logged(daemon_dir, text: str) -> bool:
    """Whether the listener's damnit.log (there once it has started) has this text."""
    path = daemon_dir / "damnit.log"
    return path.exists() and text in path.read_text()


@pytest.fixture
def daemon_dir(tmp_path):
    ldir = tmp_path / "listener"
    ldir.mkdir()
    yield ldir
    if (ldir / "supervisord.conf").exists():
        supervisorctl(ldir / "supervisord.conf", "shutdown")
        pid_file = ldir / "supervisord.pid"
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)



def test_daemonize_status_restart_reuse(daemon_dir, amore_broker):
    res = damnit("listen", "--daemonize", cwd=daemon_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    conf_path = daemon_dir / "supervisord.conf"
    conf = configparser.RawConfigParser()
    conf.read(conf_path)
    user, password = conf["inet_http_server"]["username"], conf["inet_http_server"]["password"]
    assert len(user) >= 32 and len(password) >= 64 and user != password
    assert conf["inet_http_server"]["port"].startswith("127.0.0.1:")
    assert conf["program:damnit"]["directory"] == str(daemon_dir)
    assert oct(conf_path.stat().st_mode & 0o777) == "0o666"
    assert (daemon_dir / "supervisord.log").is_file()

    status = supervisorctl(conf_path, "status", "damnit")
    assert status.returncode == 0 and "RUNNING" in status.stdout
    pid1 = int(status.stdout.split("pid ")[1].split(",")[0])

    restart = supervisorctl(conf_path, "restart", "damnit")
    assert "damnit: stopped" in restart.stdout and "damnit: started" in restart.stdout
    assert wait_for(lambda: "RUNNING" in supervisorctl(conf_path, "status", "damnit").stdout, 20)
    pid2 = int(supervisorctl(conf_path, "status", "damnit").stdout.split("pid ")[1].split(",")[0])
    assert pid2 != pid1

    # Daemonizing again reuses the running supervisord (same config, same listener)
    supervisord_pid = (daemon_dir / "supervisord.pid").read_text().strip()
    assert damnit("listen", "--daemonize", cwd=daemon_dir).returncode == 0
    assert (daemon_dir / "supervisord.pid").read_text().strip() == supervisord_pid
    assert configparser.RawConfigParser() and conf_path.read_text().count(password) == 2

    # A stopped listener is started again
    supervisorctl(conf_path, "stop", "damnit")
    assert supervisorctl(conf_path, "status", "damnit").returncode == 3
    assert damnit("listen", "--daemonize", cwd=daemon_dir).returncode == 0
    assert "RUNNING" in supervisorctl(conf_path, "status", "damnit").stdout
    # The listener logs to damnit.log in its folder
    assert wait_for(lambda: logged(daemon_dir, "Listening for run events"), 30)

    # Wrong credentials are refused
    bad = daemon_dir / "bad.conf"
    bad.write_text(conf_path.read_text().replace(password, "wrong"))
    assert "RUNNING" not in supervisorctl(bad, "status", "damnit").stdout


def test_daemonized_listener_processes_a_run(daemon_dir, tmp_path, make_mock_runs, amore_broker, slurm_cluster):
    from aiokafka import AIOKafkaProducer

    make_mock_runs(4321, [1], ntrains=10)
    ctx = tmp_path / "ctx.py"
    ctx.write_text("from damnit_ctx import Variable\n\n@Variable(title='Trains')\ndef n_trains(run):\n"
                   "    return len(run.train_ids)\n")
    db = initialize_proposal(tmp_path / "db", 4321, context_file_src=ctx)
    db.metameta.update({"noncluster_cpus": 1, "noncluster_mem": "300M"})
    db.close()
    with ListenerDB(daemon_dir) as ldb:
        ldb.add_proposal_db(4321, tmp_path / "db", False)
    res = damnit("listen", "--daemonize", cwd=daemon_dir)
    assert res.returncode == 0, res.stderr
    assert wait_for(lambda: logged(daemon_dir, "Listening for run events"), 30)

    async def send():
        prod = AIOKafkaProducer(bootstrap_servers=amore_broker.address)
        await prod.start()
        await prod.send_and_wait("test.r2d2", json.dumps(
            {"event": "migration_complete", "proposal": 4321, "run": 1}).encode())
        await prod.stop()

    run_async(send)

    def value():
        conn = sqlite3.connect(tmp_path / "db" / "runs.sqlite")
        try:
            row = conn.execute("SELECT value FROM run_variables WHERE name='n_trains'").fetchone()
            return row and row[0]
        finally:
            conn.close()

    assert wait_for(lambda: value() == 10, 120), (daemon_dir / "damnit.log").read_text()[-3000:]


def test_daemonize_fails_clearly_without_a_broker(daemon_dir, monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "none")
    res = damnit("listen", "--daemonize", cwd=daemon_dir, timeout=180)
    assert res.returncode == 1
    assert "did not stay running" in res.stderr
