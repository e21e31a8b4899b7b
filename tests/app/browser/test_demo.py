"""``panel_serve.sh --demo``: mock runs, the demo context, an embedded broker and the listener make a
table that grows by itself, seen in a real browser."""

from __future__ import annotations

import os
import time

import pytest

from app.server.launcher import DashboardServer

pytestmark = pytest.mark.browser


def test_demo_table_grows_live(tmp_path, page):
    # A machine with Slurm's client but no reachable controller: sbatch hangs (as on a closed network,
    # where it waits for DNS). The demo must not depend on it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nsleep 600\n")
    (bin_dir / "sbatch").chmod(0o755)
    srv = DashboardServer([], "--demo", "--demo-dir", str(tmp_path / "demo"), "--demo-interval", "3",
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          log_path=tmp_path / "demo.log", timeout=120)
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        _watch_the_demo_grow(page, srv)
    except Exception as e:
        raise AssertionError(f"{e}\n--- demo log ---\n{srv.log()}") from e
    finally:
        srv.stop()


def _watch_the_demo_grow(page, srv: DashboardServer) -> None:
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
    assert rows.count() > first, f"no new run within {time.monotonic() - t0:.0f} s"
    assert "Demo: embedded Kafka broker (Tansu)" in srv.log()
