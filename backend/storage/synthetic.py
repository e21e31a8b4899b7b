"""Synthetic DAMNIT databases of any size, for dashboard tests and benchmarks.

Writes a v4 ``runs.sqlite`` straight from the spec schema (docs/spec.md "Database: tables and views") with the value kinds the run
table must show: floats, integers, strings, PNG thumbnails, trendlines, errors, skips, bold/background
cells, units, tags and titles with ``/`` groups. Real processed data comes from ``backend``; this is
for sizes (5000 runs x 300 variables) that processing mock runs would take hours to produce.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

KINDS = ("float", "int", "string", "png", "trendline", "error", "skip")


def _png(rng: np.random.Generator, w: int = 32, h: int = 16) -> bytes:
    from PIL import Image

    arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def create_schema(db_path: Path, proposal: int, db_id: str | None = None) -> sqlite3.Connection:
    from backend.storage.migrations import apply_migrations

    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    apply_migrations(conn, -1)
    conn.executemany("INSERT OR REPLACE INTO metameta VALUES (?, ?)",
                     [("proposal", proposal), ("db_id", db_id or os.urandom(20).hex())])
    return conn


def variable_kind(i: int) -> str:
    """Mostly numbers, like real proposals; every 10th an image, etc."""
    if i % 10 == 3:
        return "png"
    if i % 10 == 6:
        return "trendline"
    if i % 10 == 8:
        return "string"
    if i % 10 == 9:
        return "int"
    return "float"


def make_database(db_dir: str | Path, *, proposal: int = 1234, n_runs: int = 20, n_vars: int = 12,
                  seed: int = 0, user_vars: bool = True) -> Path:
    """Create ``db_dir/runs.sqlite`` with ``n_runs`` x ``n_vars`` values; returns the DB dir."""
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    conn = create_schema(db_dir / "runs.sqlite", proposal)
    names = [f"v{i:03d}" for i in range(n_vars)]
    now = time.time()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO tags (name) VALUES ('scalars'), ('images')")
    for i, n in enumerate(names):
        kind = variable_kind(i)
        group = ["XGM", "Camera", "Motors", "Spectrometer"][i % 4]
        conn.execute("INSERT INTO variables (name, type, title, description, attributes) VALUES (?,?,?,?,?)",
                     (n, None, f"{group}/{kind} {i}", f"Synthetic {kind} variable number {i}", None))
        conn.execute("INSERT INTO variable_tags (variable_name, tag_id) VALUES (?, ?)",
                     (n, 2 if kind in ("png", "trendline") else 1))
    if user_vars:
        for name, typ, title in [("sample", "string", "Sample"), ("good", "boolean", "Good run"),
                                 ("shots", "integer", "Shots"), ("energy", "number", "Energy")]:
            conn.execute("INSERT INTO variables (name, type, title, description, attributes) VALUES (?,?,?,?,?)",
                         (name, typ, title, f"User-editable {typ}", None))
    png_pool = [_png(rng) for _ in range(8)]
    trend_pool = [_npy(np.vstack([np.arange(50.0), np.cumsum(rng.normal(size=50))])) for _ in range(8)]
    rows = []
    for r in range(1, n_runs + 1):
        start = now - (n_runs - r) * 60
        conn.execute("INSERT INTO run_info (proposal, run, start_time, added_at) VALUES (?,?,?,?)",
                     (proposal, r, start, start + 5))
        rows.append((proposal, r, "comment", 1, f"run {r}" if r % 3 == 0 else None, start, None, "manual-input",
                     None, None, None))
        for i, n in enumerate(names):
            kind = variable_kind(i)
            attrs = None
            stype = None
            if (r * 7 + i) % 97 == 0:
                rows.append((proposal, r, n, 1, None, start, None, "context.py", None, None,
                             json.dumps({"error": f"Boom in {n}", "error_cls": "RuntimeError"})))
                continue
            if (r * 5 + i) % 89 == 0:
                rows.append((proposal, r, n, 1, None, start, None, "context.py", None, None,
                             json.dumps({"error": "Skipped: no data", "error_cls": "Skip"})))
                continue
            if kind == "float":
                value = float(rng.normal(100 * (i + 1), 10))
                if i % 5 == 0:
                    attrs = json.dumps({"units": "µJ"})
                if i % 7 == 1 and r % 4 == 0:
                    attrs = json.dumps({"bold": True, "background": [255, 200, 0]})
            elif kind == "int":
                value = int(rng.integers(0, 5000))
            elif kind == "string":
                value = f"sample-{r % 13}"
            elif kind == "png":
                value = png_pool[(r + i) % len(png_pool)]
                stype = None
            else:
                value = trend_pool[(r + i) % len(trend_pool)]
                stype = "trendline"
            rows.append((proposal, r, n, 1, value, start, 0.0, "context.py", stype, None, attrs))
    conn.executemany(
        "INSERT INTO run_variables (proposal, run, name, version, value, timestamp, max_diff, provenance,"
        " summary_type, summary_method, attributes) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return db_dir


def set_value(db_dir: str | Path, run: int, name: str, value, *, proposal: int | None = None,
              attributes: dict | None = None) -> None:
    """Write one value (a new run gets a run_info row), as a processing job would."""
    conn = sqlite3.connect(Path(db_dir) / "runs.sqlite", isolation_level=None, timeout=30)
    try:
        if proposal is None:
            proposal = int(conn.execute("SELECT value FROM metameta WHERE key='proposal'").fetchone()[0])
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR IGNORE INTO run_info (proposal, run, start_time, added_at) VALUES (?,?,?,?)",
                     (proposal, run, now, now))
        conn.execute(
            "INSERT INTO run_variables (proposal, run, name, version, value, timestamp, provenance, attributes)"
            " VALUES (?,?,?,1,?,?,?,?) ON CONFLICT (proposal, run, name, version) DO UPDATE SET"
            " value=excluded.value, timestamp=excluded.timestamp, attributes=excluded.attributes",
            (proposal, run, name, value, now, "context.py", json.dumps(attributes) if attributes else None))
        conn.execute("COMMIT")
    finally:
        conn.close()
