"""The run table page: one row per run, one column per variable, live.

The browser holds one page of rows (remote pagination): filters and sorting run here on the live
table's arrays (``rows.py``), the page's cells are rendered by the proposal's ``TableModel`` (cached,
escaped HTML), and live changes go out as cell patches of the visible page, or a one-page refresh
when the rows on it moved (the update ladder: patch cells → refresh the page → rebuild the columns).

What the user arranges is state of the page, in params other parts can read and set: sorters,
filters, column order, hidden columns, widths, flat or grouped headers, the processing marks. The
arrangement is remembered per user (``layouts.py``). Right-click menus and everything else the browser
side does arrive through ``TableBridge`` messages (``_on_bridge``); writes go through ``app.actions``,
which check the session's rights again.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from functools import partial

import numpy as np
import panel as pn
import param

from app.actions import edits
from app.actions.processing_jobs import format_runs
from app.config import get_config
from app.display import theme
from app.display.formatting import format_editable
from app.display.text import escape, safe_options, safe_text
from app.live.records import Change
from app.live.session import SessionState
from app.pages.logbook import SendTable
from app.pages.run_panel import RunPanel
from app.pages.run_table import cells, export
from app.pages.run_table.filter_panel import FilterPanel
from app.pages.run_table.layouts import TableLayout, layout_store, table_key
from app.pages.run_table.menus import TableMenus
from app.pages.run_table.model import FIXED_COLUMNS, TableModel, get_table_model, page_size_for
from app.pages.run_table.rows import RowFilter, sort_rows
from app.pages.run_table.tabulator import (
    HEADER_MENU,
    ROW_MENU,
    CellPatcher,
    KeyNavigator,
    RunTabulator,
    SplitHandle,
    TableBridge,
    skeleton,
)
from backend.storage.user_variables import value_types_by_name

log = logging.getLogger(__name__)
LATENCY_LOG = logging.getLogger("app.latency")  # DEBUG: message → patch timings per session

TITLE = "Run table"
SLUG = "table"
# The run panel sits beside the table; on a narrow window it goes below it, full width.
SPLIT_CSS = """
:host { flex-wrap: nowrap; }
@media (max-width: 1100px) {
  :host { flex-wrap: wrap !important; }
  .dmn-table-side { flex: 1 1 100% !important; }
  .dmn-panel-side { flex: 1 1 100% !important; width: 100% !important; }
  .dmn-handle-side { display: none !important; }
}
"""
NEWEST_FIRST = [{"field": "run", "dir": "desc"}]  # page 1 is always a full page of the newest runs
FIXED_WIDTHS = {"run": 80, "start_time": 150, "comment": 220}
STORAGE_PREFIX = "damnit-web/table-layout/"

TABLE_CSS = cells.CSS + theme.TABLE_CSS + """
.tabulator-cell { padding: 2px 4px !important; }
.tabulator .tabulator-header .tabulator-col .tabulator-col-title { white-space: normal; }
.tabulator-menu .tabulator-menu-item { padding: 4px 12px; }
"""
HIDE_PROCESSING_CSS = ".dmn-proc-mark { display: none; }"
# The filtered column's header: a small funnel after its title (one rule per filtered column).
FILTER_MARK_CSS = """.tabulator-col[tabulator-field="{field}"] .tabulator-col-title::after {{
  content: ""; display: inline-block; width: 10px; height: 10px; margin-left: 4px; vertical-align: -1px;
  background: #1565c0; clip-path: polygon(0 0, 100% 0, 62% 50%, 62% 100%, 38% 85%, 38% 50%);
}}"""


def css_string(text: str) -> str:
    """``text`` for a CSS string in double quotes: every character but letters, digits and ``_-.``
    as a hex escape, so no name can end the string or the rule."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else f"\\{ord(c):x} " for c in text)


