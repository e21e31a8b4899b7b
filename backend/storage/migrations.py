"""Schema versions of runs.sqlite and the steps between them (docs/spec.md "Database: versions and migrations").

Each step is a list of single SQL statements (not a script) so that it can run inside one explicit
transaction together with the version bump: a crash mid-upgrade leaves the previous version intact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIN_OPENABLE_VERSION = 1


@dataclass(frozen=True)
class Migration:
    to_version: int
    description: str
    statements: Sequence[str]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: run_info, long/narrow run_variables, metameta, variables, time_comments", (
        "CREATE TABLE IF NOT EXISTS run_info(proposal, run, start_time, added_at)",
        "CREATE UNIQUE INDEX IF NOT EXISTS proposal_run ON run_info (proposal, run)",
        "CREATE TABLE IF NOT EXISTS run_variables(proposal, run, name, version, value, timestamp,"
        " max_diff, provenance, summary_type, summary_method)",
        "CREATE UNIQUE INDEX IF NOT EXISTS variable_version ON run_variables (proposal, run, name, version)",
        # Placeholder views; DamnitDB.update_views() replaces them with one column per variable.
        "CREATE VIEW IF NOT EXISTS runs AS SELECT * FROM run_info",
        "CREATE VIEW IF NOT EXISTS max_diffs AS SELECT proposal, run FROM run_info",
        "CREATE TABLE IF NOT EXISTS metameta(key PRIMARY KEY NOT NULL, value)",
        "CREATE TABLE IF NOT EXISTS variables(name TEXT PRIMARY KEY NOT NULL, type TEXT, title TEXT,"
        " description TEXT, attributes TEXT)",
        "CREATE TABLE IF NOT EXISTS time_comments(timestamp, comment)",
    )),
    Migration(2, "run_variables.attributes (JSON: bold, background, units, error, error_cls)", (
        "ALTER TABLE run_variables ADD COLUMN attributes",
    )),
    Migration(3, "tags and variable_tags", (
        "CREATE TABLE IF NOT EXISTS tags(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL)",
        "CREATE TABLE IF NOT EXISTS variable_tags("
        " variable_name TEXT NOT NULL,"
        " tag_id INTEGER NOT NULL,"
        " FOREIGN KEY (variable_name) REFERENCES variables(name) ON DELETE CASCADE,"
        " FOREIGN KEY (tag_id) REFERENCES tags(id) ON DELETE CASCADE,"
        " PRIMARY KEY (variable_name, tag_id))",
    )),
    Migration(4, "trigger removing a tag when its last variable_tags reference goes", (
        "CREATE TRIGGER IF NOT EXISTS delete_orphan_tags_after_variable_tag_delete"
        " AFTER DELETE ON variable_tags FOR EACH ROW BEGIN"
        " DELETE FROM tags WHERE id = OLD.tag_id"
        " AND NOT EXISTS (SELECT 1 FROM variable_tags WHERE tag_id = OLD.tag_id);"
        " END",
    )),
)

LATEST_VERSION = max(m.to_version for m in MIGRATIONS)
assert [m.to_version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))


def pending_migrations(from_version: int, to_version: int = LATEST_VERSION) -> list[Migration]:
    """Steps that take a database at `from_version` (-1 = empty file) to `to_version`."""
    return [m for m in MIGRATIONS if from_version < m.to_version <= to_version]


def apply_migrations(conn: sqlite3.Connection, from_version: int,
                     begin: Callable[[], None] | None = None) -> list[Migration]:
    """Apply pending steps, each in its own transaction that also records the new version.

    `conn` must be in autocommit mode (isolation_level=None). `begin` starts a write transaction
    (default ``BEGIN IMMEDIATE``), so the caller can plug in its busy-retry logic.
    """
    applied = []
    for step in pending_migrations(from_version):
        if begin is None:
            conn.execute("BEGIN IMMEDIATE")
        else:
            begin()
        try:
            # Another process may have upgraded while we waited for the lock.
            row = conn.execute("SELECT value FROM metameta WHERE key='data_format_version'").fetchone() \
                if _has_table(conn, "metameta") else None
            current = int(row[0]) if row is not None else from_version
            if current >= step.to_version:
                conn.execute("COMMIT")
                continue
            for sql in step.statements:
                conn.execute(sql)
            conn.execute(
                "INSERT INTO metameta (key, value) VALUES ('data_format_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value=excluded.value", (step.to_version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(step)
    return applied


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def detect_version(conn: sqlite3.Connection) -> int:
    """Schema version of an existing database: -1 for an empty file, 0 for the legacy wide format."""
    if not _has_table(conn, "metameta"):
        return 0 if _has_table(conn, "runs") else -1
    row = conn.execute("SELECT value FROM metameta WHERE key='data_format_version'").fetchone()
    if row is None:
        # v0 databases had a metameta table but never recorded a version.
        return 0 if _has_table(conn, "runs") else -1
    return int(row[0])
