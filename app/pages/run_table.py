"""The run table: one row per run, one column per variable, live.

The browser only ever holds one page of rows (remote pagination): sorting and filtering run here on
the shared raw frame, and the page's cells are rendered to safe HTML by ``app.table_format`` (cached
per proposal by ``app.table_model``). Live changes arrive as ``Change`` objects from the shared source
and go out as cell patches of the visible page (or a one-page refresh when sort/filter order moved).
"""

from __future__ import annotations

import html
import io
import logging
import math
import time

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import CellEditor, ColumnDataSource, StringEditor, StringFormatter, TableColumn
from panel.reactive import ReactiveData

from app import edits
from app import table_format as fmt
from app.state import Change, SessionState
from app.table_model import FIXED_COLUMNS, TableModel, get_table_model

log = logging.getLogger(__name__)
LATENCY_LOG = logging.getLogger("app.latency")  # DEBUG: message → patch timings per session

TITLE = "Run table"
SLUG = "table"

PAGE_SIZE = 50
CELLS_PER_PAGE = 6000  # wide tables get shorter pages, so a page stays quick to send and draw
EXPORT_PLACEHOLDERS = {"<thumbnail>": "<image>", "<sparkline>": "<trendline>"}

TABLE_CSS = fmt.CSS + """
.tabulator-cell { padding: 2px 4px !important; }
.tabulator .tabulator-header .tabulator-col .tabulator-col-title { white-space: normal; }
"""


# ---------------------------------------------------------------- the table widget

