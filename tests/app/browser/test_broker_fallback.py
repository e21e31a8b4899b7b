"""A dashboard whose Kafka broker does not answer (``AMORE_BROKER`` unset off-site, a broker that is down)
says once that it polls the database instead, then stays quiet until the broker answers, and then goes
live by itself. Real ``panel_serve.sh``, real Tansu broker stopped and started on the same port."""

from __future__ import annotations

import re
import time

import pytest

from app.server.launcher import DashboardServer
from backend.storage.synthetic import make_database, set_value

pytestmark = pytest.mark.browser

QUIET_FOR_S = 30


def _kafka_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r"Kafka|aiokafka|Unable connect", line)]


def test_unreachable_broker_is_reported_once_then_the_dashboard_polls_until_it_answers(
        kafka_broker, page, tmp_path):
    db = make_database(tmp_path / "db", proposal=1234, n_runs=5, n_vars=3)
    kafka_broker.stop()  # a closed port where the broker should be
    srv = DashboardServer([db], env={"AMORE_BROKER": kafka_broker.address}, log_path=tmp_path / "server.log")
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        page.goto(srv.url)
        page.wait_for_selector(".tabulator-row", timeout=30_000)
        state = page.get_by_test_id("connection-state")
        state.get_by_text("polling").wait_for(timeout=10_000)
        # Polling works meanwhile: a new value shows up.
        set_value(db, 2, "v001", 4242.0)
        page.locator(".tabulator-cell[tabulator-field='v001']", has_text="4242").wait_for(timeout=10_000)

        time.sleep(QUIET_FOR_S)  # about ten attempts to reach the broker
        lines = _kafka_lines(srv.log())
        fallback = [line for line in lines if "polling" in line and "unreachable" in line]
        assert len(fallback) == 1, "\n".join(lines)
        assert kafka_broker.address in fallback[0]
        assert not [line for line in lines if "Unable connect" in line or "retrying in" in line], "\n".join(lines)
        # The fallback line, and the edit producer's "messages are dropped": each said once.
        assert len(lines) <= 2 and len(set(lines)) == len(lines), "\n".join(lines)

        kafka_broker.start()
        state.get_by_text("live").wait_for(timeout=30_000)
        assert any("answers again" in line for line in _kafka_lines(srv.log()))
    finally:
        srv.stop()
