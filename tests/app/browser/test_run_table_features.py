"""The run table's layout, filters, right-click menus, variable deletion, pre-created runs and sparkline
hover in a real browser (Debian Chromium via Playwright) against the real server (panel_serve.sh)."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from app.display.formatting import format_number
from app.pages.run_table.filter_panel import HIST_BINS
from app.server.launcher import DashboardServer
from backend.storage.database import DamnitDB
from backend.storage.h5format import run_file_path, write_results
from backend.storage.records import VariableResult
from backend.storage.synthetic import make_database, set_value
from tests.app.browser.test_dashboard import FIND_TABULATOR_VIEW, cell, open_table, wait_for
from tests.infra.browser import ALL_BOKEH_VIEWS_JS

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=alert(1)>"
AUTH = ("--basic-auth", "s3cret-pw", "--cookie-secret", "x" * 32)
STORAGE_KEY = "damnit-web/table-layout/p1234"
FIND_BRIDGE = f"() => ({ALL_BOKEH_VIEWS_JS})().find(v => v.model && v.model.data && 'storage_key' in v.model.data)"


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def serve(tmp_path, state_dir):
    servers = []

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "table_members.py").write_text("def rule(user, proposal):\n    return user in ('alice', 'bob')\n")
    members = {"DAMNIT_MEMBERSHIP": "table_members:rule",  # signed in, alice and bob belong to every proposal
               "PYTHONPATH": os.pathsep.join(p for p in (str(rules), os.environ.get("PYTHONPATH", "")) if p)}

    def start(databases, *flags, env=None):
        srv = DashboardServer(databases, *flags, env={"AMORE_BROKER": "none", "DAMNIT_WEB_STATE_DIR": str(state_dir),
                                                      **members, **(env or {})},
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


def no_dialogs(page) -> list:
    """Dialogs the page opens (an alert() would mean injected script ran): recorded and dismissed."""
    seen = []
    page.on("dialog", lambda d: (seen.append(d.message), d.dismiss()))
    return seen


def sign_in(page, url: str, user: str) -> None:
    page.set_viewport_size({"width": 2600, "height": 1300})
    page.goto(url)
    page.locator("input[name='username']").fill(user)
    page.locator("input[name='password']").fill("s3cret-pw")
    page.locator("input[name='password']").press("Enter")
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=30000)


def checkbox(page, label: str):
    return page.locator(".bk-Checkbox", has_text=label).locator("input")


def columns(page) -> list[tuple[str, int]]:
    """The table's columns in the browser, in order, with their widths."""
    got = page.evaluate(f"""() => ({FIND_TABULATOR_VIEW})().tabulator.getColumns()
        .filter(c => c.getField() && c.getField() !== '_index' && c.isVisible())
        .map(c => [c.getField(), Math.round(c.getWidth())])""")
    return [tuple(c) for c in got]


def header(page, field: str):
    return page.locator(f".tabulator-col[tabulator-field='{field}']")


def header_menu(page, field: str, item: str) -> None:
    header(page, field).locator(".tabulator-col-title").click(button="right")
    page.locator(".tabulator-menu-item", has_text=item).click()


def drag(page, locator, dx: float, dy: float = 0, at: str = "middle") -> None:
    box = locator.bounding_box()
    x = box["x"] + (box["width"] - 3 if at == "right-edge" else box["width"] / 2)
    y = box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    time.sleep(0.4)  # Tabulator starts moving a column after holding the button a moment
    page.mouse.move(x + dx / 2, y + dy / 2, steps=5)
    page.mouse.move(x + dx, y + dy, steps=5)
    page.mouse.up()


def widen_hide_and_move(page) -> None:
    """What the layout tests do: v001 150 px wider, v002 hidden from its header menu, v004 dragged
    before v000 (both in the XGM group)."""
    before = dict(columns(page))
    drag(page, header(page, "v001"), 150, at="right-edge")
    assert wait_for(lambda: dict(columns(page))["v001"] >= before["v001"] + 140)
    header_menu(page, "v002", "Hide")
    assert wait_for(lambda: header(page, "v002").count() == 0)
    order = [c for c, _ in columns(page)]
    assert order.index("v000") < order.index("v004")
    src = header(page, "v004").locator(".tabulator-col-title")
    dst = header(page, "v000").locator(".tabulator-col-title").bounding_box()
    sbox = src.bounding_box()
    drag(page, src, dst["x"] + 5 - (sbox["x"] + sbox["width"] / 2))
    assert wait_for(lambda: [c for c, _ in columns(page)].index("v004") < [c for c, _ in columns(page)].index("v000"))


