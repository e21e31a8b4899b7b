"""The run panel beside the run table (issue: click a run row, see its plots): a click shows the run's
plots next to the table, the arrow keys move through runs, quick clicks never leave a stale run's plots,
reprocessing updates it, it is resizable/closable and remembered, and on a narrow window it goes below."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from app.server.launcher import DashboardServer, free_port
from tests.app.browser.test_dashboard import cell, wait_for
from tests.infra import REPO
from tests.infra.nginx import nginx_proxy

PROPOSAL = 4321
RUNS = 12
PANEL_TITLE = ".dmn-run-panel .dmn-panel-title"


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A proposal of mock runs processed with the demo context (images, traces, xarray, a figure)."""
    from backend.base import mockruns

    root = tmp_path_factory.mktemp("panel")
    data = root / "exp"
    mockruns.make_proposal(data, PROPOSAL, range(1, RUNS + 1), with_proc=True)
    db = root / "amore"
    env = {**os.environ, "EXTRA_DATA_DATA_ROOT": str(data), "AMORE_BROKER": "none", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "backend.cli", "init", str(db), "--proposal", str(PROPOSAL),
                    "--context", str(REPO / "contexts" / "demo_context.py")], env=env, check=True,
                   capture_output=True)
    res = subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", f"1-{RUNS}", "--direct"], cwd=db,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return db, data


@pytest.fixture(scope="module")
def server(processed, tmp_path_factory):
    db, data = processed
    srv = DashboardServer([db], env={"AMORE_BROKER": "none", "EXTRA_DATA_DATA_ROOT": str(data)},
                          log_path=tmp_path_factory.mktemp("log") / "srv.log")
    srv.start()
    yield srv
    srv.stop()


def open_table(page, url: str, width: int = 1600) -> None:
    """The run table in a window of a usual desktop size (the panel shares it with the table)."""
    page.set_viewport_size({"width": width, "height": 1000})
    page.goto(url)
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=30000)


def panel_title(page) -> str:
    return page.locator(PANEL_TITLE).evaluate(
        "e => e.shadowRoot ? [...e.shadowRoot.children].filter(c => !['STYLE', 'LINK'].includes(c.tagName))"
        ".map(c => c.innerText).join('') : e.innerText").strip()


def visible_canvases(page) -> int:
    """Plot canvases of the run panel that are inside the viewport."""
    return page.evaluate("""() => {
      const out = [], stack = [document]
      while (stack.length) {
        const n = stack.pop()
        for (const el of n.querySelectorAll('*')) { if (el.shadowRoot) stack.push(el.shadowRoot); if (el.tagName === 'CANVAS') out.push(el) }
      }
      const vw = window.innerWidth, vh = window.innerHeight
      return out.filter(c => { const r = c.getBoundingClientRect(); return r.width > 50 && r.height > 50 && r.left >= 0 && r.left < vw && r.top < vh && r.bottom > 0 && r.left > vw / 2 }).length
    }""")


def test_a_click_shows_the_runs_plots_beside_the_table(server, page):
    open_table(page, server.url)
    page.locator(".tabulator-col[tabulator-field='run']").click()  # ascending run numbers
    assert wait_for(lambda: page.locator(".tabulator-row").first.locator(
        ".tabulator-cell[tabulator-field='run']").inner_text().strip() == "1")
    t0 = time.monotonic()
    cell(page, 3, "start_time").click()
    assert wait_for(lambda: panel_title(page) == "Run 3", timeout=5)
    drawn = wait_for(lambda: visible_canvases(page) >= 2, timeout=30)
    elapsed = time.monotonic() - t0
    assert drawn and elapsed < 5, f"two plots of run 3 within 5 s: {elapsed:.1f} s (load {os.getloadavg()[0]:.1f})"
    assert page.locator(".tabulator-row").first.is_visible()  # the table is still in view
    assert page.locator(".dmn-panel-run-3.damnit-plot-ready").count() >= 2
    page.keyboard.press("ArrowDown")
    assert wait_for(lambda: panel_title(page) == "Run 4", timeout=5)
    assert wait_for(lambda: page.locator(".dmn-panel-run-4.damnit-plot-ready").count() >= 2, timeout=10)
    page.keyboard.press("ArrowUp")
    assert wait_for(lambda: panel_title(page) == "Run 3", timeout=5)


