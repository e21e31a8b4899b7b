"""``listener.sqlite``: which databases a listener feeds, its settings, and what it must not forget
(docs/spec.md "Listener: listener.sqlite").

The original's tables (``proposal_databases``, ``settings``) are unchanged, so a listener directory can
be shared between the two implementations. Ours adds three it ignores:

- ``waiting_runs``: the durable queue of runs whose Slurm job could not be submitted (and that may not
  be processed in the listener); retried with back-off until Slurm takes them.
- ``dead_letters``: messages on the event topics that could not be handled (malformed, poison), kept
  with where they came from and why, so that they are committed past but never silently lost.
- ``watched_jobs``: Slurm jobs the listener submitted and has not yet seen end, so that a restarted
  listener still notices a job that is cancelled, killed or times out.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LISTENER_DB_NAME = "listener.sqlite"
DEAD_LETTER_MAX_BYTES = 64 * 1024  # of a message's value kept in the dead-letter record

SCHEMA = """
CREATE TABLE IF NOT EXISTS proposal_databases(proposal, db_dir UNIQUE, official);
CREATE INDEX IF NOT EXISTS proposals ON proposal_databases (proposal);
CREATE TABLE IF NOT EXISTS settings(key PRIMARY KEY NOT NULL, value);
CREATE TABLE IF NOT EXISTS waiting_runs(
    id INTEGER PRIMARY KEY AUTOINCREMENT, db_dir TEXT NOT NULL, proposal INTEGER NOT NULL,
    run INTEGER NOT NULL, run_data TEXT NOT NULL, events TEXT NOT NULL, added_at REAL,
    processing_id TEXT NOT NULL, queued_at REAL NOT NULL, reason TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
    UNIQUE (db_dir, proposal, run));
CREATE TABLE IF NOT EXISTS dead_letters(
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, kafka_partition INTEGER, kafka_offset INTEGER,
    timestamp_ms INTEGER, received_at REAL NOT NULL, error TEXT NOT NULL, size INTEGER, value BLOB,
    UNIQUE (topic, kafka_partition, kafka_offset, timestamp_ms));
CREATE TABLE IF NOT EXISTS watched_jobs(
    job_id TEXT NOT NULL, cluster TEXT NOT NULL DEFAULT '', db_dir TEXT NOT NULL, proposal INTEGER NOT NULL,
    run INTEGER NOT NULL, run_data TEXT NOT NULL, event TEXT, processing_id TEXT NOT NULL, topic TEXT,
    submitted_at REAL NOT NULL, PRIMARY KEY (job_id, cluster));