class RunTabulator(pn.widgets.Tabulator):
    """Tabulator over the raw run frame whose pages are rendered by a TableModel.

    ``value`` holds raw values (sort and filter work on numbers, not on markup); only the page sent to
    the browser is turned into display strings.
    """

    table_model = param.Parameter(default=None, precedence=-1)
    row_filter = param.Callable(default=None, precedence=-1)
    editable_columns = param.List(default=[], precedence=-1)
    patcher = param.Parameter(default=None, precedence=-1)

    _rename = {**pn.widgets.Tabulator._rename, "table_model": None, "row_filter": None,
               "editable_columns": None, "patcher": None}

    def page_keys(self) -> pd.Index:
        """Row keys on the page the browser shows, in display order."""
        processed = self._processed if self._processed is not None else self._sort_df(
            self._filter_dataframe(self.value))
        nrows = self.page_size or self.initial_page_size
        start = (self.page - 1) * nrows
        return processed.index[start:start + nrows]

    filter_version = 0  # bumped by the page when its row filters change

    def _get_column_definitions(self, col_names, df):
        """One shared formatter model and one editor model per kind instead of one each per column.

        Every column's look and editor come from ``formatters``/``editors`` in the Tabulator
        configuration; the browser only reads these models' type (and whether the editor can edit),
        so 300 columns cost 300 models to build and send instead of 900 (~0.3 s of opening).
        """
        if any(not isinstance(self.formatters.get(c), dict) for c in col_names if c not in self.indexes) or any(
                c in self.editors and self.editors[c] is not None and not isinstance(self.editors[c], dict)
                for c in col_names):
            return super()._get_column_definitions(col_names, df)
        formatter, index_formatter = StringFormatter(null_format=""), StringFormatter(null_format="", text_align="left")
        read_only, editor = CellEditor(), StringEditor()
        widths = self.widths if isinstance(self.widths, dict) else {}
        default_width = self.widths if isinstance(self.widths, int) else 0
        columns = []
        for col in col_names:
            fixed = col in self.indexes or (col in self.editors and self.editors[col] is None)
            columns.append(TableColumn(
                field=str(col), title=self.titles.get(col, str(col)),
                width=w if isinstance(w := widths.get(str(col), default_width), int) else 0,
                formatter=index_formatter if col in self.indexes else formatter,
                editor=read_only if fixed else editor))
        return columns

    def _get_data(self):
        tm: TableModel | None = self.table_model
        if tm is None or self.value is None or self.pagination != "remote":
            return super()._get_data()
        # Panel asks for the same page several times while building a view: compute it once.
        token = (id(self.value), self.page, self.page_size, repr(self.sorters), self.filter_version,
                 tuple(self.value.columns))
        cached = getattr(self, "_data_cache", None)
        if cached is not None and cached[0] == token:
            return cached[1]
        result = self._compute_data(tm)
        self._data_cache = (token, result)
        return result

    def _compute_data(self, tm: TableModel):
        df = self._sort_df(self._filter_dataframe(self.value))
        nrows = self.page_size or self.initial_page_size
        start = (self.page - 1) * nrows
        keys = df.index[start:start + nrows]
        page_df = pd.DataFrame({c: [tm.cell_text(k, c) for k in keys] for c in self.value.columns},
                               index=keys, dtype=object)
        page_df.index.name = self.value.index.name
        data = ColumnDataSource.from_df(page_df).items()
        return df, {k if isinstance(k, str) else str(k): self._process_column(v, k, page_df) for k, v in data}

    def _filter_dataframe(self, df, header_filters=True, internal_filters=True):
        df = super()._filter_dataframe(df, header_filters, internal_filters)
        if self.row_filter is not None and len(df):
            mask = self.row_filter(df)
            if mask is not None:
                df = df[mask]
        return df

    def _sort_df(self, df: pd.DataFrame) -> pd.DataFrame:
        """Sort on raw values: numbers numerically, text case-folded, empty cells last."""
        sorters = [s for s in (self.sorters or []) if s.get("field") in df.columns]
        if not sorters or not len(df):
            return df
        order = np.arange(len(df))
        # Stable sorts from the last sorter to the first give a multi-column sort.
        for s in reversed(sorters):
            keys = [fmt.sort_key(v) for v in df[s["field"]].iloc[order]]
            nums = sorted((k, i) for i, k in enumerate(keys) if isinstance(k, float) and not math.isnan(k))
            texts = sorted((k, i) for i, k in enumerate(keys) if isinstance(k, str))
            taken = {i for _, i in nums} | {i for _, i in texts}
            if s.get("dir") == "desc":
                nums.reverse()
                texts.reverse()
            pos = [i for _, i in nums] + [i for _, i in texts] + [i for i in range(len(keys)) if i not in taken]
            order = order[np.asarray(pos, dtype=int)]
        return df.iloc[order]

    def _update_column(self, column, array):
        """Values coming back from the browser: only edited cells of editable columns are taken."""
        if column not in self.editable_columns or self.table_model is None:
            return
        keys = self.page_keys()
        tm = self.table_model
        changed = [(k, v) for k, v in zip(keys, array) if v != tm.cell_text(k, column)]
        if not changed:
            return
        value = self.value.copy(deep=False)
        for k, v in changed:
            value.at[k, column] = v
        with param.discard_events(self):
            self.value = value

    # -- live updates ---------------------------------------------------------------------------
    def replace_value(self, value: pd.DataFrame) -> None:
        """Swap in a newer frame without telling the browser (the caller sends patches)."""
        with param.discard_events(self):
            self.value = value

    def send_patch(self, cells: dict[str, list[tuple[int, str]]]) -> None:
        """Update cells of the visible page: ``{column: [(row key, display text), ...]}``.

        Goes through ``patcher`` (Tabulator.updateData on just those rows) when the page has one:
        Panel's own CDS patch makes the browser rebuild the whole page, 0.2-0.5 s for 50 rows.
        """
        keys = self.page_keys()
        pos = {k: i for i, k in enumerate(keys)}
        rows: dict[int, dict] = {}
        patch: dict[str, list] = {}
        for col, items in cells.items():
            for k, text in items:
                if k in pos:
                    rows.setdefault(pos[k], {"_index": pos[k]})[col] = text
                    patch.setdefault(col, []).append((pos[k], text))
        if not rows:
            return
        if self.patcher is not None and self._models:
            for model, _ in list(self._models.values()):
                self.patcher._send_msg({"table": model.ref["id"], "rows": list(rows.values())})
        else:
            ReactiveData._patch(self, patch)

    def refresh_page(self) -> None:
        self._update_cds()