def assert_layout_kept(page, widths_before: dict) -> None:
    cols = columns(page)
    order = [c for c, _ in cols]
    assert "v002" not in order
    assert order.index("v004") < order.index("v000")
    assert dict(cols)["v001"] >= widths_before["v001"] + 140


def png_of(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def near(img: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    return (np.abs(img - np.array(rgb)).sum(axis=2) < tol)


# ---------------------------------------------------------------- 1. layout remembered

def test_widths_hidden_columns_and_order_survive_a_reload(serve, small_db, page):
    dialogs = no_dialogs(page)
    srv = serve([small_db])
    open_table(page, srv.url)
    widths = dict(columns(page))
    widen_hide_and_move(page)

    def stored() -> dict:
        return json.loads(page.evaluate(f"() => localStorage.getItem('{STORAGE_KEY}')") or "{}")

    def moved(layout: dict) -> bool:
        order = layout.get("order", [])
        return "v004" in order and "v000" in order and order.index("v004") < order.index("v000")
    # The browser stores what the server sends back after each change: reload once the last has arrived.
    assert wait_for(lambda: moved(stored())), stored()
    assert stored()["hidden"] == ["v002"] and stored()["widths"]["v001"] >= widths["v001"] + 140
    page.reload()
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=30000)
    assert wait_for(lambda: "v002" not in [c for c, _ in columns(page)])
    assert_layout_kept(page, widths)

    # Flat headers and back; Timestamp, Comment and the processing marks hidden from the Columns card.
    assert page.locator(".tabulator-col-group .tabulator-col-title", has_text="XGM").count() == 1
    page.get_by_text("Columns", exact=True).click()
    checkbox(page, "Grouped headers").click()
    assert wait_for(lambda: page.locator(".tabulator-col-group").count() == 0)
    assert header(page, "v001").locator(".tabulator-col-title").inner_text().strip() == "Camera/float 1"
    assert_layout_kept(page, widths)  # switching headers keeps the rest of the layout
    checkbox(page, "Grouped headers").click()
    assert wait_for(lambda: page.locator(".tabulator-col-group .tabulator-col-title", has_text="XGM").count() == 1)
    assert header(page, "v001").locator(".tabulator-col-title").inner_text().strip() == "float 1"
    checkbox(page, "Grouped headers").click()
    page.locator("label", has_text="Timestamp").locator("input").uncheck()
    assert wait_for(lambda: header(page, "start_time").count() == 0)
    page.locator("label", has_text="Comment").locator("input").uncheck()
    assert wait_for(lambda: header(page, "start_time").count() == 0 and header(page, "comment").count() == 0)

    def kept() -> dict:
        return json.loads(page.evaluate(f"() => localStorage.getItem('{STORAGE_KEY}')") or "{}")
    # The browser stores what the server sends it: reload once it has arrived (slow on a busy machine).
    assert wait_for(lambda: not kept().get("hierarchical", True) and "comment" in kept().get("hidden", []))
    page.reload()
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=30000)
    assert wait_for(lambda: page.locator(".tabulator-col-group").count() == 0)
    order = [c for c, _ in columns(page)]
    assert "start_time" not in order and "comment" not in order
    assert_layout_kept(page, widths)
    assert dialogs == []


def test_processing_marks_can_be_hidden(serve, small_db, page, amore_broker):
    from backend.base.messages import UpdateProducer

    srv = serve([small_db], env={"AMORE_BROKER": amore_broker.address})
    open_table(page, srv.url)
    page.get_by_test_id("connection-state").get_by_text("live").wait_for(timeout=20000)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        db_id = conn.execute("SELECT value FROM metameta WHERE key='db_id'").fetchone()[0]
    with UpdateProducer.from_env(amore_broker.address) as prod:
        prod.processing_state_set(db_id, "job-1", 1234, 30, "all", "RUNNING", slurm_job_id="77")
    mark = cell(page, 30, "run").locator(".dmn-proc-mark")
    mark.wait_for(timeout=10000)
    width = cell(page, 30, "run").locator("b").bounding_box()["width"]
    page.get_by_text("Columns", exact=True).click()
    checkbox(page, "Processing marks").click()
    assert wait_for(lambda: not mark.is_visible())
    assert cell(page, 30, "run").locator("b").bounding_box()["width"] < width - 5  # the number alone
    page.reload()
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=30000)
    mark.wait_for(state="attached", timeout=10000)
    assert not mark.is_visible()
    page.get_by_text("Columns", exact=True).click()
    checkbox(page, "Processing marks").click()
    assert wait_for(lambda: mark.is_visible())


