"""Standalone comments: time-stamped notes not tied to a run (``time_comments``): list, add, edit."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import panel as pn

from app.value_plots import plain_text

TITLE = "Comments"
SLUG = "comments"
TZ = ZoneInfo("Europe/Berlin")  # the facility's local time, as the run table shows timestamps
REFRESH_MS = 5000
COLUMNS = ["#", "Timestamp", "Comment"]


def list_comments(db_dir: Any) -> pd.DataFrame:
    """All standalone comments, newest first, timestamps as local text."""
    from backend.storage.database import DamnitDB

    with DamnitDB.from_dir(db_dir) as db:
        rows = db.standalone_comments()
    df = pd.DataFrame(
        [{"#": r["id"], "Timestamp": format_time(r["timestamp"]), "Comment": r["comment"] or ""} for r in rows],
        columns=COLUMNS)
    return df.iloc[::-1].reset_index(drop=True)


def format_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(float(ts), TZ).strftime("%Y-%m-%d %H:%M:%S")


def add_comment(db_dir: Any, when: dt.datetime, text: str) -> int:
    """Store a new comment; ``when`` naive = facility local time. Empty text is refused."""
    from backend.storage.database import DamnitDB

    text = text.strip()
    if not text:
        raise ValueError("the comment is empty")
    if when.tzinfo is None:
        when = when.replace(tzinfo=TZ)
    with DamnitDB.from_dir(db_dir) as db:
        return db.add_standalone_comment(when.timestamp(), text)


def edit_comment(db_dir: Any, comment_id: int, text: str) -> None:
    from backend.storage.database import DamnitDB

    with DamnitDB.from_dir(db_dir) as db:
        db.change_standalone_comment(int(comment_id), text)


def view(session: Any) -> pn.viewable.Viewable:
    db_dir = session.source.db_dir
    can_write = session.can_write
    table = pn.widgets.Tabulator(
        list_comments(db_dir), show_index=False, sizing_mode="stretch_width", layout="fit_data_stretch",
        editors={"#": None, "Timestamp": None, "Comment": "textarea" if can_write else None},
        disabled=not can_write, widths={"Comment": "60%"}, max_height=500, css_classes=["damnit-comments"],
        configuration={"columnDefaults": {"headerSort": True}})
    when = pn.widgets.DatetimePicker(label="Time", value=dt.datetime.now(TZ).replace(tzinfo=None, microsecond=0),
                                     width=200)
    text = pn.widgets.TextAreaInput(label="Comment", placeholder="What happened?", sizing_mode="stretch_width",
                                    height=80, css_classes=["damnit-new-comment"])
    publish = pn.widgets.Button(label="Publish", color="primary", align="end", disabled=not can_write,
                                css_classes=["damnit-publish"])
    now_btn = pn.widgets.Button(label="Now", align="end", width=60)
    message = plain_text("")

    def refresh() -> None:
        df = list_comments(db_dir)
        if not df.equals(table.value):
            table.value = df

    def on_publish(_=None) -> None:
        session.check_write()
        try:
            add_comment(db_dir, when.value or dt.datetime.now(TZ).replace(tzinfo=None), text.value_input or
                        text.value)
        except ValueError as e:
            message.object = f"Not published: {e}"
            return
        text.value = ""
        message.object = "Published"
        refresh()

    def on_edit(event: Any) -> None:
        if event.column != "Comment":
            return
        session.check_write()
        comment_id = int(table.value["#"].iloc[event.row])
        try:
            edit_comment(db_dir, comment_id, event.value)
            message.object = f"Comment #{comment_id} updated"
        except KeyError as e:
            message.object = f"Not saved: {e}"
        refresh()

    publish.on_click(on_publish)
    now_btn.on_click(lambda _: setattr(when, "value", dt.datetime.now(TZ).replace(tzinfo=None, microsecond=0)))
    table.on_edit(on_edit)
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        cb = pn.state.add_periodic_callback(refresh, REFRESH_MS)
        pn.state.on_session_destroyed(lambda ctx: cb.stop())
    form = [pn.Row(when, now_btn), text, pn.Row(publish, message)] if can_write else [
        plain_text(session.write_denied_reason or "Read-only: comments cannot be added here.")]
    return pn.Column(pn.pane.Markdown("### Standalone comments"), *form, table, sizing_mode="stretch_width",
                     name=TITLE)