# Every Tabulator view on the page (Bokeh views nest; Tabulator cells live in shadow roots), shared by the
# components below that reach into the table from the browser.
_TABLE_VIEWS_JS = """
    function tableViews() {
      const out = [], seen = new Set()
      const stack = Object.values(window.Bokeh.index)
      while (stack.length) {
        const v = stack.pop()
        if (v == null || seen.has(v)) continue
        seen.add(v)
        if (v.tabulator) out.push(v)
        for (const c of (v.child_views || [])) stack.push(c)
      }
      return out
    }
"""


class CellPatcher(pn.custom.JSComponent):
    """Applies cell updates to the browser's Tabulator row by row (see RunTabulator.send_patch), and
    shows the right page number in its pager."""

    _esm = _TABLE_VIEWS_JS + """
    function findTable(id) {
      return tableViews().find((v) => v.model && v.model.id === id) || null
    }
    function fixPagers(done) {
      // Tabulator starts a remote-paginated table on the server's page but leaves its pager
      // buttons on page 1: redraw them once the table is built.
      for (const v of tableViews()) {
        const pager = v.tabulator.modules && v.tabulator.modules.page
        if (done.has(v) || v.model.pagination !== 'remote' || !v.tabulator.initialized || pager == null
            || pager.page !== v.model.page) continue
        pager._setPageButtons()
        done.add(v)
        return true
      }
      return false
    }
    export function render({ model, el }) {
      el.style.display = 'none'
      const done = new WeakSet()
      let tries = 0
      const timer = setInterval(() => { if (fixPagers(done) || ++tries > 150) clearInterval(timer) }, 200)
      model.on('remove', () => clearInterval(timer))
      model.on('msg:custom', (msg) => {
        const view = findTable(msg.table)
        if (view == null) return
        view.tabulator.updateData(msg.rows)
        // Keep Bokeh's copy of the page in step, silently (an event would redraw the whole page).
        const data = view.model.source.data
        for (const row of msg.rows)
          for (const [k, v] of Object.entries(row))
            if (k !== '_index' && data[k] != null) data[k][row._index] = v
      })
    }
    """


class RowOpener(pn.custom.JSComponent):
    """Reports a double click on a row of the page's run table, so the page can open that run
    (DAMNIT's double-click-to-inspect). Tabulator cells live in shadow roots: the event's composed
    path says which table, row and cell were hit."""

    def __init__(self, on_open, **params):
        super().__init__(**params)
        self._on_open = on_open  # called with {table, index, field}

    _esm = _TABLE_VIEWS_JS + """
    export function render({ model, el }) {
      el.style.display = 'none'
      const has = (n, cls) => n.classList != null && n.classList.contains(cls)
      const onDblClick = (e) => {
        const path = e.composedPath()
        const rowEl = path.find(n => has(n, 'tabulator-row'))
        if (rowEl == null) return
        const cellEl = path.find(n => has(n, 'tabulator-cell'))
        for (const view of tableViews()) {
          if (!path.includes(view.tabulator.element)) continue
          const row = view.tabulator.getRows().find(r => r.getElement() === rowEl)
          if (row != null)
            model.send_msg({table: view.model.id, index: row.getData()._index,
                            field: cellEl ? cellEl.getAttribute('tabulator-field') : null})
          return
        }
      }
      document.addEventListener('dblclick', onDblClick)
      model.on('remove', () => document.removeEventListener('dblclick', onDblClick))
    }
    """

    def _handle_msg(self, msg) -> None:
        if isinstance(msg, dict):
            self._on_open(msg)


# ---------------------------------------------------------------- filters

