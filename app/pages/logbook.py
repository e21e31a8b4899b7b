"""The logbook dialog: send the selected runs, or a plot, to the experiment's Zulip stream.

A page adds one control: ``SendTable(session=..., columns=<the visible columns>)`` on the run table,
``SendPlot(session=..., plot=<the plotted object>)`` beside a plot. Only sessions that may write get it
(the server checks again when sending, ``app/actions/logbook.py``). The dialog says where the message
goes (stream, topic: the database's settings, then the last topic used), lets the sender edit it, shows
exactly what will be sent (the Markdown, or the picture, drawn on the server) and reports Zulip's
answer. Users who may edit the context file also find the settings (``zulip.cfg``) there.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import numpy as np
import panel as pn
import param

from app.actions import logbook as actions
from app.config import get_config, zone_label
from app.display.formatting import format_number, format_time
from app.display.plot_image import plot_png, plot_title
from app.display.text import escape, safe_options, safe_text
from app.live.session import SessionState, in_background
from app.live.source import ProposalSource
from backend.services.logbook import MAX_MESSAGE_CHARS, LogbookError, markdown_table

log = logging.getLogger(__name__)

# Values that are pictures in the table (thumbnails, sparklines): nothing to read in a text table.
PICTURE_PLACEHOLDERS = {"<thumbnail>", "<sparkline>"}
FIXED_TITLES = {"run": "Run", "start_time": "Timestamp", "comment": "Comment"}
MESSAGE_BREAK = "\n\n"  # between the messages of a long table in the preview
DIALOG_CSS = """
:host { position: fixed !important; top: 110px; left: 50%; transform: translateX(-50%); z-index: 1000;
        background: white; border-radius: 8px; box-shadow: 0 6px 30px rgba(0, 0, 0, .35);
        padding: 10px 14px; max-height: calc(100vh - 100px); overflow-y: auto; }
