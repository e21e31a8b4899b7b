"""Standalone comments: time-stamped notes not tied to a run (``time_comments``): list, add, edit.

The list is the proposal source's (kept current for all sessions by one poll or Kafka subscription);
adding and editing go through ``app.actions.edits`` like every other write (permission, audit log).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import panel as pn
import param

from app.actions import edits
from app.config import get_config, zone_label
from app.display.formatting import format_time
from app.display.text import safe_text
from app.display.theme import TABLE_CSS
from app.live.records import Change
from app.live.session import SessionState

TITLE = "Comments"
SLUG = "comments"
COLUMNS = ["#", "Timestamp", "Comment"]
# Sorting the Timestamp column by time (its text, as everywhere, is formatting.TIME_FORMAT: day after hour).
TIME_SORTER = {"field": "Timestamp", "sorter": "datetime", "sorterParams": {"format": "HH:mm:ss dd/MM/yyyy"}}


def comments_frame(comments: list[dict], tz: dt.tzinfo) -> pd.DataFrame:
    """Standalone comments, newest first, times as text in ``tz``."""
    df = pd.DataFrame([{"#": c["id"], "Timestamp": format_time(c["timestamp"], tz),
                        "Comment": c["comment"] or ""} for c in comments], columns=COLUMNS)
    return df.iloc[::-1].reset_index(drop=True)


class CommentsPage(pn.viewable.Viewer):
    """The list of standalone comments and, for sessions that may write, a form to add one."""

    session = param.ClassSelector(class_=SessionState)

    def __init__(self, **params):
        super().__init__(**params)
        self.tz = get_config().tz
        can_write = self.session.can_write
        self.table = pn.widgets.Tabulator(
            self._frame(), show_index=False, sizing_mode="stretch_width", layout="fit_data_stretch",
            editors={"#": None, "Timestamp": None, "Comment": "textarea" if can_write else None},
            disabled=not can_write, widths={"Comment": "60%"}, max_height=500, css_classes=["damnit-comments"],
            titles={"Timestamp": f"Timestamp ({zone_label(self.tz)})"}, stylesheets=[TABLE_CSS],
            configuration={"columnDefaults": {"headerSort": True}, "columns": [TIME_SORTER]})
        self.when = pn.widgets.DatetimePicker(label=f"Time ({zone_label(self.tz)})", value=self._now(), width=220)
        self.text = pn.widgets.TextAreaInput(label="Comment", placeholder="What happened?",
                                             sizing_mode="stretch_width", height=80,
                                             css_classes=["damnit-new-comment"])
        self.publish = pn.widgets.Button(label="Publish", color="primary", align="end", disabled=not can_write,
                                         css_classes=["damnit-publish"])
        self.now_btn = pn.widgets.Button(label="Now", align="end", width=60)
        self.message = safe_text("")
        self.publish.on_click(self._publish)
        self.now_btn.on_click(lambda _: setattr(self.when, "value", self._now()))
        self.table.on_edit(self._on_edit)
        self.session.on_change(self._on_change)

    def _now(self) -> dt.datetime:
        return dt.datetime.now(self.tz).replace(tzinfo=None, microsecond=0)

    def _frame(self) -> pd.DataFrame:
        with self.session.source.lock:
            comments = list(self.session.source.comments)
        return comments_frame(comments, self.tz)

    def _refresh(self) -> None:
        df = self._frame()
        if not df.equals(self.table.value):
            self.table.value = df

    def _on_change(self, change: Change) -> None:
        if change.comments or change.reset:
            self._refresh()

    def _publish(self, _=None) -> None:
        when = (self.when.value or self._now()).replace(tzinfo=self.tz)  # typed in the server's zone
        try:
            edits.add_standalone_comment(self.session, when.timestamp(), self.text.value_input or self.text.value)
        except (ValueError, PermissionError) as e:
            self.message.object = f"Not published: {e}"
            return
        self.text.value = ""
        self.message.object = "Published"

    def _on_edit(self, event: Any) -> None:
        if event.column != "Comment":
            return
        comment_id = int(self.table.value["#"].iloc[event.row])
        try:
            edits.edit_standalone_comment(self.session, comment_id, event.value)
            self.message.object = f"Comment #{comment_id} updated"
        except (KeyError, PermissionError) as e:
            self.message.object = f"Not saved: {e}"

    def __panel__(self) -> pn.viewable.Viewable:
        form = [pn.Row(self.when, self.now_btn), self.text, pn.Row(self.publish, self.message)] \
            if self.session.can_write else [safe_text(self.session.write_denied_reason
                                                      or "Read-only: comments cannot be added here.")]
        return pn.Column(pn.pane.Markdown("### Standalone comments"), *form, self.table,
                         sizing_mode="stretch_width", name=TITLE)


PAGE = CommentsPage
