"""Big-screen mode for a control-room display: the newest run in large type, its plots rotating.

Open ``/<app>?mode=bigscreen`` for the wall display: this page alone, without the tabs and their edit
controls (``?page=bigscreen`` shows it as a tab of the normal dashboard). Optional URL parameters:
``vars=name1,name2`` key variables to show (default: the first numbers of the newest run),
``plots=name1,name2`` plots to rotate through (default: every plottable variable of the newest run),
``interval=15`` seconds per plot. It follows new runs by itself, has no edit controls, and reloads
itself when the server comes back after a restart (a heartbeat stops → poll until it answers → reload).
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from app.config import get_config, zone_label
from app.display.formatting import format_time, format_value
from app.display.plots import plot_value
from app.display.run_contents import load_for_display, run_file, scan_run_file
from app.display.text import safe_text
from app.live.session import SessionState, in_background
from app.live.source import ProposalSource

TITLE = "Big screen"
SLUG = "bigscreen"
HEARTBEAT_MS = 3000
DEFAULT_INTERVAL_S = 12
MAX_KEY_VARS = 8

BIG = {  # large type, readable across a control room
    "run": {"font-size": "64px", "font-weight": "bold"},
    "time": {"font-size": "28px", "color": "#555", "margin-top": "30px"},
    "name": {"font-size": "22px", "color": "#555"},
    "value": {"font-size": "44px", "font-weight": "bold"},
    "plot_title": {"font-size": "28px", "font-weight": "bold"},
}


class ServerWatchdog(pn.custom.JSComponent):
    """Reloads the page once the server answers again after the heartbeat stopped (server restart)."""

    heartbeat = param.Integer(default=0)
    stale_after_ms = param.Integer(default=10_000)

    _esm = """
    export function render({ model, el }) {
      let last = Date.now()
      let probing = false
      model.on('heartbeat', () => { last = Date.now() })
      const probe = async () => {
        try {
          await fetch(window.location.href, { method: 'HEAD', cache: 'no-store' })
          window.location.reload()
        } catch (e) {
          setTimeout(probe, 3000)
        }
      }
      const timer = setInterval(() => {
        if (!probing && Date.now() - last > model.stale_after_ms) {
          probing = true
          el.textContent = 'Connection lost: reconnecting…'
          probe()
        }
      }, 1000)
      model.on('remove', () => clearInterval(timer))
      el.setAttribute('data-testid', 'bigscreen-watchdog')
    }
    """


def _arg(name: str) -> str:
    args = pn.state.session_args or {}
    values = args.get(name) or [b""]
    v = values[0]
    return v.decode() if isinstance(v, bytes) else str(v)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def key_values(source: ProposalSource, run: int, wanted: list[str]) -> list[tuple[str, str]]:
    """(title, formatted value) of the key variables of one run: the wanted names, else the first numbers."""
    if not source.has_run(run):
        return []
    cells = {n: source.cell(run, n) for n in (wanted or source.column_names())}
    names = wanted or [n for n, c in cells.items() if c is not None and isinstance(c.value, (int, float))
                       and not isinstance(c.value, bool)][:MAX_KEY_VARS]
    out = []
    for n in names:
        cell = cells.get(n)
        text = "–" if cell is None or cell.value is None else format_value(cell.value, cell.units)
        out.append((source.variable(n).display_title, text))
    return out


def plot_names(source: Any, run: int, wanted: list[str]) -> list[str]:
    if source.proposal is None:
        return []
    stored = scan_run_file(run_file(source.db_dir, source.proposal, run))
    if wanted:
        return [n for n in wanted if n in stored and stored[n].error is None]
    names = [v.name for v in stored.values() if v.is_plottable]
    return sorted(names, key=lambda n: source.variable(n).display_title.casefold())


class BigScreen(pn.viewable.Viewer):
    """The newest run's key values and plots for a wall display (see the module docstring)."""

    session = param.ClassSelector(class_=SessionState)

    def __panel__(self) -> pn.viewable.Viewable:
        return view(self.session)


