"""Run inspection: every variable of one run, plotted.

Follows the run selected in the run table (``session.selected_runs``) or a run picked here. The list of
variables comes from HDF5 metadata alone; each plot is read in a worker thread when its card is built,
stored preview first, so a big run neither blocks this session nor anyone else's.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import panel as pn

from app.background import in_background
from app.run_contents import StoredVariable, load_for_display, run_file, scan_run_file
from app.value_plots import format_scalar, plain_text, plot_value

TITLE = "Inspect run"
SLUG = "inspect"


def view(session: Any) -> pn.viewable.Viewable:
    source = session.source
    run_select = pn.widgets.Select(label="Run", options=_run_options(source), width=160)
    if session.selected_runs:
        run_select.value = session.selected_runs[-1]
    elif run_select.options:
        run_select.value = list(run_select.options.values())[-1]
    refresh = pn.widgets.Button(label="Reload", color="default", width=90, align="end")
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
    header = pn.pane.Markdown(f"### Run {int(run)}" + ("" if stored else " — no processed data yet"),
                              css_classes=["damnit-inspect-title"])
    parts: list[pn.viewable.Viewable] = [header, scalar_table(source, run)]
    errors = [v for v in stored.values() if v.error is not None]
    if errors:
        parts.append(error_list(source, errors))
    parts.extend(variable_card(source, run, v) for v in plottable)
    return pn.Column(*parts, sizing_mode="stretch_width")


def scalar_table(source: Any, run: int) -> pn.viewable.Viewable:
    """The run's numbers and text as name/value pairs (arrays and thumbnails get plots or live in the table)."""
    with source.lock:
        r = source.runs.get(run)
        cells = dict(r.cells) if r is not None else {}
        start_time = r.start_time if r is not None else None
    items = []
    if start_time is not None:
        items.append({"Variable": "Timestamp", "Value": pd.Timestamp(start_time, unit="s", tz="UTC").tz_convert(
            "Europe/Berlin").strftime("%H:%M:%S %d/%m/%Y")})
    for name in ["comment", *source.column_names()]:
        cell = cells.get(name)
        value = cell.value if cell is not None else None
        if value is None or isinstance(value, (bytes, bytearray)) or getattr(value, "ndim", 0) > 0:
            continue
        units = (cell.attributes or {}).get("units")
        text = format_scalar(value) + (f" {units}" if units and not isinstance(value, str) else "")
        items.append({"Variable": source.variable(name).display_title, "Value": text})
    if not items:
        return pn.pane.Str("")
    return pn.widgets.Tabulator(pd.DataFrame(items), show_index=False, disabled=True, layout="fit_data_table",
                                max_height=300, sizing_mode="stretch_width", css_classes=["damnit-scalars"])


def error_list(source: Any, errors: list[StoredVariable]) -> pn.viewable.Viewable:
    lines = [f"{source.variable(v.name).display_title}: {v.error_cls or 'Error'}: {v.error}" for v in errors]
    return pn.Card(pn.pane.Str("\n".join(lines)), title=f"{len(errors)} variable(s) failed or were skipped",
                   collapsed=True, sizing_mode="stretch_width")


def variable_card(source: Any, run: int, var: StoredVariable) -> pn.viewable.Viewable:
    """A card whose plot is loaded in a thread once rendered (preview first, full data on request)."""
    title = source.variable(var.name).display_title
    content = pn.Column(pn.indicators.LoadingSpinner(value=True, size=30, name="Loading…"),
                        sizing_mode="stretch_width")

    def load(prefer_preview: bool = True) -> None:
        def work() -> tuple[Any, bool]:
            loaded = load_for_display(source.db_dir, run, var.name, prefer_preview=prefer_preview)
            plot = plot_value(loaded.value, title=title, units=loaded.units,
                              objtype=loaded.objtype)
            return plot, loaded.is_preview

        def apply(result: tuple[Any, bool] | None, error: BaseException | None) -> None:
            if error is not None:  # say why this one variable can't be drawn; the rest still load
                content.objects = [pn.pane.Str(f"Could not load {var.name!r} for run {run}: "
                                               f"{type(error).__name__}: {error}", styles={"color": "#b00"})]
                return
            plot, is_preview = result
            objects = [plot]
            if is_preview:
                full = pn.widgets.Button(label="Show full data", color="light", width=140)

                def show_full(_):
                    content.objects = [pn.indicators.LoadingSpinner(value=True, size=30)]
                    load(prefer_preview=False)

                full.on_click(show_full)
                objects.insert(0, pn.Row(pn.pane.Str("Preview", styles={"color": "grey"}), full))
            content.objects = objects
            content.css_classes = ["damnit-plot-ready"]  # marks a drawn card (tests, screenshots)

        in_background(work, apply)

    load()
    header = plain_text(f"{title}  [{var.size_text}]", margin="0 5px", **{"font-weight": "bold"})
    safe_name = re.sub(r"\W", "_", var.name)
    return pn.Card(content, header=header, sizing_mode="stretch_width",
                   css_classes=["damnit-var-card", f"damnit-var-{safe_name}"])
