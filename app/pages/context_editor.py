"""Context file page: edit ``context.py`` in the browser, validate it the way processing will, save.

Validation and saving run in a worker thread (the engine check starts the context's own Python). A save
is refused when validation finds an error (the message names the line), allowed with pyflakes warnings,
and stopped with a choice (reload / overwrite) when the file changed on disk since it was loaded.
After a save the variable list is updated (``damnit read-context``), and runs that failed because an
earlier version of the file did not load are offered for reprocessing.

The context file is code the backend runs, so saving (and validating, which runs the code) needs
``session.can_edit_context`` (see ``--context-editors``), checked here on the server. Every save is
logged with the user and the replaced version is kept in ``.context_history/``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import panel as pn
import param

from app.actions.context_check import (
    ERROR,
    HISTORY_DIR,
    OK,
    WARNING,
    CheckResult,
    ContextChangedOnDisk,
    check_context,
    file_fingerprint,
    save_context,
    update_variable_list,
)
from app.display import theme
from app.display.text import safe_text
from app.live.session import SessionState, every
from app.pages.run_states_view import StaleContextOffer

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # context saves and refusals are an audit trail: always in the server log

TITLE = "Context file"
SLUG = "context_editor"
DISK_CHECK_MS = 5000
STATUS_COLOURS = {OK: "#2e7d32", WARNING: "#b26a00", ERROR: "#c62828", "busy": "#555"}


EDITOR_THEMES = {theme.LIGHT: "chrome", theme.DARK: "tomorrow_night"}  # ace themes bundled with Panel


class UnsavedGuard(pn.custom.JSComponent):
    """Asks the browser to confirm leaving or reloading the page while the editor has unsaved edits."""

    dirty = param.Boolean(default=False)

    _esm = """
    export function render({ model }) {
      const guard = (event) => { if (model.dirty) { event.preventDefault(); event.returnValue = '' } }
      window.addEventListener('beforeunload', guard)
      model.on('remove', () => window.removeEventListener('beforeunload', guard))
    }
    """


class ContextEditor:
    """The editor, its buttons and status for one session."""

    def __init__(self, session: Any):
        self.session = session
        self.path = Path(session.source.db_dir) / "context.py"
        self.loaded_fingerprint: str | None = None
        self.loaded_text = ""
        self.editor = pn.widgets.CodeEditor(language="python", sizing_mode="stretch_width", height=520,
                                            theme=EDITOR_THEMES[theme.current()], css_classes=["damnit-context-editor"],
                                            readonly=not session.can_edit_context)
        self.validate_btn = pn.widgets.Button(label="Validate", color="default", width=100,
                                              disabled=not session.can_edit_context)
        self.save_btn = pn.widgets.Button(label="Save", color="primary", width=100,
                                          disabled=not session.can_edit_context, css_classes=["damnit-save"])
        self.reload_btn = pn.widgets.Button(label="Reload from disk", width=140)
        self.discard_btn = pn.widgets.Button(label="Discard my edits and reload", color="danger", visible=False,
                                             css_classes=["damnit-discard"])
        self.guard = UnsavedGuard(width=0, height=0, margin=0)
        self.overwrite_btn = pn.widgets.Button(label="Overwrite the file on disk", color="danger",
                                               visible=False)
        self.status = safe_text("", css_classes=["damnit-context-status"], **{"font-weight": "bold"})
        self.details = safe_text("", css_classes=["damnit-context-details"],
                                 **{"font-size": "12px", "font-family": "monospace"})
        self.dirty = safe_text("", color="#c62828")
        self.offer = StaleContextOffer(session, armed=False)  # shown after a save, while such runs exist
        self.validate_btn.on_click(self.on_validate)
        self.save_btn.on_click(self.on_save)
        self.reload_btn.on_click(self.on_reload)
        self.discard_btn.on_click(lambda _: self.load())
        self.overwrite_btn.on_click(self.on_overwrite)
        self.editor.param.watch(self._mark_dirty, "value")
        self.load()
        note = [] if session.can_edit_context else [safe_text(
            "Read-only: " + (session.context_edit_denied_reason or session.write_denied_reason
                             or "this dashboard cannot save changes"),
            css_classes=["damnit-context-readonly"], padding="8px", background="#fff3cd", color="#664d03",
            **{"border-radius": "4px"})]
        self.layout = pn.Column(
            *note,
            pn.Row(self.validate_btn, self.save_btn, self.reload_btn, self.discard_btn, self.overwrite_btn,
                   self.dirty),
            self.status, self.offer.layout, self.editor, self.details, self.guard, sizing_mode="stretch_width",
            name=TITLE)
        every(DISK_CHECK_MS, self.check_disk)

    # -- loading ------------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        self.loaded_text = text
        self.loaded_fingerprint = file_fingerprint(self.path)
        self.editor.value = text
        self.overwrite_btn.visible = self.discard_btn.visible = False
        self._set_status("busy", f"Loaded {self.path}", "")
        self._mark_dirty()

    def on_reload(self, _=None) -> None:
        """Reload the file; with unsaved edits, ask first (they would be lost)."""
        if self.editor.value == self.loaded_text:
            self.load()
            return
        self.discard_btn.visible = True
        self._set_status(WARNING, "You have unsaved edits: 'Discard my edits and reload' to lose them, "
                                  "or save first", "")

    def _mark_dirty(self, *_: Any) -> None:
        changed = self.editor.value != self.loaded_text
        self.dirty.object = "unsaved changes" if changed else ""
        self.guard.dirty = changed  # the browser asks before the page is left or reloaded

    def check_disk(self) -> None:
        """Notice edits made elsewhere: reload silently if we have no changes, else warn."""
        if file_fingerprint(self.path) == self.loaded_fingerprint:
            return
        if self.editor.value == self.loaded_text:
            self.load()
            self._set_status(OK, "The file changed on disk and was reloaded", "")
        elif not self.overwrite_btn.visible:
            self._conflict()

    def _conflict(self) -> None:
        self.overwrite_btn.visible = True
        self._set_status(ERROR, "The file changed on disk since you loaded it: 'Reload from disk' "
                                "(discards your edits) or 'Overwrite the file on disk'", "")

    # -- validation & saving --------------------------------------------------------------------------
    def _set_status(self, status: str, text: str, details: str) -> None:
        self.status.object = text
        self.status.styles = {**self.status.styles, "color": STATUS_COLOURS.get(status, "#555")}
        self.details.object = details

    def _show_result(self, result: CheckResult) -> None:
        self._set_status(result.status, result.summary, result.message)

    async def _check(self, code: str) -> CheckResult:
        self._set_status("busy", "Validating…", "")
        return await asyncio.to_thread(check_context, code, self.session.source.db_dir)

    def _refused(self, action: str) -> bool:
        """Server-side guard (a forged click from the browser lands here too): refuse and log."""
        try:
            self.session.check_context_edit()
        except PermissionError as e:
            log.warning("Refused to %s %s for %s: %s", action, self.path, self.session.user or "local user", e)
            self._set_status(ERROR, f"Not allowed: {e}", "")
            return True
        return False

    async def on_validate(self, _=None) -> None:
        if self._refused("validate"):  # validation runs the code (the engine loads it)
            return
        self._show_result(await self._check(self.editor.value))

    async def on_save(self, _=None, force: bool = False) -> None:
        if self._refused("save"):
            return
        code = self.editor.value
        self.save_btn.disabled = True
        try:
            result = await self._check(code)
            if result.status == ERROR:
                self._set_status(ERROR, f"Not saved. {result.summary}", result.message)
                return
            try:
                self.loaded_fingerprint = save_context(self.path, code, self.loaded_fingerprint, force=force,
                                                       user=self.session.user)
            except ContextChangedOnDisk:
                self._conflict()
                return
            except OSError as e:
                self._set_status(ERROR, f"Not saved: cannot write {self.path}: {e}", "")
                return
            log.info("Context file %s saved by %s (earlier versions in %s/)", self.path,
                     self.session.user or "local user", HISTORY_DIR)
            self.loaded_text = code
            self.overwrite_btn.visible = False
            self._mark_dirty()
            saved = "Saved" + (" with warnings" if result.status == WARNING else "")
            self._set_status(result.status, f"{saved}; updating the variable list…", result.message)
            ok, output = await asyncio.to_thread(update_variable_list, self.session.source.db_dir)
            self.session.source.wake()
            if ok:
                self._set_status(result.status, f"{saved}. Variable list updated.", result.message)
            else:
                self._set_status(WARNING, f"{saved}, but updating the variable list failed", output)
            self.offer.arm()
        finally:
            self.save_btn.disabled = not self.session.can_edit_context

    async def on_overwrite(self, _=None) -> None:
        await self.on_save(force=True)


class ContextEditorPage(pn.viewable.Viewer):
    session = param.ClassSelector(class_=SessionState)

    def __panel__(self) -> pn.viewable.Viewable:
        return ContextEditor(self.session).layout


PAGE = ContextEditorPage
