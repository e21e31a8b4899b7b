"""``panel_serve.sh --demo``: mock runs, the demo context, an embedded broker and the listener make a
table that grows by itself, seen in a real browser."""

from __future__ import annotations

import time

import pytest

from app.launcher import DashboardServer

pytestmark = pytest.mark.browser


def test_demo_table_grows_live(tmp_path, page):
    srv = DashboardServer([], "--demo", "--demo-dir", str(tmp_path / "demo"), "--demo-interval", "3",
                          log_path=tmp_path / "demo.log", timeout=120)
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        page.goto(srv.url)
        page.wait_for_selector(".tabulator-row", timeout=60000)
        page.get_by_test_id("connection-state").get_by_text("live").wait_for(timeout=30000)
        t0 = time.monotonic()
        rows = page.locator(".tabulator-row")
        # Processed values (not just empty rows) from the demo context: number of trains = 40.
        page.locator(".tabulator-cell[tabulator-field='n_trains']", has_text="40").first.wait_for(timeout=90000)
        first = rows.count()
        deadline = time.monotonic() + 60
        while rows.count() <= first and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rows.count() > first, f"no new run within {time.monotonic() - t0:.0f} s:\n{srv.log()}"
        assert "Demo: embedded Kafka broker (Tansu)" in srv.log()
    finally:
        srv.stop()
