"""Summary plots across runs: any variable against any other, histograms, and per-run array overlays.

The scatter/line/histogram reads only the live run table (no file access) and is fed through a
HoloViews ``Pipe``, so a new run adds a point without redrawing the axes. Selecting points (tap or box
select) selects those runs in the run table. The overlay reads each selected run's arrays from HDF5 in
a worker thread and aligns them on ``trainId`` when both are DataArrays.
"""

from __future__ import annotations

import asyncio
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from app.config import get_config, zone_label
from app.display.plots import PLOT_HEIGHT, downsample_1d
from app.display.run_contents import run_file, scan_run_file
from app.display.text import safe_text
from app.live.session import SessionState
from app.live.source import ProposalSource
from app.pages.logbook import SendPlot
from backend.storage.api import RunVariables

TITLE = "Plots"
SLUG = "plots"

INDEX_X = "(index / trainId)"
NON_PLOT_COLUMNS = {"proposal", "added_at", "comment"}


# --------------------------------------------------------------------------------------------------
# Pure helpers (testable without a browser)
# --------------------------------------------------------------------------------------------------

def numeric_columns(source: ProposalSource) -> list[str]:
    """Run, start time and the variables with at least one number (not arrays, thumbnails or text)."""
    with source.lock:
        table = source.table
        names = [n for n in source.column_names() if n not in NON_PLOT_COLUMNS
                 and np.isfinite(table.numbers(n)).any()]
    return ["run", "start_time", *names] if table.n_rows else []


