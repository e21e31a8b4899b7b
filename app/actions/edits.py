"""Writes from the dashboard: run comments, user-editable values, new user variables and standalone
comments.

Each write checks the session's permission here, on the server (the UI hiding an editor is not a
guard), goes through ``DamnitDB`` (WAL, busy retries), is logged with the user (an audit trail),
refreshes the shared source at once and then broadcasts the original GUI's messages
(``run_values_updated`` / ``variable_set``) so other dashboards and the Qt GUI see it.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from app.live.session import SessionState
from backend.base.messages import UpdateProducer
from backend.storage.database import DamnitDB
from backend.storage.user_variables import UserEditableVariable

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # who changed what: an audit trail, always in the server log

_producer = None
_producer_lock = threading.Lock()


def get_producer():
    """One update producer per server process (offline when there is no broker)."""
    global _producer
    with _producer_lock:
        if _producer is None:
            try:
                _producer = UpdateProducer.from_env(connect_timeout=3.0)
            except ValueError as e:  # malformed AMORE_BROKER
                log.warning("Not sending update messages: %s", e)
                _producer = UpdateProducer.offline()
        return _producer


def warm_producer() -> None:
    """Connect the producer in the background at start-up so the first edit does not wait for it."""
    threading.Thread(target=get_producer, name="damnit-producer-warmup", daemon=True).start()


def _audit(session: SessionState, what: str) -> None:
    log.info("Edit by %s on %s: %s", session.user or "local user", session.source.db_dir, what)


def set_comment(session: SessionState, key: int, text: str | None) -> None:
    """Store a run comment (empty text clears it)."""
    session.check_write()
    proposal, run = session.source.run_of(key)
    text = None if text is None or not str(text).strip() else str(text)
    with DamnitDB.from_dir(session.source.db_dir) as db:
        db.change_run_comment(proposal, run, text)
        topic_db = db.db_id
    _audit(session, f"comment of p{proposal} r{run} = {text!r}")
    session.source.refresh_run(proposal, run, ["comment"])
    get_producer().run_values_updated(topic_db, proposal, run, ["comment"])


def set_user_value(session: SessionState, key: int, name: str, text: Any) -> Any:
    """Parse ``text`` by the user variable's type and store it; returns the stored value.
    Raises ValueError with a readable message for bad input (nothing is written then)."""
    session.check_write()
    proposal, run = session.source.run_of(key)
    with DamnitDB.from_dir(session.source.db_dir) as db:
        if name not in db.get_user_variables():
            raise ValueError(f"{name!r} is not a user-editable variable")
        value = db.set_user_variable_value(proposal, run, name, None if text is None else str(text))
        topic_db = db.db_id
    _audit(session, f"{name} of p{proposal} r{run} = {value!r}")
    session.source.refresh_run(proposal, run, [name])
    get_producer().run_values_updated(topic_db, proposal, run, [name])
    return value


def slug_from_title(title: str) -> str:
    """The original's auto-name: runs of non-word characters → '_', leading digits dropped, lower case."""
    name = re.sub(r"\W+", "_", title.strip()).strip("_").lower()
    return re.sub(r"^[\d_]+", "", name)


def add_user_variable(session: SessionState, title: str, name: str, type_name: str,
                      description: str = "") -> str:
    """Define a new user-editable column; returns its name. Raises ValueError on bad/duplicate input."""
    session.check_write()
    title = (title or "").strip()
    name = (name or "").strip() or slug_from_title(title)
    var = UserEditableVariable(name, title, type_name, description or "")
    var.check()
    with DamnitDB.from_dir(session.source.db_dir) as db:
        if name in db.variable_names():
            raise ValueError(f"A variable named {name!r} already exists")
        db.add_user_variable(var)
        topic_db = db.db_id
    _audit(session, f"new user variable {name!r} ({type_name}) titled {title!r}")
    session.source.refresh_variables()
    get_producer().variable_set(topic_db, {"name": name, "title": title, "description": description or None,
                                           "attributes": None, "type": type_name})
    return name


def add_standalone_comment(session: SessionState, timestamp: float, text: str) -> int:
    """A comment tied to a time, not a run (``time_comments``); returns its id. Empty text is refused."""
    session.check_write()
    text = (text or "").strip()
    if not text:
        raise ValueError("the comment is empty")
    with DamnitDB.from_dir(session.source.db_dir) as db:
        comment_id = db.add_standalone_comment(float(timestamp), text)
    _audit(session, f"standalone comment #{comment_id} at {timestamp}: {text!r}")
    session.source.wake()
    return comment_id


def edit_standalone_comment(session: SessionState, comment_id: int, text: str) -> None:
    """Change a standalone comment's text; KeyError if there is no such comment."""
    session.check_write()
    with DamnitDB.from_dir(session.source.db_dir) as db:
        db.change_standalone_comment(int(comment_id), text)
    _audit(session, f"standalone comment #{comment_id} = {text!r}")
    session.source.wake()
