"""The run panel beside the run table: click a run, see its plots while the table stays in view.

It follows the session's selected run (a click on a row selects it; the arrow keys move the selection):
the run's scalar values and errors first, then a plot of every array, image, xarray object and figure
it stored. Values are read off the event loop (previews first: they are what the file keeps for a quick
look), the last few runs' values are cached for every session of the server, and a loading state shows
at once. A slow read for a run the user has already left is dropped, never shown under another run's
title. When the shown run is reprocessed, the panel redraws itself.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import panel as pn
import param
from panel.io.state import set_curdoc

from app.display.plots import plot_value
from app.display.run_contents import LoadedValue, StoredVariable, load_for_display, run_file, scan_run_file
from app.display.run_summary import error_list, scalar_table
from app.display.text import safe_text
from app.live.records import Change
from app.live.session import SessionState, in_background

log = logging.getLogger(__name__)

CACHE_SIZE = 256  # loaded values kept for all sessions (previews: small), the last few runs' worth
MAX_PLOTS = 24  # a run with more plottable variables shows the first ones and says how many more


class ValueCache:
    """Loaded values by (file, its change time, variable, preview?): shared by sessions, bounded."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[tuple, LoadedValue] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, db_dir, proposal: int, run: int, name: str) -> LoadedValue:
        path = run_file(db_dir, proposal, run)
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            stamp = None
        key = (str(path), stamp, name)
        with self._lock:
            got = self._items.get(key)
            if got is not None:
                self._items.move_to_end(key)
                return got
        value = load_for_display(db_dir, run, name, prefer_preview=True)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


VALUES = ValueCache()


