"""Failed runs and runs waiting for Slurm in the dashboard, without a browser: the shared source reads
them from runs.sqlite (written by the backend's own writers) and reports their changes, the run cell
marks them (escaped), the Processing page's lists and the offer to reprocess after a context fix follow
them, and every action that changes something refuses a session without the write right."""

from __future__ import annotations

import html
import time
from zoneinfo import ZoneInfo

import pytest

from app.actions import requeue as rq
from app.config import get_config, zone_label
from app.display.formatting import format_time
from app.live.session import SessionState
from app.live.source import ProposalSource
from app.pages import run_states_view as rsv
from app.pages.run_states_view import StaleContextOffer, failed_runs, waiting_runs
from app.pages.run_table import cells
from backend.services.listener import mirror_waiting
from backend.services.listener_db import LISTENER_DB_NAME, ListenerDB
from backend.storage import processing_state as ps
from backend.storage.database import DamnitDB
from backend.storage.synthetic import make_database

PROPOSAL = 1234
HOSTILE = "<img src=x onerror=alert(1)> it's \"bad\" & <script>alert(2)</script>"


@pytest.fixture
def db(tmp_path):
    db_dir = make_database(tmp_path / "db", proposal=PROPOSAL, n_runs=6, n_vars=3)
    (db_dir / "context.py").write_text("raise RuntimeError('broken')\n")
    return db_dir


@pytest.fixture
def source(db):
    src = ProposalSource(db, broker="none", start=False)
    yield src
    src.stop()


def _session(source, can_write=True, reason=""):
    return SessionState(source=source, can_write=can_write, write_denied_reason=reason)


def _fail(db_dir, run, kind=ps.CONTEXT, reason="SyntaxError: invalid syntax (context.py, line 3)", **kw):
    with DamnitDB.from_dir(db_dir) as d:
        ps.record_failure(d, PROPOSAL, run, kind, reason, **kw)


def _poll(source):
    time.sleep(0.01)  # a new mtime_ns even on coarse clocks
    return source.poll(force=True)


def test_source_reads_failures_and_waiting_runs_and_reports_what_changed(db, source):
    assert source.failure_for(2) is None and source.waiting_for(3) is None
    assert not _poll(source).run_states  # nothing failed, nothing waiting: no change to report

    _fail(db, 2, slurm_job_id="77")
    with DamnitDB.from_dir(db) as d:
        ps.set_waiting(d, PROPOSAL, 3, "raw", "sbatch: error: Slurm controller not responding", since=1e9,
                       attempts=2, next_attempt=1e9 + 60)
    change = _poll(source)
    assert change.run_states and set(change.processing) == {2, 3}
    assert source.failure_for(2).kind == ps.CONTEXT and source.failure_for(2).slurm_job_id == "77"
    assert source.waiting_for(3).attempts == 2

    assert not _poll(source).run_states  # read again, nothing differs

    with DamnitDB.from_dir(db) as d:  # run 2 processed successfully, run 3 submitted
        ps.clear_failure(d, PROPOSAL, 2)
        ps.clear_waiting(d, PROPOSAL, 3)
    change = _poll(source)
    assert change.run_states and set(change.processing) == {2, 3}
    assert source.failure_for(2) is None and source.waiting_for(3) is None


def test_a_database_without_the_tables_has_no_failures(tmp_path):
    db_dir = make_database(tmp_path / "old", proposal=PROPOSAL, n_runs=2, n_vars=1)
    src = ProposalSource(db_dir, broker="none", start=False)
    try:
        assert src.run_states.failures == {} and src.run_states.waiting == {}
    finally:
        src.stop()


def test_runs_that_failed_with_an_earlier_context_are_offered_after_a_change_on_disk(db, source):
    _fail(db, 1)
    _fail(db, 4)
    _fail(db, 5, kind=ps.JOB, reason="Slurm job 12 ended as TIMEOUT")  # not the context's fault
    _poll(source)
    assert set(source.run_states.failures) == {1, 4, 5}
    assert source.run_states.stale_context == ()  # context.py is still the broken version

    (db / "context.py").write_text("from damnit_ctx import Variable\n")  # fixed on disk
    change = _poll(source)
    assert change.run_states
    assert [f.run for f in source.run_states.stale_context] == [1, 4]

    offer = StaleContextOffer(_session(source))
    assert offer.layout.visible and offer.runs() == [1, 4]
    assert "2 runs (1, 4) failed with an earlier version of the context file" in offer.text.object
    armed_later = StaleContextOffer(_session(source), armed=False)  # the context editor, before a save
    assert not armed_later.layout.visible
    armed_later.arm()
    assert armed_later.layout.visible

    read_only = StaleContextOffer(_session(source, can_write=False, reason="This dashboard is read-only"))
    assert read_only.layout.visible and not read_only.button.visible
    assert "needs the write right: This dashboard is read-only" in read_only.text.object
    read_only.on_click()
    assert read_only.message.object.startswith("Not allowed")


