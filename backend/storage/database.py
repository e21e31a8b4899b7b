"""runs.sqlite: DAMNIT's v4 database (docs/spec.md "Database: runs.sqlite v4"), safe for many concurrent writers.

Compared with the original we run in WAL mode on local filesystems (readers never block the writer;
on network filesystems such as GPFS/NFS, written from several hosts, we keep the rollback journal), take the write lock
up front for every write (BEGIN IMMEDIATE, so no read→write upgrade deadlocks) and retry with back-off
when SQLite still reports the database as busy. The file format stays exactly v4, so the original
`damnit` reads and writes it too.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from secrets import token_hex
from typing import Any

import numpy as np

from backend.base.messages import UPDATE_TOPIC
from backend.base.paths import DB_NAME, db_path

from .blobs import complex2blob, numpy2blob
from .connections import BUSY_TIMEOUT_S, journal_mode_for, readonly_uri, sqlite3_closed, sqlite3_opening
from .migrations import LATEST_VERSION, MIN_OPENABLE_VERSION, apply_migrations, detect_version
from .records import ReducedData
from .user_variables import UserEditableVariable

log = logging.getLogger(__name__)

LOCK_RETRY_S = 600  # how long we keep retrying a write after that


class LegacyDatabaseError(RuntimeError):
    """The database uses the pre-versioning v0 layout (one column per variable)."""


class DatabaseVersionError(RuntimeError):
    """The database can't be used at its current schema version."""


