"""No request leaves the server: facility networks have no internet, so every script, stylesheet, font and
icon a page uses must come from the dashboard itself.

A real proposal (mock runs processed with ``contexts/demo_context.py`` plus a plotly figure: every kind of
value, so every kind of plot and pane is drawn) is served by ``panel_serve.sh``; Chromium tours every page
as a user would (the landing page, the run table with its cards opened and its tooltips and thumbnails
hovered, every tab, the plot kinds, the big screen), in write and read-only mode and behind nginx under a
``--prefix``, while every request of the browser is recorded. Any request to another origin fails the
test (and is aborted, so the tour never waits for a network that is not there)."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.server.launcher import DashboardServer, free_port
from backend.base import mockruns
from tests.infra import REPO
from tests.infra.nginx import nginx_proxy

pytestmark = pytest.mark.browser

PROPOSAL = 4455
# The demo context has every kind of value but a plotly figure: add one.
CONTEXT = (REPO / "contexts" / "demo_context.py").read_text() + '''

@Variable(title="Plotly/Pulse energy")
def plotly_energy(run):
    import plotly.graph_objects as go
    return go.Figure(go.Scatter(y=run["SA1_XTD2_XGM/DOOCS/MAIN", "pulseEnergy.photonFlux"].ndarray()))
'''


@pytest.fixture(scope="module")
def proposal(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(DAMNIT folder, environment): three mock runs processed with the demo context."""
    root = tmp_path_factory.mktemp("offline")
    data_root = root / "exp"
    mockruns.make_proposal(data_root, PROPOSAL, range(1, 4), ntrains=20, with_proc=True)
    # The proposal's official DAMNIT folder, so a server given no database finds it under the data root.
    db_dir = mockruns.proposal_dir(data_root, PROPOSAL) / "usr" / "Shared" / "amore"
    context_file = root / "context.py"
    context_file.write_text(CONTEXT)
    env = {"EXTRA_DATA_DATA_ROOT": str(data_root), "AMORE_BROKER": "none"}
    full_env = {**os.environ, **env,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for args, cwd in ((["init", str(PROPOSAL), "--context", str(context_file)], root),
                      (["reprocess", "--direct", "1-3"], db_dir)):
        res = subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=cwd, env=full_env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"damnit {args[0]} failed:\n{res.stdout}\n{res.stderr}"
    return db_dir, env


class RequestLog:
    """Every request the browser context makes (pages, scripts, styles, fonts, images, XHR, websockets);
    requests to another origin than ``origin`` are recorded and aborted."""

    def __init__(self, context, origin: str):
        self.origin = origin
        self.urls: list[str] = []
        self.outside: list[str] = []
        context.route("**/*", self._route)
        context.on("request", lambda r: self.urls.append(r.url))
        context.on("page", self.watch_page)

    def watch_page(self, page) -> None:
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.on("websocket", lambda ws: None if self.local(ws.url) else self.outside.append(ws.url))

    def local(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "about"):
            return True
        if parts.scheme == "blob":
            return self.local(url[len("blob:"):])
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}" == self.origin

    def _route(self, route) -> None:
        if self.local(route.request.url):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def assert_self_contained(self, what: str) -> None:
        outside = sorted(set(self.outside) | {u for u in self.urls if not self.local(u)})
        assert not outside, f"{what}: {len(outside)} request(s) left {self.origin}:\n" + "\n".join(outside)


