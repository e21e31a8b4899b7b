"""Every view has a link (issue 10, item 9): the page, the selected runs, the table's sort, filters and
hidden columns and the Plots page's choices live in the address; "Copy link" copies it and a colleague who
opens it sees the same view, behind the proxy prefix too; a hostile link is shown as text and ignored."""

from __future__ import annotations

import re
import urllib.request
from urllib.parse import parse_qs, quote, urlsplit

from app.server.launcher import DashboardServer, free_port
from tests.app.browser.test_dashboard import cell, wait_for
from tests.app.browser.test_run_panel import open_table, panel_title, processed, server  # noqa: F401 (fixtures)
from tests.infra.nginx import nginx_proxy

RUN_CELLS = ".tabulator-row .tabulator-cell[tabulator-field='run']"


def shown_runs(page) -> list[int]:
    return [int(t.split()[0]) for t in page.locator(RUN_CELLS).all_inner_texts() if t.strip()]


def selected_runs(page) -> set[int]:
    cells = page.locator(".tabulator-row.tabulator-selected .tabulator-cell[tabulator-field='run']")
    return {int(t.split()[0]) for t in cells.all_inner_texts()}


def tab(page, title: str):
    return page.locator(".bk-tab").filter(has_text=re.compile(rf"^\s*{re.escape(title)}\s*$"))


def copy_link(page) -> str:
    page.locator(".dmn-copy-link").click()
    page.get_by_text("Link copied").wait_for(timeout=5000)
    return page.evaluate("navigator.clipboard.readText()")


def address(page) -> str:
    """The address bar now (``page.url`` lags behind ``history.replaceState`` while the test sleeps)."""
    return page.evaluate("location.href")


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_a_copied_link_opens_the_same_view_for_a_colleague(server, chromium_browser):  # noqa: F811
    mine = chromium_browser.new_context(viewport={"width": 1600, "height": 1000},
                                        permissions=["clipboard-read", "clipboard-write"])
    page = mine.new_page()
    # A filter typed into a link (runs 3-10), then the rest by hand: sort, selection, a hidden column.
    wanted = quote('[{"c":"run","k":"range","lo":3,"hi":10}]')
    open_table(page, f"{server.url}?filter={wanted}")
    assert wait_for(lambda: shown_runs(page) == list(range(10, 2, -1)), timeout=10), shown_runs(page)
    page.locator(".tabulator-col[tabulator-field='run']").click()  # ascending
    assert wait_for(lambda: shown_runs(page)[:2] == [3, 4], timeout=10)
    cell(page, 4, "start_time").click()
    cell(page, 6, "start_time").click(modifiers=["Control"])
    assert wait_for(lambda: selected_runs(page) == {4, 6}, timeout=10)
    page.locator(".tabulator-col[tabulator-field='comment']").click(button="right")
    page.locator(".tabulator-menu-item").filter(has_text="Hide").first.click()
    assert wait_for(lambda: page.locator(".tabulator-col[tabulator-field='comment']").count() == 0, timeout=10)
    assert wait_for(lambda: "hide=comment" in address(page) and "runs=4%2C6" in address(page), timeout=10), address(page)

    link = copy_link(page)
    q = query_of(link)
    assert q["runs"] == "4,6" and q["sort"] == "run:asc" and q["hide"] == "comment" and "run" in q["filter"]
    assert q["page"] == "table" and link.startswith(server.url)

    # The colleague: another browser profile (no remembered layout), the same view.
    theirs = chromium_browser.new_context(viewport={"width": 1600, "height": 1000})
    other = theirs.new_page()
    open_table(other, link)
    assert wait_for(lambda: shown_runs(other) == list(range(3, 11)), timeout=10), shown_runs(other)
    assert wait_for(lambda: selected_runs(other) == {4, 6}, timeout=10), selected_runs(other)
    # (the link's hidden columns are applied with the browser's own layout, once the page is up)
    assert wait_for(lambda: other.locator(".tabulator-col[tabulator-field='comment']").count() == 0, timeout=10)
    assert wait_for(lambda: panel_title(other) == "Run 6", timeout=10)
    # What a colleague's link shows is not saved as their own layout: a plain visit shows the comment.
    open_table(other, server.url)
    assert wait_for(lambda: other.locator(".tabulator-col[tabulator-field='comment']").count() == 1, timeout=10)

    # The Plots page: kind and axes in the link, both ways.
    tab(page, "Plots").click()
    page.locator(".damnit-summary-kind").get_by_role("button", name="Histogram").click()
    assert wait_for(lambda: "kind=Histogram" in address(page) and "page=plots" in address(page), timeout=15), address(page)
    link = copy_link(page)
    open_table(other, link.replace("page=plots", "page=table"))  # open on the table, then go to Plots
    tab(other, "Plots").click()
    hist = other.locator(".damnit-summary-kind").get_by_role("button", name="Histogram")
    assert wait_for(lambda: "active" in (hist.get_attribute("class") or ""), timeout=30)
    other.goto(link)
    other.locator(".damnit-overlay-runs").get_by_text(re.compile(r"^Runs: 4, 6")).wait_for(timeout=30_000)
    assert "active" in (other.locator(".damnit-summary-kind").get_by_role("button", name="Histogram")
                        .get_attribute("class") or "")
    mine.close()
    theirs.close()


