"""Failed and waiting runs in runs.sqlite (backend/storage/processing_state.py), and the original DAMNIT
still reading a database that has them."""
from __future__ import annotations

import sqlite3

from backend.storage import processing_state as ps
from backend.storage.damnit_folder import initialize_proposal
from backend.storage.database import DamnitDB
from backend.storage.migrations import LATEST_VERSION
from backend.storage.records import ReducedData


def make_db(tmp_path, context="x = 1\n"):
    db_dir = tmp_path / "amore"
    db = initialize_proposal(db_dir, 1234)
    (db_dir / "context.py").write_text(context)
    return db_dir, db


def test_failures_are_recorded_replaced_and_cleared(tmp_path):
    db_dir, db = make_db(tmp_path)
    with db:
        assert ps.failures(db) == [] and ps.failure(db, 1234, 1) is None  # no table yet: nothing failed
        broken_sha, broken_mtime = ps.context_fingerprint(db_dir)
        ps.record_failure(db, 1234, 2, ps.CONTEXT, "SyntaxError:\n  '(' was never closed")
        ps.record_failure(db, 1234, 1, ps.JOB, "Slurm job 7 ended as TIMEOUT", slurm_job_id="7")
        ps.record_failure(db, 1234, 1, ps.CANCELLED, "Slurm job 8 was cancelled by ada", slurm_job_id=8)
        got = ps.failures(db)
        assert [(f.run, f.kind, f.slurm_job_id) for f in got] == [(1, "cancelled", "8"), (2, "context", None)]
        assert got[1].reason == "SyntaxError: '(' was never closed"  # one line
        assert (got[1].context_sha256, got[1].context_mtime) == (broken_sha, broken_mtime)

        (db_dir / "context.py").write_text("x = 2\n")
        fixed_sha = ps.context_fingerprint(db_dir)[0]
        assert [f.run for f in ps.failed_with_context(db, broken_sha)] == [1, 2]
        assert [f.run for f in ps.failed_with_other_context(db, fixed_sha)] == [2]  # context failures only
        assert [f.run for f in ps.failed_with_other_context(db, fixed_sha, kinds=ps.KINDS)] == [1, 2]
        assert ps.failed_with_other_context(db, broken_sha) == []

        assert ps.clear_failure(db, 1234, 2) and not ps.clear_failure(db, 1234, 2)
        assert [f.run for f in ps.failures(db)] == [1]

        ps.set_waiting(db, 1234, 3, "raw", "Slurm unavailable", since=100.0, attempts=2, next_attempt=160.0)
        assert ps.waiting(db) == [ps.WaitingRun(1234, 3, "raw", "Slurm unavailable", 100.0, 2, 160.0)]
    state = ps.read_state(db_dir)  # what a dashboard reads, read-only
    assert set(state.failures) == {(1234, 1)} and set(state.waiting) == {(1234, 3)}
    with DamnitDB.from_dir(db_dir) as db:
        assert ps.clear_waiting(db, 1234, 3) and ps.waiting(db) == []


def test_no_context_file_and_unknown_kinds(tmp_path):
    db_dir, db = make_db(tmp_path)
    (db_dir / "context.py").unlink()
    with db:
        ps.record_failure(db, 1234, 1, ps.RUN, "OSError: no such run")
        assert ps.failure(db, 1234, 1).context_sha256 is None
        try:
            ps.record_failure(db, 1234, 1, "bad", "x")
        except ValueError as e:
            assert "unknown failure kind" in str(e)
        else:
            raise AssertionError("an unknown kind was accepted")


def test_original_damnit_reads_a_database_with_our_tables(tmp_path, damnit_oracle):
    """The extra tables change neither the data format version nor what the original reads."""
    db_dir, db = make_db(tmp_path)
    with db:
        db.update_computed_variables({"energy": {"title": "Energy", "description": None}})
        db.ensure_run(1234, 1, added_at=1_700_000_000.0, start_time=1_700_000_000.0)  # (the original lists runs with one)
        db.set_variables(1234, 1, {"energy": ReducedData(1.5)}, provenance="context.py")
        ps.record_failure(db, 1234, 1, ps.CANCELLED, "Slurm job 8 was cancelled by ada")
        ps.set_waiting(db, 1234, 2, "raw", "Slurm unavailable", since=1.0)
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    version = conn.execute("SELECT value FROM metameta WHERE key='data_format_version'").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert int(version) == LATEST_VERSION == 4
    assert {"processing_failures", "processing_waiting"} <= tables
    out = damnit_oracle.run_json(
        "import json\n"
        "from damnit import Damnit\n"
        "from damnit.backend.db import DamnitDB\n"
        f"table = Damnit({str(db_dir)!r}).table()\n"
        f"theirs = DamnitDB.from_dir({str(db_dir)!r})\n"
        "theirs.change_run_comment(1234, 1, 'seen by the original')\n"
        "theirs.close()\n"
        "print(json.dumps({'energy': table['energy'].tolist(), 'runs': table['run'].tolist()}))\n")
    assert out == {"energy": [1.5], "runs": [1]}
    # ... and our tables are still there, untouched, after the original wrote to the database
    with DamnitDB.from_dir(db_dir) as db:
        assert ps.failure(db, 1234, 1).kind == "cancelled" and [w.run for w in ps.waiting(db)] == [2]
        comment = db.conn.execute("SELECT value FROM run_variables WHERE run=1 AND name='comment'").fetchone()[0]
        assert comment == "seen by the original"
