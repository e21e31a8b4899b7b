"""Runs waiting for Slurm and runs whose processing failed, with what can be done about them: shown on
the Processing page, and (the offer to reprocess runs that failed with a broken context file) after a
save on the Context file page.

Everything here renders the source's ``run_states`` (read once per change for every session,
``app/live/run_states.py``) and follows its changes; actions go through ``app/actions/requeue.py``,
which checks the write right again, off the event loop.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import panel as pn

from app.actions.processing_jobs import FINISHED_STATES, Job, job_board
from app.actions.requeue import QueueUnreachable, drop, listener_folder, requeue, retry_now
from app.config import get_config, zone_label
from app.display.formatting import format_time
from app.display.text import safe_text
from app.display.theme import TABLE_CSS
from app.live.records import Change
from app.live.session import SessionState, every, in_background
from app.pages.run_table.cells import FAILURE_KINDS
from backend.base.runs import format_runs

OK_COLOUR, ERROR_COLOUR = "#2e7d32", "#b00"
REASON_WIDTH = 520
JOB_CHECK_MS = 2000
JOB_END_GRACE_S = 8.0  # a finished job's runs are offered again if their failure has not changed by then


def _runs_text(runs: list[int]) -> str:
    return f"run{'s' if len(runs) > 1 else ''} {format_runs(runs)}"


def _say(pane: Any, text: str, ok: bool = True) -> None:
    pane.styles = {**pane.styles, "color": OK_COLOUR if ok else ERROR_COLOUR}
    pane.object = text


def _on_run_states(session: SessionState, refresh) -> None:
    def on_change(change: Change) -> None:
        if change.run_states or change.reset:
            refresh()

    session.on_change(on_change)


def _table(columns: list[str], css_class: str) -> pn.widgets.Tabulator:
    """Rows of plain text (Tabulator's plaintext formatters escape; long reasons wrap)."""
    return pn.widgets.Tabulator(pd.DataFrame(columns=columns), show_index=False, disabled=True, selectable=True,
                                layout="fit_data_stretch", max_height=260, sizing_mode="stretch_width",
                                formatters={"Why": {"type": "textarea"}}, widths={"Why": REASON_WIDTH},
                                css_classes=[css_class], stylesheets=[TABLE_CSS])


def _show(table: pn.widgets.Tabulator, df: pd.DataFrame) -> None:
    """New rows, keeping the selected runs selected."""
    if df.equals(table.value):
        return
    old = table.value
    chosen = {old["Run"].iloc[i] for i in table.selection if i < len(old)}
    table.value = df
    table.selection = [i for i, run in enumerate(df["Run"]) if run in chosen]


def _selected_runs(table: pn.widgets.Tabulator) -> list[int]:
    df = table.value
    return sorted(int(df["Run"].iloc[i]) for i in table.selection if i < len(df))


def _runs_to_act_on(session: SessionState, table: pn.widgets.Tabulator, message: Any) -> list[int]:
    """The selected runs, if this session may write (otherwise none, and the message says why)."""
    try:
        session.check_write()
    except PermissionError as e:
        _say(message, f"Not allowed: {e}", ok=False)
        return []
    return _selected_runs(table)


def _own_proposal(session: SessionState, items) -> list:
    proposal = session.source.proposal
    return [x for x in items if proposal is None or x.proposal == proposal]


# ---------------------------------------------------------------- waiting for Slurm

def waiting_runs(session: SessionState) -> pn.viewable.Viewable:
    """Runs the listener could not hand to Slurm and keeps in its queue: since when, how many tries,
    the next one, why; Retry now / Drop (when this dashboard reaches the queue) and Reprocess here."""
    source = session.source
    tz = get_config().tz
    zone = zone_label(tz)
    columns = ["Run", "Data", f"Waiting since ({zone})", "Attempts", f"Next attempt ({zone})", "Why"]
    table = _table(columns, "damnit-waiting")
    heading = pn.pane.Markdown("### Waiting for Slurm")
    about = safe_text("", css_classes=["damnit-waiting-about"], opacity="0.75", **{"font-size": "13px"})
    retry = pn.widgets.Button(label="Retry now", disabled=True, css_classes=["damnit-retry-waiting"],
                              description="Ask the listener to submit the selected runs now, not at its next try")
    dropper = pn.widgets.Button(label="Drop", color="danger", disabled=True, css_classes=["damnit-drop-waiting"],
                                description="Take the selected runs out of the listener's queue (they are not "
                                            "processed unless reprocessed)")
    here = pn.widgets.Button(label="Reprocess here", disabled=True, css_classes=["damnit-requeue-waiting"],
                             description="Reprocess the selected runs from the dashboard (on Slurm if it answers, "
                                         "else on the dashboard's machine); they leave the listener's queue")
    message = safe_text("", css_classes=["damnit-waiting-message"])
    buttons = pn.Row(retry, dropper, here, visible=session.can_write)
    box = pn.Column(heading, about, table, buttons, message, visible=False, sizing_mode="stretch_width")

    def refresh() -> None:
        waiting = sorted(_own_proposal(session, source.run_states.waiting.values()), key=lambda w: w.since)
        box.visible = bool(waiting)
        reachable = listener_folder(source.db_dir) is not None
        about.object = ("The listener could not submit these runs to Slurm and keeps them in its queue; it tries "
                        "again with back-off, and at once when Slurm answers. "
                        + ("" if reachable else "This dashboard cannot reach that queue (the listener does not run "
                           "in the database folder): use \"damnit listener waiting --retry\" or \"--drop ID\" in the "
                           "listener's folder, or reprocess them here."))
        retry.visible = dropper.visible = reachable
        _show(table, pd.DataFrame(
            [{"Run": w.run, "Data": w.run_data, columns[2]: format_time(w.since, tz), "Attempts": w.attempts,
              columns[4]: format_time(w.next_attempt, tz) if w.next_attempt else "when Slurm answers",
              "Why": w.reason} for w in waiting], columns=columns))
        selected()

    def selected(*_: Any) -> None:
        none = not _selected_runs(table)
        retry.disabled = dropper.disabled = here.disabled = none

    def act(work, verb: str) -> None:
        runs = _runs_to_act_on(session, table, message)
        if not runs:
            return
        _say(message, f"{verb} {_runs_text(runs)}…")

        def done(result, error) -> None:
            if isinstance(error, PermissionError):
                _say(message, f"Not allowed: {error}", ok=False)
            elif isinstance(error, QueueUnreachable):
                _say(message, f"Not done: {error}", ok=False)
            elif error is not None:
                _say(message, f"Could not {verb.lower()} {_runs_text(runs)}: {error}", ok=False)
            else:
                _say(message, result)

        in_background(lambda: work(runs), done)

    def do_retry(_=None) -> None:
        def work(runs):
            found = retry_now(session, runs)
            gone = sorted(set(runs) - set(found))
            return ((f"Asked the listener to submit {_runs_text(found)} now" if found else "")
                    + (f"; {_runs_text(gone)} had already left its queue" if gone and found else "")
                    + (f"{_runs_text(gone).capitalize()} had already left the listener's queue" if not found else ""))
        act(work, "Retrying")

    def do_drop(_=None) -> None:
        def work(runs):
            found = drop(session, runs)
            return (f"Dropped {_runs_text(found)} from the listener's queue: not processed unless you reprocess"
                    f" {'them' if len(found) > 1 else 'it'}" if found else
                    f"{_runs_text(runs).capitalize()} had already left the listener's queue")
        act(work, "Dropping")

    def do_here(_=None) -> None:
        act(lambda runs: requeue(session, runs).message, "Reprocessing")

    table.param.watch(selected, "selection")
    retry.on_click(do_retry)
    dropper.on_click(do_drop)
    here.on_click(do_here)
    _on_run_states(session, refresh)
    refresh()
    return box


# ---------------------------------------------------------------- failed

def failed_runs(session: SessionState) -> pn.viewable.Viewable:
    """Runs whose last processing failed: when, what, why; reprocess the selected ones."""
    source = session.source
    tz = get_config().tz
    columns = ["Run", f"Failed at ({zone_label(tz)})", "What failed", "Slurm job", "Why"]
    table = _table(columns, "damnit-failed")
    heading = pn.pane.Markdown("### Failed runs")
    reprocess = pn.widgets.Button(label="Reprocess selected", disabled=True, css_classes=["damnit-requeue-failed"],
                                  description="Reprocess the selected runs (every variable), on Slurm if it "
                                              "answers, else on the dashboard's machine")
    message = safe_text("", css_classes=["damnit-failed-message"])
    box = pn.Column(heading, table, pn.Row(reprocess, visible=session.can_write), message, visible=False,
                    sizing_mode="stretch_width")

    def refresh() -> None:
        failures = sorted(_own_proposal(session, source.run_states.failures.values()), key=lambda f: f.run)
        box.visible = bool(failures)
        _show(table, pd.DataFrame(
            [{"Run": f.run, columns[1]: format_time(f.failed_at, tz), "What failed": FAILURE_KINDS.get(f.kind, f.kind),
              "Slurm job": f.slurm_job_id or "", "Why": f.reason} for f in failures], columns=columns))
        selected()

    def selected(*_: Any) -> None:
        reprocess.disabled = not _selected_runs(table)

    def do_reprocess(_=None) -> None:
        runs = _runs_to_act_on(session, table, message)
        if not runs:
            return
        _say(message, f"Starting processing of {_runs_text(runs)}…")
        in_background(lambda: requeue(session, runs).message,
                      lambda result, error: _say(message, result) if error is None
                      else _say(message, f"Could not start processing: {error}", ok=False))

    table.param.watch(selected, "selection")
    reprocess.on_click(do_reprocess)
    _on_run_states(session, refresh)
    refresh()
    return box


# ---------------------------------------------------------------- after a context fix

class StaleContextOffer:
    """"N runs failed with an earlier version of the context file: Reprocess them". Shown while such
    runs exist once ``armed`` (the Processing page: always; the Context file page: after a save)."""

    def __init__(self, session: SessionState, armed: bool = True):
        self.session = session
        self.armed = armed
        self._launched: dict[int, Job | None] = {}  # reprocessing from here, not finished yet (None: starting)
        self._ended: dict[str, float] = {}  # job id -> when it was first seen finished
        self._reported: set[int] = set()  # reprocessed from here, finished
        self.text = safe_text("", css_classes=["damnit-stale-context-text"], **{"font-weight": "bold"})
        self.button = pn.widgets.Button(label="Reprocess them", color="primary", visible=session.can_write,
                                        css_classes=["damnit-reprocess-stale"], align="center")
        self.message = safe_text("", css_classes=["damnit-stale-context-message"])
        self.layout = pn.Column(pn.Row(self.text, self.button), self.message, visible=False,
                                sizing_mode="stretch_width", css_classes=["damnit-stale-context"],
                                styles={"background": "color-mix(in srgb, #e65100 12%, var(--panel-background-color))",
                                        "border": "1px solid #e65100",
                                        "border-radius": "4px", "padding": "4px"})
        self.button.on_click(self.on_click)
        _on_run_states(session, self.refresh)
        every(JOB_CHECK_MS, self.check_jobs)
        self.refresh()

    def _stale(self) -> set[int]:
        return {f.run for f in _own_proposal(self.session, self.session.source.run_states.stale_context)}

    def runs(self) -> list[int]:
        """The runs to offer: failed with an earlier context, not already being reprocessed from here."""
        return sorted(self._stale() - set(self._launched))

    def arm(self) -> None:
        self.armed = True
        self.refresh()

    def refresh(self) -> None:
        stale = self._stale()
        finished = set(self._launched) - stale  # reprocessed: their failure is gone, or is a new one
        for run in finished:
            del self._launched[run]
        self._reported |= finished
        runs = sorted(stale - set(self._launched))
        if not runs:
            self.layout.visible = self.armed and bool(self._launched or self._reported)
            self.button.visible = False
            if self._launched:
                self.text.object = (f"Reprocessing {_runs_text(sorted(self._launched))} (see Jobs on the "
                                    "Processing page)")
            elif self._reported:  # what became of the runs reprocessed from here
                failed = sorted(self._reported & {f.run for f in self.session.source.run_states.failures.values()})
                self.text.object = (f"Reprocessed {_runs_text(sorted(self._reported))}: "
                                    + (f"{_runs_text(failed)} failed again (see Failed runs on the Processing "
                                       "page)" if failed else "no failure left"))
            return
        self._reported = set()
        self.layout.visible = self.armed
        self.button.visible = self.session.can_write
        n = len(runs)
        text = (f"{n} run{'s' if n > 1 else ''} ({format_runs(runs)}) failed with an earlier version of the "
                "context file")
        if not self.session.can_write:
            text += ". Reprocessing them needs the write right: " + (self.session.write_denied_reason
                                                                      or "this dashboard is read-only")
        self.text.object = text + ("" if not self.session.can_write else ":")

    def on_click(self, _=None) -> None:
        runs = self.runs()
        try:
            self.session.check_write()
        except PermissionError as e:
            _say(self.message, f"Not allowed: {e}", ok=False)
            return
        if not runs:
            return
        self._launched.update(dict.fromkeys(runs))
        self.button.disabled = True
        _say(self.message, f"Starting processing of {_runs_text(runs)}…")

        def done(result, error) -> None:
            self.button.disabled = False
            if error is not None:
                for run in runs:
                    self._launched.pop(run, None)
                _say(self.message, f"Could not start processing: {error}", ok=False)
            else:
                self._launched.update(dict.fromkeys(runs, result.job))
                _say(self.message, result.message)
            self.refresh()

        in_background(lambda: requeue(self.session, runs), done)

    def check_jobs(self) -> None:
        """Offer again the runs whose job ended without changing their failure (it could not run them,
        or was cancelled), looked at some seconds after the job ended, when the source has polled."""
        jobs = {j.id: j for j in self._launched.values() if j is not None}
        if not jobs:
            return
        src = self.session.source
        job_board(src.db_dir, src.proposal).refresh()
        now = time.monotonic()
        notes = []
        for job in jobs.values():
            if job.state not in FINISHED_STATES or now - self._ended.setdefault(job.id, now) < JOB_END_GRACE_S:
                continue
            del self._ended[job.id]
            runs = sorted(r for r, j in self._launched.items() if j is job)
            for run in runs:
                del self._launched[run]
            notes.append(f"the job for {_runs_text(runs)} ended ({job.state}: {job.message}) without processing "
                         f"{'them' if len(runs) > 1 else 'it'}")
        if notes:
            text = "; ".join(notes)
            _say(self.message, text[:1].upper() + text[1:], ok=False)
            self.refresh()
