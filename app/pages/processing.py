"""Processing: reprocess runs, watch and cancel jobs, see the runs waiting for Slurm and those whose
processing failed (and re-queue them), follow a run's processing log live."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from app.actions.processing_jobs import (
    LogTail,
    job_board,
    runs_selected,
    runs_with_data,
    slurm_available,
)
from app.config import get_config, zone_label
from app.display.formatting import format_time
from app.display.text import safe_options, safe_text
from app.display.theme import TABLE_CSS
from app.live.session import SessionState, every
from app.pages.run_states_view import StaleContextOffer, failed_runs, waiting_runs
from backend.base.paths import run_log_path
from backend.base.runs import RunSpecError, format_runs

TITLE = "Processing"
SLUG = "processing"
JOBS_REFRESH_MS = 2000
LOG_POLL_MS = 1500


class ProcessingPage(pn.viewable.Viewer):
    """Reprocess runs, see and cancel jobs, follow a run's log."""

    session = param.ClassSelector(class_=SessionState)

    def __panel__(self) -> pn.viewable.Viewable:
        source = self.session.source
        board = job_board(source.db_dir, source.proposal)
        # <hr>, not pn.layout.Divider: Panel leaves the Divider's stylesheet on its CDN (no internet here)
        return pn.Column(
            reprocess_form(self.session, board),
            pn.pane.HTML("<hr>", sizing_mode="stretch_width"),
            job_list(self.session, board),
            StaleContextOffer(self.session).layout,
            waiting_runs(self.session),
            failed_runs(self.session),
            pn.pane.HTML("<hr>", sizing_mode="stretch_width"),
            log_viewer(self.session),
            sizing_mode="stretch_width", name=TITLE)


def _computed_variables(source: Any) -> dict[str, str]:
    return safe_options({f"{v.display_title} ({v.name})" if v.title and v.title != v.name else v.name: v.name
                         for v in sorted(source.variables.values(), key=lambda v: v.display_title.casefold())
                         if not v.user_editable})


def reprocess_form(session: Any, board: Any) -> pn.viewable.Viewable:
    source = session.source
    runs_input = pn.widgets.TextInput(label="Runs", placeholder="e.g. 1-10, 15  or  all", width=260)
    if session.selected_runs:
        runs_input.value = format_runs(session.selected_runs)
    variables = pn.widgets.MultiChoice(label="Variables (none chosen = all)", options=_computed_variables(source),
                                       sizing_mode="stretch_width", min_width=300)
    backends = {"Slurm": "slurm", "This machine": "local"}
    backend = pn.widgets.RadioButtonGroup(label="Run on", options=backends,
                                          value="slurm" if slurm_available() else "local", align="end")
    if not slurm_available():
        backend.disabled = True
    check = safe_text("")
    submit = pn.widgets.Button(label="Reprocess", color="primary", disabled=True, align="end",
                               css_classes=["damnit-reprocess"])
    status = safe_text("")
    state = {"runs": []}

    def validate(*events: Any) -> None:
        typed = [e.new for e in events if isinstance(getattr(e, "new", None), str)]
        text = typed[-1] if typed else (runs_input.value_input or runs_input.value)
        if not session.can_write:
            submit.disabled = True
            check.object = session.write_denied_reason or "This dashboard is read-only"
            return
        try:
            runs = runs_selected(text, source.run_keys())
        except RunSpecError as e:
            state["runs"], submit.disabled, check.object = [], True, str(e)
            return
        on_disk = runs_with_data(source.proposal)
        missing = sorted(set(runs) - on_disk) if on_disk is not None else []
        ok = [r for r in runs if r not in missing]
        state["runs"] = ok
        submit.disabled = not ok
        check.object = f"{len(ok)} runs selected" + (
            f" - {len(missing)} more don't exist ({format_runs(missing)})" if missing else "")

    def do_submit(_=None) -> None:
        session.check_write()
        if not state["runs"]:
            return
        try:
            job = board.submit(state["runs"], variables.value, backend=backend.value, user=session.user)
        except Exception as e:
            status.object = f"Could not start processing: {e}"
            status.styles = {"color": "#b00"}
            return
        status.styles = {"color": "#2e7d32"}
        status.object = f"Launched processing for {len(job.runs)} runs ({job.message})"

    def on_variables(change: Any) -> None:
        if change.variables or change.reset:
            current = variables.value
            variables.options = _computed_variables(source)
            variables.value = [v for v in current if v in variables.options.values()]

    runs_input.param.watch(validate, ["value", "value_input"])
    submit.on_click(do_submit)
    session.on_change(on_variables)
    validate()
    return pn.Column(pn.pane.Markdown("### Reprocess runs"),
                     pn.Row(runs_input, backend, submit), check, variables, status,
                     sizing_mode="stretch_width")


