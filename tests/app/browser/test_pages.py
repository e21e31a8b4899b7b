"""Browser tests of the dashboard pages (inspect, plots, context file, processing, comments, big screen).

One real setup for the module: extra-data mock runs, a DAMNIT database made with ``damnit init``, runs
processed with ``damnit reprocess --direct`` (the real engine), and ``panel serve app/server/main.py`` on a free
loopback port, driven by Debian's Chromium through Playwright. (The screenshots in ``docs/`` are taken
by ``scripts/screenshots.py``.)
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from app.display.run_contents import run_file, scan_run_file
from backend.base import mockruns
from tests.infra import REPO

pytestmark = pytest.mark.browser


PROPOSAL = 4321

CONTEXT = '''\
import numpy as np
import xarray as xr
from damnit_ctx import Cell, Variable

XGM = "SA1_XTD2_XGM/DOOCS/MAIN"
CAMERA = "SPB_IRU_CAM/CAM/SIDEMIC:daqOutput"
VERSION = "v1"


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)


@Variable(title="Context version")
def ctx_version(run):
    return VERSION


@Variable(title="XGM energy", units="uJ", summary="mean")
def xgm_energy(run):
    return run[XGM, "pulseEnergy.photonFlux"].xarray().rename("energy")


@Variable(title="XGM energy (numpy)", summary="max")
def energy_np(run):
    return run[XGM, "pulseEnergy.photonFlux"].ndarray()


@Variable(title="Camera mean")
def camera_mean(run):
    return run[CAMERA, "data.image.pixels"].ndarray().astype(np.float32).mean(axis=0)


@Variable(title="Camera profile")
def camera_profile(run):
    img = run[CAMERA, "data.image.pixels"].ndarray().astype(np.float32).mean(axis=0)
    da = xr.DataArray(img, dims=["y", "x"], coords={"x": np.arange(img.shape[1]) * 0.5}, name="image")
    return Cell(da.sum("y"), preview=da)


@Variable(title="Energy histogram")
def energy_hist(run):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().hist(run[XGM, "pulseEnergy.photonFlux"].ndarray(), bins=10)
    return fig


@Variable(title="Energy plotly")
def energy_plotly(run):
    import plotly.graph_objects as go
    return go.Figure(go.Scatter(y=run[XGM, "pulseEnergy.photonFlux"].ndarray()))


@Variable(title="Beam dataset")
def beam(run):
    e = run[XGM, "pulseEnergy.photonFlux"].xarray()
    return xr.Dataset({"energy": e.rename(None), "double": (e * 2).rename(None)})
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    url: str
    db_dir: Path
    env: dict
    port: int
    server: subprocess.Popen | None = None
    log_path: Path | None = None

    def page_url(self, slug: str, **args: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in args.items())
        return f"{self.url}?page={slug}{extra}"

    def process(self, *runs: int) -> None:
        """Process runs with the real engine, as the listener or a user would."""
        res = subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", "--direct",
                              *map(str, runs)], cwd=self.db_dir, env=self.env, capture_output=True,
                             text=True, timeout=240)
        assert res.returncode == 0, f"damnit reprocess failed:\n{res.stdout}\n{res.stderr}"

    def start(self) -> None:
        self.log_path = self.db_dir.parent / f"panel-{time.monotonic_ns()}.log"
        log = open(self.log_path, "w")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "panel", "serve", str(REPO / "app" / "server" / "main.py"), "--port", str(self.port),
             "--plugins", "app.server.routes",
             "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{self.port}"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                pytest.fail(f"panel serve exited:\n{self.log_path.read_text()[-3000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"panel serve did not answer within 60 s:\n{self.log_path.read_text()[-3000:]}",
                    pytrace=False)

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(5)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    data_root = root / "exp"
    mockruns.make_proposal(data_root, PROPOSAL, range(1, 7), ntrains=20)
    db_dir = root / "db"
    ctx = root / "context_src.py"
    ctx.write_text(CONTEXT)
    env = {**os.environ, "EXTRA_DATA_DATA_ROOT": str(data_root), "AMORE_BROKER": "none",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "DAMNIT_DASHBOARD_CONFIG": f'{{"databases": ["{db_dir}"]}}'}
    res = subprocess.run([sys.executable, "-m", "backend.cli", "init", str(db_dir), "--proposal", str(PROPOSAL),
                          "--context", str(ctx)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    port = _free_port()
    dash = Dashboard(f"http://127.0.0.1:{port}/main", db_dir, env, port)
    dash.process(1, 2)
    dash.start()
    yield dash
    dash.stop()


def _newest_run(dashboard: Dashboard) -> int:
    runs = [int(p.stem.split("_r")[1]) for p in (dashboard.db_dir / "extracted_data").glob("p*_r*.h5")]
    return max(runs)


def _tab(page, title: str):
    return page.locator(".bk-tab").filter(has_text=re.compile(rf"^\s*{re.escape(title)}\s*$"))


# ------------------------------------------------------------------------------------------------------


def _box_select_all_points(page) -> None:
    """Drag the summary plot's box selection (its active drag tool) over the whole plot area."""
    box = page.locator(".damnit-summary-plot").bounding_box()
    page.mouse.move(box["x"] + 70, box["y"] + 45)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] - 45, box["y"] + box["height"] - 50, steps=5)
    page.mouse.up()


