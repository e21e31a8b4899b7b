"""Panel's Tabulator, made to page through a live table it never holds.

The widget's ``value`` is a skeleton: the run keys as index and the visible columns, every one an empty
sparse column (a few hundred bytes whatever the table's size), so Panel's paging and selection work as
usual. The rows, their order and the page's cells come from the page (``rows_for``: the runs in display
order, filtered and sorted on the live table's arrays) and the table model (``render``: cached HTML).

Panel internals overridden, checked against the Panel versions pinned in pyproject.toml
(``panel>=1.9,<1.10``): ``Tabulator._get_data`` (the page's data), ``_get_column_definitions`` (one
shared formatter and editor model instead of three per column), ``_process_data`` (the page coming back
after an edit: only edited cells are taken), ``_get_properties`` (the selection a page opens with, as
positions on the page sent), and the attributes ``_processed`` (rows in display order), ``_old_value``
(cleared: the old value of an edit is the page's), ``_models`` (the browser-side models, to address cell
patches) and ``_rename`` (our parameters are not Bokeh properties). ``tests/app/test_live_table.py`` (paging, sorting, filtering, the first selection) and
``tests/app/browser/test_dashboard.py`` (edits, patches) exercise them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import CellEditor, ColumnDataSource, StringEditor, StringFormatter, TableColumn
from panel.io import JSCode
from panel.reactive import ReactiveData

JS = Path(__file__).with_name("js")


def skeleton(keys: np.ndarray, columns: list[str], editable: list[str] = ()) -> pd.DataFrame:
    """An empty frame with these row keys and columns: what Tabulator pages through. Editable columns
    are object columns, where Panel puts a value typed in the browser before reporting the edit."""
    empty = pd.arrays.SparseArray(np.zeros(len(keys), dtype=np.int8), fill_value=0)
    return pd.DataFrame({c: (pd.Series(None, index=range(len(keys)), dtype=object).to_numpy()
                             if c in editable else empty) for c in columns},
                        index=pd.Index(np.asarray(keys, dtype=np.int64), name="key"))


class RunTabulator(pn.widgets.Tabulator):
    """Tabulator over a skeleton frame whose pages are rendered by a TableModel."""

    table_model = param.Parameter(default=None, precedence=-1, doc="The proposal's TableModel")
    rows_for = param.Callable(default=None, precedence=-1,
                              doc="sorters -> row keys in display order (filtered), from the page")
    editable_columns = param.List(default=[], precedence=-1)
    patcher = param.Parameter(default=None, precedence=-1, doc="CellPatcher sending patches row by row")

    _rename = {**pn.widgets.Tabulator._rename, "table_model": None, "rows_for": None,
               "editable_columns": None, "patcher": None}

    filter_version = 0  # bumped by the page when the rows or their order change for another reason

    def display_keys(self) -> np.ndarray:
        """All row keys in display order (after filters and sorters)."""
        if self.rows_for is None:
            return self.value.index.to_numpy()
        return np.asarray(self.rows_for(self.sorters or []), dtype=np.int64)

    def page_keys(self) -> pd.Index:
        """Row keys on the page the browser shows, in display order."""
        processed = self._processed if self._processed is not None else self._get_data()[0]
        nrows = self.page_size or self.initial_page_size
        start = (self.page - 1) * nrows
        return processed.index[start:start + nrows]

    def page_selection(self) -> list[int]:
        """The selected rows as positions on the page the browser shows."""
        if self.value is None or not self.selection:
            return []
        size = len(self.value.index)
        wanted = set(self.value.index[[i for i in self.selection if 0 <= i < size]])
        return [i for i, key in enumerate(self.page_keys()) if key in wanted]

    def _get_properties(self, doc=None):
        # Panel hands ``selection`` (positions in ``value``) to a new view unmapped; on a sorted, paged
        # table those are other rows (a link's runs 3,5 highlighted 28 and 26).
        properties = super()._get_properties(doc)
        properties["source"].selected.indices = self.page_selection()
        return properties

    def _get_column_definitions(self, col_names, df):
        """One shared formatter model and one editor model per kind instead of one each per column.

        Every column's look and editor come from ``formatters``/``editors`` in the Tabulator
        configuration; the browser only reads these models' type (and whether the editor can edit),
        so 300 columns cost 300 models to build and send instead of 900 (~0.3 s of opening).
        """
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
        tm = self.table_model
        if tm is None or self.value is None or self.pagination != "remote":
            return super()._get_data()
        # Panel asks for the same page several times while building a view: compute it once.
        token = (id(self.value), self.page, self.page_size, repr(self.sorters), self.filter_version,
                 tuple(self.value.columns), tm.source.version)
        cached = getattr(self, "_data_cache", None)
        if cached is not None and cached[0] == token:
            return cached[1]
        keys = [k for k in self.display_keys() if k in self.value.index]
        processed = self.value.loc[keys]
        nrows = self.page_size or self.initial_page_size
        start = (self.page - 1) * nrows
        page = processed.index[start:start + nrows]
        columns = list(self.value.columns)
        texts = tm.render(list(page), columns)
        page_df = pd.DataFrame({c: pd.Series(texts[c], index=page, dtype=object) for c in columns}, index=page)
        page_df.index.name = self.value.index.name
        data = ColumnDataSource.from_df(page_df).items()
        result = processed, {k if isinstance(k, str) else str(k): self._process_column(v, k, page_df)
                             for k, v in data}
        self._data_cache = (token, result)
        return result

    def _process_data(self, data):
        """The page's data coming back from the browser after an edit: an edited cell of an editable
        column is put in the skeleton, where Panel reads it for the edit event (``on_edit``, which
        stores it); the rest of the page is display text and is ignored."""
        if self._updating or self.table_model is None:
            return super()._process_data(data) if self.table_model is None else None
        self._old_value = None
        keys = list(self.page_keys())
        for column in self.editable_columns:
            values = data.get(column)
            if values is None:
                continue
            if isinstance(values, dict):
                values = [v for _, v in sorted(values.items(), key=lambda item: int(item[0]))]
            shown = self.table_model.render(keys, [column])[column]
            for key, new, old in zip(keys, values, shown):
                if new != old:
                    self.value.loc[key, column] = new

    # -- live updates -------------------------------------------------------------------------------
    def replace_value(self, value: pd.DataFrame) -> None:
        """Swap in a newer skeleton without telling the browser (the caller sends patches)."""
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


_TABLE_VIEWS = (JS / "table_views.js").read_text()


class CellPatcher(pn.custom.JSComponent):
    """Applies cell updates to the browser's Tabulator row by row (see RunTabulator.send_patch), and
    shows the right page number in its pager."""

    _esm = _TABLE_VIEWS + (JS / "cell_patcher.js").read_text()


class TableBridge(pn.custom.JSComponent):
    """The run table's browser side that Panel's Tabulator lacks: right-click menus on rows and headers,
    double click to inspect, columns resized or moved by dragging, the layout kept in the browser's
    storage, the clipboard, and the value under the cursor on sparklines. Everything the browser does
    arrives as one message (``{"kind": ..., "table": <model id>, ...}``) handled by the page."""

    storage_key = param.String(default="", doc="localStorage key of this proposal's table layout")
    titles = param.Dict(default={}, doc="Plain-text title of each column, for menu labels (set as text)")
    can_write = param.Boolean(default=False, doc="Offer actions that write (reprocess)")
    can_delete = param.Boolean(default=False, doc="Offer deleting variables (the context-edit right)")

    _esm = _TABLE_VIEWS + (JS / "sparkline_hover.js").read_text() + (JS / "table_bridge.js").read_text()

    def __init__(self, on_message, **params):
        super().__init__(**params)
        self._on_message = on_message  # called with each message from the browser

    def _handle_msg(self, msg) -> None:
        if isinstance(msg, dict):
            self._on_message(msg)

    def send(self, msg: dict) -> None:
        """A message to the browser: ``{"kind": "store", "layout": ...}`` or ``{"kind": "clipboard", ...}``."""
        self._send_msg(msg)


# Tabulator's menu options, calling the bridge's menus (a function per menu: Tabulator asks when the menu
# opens, so the labels say what is selected then).
ROW_MENU = JSCode("function (e, row) { const m = window.damnitRunTableMenus; return m ? m.row(e, row) : false }")
HEADER_MENU = JSCode("function (e, column) { const m = window.damnitRunTableMenus; "
                     "return m ? m.header(e, column) : false }")


class KeyNavigator(pn.custom.JSComponent):
    """Reports the arrow keys (``{"step": 1 | -1}``) so the page can move the selection by one run."""

    _esm = _TABLE_VIEWS + (JS / "key_navigator.js").read_text()

    def __init__(self, on_step, **params):
        super().__init__(**params)
        self._on_step = on_step

    def _handle_msg(self, msg) -> None:
        if isinstance(msg, dict) and msg.get("step") in (1, -1):
            self._on_step(msg["step"])


class SplitHandle(pn.custom.JSComponent):
    """The drag handle between the table and the run panel; ``open`` is remembered by the browser."""

    open = param.Boolean(default=True, doc="Is the run panel shown")

    _esm = (JS / "split_handle.js").read_text()