def test_layout_follows_a_signed_in_user_to_another_browser(serve, small_db, chromium_browser, state_dir):
    srv = serve([small_db], *AUTH)
    alice = chromium_browser.new_context()
    try:
        page = alice.new_page()
        sign_in(page, srv.url, "alice")
        widths = dict(columns(page))
        widen_hide_and_move(page)
        assert wait_for(lambda: any(state_dir.rglob("alice-*.json")))
    finally:
        alice.close()
    saved = json.loads(next(state_dir.rglob("alice-*.json")).read_text())
    assert saved["tables"]["p1234"]["hidden"] == ["v002"]
    assert not list(small_db.rglob("*.json"))  # nothing in the proposal's folder
    elsewhere = chromium_browser.new_context()  # another browser: empty storage
    try:
        page = elsewhere.new_page()
        sign_in(page, srv.url, "alice")
        assert wait_for(lambda: "v002" not in [c for c, _ in columns(page)])
        assert_layout_kept(page, widths)
        # The server's copy also went into this browser's storage.
        assert wait_for(lambda: page.evaluate(f"() => localStorage.getItem('{STORAGE_KEY}')") is not None)
    finally:
        elsewhere.close()
    bob = chromium_browser.new_context()
    try:
        page = bob.new_page()
        sign_in(page, srv.url, "bob")
        order = [c for c, _ in columns(page)]
        assert "v002" in order and order.index("v000") < order.index("v004")
        assert dict(columns(page))["v001"] == widths["v001"]
    finally:
        bob.close()


# ---------------------------------------------------------------- 2. filters

def test_numeric_filter_by_slider_over_a_histogram_and_has_value_filter(serve, small_db, page, tmp_path):
    dialogs = no_dialogs(page)
    for run in (4, 9):
        set_value(small_db, run, "v003", None)  # two runs without an image
    srv = serve([small_db])
    open_table(page, srv.url)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        values = {r: v for r, v in conn.execute("SELECT run, value FROM run_variables WHERE name='v001'")}
    rows = page.locator(".tabulator-row")
    assert rows.count() == 30
    funnel = (21, 101, 192)
    assert not near(png_of(header(page, "v001")), funnel, 30).any()

    page.get_by_text("Row filters", exact=True).click()
    page.locator("select").filter(has=page.locator("option:text-is('Camera/float 1')")).select_option(
        label="Camera/float 1")
    hist = page.locator("svg.dmn-hist")
    known = np.array(sorted(values.values()))
    expected_counts = " ".join(str(n) for n in np.histogram(known, bins=HIST_BINS)[0])
    assert wait_for(lambda: hist.get_attribute("data-counts") == expected_counts)  # was the Run column's
    counts = [int(c) for c in expected_counts.split()]
    # The histogram as drawn: each bin's bar is as tall as its count says, all in the kept colour.
    img = png_of(hist)
    height, width = img.shape[:2]
    bar = ~near(img, (255, 255, 255), 30)
    bar[-2:, :] = False  # the axis line
    for i, n in enumerate(counts):
        x = int((i + 0.5) * width / len(counts))
        drawn = int(bar[:, x].sum())
        expect = 0 if n == 0 else max(1, n / max(counts) * (height - 2))
        assert abs(drawn - expect) <= 2, (i, n, drawn, expect)
    assert near(img, (0x19, 0x76, 0xd2), 30).sum() > 50 and not near(img, (0xc5, 0xca, 0xe9), 20).any()

    # Drag the lower handle to the middle: the rows follow, the min field shows the bound.
    handle = page.locator(".dmn-range .noUi-handle-lower")
    track = page.locator(".dmn-range .noUi-base").bounding_box()
    drag(page, handle, track["width"] * 0.5)
    low = page.get_by_label("min", exact=True)
    page.locator("button", has_text="✕ Camera/float 1: ").wait_for()  # applied on release

    def kept() -> list[int]:  # the runs the bound in the min field keeps (it follows the drag)
        return sorted(r for r, v in values.items() if low.input_value() and v >= float(low.input_value()))

    assert wait_for(lambda: rows.count() == len(kept())), (rows.count(), len(kept()))
    expected = kept()
    assert 3 < len(expected) < 27
    shown = sorted(int(t.split()[0]) for t in rows.locator(".tabulator-cell[tabulator-field='run']").all_inner_texts())
    assert shown == expected
    # Bars left of the bound turn grey; the filtered column's header shows the funnel.
    assert wait_for(lambda: near(png_of(hist), (0xc5, 0xca, 0xe9), 20).sum() > 20)
    mark = png_of(header(page, "v001"))
    assert near(mark, funnel, 30).sum() >= 20
    assert header(page, "v001").locator(".tabulator-col-title").evaluate(
        "el => getComputedStyle(el, '::after').width") == "10px"
    assert not near(png_of(header(page, "v005")), funnel, 30).any()
    page.get_by_role("button", name=re.compile(r"^✕ ")).click()
    assert wait_for(lambda: rows.count() == 30)
    assert wait_for(lambda: not near(png_of(header(page, "v001")), funnel, 30).any())

    # Has a value / empty, on the image column.
    page.locator("select").filter(has=page.locator("option:text-is('Spectrometer/png 3')")).select_option(
        label="Spectrometer/png 3")
    page.locator(".dmn-filter-mode").get_by_text("Empty", exact=True).click()
    assert wait_for(lambda: rows.count() == 2)
    assert sorted(int(t.split()[0]) for t in rows.locator(".tabulator-cell[tabulator-field='run']").all_inner_texts()) \
        == [4, 9]
    assert near(png_of(header(page, "v003")), funnel, 30).sum() >= 20
    page.locator(".dmn-filter-mode").get_by_text("Has a value", exact=True).click()
    assert wait_for(lambda: rows.count() == 28)
    assert cell(page, 5, "v003").locator("img.dmn-thumb").count() == 1
    assert dialogs == []