def test_quick_clicks_end_on_the_last_run_with_its_own_plots(server, page):
    open_table(page, server.url)
    for run in [12, 11, 10, 9, 8, 7, 6, 5, 4, 2]:
        cell(page, run, "start_time").click()
    assert wait_for(lambda: panel_title(page) == "Run 2", timeout=5)
    assert wait_for(lambda: page.locator(".dmn-panel-run-2.damnit-plot-ready").count() >= 2, timeout=15)
    time.sleep(2)  # late reads of the runs clicked before must not land
    plots = page.locator(".dmn-panel-plot")
    assert plots.count() >= 2
    assert all("dmn-panel-run-2" in (plots.nth(i).get_attribute("class") or "") for i in range(plots.count()))


def test_panel_is_closable_resizable_remembered_and_below_on_narrow_windows(server, chromium_browser):
    ctx = chromium_browser.new_context(viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    open_table(page, server.url)
    side = page.locator(".dmn-panel-side")
    width = side.bounding_box()["width"]
    handle = page.get_by_test_id("run-panel-handle")
    box = handle.bounding_box()
    page.mouse.move(box["x"] + 3, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] - 200, box["y"] + 100, steps=5)
    page.mouse.up()
    assert wait_for(lambda: side.bounding_box()["width"] > width + 150)
    wider = side.bounding_box()["width"]
    page.get_by_role("button", name="Run panel").click()  # close
    assert wait_for(lambda: not side.is_visible())
    page.reload()
    open_table(page, server.url)
    assert wait_for(lambda: not page.locator(".dmn-panel-side").is_visible())  # stays closed
    page.get_by_role("button", name="Run panel").click()  # open again: at the width it had
    assert wait_for(lambda: page.locator(".dmn-panel-side").is_visible())
    assert abs(page.locator(".dmn-panel-side").bounding_box()["width"] - wider) < 3
    narrow = ctx.new_page()
    open_table(narrow, server.url, width=900)

    def below_full_width() -> bool:
        table = narrow.locator(".dmn-table-side").bounding_box()
        panel = narrow.locator(".dmn-panel-side").bounding_box()
        return panel["y"] >= table["y"] + table["height"] - 20 and panel["width"] > 800

    assert wait_for(below_full_width)
    ctx.close()


OLD_PLOTS_LEFT = """() => { let n = 0; const stack = [document]
  while (stack.length) { const r = stack.pop()
    for (const e of r.querySelectorAll('.dmn-panel-plot')) if (e.__dmnOld) n++
    for (const e of r.querySelectorAll('*')) if (e.shadowRoot) stack.push(e.shadowRoot) }
  return n }"""


def test_the_panel_follows_reprocessing_and_escapes_text(server, processed, page):
    from backend.storage.synthetic import set_value

    db, data = processed
    open_table(page, server.url)
    cell(page, 5, "start_time").click()
    assert wait_for(lambda: panel_title(page) == "Run 5", timeout=5)
    assert wait_for(lambda: page.locator(".dmn-panel-run-5.damnit-plot-ready").count() >= 2, timeout=15)
    # Reprocessing the run shown draws its plots again, from the new file.
    page.evaluate("""() => { const stack = [document]
      while (stack.length) { const r = stack.pop()
        for (const e of r.querySelectorAll('.dmn-panel-plot')) e.__dmnOld = true
        for (const e of r.querySelectorAll('*')) if (e.shadowRoot) stack.push(e.shadowRoot) } }""")
    assert page.evaluate(OLD_PLOTS_LEFT) >= 2
    env = {**os.environ, "EXTRA_DATA_DATA_ROOT": str(data), "AMORE_BROKER": "none", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", "5", "--direct"], cwd=db, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert wait_for(lambda: page.evaluate(OLD_PLOTS_LEFT) == 0
                    and page.locator(".dmn-panel-run-5.damnit-plot-ready").count() >= 2, timeout=20)
    assert panel_title(page) == "Run 5"
    evil = "<img src=x onerror=alert(1)>"
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    set_value(db, 5, "comment", evil)
    scalars = page.locator(".dmn-run-panel .damnit-scalars")
    assert wait_for(lambda: evil in scalars.inner_text(), timeout=10)
    assert not dialogs


def test_panel_behind_a_proxy_prefix_in_read_only_mode(processed, page, tmp_path):
    db, data = processed
    upstream = free_port()
    with nginx_proxy(tmp_path, [upstream]) as proxy:
        with DashboardServer([db], "--read-only", "--prefix", "/damnit", "--allow-websocket-origin", proxy.origin,
                             port=upstream, env={"AMORE_BROKER": "none", "EXTRA_DATA_DATA_ROOT": str(data)},
                             log_path=tmp_path / "srv.log"):
            open_table(page, proxy.url)
            cell(page, 3, "start_time").click()
            assert wait_for(lambda: panel_title(page) == "Run 3", timeout=5)
            assert wait_for(lambda: visible_canvases(page) >= 2, timeout=15)
            assert "/damnit/main" in proxy.access_log()