def test_run_cell_marks_a_failed_run_with_an_escaped_reason():
    failure = ps.ProcessingFailure(PROPOSAL, 7, ps.CONTEXT, HOSTILE, 1_700_000_000.0, "abc", 1.0, None)
    tz = ZoneInfo("Europe/Berlin")
    out = cells.run_html(7, [], failure, tz=tz)
    assert "dmn-fail-mark" in out and "data-failed='context'" in out
    assert "<img" not in out and "<script" not in out and "it's" not in out  # only the mark's own tags
    title = out.split("title='")[1].split("'>")[0]
    shown = html.unescape(title)
    assert HOSTILE in shown
    assert f"the context file did not load ({format_time(1_700_000_000.0, tz)} Europe/Berlin)" in shown
    assert cells.run_html(7, []) == "<b>7</b>"  # no failure: no mark

    # The failed mark stays beside the processing marks (it is the data's state, not the job's).
    running = cells.run_html(7, [{"status": "RUNNING", "hostname": "node1", "username": "bob"}], failure, tz=tz)
    assert "data-processing='running'" in running and "dmn-fail-mark" in running
    waiting = ps.WaitingRun(PROPOSAL, 7, "raw", HOSTILE, 1_700_000_000.0, 3, None)
    out = cells.run_html(7, [], None, waiting, tz=tz)
    assert "data-processing='waiting'" in out and "<img" not in out
    assert "next when Slurm answers" in html.unescape(out) and "3 attempts" in html.unescape(out)


def test_processing_page_lists_show_failed_and_waiting_runs_as_text(db, source):
    _fail(db, 2, reason=HOSTILE, failed_at=1_700_000_000.0)
    with DamnitDB.from_dir(db) as d:
        ps.set_waiting(d, PROPOSAL, 6, "proc", "Slurm controller down", since=1_700_000_100.0, attempts=1,
                       next_attempt=None)
    _poll(source)
    session = _session(source)
    failed = failed_runs(session)
    table = failed.objects[1]
    assert failed.visible and list(table.value["Run"]) == [2]
    assert table.value["Why"].iloc[0] == HOSTILE.replace("  ", " ")  # stored as one line, kept as text
    assert table.value["What failed"].iloc[0] == "the context file did not load"
    assert table.formatters["Why"] == {"type": "textarea"}  # Tabulator escapes these

    waiting = waiting_runs(session)
    wtable = waiting.objects[2]
    assert waiting.visible and list(wtable.value["Run"]) == [6]
    assert list(wtable.value.iloc[0])[-2:] == ["when Slurm answers", "Slurm controller down"]
    zone = zone_label(get_config().tz)
    assert list(wtable.value.columns[2:5]) == [f"Waiting since ({zone})", "Attempts", f"Next attempt ({zone})"]

    with DamnitDB.from_dir(db) as d:
        ps.clear_failure(d, PROPOSAL, 2)
        ps.clear_waiting(d, PROPOSAL, 6)
    _poll(source)  # the lists follow the source's changes (no server session: callbacks run at once)
    assert not failed.visible and not waiting.visible and table.value.empty


def test_actions_refuse_a_session_without_the_write_right(db, source):
    ro = _session(source, can_write=False, reason="signed in as guest, who may only read")
    for action in (rq.requeue, rq.retry_now, rq.drop):
        with pytest.raises(PermissionError, match="who may only read"):
            action(ro, [1])
    _fail(db, 2)
    _poll(source)
    failed = failed_runs(ro)
    assert not failed.objects[2].visible  # no Reprocess button for a read-only session
    failed.objects[1].selection = [0]
    failed.objects[2].objects[0].clicks += 1  # a forged click is refused on the server
    assert failed.objects[3].object.startswith("Not allowed: signed in as guest")