# ---------------------------------------------------------------- 3. right-click menus

def test_copy_two_runs_as_markdown_and_plot_a_column_from_its_header(serve, small_db, page):
    dialogs = no_dialogs(page)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    srv = serve([small_db])
    open_table(page, srv.url)
    cell(page, 27, "run").click()
    page.get_by_role("button", name="Inspect run 27").wait_for()
    cell(page, 24, "run").click(modifiers=["Control"])
    assert wait_for(lambda: page.locator(".tabulator-row.tabulator-selected").count() == 2)
    cell(page, 24, "v000").click(button="right")
    item = page.locator(".tabulator-menu-item", has_text="as Markdown")
    assert item.inner_text() == "Copy 2 runs as Markdown"
    assert page.locator(".tabulator-menu-item").all_inner_texts() == [
        "Copy 2 runs as Markdown", "Inspect run 24", "Reprocess 2 runs…", "Processing log of run 24"]
    item.click()
    assert wait_for(lambda: "| Run" in page.evaluate("navigator.clipboard.readText()"))
    text = page.evaluate("navigator.clipboard.readText()").splitlines()
    head = [c.strip() for c in text[0].strip("|").split("|")]
    assert head[:3] == ["Run", "Timestamp", "Comment"] and "XGM/float 0" in head
    rows = {int(r.strip("|").split("|")[0]): [c.strip() for c in r.strip("|").split("|")] for r in text[2:]}
    assert sorted(rows) == [24, 27]
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        for run in (24, 27):
            value = conn.execute("SELECT value FROM run_variables WHERE run=? AND name='v000'", (run,)).fetchone()[0]
            assert rows[run][head.index("XGM/float 0")] == format_number(value)
    assert rows[27][2] == "run 27"

    # Header menu: plot XGM/float 0 against run, on the Plots page.
    header_menu(page, "v000", "Plot")
    page.get_by_text("Summary of all runs").wait_for(timeout=20000)
    assert page.locator(".bk-tab.bk-active").inner_text() == "Plots"
    ysel = page.locator("select:visible").first  # the Plots page's Y
    assert ysel.evaluate("s => s.options[s.selectedIndex].text") == "XGM/float 0"
    page.get_by_text("30 runs plotted").wait_for()
    assert dialogs == []


# ---------------------------------------------------------------- 5. delete a variable, pre-create runs