def settle(page) -> None:
    """Wait until the page has fetched what the last action asked for."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)


def hover_plot(page) -> None:
    """Move the mouse over the first visible plot (Bokeh draws hover tooltips from there)."""
    canvas = page.locator("canvas:visible").first
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    settle(page)


def tour(page, url: str, *, writable: bool, shot: Path) -> list[str]:
    """Visit every page of one proposal's dashboard at ``url`` as a user would; returns the tabs seen.
    If a page does not show what it should, its screenshot is saved to ``shot``."""
    try:
        return _tour(page, url, writable=writable)
    except Exception:
        page.screenshot(path=str(shot), full_page=True)
        raise


def _tour(page, url: str, *, writable: bool) -> list[str]:
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(url)
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=60_000)
    main = page.url  # <prefix>/main, after the redirect from the root
    # The run table: open every card (columns, filters, and the new-variable form when writable), hover a
    # column header (tooltip) and a thumbnail (its preview), select a run.
    headers = page.locator(".card-header:visible")  # not those of closed dialogs (the logbook's)
    assert headers.count() >= (3 if writable else 2), "the run table's cards are missing"
    for i in range(headers.count()):
        headers.nth(i).click()
    settle(page)
    page.locator(".tabulator-col .tabulator-col-title").nth(3).hover()
    thumb = page.locator("img.dmn-thumb").first
    thumb.wait_for()
    thumb.hover()
    settle(page)
    page.locator(".tabulator-row .tabulator-cell[tabulator-field='run']").first.click()
    settle(page)

    tabs = page.locator(".bk-tab")
    titles = [t.strip() for t in tabs.all_inner_texts()]
    for i, title in enumerate(titles):
        tabs.nth(i).click()
        settle(page)
        if title.startswith("Inspect"):
            page.locator(".js-plotly-plot:visible").first.wait_for(timeout=120_000)  # plotly: loaded on demand
            hover_plot(page)
        elif title == "Plots":
            for kind in ("Scatter", "Line", "Histogram", "Scatter"):
                button = page.get_by_role("button", name=kind, exact=True)
                if button.count():
                    button.first.click()
                    settle(page)
            hover_plot(page)
        elif title == "Context file":
            page.locator(".ace_content:visible").first.wait_for(timeout=30_000)  # the ace editor: loaded on demand
        settle(page)
    assert {"Run table", "Plots", "Processing", "Comments", "Context file"} <= set(titles), titles

    # The wall display on its own.
    page.goto(f"{main}{'&' if '?' in main else '?'}mode=bigscreen")
    page.get_by_text("Run 3", exact=True).first.wait_for(timeout=30_000)
    settle(page)
    return titles


def _assert_toured(log: RequestLog) -> None:
    """The tour fetched what it should have: the lazily loaded plotly and ace scripts, and thumbnails."""
    names = " ".join(urlsplit(u).path for u in log.urls)
    for part in ("plotly", "ace", "/thumbnail/", "tabulator"):
        assert part in names, f"the tour never fetched {part!r}: it did not see every page"


@pytest.fixture
def context(chromium_browser):
    ctx = chromium_browser.new_context()
    yield ctx
    ctx.close()


def _server(databases, *flags, env, tmp_path, **kw) -> DashboardServer:
    srv = DashboardServer(databases, *flags, env=env, log_path=tmp_path / f"server-{free_port()}.log", **kw)
    try:
        return srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def test_landing_page_and_every_page_fetch_nothing_from_outside(proposal, context, tmp_path):
    """A facility's server (no database given: proposals found under the data root) from its landing page
    on; the environment asks for CDN resources, which must not matter."""
    db_dir, env = proposal
    srv = _server([], env={**env, "BOKEH_RESOURCES": "cdn", "PANEL_AE5_CDN": "1"}, tmp_path=tmp_path)
    try:
        log = RequestLog(context, f"http://127.0.0.1:{srv.port}")
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(srv.url)
        link = page.locator(".damnit-proposals a", has_text=str(PROPOSAL))
        link.wait_for(timeout=30_000)
        page.get_by_placeholder("Search: proposal, instrument or cycle").fill("SPB")
        for header in page.locator(".card-header").all():  # the new-database form
            header.click()
        settle(page)
        link.click()
        page.wait_for_url(f"**proposal={PROPOSAL}*")
        tour(page, page.url, writable=True, shot=tmp_path / "tour.png")
        _assert_toured(log)
        log.assert_self_contained("served with BOKEH_RESOURCES=cdn in the environment")
    finally:
        srv.stop()


def test_read_only_pages_fetch_nothing_from_outside(proposal, context, tmp_path):
    db_dir, env = proposal
    srv = _server([db_dir], "--read-only", env=env, tmp_path=tmp_path)
    try:
        log = RequestLog(context, f"http://127.0.0.1:{srv.port}")
        page = context.new_page()
        page.set_default_timeout(20_000)
        tour(page, srv.url, writable=False, shot=tmp_path / "tour.png")
        _assert_toured(log)
        log.assert_self_contained("--read-only")
    finally:
        srv.stop()


def test_pages_behind_a_proxy_with_a_prefix_fetch_nothing_from_outside(proposal, context, tmp_path):
    db_dir, env = proposal
    upstream = free_port()
    with nginx_proxy(tmp_path, [upstream]) as nginx:
        srv = _server([db_dir], "--prefix", "/damnit", "--allow-websocket-origin", nginx.origin,
                      env=env, tmp_path=tmp_path, port=upstream)
        try:
            origin = f"http://127.0.0.1:{nginx.port}"
            log = RequestLog(context, origin)
            page = context.new_page()
            page.set_default_timeout(20_000)
            tour(page, f"{origin}/damnit/", writable=True, shot=tmp_path / "tour.png")
            assert page.url.startswith(f"{origin}/damnit/")
            _assert_toured(log)
            log.assert_self_contained("behind nginx under /damnit")
            # Everything went through the proxy, under the prefix (nothing fetched from the server's root).
            paths = [urlsplit(u).path for u in log.urls if urlsplit(u).scheme in ("http", "https", "ws")]
            assert paths and all(p.startswith("/damnit/") for p in paths), sorted(
                {p for p in paths if not p.startswith("/damnit/")})
        finally:
            srv.stop()


def test_sign_in_pages_fetch_nothing_from_outside(proposal, context, tmp_path):
    """With --basic-auth the sign-in, wrong-password and signed-out pages are ours: Panel's fetch a logo,
    an icon and fonts from the internet. Signed in as this test's user, a member of the proposal (the Unix
    group owning the folders it made)."""
    db_dir, env = proposal
    user = getpass.getuser()
    srv = _server([db_dir], "--basic-auth", "beamtime", "--cookie-secret", "s3cret-for-the-test", env=env,
                  tmp_path=tmp_path)
    try:
        log = RequestLog(context, f"http://127.0.0.1:{srv.port}")
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(srv.url)
        page.get_by_role("heading", name="DAMNIT: sign in").wait_for()
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill("<b>wrong</b>")
        page.get_by_role("button", name="Sign in").click()
        page.locator("#error-message").wait_for()
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill("beamtime")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=60_000)
        settle(page)
        page.goto(srv.url.rsplit("/", 1)[0] + "/logout")
        page.get_by_role("heading", name="DAMNIT: signed out").wait_for()
        page.get_by_role("button", name="Sign in again").click()
        page.get_by_role("heading", name="DAMNIT: sign in").wait_for()
        settle(page)
        log.assert_self_contained("--basic-auth sign-in pages")
    finally:
        srv.stop()
