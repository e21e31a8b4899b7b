"""Summary plots across runs: any variable against any other, histograms, and per-run array overlays.

The scatter/line/histogram reads only the live run table (no file access) and is fed through a
HoloViews ``Pipe``, so a new run adds a point without redrawing the axes. Selecting points (tap or box
select) selects those runs in the run table. The overlay reads each selected run's arrays from HDF5 in
a worker thread: 1-D values as a line per run, per-train data counted from each run's first train (or
on absolute train IDs), two DataArrays aligned on their common ``trainId``; 2-D values as an image
per run, with square pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from panel.io.state import set_curdoc

from app.config import get_config, zone_label
from app.display.hv import hv
from app.display.plots import PLOT_HEIGHT, PlotStyle, downsample_1d, plot_value
from app.display.run_contents import run_file, scan_run_file
from app.display.text import plot_text, plot_title, safe_text
from app.live.session import SessionState, in_background
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


TRAIN_INDEX, ABSOLUTE_TRAINS = "Train in run", "Absolute trainId"


def _is_train_dim(name: Any) -> bool:
    return "train" in str(name).lower()


def aligned_arrays(yval: Any, xval: Any | None, *, relative: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """x and y of one run for the overlay, and the x label.

    - no x: y against its first coordinate, else its index; train IDs count from the run's first train
      (``relative``), so runs taken hours apart lie on top of each other, or as absolute train IDs;
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
            coords = np.asarray(yval.coords[dims[0]].values)
            if relative and _is_train_dim(dims[0]) and coords.dtype.kind in "iuf" and len(coords):
                return coords - coords.min(), yarr, f"{dims[0]} − first {dims[0]} of the run"
            return coords, yarr, str(dims[0])
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


def array_variables(db_dir: Any, proposal: int | None, runs: list[int]) -> dict[str, int]:
    """Array variables of the given runs' files that the overlay can draw: name → 1 (a line per run)
    or 2 (an image per run)."""
    found: dict[str, int] = {}
    for run in runs:
        if proposal is None:
            break
        for var in scan_run_file(run_file(db_dir, proposal, run)).values():
            if var.error is not None or var.objtype in ("PlotlyFigure", "image", "dataset", "dataframe", "series"):
                continue
            shapes = list(var.netcdf_vars.values()) if var.objtype == "dataarray" else [var.shape]
            shape = max(shapes, key=lambda sh: int(np.prod(sh)), default=())  # the data, not a coordinate
            ndim = sum(1 for n in shape if n > 1)
            if ndim in (1, 2):
                found.setdefault(var.name, ndim)
    return dict(sorted(found.items()))


def read_value(db_dir: Any, run: int, name: str) -> Any:
    return RunVariables(db_dir, run)[name].read(deserialize_plotly=False)


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------

