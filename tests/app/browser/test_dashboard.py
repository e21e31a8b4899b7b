"""The run table in a real browser (Debian Chromium via Playwright) against the real server, started
through panel_serve.sh."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from app.display.formatting import format_number
from app.server.launcher import DashboardServer, free_port
from backend.storage.synthetic import make_database, set_value
from tests.infra.browser import ALL_BOKEH_VIEWS_JS
from tests.infra.nginx import nginx_proxy

pytestmark = pytest.mark.browser

FIND_TABULATOR_VIEW = f"() => ({ALL_BOKEH_VIEWS_JS})().find(v => v.tabulator)"


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(databases, *flags, env=None):
        srv = DashboardServer(databases, *flags, env={"AMORE_BROKER": "none", **(env or {})},
                              log_path=tmp_path / f"server{len(servers)}.log")
        try:
            srv.start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def small_db(tmp_path):
    return make_database(tmp_path / "db", proposal=1234, n_runs=30, n_vars=10)


def cell(page, run: int, field: str):
    """The cell of ``field`` in the row of ``run`` (the run cell may carry a processing mark).
    CSS, not XPath: Panel renders inside shadow roots, which only Playwright's CSS engine pierces."""
    run_cell = page.locator(".tabulator-cell[tabulator-field='run']", has_text=re.compile(rf"^\s*{run}(\s|$)"))
    return page.locator(".tabulator-row").filter(has=run_cell).locator(f".tabulator-cell[tabulator-field='{field}']")


def open_table(page, url: str):
    # Wide and tall enough that Tabulator's virtual rendering puts every column and ~20 rows in the DOM.
    page.set_viewport_size({"width": 2600, "height": 1300})
    page.goto(url)
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=30000)


def db_comment(db_dir: Path, run: int):
    with sqlite3.connect(db_dir / "runs.sqlite") as conn:
        row = conn.execute("SELECT value FROM run_variables WHERE run=? AND name='comment'", (run,)).fetchone()
    return row[0] if row else None


def image_loaded(img) -> bool:
    """The thumbnail ``img`` (a locator) was fetched and decoded."""
    return wait_for(lambda: img.evaluate("i => i.complete && i.naturalWidth > 0"))