def test_retry_and_drop_reach_the_listeners_queue_in_the_database_folder(db, source):
    session = _session(source)
    with pytest.raises(rq.QueueUnreachable, match="cannot reach the listener's queue"):
        rq.retry_now(session, [3])
    assert rq.listener_folder(db) is None

    with ListenerDB(db) as ldb:
        for run in (3, 4):
            entry, _ = ldb.add_waiting(db, PROPOSAL, run, "raw", "migration", added_at=None,
                                       processing_id=f"pid{run}", reason="sbatch failed", next_attempt=time.time() + 600)
            mirror_waiting(entry)
    assert (db / LISTENER_DB_NAME).is_file() and rq.listener_folder(db) == db
    _poll(source)
    assert set(source.run_states.waiting) == {3, 4}

    assert rq.retry_now(session, [3, 5]) == [3]  # run 5 was never queued
    with ListenerDB(db) as ldb:
        due = {e.run: e.next_attempt for e in ldb.waiting()}
        assert due[3] == 0 and due[4] > time.time() and ldb.take_retry_request()

    assert rq.drop(session, [4]) == [4]
    with ListenerDB(db) as ldb:
        assert [e.run for e in ldb.waiting()] == [3]
    _poll(source)
    assert set(source.run_states.waiting) == {3}


def _finish(job, timeout=120):
    """Wait for a local dashboard job's process to end."""
    assert job is not None and job.backend == "local" and job.process is not None
    job.process.wait(timeout)


def test_the_offer_follows_the_runs_it_reprocessed_until_they_succeed_or_fail_again(
        db, source, make_mock_runs, monkeypatch):
    make_mock_runs(PROPOSAL, [1, 2, 3], ntrains=3)
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("DAMNIT_SLURM", "off")
    monkeypatch.setattr(rsv, "JOB_END_GRACE_S", 0.0)
    _fail(db, 1)
    _fail(db, 2)
    (db / "context.py").write_text("raise ValueError('still broken')\n")  # a "fix" that is not one
    _poll(source)
    offer = StaleContextOffer(_session(source))
    assert offer.runs() == [1, 2]

    offer.on_click()  # a real local job (`damnit reprocess --direct`)
    assert offer.message.object.startswith("Launched processing for 1-2 (local process")
    assert offer.layout.visible and not offer.button.visible and offer.runs() == []
    assert offer.text.object.startswith("Reprocessing runs 1-2")
    _finish(offer._launched[1])
    _poll(source)
    failures = source.run_states.failures
    assert "still broken" in failures[1].reason and "still broken" in failures[2].reason
    assert source.run_states.stale_context == ()  # they failed with the context file as it is now
    assert offer.text.object == "Reprocessed runs 1-2: runs 1-2 failed again (see Failed runs on the Processing page)"

    (db / "context.py").write_text("from damnit_ctx import Variable\n\n\n@Variable()\ndef one(run):\n    return 1\n")
    _poll(source)  # fixed for real: offered again
    assert offer.runs() == [1, 2] and offer.button.visible and "2 runs (1-2) failed" in offer.text.object
    offer.on_click()
    _finish(offer._launched[1])
    _poll(source)
    assert source.run_states.failures == {}
    assert offer.text.object == "Reprocessed runs 1-2: no failure left"

    # A run whose files are gone: that attempt becomes its failure (the old reason would mislead).
    (db / "context.py").write_text("raise ValueError('broken again')\n")
    _fail(db, 3)
    _fail(db, 42)  # no such run on disk: `damnit reprocess` skips it
    (db / "context.py").write_text("from damnit_ctx import Variable  # fixed again\n")
    _poll(source)
    assert offer.runs() == [3, 42]
    offer.on_click()
    _finish(offer._launched[3])
    _poll(source)
    assert set(source.run_states.failures) == {42} and "no files of run 42" in source.run_states.failures[42].reason
    assert offer.text.object == "Reprocessed runs 3, 42: run 42 failed again (see Failed runs on the Processing page)"

    # A job that ends without touching its runs' failure (stopped before it could) gives them back.
    _fail(db, 3)
    (db / "context.py").write_text("from damnit_ctx import Variable  # fixed once more\n")
    _poll(source)
    assert offer.runs() == [3]  # 42's failure is not the context file's: a new one would not help
    offer.on_click()
    job = offer._launched[3]
    job.process.kill()
    _finish(job)
    _poll(source)
    assert offer.runs() == [] and offer.text.object == "Reprocessing run 3 (see Jobs on the Processing page)"
    offer.check_jobs()  # the page's timer
    assert offer.runs() == [3] and offer.button.visible
    assert offer.message.object.startswith(f"The job for run 3 ended ({job.state}: ")
    assert offer.message.object.endswith("without processing it")
    assert "1 run (3) failed with an earlier version" in offer.text.object
