"""One server for a facility: the proposal list (facility mode), per-proposal access for signed-in
users on every route, idle proposals unloaded, and several server processes delivering live updates."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.server.launcher import DashboardServer, free_port
from backend.storage.synthetic import make_database, set_value
from tests.app.browser.test_dashboard import cell, open_table, wait_for
from tests.infra.nginx import nginx_proxy

PASSWORD = "s3cret-pw"
PROPOSALS = [("SPB", "202501", 1111), ("MID", "202402", 2222)]


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "exp"
    for instrument, cycle, proposal in PROPOSALS:
        db = make_database(root / instrument / cycle / f"p{proposal:06d}" / "usr" / "Shared" / "amore",
                           proposal=proposal, n_runs=4, n_vars=5)
        set_value(db, 2, "v001", float(proposal) + 0.5)  # a value only that proposal has
    return root


def facility_server(root: Path, tmp_path: Path, *flags: str) -> DashboardServer:
    env = {"AMORE_BROKER": "none", "XFEL_DATA_ROOT": str(root), "EXTRA_DATA_DATA_ROOT": str(root),
           "DAMNIT_MEMBERSHIP": "tests.app.membership_rule:rule"}
    return DashboardServer([], "--basic-auth", PASSWORD, "--cookie-secret", "x" * 32, *flags, env=env,
                           log_path=tmp_path / f"srv-{time.monotonic_ns()}.log")


def sign_in(page, url: str, user: str) -> None:
    page.goto(url)
    page.locator("input[name='username']").fill(user)
    page.locator("input[name='password']").fill(PASSWORD)
    page.locator("input[name='password']").press("Enter")
    page.wait_for_load_state("networkidle")


def test_each_user_sees_and_opens_only_their_proposals(data_root, tmp_path, chromium_browser):
    with facility_server(data_root, tmp_path) as srv:
        base = srv.url.rsplit("/", 1)[0]
        alice = chromium_browser.new_context().new_page()
        bob = chromium_browser.new_context().new_page()
        sign_in(alice, srv.url, "alice")
        sign_in(bob, srv.url, "bob")
        # The landing page lists what each may open, by instrument and cycle, as stable links.
        alice.locator(".damnit-proposals .tabulator-row").first.wait_for(timeout=30000)
        rows = alice.locator(".damnit-proposals .tabulator-row").all_inner_texts()
        assert len(rows) == 1 and "1111" in rows[0] and "SPB" in rows[0] and "202501" in rows[0]
        bob.locator(".damnit-proposals .tabulator-row").first.wait_for(timeout=30000)
        assert "2222" in bob.locator(".damnit-proposals .tabulator-row").first.inner_text()
        alice.locator(".damnit-proposals a", has_text="1111").click()
        open_table(alice, alice.url)
        assert re.search(r"[?&]proposal=1111", alice.url)
        assert cell(alice, 2, "v001").inner_text().strip() == "1111.5000"
        thumb = cell(alice, 2, "v003").locator("img.dmn-thumb").get_attribute("src")
        assert alice.request.get(f"{base}/{thumb}").status == 200
        # Bob is refused alice's proposal on every route: the page, its session, its thumbnails.
        bob.goto(f"{srv.url}?proposal=1111")
        bob.get_by_text("You are not a member of proposal 1111").wait_for(timeout=30000)
        assert "1111.5" not in bob.content() and bob.locator(".tabulator-cell[tabulator-field='v001']").count() == 0
        assert bob.request.get(f"{base}/{thumb}").status == 403
        # ... and gets his own.
        bob.goto(f"{srv.url}?proposal=2222")
        open_table(bob, bob.url)
        assert cell(bob, 2, "v001").inner_text().strip() == "2222.5000"
        # A proposal that does not exist says so, without a trace of anybody's data.
        alice.goto(f"{srv.url}?proposal=3333")
        alice.get_by_text("Proposal 3333 is not served here").wait_for(timeout=30000)
        log = srv.log()
        assert "Refused p1111 to bob: not a member" in log


def test_search_and_new_database_for_context_editors(data_root, tmp_path, chromium_browser):
    (data_root / "SQS" / "202501" / "p003333").mkdir(parents=True)
    (data_root / "SQS" / "202501" / "p003333").chmod(0o777)
    env_rule = {("carol", 3333), ("carol", 1111)}
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "carol_rule.py").write_text(f"def rule(user, proposal):\n    return (user, proposal) in {env_rule!r}\n")
    env = {"AMORE_BROKER": "none", "XFEL_DATA_ROOT": str(data_root), "EXTRA_DATA_DATA_ROOT": str(data_root),
           "DAMNIT_MEMBERSHIP": "carol_rule:rule", "PYTHONPATH": f"{rules}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with DashboardServer([], "--basic-auth", PASSWORD, "--cookie-secret", "x" * 32, "--context-editors", "carol",
                         env=env, log_path=tmp_path / "srv.log") as srv:
        page = chromium_browser.new_context().new_page()
        sign_in(page, srv.url, "carol")
        page.locator(".damnit-proposals .tabulator-row").first.wait_for(timeout=30000)
        search = page.get_by_placeholder("Search: proposal, instrument or cycle")
        search.fill("spb")
        assert wait_for(lambda: page.locator(".damnit-proposals .tabulator-row").count() == 1)
        page.get_by_text("New DAMNIT database").click()
        number = page.get_by_label("Proposal number")
        number.fill("3333")
        number.press("Tab")
        page.get_by_role("button", name="Create database").click()
        page.wait_for_url(re.compile(r"[?&]proposal=3333"), timeout=30000)
        page.wait_for_selector(".tabulator-header .tabulator-col[tabulator-field='run']", timeout=30000)
        db = data_root / "SQS" / "202501" / "p003333" / "usr" / "Shared" / "amore"
        assert (db / "runs.sqlite").is_file() and (db / "context.py").is_file()
        assert "New DAMNIT database for p3333" in srv.log()


def test_idle_proposals_are_unloaded_and_reopened(data_root, tmp_path, page):
    env = {"AMORE_BROKER": "none", "XFEL_DATA_ROOT": str(data_root), "EXTRA_DATA_DATA_ROOT": str(data_root)}
    with DashboardServer([], "--unload-after", "1", env=env, log_path=tmp_path / "srv.log") as srv:
        open_table(page, f"{srv.url}?proposal=1111")
        page.goto("about:blank")  # the session ends; the proposal is no longer used
        assert wait_for(lambda: "Unloaded" in srv.log() and "p001111" in srv.log(), timeout=60)
        open_table(page, f"{srv.url}?proposal=1111")
        assert cell(page, 2, "v001").inner_text().strip() == "1111.5000"


def test_two_server_processes_behind_nginx_both_deliver_live_updates(data_root, tmp_path, chromium_browser):
    """N independent servers behind nginx without sticky sessions: a websocket that lands on another
    server than its page gets a session there (Bokeh creates it from the session token), and each
    server follows the database itself, so every browser sees every update."""
    db = data_root / "SPB" / "202501" / "p001111" / "usr" / "Shared" / "amore"
    ports = [free_port(), free_port()]
    with nginx_proxy(tmp_path, ports) as proxy:
        servers = [DashboardServer([db], "--prefix", "/damnit", "--allow-websocket-origin", proxy.origin,
                                   port=p, env={"AMORE_BROKER": "none"}, log_path=tmp_path / f"srv{p}.log")
                   for p in ports]
        try:
            for s in servers:
                s.start()
            pages = [chromium_browser.new_context().new_page() for _ in range(4)]
            for p in pages:
                open_table(p, proxy.url + "main")
            used = set(re.findall(r"127\.0\.0\.1:(\d+)", proxy.access_log()))
            assert {str(p) for p in ports} <= used, "nginx should have used both servers"
            set_value(db, 3, "v001", 4242.0)
            for p in pages:
                cell(p, 3, "v001").get_by_text("4242", exact=True).wait_for(timeout=10000)
        finally:
            for s in servers:
                s.stop()


def test_num_procs_survives_a_crashed_process(data_root, tmp_path, page):
    db = data_root / "SPB" / "202501" / "p001111" / "usr" / "Shared" / "amore"
    with DashboardServer([db], "--num-procs", "2", env={"AMORE_BROKER": "none"},
                         log_path=tmp_path / "srv.log") as srv:
        parent = srv.pid_of_panel()
        children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2, children
        os.kill(int(children[0]), signal.SIGKILL)
        for _ in range(3):  # whichever process answers, the page works and follows the database
            open_table(page, srv.url)
        set_value(db, 3, "v001", 99.0)
        cell(page, 3, "v001").get_by_text("99", exact=True).wait_for(timeout=10000)
        assert wait_for(lambda: len(subprocess.run(["pgrep", "-P", str(parent)], capture_output=True,
                                                   text=True).stdout.split()) == 2, timeout=30)
