"""Shared dashboard state (design contract 6).

One ``ProposalSource`` per database per server process holds the authoritative run table and keeps it
current from ONE Kafka subscription to the database's update topic (or a DB poll every 0.5 s when
there is no broker). Browser sessions never read the DB on their own timer: they ``subscribe`` and get
``Change`` objects describing what moved, so N sessions cost one consumer and one DB read per update.

``SessionState`` is the per-browser-session model every page receives: which source, which runs are
selected, and whether this user may write.

Reads use short-lived SQLite connections (open, read, close), so the dashboard never holds a lock that
would make the processing side fail with "database is locked".
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import param

from backend.storage.blobs import decode_summary

log = logging.getLogger(__name__)

POLL_INTERVAL_OFFLINE = 0.5  # s, DB poll when there is no broker (target: change visible ≤ 1 s)
POLL_INTERVAL_LIVE = 3.0  # s, safety-net poll while Kafka is connected (catches writers that send nothing)
STATIC_COLUMNS = ("proposal", "run", "start_time", "added_at", "comment")
SPECIAL_TITLES = {"run": "Run", "proposal": "Proposal", "start_time": "Timestamp", "comment": "Comment",
                  "added_at": "Added at"}

RUNNING_EXPIRY = 300.0  # s without a refreshed RUNNING state before a job is presumed gone
PENDING_EXPIRY = 3600.0

# Connection states shown in the UI.
LIVE, POLLING, STARTING = "live", "polling", "starting"


# ---------------------------------------------------------------- plain records

@dataclass(frozen=True)
class VariableInfo:
    """One column: a variable from the ``variables`` table (or seen only in ``run_variables``)."""

    name: str
    title: str | None = None
    description: str | None = None
    type: str | None = None  # None = computed; boolean|integer|number|string = user-editable
    tags: tuple[str, ...] = ()
    attributes: dict | None = None

    @property
    def display_title(self) -> str:
        return self.title or SPECIAL_TITLES.get(self.name, self.name)

    @property
    def user_editable(self) -> bool:
        return self.type is not None


class Cell:
    """One run_variables row. Decoding (blobs, attribute JSON) happens on first access, so loading a
    5000-run x 300-variable database stays cheap."""

    __slots__ = ("raw", "summary_type", "attributes_json", "max_diff", "provenance", "timestamp", "_value",
                 "_attrs")

    def __init__(self, raw: Any, summary_type: str | None = None, attributes_json: str | None = None,
                 max_diff: float | None = None, provenance: str | None = None, timestamp: float | None = None):
        self.raw = raw
        self.summary_type = summary_type
        self.attributes_json = attributes_json
        self.max_diff = max_diff
        self.provenance = provenance
        self.timestamp = timestamp
        self._value = _UNSET
        self._attrs = None

    @classmethod
    def of(cls, value: Any, **attrs) -> Cell:
        """A cell holding an already-decoded value (e.g. from a message or an edit)."""
        c = cls(value)
        c._value = value
        c._attrs = dict(attrs)
        return c

    @property
    def value(self) -> Any:
        if self._value is _UNSET:
            self._value = decode_value(self.raw, self.summary_type)
        return self._value

    @property
    def attributes(self) -> dict:
        if self._attrs is None:
            self._attrs = _loads(self.attributes_json)
        return self._attrs

    @property
    def error(self) -> str | None:
        return self.attributes.get("error")

    @property
    def error_cls(self) -> str | None:
        return self.attributes.get("error_cls")

    @property
    def table_value(self) -> Any:
        """The value as the run-table DataFrame holds it: scalars and strings as they are, blobs as the
        original API's placeholders (``<thumbnail>``, ``<sparkline>``, ``<ndarray>``)."""
        raw = self.raw
        if not isinstance(raw, bytes):
            return raw
        if self.summary_type == "complex":
            return self.value
        if self.summary_type == "trendline":
            return "<sparkline>"
        if self.summary_type == "numpy" or raw.startswith(NPY_MAGIC):
            return "<ndarray>"
        if raw.startswith(PNG_MAGIC):
            return "<thumbnail>"
        return "<blob>"

    def same_as(self, other: Cell | None) -> bool:
        return other is not None and self.raw == other.raw and self.attributes_json == other.attributes_json \
            and self.summary_type == other.summary_type and self.max_diff == other.max_diff \
            and self.provenance == other.provenance