class RunTablePage(TableMenus, pn.viewable.Viewer):
    """One session's run table and its controls."""

    session = param.ClassSelector(class_=SessionState)
    filters = param.List(default=[], item_type=RowFilter, doc="Row filters in the order they were added")
    sorters = param.List(default=list(NEWEST_FIRST), doc="Tabulator sorters [{'field', 'dir'}], first first")
    column_order = param.List(default=[], item_type=str, doc="Columns after Run in display order, shown or "
                              "hidden; columns not named follow in their default order")
    hidden_columns = param.List(default=[], item_type=str, doc="Columns not shown (Timestamp and Comment too)")
    column_widths = param.Dict(default={}, doc="Widths in px the user gave columns (others: a default)")
    hierarchical_headers = param.Boolean(default=True, doc="Titles with '/' as grouped headers, else flat")
    show_processing = param.Boolean(default=True, doc="The ⚙/⋮ processing marks in the Run column")

    LINK_PARAMS = ("sorters", "filters", "hidden_columns")  # a view link carries these (app/pages/view_links.py)
    LINK_KEYS = ("sort", "filter", "hide")
    LAYOUT_PARAMS = ("column_order", "hidden_columns", "column_widths", "hierarchical_headers", "show_processing")

    def __init__(self, **params):
        super().__init__(**params)
        self.source = self.session.source
        self.model: TableModel = get_table_model(self.source)
        self.tz = get_config().tz
        self._syncing = False  # True while the table follows session.selected_runs (no echo back)
        self._quiet = False  # True while layout params follow the browser (nothing to send back)
        self._from_control = False  # True while layout params follow the Columns card's controls
        self._layout_from = "default"  # where the layout came from: default | server | browser | user | link
        self._link_hidden: list[str] | None = None  # a link's hidden columns, until the browser's layout comes
        self._table_key = table_key(self.source.proposal, self.source.db_dir)
        self._doc = pn.state.curdoc
        self._load_server_layout()

        specs = self.model.specs()
        self.columns_choice = pn.widgets.MultiChoice(
            label="Visible columns (in this order)", options=self._column_options(specs),
            value=self._visible_variables(), sizing_mode="stretch_width")
        self.tag_choice = pn.widgets.MultiChoice(label="Only variables tagged", options=self._tag_options(),
                                                 value=[], width=260)
        self.fixed_choice = pn.widgets.CheckBoxGroup(
            options={"Timestamp": "start_time", "Comment": "comment"}, inline=True,
            value=[c for c in ("start_time", "comment") if c not in self.hidden_columns])
        self.processing_box = pn.widgets.Checkbox(label="Processing marks (⚙ running, ⋮ queued)",
                                                  value=self.show_processing)
        self.grouped_box = pn.widgets.Checkbox(label="Grouped headers (titles split at '/')",
                                               value=self.hierarchical_headers)
        self.follow = pn.widgets.Checkbox(label="Follow newest run", value=False)
        self.jump = pn.widgets.IntInput(label="Jump to run", value=None, width=120, placeholder="run number")
        self.jump_btn = pn.widgets.Button(label="Go", width=50, align="end")
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["dmn-status"])
        self.inspect_btn = pn.widgets.Button(label="Inspect run", disabled=True, width=150, align="end",
                                             description="Show every variable of the selected run, plotted "
                                                         "(or double-click a row)")
        self.confirm_text = safe_text("", css_classes=["dmn-confirm-text"], sizing_mode="stretch_width")
        self.confirm_yes = pn.widgets.Button(label="Yes", color="danger", width=170, align="center",
                                             css_classes=["dmn-confirm-yes"])
        self.confirm_no = pn.widgets.Button(label="Cancel", width=90, align="center", css_classes=["dmn-confirm-no"])
        self.confirm_bar = pn.Row(self.confirm_text, self.confirm_yes, self.confirm_no, visible=False,
                                  sizing_mode="stretch_width", css_classes=["dmn-confirm"],
                                  styles={"background": "#fff3e0", "border": "1px solid #e65100",
                                          "border-radius": "4px", "padding": "4px"})
        self._confirmed = None  # what "yes" does

        columns = self._visible_columns()
        self.page_size = page_size_for(len(columns))
        self.patcher = CellPatcher(width=0, height=0, margin=0)
        self.table = RunTabulator(
            patcher=self.patcher, value=self._skeleton(), page=1, sorters=list(self.sorters),
            table_model=self.model, rows_for=self._rows_for, editable_columns=self._editable(),
            pagination="remote", page_size=self.page_size, frozen_columns=["run"], show_index=False,
            selectable=True, sortable=True, movable_columns=True, layout="fit_data", height=650,
            sizing_mode="stretch_width",
            configuration={"renderHorizontal": "virtual", "rowContextMenu": ROW_MENU,
                           "columnDefaults": {"headerContextMenu": HEADER_MENU}},
            stylesheets=self._stylesheets(),
        )
        self.bridge = TableBridge(on_message=self._on_bridge, storage_key=STORAGE_PREFIX + self._table_key,
                                  can_write=self.session.can_write,
                                  can_delete=self.session.can_write and self.session.can_edit_context,
                                  width=0, height=0, margin=0)
        self._apply_column_config()
        self.table.on_edit(self._on_edit)
        self.table.selection = self._selection_for(self.session.selected_runs)
        self._update_inspect_button()
        self.table.param.watch(self._on_selection, "selection")
        self.table.param.watch(lambda e: self.param.update(sorters=list(e.new or [])), "sorters")
        self.param.watch(lambda e: setattr(self.table, "sorters", list(e.new)) if e.new != self.table.sorters
                         else None, "sorters")
        self.session.param.watch(self._show_selected, "selected_runs")
        self.keys = KeyNavigator(on_step=self._step, width=0, height=0, margin=0)
        self.run_panel = RunPanel(session=self.session)
        self.handle = SplitHandle(width=8, sizing_mode="stretch_height", margin=0)
        self.panel_toggle = pn.widgets.Toggle(label="Run panel", value=True, width=110, align="end")
        self.panel_toggle.link(self.handle, value="open", bidirectional=True)
        self.handle.param.watch(self._panel_showing, "open")
        self.session.param.watch(self._panel_showing, "active_page")
        self.inspect_btn.on_click(lambda e: self._inspect(self.session.selected_runs[-1:]))
        self.columns_choice.param.watch(self._on_columns_choice, "value")
        self.tag_choice.param.watch(lambda e: self._rebuild_columns(), "value")
        self.fixed_choice.param.watch(self._on_fixed_choice, "value")
        self.processing_box.link(self, value="show_processing", bidirectional=True)
        self.grouped_box.link(self, value="hierarchical_headers", bidirectional=True)
        self.param.watch(self._on_layout, list(self.LAYOUT_PARAMS))
        self.param.watch(lambda e: self._filters_changed(), "filters")
        self.confirm_yes.on_click(self._on_confirm)
        self.confirm_no.on_click(lambda e: self._ask(None))
        self.jump_btn.on_click(self._jump)
        self.follow.param.watch(self._on_follow, "value")
        self.session.on_change(self._on_change)
        self.filter_list = pn.Row(sizing_mode="stretch_width")
        self.filter_panel = FilterPanel(self.source, self.model, apply=self.add_filter,
                                        clear=lambda: self.clear_filters(), chips=self.filter_list)
        self.filters_card = pn.Card(self.filter_panel, title="Row filters", collapsed=True,
                                    sizing_mode="stretch_width")

    # -- rows -------------------------------------------------------------------------------------
    def _rows_for(self, sorters: list[dict]) -> np.ndarray:
        """Row keys in display order: filtered, then sorted (the live table's arrays, under its lock)."""
        with self.source.lock:
            table = self.source.table
            rows = table.order()
            if self.filters:
                keep = np.ones(len(rows), dtype=bool)
                for f in self.filters:
                    keep &= f.mask(table, rows)
                rows = rows[keep]
            rows = sort_rows(table, rows, sorters)
            return table.keys[rows]

    def _skeleton(self):
        return skeleton(np.array(self.source.run_keys(), dtype=np.int64), self._visible_columns(), self._editable())

    # -- columns ----------------------------------------------------------------------------------
    @staticmethod
    def _column_options(specs) -> dict[str, str]:
        return safe_options({f"{s.title} ({n})" if s.title != n else n: n
                             for n, s in specs.items() if n not in FIXED_COLUMNS})

    def _tag_options(self) -> dict[str, str]:
        return safe_options(self.model.tags())

    def _editable(self) -> list[str]:
        if not self.session.can_write:
            return []
        return [n for n, s in self.model.specs().items() if s.editable_type is not None]

    def ordered_columns(self) -> list[str]:
        """Every column after Run in display order, shown or hidden: ``column_order``, then the others
        in their default order (Timestamp, Comment, variables by title; new variables last)."""
        specs = self.model.specs()
        ordered = [c for c in dict.fromkeys(self.column_order) if c in specs and c != "run"]
        named = set(ordered)
        return ordered + [c for c in specs if c not in named and c != "run"]

    def _visible_variables(self) -> list[str]:
        hidden = set(self.hidden_columns)
        return [c for c in self.ordered_columns() if c not in FIXED_COLUMNS and c not in hidden]

    def visible_variables(self) -> list[str]:
        """The variables shown, in order (hidden ones and those the tag choice leaves out excepted)."""
        specs = self.model.specs()
        chosen = self._visible_variables()
        if self.tag_choice.value:
            tags = set(self.tag_choice.value)
            chosen = [n for n in chosen if tags & set(specs[n].tags) or specs[n].editable_type]
        return chosen

    def _visible_columns(self) -> list[str]:
        shown = set(self.visible_variables())
        hidden = set(self.hidden_columns)
        return ["run", *[c for c in self.ordered_columns()
                         if c in shown or (c in FIXED_COLUMNS and c not in hidden)]]

    def _stylesheets(self) -> list[str]:
        sheets = [TABLE_CSS]
        if not self.show_processing:
            sheets.append(HIDE_PROCESSING_CSS)
        marks = "\n".join(FILTER_MARK_CSS.format(field=css_string(c)) for c in dict.fromkeys(f.column for f in self.filters))
        if marks:
            sheets.append(marks)
        return sheets

    def _apply_column_config(self) -> None:
        specs = self.model.specs()
        editable = set(self._editable())
        grouped = self.hierarchical_headers
        titles, tooltips, formatters, editors, groups = {}, {}, {}, {}, {}
        # Fixed widths: with hundreds of columns, letting the browser measure every cell is what
        # makes a wide table slow to open (5 s vs 1 s for 300 columns); columns can be resized.
        widths = dict(FIXED_WIDTHS)
        for c in self.table.value.columns:
            s = specs.get(c)
            if s is None:
                continue
            in_group = grouped and s.group is not None
            if c not in widths:
                widths[c] = max(95, min(220, 8 * len(s.short_title if in_group else s.title) + 30))
            titles[c] = escape(s.short_title if in_group else s.title)
            tooltips[c] = escape(s.tooltip)
            if in_group:
                groups.setdefault(escape(s.group), []).append(c)
            if c in editable:
                formatters[c] = {"type": "plaintext"}
                editors[c] = ({"type": "list", "values": ["", "true", "false"]} if s.editable_type == "boolean"
                              else {"type": "input"})
            else:
                formatters[c] = {"type": "html"} if c != "comment" and not s.editable_type else {"type": "plaintext"}
                editors[c] = None
        widths.update({c: w for c, w in self.column_widths.items() if c in widths})
        self.table.param.update(widths=widths, titles=titles, header_tooltips=tooltips, formatters=formatters,
                                editors=editors, groups=groups, editable_columns=sorted(editable))
        self.bridge.titles = {n: s.title for n, s in specs.items()}

    def _rebuild_columns(self) -> None:
        # A new frame clears Tabulator's selection: put the session's back instead of clearing it.
        self._syncing = True
        try:
            with pn.io.hold():
                self.table.value = self._skeleton()
                self._apply_column_config()
                self.table.selection = self._selection_for(self.session.selected_runs)
        finally:
            self._syncing = False

    # -- layout -----------------------------------------------------------------------------------
    def layout(self) -> TableLayout:
        return TableLayout(order=list(self.column_order), hidden=list(self.hidden_columns),
                           widths=dict(self.column_widths), hierarchical=self.hierarchical_headers,
                           show_processing=self.show_processing)

    def apply_layout(self, layout: TableLayout) -> None:
        """Arrange the table as ``layout`` says (names the table does not have are kept for later)."""
        self.param.update(column_order=layout.order, hidden_columns=layout.hidden, column_widths=layout.widths,
                          hierarchical_headers=layout.hierarchical, show_processing=layout.show_processing)

    def _signed_in(self) -> bool:
        """Layouts are kept on the server for signed-in users (not on a --read-only server)."""
        return bool(self.session.user) and not self.session.read_only

    def _load_server_layout(self) -> None:
        if not self._signed_in():
            return
        layout = layout_store().load(self.session.user, self._table_key)
        if layout is not None:
            self.apply_layout(layout)  # before the table exists: it opens arranged
            self._layout_from = "server"

    def _on_layout(self, *events) -> None:
        """A layout param changed: the table follows (unless the browser made the change), the controls
        show it, and the layout is saved."""
        names = {e.name for e in events}
        if not hasattr(self, "bridge"):
            return
        if "show_processing" in names:
            self.table.stylesheets = self._stylesheets()
        if not self._quiet:
            if not self._from_control:  # never echo a value back to the widget being changed
                self._sync_controls()
            if names & {"column_order", "hidden_columns", "hierarchical_headers", "column_widths"}:
                self._rebuild_columns()
        if self._layout_from != "loading":
            self._layout_from = "user"
            self._save_layout()

    def _sync_controls(self) -> None:
        self._quiet = True
        try:
            self.columns_choice.value = self._visible_variables()
            self.fixed_choice.value = [c for c in ("start_time", "comment") if c not in self.hidden_columns]
        finally:
            self._quiet = False

    def _save_layout(self) -> None:
        layout = self.layout()
        self.bridge.send({"kind": "store", "layout": layout.to_json()})
        if self._signed_in():
            layout_store().save(self.session.user, self._table_key, layout)

    def _browser_layout(self, stored) -> None:
        """The layout this browser kept: used unless the server had this user's, or the user already
        changed something; either way the browser then keeps what is shown."""
        layout = TableLayout.from_json(stored)
        if self._link_hidden is not None:  # opened from a link: its hidden columns, this user's order and widths
            linked = dataclasses.replace(layout or self.layout(), hidden=self._link_hidden)
            self._link_hidden = None
            self._layout_from = "loading"  # a colleague's view is shown, not saved as this user's layout
            try:
                self.apply_layout(linked)
            finally:
                self._layout_from = "link"
            return
        if layout == self.layout():
            return
        if layout is not None and self._layout_from == "default":
            self._layout_from = "loading"
            try:
                self.apply_layout(layout)
            finally:
                self._layout_from = "browser"
            if self._signed_in():
                layout_store().save(self.session.user, self._table_key, layout)
        elif self._layout_from in ("server", "user"):
            self.bridge.send({"kind": "store", "layout": self.layout().to_json()})

    def _merge_order(self, shown: list[str]) -> list[str]:
        """The column order after the shown columns were put in the order ``shown`` (dragged in the
        browser): each takes the next place a shown column had, hidden ones stay where they were."""
        current = self.ordered_columns()
        known = set(current)
        shown = [c for c in dict.fromkeys(shown) if c in known]
        visible = set(shown)
        rest = iter(shown)
        return [next(rest) if c in visible else c for c in current]

    def _on_columns_choice(self, event) -> None:
        """The "Visible columns" chooser: its variables shown in its order, the others hidden."""
        if self._quiet:
            return
        chosen = [n for n in event.new if n in self.model.specs()]
        variables = [c for c in self.ordered_columns() if c not in FIXED_COLUMNS]
        slots = iter(chosen + [v for v in variables if v not in set(chosen)])
        order = [c if c in FIXED_COLUMNS else next(slots) for c in self.ordered_columns()]
        hidden = [c for c in self.hidden_columns if c in FIXED_COLUMNS] + [v for v in variables if v not in set(chosen)]
        self._from_controls(column_order=order, hidden_columns=hidden)

    def _on_fixed_choice(self, event) -> None:
        if self._quiet:
            return
        hidden = [c for c in self.hidden_columns if c not in ("start_time", "comment")]
        self._from_controls(hidden_columns=hidden + [c for c in ("start_time", "comment") if c not in event.new])

    def _from_controls(self, **layout) -> None:
        self._from_control = True
        try:
            self.param.update(**layout)
        finally:
            self._from_control = False

    def hide_column(self, name: str) -> None:
        if name != "run" and name not in self.hidden_columns:
            self.hidden_columns = [*self.hidden_columns, name]

    # -- filters ----------------------------------------------------------------------------------
    def add_filter(self, flt: RowFilter) -> None:
        self.filters = [f for f in self.filters if f.column != flt.column] + [flt]
        self.table.page = 1
        self.table.refresh_page()

    def clear_filters(self, column: str | None = None) -> None:
        self.filters = [f for f in self.filters if column is not None and f.column != column]
        self.table.refresh_page()

    # -- view links ---------------------------------------------------------------------------------
    def to_link(self) -> dict[str, str]:
        """This table's view for the address bar (sort, filters, hidden columns; defaults left out)."""
        out = {}
        if self.sorters and self.sorters != NEWEST_FIRST:
            out["sort"] = ",".join(f"{s['field']}:{s.get('dir', 'asc')}" for s in self.sorters)
        if self.filters:
            out["filter"] = json.dumps([f.to_link() for f in self.filters], separators=(",", ":"))
        hidden = self._link_hidden if self._link_hidden is not None else self.hidden_columns
        if hidden:
            out["hide"] = ",".join(hidden)
        return out

    def from_link(self, query: dict[str, str]) -> list[str]:
        """Show what a link says; returns the parts that could not be used (unknown columns, bad syntax)."""
        specs, problems = self.model.specs(), []
        if "sort" in query:
            sorters = []
            for part in filter(None, query["sort"].split(",")):
                field, _, direction = part.partition(":")
                if field in specs and direction in ("asc", "desc", ""):
                    sorters.append({"field": field, "dir": direction or "asc"})
                else:
                    problems.append(f"sort: {part}")
            if sorters:
                self.sorters = sorters
        if "filter" in query:
            try:
                wanted = json.loads(query["filter"])
                if not isinstance(wanted, list):
                    raise ValueError("not a list")
            except ValueError as e:
                problems.append(f"filter: {e}")
                wanted = []
            filters = []
            for item in wanted[:50]:
                try:
                    filters.append(RowFilter.from_link(item, specs))
                except (ValueError, TypeError, KeyError) as e:
                    problems.append(f"filter: {e}")
            if filters:
                self.filters = filters
                self.table.page = 1
                self.table.refresh_page()
        if "hide" in query:
            hidden = [c for c in query["hide"].split(",") if c]
            known = [c for c in hidden if c in specs and c != "run"]
            problems.extend(f"hide: {c}" for c in hidden if c not in known)
            if self._layout_from == "default":
                # With the layout this browser keeps (it arrives once the page is up): its order and widths,
                # the link's hidden columns. Applied together, the browser redraws the columns once in
                # their order (an order-only change after the columns are drawn is not redrawn).
                self._link_hidden = known
            elif known != list(self.hidden_columns):
                self._layout_from = "loading"  # a colleague's view is shown, not saved as this user's layout
                try:
                    self.hidden_columns = known
                finally:
                    self._layout_from = "link"
        return problems

    def _filters_changed(self) -> None:
        self.table.filter_version += 1
        self.filter_list.objects = [self._filter_chip(f) for f in self.filters]
        self.table.stylesheets = self._stylesheets()

    def _filter_chip(self, f: RowFilter):
        b = pn.widgets.Button(label=f"✕ {f.label()}", color="light", height=30)
        b.on_click(lambda e: self.clear_filters(f.column))
        return b

    def filter_controls(self) -> pn.viewable.Viewable:
        return self.filter_panel

    # -- navigation -------------------------------------------------------------------------------
    def _page_of(self, key: int) -> int | None:
        """The page (1-based) showing the run ``key`` in the sorted, filtered table (None: filtered out)."""
        keys = self.table.display_keys()
        at = np.flatnonzero(keys == key)
        return int(at[0]) // (self.table.page_size or self.page_size) + 1 if len(at) else None

    def _jump(self, _=None) -> None:
        run = self.jump.value
        if run is None:
            return
        key = self.source.key_for(None, int(run))
        page = self._page_of(key) if key in self.table.value.index else None
        if page is None:
            self.say(f"Run {int(run)} is not in the table" + (" (or is hidden by a filter)" if self.filters
                                                              else ""), "warning")
            return
        self.table.page = page
        self.table.selection = [self.table.value.index.get_loc(key)]
        self.say(f"Run {int(run)}", "info")

    def _on_follow(self, event) -> None:
        if event.new:
            self._show_newest()

    def _show_newest(self) -> None:
        """Newest runs first, from the first page (what "Follow newest run" keeps on screen)."""
        if self.table.sorters != NEWEST_FIRST or self.table.page != 1:
            with pn.io.hold():
                self.table.sorters = list(NEWEST_FIRST)
                self.table.page = 1

    def _on_selection(self, event) -> None:
        if self._syncing:
            return
        index = self.table.value.index
        keys = [index[i] for i in (event.new or []) if 0 <= i < len(index)]
        self.session.selected_runs = [self.source.run_of(k)[1] for k in keys if self.source.has_run(k)]

    def _selection_for(self, runs: list[int]) -> list[int]:
        """Table positions (``Tabulator.selection``) of the given runs that are in the table."""
        index = self.table.value.index if hasattr(self, "table") else None
        if index is None:
            return []
        keys = (self.source.key_for(None, r) for r in runs)
        return [index.get_loc(k) for k in keys if k in index]

    def _show_selected(self, event) -> None:
        """Runs selected elsewhere (e.g. box selection in Plots) become the selected rows; when none of
        them is on the page shown, the table turns to the page of the last one."""
        self._update_inspect_button()
        wanted = self._selection_for(event.new or [])
        if sorted(wanted) == sorted(self.table.selection):
            return  # this table's own selection coming back
        self._syncing = True
        try:
            with pn.io.hold():
                keys = [self.table.value.index[i] for i in wanted]
                if keys and not set(keys) & set(self.table.page_keys()):
                    page = self._page_of(keys[-1])
                    if page is not None:
                        self.table.page = page
                self.table.selection = wanted
        finally:
            self._syncing = False

    def _update_inspect_button(self) -> None:
        runs = self.session.selected_runs
        self.inspect_btn.disabled = not runs
        self.inspect_btn.label = f"Inspect run {runs[-1]}" if runs else "Inspect run"

    def _panel_showing(self, *_) -> None:
        self.run_panel.showing = self.handle.open and self.session.active_page in ("", SLUG)

    def _step(self, step: int) -> None:
        """Select the run before or after the selected one (arrow keys), turning the page if needed."""
        keys = list(self.table.display_keys())
        if not keys:
            return
        current = self.source.key_for(None, self.session.selected_runs[-1]) if self.session.selected_runs else None
        at = keys.index(current) + step if current in keys else 0
        key = keys[max(0, min(len(keys) - 1, at))]
        if self.source.has_run(key):
            self.session.selected_runs = [self.source.run_of(key)[1]]  # the table follows (_show_selected)

    def _inspect(self, runs: list[int]) -> None:
        if not runs:
            return
        if list(self.session.selected_runs) != runs:
            self.session.selected_runs = runs
        self.session.open_page = "inspect"

    def say(self, message: str, level: str = "info") -> None:
        colour = {"error": "#b71c1c", "warning": "#e65100", "info": "#1b5e20"}.get(level, "#333")
        self.status.object = f"<span data-level='{level}' style='color:{colour}'>{escape(message)}</span>"
        notes = pn.state.notifications
        if notes is not None and level in ("error", "warning"):
            getattr(notes, level)(escape(message), duration=6000)

    def _later(self, fn, *args) -> None:
        """Call ``fn(*args)`` on this session's loop (from a worker thread), or now outside a server."""
        doc = self._doc
        if doc is None or doc.session_context is None:
            fn(*args)
            return
        try:
            doc.add_next_tick_callback(partial(fn, *args))
        except Exception:  # the session closed meanwhile
            pass

    # -- runs ahead -------------------------------------------------------------------------------
    def precreate_form(self) -> pn.viewable.Viewable:
        """Rows for runs not taken yet, so their comments can be written ahead."""
        count = pn.widgets.IntInput(label="Runs", value=1, start=1, end=edits.MAX_PRECREATE, width=90)
        make = pn.widgets.Button(label="Create runs", align="end", css_classes=["dmn-precreate"])

        def on_make(_):
            try:
                runs = edits.precreate_runs(self.session, count.value or 0)
            except (ValueError, PermissionError) as e:
                self.say(f"No runs created: {e}", "error")
                return
            self.say(f"Created run{'s' if len(runs) > 1 else ''} {format_runs(runs)}: write their comments now; "
                     "their data fills in when they are taken")

        make.on_click(on_make)
        return pn.Row(count, make, pn.pane.HTML("<span style='color:#666;line-height:50px'>after the last run, "
                                                "before they are taken</span>"))

    # -- edits ------------------------------------------------------------------------------------
    def _on_edit(self, event) -> None:
        column = event.column
        try:
            key = int(self.table.value.index[event.row])
        except IndexError:
            return
        new = event.value
        try:
            if column not in self._editable():
                raise PermissionError(self.session.write_denied_reason or f"Column {column!r} is not editable")
            self.session.check_write()
            run = self.source.run_of(key)[1]
            if column == "comment":
                edits.set_comment(self.session, key, new)
                self.say(f"Comment of run {run} saved")
            else:
                stored = edits.set_user_value(self.session, key, column, new)
                self.say(f"{column} of run {run} = {format_editable(stored)} saved")
        except (PermissionError, ValueError, KeyError) as e:
            msg = str(e.args[0]) if e.args else str(e)
            self.say(f"Not saved: {msg}", "error")
            self._revert(key, column)
        except Exception as e:
            log.exception("Edit failed")
            self.say(f"Not saved: {e}", "error")
            self._revert(key, column)

    def _revert(self, key: int, column: str) -> None:
        self.table.value.loc[key, column] = None
        self.table.send_patch({column: [(key, self.model.cell_text(key, column))]})

    # -- live updates -----------------------------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        """Apply one source change to this session (runs on the session's loop)."""
        t_start = time.time()
        try:
            self._apply_change(change)
        finally:
            if change.message_time is not None:
                LATENCY_LOG.debug("change applied %.1f ms after its message (%.1f ms in this session)",
                                  1000 * (time.time() - change.message_time), 1000 * (time.time() - t_start))

    def _apply_change(self, change: Change) -> None:
        if change.reset or change.variables:
            specs = self.model.specs()
            with pn.io.hold():
                self._quiet = True
                try:
                    self.columns_choice.param.update(options=self._column_options(specs),
                                                     value=self._visible_variables())
                    self.tag_choice.options = self._tag_options()
                finally:
                    self._quiet = False
                gone = [f for f in self.filters if f.column not in specs]
                if gone:  # a deleted variable's filter goes with it
                    self.filters = [f for f in self.filters if f.column in specs]
                if any(s.get("field") not in specs for s in self.sorters):
                    self.sorters = [s for s in self.sorters if s.get("field") in specs] or list(NEWEST_FIRST)
                self.filter_panel.refresh_columns()
                self._rebuild_columns()
            if not (change.new_runs or change.changed or change.processing):
                return
        if change.loaded:
            self.filter_panel.refresh_values()
        t = self.table
        sort_cols = {s.get("field") for s in (t.sorters or [])}
        filter_cols = {f.column for f in self.filters}
        touched = set().union(*change.changed.values())
        with pn.io.hold():
            if change.new_runs or touched & (sort_cols | filter_cols):
                before = list(t.page_keys())
                if change.new_runs:
                    t.replace_value(self._skeleton())
                    t._processed = None
                    t._processed, _ = t._get_data()
                    t._update_max_page()  # the pager learns about new pages (and page bounds grow)
                else:
                    t._processed = None
                    t._processed, _ = t._get_data()
                if self.follow.value and change.new_runs and (t.sorters != NEWEST_FIRST or t.page != 1):
                    self._show_newest()  # sends the page
                elif list(t.page_keys()) != before:
                    t.refresh_page()
                elif before:
                    self._patch_cells(change)
                new_on_page = [k for k in change.new_runs if k in set(t.page_keys())]
                if new_on_page:
                    t.send_patch({"run": [(k, f"<span class='dmn-flash'>{self.model.cell_text(k, 'run')}</span>")
                                          for k in new_on_page]})
            else:
                self._patch_cells(change)

    def _patch_cells(self, change: Change) -> None:
        cols = set(self.table.value.columns)
        page = set(self.table.page_keys())
        patch: dict[str, list] = {}
        for key, names in change.changed.items():
            if key not in page:
                continue
            for n in names:
                if n in cols:
                    text = self.model.cell_text(key, n)
                    patch.setdefault(n, []).append(
                        (key, text if n in self.table.editable_columns else f"<span class='dmn-flash'>{text}</span>"))
        for key in change.processing:
            if key in page:
                patch.setdefault("run", []).append((key, self.model.cell_text(key, "run")))
        if patch:
            self.table.send_patch(patch)

    # -- export -----------------------------------------------------------------------------------
    def _export_df(self):
        specs = self.model.specs()
        shown = list(self.table.value.columns)
        rest = [n for n in specs if n not in shown]
        return export.export_frame(self.source, shown + rest, {n: s.title for n, s in specs.items()}, self.tz)

    def _export_name(self, ext: str) -> str:
        return f"{self.source.title}_run_table.{ext}".replace("/", "_")

    def export_widgets(self) -> list:
        def csv():
            return io.BytesIO(export.to_csv(self._export_df()))

        def excel():
            return io.BytesIO(export.to_excel(self._export_df(), f"{self.source.title} DAMNIT run table"))

        def markdown():
            return io.BytesIO(export.to_markdown(self._export_df()).encode())

        return [pn.widgets.FileDownload(callback=cb, filename=self._export_name(ext), label=label,
                                        color="light", width=110, embed=False)
                for cb, ext, label in [(csv, "csv", "CSV"), (excel, "xlsx", "Excel"), (markdown, "md", "Markdown")]]

    # -- user variables ---------------------------------------------------------------------------
    def add_variable_form(self) -> pn.viewable.Viewable:
        title = pn.widgets.TextInput(label="Title *", width=200)
        name = pn.widgets.TextInput(label="Name (auto from title)", width=200)
        vtype = pn.widgets.Select(label="Type *", options=list(value_types_by_name), width=120)
        desc = pn.widgets.TextInput(label="Description", width=260)
        help_ = safe_text("", width=320, **{"font-size": "small"})
        create = pn.widgets.Button(label="Create variable", color="primary", align="end")

        def on_type(_=None):
            t = value_types_by_name[vtype.value]
            help_.object = f"{t.description}\ne.g. {', '.join(t.examples)}"

        def on_title(e):
            name.placeholder = edits.slug_from_title(e.new)

        def on_create(_):
            try:
                made = edits.add_user_variable(self.session, title.value, name.value, vtype.value, desc.value)
            except (ValueError, PermissionError) as e:
                self.say(f"Variable not created: {e}", "error")
                return
            self.say(f"User variable {made!r} created")
            title.value = name.value = desc.value = ""

        vtype.param.watch(on_type, "value")
        title.param.watch(on_title, "value")
        create.on_click(on_create)
        on_type()
        return pn.Row(title, name, vtype, desc, help_, create)

    # -- the page -------------------------------------------------------------------------------
    def delete_form(self) -> pn.viewable.Viewable:
        """Choose a variable to delete (the header menu offers it too)."""
        choice = pn.widgets.Select(label="Delete a variable with all its data", width=300,
                                   options={s.title: n for n, s in self.model.specs().items()
                                            if n not in FIXED_COLUMNS})  # a native <select>: labels are text
        go = pn.widgets.Button(label="Delete…", color="danger", align="end", css_classes=["dmn-delete"])
        go.on_click(lambda e: self.ask_delete(choice.value) if choice.value else None)
        self.session.on_change(lambda ch: setattr(choice, "options", {
            s.title: n for n, s in self.model.specs().items() if n not in FIXED_COLUMNS})
            if ch.variables or ch.reset else None)
        return pn.Row(choice, go)

    def __panel__(self) -> pn.viewable.Viewable:
        # Filled when first opened: a chooser with hundreds of options is slow to draw.
        columns_card = pn.Card(title="Columns", collapsed=True, sizing_mode="stretch_width")

        def fill_columns(event):
            if not event.new and not columns_card.objects:
                parts = [pn.Row(self.tag_choice, pn.Column(self.fixed_choice, self.processing_box, self.grouped_box)),
                         self.columns_choice]
                if self.session.can_write and self.session.can_edit_context:
                    parts.append(self.delete_form())
                columns_card.objects = parts

        columns_card.param.watch(fill_columns, "collapsed")
        cards = [columns_card, self.filters_card]
        if self.session.can_write:
            cards.append(pn.Card(self.add_variable_form(), title="Add user variable", collapsed=True,
                                 sizing_mode="stretch_width"))
            cards.append(pn.Card(self.precreate_form(), title="Pre-create runs", collapsed=True,
                                 sizing_mode="stretch_width"))
        toolbar = pn.Row(self.jump, self.jump_btn, pn.Spacer(width=20), self.inspect_btn, pn.Spacer(width=20),
                         self.follow, self.panel_toggle,
                         SendTable(session=self.session, columns=lambda: list(self.table.value.columns)),
                         pn.HSpacer(),
                         pn.pane.HTML("<span style='line-height:40px'>Export:</span>"), *self.export_widgets(),
                         sizing_mode="stretch_width")
        panel = pn.Column(self.run_panel, height=self.table.height, visible=self.handle.param.open, scroll=True,
                          css_classes=["dmn-panel-side"],
                          styles={"width": "var(--dmn-panel-width, 520px)", "flex": "0 0 var(--dmn-panel-width, 520px)"})
        handle = pn.Column(self.handle, height=self.table.height, width=8, visible=self.handle.param.open,
                           margin=0, css_classes=["dmn-handle-side"])
        table = pn.Column(self.table, sizing_mode="stretch_width", css_classes=["dmn-table-side"],
                          styles={"min-width": "0", "flex": "1 1 0"})
        split = pn.Row(table, handle, panel, sizing_mode="stretch_width", css_classes=["dmn-split"],
                       stylesheets=[SPLIT_CSS])
        return pn.Column(toolbar, *cards, self.confirm_bar, self.status, split, self.patcher, self.bridge,
                         self.keys,
                         sizing_mode="stretch_both")