def test_delete_a_variable_from_its_header(serve, small_db, page, chromium_browser):
    dialogs = no_dialogs(page)
    for run in range(1, 31):
        write_results(run_file_path(small_db, 1234, run), [
            VariableResult(n, data=np.arange(4.0) * run, summary=float(run), preview=np.arange(2.0))
            for n in ("v000", "v001")])
    srv = serve([small_db])
    open_table(page, srv.url)
    other = chromium_browser.new_context().new_page()
    open_table(other, srv.url)
    assert header(other, "v001").count() == 1
    header_menu(page, "v001", "Delete variable")
    question = page.get_by_text(re.compile("^Delete the variable"))
    question.wait_for()
    assert "“Camera/float 1” (v001)" in question.inner_text() and "30 runs lose" in question.inner_text()
    page.locator(".dmn-confirm-no button").click()
    assert wait_for(lambda: not question.is_visible()) and header(page, "v001").count() == 1
    header_menu(page, "v001", "Delete variable")
    page.locator(".dmn-confirm-yes button").click()
    assert wait_for(lambda: header(page, "v001").count() == 0)
    assert wait_for(lambda: header(other, "v001").count() == 0)  # another session drops it too
    page.get_by_text("deleted: 30 runs, 30 run files").wait_for(timeout=20000)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM run_variables WHERE name='v001'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM variables WHERE name='v001'").fetchone() == (0,)
    for run in range(1, 31):
        with h5py.File(run_file_path(small_db, 1234, run)) as f:
            assert "v001" not in f and "v001" not in f[".reduced"] and "v001" not in f[".preview"]
            assert "v000" in f and "v000" in f[".reduced"]
    assert wait_for(lambda: "deleted variable 'v001'" in srv.log())
    other.context.close()
    assert dialogs == []


def test_deleting_is_refused_without_the_context_edit_right(serve, small_db, page):
    srv = serve([small_db], *AUTH, "--context-editors", "alice")
    sign_in(page, srv.url, "bob")
    header(page, "v001").locator(".tabulator-col-title").click(button="right")
    items = page.locator(".tabulator-menu-item").all_inner_texts()
    assert "Plot “Camera/float 1” against run" in items and not any("Delete" in i for i in items)
    page.keyboard.press("Escape")
    # A forged message, as if the menu had offered it: the server refuses and says why.
    page.evaluate(f"""() => {{ const table = ({FIND_TABULATOR_VIEW})().model.id;
        ({FIND_BRIDGE})().model_proxy.send_msg({{kind: 'delete', table, field: 'v001'}}) }}""")
    refusal = page.locator(".dmn-status").get_by_text("Deleting variables is not allowed")
    refusal.wait_for()
    assert "bob may not edit the context file" in refusal.inner_text()
    assert page.get_by_text(re.compile("^Delete the variable")).count() == 0
    time.sleep(1)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM run_variables WHERE name='v001'").fetchone() == (30,)
    assert header(page, "v001").count() == 1


def test_precreate_runs_and_comment_one_before_it_is_taken(serve, small_db, page):
    srv = serve([small_db])
    open_table(page, srv.url)
    page.locator(".card-title", has_text="Pre-create runs").click()
    page.get_by_label("Runs", exact=True).fill("2")
    page.get_by_label("Runs", exact=True).press("Enter")
    page.locator(".dmn-precreate button").click()
    cell(page, 32, "run").wait_for(timeout=10000)
    runs = page.evaluate(f"() => ({FIND_TABULATOR_VIEW})().tabulator.getData().map(r => r.run)")
    assert [int(re.sub(r"<[^>]*>", "", r).split()[0]) for r in runs][:3] == [32, 31, 30]
    assert cell(page, 32, "start_time").inner_text().strip() == ""
    target = cell(page, 32, "comment")
    target.click()
    target.locator("input").fill("sample B, 5 mm")
    target.locator("input").press("Enter")
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        assert wait_for(lambda: conn.execute(
            "SELECT value FROM run_variables WHERE run=32 AND name='comment'").fetchone() == ("sample B, 5 mm",))
        assert conn.execute("SELECT start_time FROM run_info WHERE run=32").fetchone() == (None,)
    with DamnitDB.from_dir(small_db) as db:  # the run is taken: processing writes its start time
        db.set_variables(1234, 32, {}, start_time=time.time())
    assert wait_for(lambda: cell(page, 32, "start_time").inner_text().strip() != "")
    assert cell(page, 32, "comment").inner_text().strip() == "sample B, 5 mm"


# ---------------------------------------------------------------- 6. sparkline hover