"""

# Settings a listener understands, with their defaults (None: unset by default).
DEFAULT_SETTINGS: dict[str, Any] = {
    "static_mode": True,               # only process registered databases
    "allow_local_processing": False,   # run jobs in the listener if Slurm submission fails
}
KNOWN_SETTINGS = {
    "static_mode": "only process databases registered with `damnit listener add` (1) or also register "
                   "official proposal databases found on disk (0)",
    "allow_local_processing": "process runs in the listener when a Slurm job cannot be submitted",
    "use_slurm": "submit Slurm jobs (1, default) or always process runs in the listener (0, e.g. on a "
                 "machine without Slurm)",
    "sandbox_args": "command prefix wrapping the context-file runner in jobs",
    "broker": "Kafka bootstrap servers (host:port,...), used when AMORE_BROKER is unset",
    "local_processing_concurrency": "how many databases the listener may process locally at once",
    "submit_concurrency": "how many Slurm submissions the listener makes at once (default 4)",
    "duplicate_window": "seconds during which a repeated event for a run that is still waiting or being "
                        "processed is not queued again (default 300)",
    "slurm_retry_interval": "seconds before the first retry of runs waiting for Slurm; doubles after each "
                            "failure (default 15)",
    "slurm_retry_max_interval": "longest wait between retries of runs waiting for Slurm (default 300)",
    "kafka_max_poll_interval": "seconds the Kafka client may go without polling before it leaves its group "
                               "(default 300; the listener polls continuously, whatever it is processing)",
}
BOOL_SETTINGS = {"static_mode", "allow_local_processing", "use_slurm"}
NUMERIC_SETTINGS = {"local_processing_concurrency", "submit_concurrency", "duplicate_window",
                    "slurm_retry_interval", "slurm_retry_max_interval", "kafka_max_poll_interval"}
RETRY_REQUEST_KEY = "retry_waiting_requested"  # set by `damnit listener waiting --retry`


@dataclass(frozen=True)
class ProposalDBInfo:
    proposal: int
    db_dir: Path
    official: bool


@dataclass(frozen=True)
class WaitingEntry:
    """A run in the durable queue: not yet submitted, and why."""
    id: int
    db_dir: Path
    proposal: int
    run: int
    run_data: str
    events: tuple[str, ...]      # the events it stands for (a repeat of one of them is a duplicate)
    added_at: float | None       # the run event's time (broker timestamp)
    processing_id: str           # announced PENDING on the database's topic, kept for the job
    queued_at: float
    reason: str
    attempts: int
    next_attempt: float


@dataclass(frozen=True)
class DeadLetter:
    id: int
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    received_at: float
    error: str
    size: int | None   # bytes in the message's value (None: a tombstone)
    value: bytes | None  # the first DEAD_LETTER_MAX_BYTES of it


@dataclass(frozen=True)
class WatchedJob:
    job_id: str
    cluster: str | None
    db_dir: Path
    proposal: int
    run: int
    run_data: str
    event: str | None
    processing_id: str
    topic: str | None
    submitted_at: float


def merge_run_data(a: str, b: str) -> str:
    """What to process when two requests for one run are merged: raw + proc = all."""
    return a if a == b else "all"


class SettingsMapping(MutableMapping):
    """The ``settings`` table as a dict; values keep their SQLite types (as the original stores them)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock):
        self.conn = conn
        self.lock = lock

    def __getitem__(self, key: str) -> Any:
        with self.lock:
            row = self.conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return row[0]

    def __setitem__(self, key: str, value: Any) -> None:
        with self.lock, self.conn:
            self.conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                              "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def __delitem__(self, key: str) -> None:
        with self.lock, self.conn:
            if self.conn.execute("DELETE FROM settings WHERE key=?", (key,)).rowcount == 0:
                raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        with self.lock:
            return iter([r[0] for r in self.conn.execute("SELECT key FROM settings ORDER BY key")])

    def __len__(self) -> int:
        with self.lock:
            return self.conn.execute("SELECT COUNT(*) FROM settings").fetchone()[0]


