"""One live source per proposal per server process: the run table, kept current, shared by all sessions.

``ProposalSource`` holds a proposal's ``LiveTable`` and keeps it current from ONE Kafka subscription to
the database's update topic (or a database poll every 0.5 s when there is no broker). Sessions never
read the database on their own timer: they ``subscribe`` and get a ``Change`` saying what moved, so N
sessions cost one consumer and one database read per update. Every read goes through
``backend.storage`` (columnar, short-lived connections, so the dashboard never holds a lock that would
make processing fail with "database is locked").

It also holds the runs whose processing failed and those waiting for Slurm (``run_states``), read
again whenever the poll sees the database or the context file change (``app/live/run_states.py``).

``get_source(db_dir)`` opens a source on first use; ``unload_idle(after)`` closes sources no session
has used for a while (their subscription too), so one server can serve a whole facility's proposals.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from app.live.records import Change
from app.live.run_states import RunStates, read_run_states
from app.live.table import STATIC_COLUMNS, LiveTable, TableCell
from backend.base.messages import UpdateSubscriber
from backend.base.paths import DB_NAME
from backend.storage import catalog
from backend.storage.arrow_reader import ArrowReader
from backend.storage.catalog import VariableInfo
from backend.storage.processing_state import ProcessingFailure, WaitingRun
from backend.storage.run_values import read_blobs, read_run_values

log = logging.getLogger(__name__)

POLL_INTERVAL_OFFLINE = 0.5  # s, DB poll when there is no broker (target: change visible ≤ 1 s)
POLL_INTERVAL_LIVE = 3.0  # s, safety-net poll while Kafka is connected (catches writers that send nothing)
RUNNING_EXPIRY = 300.0  # s without a refreshed RUNNING state before a job is presumed gone
PENDING_EXPIRY = 3600.0
HEAD_RUNS = 200  # runs whose values are read first when a big proposal is opened (several first pages)
SPLIT_MIN_CELLS = 200_000  # runs x variables from which that pays (a whole read of this takes ~0.2 s)
REST_WAIT = 10.0  # s after such an opening at most before the rest is read without a first page shown
CLOCK_SLACK = 60.0  # s: writers' clocks may be behind ours (values written after the first read are re-read)
BLOB_CACHE_SIZE = 2048  # blobs (thumbnails, trendlines) kept per proposal; a page shows at most a few hundred

# Connection states shown in the UI.
LIVE, POLLING, STARTING = "live", "polling", "starting"

Callback = Callable[[Change], None]


class ProposalSource:
    """The live, shared run table of one database. Get it with ``get_source(db_dir)``.

    Thread model: a daemon thread (plus the Kafka subscriber's loop thread) changes the state under
    ``self.lock`` and then calls subscribers *from that thread*; subscribers hand the work to their own
    event loop (``SessionState.on_change`` does this for Panel sessions).
    """

    def __init__(self, db_dir: str | Path, *, broker: str | None = None, start: bool = True):
        self.db_dir = Path(db_dir).resolve()
        self.db_path = self.db_dir / DB_NAME
        # Names this source in URLs (thumbnails): random, so a URL never says or picks a path.
        self.token = secrets.token_urlsafe(9)
        if not self.db_path.is_file():
            raise FileNotFoundError(f"No DAMNIT database (runs.sqlite) in {self.db_dir}")
        self.lock = threading.RLock()
        self.table = LiveTable(None)
        self.variables: dict[str, VariableInfo] = {}
        self.processing: dict[str, dict] = {}  # processing_id -> processing_state_set data
        self.comments: list[dict] = []  # standalone comments {id, timestamp, comment}, oldest first
        self.run_states = RunStates()  # failed runs and runs waiting for Slurm
        self.proposal: int | None = None
        self.db_id: str | None = None
        self.connection = STARTING
        self.version = 0
        self.last_change: float = time.time()
        self.last_used: float = time.monotonic()
        self._subscribers: list[Callback] = []
        self._session_callbacks: set[Callback] = set()
        self._hwm_ts = -math.inf  # newest run_variables.timestamp seen
        self._signature: tuple = ()
        self._fsig: tuple = ()
        self._blobs: OrderedDict[tuple, bytes | None] = OrderedDict()
        self.caches: dict[str, object] = {}  # per-proposal state of upper layers, dropped with the source
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._broker = broker
        self._subscriber: UpdateSubscriber | None = None
        self._thread: threading.Thread | None = None
        self._head: tuple[set[int], float] | None = None  # a newest-first opening's runs, and its time
        self.loaded = threading.Event()  # every run's values are in (see reload)
        self._rest_go = threading.Event()  # see first_page_shown
        self._opened = time.monotonic()
        self.reload(newest_first=start)
        if start:
            self.start()

    # -- public read API ---------------------------------------------------------------------------
    @property
    def title(self) -> str:
        return f"p{self.proposal}" if self.proposal is not None else str(self.db_dir)

    def run_keys(self) -> list[int]:
        with self.lock:
            return self.table.sorted_keys().tolist()

    def key_for(self, proposal: int | None, run: int) -> int:
        return self.table.key_for(proposal, run)

    def has_run(self, key: int) -> bool:
        with self.lock:
            return self.table.has(key)

    def run_of(self, key: int) -> tuple[int, int]:
        """(proposal, run number) of a row key; KeyError if the table has no such run."""
        with self.lock:
            row = self.table.row(key)
            if row is None:
                raise KeyError(f"Run {key} is not in this table")
            return int(self.table.run_proposal[row]), int(self.table.run_number[row])

    def start_time(self, key: int) -> float | None:
        with self.lock:
            row = self.table.row(key)
            value = None if row is None else float(self.table.start_time[row])
        return None if value is None or math.isnan(value) else value

    def column_names(self) -> list[str]:
        """Variable names in display order (by title, case-folded), excluding the static columns."""
        with self.lock:
            names = set(self.variables) | set(self.table.column_names())
        names -= set(STATIC_COLUMNS)
        return sorted(names, key=lambda n: (self.variable(n).display_title.casefold(), n))

    def variable(self, name: str) -> VariableInfo:
        with self.lock:
            return self.variables.get(name) or VariableInfo(name=name)

    def units(self, name: str) -> str | None:
        with self.lock:
            return self.table.units(name)

    def cell(self, key: int, name: str) -> TableCell | None:
        with self.lock:
            return self.table.cell(key, name)

    def processing_for(self, key: int) -> list[dict]:
        with self.lock:
            return [d for d in self.processing.values()
                    if self.key_for(d.get("proposal"), d.get("run", -1)) == key]

    def failure_for(self, key: int) -> ProcessingFailure | None:
        """Why the run's last processing failed (None: it did not)."""
        return self.run_states.failures.get(key)

    def waiting_for(self, key: int) -> WaitingRun | None:
        """The run's entry in the listener's queue of runs waiting for Slurm (None: not waiting)."""
        return self.run_states.waiting.get(key)

    def blobs(self, cells: Iterable[tuple[int, str]], head: int | None = None) -> dict[tuple[int, str], bytes]:
        """The stored blobs (thumbnail PNGs, trendline arrays) of the given (row key, name) cells, or their
        first ``head`` bytes, read from the database when not cached. Cached by the cell's timestamp, so
        a rewritten value is read again."""
        wanted: dict[tuple[int, str], tuple] = {}
        with self.lock:
            for key, name in cells:
                cell = self.table.cell(key, name)
                row = self.table.row(key)
                if cell is None or cell.blob_type is None or row is None:
                    continue
                wanted[(key, name)] = (int(self.table.run_proposal[row]), int(self.table.run_number[row]),
                                       name, cell.timestamp, head)
            out, missing = {}, {}
            for cell_key, ident in wanted.items():
                if ident in self._blobs:
                    self._blobs.move_to_end(ident)
                    if self._blobs[ident] is not None:
                        out[cell_key] = self._blobs[ident]
                else:
                    missing[cell_key] = ident
        if missing:
            with ArrowReader(self.db_path) as reader:
                got = read_blobs(reader, [ident[:3] for ident in missing.values()], head=head)
            with self.lock:
                for cell_key, ident in missing.items():
                    blob = got.get(ident[:3])
                    self._blobs[ident] = blob
                    if blob is not None:
                        out[cell_key] = blob
                while len(self._blobs) > BLOB_CACHE_SIZE:
                    self._blobs.popitem(last=False)
        return out

    # -- subscriptions ----------------------------------------------------------------------------
    def subscribe(self, callback: Callback, *, session: bool = True) -> None:
        """Call ``callback(change)`` (from a background thread) after every change. ``session=False`` for
        state shared by sessions (a table model): it does not keep the source from being unloaded."""
        with self.lock:
            self._subscribers.append(callback)
            if session:
                self._session_callbacks.add(callback)
            self.last_used = time.monotonic()

    def unsubscribe(self, callback: Callback) -> None:
        with self.lock:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass
            self._session_callbacks.discard(callback)
            self.last_used = time.monotonic()

    @property
    def n_sessions(self) -> int:
        """Sessions following this source (what keeps it loaded)."""
        return len(self._session_callbacks)

    def _emit(self, change: Change) -> None:
        if not change:
            return
        with self.lock:
            self.version += 1
            self.last_change = time.time()
            subs = list(self._subscribers)
        for cb in subs:
            try:
                cb(change)
            except Exception:
                log.exception("Dashboard subscriber failed")

    # -- loading ----------------------------------------------------------------------------------
    def reload(self, *, newest_first: bool = False) -> Change:
        """Read the whole database (first load, or when it was replaced).

        ``newest_first`` (opening a big proposal for the dashboard): read the values of the newest
        ``HEAD_RUNS`` runs only, which a first page needs, and leave the whole table to the background
        thread (``loaded`` is set when it is in; sessions get it as a change of the older runs). Every
        run's row (number, start time) is there from the start, so counts and pages are right at once.
        """
        self._fsig = self._file_signature()
        started = time.time()
        with ArrowReader(self.db_path) as reader:
            settings = catalog.settings(reader)
            variables = catalog.variables(reader)
            runs = catalog.runs(reader)
            signature = catalog.change_signature(reader)
            comments = catalog.standalone_comments(reader)
            proposal = settings.get("proposal")
            table = LiveTable(int(proposal) if proposal not in (None, "") else None)
            table.set_runs(runs)
            head: list[int] = []
            if newest_first and table.n_rows > HEAD_RUNS and table.n_rows * len(variables) >= SPLIT_MIN_CELLS:
                head = table.sorted_keys()[-HEAD_RUNS:].tolist()
                rows = [table.row(k) for k in head]
                values = read_run_values(reader, details=True, runs=[
                    (int(table.run_proposal[r]), int(table.run_number[r])) for r in rows])
            else:
                values = read_run_values(reader, details=True)
        run_states = self._read_run_states(table.key_for) or RunStates()
        table.put(values, report=False)
        with self.lock:
            self.proposal = table.proposal
            self.db_id = settings.get("db_id")
            self.variables = variables
            self.comments = comments
            self.table = table
            self.run_states = run_states
            self._blobs.clear()
            self._hwm_ts = _nanmax(values.timestamp)
            self._signature = signature
            # What the whole read must re-read afterwards (written after this one): see _load_rest.
            self._head = (set(head), started - CLOCK_SLACK) if head else None
        if head:
            self.loaded.clear()
            log.info("Opened %s: %d runs, %d variables; the newest %d runs' values are in, the rest is being "
                     "read", self.db_path, table.n_rows, len(variables), len(head))
        else:
            self.loaded.set()
            log.info("Loaded %s: %d runs, %d variables, %.0f MB of cells", self.db_path, table.n_rows,
                     len(table.names), table.nbytes / 1e6)
        del values
        release_freed_memory()
        change = Change(reset=True, variables=True)
        self._emit(change)
        return change

    def wait_loaded(self, timeout: float | None = 60) -> bool:
        """Block until every run's values are in (at most ``timeout`` s): for what reads the whole table
        at once (exports, copies), in the seconds after a big proposal was opened."""
        return self.loaded.wait(timeout)

    def first_page_shown(self) -> None:
        """A session's first page is on screen: the rest of a newest-first opening may be read now. Read
        earlier, it takes the CPU that building and drawing that page need (5000 x 300: rows drawn at 5.3-5.6 s
        instead of 4.6 s); without a session it starts ``REST_WAIT`` s after opening."""
        self._rest_go.set()

    def _load_rest(self) -> None:
        """The whole read after ``reload(newest_first=True)``, into a new table that replaces the first
        one at once (sessions are not kept waiting meanwhile). What changed while it ran may be missing
        from it, so the loop's next poll reads everything written since the first read."""
        t0 = time.monotonic()
        change = self._read_whole_table()
        if change is None:  # reload() read everything meanwhile
            return
        self.loaded.set()
        with self.lock:
            table = self.table
        log.info("Loaded %s: %d runs, %d variables, %.0f MB of cells (the older runs in %.1f s)", self.db_path,
                 table.n_rows, len(table.names), table.nbytes / 1e6, time.monotonic() - t0)
        release_freed_memory()  # the first table and the read's arrays are freed by now
        self._emit(change)
        self.wake()

    def _read_whole_table(self) -> Change | None:
        with ArrowReader(self.db_path) as reader:
            runs = catalog.runs(reader)
            values = read_run_values(reader, details=True)
        with self.lock:
            if self._head is None:
                return None
            proposal = self.proposal
        table = LiveTable(proposal)
        table.set_runs(runs)
        table.put(values, report=False)
        with self.lock:
            if self._head is None:
                return None
            head, started = self._head
            old, self.table, self._head = self.table, table, None
            new_runs = sorted(set(table.sorted_keys().tolist()) - set(old.sorted_keys().tolist()))
            names = set(table.names)
            skip = head | set(new_runs)
            self._hwm_ts = min(_nanmax(values.timestamp), started)
            self._fsig = ()  # the loop polls next
            return Change(loaded=True, new_runs=new_runs,
                          variables=set(table.column_names()) != set(old.column_names()),
                          changed={k: names for k in table.sorted_keys().tolist() if k not in skip})

    def refresh_run(self, proposal: int | None, run: int, names: Iterable[str] | None = None,
                    message_time: float | None = None) -> Change:
        """Re-read one run (all names, or just ``names``) after a ``run_values_updated``."""
        names = list(names) if names is not None else None
        proposal = self.proposal if proposal is None else int(proposal)
        with ArrowReader(self.db_path) as reader:
            info = [r for r in catalog.runs(reader) if r.proposal == proposal and r.run == run]
            values = read_run_values(reader, details=True, runs=[(proposal, run)], names=names)
        change = Change(message_time=message_time)
        with self.lock:
            key = self.key_for(proposal, run)
            new_runs, moved = self.table.set_runs(info) if info else ([], [])
            if not info and not self.table.has(key) and not len(values):
                return change
            new_values, changed, new_columns = self.table.put(values)
            if not self.table.has(key):  # values of a run without a run_info row
                new_runs = new_runs or new_values
            for n in set(names or ()) - {values.names[i] for i in set(values.name.tolist())}:
                if n in self.table.clear(key, [n]):  # its row was deleted
                    changed.setdefault(key, set()).add(n)
            self._hwm_ts = max(self._hwm_ts, _nanmax(values.timestamp))
            change.new_runs = sorted(set(new_runs) | set(new_values))
            for k in moved:
                changed.setdefault(k, set()).add("start_time")
            change.changed = {k: v for k, v in changed.items() if k not in change.new_runs}
            change.variables = bool(new_columns)
        self._emit(change)
        return change

    def refresh_variables(self) -> Change:
        with ArrowReader(self.db_path) as reader:
            variables = catalog.variables(reader)
            signature = catalog.change_signature(reader)
            deleted = _deleted(reader, set(self.variables) - set(variables))
        with self.lock:
            changed = variables != self.variables
            self.variables = variables
            if self._signature:  # the runs part is the poll's to notice
                self._signature = (self._signature[0], signature[1], self._signature[2])
        change = Change(variables=changed)
        self._drop_columns(deleted, change)
        self._emit(change)
        return change

    def forget_variable(self, name: str) -> Change:
        """Drop a variable that was deleted from the database (definition and every value), now."""
        change = Change(variables=True)
        with self.lock:
            self.variables.pop(name, None)
        self._drop_columns({name}, change)
        self._emit(change)
        return change

    def _drop_columns(self, names: set[str], change: Change) -> None:
        """Clear the columns of deleted variables, noting the cells that went in ``change``."""
        with self.lock:
            for name in names:
                for key in self.table.drop_column(name):
                    change.changed.setdefault(key, set()).add(name)
                change.variables = True

    def _file_signature(self) -> tuple:
        """runs.sqlite, its WAL and context.py (whose version decides which failed runs to offer)."""
        sig = []
        for path in (self.db_path, self.db_path.parent / (self.db_path.name + "-wal"), self.db_dir / "context.py"):
            try:
                st = path.stat()
                sig.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                sig.append(None)
        return tuple(sig)

    def _read_run_states(self, key_for) -> RunStates | None:
        """Failed and waiting runs now (None if they could not be read: the last ones stay)."""
        try:
            return read_run_states(self.db_dir, key_for)
        except (sqlite3.Error, OSError) as e:
            log.warning("Could not read failed and waiting runs of %s: %s", self.db_path, e)
            return None

    def _update_run_states(self, change: Change) -> None:
        """Read failed and waiting runs again; note in ``change`` the run cells that differ."""
        states = self._read_run_states(self.key_for)
        if states is None:
            return
        with self.lock:
            before, self.run_states = self.run_states, states
        if states != before:
            change.run_states = True
            change.processing = sorted(set(change.processing) | states.changed_keys(before))

    def poll(self, force: bool = False) -> Change:
        """Check for anything new since the last look, reading only new rows. Skipped (one stat call)
        when neither runs.sqlite nor its WAL file changed."""
        fsig = self._file_signature()
        if not force and fsig == self._fsig:
            return Change()
        self._fsig = fsig
        with ArrowReader(self.db_path) as reader:
            signature = catalog.change_signature(reader)
            hwm = self._hwm_ts
            values = read_run_values(reader, details=True, since=hwm if math.isfinite(hwm) else None)
            known = self._signature or ((), (), ())
            runs = catalog.runs(reader) if signature[0] != known[0] else None
            variables = catalog.variables(reader) if signature[1] != known[1] else None
            comments = catalog.standalone_comments(reader) if signature[2] != known[2] else None
            deleted = _deleted(reader, set(self.variables) - set(variables)) if variables is not None else set()
        change = Change()
        self._drop_columns(deleted, change)
        with self.lock:
            new_runs: set[int] = set()
            changed: dict[int, set[str]] = change.changed  # deleted variables' cells already noted
            if runs is not None:
                added, moved = self.table.set_runs(runs)
                new_runs.update(added)
                for k in moved:
                    changed.setdefault(k, set()).add("start_time")
            added, cells, new_columns = self.table.put(values)
            new_runs.update(added)
            for k, names in cells.items():
                changed.setdefault(k, set()).update(names)
            self._hwm_ts = max(self._hwm_ts, _nanmax(values.timestamp))
            if variables is not None and variables != self.variables:
                self.variables = variables
                change.variables = True
            change.variables = change.variables or bool(new_columns)
            if comments is not None:
                self.comments = comments
                change.comments = True
            self._signature = signature
            change.new_runs = sorted(new_runs)
            change.changed = {k: v for k, v in changed.items() if k not in new_runs}
        self._update_run_states(change)
        self._emit(change)
        return change

    # -- messages ---------------------------------------------------------------------------------
    def handle_message(self, kind: str, data: dict) -> None:
        """Apply one update message (called on the Kafka thread)."""
        t = time.time()
        try:
            if kind == "run_values_updated":
                self.refresh_run(data.get("proposal"), int(data["run"]),
                                 list((data.get("values") or {}).keys()) or None, message_time=t)
            elif kind == "variable_set":
                self.refresh_variables()
            elif kind == "processing_state_set":
                with self.lock:
                    self.processing[str(data["processing_id"])] = dict(data, _received=t)
                    key = self.key_for(data.get("proposal"), int(data["run"]))
                self._emit(Change(processing=[key], message_time=t))
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
                self.wake()  # a job ended: its run may have been marked failed, or its mark cleared
        except (KeyError, TypeError, ValueError) as e:
            log.warning("Ignoring malformed %s message %r: %s", kind, data, e)
        except (sqlite3.Error, OSError) as e:
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
            self._subscriber = UpdateSubscriber(self.db_id, self.handle_message, broker=self._broker,
                                                on_down=self._broker_down, on_up=self._broker_up)
            if self._subscriber.online:
                self._subscriber.start(wait=None)
            else:
                self._subscriber = None
        except Exception as e:
            log.warning("No Kafka updates for %s (%s); polling the database", self.db_dir, e)
            self._subscriber = None

    def _broker_down(self, error: BaseException) -> None:
        """Said once per outage (the subscriber retries quietly, see backend.base.messages)."""
        brokers = ",".join(self._subscriber.brokers) if self._subscriber else "?"
        log.warning("Kafka broker %s unreachable (%s): polling %s every %.1f s instead until it answers",
                    brokers, str(error) or type(error).__name__, self.db_path, POLL_INTERVAL_OFFLINE)
        self._wake.set()

    def _broker_up(self) -> None:
        brokers = ",".join(self._subscriber.brokers) if self._subscriber else "?"
        log.info("Kafka broker %s answers again: live updates for %s", brokers, self.db_path)

    def _loop(self) -> None:
        last_poll = last_expiry = last_rest = 0.0
        while not self._stop.is_set():
            live = self._subscriber is not None and self._subscriber.ready.is_set()
            state = LIVE if live else POLLING
            if state != self.connection:
                self.connection = state
                self._emit(Change(connection=True))
            interval = POLL_INTERVAL_LIVE if live else POLL_INTERVAL_OFFLINE
            now = time.monotonic()
            if self._head is not None and now - last_rest >= 5 and (
                    self._rest_go.is_set() or now - self._opened >= REST_WAIT):
                last_rest = now
                try:
                    self._load_rest()
                except Exception as e:  # tried again in 5 s; the newest runs are shown meanwhile
                    log.warning("Reading the older runs of %s failed (%s); trying again", self.db_path, e)
            if now - last_poll >= interval or self._wake.is_set():
                last_poll = now
                try:
                    self.poll(force=self._wake.is_set())
                except (sqlite3.Error, OSError) as e:
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

    def touch(self) -> None:
        """Mark the source as used (a page read it), so it is not unloaded as idle."""
        self.last_used = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        if self._subscriber is not None:
            self._subscriber.stop()
        if self._thread is not None:
            self._thread.join(5)


def _deleted(reader: ArrowReader, gone: set[str]) -> set[str]:
    """Of the variables whose definition vanished, those without a value left in any run: deleted (the
    original never drops a definition otherwise; no message says so, as it has no such kind)."""
    if not gone:
        return set()
    values = read_run_values(reader, names=sorted(gone))
    return gone - {values.names[i] for i in set(values.name.tolist())}


def release_freed_memory() -> None:
    """Give the operating system back what reading a table allocated and freed: Arrow's allocator
    (mimalloc, per thread) and glibc keep it for reuse otherwise, and whether they did varied from one
    start to the next (5000 x 300: 325 MB or 480 MB; benchmarks/README.md)."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _nanmax(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.max()) if len(finite) else -math.inf


# ---------------------------------------------------------------- the registry

_SOURCES: dict[Path, ProposalSource] = {}
_SOURCES_LOCK = threading.Lock()


def _forget_inherited_sources() -> None:
    """In a forked child (``--num-procs``): the parent's sources have no threads here (no polling, no
    Kafka), so each process opens its own, as documented; the lock may have been held at the fork."""
    global _SOURCES_LOCK
    _SOURCES_LOCK = threading.Lock()
    _SOURCES.clear()


os.register_at_fork(after_in_child=_forget_inherited_sources)


def get_source(db_dir: str | Path) -> ProposalSource:
    """The process-wide live source for a database directory (created and started on first use)."""
    path = Path(db_dir).resolve()
    with _SOURCES_LOCK:
        src = _SOURCES.get(path)
        if src is None:
            src = _SOURCES[path] = ProposalSource(path)
        src.touch()
        return src


def all_sources() -> list[ProposalSource]:
    with _SOURCES_LOCK:
        return list(_SOURCES.values())


def source_by_token(token: str) -> ProposalSource | None:
    """An already open source by its URL token (never opens one)."""
    with _SOURCES_LOCK:
        return next((s for s in _SOURCES.values() if secrets.compare_digest(s.token, token)), None)


def unload_idle(after: float, now: float | None = None) -> list[Path]:
    """Stop and forget sources without sessions that nobody used for ``after`` seconds (their Kafka
    subscription closes with them). Returns the folders unloaded."""
    now = time.monotonic() if now is None else now
    with _SOURCES_LOCK:
        idle = [p for p, s in _SOURCES.items() if s.n_sessions == 0 and now - s.last_used >= after]
        gone = [_SOURCES.pop(p) for p in idle]
    for src in gone:
        src.stop()
        log.info("Unloaded %s (no session for %.0f s)", src.db_dir, after)
    return idle