def wait_for(pred, timeout=10.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


def test_table_values_match_db(serve, small_db, page):
    srv = serve([small_db])
    open_table(page, srv.url)
    # The table opens on the newest runs: runs 1-30 fit in one page of 50.
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        rows = conn.execute("SELECT run, name, value, attributes FROM run_variables WHERE name IN "
                            "('v000', 'v001', 'v009', 'v008') ORDER BY run").fetchall()
        titles = dict(conn.execute("SELECT name, title FROM variables"))
    checked = 0
    for run, name, value, attrs in rows:
        if run not in (2, 9, 14):
            continue
        text = cell(page, run, name).inner_text().strip()
        if value is None:
            assert text == "", (run, name, text)
            continue
        expected = format_number(value)
        units = (json.loads(attrs) or {}).get("units") if attrs else None
        assert text == expected + (units or ""), (run, name, text, expected)
        checked += 1
    assert checked >= 9
    # Titles with '/' become a group header + short title; the description is the tooltip.
    header = page.locator(".tabulator-col[tabulator-field='v000']")
    assert header.locator(".tabulator-col-title").inner_text().strip() == titles["v000"].split("/", 1)[1]
    header.hover()
    assert "Synthetic float variable number 0" in page.locator(".tabulator-tooltip").inner_text()
    assert page.locator(".tabulator-col-group .tabulator-col-title", has_text="XGM").count() >= 1
    # Thumbnails are images, trendlines sparklines, errors marked with the message as tooltip.
    thumb = cell(page, 12, "v003").locator("img.dmn-thumb")
    assert thumb.count() == 1
    assert thumb.get_attribute("src").startswith("thumbnail/")  # by URL, not inlined in the page
    assert image_loaded(thumb)
    assert cell(page, 12, "v006").locator("svg.dmn-spark").count() == 1
    errs = page.locator(".tabulator-cell .dmn-err, .tabulator-cell .dmn-skip")
    assert errs.count() >= 1
    assert errs.first.get_attribute("title")
    assert page.get_by_test_id("connection-state").inner_text() == "polling"


def test_comment_edit_persists_and_reaches_second_browser(serve, small_db, page, chromium_browser):
    srv = serve([small_db])
    other = chromium_browser.new_context().new_page()
    open_table(page, srv.url)
    open_table(other, srv.url)
    target = cell(page, 7, "comment")
    target.click()
    editor = target.locator("input")
    editor.fill("beam lost at 12:03")
    editor.press("Enter")
    assert wait_for(lambda: db_comment(small_db, 7) == "beam lost at 12:03"), db_comment(small_db, 7)
    # The second session sees it without a reload.
    other_cell = cell(other, 7, "comment")
    other_cell.get_by_text("beam lost at 12:03").wait_for(timeout=5000)
    # After a reload the value is still there (it came from the DB).
    page.reload()
    open_table(page, srv.url)
    assert cell(page, 7, "comment").inner_text().strip() == "beam lost at 12:03"


def test_user_variable_edit_validated(serve, small_db, page):
    srv = serve([small_db])
    open_table(page, srv.url)
    target = cell(page, 4, "shots")
    target.click()
    target.locator("input").fill("twelve")
    target.locator("input").press("Enter")
    msg = page.locator(".dmn-status [data-level='error']")
    msg.wait_for(timeout=5000)
    assert "not a whole number" in msg.inner_text()
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM run_variables WHERE name='shots'").fetchone()[0] == 0
    target.click()
    target.locator("input").fill("12")
    target.locator("input").press("Enter")

    def stored():
        with sqlite3.connect(small_db / "runs.sqlite") as conn:
            row = conn.execute("SELECT value, provenance FROM run_variables WHERE run=4 AND name='shots'").fetchone()
        return row
    assert wait_for(lambda: stored() == (12, "manual-input")), stored()


def test_live_update_from_message(serve, small_db, page, amore_broker):
    """A processing-style DB write + run_values_updated makes a new run and a changed cell appear."""
    from backend.base.messages import UpdateProducer

    srv = serve([small_db], env={"AMORE_BROKER": amore_broker.address})
    open_table(page, srv.url)
    page.get_by_test_id("connection-state").get_by_text("live").wait_for(timeout=20000)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        db_id = conn.execute("SELECT value FROM metameta WHERE key='db_id'").fetchone()[0]
    set_value(small_db, 31, "v000", 4242.0)
    set_value(small_db, 29, "v001", 0.125)
    with UpdateProducer.from_env(amore_broker.address) as prod:
        assert prod.online
        prod.run_values_updated(db_id, 1234, 31, ["v000"])
        prod.run_values_updated(db_id, 1234, 29, ["v001"])
    cell(page, 31, "v000").get_by_text("4242").wait_for(timeout=5000)
    cell(page, 29, "v001").get_by_text("0.1250").wait_for(timeout=5000)
    # Processing indicators come from processing messages alone.
    with UpdateProducer.from_env(amore_broker.address) as prod:
        prod.processing_state_set(db_id, "job-1", 1234, 30, "all", "RUNNING", slurm_job_id="77")
    page.locator(".tabulator-cell[tabulator-field='run'] [data-processing='running']").wait_for(timeout=5000)
    with UpdateProducer.from_env(amore_broker.address) as prod:
        prod.processing_finished(db_id, "job-1")
    page.locator("[data-processing='running']").wait_for(state="detached", timeout=5000)


def test_comment_html_shown_as_text(serve, small_db, page):
    payload = "<img src=x onerror=window.__xss=1>"
    set_value(small_db, 5, "comment", payload)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        conn.execute("UPDATE variables SET title=? WHERE name='v000'", ("<b onmouseover=alert(1)>XGM</b>/x",))
        conn.execute("UPDATE run_variables SET value=? WHERE run=6 AND name='v008'", (payload,))
    srv = serve([small_db])
    open_table(page, srv.url)
    c = cell(page, 5, "comment")
    assert c.inner_text().strip() == payload
    assert c.locator("img").count() == 0
    s = cell(page, 6, "v008")
    assert s.inner_text().strip() == payload
    assert s.locator("img").count() == 0
    assert page.locator(".tabulator-col-group .tabulator-col-title b").count() == 0
    assert page.evaluate("() => window.__xss") is None


def test_read_only_refuses_browser_write(serve, small_db, page):
    srv = serve([small_db], "--read-only")
    open_table(page, srv.url)
    assert page.get_by_text("Add user variable").count() == 0
    target = cell(page, 3, "comment")
    target.click()
    assert target.locator("input").count() == 0  # no editor
    # Forge what an editor would send: change the cell in Tabulator and fire Panel's edit path.
    page.evaluate("""(find) => {
        const view = eval(find)();
        const row = view.tabulator.getRows().find(r => r.getData().run.includes('>3<'));
        const c = row.getCell('comment');
        c._cell.value = 'forged';
        view.cellEdited(c);
    }""", FIND_TABULATOR_VIEW)
    msg = page.locator(".dmn-status [data-level='error']")
    msg.wait_for(timeout=5000)
    time.sleep(0.5)
    assert db_comment(small_db, 3) != "forged"
    assert "read-only" in msg.inner_text()


def test_prefix_behind_nginx(serve, small_db, page, tmp_path):
    upstream = free_port()
    with nginx_proxy(tmp_path, [upstream]) as proxy:
        srv = DashboardServer([small_db], "--prefix", "/damnit", "--allow-websocket-origin", proxy.origin,
                              port=upstream, env={"AMORE_BROKER": "none"}, log_path=tmp_path / "srv.log")
        srv.start()
        try:
            open_table(page, proxy.url)
            assert page.url.startswith(proxy.url)
            # The websocket works through the proxy: an edit round-trips.
            target = cell(page, 2, "comment")
            target.click()
            target.locator("input").fill("via proxy")
            target.locator("input").press("Enter")
            assert wait_for(lambda: db_comment(small_db, 2) == "via proxy")
            set_value(small_db, 2, "v001", 77.0)
            cell(page, 2, "v001").get_by_text("77", exact=True).wait_for(timeout=5000)
            assert image_loaded(cell(page, 2, "v003").locator("img.dmn-thumb"))
            # Everything went through nginx: the page, its websocket and the thumbnails.
            access = proxy.access_log()
            assert "/damnit/main" in access and "GET /damnit/thumbnail/" in access
        finally:
            srv.stop()


def test_sort_jump_and_export(serve, small_db, page, tmp_path):
    srv = serve([small_db])
    open_table(page, srv.url)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        values = [v for (v,) in conn.execute("SELECT value FROM run_variables WHERE name='v001' AND value IS NOT NULL")]
    # Sorting happens on the server, on numbers (not on the cells' markup).
    page.locator(".tabulator-col[tabulator-field='v001'] .tabulator-col-title").click()
    first = page.locator(".tabulator-row").first.locator(".tabulator-cell[tabulator-field='v001']")
    expect_text = format_number(min(values))
    assert wait_for(lambda: first.inner_text().strip() == expect_text), (first.inner_text(), expect_text)
    page.locator(".tabulator-col[tabulator-field='v001'] .tabulator-col-title").click()
    assert wait_for(lambda: first.inner_text().strip() == format_number(max(values)))
    # Jump to a run.
    page.get_by_placeholder("run number").fill("17")
    page.get_by_role("button", name="Go").click()
    page.locator(".dmn-status [data-level='info']", has_text="Run 17").wait_for()
    assert "tabulator-selected" in page.locator(".tabulator-row").filter(
        has=page.locator(".tabulator-cell[tabulator-field='run']", has_text=re.compile(r"^\s*17\s*$"))
    ).get_attribute("class")
    # Export: every run, titled columns, images as placeholders.
    with page.expect_download() as dl:
        page.get_by_role("button", name="CSV").click()
    path = tmp_path / "export.csv"
    dl.value.save_as(path)
    import pandas as pd

    df = pd.read_csv(path)
    assert len(df) == 30 and list(df.columns[:3]) == ["Run", "Timestamp", "Comment"]
    assert set(df["Spectrometer/png 3"].dropna()) == {"<image>"}


def test_connection_state_shows_disconnected(serve, small_db, page):
    srv = serve([small_db])
    open_table(page, srv.url)
    state = page.get_by_test_id("connection-state")
    assert state.inner_text() == "polling"
    srv.stop()
    state.get_by_text("disconnected").wait_for(timeout=15000)


def test_landing_page_lists_only_served_proposals(serve, tmp_path, page):
    a = make_database(tmp_path / "a", proposal=1111, n_runs=3, n_vars=2)
    b = make_database(tmp_path / "b", proposal=2222, n_runs=4, n_vars=2)
    srv = serve([a, b])
    page.goto(srv.url)
    page.locator(".damnit-proposals a", has_text="2222").click()
    page.wait_for_selector(".tabulator-row")
    assert page.get_by_text("DAMNIT: p2222").count() == 1
    assert page.locator(".tabulator-row").count() == 4
    base = srv.url
    page.goto(base + "?proposal=3333")
    page.get_by_text("Proposal 3333 is not served here").wait_for()
    page.goto(base + "?db=../../etc")
    page.get_by_text("No database #../../etc is served here").wait_for()
    assert page.locator(".tabulator-cell[tabulator-field='run']").count() == 0  # the list, not a run table
    page.goto(base + "?proposal=<img src=x onerror=window.__xss=1>")
    page.get_by_text("Not a proposal number").wait_for()
    assert page.evaluate("() => window.__xss") is None


def test_trusted_user_header_gates_writes(serve, small_db, chromium_browser):
    from tests.app.membership_rule import SIGNED_IN

    srv = serve([small_db], "--user-header", "X-Remote-User", env=SIGNED_IN)
    anonymous = chromium_browser.new_context().new_page()  # no header: not signed in, no proposal
    anonymous.goto(srv.url)
    anonymous.get_by_text("You are not a member of proposal").wait_for(timeout=30000)
    assert anonymous.locator(".tabulator-cell[tabulator-field='run']").count() == 0
    alice = chromium_browser.new_context(extra_http_headers={"X-Remote-User": "alice"}).new_page()
    open_table(alice, srv.url)
    alice.get_by_text("alice").first.wait_for()
    target = cell(alice, 3, "comment")
    target.click()
    target.locator("input").fill("signed")
    target.locator("input").press("Enter")
    assert wait_for(lambda: db_comment(small_db, 3) == "signed")


def test_follow_newest_run(serve, small_db, page):
    srv = serve([small_db])
    open_table(page, srv.url)
    page.locator(".bk-Checkbox", has_text="Follow newest run").locator("input").check()
    time.sleep(0.5)
    for run in range(31, 56):  # 55 runs: more than one page of 50
        set_value(small_db, run, "v001", float(run))
    cell(page, 55, "v001").get_by_text("55", exact=True).wait_for(timeout=10000)
    # A full page of the newest runs, newest first, whatever the page boundaries.
    assert page.locator("button.tabulator-page.active").inner_text() == "1"
    runs = page.evaluate(f"() => ({FIND_TABULATOR_VIEW})().tabulator.getData().map(r => r.run)")
    assert [int(re.sub(r"<[^>]*>", "", r).split()[0]) for r in runs] == list(range(55, 5, -1))
    assert cell(page, 55, "run").locator(".dmn-flash").count() == 1  # new runs are highlighted


def test_batched_header_layout_matches_tabulators_own(serve, small_db, page):
    """app/assets/tabulator_speedups.js replaces Tabulator's header sizing on every table; the header
    cells must come out exactly as Tabulator's own method sizes them."""
    srv = serve([small_db])
    open_table(page, srv.url)
    result = page.evaluate("""(find) => {
      const table = eval(find)().tabulator;
      const cm = table.columnManager;
      const styles = () => [...cm.headersElement.querySelectorAll('.tabulator-col, .tabulator-col-group-cols')]
          .map(el => el.style.height + '|' + el.style.minHeight).join(',') + '#' + cm.headersElement.style.height;
      const batched = cm.hasOwnProperty('verticalAlignHeaders') && window.Tabulator.prototype.__damnitSpeedups;
      cm.verticalAlignHeaders();
      const ours = styles();
      Object.getPrototypeOf(cm).verticalAlignHeaders.call(cm);
      const theirs = styles();
      return {batched, ours, theirs, groups: cm.headersElement.querySelectorAll('.tabulator-col-group').length};
    }""", f"({FIND_TABULATOR_VIEW})")
    assert result["batched"], "the batched header layout was not installed"
    assert result["groups"] >= 1
    assert result["ours"] == result["theirs"]
    assert "px" in result["ours"]


def test_row_filter_and_column_chooser_by_clicking(serve, small_db, page):
    """The filter and column controls as a user drives them: choose a column, type a minimum, apply,
    see only matching rows; remove the filter with its chip; hide a column in the chooser."""
    srv = serve([small_db])
    open_table(page, srv.url)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        values = {r: v for r, v in conn.execute(
            "SELECT run, value FROM run_variables WHERE name='v001' AND value IS NOT NULL")}
        title = conn.execute("SELECT title FROM variables WHERE name='v001'").fetchone()[0]
    threshold = sorted(values.values())[len(values) // 2]
    expected = sorted(r for r, v in values.items() if v >= threshold)
    rows = page.locator(".tabulator-row")
    assert rows.count() == 30

    page.get_by_text("Row filters", exact=True).click()
    page.locator("select").filter(has=page.locator(f"option:text-is('{title}')")).select_option(label=title)
    low = page.get_by_label("min", exact=True)

    # The chosen column's range appears as placeholders; the fields stay empty (no bound) until typed in.
    low.and_(page.get_by_placeholder(f"from {format_number(min(values.values()))}")).wait_for()
    assert low.input_value() == ""
    low.fill(repr(threshold))
    low.press("Enter")
    page.get_by_role("button", name="Apply filter").click()
    assert wait_for(lambda: rows.count() == len(expected)), (rows.count(), len(expected))
    shown = sorted(int(t.split()[0]) for t in rows.locator(".tabulator-cell[tabulator-field='run']").all_inner_texts())
    assert shown == expected
    chip = page.get_by_role("button", name=re.compile(r"^✕ "))
    assert title in chip.inner_text()
    chip.click()
    assert wait_for(lambda: rows.count() == 30)

    # Column chooser: remove a variable from "Visible columns" and its column goes.
    assert page.locator(".tabulator-col[tabulator-field='v002']").count() == 1
    page.get_by_text("Columns", exact=True).click()
    chooser = page.locator(".choices").filter(has=page.locator(".choices__item", has_text="v002"))
    chooser.locator(".choices__item", has_text="v002").locator("button").click()
    assert wait_for(lambda: page.locator(".tabulator-col[tabulator-field='v002']").count() == 0)