class ListenerDB:
    """A listener directory's ``listener.sqlite``; one object may be shared by threads."""

    def __init__(self, listener_dir: str | Path):
        self.path = Path(listener_dir).absolute() / LISTENER_DB_NAME
        self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._lock = threading.RLock()
        self.conn.executescript(SCHEMA)
        self.settings = SettingsMapping(self.conn, self._lock)
        for key, value in DEFAULT_SETTINGS.items():
            self.settings.setdefault(key, value)

    def __enter__(self) -> ListenerDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock, self.conn:
            return self.conn.execute(sql, params)

    # -- settings

    def setting(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key, default)
        return bool(value) if key in BOOL_SETTINGS and value is not None else value

    def number(self, key: str, default: float) -> float:
        """A numeric setting; ``default`` when unset or not a number (stored as text by hand, say)."""
        value = self.settings.get(key)
        try:
            number = float(value)
        except (TypeError, ValueError):
            return default
        return number if number > 0 else default

    # -- registered databases

    def all_databases(self) -> list[ProposalDBInfo]:
        rows = self._rows("SELECT proposal, db_dir, official FROM proposal_databases ORDER BY proposal, db_dir")
        return [ProposalDBInfo(int(p), Path(d), bool(o)) for p, d, o in rows]

    def proposal_db_dirs(self, proposal: int) -> list[Path]:
        rows = self._rows("SELECT db_dir FROM proposal_databases WHERE proposal=? ORDER BY db_dir", (int(proposal),))
        return [Path(r[0]) for r in rows]

    def add_proposal_db(self, proposal: int, db_dir: str | Path, official: bool) -> bool:
        """Register a database; False if that directory was already registered."""
        try:
            self._write("INSERT INTO proposal_databases (proposal, db_dir, official) VALUES (?, ?, ?)",
                        (int(proposal), str(Path(db_dir).absolute()), bool(official)))
        except sqlite3.IntegrityError:
            return False
        return True

    def remove_proposal_db(self, db_dir: str | Path) -> bool:
        """Unregister a database directory; False if it was not registered."""
        return self._write("DELETE FROM proposal_databases WHERE db_dir=?", (str(Path(db_dir).absolute()),)
                           ).rowcount > 0

    # -- the durable queue of runs waiting for Slurm

    _WAITING_COLUMNS = ("id, db_dir, proposal, run, run_data, events, added_at, processing_id, queued_at, reason,"
                        " attempts, next_attempt")

    @staticmethod
    def _waiting_entry(row: tuple) -> WaitingEntry:
        (id_, db_dir, proposal, run, run_data, events, added_at, processing_id, queued_at, reason, attempts,
         next_attempt) = row
        return WaitingEntry(id_, Path(db_dir), proposal, run, run_data, tuple(e for e in events.split(",") if e),
                            added_at, processing_id, queued_at, reason, attempts, next_attempt)

    def add_waiting(self, db_dir: Path, proposal: int, run: int, run_data: str, event: str, *,
                    added_at: float | None, processing_id: str, reason: str, next_attempt: float,
                    ) -> tuple[WaitingEntry, bool]:
        """Queue a run, or merge into the entry already waiting for it (raw + proc → all);
        returns the entry and whether it is new."""
        with self._lock, self.conn:
            row = self.conn.execute(f"SELECT {self._WAITING_COLUMNS} FROM waiting_runs WHERE db_dir=? AND proposal=? "
                                    "AND run=?", (str(db_dir), proposal, run)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO waiting_runs (db_dir, proposal, run, run_data, events, added_at, processing_id,"
                    " queued_at, reason, attempts, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (str(db_dir), proposal, run, run_data, event, added_at, processing_id, time.time(), reason,
                     next_attempt))
                new = True
            else:
                old = self._waiting_entry(row)
                events = ",".join(sorted(set(old.events) | {event}))
                self.conn.execute("UPDATE waiting_runs SET run_data=?, events=? WHERE id=?",
                                  (merge_run_data(old.run_data, run_data), events, old.id))
                new = False
            row = self.conn.execute(f"SELECT {self._WAITING_COLUMNS} FROM waiting_runs WHERE db_dir=? AND proposal=? "
                                    "AND run=?", (str(db_dir), proposal, run)).fetchone()
        return self._waiting_entry(row), new

    def waiting(self, db_dir: Path | None = None, proposal: int | None = None, run: int | None = None,
                ) -> list[WaitingEntry]:
        """Waiting runs, oldest first (all, or those of one database / run)."""
        where, params = [], []
        for column, value in (("db_dir", str(db_dir) if db_dir else None), ("proposal", proposal), ("run", run)):
            if value is not None:
                where.append(f"{column}=?")
                params.append(value)
        sql = f"SELECT {self._WAITING_COLUMNS} FROM waiting_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._waiting_entry(r) for r in self._rows(sql + " ORDER BY queued_at, id", tuple(params))]

    def due_waiting(self, now: float | None = None) -> list[WaitingEntry]:
        """Waiting runs whose next attempt is due, oldest first."""
        rows = self._rows(f"SELECT {self._WAITING_COLUMNS} FROM waiting_runs WHERE next_attempt <= ? "
                          "ORDER BY queued_at, id", (time.time() if now is None else now,))
        return [self._waiting_entry(r) for r in rows]

    def waiting_failed(self, entry_id: int, reason: str, next_attempt: float) -> None:
        """Another attempt failed: count it, say why, and when to try again."""
        self._write("UPDATE waiting_runs SET attempts=attempts+1, reason=?, next_attempt=? WHERE id=?",
                    (reason, next_attempt, entry_id))

    def postpone_waiting(self, entry_id: int, next_attempt: float, reason: str) -> None:
        """Not due before ``next_attempt`` (without counting a failed attempt)."""
        self._write("UPDATE waiting_runs SET reason=?, next_attempt=? WHERE id=?", (reason, next_attempt, entry_id))

    def retry_waiting_now(self, ask_listener: bool = True, ids: list[int] | None = None) -> int:
        """Make every waiting run (or those with these ``ids``) due at once; returns how many.
        ``ask_listener``: also ask a running listener to try Slurm now rather than at its back-off
        (`damnit listener waiting --retry`, the dashboard's "Retry now")."""
        with self._lock, self.conn:
            if ids is None:
                n = self.conn.execute("UPDATE waiting_runs SET next_attempt=0").rowcount
            else:
                n = sum(self.conn.execute("UPDATE waiting_runs SET next_attempt=0 WHERE id=?", (int(i),)).rowcount
                        for i in ids)
            if ask_listener:
                self.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                                  (RETRY_REQUEST_KEY, time.time()))
        return n

    def take_retry_request(self) -> bool:
        """True once after `retry_waiting_now` was called (by any process)."""
        with self._lock, self.conn:
            return self.conn.execute("DELETE FROM settings WHERE key=?", (RETRY_REQUEST_KEY,)).rowcount > 0

    def remove_waiting(self, entry_id: int) -> bool:
        return self._write("DELETE FROM waiting_runs WHERE id=?", (entry_id,)).rowcount > 0

    # -- dead letters

    def add_dead_letter(self, topic: str, partition: int, offset: int, timestamp_ms: int | None,
                        value: bytes | None, error: str) -> bool:
        """Keep a message that could not be handled; False if this very message was already kept
        (re-delivered after a restart)."""
        kept = None if value is None else bytes(value[:DEAD_LETTER_MAX_BYTES])
        cur = self._write(
            "INSERT OR IGNORE INTO dead_letters (topic, kafka_partition, kafka_offset, timestamp_ms, received_at,"
            " error, size, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (topic, partition, offset, timestamp_ms, time.time(), error[:2000], None if value is None else len(value),
             kept))
        return cur.rowcount > 0

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, newest first."""
        sql = ("SELECT id, topic, kafka_partition, kafka_offset, timestamp_ms, received_at, error, size, value "
               "FROM dead_letters ORDER BY id DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [DeadLetter(*r) for r in self._rows(sql)]

    def dead_letter_count(self) -> int:
        return self._rows("SELECT COUNT(*) FROM dead_letters")[0][0]

    def remove_dead_letters(self, ids: list[int] | None = None) -> int:
        """Delete these dead letters (all with None); returns how many."""
        if ids is None:
            return self._write("DELETE FROM dead_letters").rowcount
        return sum(self._write("DELETE FROM dead_letters WHERE id=?", (int(i),)).rowcount for i in ids)

    # -- Slurm jobs being watched

    def add_watched_job(self, job: WatchedJob) -> None:
        self._write("INSERT OR REPLACE INTO watched_jobs (job_id, cluster, db_dir, proposal, run, run_data, event,"
                    " processing_id, topic, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job.job_id, job.cluster or "", str(job.db_dir), job.proposal, job.run, job.run_data, job.event,
                     job.processing_id, job.topic, job.submitted_at))

    def remove_watched_job(self, job_id: str, cluster: str | None) -> None:
        self._write("DELETE FROM watched_jobs WHERE job_id=? AND cluster=?", (job_id, cluster or ""))

    def watched_jobs(self) -> list[WatchedJob]:
        rows = self._rows("SELECT job_id, cluster, db_dir, proposal, run, run_data, event, processing_id, topic,"
                          " submitted_at FROM watched_jobs ORDER BY submitted_at")
        return [WatchedJob(j, c or None, Path(d), p, r, rd, e, pid, t, s) for j, c, d, p, r, rd, e, pid, t, s in rows]