"""
NOT_SET_UP = ("No logbook is set up for this database. Someone who may edit the context file can set it up "
              "below, or in the database folder with `damnit db-config zulip.url URL` and "
              "`damnit db-config zulip.key -` (the key on standard input).")
NOT_SET_UP_ASK = ("No logbook is set up for this database. Ask someone who may edit the context file, or set "
                  "it in the database folder with `damnit db-config zulip.url URL` and "
                  "`damnit db-config zulip.key -` (the key on standard input).")


def table_rows(source: ProposalSource, runs: list[int], columns: list[str], tz: dt.tzinfo
               ) -> tuple[list[str], list[list[str]]]:
    """The runs (ascending) and columns as text, as the original copies a selection as Markdown:
    numbers formatted as the table shows them, empty cells empty, columns of pictures left out."""
    source.wait_loaded()
    with source.lock:
        table = source.table
        found = [table.row(source.key_for(None, r)) for r in sorted(set(runs))]
        rows = np.array([r for r in found if r is not None], dtype=np.int64)
        headers: list[str] = []
        cells: list[list[str]] = []
        for name in columns:
            if name == "proposal":
                continue
            if name == "run":
                values = [str(int(v)) for v in table.run_number[rows].tolist()]
            elif name == "start_time":
                values = [format_time(t, tz) for t in table.start_time[rows].tolist()]
            else:
                raw = table.table_values(name, rows)
                if any(isinstance(v, str) and v in PICTURE_PLACEHOLDERS for v in raw):
                    continue
                values = [_cell(v) for v in raw]
            headers.append(_title(source, name, tz))
            cells.append(values)
    return headers, [list(r) for r in zip(*cells)] if cells else []


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else format_number(value)


def _title(source: ProposalSource, name: str, tz: dt.tzinfo) -> str:
    if name == "start_time":
        return f"Timestamp ({zone_label(tz)})"
    if name in FIXED_TITLES:
        return FIXED_TITLES[name]
    units = source.units(name)
    title = source.variable(name).display_title
    return f"{title} ({units})" if units else title


def _reason(error: BaseException) -> str:
    return str(error.args[0]) if isinstance(error, (PermissionError, KeyError)) and error.args else str(error)


def _notify(level: str, message: str) -> None:
    notes = pn.state.notifications
    if notes is not None:
        getattr(notes, level)(escape(message), duration=8000 if level == "error" else 5000)


class _LogbookDialog(pn.viewable.Viewer):
    """A button opening the dialog; subclasses say what is sent."""

    session = param.ClassSelector(class_=SessionState)

    LABEL = "Send to logbook"
    KIND = "table"

    def __init__(self, **params):
        super().__init__(**params)
        self.info: actions.LogbookInfo | None = None
        self.open_button = pn.widgets.Button(label=self.LABEL, width=170, align="end",
                                             css_classes=[f"dmn-logbook-open-{self.KIND}"],
                                             description="Post this to the experiment's Zulip stream")
        self.heading = safe_text("", **{"font-weight": "bold", "font-size": "15px"})
        self.stream = pn.widgets.TextInput(label="Stream", width=250, css_classes=["dmn-logbook-stream"])
        self.topic = pn.widgets.TextInput(label="Topic *", width=240, css_classes=["dmn-logbook-topic"])
        self.known_topics = pn.widgets.Select(label="Known topics", options=[], width=170,
                                              css_classes=["dmn-logbook-topics"])
        self.known_topics.param.watch(self._pick_topic, "value")
        self.status = safe_text("", css_classes=["dmn-logbook-status"], width=700)
        self.send_button = pn.widgets.Button(label="Send", color="primary", width=110,
                                             css_classes=["dmn-logbook-send"])
        self.cancel_button = pn.widgets.Button(label="Cancel", width=110, css_classes=["dmn-logbook-cancel"])
        self.close_button = pn.widgets.Button(label="✕", width=40, description="Close")
        self.where = pn.Row(self.stream, self.topic, self.known_topics)
        self.settings = self._settings_card()
        self.dialog = pn.Column(
            pn.Row(self.heading, pn.HSpacer(), self.close_button),
            self.where, *self._content(), self.status, pn.Row(self.cancel_button, self.send_button),
            self.settings, visible=False, width=740, stylesheets=[DIALOG_CSS],
            css_classes=["dmn-logbook-dialog", f"dmn-logbook-{self.KIND}"])
        self.open_button.on_click(self._open)
        self.cancel_button.on_click(self._close)
        self.close_button.on_click(self._close)
        self.send_button.on_click(self._send)

    # -- what is sent (subclasses) ----------------------------------------------------------------
    def _content(self) -> list:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Fill the dialog with what would be sent now."""
        raise NotImplementedError

    def _post(self, topic: str, stream: str | None):
        """Send (called in a worker thread)."""
        raise NotImplementedError

    # -- the dialog -------------------------------------------------------------------------------
    def say(self, message: str, level: str = "info") -> None:
        colour = {"error": "#b71c1c", "warning": "#e65100", "info": "#333", "ok": "#1b5e20"}[level]
        self.status.styles = {**self.status.styles, "color": colour}
        self.status.object = message

    def _open(self, _=None) -> None:
        self.info = info = actions.logbook_info(self.session)
        self._fill_settings(info)
        self.say("")
        ready = info.configured
        self.where.visible = ready
        self.send_button.disabled = not ready
        if not ready:
            editor = self.session.can_edit_context
            self.say(info.problem or (NOT_SET_UP if editor else NOT_SET_UP_ASK), "warning")
            self.settings.collapsed = not editor
        else:
            last = actions.last_topic(self.session)
            known = list(dict.fromkeys([*info.topics, *([last] if last else [])]))
            self.known_topics.options = {"(pick one)": "", **{t: t for t in known}}  # a native <select>: text
            self.known_topics.value = ""
            self.known_topics.visible = bool(known)
            topic = last or (info.topics[0] if info.topics else "")
            self.topic.param.update(value=topic, value_input=topic)
            if info.direct:
                self.stream.disabled = False
                self.stream.value = info.stream
            else:
                self.stream.disabled = True  # the proxy posts to the proposal's stream: ask it which
                self.stream.value = ""
                self.stream.placeholder = "asking the logbook..."
                in_background(lambda: actions.current_stream(self.session), self._show_stream)
        self._prepare()
        self.dialog.visible = True

    def _pick_topic(self, event) -> None:
        if event.new:
            self.topic.param.update(value=event.new, value_input=event.new)

    def _show_stream(self, stream: str | None, error: BaseException | None) -> None:
        if error is not None:
            self.stream.placeholder = "unknown"
            self.say(f"The logbook did not say which stream: {_reason(error)}", "error")
        else:
            self.stream.value = stream or ""

    def _close(self, _=None) -> None:
        self.dialog.visible = False

    def _send(self, _=None) -> None:
        topic = (self.topic.value_input or self.topic.value or "").strip()
        stream = self.stream.value.strip() if self.info is not None and self.info.direct else None
        self.send_button.disabled = True
        self.send_button.loading = True
        self.say("Sending...")
        in_background(lambda: self._post(topic, stream), self._sent)

    def _sent(self, posted, error: BaseException | None) -> None:
        self.send_button.loading = False
        self.send_button.disabled = False
        if error is not None:
            if not isinstance(error, (PermissionError, ValueError, LogbookError)):
                log.error("Sending to the logbook failed", exc_info=error)
            message = f"Not sent: {_reason(error)}"
            self.say(message, "error")
            _notify("error", message)
            return
        where = f"{posted.stream} > {posted.topic}" if posted.stream else posted.topic
        n = len(posted.message_ids)
        message = f"Sent to the logbook ({where})" + (f" as {n} messages" if n > 1 else "")
        self.say(message, "ok")
        _notify("success", message)
        self.dialog.visible = False

    # -- settings (context editors) ---------------------------------------------------------------
    def _settings_card(self) -> pn.Card:
        card = pn.Card(title="Logbook settings", collapsed=True, width=710, css_classes=["dmn-logbook-settings"])
        if not (self.session.can_write and self.session.can_edit_context):
            card.visible = False
            return card
        self.set_url = pn.widgets.TextInput(label="Address (the facility's logbook proxy, or a Zulip server)",
                                            width=660, placeholder="https://...")
        self.set_key = pn.widgets.PasswordInput(label="Key (the proxy's token, or the bot's API key)", width=660)
        self.set_email = pn.widgets.TextInput(label="Bot email (only for a Zulip server)", width=320)
        self.set_stream = pn.widgets.TextInput(label="Stream (only for a Zulip server)", width=320)
        self.set_topics = pn.widgets.TextAreaInput(label="Topics to offer (one per line)", width=660, height=80)
        save = pn.widgets.Button(label="Save settings", color="primary", width=140,
                                 css_classes=["dmn-logbook-save"])
        save.on_click(self._save_settings)
        note = safe_text("Stored in zulip.cfg in the database folder, where the original DAMNIT reads them too. "
                         "The key is never shown again.", color="grey", **{"font-size": "12px"})
        card.objects = [self.set_url, self.set_key, pn.Row(self.set_email, self.set_stream), self.set_topics,
                        note, save]
        return card

    def _fill_settings(self, info: actions.LogbookInfo) -> None:
        if not self.settings.visible:
            return
        self.set_url.value = info.url
        self.set_key.value = ""
        self.set_key.placeholder = "set: leave empty to keep it" if info.key_set else "not set"
        self.set_email.value = info.email
        self.set_stream.value = info.stream
        self.set_topics.value = "\n".join(info.topics)

    def _save_settings(self, _=None) -> None:
        try:
            actions.save_settings(self.session, url=self.set_url.value, key=self.set_key.value or None,
                                  topics=self.set_topics.value, email=self.set_email.value,
                                  stream=self.set_stream.value)
        except (PermissionError, ValueError) as e:
            self.say(f"Settings not saved: {_reason(e)}", "error")
            return
        self._open()
        self.say("Settings saved.", "ok")

    def __panel__(self) -> pn.viewable.Viewable:
        if not self.session.can_write:
            return pn.Column(visible=False, width=0, height=0, margin=0)
        return pn.Row(self.open_button, self.dialog, margin=0)


