"""Failed runs and runs waiting for Slurm, in Chromium against the real dashboard (``panel_serve.sh``)
and the real engine (``damnit reprocess --direct``): a context file that raises on load marks the runs
it was given failed, the mark appears in the run cell without a reload with the (hostile) reason as
text, the Processing page lists the failed run and a run waiting in the listener's queue, and once the
context file is fixed on disk, "Reprocess them" processes the run on this machine and the mark clears."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from app.server.launcher import DashboardServer
from backend.storage import processing_state as ps
from backend.storage.database import DamnitDB
from tests.app.browser.test_dashboard import cell, open_table, wait_for
from tests.app.browser.test_pages import _replace_editor_text
from tests.infra import REPO

pytestmark = pytest.mark.browser

PROPOSAL = 2468
PAYLOAD = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script> & 'quoted'"

GOOD = '''\
from damnit_ctx import Variable


@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)
'''
BROKEN = f'raise RuntimeError("""{PAYLOAD}""")\n' + GOOD


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from backend.base import mockruns

    root = tmp_path_factory.mktemp("failed")
    data = root / "exp"
    mockruns.make_proposal(data, PROPOSAL, range(1, 5), ntrains=5)
    db = root / "amore"
    src = root / "ctx.py"
    src.write_text(GOOD)
    env = {**os.environ, "EXTRA_DATA_DATA_ROOT": str(data), "AMORE_BROKER": "none", "DAMNIT_SLURM": "off",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "backend.cli", "init", str(db), "--proposal", str(PROPOSAL),
                    "--context", str(src)], env=env, check=True, capture_output=True, timeout=120)
    reprocess(db, env, 1, 2, 3, 4)
    srv = DashboardServer([db], env={k: env[k] for k in ("EXTRA_DATA_DATA_ROOT", "AMORE_BROKER", "DAMNIT_SLURM")},
                          log_path=root / "srv.log")
    srv.start()
    yield db, env, srv
    srv.stop()


def reprocess(db, env, *runs: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", "--direct", *map(str, runs)], cwd=db,
                          env=env, capture_output=True, text=True, timeout=300)


def fail_mark(page, run: int):
    return cell(page, run, "run").locator(".dmn-fail-mark")


def test_a_failed_run_is_marked_listed_and_reprocessed_after_the_context_fix(setup, page):
    db, env, srv = setup
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_table(page, srv.url)
    assert fail_mark(page, 2).count() == 0

    # The context file breaks; processing run 2 fails with its error, and the mark appears live.
    (db / "context.py").write_text(BROKEN)
    res = reprocess(db, env, 2)
    assert res.returncode != 0 and "RuntimeError" in res.stderr + res.stdout
    fail_mark(page, 2).wait_for(timeout=20_000)
    tip = fail_mark(page, 2).get_attribute("title")
    assert "Processing failed: the context file did not load" in tip
    assert PAYLOAD in tip  # the reason, literally (an attribute's text, not markup)
    assert fail_mark(page, 2).inner_text().strip() == "✕"
    assert fail_mark(page, 2).evaluate("e => getComputedStyle(e).color") == "rgb(198, 40, 40)"  # red
    assert fail_mark(page, 1).count() == 0
    assert cell(page, 2, "run").locator("img").count() == 0
    if os.environ.get("DAMNIT_SHOTS"):
        cell(page, 2, "run").screenshot(path=os.environ["DAMNIT_SHOTS"] + "/run-cell-failed.png")

    # A run the listener could not hand to Slurm, as its mirror writes it.
    with DamnitDB.from_dir(db) as d:
        ps.set_waiting(d, PROPOSAL, 4, "raw", "sbatch: error: Batch job submission failed: Unable to contact "
                       "slurm controller", since=time.time() - 120, attempts=3, next_attempt=time.time() + 300)
    cell(page, 4, "run").locator(".dmn-proc-mark").wait_for(timeout=20_000)
    assert "Waiting for Slurm since" in cell(page, 4, "run").locator(".dmn-proc-mark").get_attribute("title")

    # The Processing page lists both, with why and when, naming the zone.
    page.goto(srv.url + "?page=processing")
    failed = page.locator(".damnit-failed")
    failed.locator(".tabulator-row").first.wait_for(timeout=30_000)
    rows = failed.locator(".tabulator-row")
    assert rows.count() == 1
    row_text = rows.first.inner_text()
    assert "the context file did not load" in row_text and PAYLOAD in row_text
    headers = failed.locator(".tabulator-col-title").all_inner_texts()
    assert any(h.startswith("Failed at (") for h in headers)
    waiting = page.locator(".damnit-waiting")
    waiting.locator(".tabulator-row").first.wait_for()
    wrow = waiting.locator(".tabulator-row").first.inner_text()
    assert "Unable to contact slurm controller" in wrow and "\n3\n" in wrow  # three attempts so far
    if os.environ.get("DAMNIT_SHOTS"):
        page.screenshot(path=os.environ["DAMNIT_SHOTS"] + "/processing-failed.png", full_page=True)
    # Reprocess the waiting run from here (this listener's queue is out of reach: the page says so).
    here = page.get_by_role("button", name="Reprocess here")
    assert here.is_disabled()
    waiting.locator(".tabulator-row").first.locator(".tabulator-cell[tabulator-field='Run']").click()
    wait_for(lambda: not here.is_disabled())
    here.click()
    said = page.locator(".damnit-waiting-message").get_by_text("Launched processing for 4 (local process")
    said.wait_for()
    assert "the listener still has 4 queued" in said.inner_text()

    # Not offered while the context file is still the broken one.
    offer = page.locator(".damnit-stale-context")
    assert not offer.is_visible()

    # Fixed on disk: the offer appears, and reprocesses the run on this machine.
    (db / "context.py").write_text(GOOD + "\n# fixed\n")
    offer.get_by_text("1 run (2) failed with an earlier version of the context file").wait_for(timeout=20_000)
    offer.get_by_role("button", name="Reprocess them").click()
    page.locator(".damnit-stale-context-message").get_by_text("Launched processing for 2").wait_for()
    offer.get_by_text("no failure left").wait_for(timeout=120_000)
    assert rows.count() == 0 or not failed.is_visible()

    page.goto(srv.url)
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=30_000)
    assert wait_for(lambda: cell(page, 4, "run").count() == 1)
    assert fail_mark(page, 2).count() == 0
    assert page.evaluate("() => window.__xss") is None and not dialogs


def test_read_only_dashboard_lists_failed_runs_but_offers_no_reprocessing(setup, page, tmp_path):
    db, env, _ = setup
    with DamnitDB.from_dir(db) as d:
        ps.record_failure(d, PROPOSAL, 3, ps.JOB, "Slurm job 99 ended as TIMEOUT", slurm_job_id="99")
    ro = DashboardServer([db], "--read-only",
                         env={k: env[k] for k in ("EXTRA_DATA_DATA_ROOT", "AMORE_BROKER", "DAMNIT_SLURM")},
                         log_path=tmp_path / "ro.log")
    ro.start()
    try:
        page.goto(ro.url + "?page=processing")
        failed = page.locator(".damnit-failed")
        failed.locator(".tabulator-row").first.wait_for(timeout=30_000)
        row = failed.locator(".tabulator-row").first.inner_text()
        assert "the Slurm job failed" in row and "TIMEOUT" in row
        assert page.get_by_role("button", name="Reprocess selected").count() == 0 \
            or not page.get_by_role("button", name="Reprocess selected").is_visible()
    finally:
        ro.stop()
        with DamnitDB.from_dir(db) as d:
            ps.clear_failure(d, PROPOSAL, 3)


def test_saving_the_fixed_context_in_the_editor_offers_the_runs_that_failed(setup, page):
    db, env, srv = setup
    (db / "context.py").write_text(BROKEN)
    assert reprocess(db, env, 3).returncode != 0
    page.goto(srv.url + "?page=context_editor")
    page.locator(".damnit-context-editor").get_by_text("RuntimeError").first.wait_for(timeout=30_000)
    offer = page.locator(".damnit-stale-context")
    assert not offer.is_visible()  # nothing fixed yet

    _replace_editor_text(page, GOOD + "# fixed in the browser\n")
    page.get_by_role("button", name="Save").click()
    page.locator(".damnit-context-status").get_by_text("Saved. Variable list updated.").wait_for(timeout=60_000)
    offer.get_by_text("1 run (3) failed with an earlier version of the context file").wait_for(timeout=20_000)
    offer.get_by_role("button", name="Reprocess them").click()
    offer.get_by_text("no failure left").wait_for(timeout=120_000)
    with DamnitDB.from_dir(db) as d:
        assert ps.failure(d, PROPOSAL, 3) is None
