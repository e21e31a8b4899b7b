"""Sending to the experiment's logbook (its Zulip stream) from the dashboard, and setting where it goes.

A send speaks for the experiment in its stream, so it is a write: only a session that may write sends,
checked here on the server whatever the page shows. The settings (``zulip.cfg``, shared with the
original DAMNIT) hold a secret and decide where everyone's messages go, so changing them is the context
editors' right. The key never leaves the server: pages get a ``LogbookInfo``, which has no key. Sends are
logged with the user and the destination (an audit trail), never with the key. Network calls block:
pages run them with ``in_background``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.live.session import SessionState
from backend.services.logbook import LogbookError, Posted, markdown_table, open_logbook
from backend.storage.logbook_settings import (
    LogbookSettingsError,
    read_logbook_settings,
    update_logbook_settings,
)

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # who sent what where: an audit trail, always in the server log

_last_topics: dict[Path, str] = {}
_last_lock = threading.Lock()


@dataclass(frozen=True)
class LogbookInfo:
    """The database's logbook settings as a page may see them (no key)."""

    configured: bool
    direct: bool  # a Zulip server as a bot (True) or the facility's proxy (False)
    url: str
    email: str
    stream: str  # the settings' stream (direct); the proxy names its own (``current_stream``)
    topics: tuple[str, ...]
    key_set: bool
    missing: tuple[str, ...]
    problem: str = ""  # zulip.cfg could not be read


def logbook_info(session: SessionState) -> LogbookInfo:
    try:
        s = read_logbook_settings(session.source.db_dir)
    except LogbookSettingsError as e:
        return LogbookInfo(False, False, "", "", "", (), False, ("url", "key"), str(e))
    return LogbookInfo(s.configured, s.direct, s.url, s.email, s.stream, s.topics, bool(s.key), tuple(s.missing()))


def last_topic(session: SessionState) -> str:
    """The topic this database's logbook was last sent to from this server ('' if none yet)."""
    with _last_lock:
        return _last_topics.get(Path(session.source.db_dir), "")


def _remember(session: SessionState, posted: Posted) -> None:
    with _last_lock:
        _last_topics[Path(session.source.db_dir)] = posted.topic


def _logbook(session: SessionState):
    try:
        return open_logbook(read_logbook_settings(session.source.db_dir))
    except LogbookSettingsError as e:
        raise ValueError(str(e)) from None


def current_stream(session: SessionState) -> str:
    """Where messages go: the stream the proxy names for the key, or the settings' stream. Blocks."""
    return _logbook(session).stream()


@contextmanager
def _refusals_logged(session: SessionState, what: str, topic: str):
    """A send that fails is logged too (with the reason, never the key), then re-raised for the page."""
    try:
        yield
    except (LogbookError, ValueError) as e:
        log.warning("Logbook: %s could not send %s (topic %r) from %s: %s", session.user or "local user", what,
                    topic, session.source.db_dir, e)
        raise


def _audit(session: SessionState, what: str, posted: Posted) -> None:
    log.info("Logbook: %s sent %s to stream %r, topic %r (messages %s) from %s", session.user or "local user",
             what, posted.stream, posted.topic, ", ".join(map(str, posted.message_ids)) or "?",
             session.source.db_dir)


def send_table(session: SessionState, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, topic: str,
               title: str = "", stream: str | None = None, what: str = "a table") -> Posted:
    """Post rows as a Markdown table (several messages when long). Raises PermissionError, ValueError
    (bad settings) or LogbookError (refused, unreachable, too long)."""
    session.check_write()
    with _refusals_logged(session, what, topic):
        posted = _logbook(session).send_all(topic, markdown_table(headers, rows, title=title), stream=stream)
    _remember(session, posted)
    _audit(session, what, posted)
    return posted


def send_text(session: SessionState, content: str, *, topic: str, stream: str | None = None,
              what: str = "a message") -> Posted:
    """Post one message as written (e.g. a table the sender edited)."""
    session.check_write()
    with _refusals_logged(session, what, topic):
        posted = _logbook(session).send(topic, content, stream=stream)
    _remember(session, posted)
    _audit(session, what, posted)
    return posted


def send_plot(session: SessionState, png: bytes, *, topic: str, caption: str = "", stream: str | None = None,
              filename: str = "plot.png", what: str = "a plot") -> Posted:
    """Upload a PNG and post it with a caption."""
    session.check_write()
    with _refusals_logged(session, what, topic):
        posted = _logbook(session).send_image(topic, caption, png, filename, stream=stream)
    _remember(session, posted)
    _audit(session, what, posted)
    return posted


def save_settings(session: SessionState, *, url: str, key: str | None, topics: str | Sequence[str],
                  email: str = "", stream: str = "") -> LogbookInfo:
    """Store the logbook settings in zulip.cfg (``key=None`` or '' keeps the stored key). Context
    editors only; raises PermissionError or ValueError (a bad value, nothing written)."""
    session.check_context_edit()
    changes: dict[str, Any] = {"url": url, "topics": topics, "email": email, "stream": stream}
    if key:
        changes["key"] = key
    try:
        update_logbook_settings(session.source.db_dir, **changes)
    except LogbookSettingsError as e:
        raise ValueError(str(e)) from None
    log.info("Logbook settings of %s changed by %s: url %r, email %r, stream %r, topics %r%s",
             session.source.db_dir, session.user or "local user", url, email, stream, topics,
             ", new key" if key else "")
    return logbook_info(session)