class SendTable(_LogbookDialog):
    """The selected runs as a Markdown table (the visible columns, which can be narrowed here)."""

    columns = param.Callable(doc="() -> the table's visible columns, in order")

    LABEL = "Send to logbook"
    KIND = "table"

    def __init__(self, **params):
        self.title = pn.widgets.TextInput(label="Title (optional)", width=330)
        self.chosen = pn.widgets.MultiChoice(label="Columns to send", options={}, width=700)
        self.message = pn.widgets.TextAreaInput(label="Message (Markdown; edit freely)", width=700, height=230,
                                                css_classes=["dmn-logbook-message"])
        self._generated = ""
        self._messages: list[str] = []
        super().__init__(**params)
        selected = self.session.param.selected_runs
        self.open_button.param.update(
            description="Post the selected runs to the experiment's Zulip stream as a table",
            label=pn.bind(self._open_label, selected), disabled=selected.rx.not_())
        # The preview follows typing and the choice of columns.
        pn.bind(lambda *_: self._compose(), self.title.param.value_input, self.chosen.param.value, watch=True)

    def _content(self) -> list:
        return [self.title, self.chosen, self.message]

    def _open_label(self, runs: list[int]) -> str:
        return f"Send {len(runs)} run{'s' if len(runs) != 1 else ''} to logbook" if runs else self.LABEL

    @param.depends("session.selected_runs", watch=True)
    def _selection_changed(self) -> None:
        if self.dialog.visible:
            self._prepare()

    def _prepare(self) -> None:
        runs = sorted(set(self.session.selected_runs))
        shown = ", ".join(map(str, runs[:12])) + (f" and {len(runs) - 12} more" if len(runs) > 12 else "")
        self.heading.object = f"Send run{'s' if len(runs) != 1 else ''} {shown} to the logbook"
        names = [c for c in (self.columns() if self.columns else []) if c != "proposal"]
        tz = get_config().tz
        options = safe_options({_title(self.session.source, n, tz): n for n in names})
        previous = set(self.chosen.value)
        self.chosen.options = options
        self.chosen.value = [n for n in names if n in previous] if previous & set(names) else names
        self._compose()

    def _compose(self) -> None:
        runs = sorted(set(self.session.selected_runs))
        if not runs or not self.chosen.value:
            self._messages, self._generated = [], ""
            self.message.value = ""
            return
        order = [n for n in self.chosen.options.values() if n in set(self.chosen.value)]
        headers, rows = table_rows(self.session.source, runs, order, get_config().tz)
        try:
            self._messages = markdown_table(headers, rows, title=self._title_text())
        except LogbookError as e:
            self._messages = []
            self.say(str(e), "error")
        self._generated = MESSAGE_BREAK.join(self._messages)
        self.message.value = self._generated
        if len(self._messages) > 1:
            self.say(f"Long table: it will go as {len(self._messages)} messages (Zulip takes "
                     f"{MAX_MESSAGE_CHARS} characters in one).", "info")

    def _title_text(self) -> str:
        return self.title.value_input if self.title.value_input is not None else self.title.value

    def _post(self, topic: str, stream: str | None):
        runs = sorted(set(self.session.selected_runs))
        what = f"runs {', '.join(map(str, runs))} as a table"
        text = self.message.value
        if text == self._generated and self._messages:
            order = [n for n in self.chosen.options.values() if n in set(self.chosen.value)]
            headers, rows = table_rows(self.session.source, runs, order, get_config().tz)
            return actions.send_table(self.session, headers, rows, topic=topic, title=self._title_text(),
                                      stream=stream, what=what)
        return actions.send_text(self.session, text, topic=topic, stream=stream, what=what + " (edited)")