def test_a_hostile_link_is_reported_as_text_and_changes_nothing(server, page):  # noqa: F811
    page.evaluate("() => 0")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    evil = "<img src=x onerror=window.__pwned=1>"
    parts = {"runs": evil, "sort": f"{evil}:desc", "hide": f"run,{evil}", "kind": evil, "x": evil,
             "filter": quote(f'[{{"c":"{evil}","k":"range"}}, 7, "x"]'), "bins": "1e99"}
    url = f"{server.url}?page=table&" + "&".join(f"{k}={v if k == 'filter' else quote(v)}" for k, v in parts.items())
    open_table(page, url)
    notes = page.locator(".notyf__message").filter(has_text="Parts of this link were not used")
    notes.first.wait_for(timeout=15_000)
    assert evil in " ".join(notes.all_inner_texts())  # shown as the text it is
    assert shown_runs(page)[:3] == [12, 11, 10]  # the default view: newest first, nothing filtered
    assert page.locator(".tabulator-col[tabulator-field='run']").count() == 1
    tab(page, "Plots").click()
    page.locator(".damnit-summary-plot canvas").first.wait_for(timeout=30_000)
    assert page.evaluate("() => window.__pwned") is None and not dialogs


def test_links_work_behind_the_proxy_prefix(processed, chromium_browser, tmp_path):  # noqa: F811
    db, data = processed
    upstream = free_port()
    ctx = chromium_browser.new_context(viewport={"width": 1600, "height": 1000},
                                       permissions=["clipboard-read", "clipboard-write"])
    with nginx_proxy(tmp_path, [upstream]) as proxy, \
            DashboardServer([db], "--read-only", "--prefix", "/damnit", "--allow-websocket-origin", proxy.origin,
                            port=upstream, env={"AMORE_BROKER": "none", "EXTRA_DATA_DATA_ROOT": str(data)},
                            log_path=tmp_path / "srv.log"):  # waits for <prefix>/health, which builds no session
        try:
            with urllib.request.urlopen(proxy.url + "health", timeout=10) as r:
                assert r.read() == b"ok\n"  # through the proxy too
            page = ctx.new_page()
            open_table(page, proxy.url)
            cell(page, 5, "start_time").click()
            assert wait_for(lambda: "runs=5" in address(page), timeout=10), address(page)
            link = copy_link(page)
            assert link.startswith(proxy.url + "main?") and query_of(link)["runs"] == "5"
            other = ctx.new_page()
            open_table(other, link)
            assert wait_for(lambda: selected_runs(other) == {5}, timeout=10)
            assert wait_for(lambda: panel_title(other) == "Run 5", timeout=10)
        finally:
            ctx.close()