def job_list(session: Any, board: Any) -> pn.viewable.Viewable:
    """Jobs started here plus processing announced by anyone (listener, CLI) via update messages."""
    source = session.source
    tz = get_config().tz
    table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True, selectable=1,
                                 titles={"Started": f"Started ({zone_label(tz)})"},
                                 sizing_mode="stretch_width", layout="fit_data_stretch", max_height=300,
                                 css_classes=["damnit-jobs"], stylesheets=[TABLE_CSS])
    cancel = pn.widgets.Button(label="Cancel selected job", color="danger", disabled=True)
    message = safe_text("")

    def rows() -> pd.DataFrame:
        board.refresh()
        out = []
        for j in board.all_jobs()[:50]:
            out.append({"Job": j.id, "Runs": j.runs_text, "On": j.backend, "State": j.state,
                        "Started": format_time(j.started, tz, "%H:%M:%S"),
                        "By": j.user, "Details": j.message})
        with source.lock:
            announced = list(source.processing.values())
        for d in announced:
            out.append({"Job": str(d.get("slurm_job_id") or d.get("processing_id", ""))[:12],
                        "Runs": str(d.get("run")), "On": "slurm" if d.get("slurm_job_id") else "local",
                        "State": d.get("status", ""), "Started": "", "By": d.get("username", ""),
                        "Details": f"{d.get('hostname', '')} (announced)"})
        return pd.DataFrame(out, columns=["Job", "Runs", "On", "State", "Started", "By", "Details"])

    def refresh() -> None:
        df = rows()
        if not df.equals(table.value):
            selected = table.selection
            table.value = df
            table.selection = [i for i in selected if i < len(df)]
        update_cancel()

    def update_cancel(*_) -> None:
        ids = [table.value["Job"].iloc[i] for i in table.selection if i < len(table.value)]
        cancel.disabled = not (session.can_write and ids and any(
            j.id in ids for j in board.active_jobs()))

    def do_cancel(_=None) -> None:
        session.check_write()
        for i in table.selection:
            message.object = board.cancel(table.value["Job"].iloc[i])
        refresh()

    table.param.watch(update_cancel, "selection")
    cancel.on_click(do_cancel)
    refresh()
    every(JOBS_REFRESH_MS, refresh)
    return pn.Column(pn.pane.Markdown("### Jobs"), table, pn.Row(cancel, message), sizing_mode="stretch_width")


def log_viewer(session: Any) -> pn.viewable.Viewable:
    """``process_logs/r<run>-p<prop>.out`` of one run, appended live (polled every 1.5 s)."""
    source = session.source
    runs = source.run_keys()
    run_select = pn.widgets.Select(label="Processing log of run", options=runs,
                                   value=(session.selected_runs or runs or [None])[-1], width=200)
    follow = pn.widgets.Checkbox(label="Follow", value=True, align="end")
    log_text = safe_text("", css_classes=["damnit-log"], sizing_mode="stretch_width",
                         **{"font-size": "12px", "margin": "0", "font-family": "monospace"})
    box = pn.Column(log_text, height=350, scroll=True, sizing_mode="stretch_width",
                    styles={"border": "1px solid var(--panel-border-color, #ccc)",
                            "background": "var(--panel-surface-color, #fafafa)"})


    def show(value: str) -> None:
        log_text.object = value
        box.scroll_position = 10**9  # keep the newest lines in view
    tail: dict[str, LogTail | None] = {"t": None}

    def open_log(_=None) -> None:
        run = run_select.value
        if run is None or source.proposal is None:
            tail["t"] = None
            show("No runs yet.")
            return
        tail["t"] = LogTail(run_log_path(source.db_dir, source.proposal, run))
        if not tail["t"].poll() and tail["t"].missing:
            show(f"No log found for run {run}")
        else:
            show(tail["t"].text)

    def poll() -> None:
        t = tail["t"]
        if t is not None and follow.value and t.poll():
            show(t.text)

    def on_change(change: Any) -> None:
        if change.new_runs or change.reset:
            run_select.options = source.run_keys()

    run_select.param.watch(open_log, "value")
    session.param.watch(lambda e: setattr(run_select, "value", e.new[-1]) if e.new and e.new[-1] in
                        run_select.options else None, "selected_runs")
    session.on_change(on_change)
    open_log()
    every(LOG_POLL_MS, poll)
    return pn.Column(pn.pane.Markdown("### Processing log"), pn.Row(run_select, follow), box,
                     sizing_mode="stretch_width")


PAGE = ProcessingPage
