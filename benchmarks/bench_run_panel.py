"""Run panel benchmark: click a run row, time until its plots are drawn beside the table.

    python benchmarks/bench_run_panel.py [--runs 20] [--db DIR --data DIR] [--width 1600]

Builds a proposal of mock runs (extra-data's mock files, non-zero values) processed with the demo
context (``contexts/demo_context.py``: images, traces, xarray objects, a figure), unless ``--db`` names
one already processed. Serves it with ``panel_serve.sh``'s server in Debian Chromium (Playwright) and, for
every run, clicks its timestamp cell and times, in the page's own clock from the mouse-down:

- *title*: the panel names the run (the loading state is up);
- *first plot*: the first of the run's plots has a canvas or image with a size;
- *all plots*: every plot the run has is drawn (as many as its HDF5 file holds plottable values).

Two passes: the first reads every run from disk (cold), the second clicks the same runs again (values
come from the server's cache; the browser draws everything again). Prints median and p95 per figure and a
final ``RESULT`` line. No thresholds: figures go in benchmarks/README.md. The original DAMNIT has no
browser view to compare against (its Qt GUI opens plots in a window on request).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.display.run_contents import run_file, scan_run_file  # noqa: E402
from app.pages.run_panel import MAX_PLOTS  # noqa: E402
from app.server.launcher import DashboardServer  # noqa: E402
from tests.app.browser.test_dashboard import cell  # noqa: E402
from tests.infra.browser import launch_chromium  # noqa: E402

PROPOSAL = 4321

# Polls the page (through Panel's shadow roots) every 20 ms and records when each milestone is reached,
# counted from the last mouse-down.
PROBE_JS = """
([run, expected]) => new Promise(resolve => {
  const t0 = window.__clickAt, out = {}
  const all = () => { const found = [], stack = [document]
    while (stack.length) { const r = stack.pop()
      for (const e of r.querySelectorAll('*')) { if (e.shadowRoot) stack.push(e.shadowRoot); found.push(e) } }
    return found }
  const drawn = (plot) => { const stack = [plot]
    while (stack.length) { const n = stack.pop(), kids = [...n.children, ...(n.shadowRoot ? n.shadowRoot.children : [])]
      for (const k of kids) {
        if (['CANVAS', 'IMG', 'svg'].includes(k.tagName)) { const b = k.getBoundingClientRect(); if (b.width > 20 && b.height > 20) return true }
        stack.push(k) } }
    return false }
  const poll = () => {
    const els = all(), now = performance.now() - t0
    const title = els.find(e => e.classList && e.classList.contains('dmn-panel-title'))
    const text = title && title.shadowRoot ? [...title.shadowRoot.children].filter(c => !['STYLE', 'LINK'].includes(c.tagName)).map(c => c.innerText).join('') : ''
    if (out.title === undefined && text.trim() === `Run ${run}`) out.title = now
    const plots = els.filter(e => e.classList && e.classList.contains('dmn-panel-plot') && e.classList.contains(`dmn-panel-run-${run}`))
    const done = plots.filter(drawn).length
    if (out.first === undefined && done >= 1) out.first = now
    if (out.all === undefined && done >= expected) out.all = now
    if ((out.all !== undefined && out.title !== undefined) || now > 60000) resolve(out)
    else setTimeout(poll, 20)
  }
  poll()
})
"""


def build_demo(root: Path, runs: int) -> tuple[Path, Path]:
    """Mock runs processed with the demo context, as the tests do."""
    from backend.base import mockruns

    data, db = root / "exp", root / "amore"
    mockruns.make_proposal(data, PROPOSAL, range(1, runs + 1), with_proc=True)
    env = {**os.environ, "EXTRA_DATA_DATA_ROOT": str(data), "AMORE_BROKER": "none", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "backend.cli", "init", str(db), "--proposal", str(PROPOSAL),
                    "--context", str(REPO / "contexts" / "demo_context.py")], env=env, check=True,
                   capture_output=True)
    print(f"processing {runs} runs with the demo context…", flush=True)
    subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", f"1-{runs}", "--direct"], cwd=db, env=env,
                   check=True, capture_output=True, timeout=1800)
    return db, data


def expected_plots(db: Path, run: int) -> int:
    stored = scan_run_file(run_file(db, PROPOSAL, run))
    return min(MAX_PLOTS, sum(1 for v in stored.values() if v.is_plottable))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def click_through(page, db: Path, runs: list[int]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"title": [], "first": [], "all": []}
    for run in runs:
        cell(page, run, "start_time").click()
        got = page.evaluate(PROBE_JS, [run, expected_plots(db, run)])
        for key in times:
            if key in got:
                times[key].append(got[key] / 1000)
        print(f"  run {run:3d}: title {got.get('title', float('nan')) / 1000:.2f} s, first plot "
              f"{got.get('first', float('nan')) / 1000:.2f} s, all plots {got.get('all', float('nan')) / 1000:.2f} s",
              flush=True)
        time.sleep(0.5)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--db", type=Path, help="an already processed database directory (with --data)")
    ap.add_argument("--data", type=Path, help="EXTRA_DATA_DATA_ROOT for --db")
    ap.add_argument("--width", type=int, default=1600, help="browser window width (default 1600)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-run-panel-") as tmp:
        db, data = (args.db, args.data) if args.db else build_demo(Path(tmp), args.runs)
        runs = list(range(1, args.runs + 1))
        with DashboardServer([db], env={"AMORE_BROKER": "none", "EXTRA_DATA_DATA_ROOT": str(data or "")},
                             log_path=Path(tmp) / "server.log") as srv, sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.add_init_script("document.addEventListener('mousedown', () => { window.__clickAt = "
                                 "performance.now() }, true)")
            page.goto(srv.url)
            page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=60000)
            time.sleep(2)
            results = {}
            for name in ("cold", "warm"):
                print(f"{name} pass ({len(runs)} runs):", flush=True)
                results[name] = click_through(page, db, runs)
            browser.close()
    print()
    print(f"{'click → …':<16}{'cold median':>12}{'cold p95':>10}{'warm median':>13}{'warm p95':>10}")
    for key, label in (("title", "run named"), ("first", "first plot"), ("all", "all plots")):
        cold, warm = results["cold"][key], results["warm"][key]
        print(f"{label:<16}{statistics.median(cold):>11.2f}s{percentile(cold, 0.95):>9.2f}s"
              f"{statistics.median(warm):>12.2f}s{percentile(warm, 0.95):>9.2f}s")
    cold = results["cold"]["all"]
    print(f"RESULT runs={len(runs)} all_plots_median={statistics.median(cold):.2f}s "
          f"all_plots_p95={percentile(cold, 0.95):.2f}s first_plot_median={statistics.median(results['cold']['first']):.2f}s "
          f"load_avg={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
