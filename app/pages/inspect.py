"""Run inspection: every variable of one run, plotted.

Follows the run selected in the run table (``session.selected_runs``) or a run picked here. The list of
variables comes from HDF5 metadata alone; each plot is read in a worker thread when its card is built,
stored preview first, so a big run neither blocks this session nor anyone else's.
"""

from __future__ import annotations

import re
from typing import Any

import panel as pn
import param
from panel.io.state import set_curdoc

from app.display.plots import plot_value
from app.display.run_contents import StoredVariable, load_for_display, run_file, scan_run_file
from app.display.run_summary import error_list, scalar_table
from app.display.text import safe_text
from app.live.records import Change
from app.live.session import SessionState, in_background
from app.live.source import ProposalSource

TITLE = "Inspect run"
SLUG = "inspect"


class InspectPage(pn.viewable.Viewer):
    """A run picker and everything stored for the chosen run."""

    session = param.ClassSelector(class_=SessionState)
    run = param.Integer(default=None, allow_None=True, doc="The run shown")
    reload = param.Event(doc="Read the run shown again (the Reload button; the run was reprocessed)")

    def __init__(self, **params):
        super().__init__(**params)
        self.run_select = pn.widgets.Select(label="Run", options=self._run_options(), width=160)
        self.refresh = pn.widgets.Button.from_param(self.param.reload, label="Reload", color="default",
                                                    width=90, align="end")
        if self.session.selected_runs:
            self.run = self.session.selected_runs[-1]
        elif self.run_select.options:
            self.run = list(self.run_select.options.values())[-1]
        self.run_select.value = self.run
        self.run_select.link(self, value="run", bidirectional=True)
        self.body = pn.Column(objects=self._contents, sizing_mode="stretch_width")
        self.session.on_change(self._on_change)

    def _run_options(self) -> dict[str, int]:
        return {f"Run {k}": k for k in self.session.source.run_keys()}

    @param.depends("run", "reload")
    def _contents(self) -> list[pn.viewable.Viewable]:
        return [run_inspector(self.session.source, self.run)] if self.run is not None else [
            safe_text("No runs yet.")]

    @param.depends("session.selected_runs", watch=True)
    def _on_selected(self) -> None:
        runs = self.session.selected_runs
        if runs and runs[-1] != self.run:
            if runs[-1] not in self.run_select.options.values():
                self.run_select.options = self._run_options()
            self.run = runs[-1]

    def _on_change(self, change: Change) -> None:
        if change.new_runs or change.reset:
            self.run_select.options = self._run_options()
        if self.run is not None and self.run in change.changed:
            self.param.trigger("reload")  # the run shown was reprocessed: redraw with the new values

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.run_select, self.refresh), self.body, sizing_mode="stretch_width", name=TITLE)


def run_inspector(source: ProposalSource, run: int) -> pn.viewable.Viewable:
    """All of one run's variables: scalars in a table, then one card per plottable variable."""
    proposal = source.proposal
    stored = scan_run_file(run_file(source.db_dir, proposal, run)) if proposal is not None else {}
    plottable = [v for v in stored.values() if v.is_plottable]
    plottable.sort(key=lambda v: source.variable(v.name).display_title.casefold())
    header = safe_text(f"Run {int(run)}" + ("" if stored else " — no processed data yet"),
                       css_classes=["damnit-inspect-title"], **{"font-size": "1.4em", "font-weight": "bold"})
    parts: list[pn.viewable.Viewable] = [header, scalar_table(source, run, stored)]
    errors = [v for v in stored.values() if v.error is not None]
    if errors:
        parts.append(error_list(source, errors))
    parts.extend(variable_card(source, run, v) for v in plottable)
    return pn.Column(*parts, sizing_mode="stretch_width")


def variable_card(source: ProposalSource, run: int, var: StoredVariable) -> pn.viewable.Viewable:
    """A card whose plot is loaded in a thread once rendered (preview first, full data on request)."""
    title = source.variable(var.name).display_title
    content = pn.Column(pn.indicators.LoadingSpinner(value=True, size=30, name="Loading…"),
                        sizing_mode="stretch_width")
    doc = pn.state.curdoc

    def load(prefer_preview: bool = True) -> None:
        def work() -> tuple[Any, bool]:
            loaded = load_for_display(source.db_dir, run, var.name, prefer_preview=prefer_preview)
            with set_curdoc(doc):  # built in this session's theme
                plot = plot_value(loaded.value, title=title, units=loaded.units, objtype=loaded.objtype)
            return plot, loaded.is_preview

        def apply(result: tuple[Any, bool] | None, error: BaseException | None) -> None:
            if error is not None:  # say why this one variable can't be drawn; the rest still load
                content.objects = [safe_text(f"Could not load {var.name!r} for run {run}: "
                                             f"{type(error).__name__}: {error}", color="#b00")]
                return
            plot, is_preview = result
            objects = [plot]
            if is_preview:
                full = pn.widgets.Button(label="Show full data", color="light", width=140)

                def show_full(_):
                    content.objects = [pn.indicators.LoadingSpinner(value=True, size=30)]
                    load(prefer_preview=False)

                full.on_click(show_full)
                objects.insert(0, pn.Row(safe_text("Preview", color="grey"), full))
            content.objects = objects
            content.css_classes = ["damnit-plot-ready"]  # marks a drawn card (tests, screenshots)

        in_background(work, apply)

    load()
    header = safe_text(f"{title}  [{var.size_text}]", margin="0 5px", **{"font-weight": "bold"})
    safe_name = re.sub(r"\W", "_", var.name)
    return pn.Card(content, header=header, sizing_mode="stretch_width",
                   css_classes=["damnit-var-card", f"damnit-var-{safe_name}"])


PAGE = InspectPage