def view(session: SessionState) -> pn.viewable.Viewable:
    source = session.source
    tz = get_config().tz
    wanted_vars = _names(_arg("vars"))
    wanted_plots = _names(_arg("plots"))
    try:
        interval = max(3, int(_arg("interval") or DEFAULT_INTERVAL_S))
    except ValueError:
        interval = DEFAULT_INTERVAL_S

    run_text = safe_text("", **BIG["run"])
    time_text = safe_text("", **BIG["time"])
    values_box = pn.FlexBox(sizing_mode="stretch_width")
    plot_title = safe_text("", **BIG["plot_title"])
    plot_box = pn.Column(sizing_mode="stretch_width", min_height=500)
    watchdog = ServerWatchdog(height=20, sizing_mode="stretch_width")
    state = {"run": None, "plots": [], "index": 0, "loading": False}

    def newest() -> int | None:
        keys = source.run_keys()
        return keys[-1] if keys else None

    def draw_header() -> None:
        run = state["run"]
        if run is None:
            run_text.object, time_text.object, values_box.objects = "Waiting for the first run…", "", []
            return
        run_text.object = f"Run {run}"
        start = source.start_time(run)
        time_text.object = "" if start is None else f"{format_time(start, tz)} ({zone_label(tz)})"
        values_box.objects = [
            pn.Column(safe_text(title, **BIG["name"]), safe_text(value, **BIG["value"]),
                      margin=(10, 30), css_classes=["dmn-big-var"])
            for title, value in key_values(source, run, wanted_vars)]

    def show_plot() -> None:
        run, plots = state["run"], state["plots"]
        if run is None or not plots:
            plot_title.object, plot_box.objects = "", []
            return
        if state["loading"]:
            return
        name = plots[state["index"] % len(plots)]
        where = f"   ({state['index'] % len(plots) + 1}/{len(plots)})" if len(plots) > 1 else ""
        state["loading"] = True

        def work() -> Any:
            loaded = load_for_display(source.db_dir, run, name)
            value = loaded.value
            if type(value).__name__ == "Dataset" and value.data_vars:  # no picker on a wall screen
                value = value[next(iter(value.data_vars))]
            return plot_value(value, title=source.variable(name).display_title, units=loaded.units,
                              objtype=loaded.objtype)

        def apply(plot: Any, error: BaseException | None) -> None:
            state["loading"] = False
            if state["run"] != run:
                return  # a newer run arrived meanwhile
            if error is not None:
                plot = safe_text(f"Cannot show {name}: {type(error).__name__}: {error}")
            plot_title.object = f"{source.variable(name).display_title}{where}"
            plot_box.objects = [plot]

        in_background(work, apply)

    def follow(force: bool = False) -> None:
        run = newest()
        if run != state["run"] or force:
            state["run"] = run
            state["index"] = 0
            state["plots"] = plot_names(source, run, wanted_plots) if run is not None else []
            draw_header()
            show_plot()

    def on_change(change: Any) -> None:
        if change.new_runs or change.reset:
            follow()
        elif state["run"] in change.changed:
            before = list(state["plots"])
            state["plots"] = plot_names(source, state["run"], wanted_plots)
            draw_header()
            if state["plots"] != before:
                show_plot()

    def rotate() -> None:
        if len(state["plots"]) > 1:
            state["index"] += 1
            show_plot()

    session.on_change(on_change)
    follow(force=True)
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        beat = pn.state.add_periodic_callback(lambda: setattr(watchdog, "heartbeat", watchdog.heartbeat + 1),
                                              HEARTBEAT_MS)
        turn = pn.state.add_periodic_callback(rotate, interval * 1000)
        pn.state.on_session_destroyed(lambda ctx: (beat.stop(), turn.stop()))
    return pn.Column(pn.Row(run_text, pn.Spacer(width=40), time_text), values_box, plot_title, plot_box,
                     watchdog, sizing_mode="stretch_width", name=TITLE, css_classes=["dmn-bigscreen"])


PAGE = BigScreen
