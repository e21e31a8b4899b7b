"""Big-screen mode for a control-room display: the newest run in large type, its plots rotating.

Open ``/?mode=bigscreen`` (or ``/main?mode=bigscreen``, under ``--prefix`` too) for the wall display:
this page alone, filling the window without scrolling, without the tabs and their edit controls
(``?page=bigscreen`` shows it as a tab of the normal dashboard). The URL says what a screen shows, so a
bookmark recreates it and several screens can show different things:

- ``vars=name1,name2``: key variables (default: the first numbers of the newest run);
- ``plots=name1,name2``: plots to rotate through (default: every plottable variable of the newest run);
- ``interval=15``: seconds per plot (at least 3);
- ``theme=light``: the light theme (default dark: control rooms are dim);
- ``old=60``: minutes after which the age of the newest data is shown as old (default 60).

Type scales with the screen (CSS viewport units; plot ticks from the window height the browser
reports), so a 3840x2160 TV shows the same layout as a 1920x1080 one. The connection state and the age
of the newest data are always in view; when the server stops answering the screen says so in red and
reloads itself once the server is back (a stalled screen is noticed).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import panel as pn
import param
from panel.io.state import set_curdoc

from app.config import get_config, zone_label
from app.display.formatting import format_summary, format_time
from app.display.plots import PlotStyle, plot_value
from app.display.run_contents import StoredVariable, holds_booleans, load_for_display, run_file, scan_run_file
from app.display.text import safe_text
from app.live.session import SessionState, every, in_background
from app.live.source import ProposalSource

TITLE = "Big screen"
SLUG = "bigscreen"
HEARTBEAT_MS = 3000
DEFAULT_INTERVAL_S = 12
MAX_KEY_VARS = 8
TICK_FRACTION = 0.02  # plot tick labels: 2 % of the window height (an axis readable from metres away)


@dataclass(frozen=True)
class ScreenSettings:
    """What one screen shows, from its URL (see the module docstring)."""

    variables: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    interval_s: int = DEFAULT_INTERVAL_S
    old_after_min: float = 60

    @classmethod
    def from_args(cls, args: dict[str, list] | None) -> ScreenSettings:
        def arg(name: str) -> str:
            v = ((args or {}).get(name) or [b""])[0]
            return v.decode(errors="replace") if isinstance(v, bytes) else str(v)

        def names(text: str) -> tuple[str, ...]:
            return tuple(n.strip() for n in text.split(",") if n.strip())

        try:
            interval = max(3, int(arg("interval") or DEFAULT_INTERVAL_S))
        except ValueError:
            interval = DEFAULT_INTERVAL_S
        try:
            old = float(arg("old") or 60)
            old = old if math.isfinite(old) and old > 0 else 60
        except ValueError:
            old = 60
        return cls(names(arg("vars")), names(arg("plots")), interval, old)


def key_values(source: ProposalSource, run: int, wanted: tuple[str, ...] | list[str],
               stored: dict[str, StoredVariable] | None = None) -> list[tuple[str, str]]:
    """(title, formatted value) of the key variables of one run: the wanted names, else the first numbers.
    ``stored`` (the run file's metadata) tells booleans from numbers."""
    if not source.has_run(run):
        return []
    cells = {n: source.cell(run, n) for n in (wanted or source.column_names())}
    names = list(wanted) or [n for n, c in cells.items() if c is not None and isinstance(c.value, (int, float))
                             and not isinstance(c.value, bool)][:MAX_KEY_VARS]
    out = []
    for n in names:
        cell = cells.get(n)
        info = source.variable(n)
        if cell is None or cell.value is None:
            text = "–"
        else:
            text = format_summary(cell.value, cell.units, boolean=holds_booleans(info.type, (stored or {}).get(n)))
        out.append((info.display_title, text))
    return out


def newest_data_time(source: ProposalSource, run: int) -> float | None:
    """When the newest value of ``run`` was written (epoch s; its start time if none is stored yet)."""
    stamps = [c.timestamp for n in source.column_names() if (c := source.cell(run, n)) is not None
              and c.timestamp is not None and math.isfinite(c.timestamp)]
    return max(stamps) if stamps else source.start_time(run)


def stored_variables(source: ProposalSource, run: int) -> dict[str, StoredVariable]:
    """The run file's metadata (no values read)."""
    if source.proposal is None:
        return {}
    return scan_run_file(run_file(source.db_dir, source.proposal, run))


def plot_names(source: Any, run: int, wanted: tuple[str, ...] | list[str],
               stored: dict[str, StoredVariable] | None = None) -> list[str]:
    """The plots to rotate through: the wanted ones this run has, else every plottable variable."""
    stored = stored_variables(source, run) if stored is None else stored
    if wanted:
        return [n for n in wanted if n in stored and stored[n].error is None]
    names = [v.name for v in stored.values() if v.is_plottable]
    return sorted(names, key=lambda n: source.variable(n).display_title.casefold())


class WallLayout(pn.custom.JSComponent):
    """The screen's grid: run, start time and status across the top, key values on the left, the
    plot in the rest. In ``fill`` mode exactly the browser window (no scrolling); reports the window's
    size, from which plot type is scaled."""

    run = pn.custom.Child()
    started = pn.custom.Child()
    status = pn.custom.Child()
    values = pn.custom.Child()
    plot_title = pn.custom.Child()
    plot = pn.custom.Child()
    fill = param.Boolean(default=True)
    viewport_width = param.Integer(default=0)
    viewport_height = param.Integer(default=0)

    _esm = """
    function box(cls, ...children) {
      const d = document.createElement('div')
      d.className = cls
      for (const c of children) if (c) d.append(c)
      return d
    }
    export function render({ model, el }) {
      const wall = box('dmn-wall ' + (model.fill ? 'dmn-wall-fill' : 'dmn-wall-tab'),
        box('dmn-wall-head', box('dmn-wall-run', model.get_child('run')),
            box('dmn-wall-started', model.get_child('started')),
            box('dmn-wall-status', model.get_child('status'))),
        box('dmn-wall-values', model.get_child('values')),
        box('dmn-wall-title', model.get_child('plot_title')),
        box('dmn-wall-plot', model.get_child('plot')))
      wall.setAttribute('data-testid', 'bigscreen')
      let timer = null
      const report = () => {
        model.viewport_width = window.innerWidth
        model.viewport_height = window.innerHeight
      }
      const later = () => { clearTimeout(timer); timer = setTimeout(report, 300) }
      window.addEventListener('resize', later)
      model.on('remove', () => window.removeEventListener('resize', later))
      report()
      return wall
    }
    """

    _stylesheets = ["""
    :host { width: 100%; }
    .dmn-wall { display: grid; box-sizing: border-box; overflow: hidden;
                grid-template-columns: minmax(0, 27fr) minmax(0, 73fr);
                grid-template-rows: auto auto minmax(0, 1fr);
                grid-template-areas: "head head" "values title" "values plot";
                column-gap: 2.5vw; row-gap: 1vh; padding: 1.5vh 2vw 2vh 2vw;
                background: var(--panel-background-color); color: var(--panel-on-background-color); }
    .dmn-wall-fill { width: 100vw; height: 100vh; }
    .dmn-wall-tab { width: 100%; height: calc(100vh - 110px); min-height: 500px; }
    .dmn-wall-head { grid-area: head; display: flex; align-items: center; gap: 3vw; min-width: 0;
                     border-bottom: 0.3vh solid var(--panel-border-color); padding-bottom: 1vh; }
    .dmn-wall-status { margin-left: auto; }
    .dmn-wall-values { grid-area: values; min-height: 0; overflow: hidden; display: flex; flex-direction: column;
                       justify-content: flex-start; }
    .dmn-wall-title { grid-area: title; min-width: 0; }
    .dmn-wall-plot { grid-area: plot; min-height: 0; min-width: 0; position: relative; }
    .dmn-wall-plot > * { position: absolute; inset: 0; width: 100%; height: 100%; }
    """]


class WallStatus(pn.custom.JSComponent):
    """Connection state and age of the newest data, in view from across the room. The browser decides
    "disconnected" itself (no heartbeat for ``stale_after_ms``): then a red frame surrounds the screen,
    and the page reloads once the server answers again (after a restart)."""

    connection = param.String(default="starting")
    heartbeat = param.Integer(default=0)
    server_time = param.Number(default=0.0, doc="The server's clock at the last heartbeat (epoch s)")
    newest_data = param.Number(default=0.0, doc="When the newest value was written (epoch s; 0 = none)")
    old_after_s = param.Number(default=3600.0)
    stale_after_ms = param.Integer(default=10_000)

    _esm = """
    function ago(s) {
      s = Math.max(0, s)
      if (s < 60) return Math.round(s) + ' s'
      if (s < 3600) return Math.floor(s / 60) + ' min'
      if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min'
      return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h'
    }
    const LABELS = { live: 'LIVE', polling: 'POLLING', starting: 'STARTING', disconnected: 'NO CONNECTION' }
    export function render({ model, el }) {
      const box = document.createElement('div')
      box.className = 'dmn-ws'
      box.setAttribute('data-testid', 'bigscreen-status')
      const pill = document.createElement('span')
      const age = document.createElement('span')
      age.className = 'dmn-ws-age'
      const frame = document.createElement('div')
      frame.className = 'dmn-ws-frame'
      box.append(pill, age, frame)
      el.append(box)
      let lastBeat = Date.now()
      let probing = false
      const probe = async () => {
        try {
          await fetch(window.location.href, { method: 'HEAD', cache: 'no-store' })
          window.location.reload()
        } catch (e) {
          setTimeout(probe, 3000)
        }
      }
      function draw() {
        const since = (Date.now() - lastBeat) / 1000
        const stale = since * 1000 > model.stale_after_ms
        const state = stale ? 'disconnected' : model.connection
        pill.textContent = '\\u25CF ' + (LABELS[state] || state.toUpperCase())
        pill.className = 'dmn-ws-pill dmn-ws-' + state
        pill.title = stale ? 'No contact with the dashboard server' :
          (state === 'live' ? 'Updates arrive through Kafka' : 'Updates by polling the database')
        box.classList.toggle('dmn-ws-stalled', stale)
        if (stale) {
          age.textContent = 'no update for ' + ago(since)
          if (!probing) { probing = true; probe() }
        } else if (model.newest_data > 0) {
          const a = model.server_time - model.newest_data + since
          age.textContent = 'newest data ' + ago(a) + ' ago'
          age.classList.toggle('dmn-ws-old', a > model.old_after_s)
        } else {
          age.textContent = 'no data yet'
        }
      }
      model.on('heartbeat', () => { lastBeat = Date.now(); draw() })
      model.on(['connection', 'newest_data'], draw)
      const timer = setInterval(draw, 1000)
      model.on('remove', () => clearInterval(timer))
      draw()
    }
    """

    _stylesheets = ["""
    .dmn-ws { display: flex; align-items: center; gap: 1.5vw; font-family: sans-serif; font-size: 3vh;
              white-space: nowrap; }
    .dmn-ws-pill { padding: 0.3vh 1.2vw; border-radius: 3vh; font-weight: bold; color: white; }
    .dmn-ws-live { background: #2e7d32; }
    .dmn-ws-polling { background: #f9a825; color: black; }
    .dmn-ws-starting { background: #777; }
    .dmn-ws-disconnected { background: #c62828; }
    .dmn-ws-age { opacity: 0.85; }
    .dmn-ws-old { color: #f9a825; opacity: 1; font-weight: bold; }
    .dmn-ws-stalled .dmn-ws-age { color: #ef5350; opacity: 1; font-weight: bold; }
    .dmn-ws-frame { display: none; }
    .dmn-ws-stalled .dmn-ws-frame { display: block; position: fixed; inset: 0; pointer-events: none;
                                   border: 1.2vh solid #c62828; z-index: 1000; }
    """]


def _text(text: str, classes: list[str], **styles: str) -> pn.viewable.Viewable:
    """Escaped text without the default margins (the wall's layout is in viewport units)."""
    pane = safe_text(text, classes, **styles)
    pane.margin = 0
    return pane


VALUES_WIDTH_VW = 25.0  # the key values' column, in % of the window's width (grid: 27 of 100 parts)
BOLD_CHAR_EM = 0.6  # average width of a bold character (digits are 0.56 em in Liberation/Arial)


def _value_sizes(n: int, texts: list[str], scale: float = 1.0) -> tuple[str, list[str]]:
    """Font sizes of the key values: the names', and each value's. As large as ``n`` values allow in the
    left column's height (about 82 % of the window's; a value takes 1.75 times its size with its name
    and a 1 vh gap), and each value no larger than fits the column's width on one line."""
    value_vh = min(6.5, max(2.6, (82.0 / max(n, 1) - 1.2) / 1.75)) * scale
    sizes = [f"min({value_vh:.2f}vh, {VALUES_WIDTH_VW / (max(len(t), 1) * BOLD_CHAR_EM):.2f}vw)" for t in texts]
    return f"{value_vh * 0.5:.2f}vh", sizes


class BigScreen(pn.viewable.Viewer):
    """The newest run's key values and plots for a wall display (see the module docstring).

    The header (run number, start time, key values, age of the newest data) is derived from ``run``
    and ``refreshed``; the plot is read off the event loop and rotates on a timer."""

    session = param.ClassSelector(class_=SessionState)
    fill = param.Boolean(default=False, doc="Fill the browser window (mode=bigscreen), else a tab's box")
    run = param.Integer(default=None, allow_None=True, doc="The run shown: the newest")
    refreshed = param.Event(doc="The run shown was reprocessed: its values are shown again")

    def __init__(self, **params):
        super().__init__(**params)
        source = self.session.source
        self.settings = ScreenSettings.from_args(pn.state.session_args)
        self._doc = pn.state.curdoc
        self._in_server = self._doc is not None and self._doc.session_context is not None
        self._tz = get_config().tz
        self.stored: dict[str, StoredVariable] = {}  # the shown run file's metadata
        self.plots: list[str] = []  # the names rotating through
        self.index = 0  # which of them is in view
        self._loading = False
        self._drawn_font: int | None = None
        self._take(self._newest())

        scale = self._scale = 1.0 if self.fill else 0.85  # as a tab, under the dashboard's header: smaller
        run_text = _text("", ["dmn-wall-runnumber"], **{"font-size": f"{9 * scale:.2f}vh", "font-weight": "bold",
                                                          "line-height": "1.05", "white-space": "nowrap"})
        run_text.object = self._run_label
        time_text = _text("", ["dmn-wall-time"], **{"font-size": f"{3 * scale:.2f}vh", "opacity": "0.85"})
        time_text.object = self._started
        values_box = pn.Column(objects=self._values, sizing_mode="stretch_width", margin=0)
        self.plot_title = _text("", ["dmn-wall-plottitle"], **{
            "font-size": f"{3.4 * scale:.2f}vh", "font-weight": "bold", "white-space": "nowrap",
            "overflow": "hidden"})
        self.plot_box = pn.Column(sizing_mode="stretch_both", margin=0, css_classes=["dmn-wall-plotbox"])
        self.status = WallStatus(connection=source.connection, server_time=time.time(),
                                 old_after_s=self.settings.old_after_min * 60, newest_data=self._newest_data)
        self.layout = WallLayout(run=run_text, started=time_text, status=self.status, values=values_box,
                                 plot_title=self.plot_title, plot=self.plot_box, fill=self.fill, name=TITLE,
                                 css_classes=["dmn-bigscreen"],
                                 sizing_mode="stretch_both" if self.fill else "stretch_width")
        # A new size is work to do (the plot drawn again with larger type), not a derived view.
        self.layout.param.watch(self._on_viewport, "viewport_height")
        self.session.on_change(self._on_change)
        if not self._in_server:
            self._show_plot()  # in a server: once the browser said how big it is
        every(HEARTBEAT_MS, self._beat)
        every(self.settings.interval_s * 1000, self._rotate)

    def __panel__(self) -> pn.viewable.Viewable:
        return self.layout

    # -- derived views ------------------------------------------------------------------------------
    @param.depends("run")
    def _run_label(self) -> str:
        source, run = self.session.source, self.run
        if run is None:
            return "Waiting for the first run…"
        return f"Run {source.run_of(run)[1]}" if source.has_run(run) else f"Run {run}"

    @param.depends("run")
    def _started(self) -> str:
        start = None if self.run is None else self.session.source.start_time(self.run)
        return "" if start is None else f"started {format_time(start, self._tz)} {zone_label(self._tz)}"

    @param.depends("run", "refreshed")
    def _values(self) -> list[pn.viewable.Viewable]:
        if self.run is None:
            return []
        pairs = key_values(self.session.source, self.run, self.settings.variables, self.stored)
        name_size, value_sizes = _value_sizes(len(pairs), [v for _, v in pairs], self._scale)
        return [
            pn.Column(_text(title, ["dmn-wall-name"], **{"font-size": name_size, "opacity": "0.8",
                                                         "line-height": "1.2", "white-space": "nowrap",
                                                         "overflow": "hidden", "text-overflow": "ellipsis"}),
                      _text(value, ["dmn-wall-value"], **{"font-size": size, "font-weight": "bold",
                                                          "line-height": "1.15", "overflow-wrap": "anywhere"}),
                      margin=0, styles={"margin-bottom": "1vh"}, sizing_mode="stretch_width",
                      css_classes=["dmn-big-var"])
            for (title, value), size in zip(pairs, value_sizes)]

    @param.depends("run", "refreshed")
    def _newest_data(self) -> float:
        return 0.0 if self.run is None else newest_data_time(self.session.source, self.run) or 0.0

    # -- following the newest run -------------------------------------------------------------------
    def _newest(self) -> int | None:
        keys = self.session.source.run_keys()
        return keys[-1] if keys else None

    def _take(self, run: int | None) -> None:
        """Show ``run`` from its first plot (its metadata read before the views that use it)."""
        source = self.session.source
        self.index = 0
        self.stored = stored_variables(source, run) if run is not None else {}
        self.plots = plot_names(source, run, self.settings.plots, self.stored) if run is not None else []
        self.run = run

    def _on_change(self, change: Any) -> None:
        source = self.session.source
        if change.connection:
            self.status.connection = source.connection
        if change.new_runs or change.reset:
            run = self._newest()
            if run != self.run:
                self._take(run)
                if self.layout.viewport_height or not self._in_server:
                    self._show_plot()
        elif self.run in change.changed:
            before = list(self.plots)
            self.stored = stored_variables(source, self.run)
            self.plots = plot_names(source, self.run, self.settings.plots, self.stored)
            self.param.trigger("refreshed")
            if self.plots != before:
                self._show_plot()

    # -- the plot -----------------------------------------------------------------------------------
    def _font_px(self) -> int:
        return max(12, round(TICK_FRACTION * (self.layout.viewport_height or 1080)))

    def _show_plot(self) -> None:
        source, run, plots = self.session.source, self.run, self.plots
        if run is None or not plots:
            self.plot_title.object, self.plot_box.objects = "" if run is None else "No plots for this run", []
            return
        if self._loading:
            return
        name = plots[self.index % len(plots)]
        where = f"   ({self.index % len(plots) + 1}/{len(plots)})" if len(plots) > 1 else ""
        self._loading = True
        style = PlotStyle(height=None, font_px=self._font_px(), controls=False, titles=False)
        doc = self._doc

        def work() -> Any:
            loaded = load_for_display(source.db_dir, run, name)
            value = loaded.value
            if type(value).__name__ == "Dataset" and value.data_vars:  # no picker on a wall screen
                value = value[next(iter(value.data_vars))]
            with set_curdoc(doc):  # this session's theme for the plot
                return plot_value(value, title=source.variable(name).display_title, units=loaded.units,
                                  objtype=loaded.objtype, style=style)

        def apply(plot: Any, error: BaseException | None) -> None:
            self._loading = False
            if self.run != run:
                return  # a newer run arrived meanwhile
            if error is not None:
                plot = safe_text(f"Cannot show {name}: {type(error).__name__}: {error}", **{"font-size": "3vh"})
            self.plot_title.object = f"{source.variable(name).display_title}{where}"
            self.plot_box.objects = [plot]
            self._drawn_font = style.font_px

        in_background(work, apply)

    def _rotate(self) -> None:
        if len(self.plots) > 1:
            self.index += 1
            self._show_plot()

    def _on_viewport(self, _event: Any) -> None:
        drawn = self._drawn_font
        if drawn is None or abs(self._font_px() - drawn) > 0.1 * drawn:
            self._show_plot()  # first size known, or the window changed enough to rescale the plot's type

    def _beat(self) -> None:
        self.status.param.update(server_time=time.time(), connection=self.session.source.connection,
                                 heartbeat=self.status.heartbeat + 1)


PAGE = BigScreen