_UNSET = object()


@dataclass
class Run:
    """One row of the table."""

    key: int  # row key: the run number (or proposal*1e6+run for a second proposal in the same DB)
    proposal: int
    run: int
    start_time: float | None = None
    added_at: float | None = None
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Change:
    """What moved in one update; sessions patch exactly this.

    ``new_runs``/``changed`` hold row keys; ``changed`` maps key → names whose cells changed (including
    ``start_time`` and ``comment``). ``processing`` lists row keys whose processing state changed.
    ``reset`` means "reload everything" (first load or the DB was replaced).
    """

    new_runs: list[int] = field(default_factory=list)
    changed: dict[int, set[str]] = field(default_factory=dict)
    variables: bool = False
    processing: list[int] = field(default_factory=list)
    connection: bool = False
    reset: bool = False
    message_time: float | None = None  # wall time the triggering message arrived (latency tracing)

    def __bool__(self) -> bool:
        return bool(self.new_runs or self.changed or self.variables or self.processing or self.connection
                    or self.reset)


# ---------------------------------------------------------------- decoding the DB

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"


def decode_value(value: Any, summary_type: str | None) -> Any:
    """A stored run_variables value as a Python value; a damaged blob stays bytes (the table must still
    draw the rest of the run)."""
    try:
        return decode_summary(value, summary_type)
    except Exception:
        return value