class RowFilter(param.Parameterized):
    """One filter on one column: numeric range or a set of categories, optionally keeping empties."""

    column = param.String()
    title = param.String()
    kind = param.Selector(objects=["range", "categories"])
    low = param.Number(default=None, allow_None=True)
    high = param.Number(default=None, allow_None=True)
    categories = param.List(default=[])
    include_empty = param.Boolean(default=False)

    def mask(self, series: pd.Series) -> np.ndarray:
        empty = series.map(lambda v: v is None or (isinstance(v, float) and math.isnan(v))).to_numpy(bool)
        if self.kind == "range":
            num = pd.to_numeric(series, errors="coerce").to_numpy(float)
            ok = ~np.isnan(num)
            if self.low is not None:
                ok &= num >= self.low
            if self.high is not None:
                ok &= num <= self.high
        else:
            wanted = set(self.categories)
            ok = series.map(lambda v: fmt.plain_text(v) in wanted).to_numpy(bool)
        return ok | (empty & self.include_empty)

    def label(self) -> str:
        if self.kind == "range":
            lo = "-∞" if self.low is None else fmt.prettify(float(self.low))
            hi = "∞" if self.high is None else fmt.prettify(float(self.high))
            return f"{self.title}: {lo} … {hi}"
        shown = ", ".join(self.categories[:3]) + ("…" if len(self.categories) > 3 else "")
        return f"{self.title}: {shown}"


def is_numeric_column(series: pd.Series) -> bool:
    vals = [v for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(vals) and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                              for v in vals)


# ---------------------------------------------------------------- export

def export_frame(source, columns: list[str], titles: dict[str, str]) -> pd.DataFrame:
    """The table as exported: chosen columns in display order, titled, placeholders for images."""
    df = source.frame()
    cols = [c for c in columns if c in df.columns]
    out = df[cols].copy()
    for c in cols:
        if c == "start_time":
            out[c] = [fmt.format_timestamp(v) for v in out[c]]
        else:
            out[c] = [EXPORT_PLACEHOLDERS.get(v, v) if isinstance(v, str) else v for v in out[c]]
    out.columns = [titles.get(c, c) for c in cols]
    return out.reset_index(drop=True)


def to_markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return " ".join(fmt.prettify(v).split()).replace("|", "\\|")

    from tabulate import tabulate

    rows = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    return tabulate(rows, headers=list(df.columns), tablefmt="github", disable_numparse=True)


# ---------------------------------------------------------------- the page