def _run_row(page, run: int):
    cell = page.locator('.tabulator-cell[tabulator-field="run"]').filter(has_text=re.compile(rf"^\s*{run}\s*$"))
    return page.locator(".tabulator-row").filter(has=cell)


def _selected_table_runs(page) -> set[int]:
    cells = page.locator('.tabulator-row.tabulator-selected .tabulator-cell[tabulator-field="run"]')
    return {int(t.split()[0]) for t in cells.all_inner_texts()}


def test_selection_is_shared_both_ways_and_double_click_inspects_a_run(dashboard, page):
    page.goto(dashboard.page_url("run_table"))
    _run_row(page, 1).locator('.tabulator-cell[tabulator-field="run"]').click()
    page.wait_for_function("() => true")  # let the click reach the server
    page.get_by_role("button", name="Inspect run 1").wait_for()
    assert _selected_table_runs(page) == {1}

    # Runs selected by box selection in the Plots page become the table's selected rows.
    _tab(page, "Plots").click()
    count = page.get_by_text(re.compile(r"\d+ runs plotted"))
    count.wait_for(timeout=30_000)
    plotted = int(re.match(r"(\d+)", count.inner_text()).group(1))
    assert plotted >= 2
    page.locator(".damnit-summary-plot canvas").first.wait_for()
    _box_select_all_points(page)
    many = rf"(\d+, ){{{plotted - 1}}}\d+"  # the overlay said "Runs: 1" before: wait for all of them
    runs_text = page.locator(".damnit-overlay-runs").get_by_text(re.compile(rf"^Runs: {many}$"))
    runs_text.wait_for(timeout=10_000)
    selected = {int(r) for r in runs_text.inner_text().removeprefix("Runs: ").split(", ")}
    assert len(selected) == plotted
    _tab(page, "Run table").click()
    page.wait_for_function("() => true")
    deadline = time.monotonic() + 10
    while _selected_table_runs(page) != selected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _selected_table_runs(page) == selected
    page.get_by_role("button", name=f"Inspect run {max(selected)}").wait_for()

    # A double click on a row opens that run's inspection, with its plots.
    _run_row(page, 1).locator('.tabulator-cell[tabulator-field="run"]').dblclick()
    page.locator(".damnit-inspect-title").get_by_text("Run 1", exact=True).wait_for(timeout=30_000)
    page.locator(".damnit-var-xgm_energy .damnit-plot-ready canvas").first.wait_for(timeout=30_000)
    _tab(page, "Run table").click()
    deadline = time.monotonic() + 10
    while _selected_table_runs(page) != {1} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _selected_table_runs(page) == {1}

    # The Inspect button does the same for the selected run.
    _run_row(page, 2).locator('.tabulator-cell[tabulator-field="run"]').click()
    page.get_by_role("button", name="Inspect run 2").click()
    page.locator(".damnit-inspect-title").get_by_text("Run 2", exact=True).wait_for(timeout=30_000)


def test_row_click_shows_a_plot_for_each_array_variable(dashboard, page):
    stored = scan_run_file(run_file(dashboard.db_dir, PROPOSAL, 2))
    plottable = sorted(v.name for v in stored.values() if v.is_plottable)
    assert {"xgm_energy", "energy_np", "camera_mean", "camera_profile", "energy_hist", "energy_plotly",
            "beam"} <= set(plottable)

    page.goto(dashboard.page_url("run_table"))
    run_cell = page.locator('.tabulator-cell[tabulator-field="run"]').filter(has_text=re.compile(r"^\s*2\s*$"))
    run_cell.first.click()
    _tab(page, "Inspect run").click()
    page.locator(".damnit-inspect-title").get_by_text("Run 2", exact=True).wait_for()
    for name in plottable:
        card = page.locator(f".damnit-var-{name} .damnit-plot-ready")
        card.wait_for(timeout=30_000)
        drawn = card.locator("canvas, .js-plotly-plot, svg.main-svg, img.damnit-stored-image")
        assert drawn.count() > 0, f"no plot drawn for {name}"
    assert not page.locator("text=Could not load").count()
    # camera_profile stored a preview (the image): shown first, the full data (a 1-D profile) on request
    profile = page.locator(".damnit-var-camera_profile")
    assert profile.get_by_text("Preview", exact=True).count() == 1
    profile.get_by_role("button", name="Show full data").click()
    profile.get_by_text("Preview", exact=True).wait_for(state="detached", timeout=20_000)
    profile.locator(".damnit-plot-ready canvas").first.wait_for()