def _loads(text: str | None) -> dict:
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def connect_ro(db_path: Path) -> sqlite3.Connection:
    """A short-lived read connection (autocommit, no lingering transaction)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


# ---------------------------------------------------------------- the shared source

Callback = Callable[["Change"], None]


class ProposalSource:
    """The live, shared run table of one database. Get it with ``get_source(db_dir)``.

    Thread model: a daemon thread (plus the Kafka subscriber's loop thread) mutates the state under
    ``self.lock`` and then calls subscribers *from that thread*; subscribers must hand the work to
    their own event loop (``SessionState.on_change`` does this for Panel sessions).
    """

    def __init__(self, db_dir: str | Path, *, broker: str | None = None, start: bool = True):
        self.db_dir = Path(db_dir).resolve()
        self.db_path = self.db_dir / "runs.sqlite"
        # Names this source in URLs (thumbnails): random, so a URL never says or picks a path.
        self.token = secrets.token_urlsafe(9)
        if not self.db_path.is_file():
            raise FileNotFoundError(f"No DAMNIT database (runs.sqlite) in {self.db_dir}")
        self.lock = threading.RLock()
        self.runs: dict[int, Run] = {}
        self.variables: dict[str, VariableInfo] = {}
        self.processing: dict[str, dict] = {}  # processing_id -> processing_state_set data
        self.proposal: int | None = None
        self.db_id: str | None = None
        self.connection = STARTING
        self.version = 0
        self.last_change: float = time.time()
        self._subscribers: list[Callback] = []
        self._hwm_ts = -math.inf  # newest run_variables.timestamp seen
        self._runinfo_sig: tuple = ()
        self._vars_sig: tuple = ()
        self._frame: pd.DataFrame | None = None
        self._fsig: tuple = ()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._broker = broker
        self._subscriber = None
        self._thread: threading.Thread | None = None
        self.reload()
        if start:
            self.start()

    # -- public read API ---------------------------------------------------------------------------
    @property
    def title(self) -> str:
        return f"p{self.proposal}" if self.proposal is not None else str(self.db_dir)

    def run_keys(self) -> list[int]:
        with self.lock:
            return sorted(self.runs)

    def key_for(self, proposal: int | None, run: int) -> int:
        if proposal is None or self.proposal is None or int(proposal) == self.proposal:
            return int(run)
        return int(proposal) * 1_000_000 + int(run)

    def column_names(self) -> list[str]:
        """Variable names in display order (by title, case-folded), excluding the static columns."""
        with self.lock:
            names = set(self.variables)
            for r in self.runs.values():
                names.update(r.cells)
        names -= set(STATIC_COLUMNS)
        return sorted(names, key=lambda n: (self.variable(n).display_title.casefold(), n))

    def variable(self, name: str) -> VariableInfo:
        with self.lock:
            return self.variables.get(name) or VariableInfo(name=name)

    def processing_for(self, key: int) -> list[dict]:
        with self.lock:
            return [d for d in self.processing.values() if self.key_for(d.get("proposal"), d.get("run", -1)) == key]

    def frame(self) -> pd.DataFrame:
        """The run table as a DataFrame: index = row key; columns proposal, run, start_time, added_at,
        comment, then one per variable. Scalars and strings as stored; blobs as the original API's
        placeholders (``<thumbnail>``, ``<sparkline>``, ``<ndarray>``); use ``runs[key].cells[name].value``
        for decoded arrays/PNG bytes.

        Shared and kept current incrementally; treat it as read-only (a new object replaces it after
        each change, so a reference you hold never changes under you).
        """
        with self.lock:
            if self._frame is None:
                self._frame = self._build_frame(sorted(self.runs), self.column_names())
            return self._frame

    def _build_frame(self, keys: list[int], names: list[str]) -> pd.DataFrame:
        cols: dict[str, list] = {c: [] for c in (*STATIC_COLUMNS, *names)}
        for k in keys:
            r = self.runs[k]
            cells = r.cells
            cols["proposal"].append(r.proposal)
            cols["run"].append(r.run)
            cols["start_time"].append(r.start_time)
            cols["added_at"].append(r.added_at)
            c = cells.get("comment")
            cols["comment"].append(c.table_value if c is not None else None)
            for n in names:
                c = cells.get(n)
                cols[n].append(c.table_value if c is not None else None)
        df = pd.DataFrame({c: pd.Series(v, index=keys, dtype=object) for c, v in cols.items()}, index=keys)
        df.index.name = "key"
        return df

    def _update_frame(self, change: Change) -> None:
        """Carry a change into the shared frame without rebuilding it (called under the lock)."""
        f = self._frame
        if f is None:
            return
        if change.reset or change.variables:
            self._frame = None  # columns changed: rebuild on next use
            return
        new = [k for k in change.new_runs if k not in f.index]
        if not new and not change.changed:
            return
        f = f.copy(deep=False)
        if new:
            f = pd.concat([f, self._build_frame(new, list(f.columns[len(STATIC_COLUMNS):]))]).sort_index()
        for key, names in change.changed.items():
            r = self.runs.get(key)
            if r is None:
                continue
            for n in names:
                if n == "start_time":
                    f.at[key, n] = r.start_time
                elif n in f.columns:
                    c = r.cells.get(n)
                    f.at[key, n] = c.table_value if c is not None else None
                else:
                    self._frame = None
                    return
        self._frame = f

    # -- subscriptions ----------------------------------------------------------------------------
    def subscribe(self, callback: Callback) -> None:
        """Call ``callback(change)`` (from a background thread) after every change."""
        with self.lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callback) -> None:
        with self.lock:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

    @property
    def n_subscribers(self) -> int:
        return len(self._subscribers)

    def _emit(self, change: Change) -> None:
        if not change:
            return
        with self.lock:
            self.version += 1
            self.last_change = time.time()
            self._update_frame(change)
            subs = list(self._subscribers)
        for cb in subs:
            try:
                cb(change)
            except Exception:
                log.exception("Dashboard subscriber failed")

    # -- loading ----------------------------------------------------------------------------------
    def reload(self) -> Change:
        """Read the whole database (first load, or when it was replaced)."""
        self._fsig = self._file_signature()
        with connect_ro(self.db_path) as conn:
            tables = _table_names(conn)
            meta = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM metameta")}
            proposal = meta.get("proposal")
            variables = self._read_variables(conn, tables)
            runinfo = conn.execute("SELECT proposal, run, start_time, added_at FROM run_info").fetchall()
            cur = conn.cursor()
            cur.row_factory = None  # plain tuples: this is the bulk read
            rows = cur.execute(
                "SELECT proposal, run, name, value, timestamp, max_diff, provenance, summary_type, attributes "
                "FROM run_variables" if "attributes" in _columns(conn, "run_variables") else
                "SELECT proposal, run, name, value, timestamp, max_diff, provenance, summary_type, "
                "NULL AS attributes FROM run_variables"
            ).fetchall()
            sig = self._runinfo_signature(conn)
            vsig = self._variables_signature(conn, tables)
        with self.lock:
            self.proposal = int(proposal) if proposal not in (None, "") else None
            self.db_id = meta.get("db_id")
            self.variables = variables
            self.runs = {}
            for ri in runinfo:
                self._run(ri["proposal"], ri["run"], ri["start_time"], ri["added_at"])
            hwm = -math.inf
            for row in rows:
                self._store_row(row)
                ts = row[4]
                if ts is not None and ts > hwm:
                    hwm = ts
            self._hwm_ts = hwm
            self._runinfo_sig = sig
            self._vars_sig = vsig
        change = Change(reset=True, variables=True)
        self._emit(change)
        return change

    def _run(self, proposal, run, start_time=None, added_at=None) -> Run:
        if proposal is None:
            proposal = self.proposal if self.proposal is not None else 0
        key = self.key_for(proposal, run)
        r = self.runs.get(key)
        if r is None:
            r = self.runs[key] = Run(key=key, proposal=int(proposal), run=int(run))
        if start_time is not None:
            r.start_time = start_time
        if added_at is not None:
            r.added_at = added_at
        return r

    def _store_row(self, row) -> tuple[int, bool]:
        """Put one run_variables row in memory; returns (key, whether the cell changed)."""
        proposal, run, name, value, timestamp, max_diff, provenance, summary_type, attributes = row
        r = self.runs.get(self.key_for(proposal, run)) or self._run(proposal, run)
        cell = Cell(value, summary_type, attributes, max_diff, provenance, timestamp)
        old = r.cells.get(name)
        r.cells[name] = cell
        return r.key, not cell.same_as(old)

    @staticmethod
    def _read_variables(conn: sqlite3.Connection, tables: set[str]) -> dict[str, VariableInfo]:
        tags: dict[str, list[str]] = {}
        if "variable_tags" in tables:
            for r in conn.execute("SELECT vt.variable_name, t.name FROM variable_tags vt "
                                  "JOIN tags t ON vt.tag_id = t.id ORDER BY t.name"):
                tags.setdefault(r[0], []).append(r[1])
        out = {}
        for r in conn.execute("SELECT name, type, title, description, attributes FROM variables"):
            out[r["name"]] = VariableInfo(name=r["name"], title=r["title"], description=r["description"],
                                          type=r["type"], tags=tuple(tags.get(r["name"], ())),
                                          attributes=_loads(r["attributes"]) or None)
        return out

    @staticmethod
    def _runinfo_signature(conn: sqlite3.Connection) -> tuple:
        return tuple(conn.execute("SELECT count(*), max(rowid), total(start_time) FROM run_info").fetchone())

    @staticmethod
    def _variables_signature(conn: sqlite3.Connection, tables: set[str]) -> tuple:
        sig = tuple(conn.execute("SELECT count(*), group_concat(name || ':' || ifnull(title, '') || ':' || "
                                 "ifnull(type, '') || ':' || ifnull(description, ''), '|') FROM variables")
                    .fetchone())
        if "variable_tags" in tables:
            sig += tuple(conn.execute("SELECT count(*), total(tag_id) FROM variable_tags").fetchone())
        return sig

    # -- incremental refreshes ---------------------------------------------------------------------
    def refresh_run(self, proposal: int | None, run: int, names: Iterable[str] | None = None,
                    message_time: float | None = None) -> Change:
        """Re-read one run (all names, or just ``names``) after a ``run_values_updated``."""
        names = list(names) if names is not None else None
        with connect_ro(self.db_path) as conn:
            if proposal is None:
                proposal = self.proposal
            ri = conn.execute("SELECT proposal, run, start_time, added_at FROM run_info WHERE proposal=? AND run=?",
                              (proposal, run)).fetchone()
            q = ("SELECT proposal, run, name, value, timestamp, max_diff, provenance, summary_type, attributes "
                 "FROM run_variables WHERE proposal=? AND run=?")
            args: list = [proposal, run]
            if names:
                q += f" AND name IN ({','.join('?' * len(names))})"
                args += names
            rows = conn.execute(q, args).fetchall()
        change = Change(message_time=message_time)
        with self.lock:
            key = self.key_for(proposal, run)
            is_new = key not in self.runs
            r = self._run(proposal, run)
            changed: set[str] = set()
            if ri is not None:
                if ri["start_time"] != r.start_time and ri["start_time"] is not None:
                    changed.add("start_time")
                r.start_time, r.added_at = ri["start_time"], ri["added_at"]
            seen = set()
            for row in rows:
                seen.add(row["name"])
                if self._store_row(row)[1]:
                    changed.add(row["name"])
                if row["timestamp"] is not None:
                    self._hwm_ts = max(self._hwm_ts, row["timestamp"])
            for n in names or ():
                if n not in seen and n in r.cells:  # row deleted
                    del r.cells[n]
                    changed.add(n)
            new_cols = {n for n in changed if n not in self.variables and n not in STATIC_COLUMNS}
            if new_cols and not all(n in self._known_columns_excluding(key) for n in new_cols):
                change.variables = True
            if is_new:
                change.new_runs.append(key)
            elif changed:
                change.changed[key] = changed
        self._emit(change)
        return change

    def _known_columns_excluding(self, key: int) -> set[str]:
        out = set()
        for k, r in self.runs.items():
            if k != key:
                out.update(r.cells)
        return out

    def refresh_variables(self) -> Change:
        with connect_ro(self.db_path) as conn:
            tables = _table_names(conn)
            variables = self._read_variables(conn, tables)
            vsig = self._variables_signature(conn, tables)
        with self.lock:
            changed = variables != self.variables
            self.variables = variables
            self._vars_sig = vsig
        change = Change(variables=changed)
        self._emit(change)
        return change

    def _file_signature(self) -> tuple:
        sig = []
        for suffix in ("", "-wal"):
            try:
                st = (self.db_path.parent / (self.db_path.name + suffix)).stat()
                sig.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                sig.append(None)
        return tuple(sig)

    def poll(self, force: bool = False) -> Change:
        """Check for anything new since the last look, reading only new rows. Skipped (one stat call)
        when neither runs.sqlite nor its WAL file changed."""
        fsig = self._file_signature()
        if not force and fsig == self._fsig:
            return Change()
        self._fsig = fsig
        with connect_ro(self.db_path) as conn:
            tables = _table_names(conn)
            sig = self._runinfo_signature(conn)
            vsig = self._variables_signature(conn, tables)
            hwm = self._hwm_ts
            rows = conn.execute(
                "SELECT proposal, run, name, value, timestamp, max_diff, provenance, summary_type, attributes "
                "FROM run_variables WHERE timestamp >= ?", (hwm if math.isfinite(hwm) else -1e300,)).fetchall()
            runinfo = (conn.execute("SELECT proposal, run, start_time, added_at FROM run_info").fetchall()
                       if sig != self._runinfo_sig else None)
            variables = self._read_variables(conn, tables) if vsig != self._vars_sig else None
        change = Change()
        with self.lock:
            known_cols = set(self.variables)
            for r in self.runs.values():
                known_cols.update(r.cells)
            if runinfo is not None:
                self._runinfo_sig = sig
                for ri in runinfo:
                    key = self.key_for(ri["proposal"], ri["run"])
                    if key not in self.runs:
                        change.new_runs.append(key)
                    else:
                        r = self.runs[key]
                        if r.start_time != ri["start_time"]:
                            change.changed.setdefault(key, set()).add("start_time")
                    self._run(ri["proposal"], ri["run"], ri["start_time"], ri["added_at"])
            for row in rows:
                key = self.key_for(row["proposal"], row["run"])
                is_new = key not in self.runs
                _, differs = self._store_row(row)
                if is_new:
                    change.new_runs.append(key)
                elif differs and key not in change.new_runs:
                    change.changed.setdefault(key, set()).add(row["name"])
                if row["name"] not in known_cols and row["name"] not in STATIC_COLUMNS:
                    change.variables = True
                if row["timestamp"] is not None:
                    self._hwm_ts = max(self._hwm_ts, row["timestamp"])
            if variables is not None:
                self._vars_sig = vsig
                if variables != self.variables:
                    self.variables = variables
                    change.variables = True
        self._emit(change)
        return change

    # -- messages ---------------------------------------------------------------------------------
    def handle_message(self, kind: str, data: dict) -> None:
        """Apply one update message (called on the Kafka thread)."""
        t = time.time()
        try:
            if kind == "run_values_updated":
                self.refresh_run(data.get("proposal"), int(data["run"]), list((data.get("values") or {}).keys())
                                 or None, message_time=t)
            elif kind == "variable_set":
                self.refresh_variables()
            elif kind == "processing_state_set":
                with self.lock:
                    self.processing[str(data["processing_id"])] = dict(data, _received=t)
                    key = self.key_for(data.get("proposal"), int(data["run"]))
                    is_new = key not in self.runs
                    self._run(data.get("proposal"), int(data["run"]))
                self._emit(Change(processing=[key], new_runs=[key] if is_new else [], message_time=t))
            elif kind == "processing_finished":
                with self.lock:
                    d = self.processing.pop(str(data.get("processing_id")), None)
                    if d is not None:
                        # Requests merged into the finished one never get their own 'finished':
                        # drop queued states of the same run announced before it.
                        for pid, other in list(self.processing.items()):
                            if other.get("run") == d.get("run") and other.get("proposal") == d.get("proposal") \
                                    and other.get("status") == "PENDING" and other["_received"] <= d["_received"]:
                                del self.processing[pid]
                if d is not None:
                    self._emit(Change(processing=[self.key_for(d.get("proposal"), int(d["run"]))],
                                      message_time=t))
        except (KeyError, TypeError, ValueError) as e:
            log.warning("Ignoring malformed %s message %r: %s", kind, data, e)
        except sqlite3.Error as e:
            log.warning("Could not read %s after a %s message: %s", self.db_path, kind, e)

    # -- the background thread ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._start_subscriber()
        self._thread = threading.Thread(target=self._loop, name=f"damnit-source-{self.db_dir.name}", daemon=True)
        self._thread.start()

    def _start_subscriber(self) -> None:
        if not self.db_id:
            return
        try:
            from backend.base.messages import UpdateSubscriber
            self._subscriber = UpdateSubscriber(self.db_id, self.handle_message, broker=self._broker)
            if self._subscriber.online:
                self._subscriber.start(wait=None)
            else:
                self._subscriber = None
        except Exception as e:
            log.warning("No Kafka updates for %s (%s); polling the database", self.db_dir, e)
            self._subscriber = None

    def _loop(self) -> None:
        last_poll = last_expiry = 0.0
        while not self._stop.is_set():
            live = self._subscriber is not None and self._subscriber.ready.is_set()
            state = LIVE if live else POLLING
            if state != self.connection:
                self.connection = state
                self._emit(Change(connection=True))
            interval = POLL_INTERVAL_LIVE if live else POLL_INTERVAL_OFFLINE
            now = time.monotonic()
            if now - last_poll >= interval or self._wake.is_set():
                last_poll = now
                try:
                    self.poll(force=self._wake.is_set())
                except sqlite3.Error as e:
                    log.warning("Polling %s failed: %s", self.db_path, e)
                except Exception:
                    log.exception("Polling %s failed", self.db_path)
                self._wake.clear()
            if now - last_expiry > 10:
                last_expiry = now
                self.expire_processing()
            self._stop.wait(0.1)

    def expire_processing(self, now: float | None = None) -> None:
        """Forget processing states nobody refreshed: a job that died sends no 'finished' (RUNNING is
        re-sent every few seconds by live jobs; PENDING can legitimately wait longer)."""
        now = time.time() if now is None else now
        with self.lock:
            stale = [pid for pid, d in self.processing.items()
                     if now - d["_received"] > (RUNNING_EXPIRY if d.get("status") == "RUNNING" else PENDING_EXPIRY)]
            keys = [self.key_for(self.processing[p].get("proposal"), int(self.processing[p]["run"])) for p in stale]
            for pid in stale:
                del self.processing[pid]
        if keys:
            self._emit(Change(processing=keys))

    def wake(self) -> None:
        """Poll now (after a write made by this process)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        if self._subscriber is not None:
            self._subscriber.stop()
        if self._thread is not None:
            self._thread.join(5)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


_SOURCES: dict[Path, ProposalSource] = {}
_SOURCES_LOCK = threading.Lock()


def get_source(db_dir: str | Path) -> ProposalSource:
    """The process-wide live source for a database directory (created and started on first use)."""
    path = Path(db_dir).resolve()
    with _SOURCES_LOCK:
        src = _SOURCES.get(path)
        if src is None:
            src = _SOURCES[path] = ProposalSource(path)
        return src


def all_sources() -> list[ProposalSource]:
    with _SOURCES_LOCK:
        return list(_SOURCES.values())


def source_by_token(token: str) -> ProposalSource | None:
    """An already open source by its URL token (never opens one)."""
    with _SOURCES_LOCK:
        return next((s for s in _SOURCES.values() if secrets.compare_digest(s.token, token)), None)


# ---------------------------------------------------------------- per-session state

class SessionState(param.Parameterized):
    """What one browser session is looking at and may do. Every page's ``view`` receives one."""

    source = param.ClassSelector(class_=ProposalSource, doc="The proposal this session shows")
    selected_runs = param.List(default=[], item_type=int, doc="Run numbers selected in the run table")
    read_only = param.Boolean(default=False, doc="Server started with --read-only: no edit controls")
    user = param.String(default="", doc="Authenticated user name ('' when none)")
    can_write = param.Boolean(default=False, doc="May this session change the DB (comments, user vars, ...)")
    write_denied_reason = param.String(default="", doc="Why can_write is False, for a tooltip/notice")
    can_edit_context = param.Boolean(default=False, doc="May this session save the context file (code the "
                                     "backend runs: a stronger right than can_write, see --context-editors)")
    context_edit_denied_reason = param.String(default="", doc="Why can_edit_context is False, one line")
    open_page = param.String(default="", doc="Slug of a page a page asks the shell to bring to the front "
                             "(e.g. the run table's double click opens 'inspect'); set it again to repeat")

    def __init__(self, **params):
        super().__init__(**params)
        self._callbacks: list[Callback] = []

    def on_change(self, callback: Callback) -> Callback:
        """Subscribe ``callback(change)`` to the source, run on THIS session's event loop with the
        document lock held, and unsubscribed automatically when the session closes."""
        import panel as pn

        doc = pn.state.curdoc
        source = self.source

        def run_in_session(change: Change) -> None:
            # With the session's document as Panel's current doc, widget and model updates made by
            # the callback go out in this tick instead of being re-scheduled for a later one.
            from panel.io.state import set_curdoc

            with set_curdoc(doc):
                callback(change)

        def marshal(change: Change) -> None:
            if doc is None or doc.session_context is None:
                callback(change)
                return
            try:
                doc.add_next_tick_callback(partial(run_in_session, change))
            except Exception:  # session already gone
                source.unsubscribe(marshal)

        source.subscribe(marshal)
        self._callbacks.append(marshal)
        if doc is not None and doc.session_context is not None:
            pn.state.on_session_destroyed(lambda ctx: source.unsubscribe(marshal))
        return marshal

    def check_write(self) -> None:
        """Raise PermissionError unless this session may write (the server-side guard for every edit)."""
        if not self.can_write:
            raise PermissionError(self.write_denied_reason or "This dashboard is read-only")

    def check_context_edit(self) -> None:
        """Raise PermissionError unless this session may save the context file (server-side guard)."""
        if not (self.can_write and self.can_edit_context):
            raise PermissionError(self.context_edit_denied_reason or self.write_denied_reason
                                  or "Editing the context file is not allowed")
