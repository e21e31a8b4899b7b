"""The run table's right-click menus and the questions they ask, mixed into ``RunTablePage``.

The browser (``TableBridge``, js/table_bridge.js) builds the menus and sends what was chosen; this side
checks that the message is about this page's table and well formed, asks for confirmation before
anything that writes (reprocessing, deleting a variable), and checks the session's rights again where it
writes (app/actions). A forged or malformed message is refused or ignored, never trusted.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import param

from app.actions import edits
from app.actions.processing_jobs import format_runs, job_board, runs_with_data, slurm_available
from app.live.session import in_background
from app.pages.run_table import export
from app.pages.run_table.layouts import TableLayout
from app.pages.run_table.model import FIXED_COLUMNS
from app.pages.run_table.rows import is_numeric

log = logging.getLogger(__name__)


class TableMenus:
    """Menu actions and confirmations of the run table (uses the page's table, source, model, session)."""

    # -- what the browser asks (TableBridge) --------------------------------------------------------
    def _on_bridge(self, msg: dict) -> None:
        """One message from the browser: its stored layout, a column dragged, or a menu action. Anything
        not about this page's table, or malformed, is ignored; rights are checked where it writes."""
        kind = msg.get("kind")
        if kind == "stored-layout":
            self._browser_layout(msg.get("layout"))
            return
        if msg.get("table") not in self._table_ids():
            return
        try:
            handler = self._BRIDGE_ACTIONS[kind]
        except KeyError:
            return
        try:
            handler(self, msg)
        except PermissionError as e:
            self.say(f"Not allowed: {e}", "error")
        except (TypeError, ValueError, KeyError, IndexError) as e:
            log.debug("Ignoring a malformed %s message %r: %s", kind, msg, e)

    def _table_ids(self) -> set[str]:
        """Ids of this page's table in the browser (one per view of it)."""
        return {model.ref["id"] for model, _ in self.table._models.values()}

    def _keys(self, indices) -> list[int]:
        """Row keys of positions on the page shown (``_index`` of the browser's rows)."""
        page = list(self.table.page_keys())
        at = sorted({i for i in list(indices)[:self.page_size] if isinstance(i, int) and 0 <= i < len(page)})
        return [int(page[i]) for i in at if self.source.has_run(page[i])]

    def _runs(self, keys: list[int]) -> list[int]:
        return [self.source.run_of(k)[1] for k in keys]

    def _column(self, msg: dict) -> str:
        field = msg.get("field")
        if not isinstance(field, str) or field not in self.model.specs():
            raise KeyError(field)
        return field

    def _on_open(self, msg: dict) -> None:
        """A double click on a row (not on a cell being edited): select that run and inspect it."""
        if msg.get("field") in self.table.editable_columns:
            return
        self._inspect(self._runs(self._keys([msg.get("index")])))

    def _on_inspect(self, msg: dict) -> None:
        self._inspect(self._runs(self._keys([msg.get("index")])))

    def _on_logs(self, msg: dict) -> None:
        """The Processing page's log viewer, on that run."""
        runs = self._runs(self._keys([msg.get("index")]))
        if runs:
            self.session.selected_runs = runs
            self.session.open_page = "processing"

    def _on_copy(self, msg: dict) -> None:
        """The runs as a Markdown table of the visible columns (what the browser puts on the clipboard)."""
        keys = self._keys(msg.get("indices") or [])
        text = self.markdown(keys) if keys else ""
        self.bridge.send({"kind": "clipboard", "request": msg.get("request"), "text": text})
        if keys:
            runs = self._runs(keys)
            self.say(f"Copied {'run ' + str(runs[0]) if len(runs) == 1 else f'{len(runs)} runs'} as Markdown")

    def markdown(self, keys: list[int]) -> str:
        specs = self.model.specs()
        df = export.export_frame(self.source, list(self.table.value.columns),
                                 {n: s.title for n, s in specs.items()}, self.tz, keys=keys)
        return export.to_markdown(df)

    def _on_sort(self, msg: dict) -> None:
        self.sorters = [{"field": self._column(msg), "dir": "desc" if msg.get("dir") == "desc" else "asc"}]

    def _on_hide(self, msg: dict) -> None:
        self.hide_column(self._column(msg))

    def _on_filter(self, msg: dict) -> None:
        self.filters_card.collapsed = False
        self.filter_panel.show(self._column(msg))

    def _on_plot(self, msg: dict) -> None:
        """Plots, with this column against run."""
        name = self._column(msg)
        with self.source.lock:
            numeric = is_numeric(self.source.table, name)
        if not numeric:
            title = self.model.specs()[name].title
            self.say(f"“{title}” has no numbers to plot against run (open Inspect for images and arrays)",
                     "warning")
            return
        self.session.plot_request = {"x": "run", "y": name}
        self.session.open_page = "plots"

    def _on_reprocess(self, msg: dict) -> None:
        self.ask_reprocess(self._runs(self._keys(msg.get("indices") or [])))

    def _on_delete(self, msg: dict) -> None:
        self.ask_delete(self._column(msg))

    def _on_resized(self, msg: dict) -> None:
        """A column resized by dragging: already that wide in the browser, so only remembered."""
        name, width = self._column(msg), msg.get("width")
        if not isinstance(width, (int, float)) or isinstance(width, bool):
            return
        width = int(TableLayout.from_json({"widths": {name: width}}).widths[name])
        with param.discard_events(self.table):
            self.table.widths = {**self.table.widths, name: width}
        self._quiet = True
        try:
            self.column_widths = {**self.column_widths, name: width}
        finally:
            self._quiet = False

    def _on_moved(self, msg: dict) -> None:
        """Columns dragged to a new order: already so in the browser, so only remembered (and the
        skeleton's columns put in that order for Panel's later column updates)."""
        shown = [c for c in msg.get("order") or [] if isinstance(c, str)]
        order = self._merge_order(shown)
        self._quiet = True
        try:
            self.column_order = order
        finally:
            self._quiet = False
        self.table.replace_value(self.table.value[[c for c in self._visible_columns() if c in self.table.value]])

    _BRIDGE_ACTIONS = {"open": _on_open, "inspect": _on_inspect, "logs": _on_logs, "copy": _on_copy,
                       "sort": _on_sort, "hide": _on_hide, "filter": _on_filter, "plot": _on_plot,
                       "reprocess": _on_reprocess, "delete": _on_delete, "resized": _on_resized,
                       "moved": _on_moved}

    # -- confirmations ----------------------------------------------------------------------------
    def _ask(self, question: str | None, yes: str = "", action=None) -> None:
        """Show ``question`` with a button ``yes`` that runs ``action`` (None: close the question)."""
        self._confirmed = action
        self.confirm_text.object = question or ""
        self.confirm_yes.label = yes or "Yes"
        self.confirm_bar.visible = question is not None

    def _on_confirm(self, _=None) -> None:
        action, self._confirmed = self._confirmed, None
        self._ask(None)
        if action is not None:
            action()

    def ask_reprocess(self, runs: list[int]) -> None:
        """Reprocess runs from the table, after a confirmation (all variables; the Processing page
        chooses variables)."""
        if not runs:
            return
        try:
            self.session.check_write()
        except PermissionError as e:
            self.say(f"Not allowed: {e}", "error")
            return
        on_disk = runs_with_data(self.source.proposal)
        missing = sorted(set(runs) - on_disk) if on_disk is not None else []
        ok = sorted(r for r in set(runs) if r not in missing)
        if not ok:
            self.say(f"No raw data on disk for run{'s' if len(missing) > 1 else ''} {format_runs(missing)}",
                     "warning")
            return
        where = "Slurm" if slurm_available() else "this machine"
        note = f" (no raw data for {format_runs(missing)})" if missing else ""
        self._ask(f"Reprocess run{'s' if len(ok) > 1 else ''} {format_runs(ok)} with every variable on "
                  f"{where}?{note}", "Reprocess", partial(self._reprocess, ok))

    def _reprocess(self, runs: list[int]) -> None:
        self.session.check_write()
        board = job_board(self.source.db_dir, self.source.proposal)
        self.say(f"Starting processing of {format_runs(runs)}…")

        def done(job, error):
            if error is not None:
                self.say(f"Could not start processing: {error}", "error")
            else:
                self.say(f"Launched processing for {len(job.runs)} runs ({job.message}); "
                         "follow it on the Processing page")

        in_background(lambda: board.submit(runs, [], backend="auto", user=self.session.user), done)

    def ask_delete(self, name: str) -> None:
        """Delete a variable with all its data, after a confirmation that names it and says how many
        runs lose a value (only for sessions that may change the context file)."""
        try:
            self.session.check_context_edit()
        except PermissionError as e:
            self.say(f"Deleting variables is not allowed: {e}", "error")
            return
        spec = self.model.specs().get(name)
        if spec is None or name in FIXED_COLUMNS:
            return
        n = edits.runs_with_values(self.session, name)
        self._ask(f"Delete the variable “{spec.title}” ({name}) with all its data? {n} run{'' if n == 1 else 's'} "
                  f"lose{'s' if n == 1 else ''} its value, in the database and in every run's HDF5 file. This "
                  "cannot be undone; if the context file still defines it, the next processing computes it again.",
                  "Delete variable", partial(self._delete, name, spec.title))

    def _delete(self, name: str, title: str) -> None:
        self.say(f"Deleting “{title}”…")

        shown = [0.0]

        def progress(done: int, total: int) -> None:  # from the worker: at most a few updates a second
            if done == total or time.monotonic() - shown[0] > 0.3:
                shown[0] = time.monotonic()
                self._later(self.say, f"Deleting “{title}” from the run files: {done} of {total}")

        def finished(result, error):
            if error is not None:
                self.say(f"“{title}” was not deleted: {error}", "error")
            elif result.files_failed:
                bad = ", ".join(sorted(result.files_failed)[:5])
                self.say(f"“{title}” deleted from the database and {result.files_changed} run files; "
                         f"{len(result.files_failed)} could not be changed ({bad})", "warning")
            else:
                self.say(f"“{title}” deleted: {result.runs} runs, {result.files_changed} run files")

        in_background(lambda: edits.delete_variable(self.session, name, progress), finished)