class RunPanel(pn.viewable.Viewer):
    """The selected run's values and plots, for the side of the run table."""

    session = param.ClassSelector(class_=SessionState)
    run = param.Integer(default=None, allow_None=True, doc="The run shown (follows the selection)")
    showing = param.Boolean(default=True, doc="Is the panel on screen (open, its page in front)? While "
                            "not, nothing is read or drawn; the run selected meanwhile is shown on return")
    generation = param.Integer(default=0, precedence=-1, doc="Bumped for each run shown: late reads of "
                               "an earlier one are dropped")

    def __init__(self, **params):
        selected = params["session"].selected_runs
        params.setdefault("run", selected[-1] if selected else None)
        super().__init__(**params)
        self.title = safe_text("", css_classes=["dmn-panel-title"], **{"font-size": "1.3em", "font-weight": "bold"})
        self.title.object = self._title
        self.open_inspect = pn.widgets.Button(label="Open in Inspect", width=140, disabled=self.param.run.rx.is_(None))
        self.body = pn.Column(sizing_mode="stretch_width", css_classes=["dmn-run-panel-body"])
        self.open_inspect.on_click(lambda _: setattr(self.session, "open_page", "inspect"))
        self.session.on_change(self._on_change)
        self._pending = False
        self._held: tuple | None = None  # plots waiting for plotly.js: (generation, box, plots)
        self._doc = pn.state.curdoc  # plots are built in a worker thread, in this session's theme
        self._show()

    @param.depends("run")
    def _title(self) -> str:
        return "No run selected" if self.run is None else f"Run {self.run}"

    @param.depends("session.selected_runs", watch=True)
    def _follow_selection(self) -> None:
        runs = self.session.selected_runs
        self.run = runs[-1] if runs else None  # a change redraws (_on_run)

    @param.depends("run", watch=True)
    def _on_run(self) -> None:
        self._show()

    def _on_change(self, change: Change) -> None:
        if self.run is not None and (change.reset or self.session.source.key_for(None, self.run) in change.changed):
            self._show()  # reprocessed: the new values

    @param.depends("session.scripts_loaded", watch=True)
    def _scripts_arrived(self) -> None:
        held, self._held = self._held, None
        if self.session.scripts_loaded and held is not None and held[0] == self.generation:
            held[1].objects = held[2]

    @param.depends("showing", watch=True)
    def _on_showing(self) -> None:
        if self.showing:
            if self._pending:
                self._show()
        else:
            # Off screen, its plots would still take part in every layout the browser does for the
            # page in front (Inspect's cards arriving one by one cost seconds each): drop them.
            self.generation += 1
            self._pending = True
            self.body.objects = []

    def _show(self) -> None:
        self.generation += 1  # whatever is still loading is for a run no longer wanted
        if not self.showing:
            self._pending = True
            return
        self._pending = False
        generation, run, source = self.generation, self.run, self.session.source
        if run is None:
            self.body.objects = [safe_text("Click a run in the table to see its plots here.", color="grey")]
            return
        self.body.objects = [pn.indicators.LoadingSpinner(value=True, size=30, name=f"Loading run {run}…")]

        def scan() -> tuple[list[StoredVariable], list[StoredVariable], dict[str, StoredVariable]]:
            if generation != self.generation:
                return [], [], {}  # the user moved on before this started: skip the read
            stored = scan_run_file(run_file(source.db_dir, source.proposal, run)) if source.proposal is not None else {}
            plottable = sorted((v for v in stored.values() if v.is_plottable),
                               key=lambda v: source.variable(v.name).display_title.casefold())
            return plottable, [v for v in stored.values() if v.error is not None], stored

        def show(result, error) -> None:
            if generation != self.generation:
                return  # the user moved on (or the panel went off screen)
            if error is not None:
                self.body.objects = [safe_text(f"Cannot read run {run}: {type(error).__name__}: {error}",
                                               color="#b00")]
                return
            plottable, errors, stored = result
            parts: list = [scalar_table(source, run, stored)]
            if errors:
                parts.append(error_list(source, errors))
            if plottable:
                parts.append(self._plots(generation, run, plottable[:MAX_PLOTS]))
            if len(plottable) > MAX_PLOTS:
                parts.append(safe_text(f"{len(plottable) - MAX_PLOTS} more: see Open in Inspect", color="grey"))
            if not plottable and not errors:
                parts.append(safe_text("Nothing to plot for this run (yet).", color="grey"))
            self.body.objects = parts

        in_background(scan, show)

    def _plots(self, generation: int, run: int, variables: list[StoredVariable]) -> pn.viewable.Viewable:
        """The run's plots, loaded in one background job and sent to the browser in one update: every
        plot added on its own makes the browser lay out the whole page again, which on a busy machine
        costs seconds per plot."""
        source = self.session.source
        css = ["dmn-panel-plots", f"dmn-panel-run-{run}"]  # which run the plots belong to (tests, screenshots)
        box = pn.Column(pn.indicators.LoadingSpinner(value=True, size=24, name=f"Loading {len(variables)} plots…"),
                        sizing_mode="stretch_width", css_classes=css)

        def load() -> list[pn.viewable.Viewable]:
            plots = []
            for var in variables:
                if generation != self.generation:
                    return []  # the user moved on: skip the rest
                title = source.variable(var.name).display_title
                try:
                    loaded = VALUES.load(source.db_dir, source.proposal, run, var.name)
                    with set_curdoc(self._doc):
                        plot = plot_value(loaded.value, title=title, units=loaded.units, objtype=loaded.objtype)
                except Exception as e:  # one unreadable value must not hide the others
                    log.warning("Run %s, %s: cannot plot: %s", run, var.name, e)
                    plot = safe_text(f"{title}: {type(e).__name__}: {e}", color="#b00")
                plots.append(pn.Column(plot, sizing_mode="stretch_width",
                                       css_classes=["dmn-panel-plot", f"dmn-panel-run-{run}", "damnit-plot-ready"]))
            return plots

        def apply(plots, error) -> None:
            if generation != self.generation:
                return
            if error is not None:
                box.objects = [safe_text(f"Cannot plot run {run}: {type(error).__name__}: {error}", color="#b00")]
                return
            held = [] if self.session.scripts_loaded else [p for p in plots if p.select(pn.pane.Plotly)]
            if held:
                # A Plotly figure drawn before plotly.js is in the browser stays blank: the others are
                # shown now, these once the script is in (asked for at once).
                self._held = (generation, box, plots)
                plots = [pn.Column(pn.indicators.LoadingSpinner(value=True, size=24), sizing_mode="stretch_width")
                         if p in held else p for p in plots]
                self.session.param.trigger("scripts_wanted")
            box.objects = plots

        in_background(load, apply)
        return box

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.title, pn.HSpacer(), self.open_inspect), self.body,
                         sizing_mode="stretch_width", css_classes=["dmn-run-panel"])