class SendPlot(_LogbookDialog):
    """The plot as it is now, drawn as a PNG on the server, with a caption."""

    plot = param.Callable(doc="() -> the plotted HoloViews object (e.g. a pane's .object)")
    name_hint = param.String(default="plot", doc="File name of the picture, without .png")

    LABEL = "Send plot to logbook"
    KIND = "plot"

    def __init__(self, **params):
        self.caption = pn.widgets.TextAreaInput(label="Message (Markdown)", width=700, height=70,
                                                css_classes=["dmn-logbook-caption"])
        self.preview = pn.pane.PNG(None, width=640, css_classes=["dmn-logbook-preview"])
        self._png: bytes | None = None
        super().__init__(**params)

    def _content(self) -> list:
        return [self.caption, self.preview]

    def _prepare(self) -> None:
        obj = self.plot() if self.plot else None
        self.heading.object = "Send this plot to the logbook"
        title = plot_title(obj) if obj is not None else ""
        self.caption.value = f"{title} ({self.session.source.title})" if title else self.session.source.title
        self._png = None
        self.preview.object = None
        self.preview.visible = False
        if self.info is not None and self.info.configured:
            self.send_button.disabled = True
        self.say("Drawing the plot...")
        in_background(lambda: plot_png(obj), self._drawn)

    def _drawn(self, png: bytes | None, error: BaseException | None) -> None:
        if error is not None:
            if not isinstance(error, ValueError):
                log.error("Drawing a plot for the logbook failed", exc_info=error)
            self.say(f"The plot could not be drawn: {_reason(error)}", "error")
            return
        self._png = png
        self.preview.object = png
        self.preview.visible = True
        if self.status.object == "Drawing the plot...":
            self.say("")
        self.send_button.disabled = not (self.info is not None and self.info.configured)

    def _post(self, topic: str, stream: str | None):
        if not self._png:
            raise ValueError("the plot is not drawn yet")
        filename = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name_hint)[:60] or "plot"
        return actions.send_plot(self.session, self._png, topic=topic, caption=self.caption.value,
                                 stream=stream, filename=f"{filename}.png", what=f"a plot ({filename})")

