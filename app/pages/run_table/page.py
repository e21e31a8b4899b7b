"""The run table page: one row per run, one column per variable, live.

The browser holds one page of rows (remote pagination): filters and sorting run here on the live
table's arrays (``rows.py``), the page's cells are rendered by the proposal's ``TableModel`` (cached,
escaped HTML), and live changes go out as cell patches of the visible page, or a one-page refresh
when the rows on it moved (the update ladder: patch cells → refresh the page → rebuild the columns).
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import panel as pn
import param

from app.actions import edits
from app.config import get_config
from app.display.formatting import format_editable, format_number
from app.display.text import escape, safe_options, safe_text
from app.live.records import Change
from app.live.session import SessionState
from app.pages.logbook import SendTable
from app.pages.run_panel import RunPanel
from app.pages.run_table import cells, export
from app.pages.run_table.model import FIXED_COLUMNS, TableModel, get_table_model
from app.pages.run_table.rows import RowFilter, category_texts, is_numeric, sort_rows
from app.pages.run_table.tabulator import (
    CellPatcher,
    KeyNavigator,
    RowOpener,
    RunTabulator,
    SplitHandle,
    skeleton,
)
from backend.storage.user_variables import value_types_by_name

log = logging.getLogger(__name__)
LATENCY_LOG = logging.getLogger("app.latency")  # DEBUG: message → patch timings per session

TITLE = "Run table"
SLUG = "table"
PAGE_SIZE = 50
CELLS_PER_PAGE = 6000  # wide tables get shorter pages, so a page stays quick to send and draw
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

TABLE_CSS = cells.CSS + """
.tabulator-cell { padding: 2px 4px !important; }
.tabulator .tabulator-header .tabulator-col .tabulator-col-title { white-space: normal; }
"""


class RunTablePage(pn.viewable.Viewer):
    """One session's run table and its controls."""

    session = param.ClassSelector(class_=SessionState)
    filters = param.List(default=[], item_type=RowFilter, doc="Row filters in the order they were added")

    def __init__(self, **params):
        super().__init__(**params)
        self.source = self.session.source
        self.model: TableModel = get_table_model(self.source)
        self.tz = get_config().tz
        self._syncing = False  # True while the table follows session.selected_runs (no echo back)

        specs = self.model.specs()
        var_names = [n for n in specs if n not in FIXED_COLUMNS]
        self.columns_choice = pn.widgets.MultiChoice(
            label="Visible columns (in this order)", options=self._column_options(specs), value=var_names,
            sizing_mode="stretch_width")
        self.tag_choice = pn.widgets.MultiChoice(label="Only variables tagged", options=self._tag_options(),
                                                 value=[], width=260)
        self.follow = pn.widgets.Checkbox(label="Follow newest run", value=False)
        self.jump = pn.widgets.IntInput(label="Jump to run", value=None, width=120, placeholder="run number")
        self.jump_btn = pn.widgets.Button(label="Go", width=50, align="end")
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["dmn-status"])
        self.inspect_btn = pn.widgets.Button(label="Inspect run", disabled=True, width=150, align="end",
                                             description="Show every variable of the selected run, plotted "
                                                         "(or double-click a row)")

        columns = self._visible_columns()
        self.page_size = max(20, min(PAGE_SIZE, CELLS_PER_PAGE // max(1, len(columns))))
        self.patcher = CellPatcher(width=0, height=0, margin=0)
        self.table = RunTabulator(
            patcher=self.patcher, value=self._skeleton(), page=1, sorters=list(NEWEST_FIRST),
            table_model=self.model, rows_for=self._rows_for, editable_columns=self._editable(),
            pagination="remote", page_size=self.page_size, frozen_columns=["run"], show_index=False,
            selectable=True, sortable=True, movable_columns=True, layout="fit_data", height=650,
            sizing_mode="stretch_width",
            configuration={"renderHorizontal": "virtual", "columnDefaults": {"maxWidth": 320}},
            stylesheets=[TABLE_CSS],
        )
        self._apply_column_config()
        self.table.on_edit(self._on_edit)
        self.table.selection = self._selection_for(self.session.selected_runs)
        self._update_inspect_button()
        self.table.param.watch(self._on_selection, "selection")
        self.session.param.watch(self._show_selected, "selected_runs")
        self.opener = RowOpener(on_open=self._open_row, width=0, height=0, margin=0)
        self.keys = KeyNavigator(on_step=self._step, width=0, height=0, margin=0)
        self.run_panel = RunPanel(session=self.session)
        self.handle = SplitHandle(width=8, sizing_mode="stretch_height", margin=0)
        self.panel_toggle = pn.widgets.Toggle(label="Run panel", value=True, width=110, align="end")
        self.panel_toggle.link(self.handle, value="open", bidirectional=True)
        self.handle.param.watch(self._panel_showing, "open")
        self.session.param.watch(self._panel_showing, "active_page")
        self.inspect_btn.on_click(lambda e: self._inspect(self.session.selected_runs[-1:]))
        self.columns_choice.param.watch(lambda e: self._rebuild_columns(), "value")
        self.tag_choice.param.watch(lambda e: self._rebuild_columns(), "value")
        self.jump_btn.on_click(self._jump)
        self.follow.param.watch(self._on_follow, "value")
        self.session.on_change(self._on_change)
        self.filter_list = pn.Row(sizing_mode="stretch_width")

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

    def visible_variables(self) -> list[str]:
        specs = self.model.specs()
        chosen = [n for n in self.columns_choice.value if n in specs]
        if self.tag_choice.value:
            tags = set(self.tag_choice.value)
            chosen = [n for n in chosen if tags & set(specs[n].tags) or specs[n].editable_type]
        return chosen

    def _visible_columns(self) -> list[str]:
        return [*FIXED_COLUMNS, *self.visible_variables()]

    def _apply_column_config(self) -> None:
        specs = self.model.specs()
        editable = set(self._editable())
        titles, tooltips, formatters, editors, groups = {}, {}, {}, {}, {}
        # Fixed widths: with hundreds of columns, letting the browser measure every cell is what
        # makes a wide table slow to open (5 s vs 1 s for 300 columns); columns can be resized.
        widths = {"run": 80, "start_time": 150, "comment": 220}
        for c in self.table.value.columns:
            s = specs.get(c)
            if s is None:
                continue
            grouped = s.group is not None
            if c not in widths:
                widths[c] = max(95, min(220, 8 * len(s.short_title if grouped else s.title) + 30))
            titles[c] = escape(s.short_title if grouped else s.title)
            tooltips[c] = escape(s.tooltip)
            if grouped:
                groups.setdefault(escape(s.group), []).append(c)
            if c in editable:
                formatters[c] = {"type": "plaintext"}
                editors[c] = ({"type": "list", "values": ["", "true", "false"]} if s.editable_type == "boolean"
                              else {"type": "input"})
            else:
                formatters[c] = {"type": "html"} if c != "comment" and not s.editable_type else {"type": "plaintext"}
                editors[c] = None
        self.table.param.update(widths=widths, titles=titles, header_tooltips=tooltips, formatters=formatters,
                                editors=editors, groups=groups, editable_columns=sorted(editable))

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

    # -- filters ----------------------------------------------------------------------------------
    def add_filter(self, flt: RowFilter) -> None:
        self.filters = [f for f in self.filters if f.column != flt.column] + [flt]
        self._filters_changed()
        self.table.page = 1
        self.table.refresh_page()

    def clear_filters(self, column: str | None = None) -> None:
        self.filters = [f for f in self.filters if column is not None and f.column != column]
        self._filters_changed()
        self.table.refresh_page()

    def _filters_changed(self) -> None:
        self.table.filter_version += 1
        self.filter_list.objects = [self._filter_chip(f) for f in self.filters]

    def _filter_chip(self, f: RowFilter):
        b = pn.widgets.Button(label=f"✕ {f.label()}", color="light", height=30)
        b.on_click(lambda e: self.clear_filters(f.column))
        return b

    def filter_controls(self) -> pn.viewable.Viewable:
        specs = self.model.specs()
        options = {s.title: n for n, s in specs.items()}  # a native <select> shows labels as text
        col = pn.widgets.Select(label="Filter column", options=options, width=220)
        low = pn.widgets.FloatInput(label="min", value=None, width=110)
        high = pn.widgets.FloatInput(label="max", value=None, width=110)
        cats = pn.widgets.MultiChoice(label="values", options=[], width=300)
        empty = pn.widgets.Checkbox(label="include empty", value=False, align="end")
        apply = pn.widgets.Button(label="Apply filter", color="primary", align="end")
        clear = pn.widgets.Button(label="Clear all filters", align="end")
        range_box = pn.Row(low, high)
        cat_box = pn.Row(cats)

        def on_col(_=None):
            if not col.value:
                return
            with self.source.lock:
                table = self.source.table
                rows = table.order()
                numeric = is_numeric(table, col.value)
                values = table.numbers(col.value, rows) if numeric else category_texts(table, col.value, rows)
            range_box.visible, cat_box.visible = numeric, not numeric
            if numeric:
                # The column's range as placeholders, never as values: a value sent from here could
                # overwrite what the user is already typing (empty = no bound).
                known = values[~np.isnan(values)]
                low.placeholder = f"from {format_number(float(known.min()))}" if len(known) else "no minimum"
                high.placeholder = f"to {format_number(float(known.max()))}" if len(known) else "no maximum"
            else:
                texts = sorted({v for v in values if v is not None})
                cats.options = safe_options(texts[:2000])
                cats.value = []

        def on_apply(_):
            if not col.value:
                return
            title = specs[col.value].title if col.value in specs else col.value
            if range_box.visible:
                flt = RowFilter(column=col.value, title=title, kind="range", low=low.value, high=high.value,
                                include_empty=empty.value)
            else:
                flt = RowFilter(column=col.value, title=title, kind="categories", categories=list(cats.value),
                                include_empty=empty.value)
            self.add_filter(flt)

        col.param.watch(on_col, "value")
        apply.on_click(on_apply)
        clear.on_click(lambda e: self.clear_filters())
        on_col()
        return pn.Column(pn.Row(col, range_box, cat_box, empty, apply, clear), self.filter_list,
                         sizing_mode="stretch_width")

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

    def _open_row(self, msg: dict) -> None:
        """A double click on a row (not on a cell being edited): select that run and inspect it."""
        ours = {model.ref["id"] for model, _ in self.table._models.values()}
        if msg.get("table") not in ours or msg.get("field") in self.table.editable_columns:
            return
        keys = self.table.page_keys()
        try:
            key = keys[int(msg.get("index"))]
        except (TypeError, ValueError, IndexError):
            return
        if self.source.has_run(key):
            self._inspect([self.source.run_of(key)[1]])

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
            opts = self._column_options(specs)
            new_names = [n for n in opts.values() if n not in self.columns_choice.options.values()]
            with pn.io.hold():
                self.columns_choice.options = opts
                if new_names:
                    self.columns_choice.value = [*self.columns_choice.value, *new_names]
                self.tag_choice.options = self._tag_options()
                self._rebuild_columns()
            if not (change.new_runs or change.changed or change.processing):
                return
        t = self.table
        sort_cols = {s.get("field") for s in (t.sorters or [])}
        filter_cols = {f.column for f in self.filters}
        touched = {n for names in change.changed.values() for n in names}
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

    # -- layout -----------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        # Filled when first opened: a chooser with hundreds of options is slow to draw.
        columns_card = pn.Card(title="Columns", collapsed=True, sizing_mode="stretch_width")

        def fill_columns(event):
            if not event.new and not columns_card.objects:
                columns_card.objects = [pn.Row(self.tag_choice), self.columns_choice]

        columns_card.param.watch(fill_columns, "collapsed")
        filters_card = pn.Card(self.filter_controls(), title="Row filters", collapsed=True,
                               sizing_mode="stretch_width")
        cards = [columns_card, filters_card]
        if self.session.can_write:
            cards.append(pn.Card(self.add_variable_form(), title="Add user variable", collapsed=True,
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
        return pn.Column(toolbar, *cards, self.status, split, self.patcher, self.opener, self.keys,
                         sizing_mode="stretch_both")