def summary_values(source: ProposalSource, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(run numbers, the column as floats: NaN where not a number), in run order."""
    with source.lock:
        table = source.table
        rows = table.order()
        return table.run_number[rows].copy(), table.numbers(name, rows)


def scatter_data(source: ProposalSource, x: str, y: str) -> pd.DataFrame:
    """Runs with both x and y numeric, as columns x, y, run (sorted by x for line plots)."""
    runs, xs = summary_values(source, x)
    _, ys = summary_values(source, y)
    data = pd.DataFrame({"x": xs, "y": ys, "run": runs.astype(int)})
    return data.dropna(subset=["x", "y"]).sort_values(["x", "run"]).reset_index(drop=True)


def histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Probability-density histogram of the finite values (edges, densities)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0])
    density, edges = np.histogram(values, bins=max(int(bins), 1), density=True)
    return edges, density


def parse_runs_for_overlay(selected: list[int], limit: int = 20) -> list[int]:
    return sorted(set(int(r) for r in selected))[:limit]


def aligned_arrays(yval: Any, xval: Any | None) -> tuple[np.ndarray, np.ndarray, str]:
    """x and y of one run for the overlay, and the x label.

    - no x: y against its trainId (or first) coordinate, else its index;
    - two DataArrays sharing a dimension: inner-aligned on it (common trainIds);
    - two plain arrays: must have the same length.
    Raises ValueError saying why two values cannot be plotted against each other.
    """
    yarr = np.asarray(getattr(yval, "values", yval))
    if yarr.ndim != 1:
        raise ValueError(f"needs 1-D data, got shape {yarr.shape}")
    if xval is None:
        dims = getattr(yval, "dims", ())
        if dims and dims[0] in getattr(yval, "coords", {}):
            return np.asarray(yval.coords[dims[0]].values), yarr, str(dims[0])
        return np.arange(len(yarr)), yarr, "index"
    xarr = np.asarray(getattr(xval, "values", xval))
    if xarr.ndim != 1:
        raise ValueError(f"x needs 1-D data, got shape {xarr.shape}")
    ydims, xdims = getattr(yval, "dims", ()), getattr(xval, "dims", ())
    if ydims and xdims and ydims[0] == xdims[0] and ydims[0] in yval.coords and xdims[0] in xval.coords:
        import xarray as xr

        xa, ya = xr.align(xval, yval, join="inner")
        if xa.size == 0:
            raise ValueError(f"no common {ydims[0]} values")
        return np.asarray(xa.values), np.asarray(ya.values), ""
    if len(xarr) != len(yarr):
        raise ValueError(f"lengths differ ({len(xarr)} vs {len(yarr)}) and there are no shared coordinates")
    return xarr, yarr, ""


def array_variables(db_dir: Any, proposal: int | None, runs: list[int]) -> list[str]:
    """Names of 1-D array variables (candidates for the overlay) in the given runs' files."""
    names: set[str] = set()
    for run in runs:
        if proposal is None:
            break
        for var in scan_run_file(run_file(db_dir, proposal, run)).values():
            if var.objtype in ("PlotlyFigure", "image", "dataset"):
                continue
            if var.error is None and (len(var.shape) == 1 and var.shape[0] > 1 or
                                      var.objtype == "dataarray" and any(len(s) == 1 for s in
                                                                         var.netcdf_vars.values())):
                names.add(var.name)
    return sorted(names)


def read_value(db_dir: Any, run: int, name: str) -> Any:
    return RunVariables(db_dir, run)[name].read(deserialize_plotly=False)


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------

class PlotsPage(pn.viewable.Viewer):
    """A summary plot of all runs, and per-run data of the selected runs."""

    session = param.ClassSelector(class_=SessionState)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(SummaryPlot(self.session).layout, pn.layout.Divider(), RunOverlay(self.session).layout,
                         sizing_mode="stretch_width", name=TITLE)


class SummaryPlot:
    """Y against X (or a histogram of Y) for all runs, kept current as runs arrive."""

    def __init__(self, session: SessionState):
        self.session = session
        self.source = session.source
        self.tz = get_config().tz
        cols = numeric_columns(self.source)
        options = self._options(cols)
        default_y = next((c for c in cols if c not in ("run", "start_time")), "run")
        self.x = pn.widgets.Select(label="X", options=options, value="run", width=220)
        self.y = pn.widgets.Select(label="Y", options=options, value=default_y, width=220)
        self.swap = pn.widgets.Button(label="⇄ swap", width=70, align="end")
        self.kind = pn.widgets.RadioButtonGroup(options=["Scatter", "Line", "Histogram"], value="Scatter",
                                                align="end")
        self.bins = pn.widgets.IntInput(label="Bins", value=30, start=5, end=100_000, step=25, width=90)
        self.count = safe_text("", color="grey")
        self.pipe = hv.streams.Pipe(data=self._data())
        self.plot_pane = pn.pane.HoloViews(sizing_mode="stretch_width", min_height=PLOT_HEIGHT + 80,
                                           css_classes=["damnit-summary-plot"])
        self.swap.on_click(self._swap)
        for w in (self.x, self.y, self.kind):
            w.param.watch(self._rebuild, "value")
        self.bins.param.watch(lambda e: self._push(), "value")
        session.on_change(self._on_change)
        self._rebuild()
        self.layout = pn.Column(
            pn.pane.Markdown("### Summary of all runs"),
            pn.Row(self.y, pn.pane.HTML("vs.", align="end"), self.x, self.swap, self.kind, self.bins,
                   SendPlot(session=session, plot=lambda: self.plot_pane.object, name_hint="summary")),
            self.count, self.plot_pane, sizing_mode="stretch_width")

    def _label(self, name: str) -> str:
        if name == "run":
            return "Run"
        if name == "start_time":
            return f"Timestamp ({zone_label(self.tz)})"
        return self.source.variable(name).display_title

    def _options(self, cols: list[str]) -> dict[str, str]:
        return {self._label(c): c for c in cols}

    def _data(self) -> pd.DataFrame:
        if self.kind.value == "Histogram":
            values = summary_values(self.source, self.y.value)[1]
            return pd.DataFrame({"y": values[~np.isnan(values)]})
        return scatter_data(self.source, self.x.value, self.y.value)

    def _push(self) -> None:
        data = self._data()
        n_total = len(self.source.run_keys())
        self.count.object = f"{len(data)} runs plotted ({n_total - len(data)} without values)"
        self.pipe.send(data)

    def _swap(self, _=None) -> None:
        x, y = self.x.value, self.y.value
        self.x.value, self.y.value = y, x

    def _on_change(self, change: Any) -> None:
        if change.variables or change.reset:
            options = self._options(numeric_columns(self.source))
            for w in (self.x, self.y):
                current = w.value
                w.options = options
                if current in options.values():
                    w.value = current
        if change.new_runs or change.changed or change.reset:
            self._push()

    def _rebuild(self, _=None) -> None:
        kind, x, y = self.kind.value, self.x.value, self.y.value
        self.x.disabled = kind == "Histogram"
        xlabel, ylabel = self._label(x), self._label(y)
        xu, yu = self.source.units(x), self.source.units(y)
        xdim = hv.Dimension("x", label=xlabel, unit=xu)
        ydim = hv.Dimension("y", label=ylabel, unit=yu)

        if kind == "Histogram":
            def element(data: pd.DataFrame) -> hv.Element:
                edges, density = histogram(data["y"].to_numpy() if len(data) else np.array([]), self.bins.value)
                return hv.Histogram((edges, density), kdims=[ydim], vdims=["density"]).opts(
                    responsive=True, height=PLOT_HEIGHT + 80, framewise=True, tools=["hover"],
                    title=f"{ylabel}: distribution over runs")
        else:
            def element(data: pd.DataFrame) -> hv.Element:
                times = {c for c in ("x", "y") if {"x": x, "y": y}[c] == "start_time"}
                if times:  # run start times on a date axis, not as epoch seconds
                    data = data.assign(**{c: pd.to_datetime(data[c], unit="s", utc=True)
                                          .dt.tz_convert(self.tz).dt.tz_localize(None) for c in times})
                points = hv.Points(data, kdims=[xdim, ydim], vdims=["run"]).opts(
                    size=8, tools=["hover", "tap", "box_select", "lasso_select"], responsive=True,
                    height=PLOT_HEIGHT + 80, framewise=True, show_grid=True, nonselection_alpha=0.3,
                    title=f"{ylabel} vs. {xlabel}", active_tools=["box_select"])
                if kind == "Line":
                    return hv.Curve(data, kdims=[xdim], vdims=[ydim]).opts(framewise=True) * points
                return points

        # A new pipe holding data of this kind: the old one holds the previous kind's, which the new
        # element could not draw (a histogram's data has no x or run).
        self.pipe = hv.streams.Pipe(data=self._data())
        dmap = hv.DynamicMap(lambda data: element(data), streams=[self.pipe])
        if kind != "Histogram":
            selection = hv.streams.Selection1D(source=dmap)
            selection.add_subscriber(self._on_select)
        self.plot_pane.object = dmap
        self._push()

    def _on_select(self, index: list[int]) -> None:
        data = self.pipe.data
        if data is None or not index or "run" not in data:
            return
        runs = sorted({int(data["run"].iloc[i]) for i in index if i < len(data)})
        if runs:
            self.session.selected_runs = runs


class RunOverlay:
    """One array variable (optionally against another) for each selected run, one line per run."""

    def __init__(self, session: SessionState):
        self.session = session
        self.source = session.source
        self.y = pn.widgets.Select(label="Array (Y)", options=[], width=220)
        self.x = pn.widgets.Select(label="Against (X)", options=[INDEX_X], value=INDEX_X, width=220)
        self.go = pn.widgets.Button(label="Plot selected runs", color="primary", align="end")
        self.runs_text = safe_text("", color="grey", css_classes=["damnit-overlay-runs"])
        self.messages = safe_text("", color="#a60")
        self.plot_pane = pn.pane.HoloViews(sizing_mode="stretch_width", min_height=PLOT_HEIGHT,
                                           css_classes=["damnit-overlay-plot"])
        self.go.on_click(self._plot)
        session.param.watch(lambda e: self._refresh_choices(), "selected_runs")
        self._refresh_choices()
        self.layout = pn.Column(
            pn.pane.Markdown("### Per-run data for selected runs"),
            pn.Row(self.y, pn.pane.HTML("vs.", align="end"), self.x, self.go,
                   SendPlot(session=session, plot=lambda: self.plot_pane.object, name_hint="per_run")),
            self.runs_text,
            self.messages, self.plot_pane, sizing_mode="stretch_width")

    def _runs(self) -> list[int]:
        runs = parse_runs_for_overlay(self.session.selected_runs)
        if not runs and self.source.run_keys():
            runs = [self.source.run_keys()[-1]]
        return runs

    def _refresh_choices(self) -> None:
        runs = self._runs()
        names = array_variables(self.source.db_dir, self.source.proposal, runs[-3:])
        options = {self.source.variable(n).display_title: n for n in names}  # a <select>: labels are text
        current_y, current_x = self.y.value, self.x.value
        self.y.options = options
        self.x.options = {INDEX_X: INDEX_X, **options}
        if current_y in options.values():
            self.y.value = current_y
        elif options:
            self.y.value = next(iter(options.values()))
        if current_x in self.x.options.values():
            self.x.value = current_x
        shown = ", ".join(map(str, runs))
        self.runs_text.object = (f"Runs: {shown}" if self.session.selected_runs
                                 else f"No runs selected in the table; showing the newest run ({shown})")

    async def _plot(self, _=None) -> None:
        name, xname, runs = self.y.value, self.x.value, self._runs()
        if not name:
            self.messages.object = "No array variables in the selected runs."
            return
        self.go.loading = True
        try:
            curves, problems = await asyncio.to_thread(self._load, runs, name, xname)
        finally:
            self.go.loading = False
        self.messages.object = "\n".join(problems)
        if curves:
            overlay = hv.Overlay(curves).opts(responsive=True, height=PLOT_HEIGHT + 60, legend_position="right",
                                              title=f"{self.source.variable(name).display_title} per run")
            self.plot_pane.object = overlay

    def _load(self, runs: list[int], name: str, xname: str) -> tuple[list[hv.Element], list[str]]:
        curves, problems = [], []
        ylabel = self.source.variable(name).display_title
        xlabel = self.source.variable(xname).display_title if xname != INDEX_X else None
        for run in runs:
            try:
                yval = read_value(self.source.db_dir, run, name)
                xval = read_value(self.source.db_dir, run, xname) if xname != INDEX_X else None
                x, y, auto_label = aligned_arrays(yval, xval)
            except KeyError:
                problems.append(f"Run {run}: no {name!r}" + (f" or {xname!r}" if xname != INDEX_X else ""))
                continue
            except (ValueError, OSError) as e:
                problems.append(f"Run {run}: {e}")
                continue
            x, y = downsample_1d(x, y)
            xdim = hv.Dimension("x", label=xlabel or auto_label or "index")
            curves.append(hv.Curve((x, y), kdims=[xdim], vdims=[hv.Dimension("y", label=ylabel)],
                                   label=f"run {run}").opts(tools=["hover"]))
        return curves, problems


PAGE = PlotsPage