class PlotsPage(pn.viewable.Viewer):
    """A summary plot of all runs, and per-run data of the selected runs."""

    session = param.ClassSelector(class_=SessionState)
    view = param.Dict(default={}, doc="The choices made on this page, as a view link keeps them")

    LINK_PARAMS = ("view",)  # app/pages/view_links.py
    LINK_KEYS = ("x", "y", "kind", "bins", "array", "against", "trains")

    def __init__(self, **params):
        super().__init__(**params)
        self.summary = SummaryPlot(self.session)
        self.overlay = RunOverlay(self.session)
        self._defaults = {key: w.value for key, w in self._choices().items()}
        for widget in self._choices().values():
            widget.param.watch(lambda e: self._note_view(), "value")

    def _choices(self) -> dict[str, pn.widgets.Widget]:
        s, o = self.summary, self.overlay
        return {"x": s.x, "y": s.y, "kind": s.kind, "bins": s.bins, "array": o.y, "against": o.x, "trains": o.trains}

    def _note_view(self) -> None:
        self.view = {key: w.value for key, w in self._choices().items()}

    def to_link(self) -> dict[str, str]:
        """The choices that differ from what the page opens with."""
        return {key: str(w.value) for key, w in self._choices().items() if w.value != self._defaults.get(key)}

    def from_link(self, query: dict[str, str]) -> list[str]:
        """Show the plots a link names; returns the parts this proposal can't show."""
        problems = []
        with pn.io.hold():
            for key, widget in self._choices().items():
                if key not in query:
                    continue
                text = query[key]
                if isinstance(widget, pn.widgets.IntInput):
                    try:
                        number = int(text)
                    except ValueError:
                        number = None
                    if number is None or not widget.start <= number <= widget.end:
                        problems.append(f"{key}: {text[:40]}")
                    else:
                        widget.value = number
                    continue
                options = widget.options
                names = list(options.values()) if isinstance(options, dict) else list(options)
                if text in names:
                    widget.value = text
                else:
                    problems.append(f"{key}: {text[:40]}")
        return problems

    def __panel__(self) -> pn.viewable.Viewable:
        # <hr>, not pn.layout.Divider: Panel leaves the Divider's stylesheet on its CDN (no internet here)
        return pn.Column(self.summary.layout, pn.pane.HTML("<hr>", sizing_mode="stretch_width"),
                         self.overlay.layout, sizing_mode="stretch_width", name=TITLE)


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
        self.swap = pn.widgets.Button(label="⇄ swap", width=70, align="end", css_classes=["damnit-summary-swap"])
        self.kind = pn.widgets.RadioButtonGroup(options=["Scatter", "Line", "Histogram"], value="Scatter",
                                                align="end", css_classes=["damnit-summary-kind"])
        self.bins = pn.widgets.IntInput(label="Bins", value=30, start=5, end=100_000, step=25, width=90)
        self._follow_request(session.plot_request)
        self.count = safe_text("", color="grey", css_classes=["damnit-summary-count"])
        self.pipe = hv.streams.Pipe(data=self._data())
        self.plot_pane = pn.pane.HoloViews(sizing_mode="stretch_width", min_height=PLOT_HEIGHT + 80,
                                           css_classes=["damnit-summary-plot"], linked_axes=False)
        self.swap.on_click(self._swap)
        for w in (self.x, self.y, self.kind):
            w.param.watch(self._rebuild, "value")
        self.bins.param.watch(lambda e: self._push(), "value")
        session.on_change(self._on_change)
        session.param.watch(lambda e: self._follow_request(e.new), "plot_request", onlychanged=False)
        self._rebuild()
        self.layout = pn.Column(
            pn.pane.Markdown("### Summary of all runs"),
            pn.Row(self.y, pn.pane.HTML("vs.", align="end"), self.x, self.swap, self.kind, self.bins,
                   SendPlot(session=session, plot=lambda: self.plot_pane.object, name_hint="summary")),
            self.count, self.plot_pane, sizing_mode="stretch_width")

    def _follow_request(self, request: dict | None) -> None:
        """Show the axes another page asked for (names this plot can't show are left alone)."""
        if not request:
            return
        names = set(self.x.options.values())
        with pn.io.hold():
            for axis, widget in (("x", self.x), ("y", self.y)):
                if request.get(axis) in names:
                    widget.value = request[axis]
            self.kind.value = "Scatter" if self.kind.value == "Histogram" else self.kind.value

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
        shown = "in the histogram" if self.kind.value == "Histogram" else "plotted"
        self.count.object = f"{len(data)} runs {shown} ({n_total - len(data)} without values)"
        self.pipe.send(data)

    def _swap(self, _=None) -> None:
        x, y = self.x.value, self.y.value
        self.x.value, self.y.value = y, x

    def _on_change(self, change: Any) -> None:
        if change.variables or change.reset or change.loaded:
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
        xdim = hv.Dimension("x", label=plot_text(xlabel), unit=plot_text(xu) or None)
        ydim = hv.Dimension("y", label=plot_text(ylabel), unit=plot_text(yu) or None)

        if kind == "Histogram":
            def element(data: pd.DataFrame) -> hv.Element:
                edges, density = histogram(data["y"].to_numpy() if len(data) else np.array([]), self.bins.value)
                return hv.Histogram((edges, density), kdims=[ydim], vdims=["density"]).opts(
                    responsive=True, height=PLOT_HEIGHT + 80, framewise=True, tools=["hover"],
                    title=plot_title(f"{ylabel}: distribution over runs"))
        else:
            def element(data: pd.DataFrame) -> hv.Element:
                times = {c for c in ("x", "y") if {"x": x, "y": y}[c] == "start_time"}
                if times:  # run start times on a date axis, not as epoch seconds
                    data = data.assign(**{c: pd.to_datetime(data[c], unit="s", utc=True)
                                          .dt.tz_convert(self.tz).dt.tz_localize(None) for c in times})
                points = hv.Points(data, kdims=[xdim, ydim], vdims=["run"]).opts(
                    size=8, tools=["hover", "tap", "box_select", "lasso_select"], responsive=True,
                    height=PLOT_HEIGHT + 80, framewise=True, show_grid=True, nonselection_alpha=0.3,
                    title=plot_title(f"{ylabel} vs. {xlabel}"), active_tools=["box_select"])
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
    """One array variable for each selected run (the newest run when none is): 1-D values as one line
    per run (optionally against another variable), 2-D values as one image per run. Drawn again when
    the selection or a choice changes; the text above says which runs are drawn."""

    MAX_IMAGES = 6

    def __init__(self, session: SessionState):
        self.session = session
        self.source = session.source
        self.doc = pn.state.curdoc
        self.ndims: dict[str, int] = {}
        self.y = pn.widgets.Select(label="Array (Y)", options=[], width=240)
        self.x = pn.widgets.Select(label="Against (X)", options=[INDEX_X], value=INDEX_X, width=220)
        self.trains = pn.widgets.RadioButtonGroup(options=[TRAIN_INDEX, ABSOLUTE_TRAINS], value=TRAIN_INDEX,
                                                  align="end", css_classes=["damnit-overlay-trains"],
                                                  description="Per-train data of different runs: on top of each "
                                                              "other (trains counted from each run's first) or "
                                                              "one after the other (absolute train IDs)")
        self.go = pn.widgets.Button(label="Plot selected runs", color="primary", align="end")
        self.runs_text = safe_text("", color="grey", css_classes=["damnit-overlay-runs"])
        self.messages = safe_text("", color="#a60")
        self.plot_area = pn.Column(sizing_mode="stretch_width", min_height=PLOT_HEIGHT,
                                   css_classes=["damnit-overlay-plot"])
        self._drawing = False
        self._again = False
        self.shown: Any = None  # what is drawn now, as HoloViews (sent to the logbook)
        self.go.on_click(lambda _: self.draw())
        for w in (self.y, self.x, self.trains):
            w.param.watch(lambda _: self.draw(), "value")
        session.param.watch(lambda e: self._on_selection(), "selected_runs")
        session.on_change(self._on_change)
        self._refresh_choices()
        self.draw()
        self.layout = pn.Column(
            pn.pane.Markdown("### Per-run data for selected runs"),
            pn.Row(self.y, pn.pane.HTML("vs.", align="end"), self.x, self.trains, self.go,
                   SendPlot(session=session, plot=lambda: self.shown, name_hint="per_run")),
            self.runs_text, self.messages, self.plot_area, sizing_mode="stretch_width")

    def _runs(self) -> list[int]:
        runs = parse_runs_for_overlay(self.session.selected_runs)
        if not runs and self.source.run_keys():
            runs = [self.source.run_keys()[-1]]
        return runs

    def _on_selection(self) -> None:
        self._refresh_choices()
        self.draw()

    def _on_change(self, change: Any) -> None:
        if not self.session.selected_runs and (change.new_runs or change.reset):
            self._on_selection()  # showing the newest run: follow it
        elif set(self._runs()) & set(change.changed):
            self.draw()  # a run shown was (re)processed

    def _refresh_choices(self) -> None:
        runs = self._runs()
        self.ndims = array_variables(self.source.db_dir, self.source.proposal, runs[-3:])

        def label(n: str) -> str:
            title = self.source.variable(n).display_title
            return f"{title} (image)" if self.ndims[n] == 2 else title

        options = {label(n): n for n in self.ndims}  # a <select>: labels are text
        lines = {label(n): n for n, d in self.ndims.items() if d == 1}
        current_y, current_x = self.y.value, self.x.value
        self.y.options = options
        self.x.options = {INDEX_X: INDEX_X, **lines}
        if current_y in options.values():
            self.y.value = current_y
        elif options:
            self.y.value = next(iter(options.values()))
        if current_x in self.x.options.values():
            self.x.value = current_x

    def draw(self) -> None:
        """(Re)draw for the current runs and choices, in a worker thread; one drawing at a time."""
        if self._drawing:
            self._again = True
            return
        name, xname, runs = self.y.value, self.x.value, self._runs()
        image = self.ndims.get(name) == 2
        self.x.disabled = image
        self.trains.disabled = image or xname != INDEX_X
        if not name:
            self.plot_area.objects = []
            self.runs_text.object = ""
            self.messages.object = ("No runs yet." if not runs else
                                    f"No array variables in run{'s' if len(runs) > 1 else ''} "
                                    f"{', '.join(map(str, runs))}.")
            return
        self._drawing = True
        self.go.loading = True
        relative = self.trains.value == TRAIN_INDEX

        def work() -> tuple[list[Any], list[str]]:
            if image:
                return self._load_images(runs[-self.MAX_IMAGES:], name)
            return self._load(runs, name, xname, relative)

        def apply(result: tuple[list[Any], list[str]] | None, error: BaseException | None) -> None:
            self._drawing = False
            self.go.loading = False
            if error is not None:
                result = ([], [f"Cannot plot {name}: {type(error).__name__}: {error}"])
            items, problems = result
            self._show(name, runs, items, problems, image)
            if self._again:
                self._again = False
                self.draw()

        in_background(work, apply)

    def _show(self, name: str, runs: list[int], items: list[Any], problems: list[str], image: bool) -> None:
        title = self.source.variable(name).display_title
        shown = [r for r, _ in items]
        self.messages.object = "\n".join(problems)
        with set_curdoc(self.doc):
            self.shown = None
            if not items:
                self.plot_area.objects = []
            elif image:
                elements = [getattr(p, "object", None) for _, p in items]
                self.shown = hv.Layout([e for e in elements if isinstance(e, hv.core.Dimensioned)]) or None
                # A grid of page-wide columns: plots of a fixed size are not laid out inside the
                # shell's stretching tabs (Bokeh leaves their frame empty), responsive ones are.
                self.plot_area.objects = [pn.GridBox(*[element_pane for _, element_pane in items],
                                                     ncols=min(len(items), 3), sizing_mode="stretch_width")]
            else:
                overlay = hv.Overlay([curve for _, curve in items]).opts(
                    responsive=True, height=PLOT_HEIGHT + 60, legend_position="right",
                    title=plot_title(f"{title} per run"))
                self.plot_area.objects = [pn.pane.HoloViews(overlay, sizing_mode="stretch_width", linked_axes=False)]
                self.shown = overlay
        listed = ", ".join(map(str, shown))
        if not shown:
            self.runs_text.object = f"Nothing to draw for run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))}"
        elif self.session.selected_runs:
            skipped = len(parse_runs_for_overlay(self.session.selected_runs)) - len(runs)
            self.runs_text.object = f"Runs: {listed}" + (f" (the first {len(runs)} selected)" if skipped > 0 else "") \
                + (f"; images of the last {len(shown)}" if image and len(shown) < len(runs) else "")
        else:
            self.runs_text.object = f"No runs selected in the table; showing the newest run ({listed})"

    def _load(self, runs: list[int], name: str, xname: str, relative: bool) -> tuple[list[Any], list[str]]:
        curves, problems = [], []
        ylabel, yunits = self.source.variable(name).display_title, self.source.units(name)
        xlabel = self.source.variable(xname).display_title if xname != INDEX_X else None
        for run in runs:
            try:
                yval = read_value(self.source.db_dir, run, name)
                xval = read_value(self.source.db_dir, run, xname) if xname != INDEX_X else None
                x, y, auto_label = aligned_arrays(yval, xval, relative=relative)
            except KeyError:
                problems.append(f"Run {run}: no {name!r}" + (f" or {xname!r}" if xname != INDEX_X else ""))
                continue
            except (ValueError, OSError) as e:
                problems.append(f"Run {run}: {e}")
                continue
            x, y = downsample_1d(x, y)
            xdim = hv.Dimension("x", label=plot_text(xlabel or auto_label or "index"))
            opts: dict[str, Any] = {"tools": ["hover"]}
            if x.dtype.kind in "iu":
                opts["xformatter"] = "%d"  # absolute train IDs as integers, not 1.0002e+9
            curves.append((run, hv.Curve((x, y), kdims=[xdim], vdims=[hv.Dimension("y", label=plot_text(ylabel), unit=plot_text(yunits) or None)],
                                         label=f"run {run}").opts(**opts)))
        return curves, problems

    def _load_images(self, runs: list[int], name: str) -> tuple[list[Any], list[str]]:
        """One image per run with square pixels, each in a pane of its own (same colour map)."""
        panes, problems = [], []
        title = self.source.variable(name).display_title
        for run in runs:
            try:
                value = read_value(self.source.db_dir, run, name)
            except KeyError:
                problems.append(f"Run {run}: no {name!r}")
                continue
            except (ValueError, OSError) as e:
                problems.append(f"Run {run}: {e}")
                continue
            with set_curdoc(self.doc):  # this session's theme
                view = plot_value(value, title=f"{title}: run {run}", style=IMAGE_STYLE)
            panes.append((run, pn.Column(view, css_classes=["damnit-overlay-image"], sizing_mode="stretch_width")))
        return panes, problems


IMAGE_STYLE = PlotStyle(height=PLOT_HEIGHT + 100, controls=False)  # one image per run, side by side


PAGE = PlotsPage
