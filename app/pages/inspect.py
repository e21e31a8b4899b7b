"""Run inspection: every variable of one run, plotted.

Follows the run selected in the run table (``session.selected_runs``) or a run picked here. The list of
variables comes from HDF5 metadata alone; each plot is read in a worker thread when its card is built,
stored preview first, so a big run neither blocks this session nor anyone else's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
import panel as pn

from app.run_contents import StoredVariable, load_for_display, run_file, scan_run_file
from app.value_plots import format_scalar, plot_value

TITLE = "Inspect run"
SLUG = "inspect"


def view(session: Any) -> pn.viewable.Viewable:
    source = session.source
    run_select = pn.widgets.Select(name="Run", options=_run_options(source), width=160)
    if session.selected_runs:
        run_select.value = session.selected_runs[-1]
    elif run_select.options:
        run_select.value = list(run_select.options.values())[-1]
    refresh = pn.widgets.Button(name="Reload", button_type="default", width=90, align="end")
    body = pn.Column(sizing_mode="stretch_width")

    def show(_=None) -> None:
        run = run_select.value
        body.objects = [run_inspector(session, run)] if run is not None else [
            pn.pane.Str("No runs yet.")]

    def on_selected(event) -> None:
        if event.new and event.new[-1] != run_select.value:
            if event.new[-1] not in run_select.options.values():
                run_select.options = _run_options(source)
            run_select.value = event.new[-1]

    def on_change(change) -> None:
        if change.new_runs or change.reset:
            run_select.options = _run_options(source)
        if run_select.value is not None and run_select.value in change.changed:
            show()  # the run shown was reprocessed: redraw with the new values

    session.param.watch(on_selected, "selected_runs")
    run_select.param.watch(show, "value")
    refresh.on_click(show)
    session.on_change(on_change)
    show()
    return pn.Column(pn.Row(run_select, refresh), body, sizing_mode="stretch_width", name=TITLE)


def _run_options(source: Any) -> dict[str, int]:
    return {f"Run {k}": k for k in source.run_keys()}


def run_inspector(session: Any, run: int) -> pn.viewable.Viewable:
    """All of one run's variables: scalars in a table, then one card per plottable variable."""
    source = session.source
    proposal = source.proposal
    stored = scan_run_file(run_file(source.db_dir, proposal, run)) if proposal is not None else {}
    plottable = [v for v in stored.values() if v.is_plottable]
    plottable.sort(key=lambda v: source.variable(v.name).display_title.casefold())
    header = pn.pane.Markdown(f"### Run {int(run)}" + ("" if stored else " — no processed data yet"))
    parts: list[pn.viewable.Viewable] = [header, scalar_table(source, run)]
    errors = [v for v in stored.values() if v.error is not None]
    if errors:
        parts.append(error_list(source, errors))
    parts.extend(variable_card(source, run, v) for v in plottable)
    return pn.Column(*parts, sizing_mode="stretch_width")


def scalar_table(source: Any, run: int) -> pn.viewable.Viewable:
    """The run's table row as name/value pairs (numbers and text only; thumbnails live in the table)."""
    frame = source.frame()
    if run not in frame.index:
        return pn.pane.Str("")
    row = frame.loc[run]
    items = []
    for name, value in row.items():
        if name in ("proposal", "added_at") or value is None or isinstance(value, (bytes, bytearray)):
            continue
        if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
            continue
        if name == "start_time":
            value = pd.Timestamp(value, unit="s", tz="UTC").tz_convert("Europe/Berlin").strftime(
                "%H:%M:%S %d/%m/%Y")
        items.append({"Variable": source.variable(name).display_title, "Value": format_scalar(value)})
    if not items:
        return pn.pane.Str("")
    return pn.widgets.Tabulator(pd.DataFrame(items), show_index=False, disabled=True, layout="fit_data_table",
                                max_height=300, sizing_mode="stretch_width")


def error_list(source: Any, errors: list[StoredVariable]) -> pn.viewable.Viewable:
    lines = [f"{source.variable(v.name).display_title}: {v.error_cls or 'Error'}: {v.error}" for v in errors]
    return pn.Card(pn.pane.Str("\n".join(lines)), title=f"{len(errors)} variable(s) failed or were skipped",
                   collapsed=True, sizing_mode="stretch_width")


def variable_card(source: Any, run: int, var: StoredVariable) -> pn.viewable.Viewable:
    """A card whose plot is loaded in a thread once rendered (preview first, full data on request)."""
    title = source.variable(var.name).display_title
    content = pn.Column(pn.indicators.LoadingSpinner(value=True, size=30, name="Loading…"),
                        sizing_mode="stretch_width")

    async def load(prefer_preview: bool = True) -> None:
        try:
            loaded = await asyncio.to_thread(load_for_display, source.db_dir, run, var.name,
                                             prefer_preview=prefer_preview)
            plot = plot_value(loaded.value, title=f"{title} (run {run})", units=loaded.units,
                              objtype=loaded.objtype)
        except Exception as e:  # show why this one variable can't be drawn; the rest still load
            content.objects = [pn.pane.Str(f"Could not load {var.name!r} for run {run}: "
                                           f"{type(e).__name__}: {e}", styles={"color": "#b00"})]
            return
        objects = [plot]
        if loaded.is_preview:
            full = pn.widgets.Button(name="Show full data", button_type="light", width=140)

            async def show_full(_):
                content.objects = [pn.indicators.LoadingSpinner(value=True, size=30)]
                await load(prefer_preview=False)

            full.on_click(show_full)
            objects.insert(0, pn.Row(pn.pane.Str("Preview", styles={"color": "grey"}), full))
        content.objects = objects

    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.execute(load, schedule=True)
    header = pn.pane.Str(f"{title}  [{var.size_text}]", margin=(0, 5), styles={"font-weight": "bold"})
    return pn.Card(content, header=header, sizing_mode="stretch_width", css_classes=["damnit-var-card"],
                   name=var.name)
