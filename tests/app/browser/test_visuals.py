"""What people see, measured on the pixels the browser drew (Debian Chromium via Playwright, the real
``panel_serve.sh``): images with square pixels, stored figures whole and upright, the big screen on
1920x1080 and 3840x2160 screens in both themes, one clock on every page, and the summary plot's kinds
switched in every order.

One proposal for the module: extra-data mock runs processed with ``damnit reprocess --direct`` (the real
engine) with a context whose values are made to be measured: a 64x48 image holding a round disk, the
same disk on coordinates in millimetres, and a matplotlib figure whose top half is red and bottom half
blue (2:1).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app.server.launcher import DashboardServer
from backend.base import mockruns
from tests.app.browser.pixels import bbox, ink, main_blob, near, page_shot, shot, x_tick_label_height
from tests.infra import REPO

pytestmark = pytest.mark.browser

PROPOSAL = 5678
ZONE = "Asia/Tokyo"  # not the test machine's zone: every time shown must follow --timezone
DISK_RGB = (253, 231, 37)  # viridis' top: the disk (1000) at the 99th percentile
RED, BLUE = (255, 0, 0), (0, 0, 255)

CONTEXT = '''\
import numpy as np
import xarray as xr
from damnit_ctx import Variable

XGM = "SA1_XTD2_XGM/DOOCS/MAIN"


def disk():
    """A 64 x 48 camera image (48 rows of 64 pixels) with a round disk of radius 10 pixels."""
    yy, xx = np.indices((48, 64))
    return np.where((yy - 20) ** 2 + (xx - 40) ** 2 <= 10 ** 2, 1000.0, 0.0)


@Variable(title="Spot", units="counts")
def spot(run):
    return disk()


@Variable(title="Spot on a grid")
def spot_mm(run):
    da = xr.DataArray(disk(), dims=["y", "x"], coords={"y": np.arange(48) * 0.1, "x": np.arange(64) * 0.1})
    da.x.attrs["units"] = da.y.attrs["units"] = "mm"
    return da


@Variable(title="Reference figure")
def figure(run):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.axis("off")
    ax.imshow(np.array([[[255, 0, 0]], [[0, 0, 255]]], dtype=np.uint8), aspect="auto", interpolation="nearest")
    return fig


@Variable(title="Pulse energy", units="uJ", summary="mean")
def energy(run):
    return run[XGM, "pulseEnergy.photonFlux"].xarray()


@Variable(title="Beam on")
def beam_on(run):
    return True


@Variable(title="Phase", units="rad")
def phase(run):
    return complex(1.5, -2.0)


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)


@Variable(title="Verdict <i>it</i>")
def verdict(run):
    return "<b>not bold</b>"
'''


@dataclass
class Site:
    server: DashboardServer
    db_dir: Path
    start_times: dict[int, float]
    comment_time: float

    @property
    def url(self) -> str:
        return self.server.url

    def log(self) -> str:
        return self.server.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from backend.storage.database import DamnitDB

    root = tmp_path_factory.mktemp("visuals")
    data_root = root / "exp"
    mockruns.make_proposal(data_root, PROPOSAL, range(1, 4), ntrains=20)
    db_dir, ctx = root / "db", root / "context_src.py"
    ctx.write_text(CONTEXT)
    env = {**os.environ, "EXTRA_DATA_DATA_ROOT": str(data_root), "AMORE_BROKER": "none",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for cmd in (["init", str(db_dir), "--proposal", str(PROPOSAL), "--context", str(ctx)],
                ["reprocess", "--direct", "1", "2", "3"]):
        res = subprocess.run([sys.executable, "-m", "backend.cli", *cmd], cwd=root if cmd[0] == "init" else db_dir,
                             env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"damnit {cmd[0]} failed:\n{res.stdout}\n{res.stderr}"
    with DamnitDB.from_dir(db_dir) as db:
        starts = {r: db.conn.execute("SELECT start_time FROM run_info WHERE run=?", (r,)).fetchone()[0]
                  for r in (1, 2, 3)}
        comment_time = float(starts[3])
        db.add_standalone_comment(comment_time, "run 3 started")
    server = DashboardServer([db_dir], "--timezone", ZONE, env=env, log_path=root / "server.log")
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield Site(server, db_dir, starts, comment_time)
    server.stop()


@pytest.fixture
def page(page):
    """The shared page fixture with more patience: pages other than the run table wait for their
    scripts (loaded once the browser has been idle), which takes long on a busy machine."""
    page.set_default_timeout(45_000)
    return page


def _assert_round(img: np.ndarray, where: str) -> None:
    disk = main_blob(near(img, DISK_RGB, tol=30))  # not the colour bar's top
    assert disk is not None, f"{where}: no disk drawn"
    assert disk.width >= 40, f"{where}: the disk is only {disk.width} px wide"
    assert abs(disk.aspect - 1) <= 0.05, f"{where}: the disk is {disk.width}x{disk.height} px, not round"


def _inspect(page, site: Site, run: int) -> None:
    page.goto(f"{site.url}?page=inspect")
    page.locator(".bk-input").filter(has=page.locator("option")).first.wait_for()
    select = page.locator("select").filter(has=page.locator("option", has_text=re.compile(rf"^Run {run}$")))
    select.select_option(label=f"Run {run}")
    page.locator(".damnit-inspect-title").get_by_text(f"Run {run}", exact=True).wait_for(timeout=30_000)


def _drawn(page, locator, timeout: float = 30) -> None:
    """Wait until ``locator`` (a plot) has a canvas and Bokeh has finished drawing it."""
    locator.locator("canvas").first.wait_for(timeout=timeout * 1000)
    page.wait_for_function("() => Object.values(Bokeh.index).every(v => !v.has_finished || v.has_finished())")
    time.sleep(0.5)


# -- images ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [(1600, 1000), (700, 900)])
def test_a_round_spot_stays_round_in_inspect(site, page, viewport):
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    _inspect(page, site, 2)
    for name in ("spot", "spot_mm"):
        plot = page.locator(f".damnit-var-{name} .damnit-image")
        _drawn(page, plot)
        plot.scroll_into_view_if_needed()
        _assert_round(shot(plot), f"Inspect {name} at {viewport}")
    # Stretching fills the plot instead (DAMNIT's dynamic aspect), and "Lines" shows each row as a line.
    card = page.locator(".damnit-var-spot")
    card.locator(".damnit-stretch input").check()
    time.sleep(1.5)
    _drawn(page, card.locator(".damnit-image"))
    stretched = main_blob(near(shot(card.locator(".damnit-image")), DISK_RGB, tol=30))
    assert stretched is not None and stretched.aspect > 1.2
    card.get_by_role("button", name="Lines").click()
    card.locator(".damnit-image-lines canvas").first.wait_for()


def test_a_round_spot_stays_round_in_the_plots_page(site, page):
    page.goto(f"{site.url}?page=plots")
    select = page.locator("select").filter(has=page.locator("option", has_text="Spot (image)"))
    select.wait_for(timeout=30_000)
    select.select_option(label="Spot (image)")
    images = page.locator(".damnit-overlay-image")
    images.first.locator("canvas").first.wait_for(timeout=30_000)
    _drawn(page, images.first)
    page.locator(".damnit-overlay-runs").get_by_text("showing the newest run (3)", exact=False).wait_for()
    _assert_round(shot(images.first), "Plots overlay")


def test_a_round_spot_stays_round_on_the_big_screen(site, page):
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(f"{site.url}?mode=bigscreen&plots=spot")
    plot = page.locator(".dmn-wall-plot")
    _drawn(page, plot)
    _assert_round(shot(plot), "big screen")


# -- stored figures -------------------------------------------------------------------------------------


def _assert_reference_figure(img: np.ndarray, where: str, min_width: int = 400) -> None:
    red, blue = bbox(near(img, RED, 10)), bbox(near(img, BLUE, 10))
    assert red and blue, f"{where}: the figure's colours are missing"
    both = bbox(near(img, RED, 10) | near(img, BLUE, 10))
    assert red.bottom < blue.top, f"{where}: not upright (red {red}, blue {blue})"
    assert abs(both.aspect / 2 - 1) <= 0.05, f"{where}: drawn {both.width}x{both.height}, not 2:1"
    assert both.width >= min_width, f"{where}: only {both.width} px wide (cropped or shrunk)"
    assert abs(red.height / blue.height - 1) <= 0.05 and abs(red.width / blue.width - 1) <= 0.02, \
        f"{where}: halves of {red.width}x{red.height} and {blue.width}x{blue.height} px (cropped)"
    inner = img[red.top + 2: red.bottom - 1, red.left + 2: red.right - 1]
    assert (inner == RED).all(), f"{where}: the red half is not pure red (resampled)"


def test_a_stored_figure_is_whole_upright_and_at_its_aspect(site, page):
    _inspect(page, site, 1)
    card = page.locator(".damnit-var-figure")
    card.locator("img.damnit-stored-image").wait_for(timeout=30_000)
    time.sleep(0.5)
    _assert_reference_figure(shot(card), "Inspect")

    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(f"{site.url}?mode=bigscreen&plots=figure")
    plot = page.locator(".dmn-wall-plot")
    plot.locator("img.damnit-stored-image").wait_for(timeout=30_000)
    time.sleep(1)
    _assert_reference_figure(shot(plot), "big screen", min_width=800)  # enlarged by a whole factor


# -- the big screen -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1920, 1080), (3840, 2160)])
@pytest.mark.parametrize("theme", ["dark", "light"])
def test_the_big_screen_fills_a_tv_in_large_type(site, chromium_browser, size, theme):
    width, height = size
    context = chromium_browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        # Eight key values (as many as the default shows), a per-train line to rotate to.
        args = "&vars=energy,n_trains,phase,beam_on,verdict,energy,n_trains,phase&plots=energy&interval=600" + (
            "" if theme == "dark" else "&theme=light")
        page.goto(f"{site.url.removesuffix('/main')}/?mode=bigscreen{args}")  # the address a TV is given
        assert page.url.endswith(f"/main?mode=bigscreen{args}")  # the root kept the query
        plot = page.locator(".dmn-wall-plot")
        _drawn(page, plot)
        page.get_by_text("Run 3", exact=True).wait_for()
        time.sleep(1)
        assert page.locator("button, input, textarea, select, .bk-tab").count() == 0  # nothing to edit

        scroll = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        assert scroll[0] <= width and scroll[1] <= height, f"scrollbars: page is {scroll} in {size}"

        img = page_shot(page)
        bg = img[2, width // 2]  # the screen's own background, at its top edge
        lum = bg.mean()
        assert (lum < 80) if theme == "dark" else (lum > 200), f"{theme} theme has background {bg}"
        content = bbox(ink(img, bg, threshold=40))
        assert content.width >= 0.9 * width and content.height >= 0.9 * height, \
            f"content spans {content.width}x{content.height} of {width}x{height}"

        run_ink = bbox(ink(shot(page.locator(".dmn-wall-runnumber")), bg, threshold=60))
        assert run_ink.height >= 0.03 * height, f"run number {run_ink.height} px tall"
        values = page.locator(".dmn-wall-value")
        assert values.count() == 8
        for i in range(values.count()):
            value_ink = bbox(ink(shot(values.nth(i)), bg, threshold=60))
            assert value_ink.height >= 0.03 * height, f"value {i}: {value_ink.height} px tall"

        plot_img = shot(plot)
        ticks = x_tick_label_height(plot_img)
        assert ticks >= 0.01 * height, f"tick labels {ticks} px tall on a {height} px screen"

        status = page.locator("[data-testid=bigscreen-status]")
        assert re.search(r"POLLING|LIVE", status.inner_text()) and "newest data" in status.inner_text()
    finally:
        context.close()


def test_the_big_screen_shows_data_as_text_and_a_lost_server(site, page):
    page.goto(f"{site.url}?mode=bigscreen&vars=verdict,phase,beam_on,energy&plots=energy")
    page.get_by_text("<b>not bold</b>", exact=True).wait_for()  # values and titles as text, not markup
    page.get_by_text("Verdict <i>it</i>", exact=True).wait_for()
    assert page.locator(".dmn-bigscreen b, .dmn-bigscreen i").count() == 0
    page.get_by_text("1.5-2j rad", exact=True).wait_for()
    page.get_by_text("true", exact=True).wait_for()
    # The browser notices by itself when the server stops answering: a red frame and a message.
    status = page.locator("[data-testid=bigscreen-status]")
    status.get_by_text(re.compile("newest data")).wait_for()
    page.context.set_offline(True)
    status.get_by_text(re.compile("NO CONNECTION")).wait_for(timeout=30_000)
    assert "no update for" in status.inner_text()
    frame = shot(page.locator("[data-testid=bigscreen]"))
    assert near(frame[:6], (198, 40, 40), 30).mean() > 0.8  # a red frame along the top of the screen
    page.context.set_offline(False)


# -- one clock --------------------------------------------------------------------------------------------


def test_times_agree_on_every_page_in_the_servers_zone(site, page):
    from zoneinfo import ZoneInfo

    expected = dt.datetime.fromtimestamp(site.start_times[3], ZoneInfo(ZONE)).strftime("%H:%M:%S %d/%m/%Y")

    page.goto(site.url)
    row = page.locator(".tabulator-row").filter(
        has=page.locator(".tabulator-cell[tabulator-field='run']", has_text=re.compile(r"^\s*3\s*$")))
    row.locator(".tabulator-cell[tabulator-field='start_time']").get_by_text(expected).wait_for(timeout=30_000)
    page.locator(".tabulator-col[tabulator-field='start_time'] .tabulator-col-title").hover()
    page.get_by_text(f"Start of the run ({ZONE})").wait_for()  # the header's tooltip names the zone
    page.locator(".tabulator-col[tabulator-field='energy'] .tabulator-col-title").hover()
    page.get_by_text("Pulse energy [uJ]").wait_for()  # and a variable's its units

    _inspect(page, site, 3)
    scalars = page.locator(".damnit-scalars")
    scalars.get_by_text(f"Timestamp ({ZONE})").wait_for()
    scalars.get_by_text(expected).wait_for()
    # Values as the table formats them: booleans, complex numbers and units.
    for title, value in (("Beam on", "true"), ("Phase", "1.5-2j rad"), ("Verdict <i>it</i>", "<b>not bold</b>")):
        row = scalars.locator("tr").filter(has=page.get_by_text(title, exact=True))
        row.get_by_text(value, exact=True).wait_for()

    page.goto(f"{site.url}?page=comments")
    comments = page.locator(".damnit-comments")
    comments.get_by_text(f"Timestamp ({ZONE})").wait_for(timeout=30_000)
    comments.get_by_text(expected).wait_for()

    page.goto(f"{site.url}?mode=bigscreen")
    page.locator(".dmn-wall-time").get_by_text(f"started {expected} {ZONE}").wait_for()


# -- the summary plot -------------------------------------------------------------------------------------

SUMMARY_GLYPHS = """() => {
  const out = [];
  const walk = (v) => { if (!v) return;
    if (v.model && v.model.renderers && v.el.isConnected && v.model.title &&
        / vs\\. |distribution/.test(v.model.title.text))
      out.push([v.model.title.text, v.model.renderers.filter(r => r.glyph).map(r => r.glyph.type).sort()]);
    for (const c of (v.child_views || [])) walk(c) };
  for (const v of Object.values(Bokeh.index)) walk(v);
  return out }"""


def test_plot_kinds_switch_in_every_order_without_server_errors(site, page):
    page.goto(f"{site.url}?page=plots")
    page.locator(".damnit-summary-plot canvas").first.wait_for(timeout=30_000)
    log_before = len(site.log())
    expect = {"Scatter": (["Scatter"], " vs. "), "Line": (["Line", "Scatter"], " vs. "),
              "Histogram": (["Quad"], "distribution")}

    def switch(kind: str) -> None:
        page.locator(".damnit-summary-kind").get_by_role("button", name=kind, exact=True).click()
        glyphs, title = expect[kind]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            drawn = page.evaluate(SUMMARY_GLYPHS)
            if len(drawn) == 1 and drawn[0][1] == glyphs and title in drawn[0][0]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"after switching to {kind} the page shows {drawn}")
        shown = "in the histogram" if kind == "Histogram" else "plotted"
        page.locator(".damnit-summary-count").get_by_text(re.compile(rf"^3 runs {shown}")).wait_for()

    kinds = list(expect)
    for order in itertools.permutations(kinds):
        for kind in order:
            switch(kind)
    for a, b in itertools.permutations(kinds, 2):  # every transition, both ways
        switch(a)
        switch(b)
    # Axis changes between kinds too.
    for kind in kinds:
        switch(kind)
        page.locator("select").filter(has=page.locator("option", has_text="Trains")).first.select_option(
            label="Trains")
        switch(kind)
    page.locator(".damnit-summary-swap").get_by_role("button").click()
    switch("Scatter")
    new_log = site.log()[log_before:]
    assert not re.search(r"Traceback|ERROR|DataError", new_log), new_log[-3000:]


# -- the theme and the wall display's address ------------------------------------------------------------


def _luminance(img: np.ndarray) -> float:
    return float(img.mean())


def test_the_dark_theme_is_chosen_per_browser_and_remembered(site, chromium_browser):
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    toggle = page.get_by_test_id("theme-toggle")
    rows = page.locator(".tabulator-row")
    try:
        page.goto(site.url)
        rows.first.wait_for()
        assert "Dark" in toggle.inner_text()  # light (the browser prefers no dark mode)
        assert _luminance(shot(rows.first)) > 200
        toggle.click()
        page.get_by_test_id("theme-toggle").get_by_text("Light").wait_for()  # reloaded in the dark theme
        rows.first.wait_for()
        time.sleep(1)
        assert _luminance(page_shot(page)[:60]) < 80  # page and header
        assert _luminance(shot(rows.first)) < 100  # the run table follows
        button = shot(page.locator(".dmn-copy-link"))  # was white on white
        assert _luminance(button) < 100 and button.max() - button.min() > 120, "Copy link unreadable when dark"
        assert page.evaluate("() => localStorage.getItem('damnit-theme')") == "dark"

        other = context.new_page()  # remembered by this browser
        other.goto(f"{site.url}?page=inspect")
        plot = other.locator(".damnit-var-energy .damnit-plot-ready")
        plot.locator("canvas").first.wait_for(timeout=30_000)
        time.sleep(1)
        assert _luminance(shot(plot)) < 100  # plots in the dark theme too
        other.goto(f"{site.url}?page=context_editor")
        editor = other.locator(".damnit-context-editor .ace_content")
        editor.wait_for()
        time.sleep(1)
        assert _luminance(shot(other.locator(".damnit-context-editor"))) < 100  # and the code editor

        context.clear_cookies()  # the server forgot, the browser did not: the page catches up by itself
        page.goto(site.url)
        page.get_by_test_id("theme-toggle").get_by_text("Light").wait_for()
        page.goto(f"{site.url}?theme=light")  # the URL wins for that page
        rows.first.wait_for()
        assert "Dark" in page.get_by_test_id("theme-toggle").inner_text()
        assert _luminance(shot(rows.first)) > 200
    finally:
        context.close()


def test_the_wall_displays_address_works_under_a_prefix(site, page, tmp_path):
    import http.client
    from urllib.parse import urljoin

    server = DashboardServer([site.db_dir], "--prefix", "/damnit", env=site.server.env,
                             log_path=tmp_path / "prefixed.log")
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        base = f"http://127.0.0.1:{server.port}"
        query = "mode=bigscreen&vars=energy,n_trains&plots=energy&interval=30"
        for path in ("/damnit/", "/damnit"):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", f"{path}?{query}")
            resp = conn.getresponse()
            assert resp.status in (301, 302), (path, resp.status)
            assert urljoin(base + path, resp.getheader("Location")) == f"{base}/damnit/main?{query}"
            conn.close()
        page.goto(f"{base}/damnit/?{query}")
        page.get_by_text("Run 3", exact=True).wait_for(timeout=30_000)
        assert page.locator(".dmn-wall-value").count() == 2
        page.locator(".dmn-wall-plot canvas").first.wait_for()
    finally:
        server.stop()