def test_summary_plot_gains_a_point_when_a_run_is_processed(dashboard, page):
    page.goto(dashboard.page_url("plots"))
    count = page.get_by_text(re.compile(r"\d+ runs plotted"))
    count.wait_for()
    before = int(re.match(r"(\d+)", count.inner_text()).group(1))

    def points_in_plot() -> int:
        return page.evaluate("""() => {
            let n = -1
            for (const doc of Bokeh.documents) for (const m of doc.all_models)
                if (m.type === 'ColumnDataSource' && m.data.run !== undefined && m.data.y !== undefined)
                    n = Math.max(n, m.data.run.length)
            return n }""")

    assert points_in_plot() == before
    run = _newest_run(dashboard) + 1
    dashboard.process(run)
    page.get_by_text(f"{before + 1} runs plotted").wait_for(timeout=20_000)
    deadline = time.monotonic() + 10
    while points_in_plot() != before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert points_in_plot() == before + 1

    # Selecting points (box select is the active drag tool) selects those runs in the session ...
    _box_select_all_points(page)
    all_runs = ", ".join(str(r) for r in range(1, before + 2))
    page.locator(".damnit-overlay-runs").get_by_text(f"Runs: {all_runs}").wait_for(timeout=10_000)
    # ... which the per-run overlay then draws, one line per run.
    page.get_by_role("button", name="Plot selected runs").click()
    page.locator(".damnit-overlay-plot canvas").first.wait_for(timeout=20_000)


def test_saving_a_context_with_a_syntax_error_is_refused_with_its_line(dashboard, page):
    ctx_path = dashboard.db_dir / "context.py"
    original = ctx_path.read_text()
    page.goto(dashboard.page_url("context_editor"))
    editor = page.locator(".damnit-context-editor .ace_content")
    editor.wait_for()
    page.locator(".damnit-context-editor .ace_text-input").focus()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text("from damnit_ctx import Variable\n\nx = (1,\n")
    page.get_by_role("button", name="Save").click()
    status = page.locator(".damnit-context-status")
    status.get_by_text(re.compile(r"Not saved.*line 3")).wait_for(timeout=30_000)
    assert ctx_path.read_text() == original  # nothing written


def _replace_editor_text(page, text: str) -> None:
    page.locator(".damnit-context-editor .ace_text-input").focus()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def test_saving_a_valid_context_updates_the_variable_list_and_edits_on_disk_are_not_overwritten(
        dashboard, page):
    from backend.storage.database import DamnitDB

    ctx_path = dashboard.db_dir / "context.py"
    original = ctx_path.read_text()
    added = original + '\n\n@Variable(title="Added in the browser")\ndef added_here(run):\n    return 42\n'
    page.goto(dashboard.page_url("context_editor"))
    page.locator(".damnit-context-editor .ace_content").wait_for()
    _replace_editor_text(page, added)
    page.get_by_role("button", name="Save").click()
    status = page.locator(".damnit-context-status")
    status.get_by_text("Saved. Variable list updated.").wait_for(timeout=60_000)
    assert ctx_path.read_text() == added
    with DamnitDB.from_dir(dashboard.db_dir) as db:
        assert db.variable_titles().get("added_here") == "Added in the browser"

    # Someone edits the file elsewhere while this editor has unsaved changes: saving must not clobber it.
    ctx_path.write_text(added + "# edited on disk\n")
    _replace_editor_text(page, added + "# edited in the browser\n")
    page.get_by_role("button", name="Save").click()
    status.get_by_text(re.compile("changed on disk")).wait_for(timeout=30_000)
    assert ctx_path.read_text().endswith("# edited on disk\n")
    page.get_by_role("button", name="Reload from disk").click()  # the edits would be lost: asks first
    status.get_by_text(re.compile("unsaved edits")).wait_for(timeout=10_000)
    assert page.locator(".damnit-context-editor").get_by_text("# edited in the browser").count() == 1
    page.get_by_role("button", name="Discard my edits and reload").click()
    page.locator(".damnit-context-editor").get_by_text("# edited on disk").wait_for()
    ctx_path.write_text(original)  # leave the context as the other tests expect it


