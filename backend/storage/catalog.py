"""Reads of the small tables of runs.sqlite: settings, variables with their tags, runs, standalone comments.

Every function takes an ``ArrowReader`` (a read session of its own, or ``ArrowReader.over(db.conn)`` on an
open ``DamnitDB``), so the read API, the dashboard and the writers share one version of each query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from .arrow_reader import ArrowReader
from .user_variables import UserEditableVariable

SPECIAL_TITLES = {"run": "Run", "proposal": "Proposal", "start_time": "Timestamp", "comment": "Comment",
                  "added_at": "Added at"}


@dataclass(frozen=True)
class VariableInfo:
    """One variable as the ``variables`` table (and its tags) define it."""

    name: str
    title: str | None = None
    description: str | None = None
    type: str | None = None  # None = computed by the context file; else a user-editable value type
    tags: tuple[str, ...] = ()
    attributes: dict | None = None

    @property
    def display_title(self) -> str:
        return self.title or SPECIAL_TITLES.get(self.name, self.name)

    @property
    def user_editable(self) -> bool:
        return self.type is not None


@dataclass(frozen=True)
class RunInfo:
    proposal: int
    run: int
    start_time: float | None
    added_at: float | None


def _rows(reader: ArrowReader, sql: str, columns: list[tuple[str, pa.DataType]], params=()) -> list[dict]:
    return reader.query(sql, pa.schema(columns), params).to_pylist()


def table_names(reader: ArrowReader) -> set[str]:
    return {r["name"] for r in _rows(reader, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')",
                                     [("name", pa.string())])}


def settings(reader: ArrowReader) -> dict[str, object]:
    """The ``metameta`` table (proposal, db_id, context_python, ...). Values keep their stored type."""
    rows = _rows(reader, "SELECT CAST(key AS TEXT), typeof(value), CAST(value AS TEXT) FROM metameta",
                 [("key", pa.string()), ("type", pa.string()), ("value", pa.string())])
    out: dict[str, object] = {}
    for r in rows:
        value = r["value"]
        if r["type"] == "integer":
            value = int(value)
        elif r["type"] == "real":
            value = float(value)
        out[r["key"]] = value
    return out


def variables(reader: ArrowReader) -> dict[str, VariableInfo]:
    """Every defined variable with its tags, by name."""
    tags: dict[str, list[str]] = {}
    if "variable_tags" in table_names(reader):
        for r in _rows(reader, "SELECT CAST(vt.variable_name AS TEXT), CAST(t.name AS TEXT) FROM variable_tags vt "
                               "JOIN tags t ON vt.tag_id = t.id ORDER BY t.name",
                       [("variable", pa.string()), ("tag", pa.string())]):
            tags.setdefault(r["variable"], []).append(r["tag"])
    out = {}
    for r in _rows(reader, "SELECT CAST(name AS TEXT), CAST(type AS TEXT), CAST(title AS TEXT), "
                           "CAST(description AS TEXT), CAST(attributes AS TEXT) FROM variables",
                   [("name", pa.string()), ("type", pa.string()), ("title", pa.string()),
                    ("description", pa.string()), ("attributes", pa.string())]):
        out[r["name"]] = VariableInfo(name=r["name"], title=r["title"], description=r["description"],
                                      type=r["type"], tags=tuple(tags.get(r["name"], ())),
                                      attributes=_json_dict(r["attributes"]))
    return out


def variable_titles(reader: ArrowReader) -> dict[str, str]:
    """{name: title}, the name standing in for a missing title."""
    return {r["name"]: (r["title"] if r["title"] is not None else r["name"])
            for r in _rows(reader, "SELECT CAST(name AS TEXT), CAST(title AS TEXT) FROM variables",
                           [("name", pa.string()), ("title", pa.string())])}


def user_variables(reader: ArrowReader) -> dict[str, UserEditableVariable]:
    return {r["name"]: UserEditableVariable(r["name"], title=r["title"], variable_type=r["type"],
                                            description=r["description"], attributes=r["attributes"])
            for r in _rows(reader, "SELECT CAST(name AS TEXT), CAST(title AS TEXT), CAST(type AS TEXT), "
                                   "CAST(description AS TEXT), CAST(attributes AS TEXT) FROM variables "
                                   "WHERE type IS NOT NULL",
                           [("name", pa.string()), ("title", pa.string()), ("type", pa.string()),
                            ("description", pa.string()), ("attributes", pa.string())])}


def runs(reader: ArrowReader, *, taken_only: bool = False) -> list[RunInfo]:
    """Rows of ``run_info`` by proposal and run; ``taken_only``: those with a start time (runs taken by
    the DAQ, not rows created ahead for comments)."""
    where = " WHERE start_time IS NOT NULL" if taken_only else ""
    return [RunInfo(**r) for r in _rows(
        reader, "SELECT CAST(proposal AS INTEGER), CAST(run AS INTEGER), CAST(start_time AS REAL), "
                f"CAST(added_at AS REAL) FROM run_info{where} ORDER BY proposal, run",
        [("proposal", pa.int64()), ("run", pa.int64()), ("start_time", pa.float64()), ("added_at", pa.float64())])]


def standalone_comments(reader: ArrowReader) -> list[dict]:
    """All standalone comments as {id, timestamp, comment}, oldest first."""
    return _rows(reader, "SELECT rowid, CAST(timestamp AS REAL), CAST(comment AS TEXT) FROM time_comments "
                         "ORDER BY timestamp, rowid",
                 [("id", pa.int64()), ("timestamp", pa.float64()), ("comment", pa.string())])


def change_signature(reader: ArrowReader) -> tuple:
    """(runs, variables and tags, standalone comments): each part changes whenever what it names changes
    (cheap: counts and sums), so a poller knows what to re-read."""
    sig = _rows(reader, "SELECT count(*), max(rowid), total(start_time) FROM run_info",
                [("n", pa.int64()), ("max", pa.int64()), ("total", pa.float64())])[0]
    var = _rows(reader, "SELECT count(*), group_concat(name || ':' || ifnull(title, '') || ':' || ifnull(type, '') "
                        "|| ':' || ifnull(description, ''), '|') FROM variables",
                [("n", pa.int64()), ("text", pa.string())])[0]
    tags = {"n": 0, "total": 0.0}
    if "variable_tags" in table_names(reader):
        tags = _rows(reader, "SELECT count(*), total(tag_id) FROM variable_tags",
                     [("n", pa.int64()), ("total", pa.float64())])[0]
    comments = _rows(reader, "SELECT count(*), total(timestamp), total(length(comment)), "
                             "group_concat(rowid || ':' || ifnull(comment, ''), '|') FROM time_comments",
                     [("n", pa.int64()), ("t", pa.float64()), ("len", pa.float64()), ("text", pa.string())])[0]
    return tuple(sig.values()), (*var.values(), *tags.values()), tuple(comments.values())


def _json_dict(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj else None