def is_valid_variable_name(name: str) -> bool:
    return isinstance(name, str) and bool(name) and all(p.isidentifier() for p in name.split("."))


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _db_text(text: str) -> str:
    """Text as SQLite (UTF-8) can hold it. Bytes that are not UTF-8 (stored as they are in the run file,
    and read back with surrogate escapes) become ``\\xNN`` escapes; other lone surrogates ``\\uXXXX``."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


class DamnitDB:
    """One connection to a DAMNIT database (runs.sqlite)."""

    def __init__(self, path: str | os.PathLike = DB_NAME, *, create: bool = False, allow_old: bool = False,
                 read_only: bool | None = None):
        path = Path(path).absolute()
        self._path = path
        existed = path.is_file()
        if not existed and not create:
            raise FileNotFoundError(f"No DAMNIT database at {path} (create one with `damnit init`)")
        if read_only is None:
            read_only = existed and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
        if read_only and not existed:
            raise PermissionError(f"Cannot create a DAMNIT database at {path}: read-only requested")
        self.read_only = read_only
        # One connection may be shared by threads (e.g. dashboard callbacks); writes take this lock so
        # that a transaction never picks up another thread's statements.
        self._write_lock = threading.RLock()
        self.conn = self._connect()
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.metameta = KeyValueMapping(self, "metameta")

        if not read_only:
            if path.stat().st_uid == os.getuid():
                os.chmod(path, 0o666)  # shared by all members of the proposal
            self._set_journal_mode()

        version = detect_version(self.conn)
        if version == -1 and existed and not create:
            raise DatabaseVersionError(f"{path} is not a DAMNIT database (it has no metameta table)")
        if version == 0 and not allow_old:
            raise LegacyDatabaseError(
                f"{path} uses the legacy v0 format (one column per variable in the `runs` table), which "
                "cannot be opened directly. Convert it with the original DAMNIT first: run "
                "`damnit migrate v0-to-v1` in that directory (a backup runs.v0-backup.sqlite is kept), then "
                "open it again. Alternatively move runs.sqlite away and reprocess all runs (comments and "
                "user-editable values would be lost).")
        if version > LATEST_VERSION:
            raise DatabaseVersionError(
                f"{path} is at data format v{version}, newer than this version of DAMNIT understands "
                f"(v{LATEST_VERSION}); please use a newer DAMNIT")
        if version == -1 or MIN_OPENABLE_VERSION <= version < LATEST_VERSION:
            if read_only:
                raise DatabaseVersionError(
                    f"{path} is at data format v{version} and needs upgrading to v{LATEST_VERSION}, "
                    "but it is read-only; ask someone with write access to open it once")
            applied = apply_migrations(self.conn, version, begin=self._begin_immediate)
            if applied and version == -1:
                log.info("Created %s (data format v%d)", path, LATEST_VERSION)
            elif applied:
                log.info("Upgraded %s from v%d to v%d", path, version, LATEST_VERSION)
            if version == -1:
                self.metameta.setdefault("damnit_python", sys.executable)
                self.metameta.setdefault("concurrent_jobs", 15)

        db_id = self.metameta.get("db_id")
        if db_id is None and not read_only:
            db_id = self.metameta.setdefault("db_id", token_hex(20))
        self._db_id = db_id

    # -- opening ------------------------------------------------------------------------------------

    @classmethod
    def from_dir(cls, db_dir: str | os.PathLike, *, create: bool = False, **kwargs) -> DamnitDB:
        return cls(db_path(db_dir), create=create, **kwargs)

    def _connect(self) -> sqlite3.Connection:
        # Registered while open, so this process's columnar reader (another SQLite library) waits its
        # turn instead of cancelling our locks (backend/storage/connections.py); also when the object is
        # dropped without close().
        sqlite3_opening(self._path)
        self._unregister = weakref.finalize(self, sqlite3_closed, self._path)
        try:
            return self._open_sqlite()
        except BaseException:
            self._unregister()
            raise

    def _open_sqlite(self) -> sqlite3.Connection:
        if not self.read_only:
            return sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        conn = sqlite3.connect(readonly_uri(self._path), uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            # A WAL database in a directory we can't write to (no -shm file to create): read it as an
            # immutable snapshot instead.
            conn.close()
            return sqlite3.connect(readonly_uri(self._path, immutable=True), uri=True, isolation_level=None,
                                   check_same_thread=False)

    def _set_journal_mode(self) -> None:
        wanted = journal_mode_for(self._path)
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == wanted:
            return
        # Switching needs a moment of exclusive access; if another process is reading right now, don't
        # stall opening for the whole busy timeout: stay in the current mode and switch another time.
        self.conn.execute("PRAGMA busy_timeout = 1000")
        try:
            mode = self.conn.execute(f"PRAGMA journal_mode={wanted.upper()}").fetchone()[0]
        except sqlite3.OperationalError as e:
            log.warning("Could not switch %s to %s mode (%s); continuing", self._path, wanted, e)
            return
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        if mode.lower() != wanted:
            log.warning("%s stays in %s journal mode (filesystem without WAL support?)", self._path, mode)

    def close(self) -> None:
        """Close; the last connection also turns WAL back into a rollback journal.

        A WAL database can only be read where its -shm file can be created, so leaving it in WAL
        would stop the original DAMNIT (and plain sqlite3) from reading it in a read-only location.
        While other connections are open the switch fails harmlessly and WAL stays on.
        """
        if not self.read_only and journal_mode_for(self._path) == "wal":
            try:
                self.conn.execute("PRAGMA busy_timeout = 0")
                self.conn.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass
        self.conn.close()
        self._unregister()

    def __enter__(self) -> DamnitDB:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    @property
    def path(self) -> Path:
        return self._path

    @property
    def db_id(self) -> str | None:
        return self._db_id

    @property
    def kafka_topic(self) -> str:
        if self._db_id is None:
            raise RuntimeError(f"{self._path} has no db_id yet (it was opened read-only)")
        return UPDATE_TOPIC.format(self._db_id)

    # -- transactions -------------------------------------------------------------------------------

    def _begin_immediate(self) -> None:
        self._retry_busy(lambda: self.conn.execute("BEGIN IMMEDIATE"), "BEGIN IMMEDIATE")

    def _retry_busy(self, fn: Callable[[], Any], label: str) -> Any:
        deadline = time.monotonic() + LOCK_RETRY_S
        delay = 0.02
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _is_busy(e) or time.monotonic() > deadline:
                    raise
                log.debug("%s: database busy (%s), retrying in %.2f s", self._path, label, delay)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    def write(self, fn: Callable[[], Any], label: str = "write") -> Any:
        """Run `fn` in one write transaction (BEGIN IMMEDIATE), retrying the whole of it while busy.

        Nested calls join the outer transaction.
        """
        if self.read_only:
            raise PermissionError(f"{self._path} is open read-only; cannot {label}")
        with self._write_lock:
            return self._write_locked(fn, label)

    def _write_locked(self, fn: Callable[[], Any], label: str) -> Any:
        if self.conn.in_transaction:
            return fn()

        def attempt():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn()
                self.conn.execute("COMMIT")
                return result
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

        t0 = time.perf_counter()
        result = self._retry_busy(attempt, label)
        log.debug("DB %s took %.1f ms", label, (time.perf_counter() - t0) * 1000)
        return result

    # -- runs and values ----------------------------------------------------------------------------

    def ensure_run(self, proposal: int, run: int, added_at: float | None = None,
                   start_time: float | None = None) -> None:
        """Make sure (proposal, run) has a run_info row; set start_time if given."""
        def txn():
            self.conn.execute(
                "INSERT INTO run_info (proposal, run, start_time, added_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (proposal, run) DO NOTHING",
                (proposal, run, start_time, time.time() if added_at is None else added_at))
            if start_time is not None:
                self.conn.execute("UPDATE run_info SET start_time=? WHERE proposal=? AND run=?",
                                  (start_time, proposal, run))
        self.write(txn, f"ensure_run p{proposal} r{run}")

    def set_variable(self, proposal: int, run: int, name: str, reduced: ReducedData,
                     provenance: str = "") -> None:
        self.set_variables(proposal, run, {name: reduced}, provenance)

    def set_variables(self, proposal: int, run: int, values: Mapping[str, ReducedData],
                      provenance: str = "", *, added_at: float | None = None,
                      start_time: float | None = None) -> None:
        """Upsert many variables of one run in one transaction.

        A `start_time` entry goes to run_info, not run_variables. A value of None clears the row's value
        and metadata but keeps `attributes` (which carries error information). Names not defined yet
        get a `variables` row (title = name, type NULL), which a later context definition overrides.
        """
        values = dict(values)
        if (st := values.pop("start_time", None)) is not None and start_time is None:
            start_time = st.value
        if start_time is not None:
            start_time = float(start_time)
        for name in values:
            if not is_valid_variable_name(name):
                raise ValueError(f"Invalid variable name {name!r} for p{proposal} r{run}: names must be "
                                 "Python identifiers, optionally joined by dots")
        timestamp = time.time()
        rows = [self._variable_row(proposal, run, name, reduced, provenance, timestamp)
                for name, reduced in values.items()]

        def txn():
            self.ensure_run(proposal, run, added_at=added_at, start_time=start_time)
            self.conn.executemany(
                "INSERT INTO run_variables (proposal, run, name, version, value, timestamp, max_diff,"
                " provenance, summary_type, summary_method, attributes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (proposal, run, name, version) DO UPDATE SET value=excluded.value,"
                " timestamp=excluded.timestamp, max_diff=excluded.max_diff,"
                " provenance=excluded.provenance, summary_type=excluded.summary_type,"
                " summary_method=excluded.summary_method, attributes=excluded.attributes", rows)
            if not self._view_has_names(values):
                # Define names never seen before (e.g. sent by damnit.submit()), so that every API,
                # including the original's, can look them up by title.
                self.conn.executemany("INSERT OR IGNORE INTO variables (name, title) VALUES (?, ?)",
                                      [(n, n) for n in values if n != "comment"])
                self.update_views()
        self.write(txn, f"set_variables p{proposal} r{run}")

    def unstorable(self, proposal: int, run: int, values: Mapping[str, ReducedData]) -> dict[str, Exception]:
        """The values of `values` that set_variables would refuse, with the reason (nothing is written)."""
        refused = {}
        max_length = self.conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        for name, reduced in values.items():
            try:
                row = self._variable_row(proposal, run, name, reduced, "", 0.0)
                for field in (row[4], row[-1]):  # value, attributes
                    size = len(field.encode()) if isinstance(field, str) and not field.isascii() else (
                        len(field) if isinstance(field, (str, bytes)) else 0)
                    if size > max_length:
                        raise ValueError(f"the summary is too large for the database ({size} bytes; "
                                         f"SQLite's limit is {max_length})")
            except Exception as e:
                refused[name] = e
        return refused

    @staticmethod
    def _variable_row(proposal, run, name, reduced: ReducedData, provenance, timestamp) -> tuple:
        value = reduced.value
        summary_type = reduced.summary_type
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        if isinstance(value, str):
            value = _db_text(value)
        elif isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
            value = float(value)  # SQLite integers are 64-bit; the run file keeps the exact value
        if isinstance(value, complex):
            value, summary_type = complex2blob(value), "complex"
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"Cannot store an object array for {name!r} (p{proposal} r{run})")
            value = numpy2blob(value)
            summary_type = summary_type or "numpy"
        elif not isinstance(value, (int, float, str, bytes, type(None))):
            raise TypeError(f"Cannot store a value of type {type(value).__name__} for {name!r} "
                            f"(p{proposal} r{run}) in the database")
        attributes = json.dumps(reduced.attributes, default=_json_default) if reduced.attributes else None
        if value is None:
            return (proposal, run, name, 1, None, timestamp, None, provenance, None, None, attributes)
        max_diff = reduced.max_diff
        if isinstance(max_diff, (np.generic, np.ndarray)):
            max_diff = np.asarray(max_diff).item()
        return (proposal, run, name, 1, value, timestamp, max_diff, provenance, summary_type,
                reduced.summary_method, attributes)

    def change_run_comment(self, proposal: int, run: int, comment: str | None) -> None:
        self.set_variable(proposal, run, "comment", ReducedData(comment or None), provenance="")

    # -- views --------------------------------------------------------------------------------------

    def _view_has_names(self, names: Iterable[str]) -> bool:
        row = self.conn.execute("SELECT sql FROM sqlite_master WHERE type='view' AND name='runs'").fetchone()
        sql = row[0] if row else ""
        return all(f"WHEN name={_sql_str(n)} " in sql for n in names)

    def update_views(self) -> None:
        """Recreate the `runs` and `max_diffs` views with one column per known variable."""
        names = sorted(self.variable_names())

        def columns(col):
            return "".join(f", max(CASE WHEN name={_sql_str(n)} THEN {col} END) AS {_sql_ident(n)}"
                           for n in names)

        def txn():
            self.conn.execute("DROP VIEW IF EXISTS runs")
            self.conn.execute(
                "CREATE VIEW runs AS SELECT run_info.proposal, run_info.run, start_time, added_at"
                f"{columns('value')} FROM run_variables INNER JOIN run_info"
                " ON run_variables.proposal = run_info.proposal AND run_variables.run = run_info.run"
                " GROUP BY run_info.proposal, run_info.run")
            self.conn.execute("DROP VIEW IF EXISTS max_diffs")
            self.conn.execute(
                f"CREATE VIEW max_diffs AS SELECT proposal, run{columns('max_diff')}"
                " FROM run_variables GROUP BY proposal, run")
        self.write(txn, "update_views")

    # -- variables ----------------------------------------------------------------------------------

    def variable_names(self) -> list[str]:
        """Names with values in any run, plus defined variables that have no values yet."""
        rows = self.conn.execute(
            "SELECT DISTINCT name FROM run_variables UNION SELECT name FROM variables").fetchall()
        return [r[0] for r in rows]

    def variable_descriptions(self) -> dict[str, str]:
        rows = self.conn.execute("SELECT name, description FROM variables")
        return {name: desc for name, desc in rows if desc}

    def variable_titles(self) -> dict[str, str]:
        rows = self.conn.execute("SELECT name, title FROM variables")
        return {name: (title if title is not None else name) for name, title in rows}

    def add_user_variable(self, variable: UserEditableVariable, exist_ok: bool = False) -> None:
        variable.check()

        def txn():
            row = self.conn.execute("SELECT type FROM variables WHERE name=?", (variable.name,)).fetchone()
            if row is not None and not exist_ok:
                raise ValueError(f"A variable named {variable.name!r} already exists")
            clash = self.conn.execute("SELECT name FROM variables WHERE title=? AND name!=?",
                                      (variable.title, variable.name)).fetchone()
            if clash is not None:
                raise ValueError(f"Title {variable.title!r} is already used by variable {clash[0]!r}")
            self.conn.execute(
                "INSERT INTO variables (name, type, title, description, attributes) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET type=excluded.type, title=excluded.title,"
                " description=excluded.description, attributes=excluded.attributes",
                (variable.name, variable.variable_type, variable.title, variable.description,
                 variable.attributes or None))
            if not self._view_has_names([variable.name]):
                self.update_views()
        self.write(txn, f"add_user_variable {variable.name}")

    def get_user_variables(self) -> dict[str, UserEditableVariable]:
        rows = self.conn.execute(
            "SELECT name, title, type, description, attributes FROM variables WHERE type IS NOT NULL")
        return {r["name"]: UserEditableVariable(r["name"], title=r["title"], variable_type=r["type"],
                                                description=r["description"], attributes=r["attributes"])
                for r in rows}

    def set_user_variable_value(self, proposal: int, run: int, name: str, value: Any) -> Any:
        """Store a user-editable value; text is parsed by the variable's type. Returns the stored value."""
        var = self.get_user_variables().get(name)
        if var is None:
            raise KeyError(f"{name!r} is not a user-editable variable")
        if isinstance(value, str) or value is None:
            value = var.parse(value)
        self.set_variable(proposal, run, name, ReducedData(value), provenance="manual-input")
        return value

    def update_computed_variables(self, variables: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
        """Upsert context-file variable definitions and sync their tags.

        `variables` = {name: {"title", "description", "attributes", "tags", ...}} (other keys ignored).
        Returns {name: definition} for the new or changed ones. Variables no longer in the context are kept.
        """
        def want(var):
            attrs = var.get("attributes")
            if isinstance(attrs, dict):
                attrs = json.dumps(attrs, default=_json_default)
            tags = var.get("tags") or ()
            tags = {tags} if isinstance(tags, str) else set(tags)
            return (var.get("title"), var.get("description"), attrs), tags

        def txn():
            current = {r["name"]: r for r in self.conn.execute(
                "SELECT name, type, title, description, attributes FROM variables")}
            updates = {}
            for name, var in variables.items():
                fields, tags = want(var)
                row = current.get(name)
                if (row is None or row["type"] is not None
                        or (row["title"], row["description"], row["attributes"]) != fields
                        or set(self.get_variable_tags(name)) != tags):
                    if row is not None and row["type"] is not None:
                        log.warning("Context variable %r replaces the user-editable variable of that name",
                                    name)
                    updates[name] = dict(var)
                    self.conn.execute(
                        "INSERT INTO variables (name, type, title, description, attributes)"
                        " VALUES (?, NULL, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET type=NULL,"
                        " title=excluded.title, description=excluded.description,"
                        " attributes=excluded.attributes", (name, *fields))
                    existing = set(self.get_variable_tags(name))
                    for tag in sorted(tags - existing):
                        self.tag_variable(name, tag)
                    for tag in sorted(existing - tags):
                        self.untag_variable(name, tag)
            if not self._view_has_names(variables):
                self.update_views()
            return updates
        return self.write(txn, "update_computed_variables")

    def delete_variable(self, name: str) -> None:
        """Remove a variable's definition, tags and values in all runs (HDF5 files: h5format)."""
        def txn():
            self.conn.execute("DELETE FROM variables WHERE name=?", (name,))
            self.conn.execute("DELETE FROM run_variables WHERE name=?", (name,))
            self.update_views()
        self.write(txn, f"delete_variable {name}")

    # -- standalone comments ------------------------------------------------------------------------

    def add_standalone_comment(self, timestamp: float, comment: str) -> int:
        """Add a comment tied to a time rather than a run; returns its id."""
        return self.write(lambda: self.conn.execute(
            "INSERT INTO time_comments (timestamp, comment) VALUES (?, ?)", (timestamp, comment)).lastrowid,
            "add_standalone_comment")

    def change_standalone_comment(self, comment_id: int, comment: str) -> None:
        def txn():
            cur = self.conn.execute("UPDATE time_comments SET comment=? WHERE rowid=?", (comment, comment_id))
            if cur.rowcount == 0:
                raise KeyError(f"No standalone comment with id {comment_id}")
        self.write(txn, "change_standalone_comment")

    def delete_standalone_comment(self, comment_id: int) -> None:
        def txn():
            if self.conn.execute("DELETE FROM time_comments WHERE rowid=?", (comment_id,)).rowcount == 0:
                raise KeyError(f"No standalone comment with id {comment_id}")
        self.write(txn, "delete_standalone_comment")

    def standalone_comments(self) -> list[dict]:
        """All standalone comments as {id, timestamp, comment}, oldest first."""
        rows = self.conn.execute("SELECT rowid, timestamp, comment FROM time_comments ORDER BY timestamp, rowid")
        return [{"id": r[0], "timestamp": r[1], "comment": r[2]} for r in rows]

    # -- tags ---------------------------------------------------------------------------------------

    def add_tag(self, tag_name: str) -> int:
        def txn():
            self.conn.execute("INSERT OR IGNORE INTO tags (name) VALUES (?)", (tag_name,))
            return self.conn.execute("SELECT id FROM tags WHERE name=?", (tag_name,)).fetchone()[0]
        return self.write(txn, "add_tag")

    def get_tag_id(self, tag_name: str) -> int | None:
        row = self.conn.execute("SELECT id FROM tags WHERE name=?", (tag_name,)).fetchone()
        return row[0] if row else None

    def tag_variable(self, variable_name: str, tag_name: str) -> None:
        def txn():
            tag_id = self.add_tag(tag_name)
            self.conn.execute("INSERT OR IGNORE INTO variable_tags (variable_name, tag_id) VALUES (?, ?)",
                              (variable_name, tag_id))
        self.write(txn, "tag_variable")

    def untag_variable(self, variable_name: str, tag_name: str) -> None:
        def txn():
            if (tag_id := self.get_tag_id(tag_name)) is not None:
                self.conn.execute("DELETE FROM variable_tags WHERE variable_name=? AND tag_id=?",
                                  (variable_name, tag_id))
        self.write(txn, "untag_variable")

    def get_variable_tags(self, variable_name: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT t.name FROM tags t JOIN variable_tags vt ON t.id = vt.tag_id"
            " WHERE vt.variable_name=? ORDER BY t.name", (variable_name,))
        return [r[0] for r in rows]

    def get_variables_by_tag(self, tag_name: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT vt.variable_name FROM variable_tags vt JOIN tags t ON vt.tag_id = t.id"
            " WHERE t.name=? ORDER BY vt.variable_name", (tag_name,))
        return [r[0] for r in rows]

    def get_all_tags(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM tags ORDER BY name")]


class KeyValueMapping(MutableMapping):
    """A dict view of a (key PRIMARY KEY, value) table such as metameta; writes go through db.write."""

    def __init__(self, db: DamnitDB, table: str):
        self._db = db
        self._table = table  # trusted: only ever a literal from this module

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._db.conn

    def __getitem__(self, key: str) -> Any:
        row = self._conn.execute(f"SELECT value FROM {self._table} WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return row[0]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, other=(), **kwargs) -> None:
        items = dict(other, **kwargs)
        self._db.write(lambda: self._conn.executemany(
            f"INSERT INTO {self._table} (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value", list(items.items())),
            f"set {self._table}")

    def __delitem__(self, key: str) -> None:
        def txn():
            if self._conn.execute(f"DELETE FROM {self._table} WHERE key=?", (key,)).rowcount == 0:
                raise KeyError(key)
        self._db.write(txn, f"delete from {self._table}")

    def setdefault(self, key: str, default: Any = None) -> Any:
        def txn():
            self._conn.execute(f"INSERT OR IGNORE INTO {self._table} (key, value) VALUES (?, ?)",
                               (key, default))
            return self[key]
        return self._db.write(txn, f"setdefault {self._table}")

    def __iter__(self) -> Iterator[str]:
        return iter([r[0] for r in self._conn.execute(f"SELECT key FROM {self._table}").fetchall()])

    def __len__(self) -> int:
        return self._conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0]

    def to_dict(self) -> dict[str, Any]:
        return {r[0]: r[1] for r in self._conn.execute(f"SELECT key, value FROM {self._table}")}