def test_leaving_with_unsaved_context_edits_asks_first(dashboard, page):
    ctx_path = dashboard.db_dir / "context.py"
    page.goto(dashboard.page_url("context_editor"))
    page.locator(".damnit-context-editor .ace_content").wait_for()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.type), d.dismiss()))  # dismiss = stay on the page
    page.reload()  # no edits: no question
    page.locator(".damnit-context-editor .ace_content").wait_for()
    assert dialogs == []
    page.locator(".damnit-context-editor .ace_text-input").focus()
    page.keyboard.press("Control+End")
    page.keyboard.insert_text("\n# not saved yet\n")
    page.get_by_text("unsaved changes").wait_for(timeout=10_000)
    try:
        page.reload(timeout=3000)
    except PlaywrightTimeout:
        pass  # the reload was cancelled by dismissing the question
    assert dialogs == ["beforeunload"]
    assert page.locator(".damnit-context-editor").get_by_text("# not saved yet").count() == 1  # still here
    assert "# not saved yet" not in ctx_path.read_text()


def test_reprocess_from_the_page_puts_new_values_in_the_table(dashboard, page):
    ctx_path = dashboard.db_dir / "context.py"
    ctx_path.write_text(ctx_path.read_text().replace('VERSION = "v1"', 'VERSION = "v2-from-page"'))
    page.goto(dashboard.page_url("processing"))
    page.get_by_text("no runs given").wait_for()
    runs = page.get_by_placeholder("e.g. 1-10, 15  or  all")
    for _ in range(10):  # typing before the page's websocket is up is lost: type again until heard
        runs.fill("")
        runs.fill("1")
        runs.press("Enter")
        try:
            page.get_by_text("1 runs selected").wait_for(timeout=2000)
            break
        except PlaywrightTimeout:
            continue
    page.get_by_text("1 runs selected").wait_for()
    page.get_by_role("button", name="This machine").click()
    page.get_by_role("button", name="Reprocess").click()
    page.get_by_text(re.compile("Launched processing for 1 runs")).wait_for()
    page.locator(".damnit-jobs").get_by_text("DONE").wait_for(timeout=120_000)
    _tab(page, "Run table").click()
    page.get_by_text("v2-from-page").first.wait_for(timeout=20_000)


def test_standalone_comment_can_be_added(dashboard, page):
    from backend.storage.database import DamnitDB

    page.goto(dashboard.page_url("comments"))
    page.locator(".damnit-new-comment textarea").fill("Beam dump <b>not</b> bold at 12:00")
    page.get_by_role("button", name="Publish").click()
    page.locator(".damnit-comments").get_by_text("Beam dump <b>not</b> bold at 12:00").wait_for()
    with DamnitDB.from_dir(dashboard.db_dir) as db:
        assert [c["comment"] for c in db.standalone_comments()][-1] == "Beam dump <b>not</b> bold at 12:00"


def test_bigscreen_follows_a_new_run_and_reloads_after_a_server_restart(dashboard, page):
    newest = _newest_run(dashboard)
    page.goto(f"{dashboard.url}?mode=bigscreen")
    page.get_by_text(f"Run {newest}", exact=True).wait_for()
    page.evaluate("() => { window.__still_same_page = true }")
    assert page.locator("button, input, textarea, select, .bk-tab").count() == 0  # nothing to edit or open
    dashboard.process(newest + 1)
    page.get_by_text(f"Run {newest + 1}", exact=True).wait_for(timeout=20_000)
    assert page.evaluate("() => window.__still_same_page === true")  # followed without a reload

    dashboard.stop()
    dashboard.start()
    page.wait_for_function("() => window.__still_same_page !== true", timeout=40_000)
    page.get_by_text(f"Run {newest + 1}", exact=True).wait_for(timeout=30_000)


def test_pages_do_not_crash_without_write_permission(dashboard, chromium_browser):
    """Read-only servers still show every page (controls disabled), and edits are refused server-side."""
    port = _free_port()
    ro = Dashboard(f"http://127.0.0.1:{port}/main", dashboard.db_dir,
                   {**dashboard.env, "DAMNIT_DASHBOARD_CONFIG":
                    f'{{"databases": ["{dashboard.db_dir}"], "read_only": true}}'}, port)
    ro.start()
    try:
        pg = chromium_browser.new_page()
        pg.set_default_timeout(15_000)
        pg.goto(ro.page_url("context_editor"))
        pg.get_by_text(re.compile("Read-only")).first.wait_for()
        assert pg.get_by_role("button", name="Save").is_disabled()
        pg.goto(ro.page_url("processing"))
        assert pg.get_by_role("button", name="Reprocess").is_disabled()
        pg.goto(ro.page_url("comments"))
        assert pg.get_by_role("button", name="Publish").count() == 0
        pg.close()
    finally:
        ro.stop()
