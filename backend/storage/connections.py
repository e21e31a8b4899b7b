"""Opening runs.sqlite safely when two SQLite libraries live in one process.

The columnar reader (``run_values.py``) reads through the ADBC SQLite driver, which carries its own copy
of SQLite; everything else uses Python's ``sqlite3`` module and the system's SQLite. SQLite locks files
with POSIX advisory locks, which belong to the process: when one library closes its file descriptor,
the other library's locks on the same file are released too (https://sqlite.org/howtocorrupt.html,
"Multiple copies of SQLite linked into the same application"). A writer in another process could then
write while we believe we hold a lock, or take our WAL away under us.

So, per database file and per process, the two libraries take turns: ``sqlite3`` connections are
registered while open (``DamnitDB`` and ``connect_readonly`` do this), and the ADBC reader runs only
while none is open (``arrow_turn``), making new ``sqlite3`` connections wait the few milliseconds it
takes. When a ``sqlite3`` connection is open (a long-lived ``DamnitDB`` in the same process, say) the
columnar reader uses ``sqlite3`` itself: slower, never unsafe.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

BUSY_TIMEOUT_S = 30  # how long SQLite itself waits for a lock before reporting "database is locked"


@dataclass
class _FileTurns:
    """Who has a database file open in this process: counts per library, and a condition to wait on."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    sqlite3_open: int = 0
    arrow_open: int = 0


_FILES: dict[str, _FileTurns] = {}
_FILES_LOCK = threading.Lock()


def _turns(path: str | os.PathLike) -> _FileTurns:
    key = os.path.realpath(path)
    with _FILES_LOCK:
        turns = _FILES.get(key)
        if turns is None:
            turns = _FILES[key] = _FileTurns()
        return turns


def sqlite3_opening(path: str | os.PathLike) -> None:
    """Register a ``sqlite3`` connection about to open ``path`` (waits while the ADBC reader has it)."""
    turns = _turns(path)
    with turns.cond:
        turns.cond.wait_for(lambda: turns.arrow_open == 0)
        turns.sqlite3_open += 1


def sqlite3_closed(path: str | os.PathLike) -> None:
    """Unregister a ``sqlite3`` connection of ``path`` (after ``close()``)."""
    turns = _turns(path)
    with turns.cond:
        turns.sqlite3_open = max(0, turns.sqlite3_open - 1)
        turns.cond.notify_all()


@contextmanager
def arrow_turn(path: str | os.PathLike) -> Iterator[bool]:
    """``with arrow_turn(path) as ok:`` ``ok`` says the ADBC reader may open ``path`` now (no ``sqlite3``
    connection to it is open in this process); ``sqlite3`` connections wait until the block ends."""
    turns = _turns(path)
    with turns.cond:
        ok = turns.sqlite3_open == 0
        if ok:
            turns.arrow_open += 1
    try:
        yield ok
    finally:
        if ok:
            with turns.cond:
                turns.arrow_open -= 1
                turns.cond.notify_all()


def readonly_uri(path: str | os.PathLike, *, immutable: bool = False) -> str:
    """A ``file:`` URI opening ``path`` read-only (``immutable``: without any locking, for a WAL database
    in a folder we cannot write, where SQLite cannot create the shared-memory file)."""
    return "file:" + quote(str(Path(path).absolute())) + ("?immutable=1" if immutable else "?mode=ro")


@contextmanager
def connect_readonly(path: str | os.PathLike) -> Iterator[sqlite3.Connection]:
    """A short-lived read-only ``sqlite3`` connection (autocommit: no transaction lingers between
    statements, so readers never hold a lock that would make a writer wait)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No DAMNIT database at {path}")
    sqlite3_opening(path)
    conn = None
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            conn = sqlite3.connect(readonly_uri(path, immutable=True), uri=True, isolation_level=None,
                                   check_same_thread=False)
        yield conn
    finally:
        if conn is not None:
            conn.close()
        sqlite3_closed(path)


# Filesystems where several hosts (e.g. Slurm nodes) may write one database: WAL's shared-memory index
# only works between processes of one host, so these keep SQLite's rollback journal.
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "gpfs", "lustre", "cifs", "smb3", "smbfs", "beegfs", "ceph",
                       "glusterfs", "fuse.sshfs", "fuse.glusterfs", "9p")


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type of the filesystem holding `path`, from /proc/mounts (None where that isn't available)."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for mount_point, fstype in mounts:
        mount_point = mount_point.replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fstype
    return best_type


def journal_mode_for(path: str | os.PathLike) -> str:
    """'wal' or 'delete': DAMNIT_SQLITE_JOURNAL_MODE if set, else WAL on local filesystems only."""
    wanted = os.environ.get("DAMNIT_SQLITE_JOURNAL_MODE", "auto").lower()
    if wanted not in ("auto", "wal", "delete"):
        raise ValueError(f"DAMNIT_SQLITE_JOURNAL_MODE must be 'auto', 'wal' or 'delete', not {wanted!r}")
    if wanted == "auto":
        fstype = filesystem_type(path) or ""
        return "delete" if fstype in NETWORK_FILESYSTEMS else "wal"
    return wanted