def test_hovering_a_sparkline_reads_the_value_under_the_cursor(serve, small_db, page):
    srv = serve([small_db])
    open_table(page, srv.url)
    with sqlite3.connect(small_db / "runs.sqlite") as conn:
        blob = conn.execute("SELECT value FROM run_variables WHERE run=28 AND name='v006'").fetchone()[0]
    x, y = np.load(io.BytesIO(blob))
    svg = cell(page, 28, "v006").locator("svg.dmn-spark")
    svg.scroll_into_view_if_needed()
    box = svg.bounding_box()
    tip = page.locator(".dmn-spark-tip")
    for k in (3, 20, 41):
        px = (x[k] - x.min()) / (x.max() - x.min()) * 98 + 1  # as cells.sparkline_svg draws it
        page.mouse.move(box["x"] + px * box["width"] / 100 + 0.4, box["y"] + box["height"] / 2)
        assert wait_for(lambda: tip.is_visible())
        assert tip.inner_text() == f"x = {format_number(x[k])}, y = {format_number(y[k])}"
        dot = svg.locator("circle.dmn-spark-dot")
        assert abs(float(dot.get_attribute("cx")) - px) < 1.5
    page.mouse.move(5, 5)
    assert wait_for(lambda: not tip.is_visible())


# ---------------------------------------------------------------- hostile titles

def test_hostile_titles_in_menus_filters_and_questions(serve, tmp_path, page):
    dialogs = no_dialogs(page)
    db = make_database(tmp_path / "evil", proposal=1234, n_runs=8, n_vars=4)
    with sqlite3.connect(db / "runs.sqlite") as conn:
        conn.execute("UPDATE variables SET title=? WHERE name='v001'", (f"{EVIL}/{EVIL}",))
        conn.execute("UPDATE variables SET title=? WHERE name='v002'", (EVIL,))
        conn.execute("UPDATE run_variables SET value=? WHERE name='comment'", (EVIL,))
    srv = serve([db])
    open_table(page, srv.url)
    injected = "() => document.querySelectorAll('img[src=x]').length"
    header_menu(page, "v001", "Filter on")  # opens the filter card on it
    page.locator("svg.dmn-hist").wait_for()
    assert page.locator(".tabulator-menu").count() == 0
    header(page, "v002").locator(".tabulator-col-title").click(button="right")
    labels = page.locator(".tabulator-menu-item").all_inner_texts()
    assert f"Plot “{EVIL}” against run" in labels and f"Delete variable “{EVIL}”…" in labels
    page.locator(".tabulator-menu-item", has_text="Delete variable").click()
    assert EVIL in page.get_by_text(re.compile("^Delete the variable")).inner_text()
    page.locator(".dmn-confirm-no button").click()
    cell(page, 3, "run").click(button="right")
    assert page.locator(".tabulator-menu-item").count() == 4
    page.keyboard.press("Escape")
    page.locator(".dmn-filter-mode").get_by_text("Empty", exact=True).click()
    page.get_by_role("button", name=re.compile(r"^✕ ")).wait_for()
    assert EVIL in page.get_by_role("button", name=re.compile(r"^✕ ")).inner_text()
    page.get_by_text("Columns", exact=True).click()
    page.locator(".dmn-delete button").wait_for()
    assert page.locator("select option", has_text=EVIL).count() >= 2  # filter and delete choosers, as text
    header_menu(page, "v002", "Plot")
    page.get_by_text("Summary of all runs").wait_for(timeout=20000)
    time.sleep(1)
    assert page.evaluate(injected) == 0
    assert dialogs == []


def test_a_big_proposal_draws_its_newest_runs_first_then_sorts_over_every_run(serve, tmp_path, page):
    """1000 runs x 204 variables is opened newest runs first (app/live/source.py): the page is drawn from
    the newest 200 runs, the rest is read once it is painted, and a sorted page is sorted again over
    every run."""
    db = make_database(tmp_path / "big", proposal=1234, n_runs=1000, n_vars=200)
    top_run, top = 17, 123456.5  # the largest value is an older run's: not among the values read first
    set_value(db, top_run, "v001", top)
    srv = serve([db])
    open_table(page, srv.url + "?sort=v001:desc")
    first = page.locator(".tabulator-row").first
    assert wait_for(lambda: first.locator(".tabulator-cell[tabulator-field='run']").inner_text().strip()
                    == str(top_run), timeout=60), first.inner_text()
    assert first.locator(".tabulator-cell[tabulator-field='v001']").inner_text().strip() == format_number(top)
    assert wait_for(lambda: "(the older runs in" in srv.log_path.read_text()), srv.log_path.read_text()
    with page.expect_download() as dl:
        page.get_by_role("button", name="CSV").click()
    path = tmp_path / "export.csv"
    dl.value.save_as(path)
    import pandas as pd

    df = pd.read_csv(path)
    assert len(df) == 1000 and df["Run"].tolist() == list(range(1, 1001))
    assert df["Camera/float 1"].notna().sum() > 900  # v001, older runs included
