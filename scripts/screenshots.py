#!/usr/bin/env python3
"""Take the dashboard's screenshots in ``docs/``: every page at 1600x1000 in the light and the dark
theme, and the big screen at 1920x1080 and 3840x2160 in both themes.

It builds a proposal of its own (extra-data mock runs processed by ``damnit reprocess --direct`` with
the demo context, ``contexts/demo_context.py``), serves it with the real ``panel_serve.sh`` next to a
second database (so the landing page has two proposals) and drives Debian's Chromium with Playwright.
Look at the pictures before committing them.

    python scripts/screenshots.py [--out docs] [--runs 8] [--keep /tmp/shots-proposal]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.server.launcher import DashboardServer  # noqa: E402
from backend.base import mockruns  # noqa: E402
from backend.storage.database import DamnitDB  # noqa: E402
from backend.storage.synthetic import make_database  # noqa: E402
from tests.infra.browser import launch_chromium  # noqa: E402

PROPOSAL = 990001
ZONE = "Europe/Berlin"
PAGE_SIZE = (1600, 1000)
WALL_SIZES = [(1920, 1080), (3840, 2160)]
FIRST_START = 1_741_939_200.0  # 2025-03-14 09:00 in Berlin: a morning shift
SPACING_S = 540


def proposal_env(base: Path) -> dict[str, str]:
    return {**os.environ, "EXTRA_DATA_DATA_ROOT": str(base / "exp"), "AMORE_BROKER": "none", "DAMNIT_SLURM": "off",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def build_proposal(base: Path, n_runs: int) -> tuple[Path, dict[str, str]]:
    """Mock runs processed with the demo context, a run comment and two standalone comments."""
    data_root = base / "exp"
    for run in range(1, n_runs + 1):
        mockruns.make_run(data_root, PROPOSAL, run, with_proc=True, ntrains=40,
                          start_time=FIRST_START + (run - 1) * SPACING_S)
    db_dir = base / "amore"
    env = proposal_env(base)
    for args, cwd in ((["init", str(db_dir), "--proposal", str(PROPOSAL), "--context",
                        str(REPO / "contexts" / "demo_context.py")], base),
                      (["reprocess", "--direct", f"1-{n_runs}"], db_dir)):
        res = subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=1200)
        if res.returncode:
            sys.exit(f"damnit {args[0]} failed:\n{res.stdout}\n{res.stderr}")
    with DamnitDB.from_dir(db_dir) as db:
        db.change_run_comment(PROPOSAL, 3, "Sample moved 0.25 mm: spot recentred")
        db.add_standalone_comment(FIRST_START + 200, "Beam delivered; alignment with the side microscope")
        db.add_standalone_comment(FIRST_START + 4 * SPACING_S + 60, "Attenuator changed to 50 %")
    return db_dir, env


def settle(page, seconds: float = 2.0) -> None:
    """Let Bokeh finish drawing (and the browser its layout) before a picture."""
    page.wait_for_function("() => !window.Bokeh || Object.values(Bokeh.index).every(v => !v.has_finished "
                           "|| v.has_finished())")
    time.sleep(seconds)


def select_option(page, label: str, among: str | None = None) -> None:
    """Choose ``label`` in the (first) <select> offering it (and the option ``among``, to tell selects apart)."""
    select = page.locator("select").filter(has=page.locator("option", has_text=label))
    if among:
        select = select.filter(has=page.locator("option", has_text=among))
    select = select.first
    select.wait_for(timeout=60_000)
    select.select_option(label=label)


def page_shots(browser, url: str, out: Path, theme: str, n_runs: int) -> list[Path]:
    suffix = "" if theme == "light" else "-dark"
    context = browser.new_context(viewport={"width": PAGE_SIZE[0], "height": PAGE_SIZE[1]})
    page = context.new_page()
    page.set_default_timeout(60_000)
    taken = []

    def go(slug: str, ready: str) -> None:
        page.goto(f"{url}?proposal={PROPOSAL}&page={slug}&theme={theme}")
        page.locator(ready).first.wait_for()
        settle(page)

    def snap(name: str) -> None:
        path = out / f"screenshot-{name}{suffix}.png"
        page.screenshot(path=str(path))
        taken.append(path)

    page.goto(f"{url}?theme={theme}")
    page.get_by_text(str(PROPOSAL), exact=True).first.wait_for()
    settle(page, 1)
    snap("landing")

    go("table", ".tabulator-row .tabulator-cell[tabulator-field='run']")
    # The newest run selected: the run panel beside the table shows its values and plots.
    page.locator(".tabulator-row .tabulator-cell[tabulator-field='run']").first.click()
    page.locator(".dmn-panel-plot canvas").first.wait_for()
    settle(page, 3)
    snap("table")

    go("inspect", ".damnit-var-camera_image .damnit-plot-ready canvas")
    page.locator(".damnit-var-energy_histogram img.damnit-stored-image").first.wait_for()
    settle(page)
    snap("inspect")

    go("plots", ".damnit-summary-plot canvas")
    select_option(page, "XGM/Pulse energy", among="(image)")  # the overlay: per-train data of several runs
    page.locator(".damnit-overlay-plot canvas").first.wait_for()
    box = page.locator(".damnit-summary-plot").bounding_box()  # box-select the runs of the second half
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 45, box["y"] + box["height"] - 50, steps=6)
    page.mouse.up()
    page.locator(".damnit-overlay-runs").get_by_text("Runs:", exact=False).wait_for()
    settle(page, 3)
    page.locator(".damnit-overlay-plot").scroll_into_view_if_needed()
    page.mouse.wheel(0, 220)
    settle(page, 1)
    snap("plots")

    go("processing", ".damnit-jobs")
    snap("processing")
    go("comments", ".damnit-comments .tabulator-row")
    snap("comments")
    go("context_editor", ".damnit-context-editor .ace_content")
    snap("context_editor")
    go("bigscreen", ".dmn-wall-plot canvas")
    snap("bigscreen-tab")
    context.close()
    return taken


def wall_shots(browser, url: str, out: Path) -> list[Path]:
    taken = []
    for width, height in WALL_SIZES:
        for theme in ("dark", "light"):
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            page.set_default_timeout(60_000)
            root = url.removesuffix("/main")
            page.goto(f"{root}/?proposal={PROPOSAL}&mode=bigscreen&plots=camera_image&theme={theme}")
            page.locator(".dmn-wall-plot canvas").first.wait_for()
            settle(page, 3)
            path = out / f"screenshot-bigscreen-{width}x{height}-{theme}.png"
            page.screenshot(path=str(path))
            taken.append(path)
            if (width, height, theme) == (1920, 1080, "dark"):  # the one the README shows
                page.screenshot(path=str(out / "screenshot-bigscreen.png"))
                taken.append(out / "screenshot-bigscreen.png")
            context.close()
    return taken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where to write (default docs/)")
    parser.add_argument("--runs", type=int, default=8, help="runs in the proposal (default 8)")
    parser.add_argument("--keep", type=Path, default=None, help="build the proposal here and keep it")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="damnit-shots-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        if args.keep and (base / "amore" / "runs.sqlite").is_file() and (base / "other").is_dir():
            print(f"Using the proposal kept in {base}", flush=True)
            db_dir, other, env = base / "amore", base / "other", proposal_env(base)
        else:
            print(f"Building a proposal of {args.runs} runs in {base} ...", flush=True)
            db_dir, env = build_proposal(base, args.runs)
            other = make_database(base / "other", proposal=4242, n_runs=12, n_vars=6)
        args.out.mkdir(parents=True, exist_ok=True)
        with DashboardServer([db_dir, other], "--timezone", ZONE, env=env, log_path=base / "server.log") as srv, \
                sync_playwright() as pw:
            browser = launch_chromium(pw)
            taken = []
            for theme in ("light", "dark"):
                taken += page_shots(browser, srv.url, args.out, theme, args.runs)
            taken += wall_shots(browser, srv.url, args.out)
            browser.close()
    for path in taken:
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
