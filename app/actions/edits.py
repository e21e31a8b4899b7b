"""Writes from the dashboard: run comments, user-editable values, new user variables, standalone
comments, pre-created runs and deleting a variable.

Each write checks the session's permission here, on the server (the UI hiding an editor is not a
guard), goes through ``DamnitDB`` (WAL, busy retries), is logged with the user (an audit trail),
refreshes the shared source at once and then broadcasts the original GUI's messages
(``run_values_updated`` / ``variable_set``) so other dashboards and the Qt GUI see it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.live.session import SessionState
from app.live.table import MISSING
from backend.base.messages import UpdateProducer
from backend.storage.database import DamnitDB
from backend.storage.h5format import RUN_FILE_PATTERN, delete_variables
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


MAX_PRECREATE = 1000  # runs at once: enough for any beamtime, and a typo (10000) is refused


def precreate_runs(session: SessionState, n_runs: int) -> list[int]:
    """Rows for the next ``n_runs`` runs, not taken yet, so comments can be written ahead (they are
    filled when the run is really taken). Returns the new run numbers."""
    session.check_write()
    n_runs = int(n_runs)
    if not 1 <= n_runs <= MAX_PRECREATE:
        raise ValueError(f"pre-create between 1 and {MAX_PRECREATE} runs, not {n_runs}")
    proposal = session.source.proposal
    if proposal is None:
        raise ValueError("this database has no proposal number (db-config proposal), so runs can't be made")
    with DamnitDB.from_dir(session.source.db_dir) as db:
        runs = db.precreate_runs(proposal, n_runs)
        topic_db = db.db_id
    _audit(session, f"pre-created runs {runs[0]}-{runs[-1]} of p{proposal}")
    session.source.wake()
    producer = get_producer()
    for run in runs:
        producer.run_values_updated(topic_db, proposal, run, ["comment"])
    return runs


@dataclass
class Deletion:
    """What deleting a variable did: runs that had a value, run files changed, files that could not be."""

    name: str
    runs: int
    files_changed: int = 0
    files_failed: dict[str, str] = field(default_factory=dict)  # file name -> error


def run_files(db_dir: str | os.PathLike) -> list[Path]:
    """The run files (``extracted_data/p<proposal>_r<run>.h5``) of a database folder."""
    data_dir = Path(db_dir, "extracted_data")
    if not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.iterdir() if RUN_FILE_PATTERN.match(p.name))


def runs_with_values(session: SessionState, name: str) -> int:
    """How many runs have a cell of ``name`` (what deleting it takes away)."""
    session.source.wait_loaded()
    with session.source.lock:
        table = session.source.table
        return int((table.kinds(name) != MISSING).sum())


def delete_variable(session: SessionState, name: str,
                    progress: Callable[[int, int], None] | None = None) -> Deletion:
    """Delete a variable with all its data: its definition and tags, its value in every run (the
    database) and its data, summary, preview and error in every run's HDF5 file.

    Needs the right to change the context file (a variable belongs to it). The database goes first, so
    the table loses the column at once; then the run files, one at a time (each is rewritten without
    the variable: slow for big files, so ``progress(done, total)`` is called after each). Files that
    can't be changed are reported, the others are done. Like the original, no message is sent (it has
    no kind for this): other dashboards notice the definition gone within their next poll.
    """
    session.check_context_edit()
    source = session.source
    known = set(source.column_names())
    if name not in known:
        raise ValueError(f"there is no variable named {name!r}")
    data_dir = Path(source.db_dir, "extracted_data")
    if data_dir.is_dir() and not os.access(data_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"the dashboard may not change the run files in {data_dir}: nothing was deleted")
    result = Deletion(name, runs_with_values(session, name))
    with DamnitDB.from_dir(source.db_dir) as db:
        db.delete_variable(name)
    _audit(session, f"deleted variable {name!r} ({result.runs} runs had a value)")
    source.forget_variable(name)
    files = run_files(source.db_dir)
    for i, path in enumerate(files):
        try:
            result.files_changed += delete_variables(path, [name])
        except Exception as e:  # an unreadable or read-only file: say which, go on with the others
            result.files_failed[path.name] = str(e)
            log.warning("Deleting %r from %s failed: %s", name, path, e)
        if progress is not None:
            progress(i + 1, len(files))
    _audit(session, f"deleted variable {name!r} from {result.files_changed} run files"
           + (f"; {len(result.files_failed)} could not be changed" if result.files_failed else ""))
    return result