class RunTablePage:
    """One session's run table and its controls."""

    def __init__(self, session: SessionState):
        self.session = session
        self.source = session.source
        self.model = get_table_model(self.source)
        self.filters: list[RowFilter] = []
        self.order: list[str] | None = None  # user-chosen variable order (None = default)
        self._last_rebuild = 0.0

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
        self._syncing = False  # True while the table follows session.selected_runs (no echo back)

        frame = self._frame_for_session()
        self.page_size = max(20, min(PAGE_SIZE, CELLS_PER_PAGE // max(1, len(frame.columns))))
        self.patcher = CellPatcher(width=0, height=0, margin=0)
        self.table = RunTabulator(
            patcher=self.patcher,
            value=frame, page=max(1, math.ceil(len(frame) / self.page_size)), table_model=self.model, row_filter=self._row_mask,
            editable_columns=self._editable(), pagination="remote", page_size=self.page_size,
            frozen_columns=["run"], show_index=False, selectable=True, sortable=True,
            movable_columns=True, layout="fit_data", height=650, sizing_mode="stretch_width",
            configuration={"renderHorizontal": "virtual", "columnDefaults": {"maxWidth": 320}},
            stylesheets=[TABLE_CSS],
        )
        self._apply_column_config()
        # The browser's pager shows page 1 for the initial page of a remote-paginated table: CellPatcher
        # redraws its buttons (re-sending the page did that too, but sent and drew 2 MB of cells again).
        self.table.on_edit(self._on_edit)
        self.table.selection = self._selection_for(session.selected_runs)
        self._update_inspect_button()
        self.table.param.watch(self._on_selection, "selection")
        session.param.watch(self._show_selected, "selected_runs")
        self.opener = RowOpener(on_open=self._open_row, width=0, height=0, margin=0)
        self.inspect_btn.on_click(lambda e: self._inspect(self.session.selected_runs[-1:]))
        self.columns_choice.param.watch(lambda e: self._rebuild_columns(), "value")
        self.tag_choice.param.watch(lambda e: self._rebuild_columns(), "value")
        self.jump_btn.on_click(self._jump)
        session.on_change(self._on_change)

    # -- columns ----------------------------------------------------------------------------------
    @staticmethod
    def _column_options(specs) -> dict[str, str]:
        # Escaped: the choices widget renders option labels as HTML.
        return {html.escape(f"{s.title} ({n})" if s.title != n else n): n
                for n, s in specs.items() if n not in FIXED_COLUMNS}

    def _tag_options(self) -> dict[str, str]:
        return {html.escape(t): t for t in self.model.tags()}

    def _editable(self) -> list[str]:
        if not self.session.can_write:
            return []
        specs = self.model.specs()
        return [n for n, s in specs.items() if s.editable_type is not None]

    def visible_variables(self) -> list[str]:
        specs = self.model.specs()
        chosen = [n for n in self.columns_choice.value if n in specs]
        if self.tag_choice.value:
            tags = set(self.tag_choice.value)
            chosen = [n for n in chosen if tags & set(specs[n].tags) or specs[n].editable_type]
        return chosen

    def _frame_for_session(self) -> pd.DataFrame:
        frame = self.source.frame()
        cols = [c for c in (*FIXED_COLUMNS, *self.visible_variables()) if c in frame.columns]
        return frame[cols]

    def _apply_column_config(self) -> None:
        specs = self.model.specs()
        cols = list(self.table.value.columns)
        editable = set(self._editable())
        titles, tooltips, formatters, editors, groups = {}, {}, {}, {}, {}
        # Fixed widths: with hundreds of columns, letting the browser measure every cell is what
        # makes a wide table slow to open (5 s vs 1 s for 300 columns); columns can be resized.
        widths = {"run": 80, "start_time": 150, "comment": 220}
        for c in cols:
            s = specs.get(c)
            if s is None:
                continue
            grouped = s.group is not None
            if c not in widths:
                widths[c] = max(95, min(220, 8 * len(s.short_title if grouped else s.title) + 30))
            titles[c] = html.escape(s.short_title if grouped else s.title)
            tooltips[c] = s.tooltip
            if grouped:
                groups.setdefault(html.escape(s.group), []).append(c)
            if c in editable:
                formatters[c] = {"type": "plaintext"}
                if s.editable_type == "boolean":
                    editors[c] = {"type": "list", "values": ["", "true", "false"]}
                else:
                    editors[c] = {"type": "input"}
            else:
                formatters[c] = {"type": "html"} if c != "comment" and not s.editable_type else {"type": "plaintext"}
                editors[c] = None
        self.table.param.update(widths=widths, titles=titles, header_tooltips=tooltips, formatters=formatters, editors=editors,
                                groups=groups, editable_columns=sorted(editable))

    def _rebuild_columns(self) -> None:
        # A new frame clears Tabulator's selection: put the session's back instead of clearing it.
        self._syncing = True
        try:
            with pn.io.hold():
                self.table.value = self._frame_for_session()
                self._apply_column_config()
                self.table.selection = self._selection_for(self.session.selected_runs)
        finally:
            self._syncing = False

    # -- filters ----------------------------------------------------------------------------------
    def _row_mask(self, df: pd.DataFrame):
        if not self.filters:
            return None
        frame = self.source.frame()
        mask = np.ones(len(df), dtype=bool)
        for f in self.filters:
            if f.column in frame.columns:
                mask &= f.mask(frame[f.column].reindex(df.index))
        return mask

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
            series = self.source.frame().get(col.value)
            if series is None:
                return
            numeric = is_numeric_column(series)
            range_box.visible, cat_box.visible = numeric, not numeric
            if numeric:
                # The column's range as placeholders, never as values: a value sent from here could
                # overwrite what the user is already typing (empty = no bound).
                num = pd.to_numeric(series, errors="coerce")
                known = bool(num.notna().any())
                low.placeholder = f"from {fmt.prettify(float(num.min()))}" if known else "no minimum"
                high.placeholder = f"to {fmt.prettify(float(num.max()))}" if known else "no maximum"
            else:
                values = sorted({fmt.plain_text(v) for v in series if v is not None})
                cats.options = {html.escape(v): v for v in values[:2000]}
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
        self.filter_list = pn.Row(sizing_mode="stretch_width")
        return pn.Column(pn.Row(col, range_box, cat_box, empty, apply, clear), self.filter_list,
                         sizing_mode="stretch_width")

    # -- navigation -------------------------------------------------------------------------------
    def _n_pages(self) -> int:
        n = len(self.table._processed) if self.table._processed is not None else len(self.table.value)
        return max(1, math.ceil(n / (self.table.page_size or self.page_size)))

    def _page_of(self, pos: int) -> int:
        """The page (1-based) showing the row at ``pos`` of the sorted, filtered table."""
        return pos // (self.table.page_size or self.page_size) + 1

    def _jump(self, _=None) -> None:
        run = self.jump.value
        if run is None:
            return
        key = self.source.key_for(None, int(run))
        processed = self.table._processed
        if processed is None or key not in processed.index:
            self.say(f"Run {int(run)} is not in the table" + (" (or is hidden by a filter)" if self.filters
                                                              else ""), "warning")
            return
        pos = processed.index.get_loc(key)
        self.table.page = self._page_of(pos)
        self.table.selection = [self.table.value.index.get_loc(key)]
        self.say(f"Run {int(run)}", "info")

    def _on_selection(self, event) -> None:
        if self._syncing:
            return
        idx = [i for i in (event.new or []) if 0 <= i < len(self.table.value)]
        runs = [int(self.table.value["run"].iloc[i]) for i in idx]
        self.session.selected_runs = runs

    def _selection_for(self, runs: list[int]) -> list[int]:
        """Table positions (``Tabulator.selection``) of the given runs that are in the table."""
        index = self.table.value.index
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
                processed = self.table._processed
                keys = [self.table.value.index[i] for i in wanted]
                if keys and processed is not None and not set(keys) & set(self.table.page_keys()):
                    shown = [k for k in keys if k in processed.index]
                    if shown:
                        pos = processed.index.get_loc(shown[-1])
                        self.table.page = self._page_of(pos)
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
        self._inspect([int(self.table.value.at[key, "run"])])

    def _inspect(self, runs: list[int]) -> None:
        if not runs:
            return
        if list(self.session.selected_runs) != runs:
            self.session.selected_runs = runs
        self.session.open_page = "inspect"

    def say(self, message: str, level: str = "info") -> None:
        colour = {"error": "#b71c1c", "warning": "#e65100", "info": "#1b5e20"}.get(level, "#333")
        self.status.object = (f"<span data-level='{level}' style='color:{colour}'>{html.escape(message)}</span>")
        notes = pn.state.notifications
        if notes is not None and level in ("error", "warning"):
            getattr(notes, level)(message, duration=6000)

    # -- edits ------------------------------------------------------------------------------------
    def _on_edit(self, event) -> None:
        column = event.column
        try:
            key = self.table.value.index[event.row]
        except IndexError:
            return
        new = event.value
        try:
            if column not in self._editable():
                raise PermissionError(self.session.write_denied_reason or f"Column {column!r} is not editable")
            self.session.check_write()
            if column == "comment":
                edits.set_comment(self.session, int(key), new)
                self.say(f"Comment of run {self.source.runs[int(key)].run} saved")
            else:
                stored = edits.set_user_value(self.session, int(key), column, new)
                self.say(f"{column} of run {self.source.runs[int(key)].run} = {fmt.plain_text(stored)} saved")
        except (PermissionError, ValueError, KeyError) as e:
            msg = str(e.args[0]) if e.args else str(e)
            self.say(f"Not saved: {msg}", "error")
            self._revert(int(key), column)
        except Exception as e:
            log.exception("Edit failed")
            self.say(f"Not saved: {e}", "error")
            self._revert(int(key), column)

    def _revert(self, key: int, column: str) -> None:
        self.table.replace_value(self._frame_for_session())
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
        frame = self._frame_for_session()
        t = self.table
        sort_cols = {s.get("field") for s in (t.sorters or [])}
        filter_cols = {f.column for f in self.filters}
        touched = {n for names in change.changed.values() for n in names}
        with pn.io.hold():
            t.replace_value(frame)
            if change.new_runs or touched & (sort_cols | filter_cols):
                before = list(t.page_keys())
                t._processed = None
                t._processed, _ = t._get_data()
                if change.new_runs:
                    t._update_max_page()  # the pager learns about new pages (and page bounds grow)
                if self.follow.value and change.new_runs:
                    last = self._n_pages()
                    if t.page != last:
                        t.page = last  # sends the page
                        before = None
                if before is not None and list(t.page_keys()) != before:
                    t.refresh_page()
                elif before is not None and before:
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
                    patch.setdefault(n, []).append(
                        (key, f"<span class='dmn-flash'>{self.model.cell_text(key, n)}</span>"
                         if n not in self.table.editable_columns else self.model.cell_text(key, n)))
        for key in change.processing:
            if key in page:
                patch.setdefault("run", []).append((key, self.model.cell_text(key, "run")))
        if patch:
            self.table.send_patch(patch)

    # -- export -----------------------------------------------------------------------------------
    def _export_df(self) -> pd.DataFrame:
        specs = self.model.specs()
        shown = list(self.table.value.columns)
        rest = [n for n in specs if n not in shown]
        return export_frame(self.source, shown + rest, {n: s.title for n, s in specs.items()})

    def _export_name(self, ext: str) -> str:
        return f"{self.source.title}_run_table.{ext}".replace("/", "_")

    def export_widgets(self) -> list:
        def csv():
            return io.BytesIO(self._export_df().to_csv(index=False).encode())

        def excel():
            buf = io.BytesIO()
            sheet = f"{self.source.title} DAMNIT run table"[:31]
            self._export_df().to_excel(buf, index=False, sheet_name=sheet)
            buf.seek(0)
            return buf

        def markdown():
            return io.BytesIO(to_markdown(self._export_df()).encode())

        return [pn.widgets.FileDownload(callback=cb, filename=self._export_name(ext), label=label,
                                        color="light", width=110, embed=False)
                for cb, ext, label in [(csv, "csv", "CSV"), (excel, "xlsx", "Excel"), (markdown, "md", "Markdown")]]

    # -- user variables ---------------------------------------------------------------------------
    def add_variable_form(self) -> pn.viewable.Viewable:
        from backend.storage.user_variables import value_types_by_name

        title = pn.widgets.TextInput(label="Title *", width=200)
        name = pn.widgets.TextInput(label="Name (auto from title)", width=200)
        vtype = pn.widgets.Select(label="Type *", options=list(value_types_by_name), width=120)
        desc = pn.widgets.TextInput(label="Description", width=260)
        help_ = pn.pane.HTML("", width=320)
        create = pn.widgets.Button(label="Create variable", color="primary", align="end")

        def on_type(_=None):
            t = value_types_by_name[vtype.value]
            help_.object = (f"<small>{html.escape(t.description)}<br>e.g. "
                            f"{html.escape(', '.join(t.examples))}</small>")

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
    def view(self) -> pn.viewable.Viewable:
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
                         self.follow, pn.HSpacer(),
                         pn.pane.HTML("<span style='line-height:40px'>Export:</span>"), *self.export_widgets(),
                         sizing_mode="stretch_width")
        return pn.Column(toolbar, *cards, self.status, self.table, self.patcher, self.opener,
                         sizing_mode="stretch_both")


def view(session: SessionState) -> pn.viewable.Viewable:
    t = time.perf_counter()
    page = RunTablePage(session)
    log.debug("Run table built in %.3f s", time.perf_counter() - t)
    return page.view()
