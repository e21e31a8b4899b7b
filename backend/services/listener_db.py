"""``listener.sqlite``: which databases a listener feeds and its settings (docs/spec.md "Listener: listener.sqlite").

Same tables as the original, so a listener directory can be shared between the two implementations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LISTENER_DB_NAME = "listener.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS proposal_databases(proposal, db_dir UNIQUE, official);
CREATE INDEX IF NOT EXISTS proposals ON proposal_databases (proposal);
CREATE TABLE IF NOT EXISTS settings(key PRIMARY KEY NOT NULL, value);
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
}
BOOL_SETTINGS = {"static_mode", "allow_local_processing", "use_slurm"}


@dataclass(frozen=True)
class ProposalDBInfo:
    proposal: int
    db_dir: Path
    official: bool


class SettingsMapping(MutableMapping):
    """The ``settings`` table as a dict; values keep their SQLite types (as the original stores them)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __getitem__(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return row[0]

    def __setitem__(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                              "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def __delitem__(self, key: str) -> None:
        with self.conn:
            if self.conn.execute("DELETE FROM settings WHERE key=?", (key,)).rowcount == 0:
                raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([r[0] for r in self.conn.execute("SELECT key FROM settings ORDER BY key")])

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM settings").fetchone()[0]


class ListenerDB:
    """A listener directory's ``listener.sqlite``."""

    def __init__(self, listener_dir: str | Path):
        self.path = Path(listener_dir).absolute() / LISTENER_DB_NAME
        self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.conn.executescript(SCHEMA)
        self.settings = SettingsMapping(self.conn)
        for key, value in DEFAULT_SETTINGS.items():
            self.settings.setdefault(key, value)

    def __enter__(self) -> ListenerDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def setting(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key, default)
        return bool(value) if key in BOOL_SETTINGS and value is not None else value

    def all_databases(self) -> list[ProposalDBInfo]:
        rows = self.conn.execute(
            "SELECT proposal, db_dir, official FROM proposal_databases ORDER BY proposal, db_dir")
        return [ProposalDBInfo(int(p), Path(d), bool(o)) for p, d, o in rows]

    def proposal_db_dirs(self, proposal: int) -> list[Path]:
        rows = self.conn.execute("SELECT db_dir FROM proposal_databases WHERE proposal=? ORDER BY db_dir",
                                 (int(proposal),))
        return [Path(r[0]) for r in rows]

    def add_proposal_db(self, proposal: int, db_dir: str | Path, official: bool) -> bool:
        """Register a database; False if that directory was already registered."""
        try:
            with self.conn:
                self.conn.execute("INSERT INTO proposal_databases (proposal, db_dir, official) VALUES (?, ?, ?)",
                                  (int(proposal), str(Path(db_dir).absolute()), bool(official)))
        except sqlite3.IntegrityError:
            return False
        return True

    def remove_proposal_db(self, db_dir: str | Path) -> bool:
        """Unregister a database directory; False if it was not registered."""
        with self.conn:
            cur = self.conn.execute("DELETE FROM proposal_databases WHERE db_dir=?",
                                    (str(Path(db_dir).absolute()),))
        return cur.rowcount > 0
