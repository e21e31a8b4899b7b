"""runs.sqlite: schema v4, metameta, values, comments, user variables, tags, migrations, concurrency."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend.storage.blobs import blob2complex, blob2numpy
from backend.storage.damnit_folder import initialize_proposal
from backend.storage.database import DamnitDB, DatabaseVersionError, LegacyDatabaseError
from backend.storage.migrations import LATEST_VERSION
from backend.storage.records import ReducedData
from backend.storage.user_variables import UserEditableVariable
from tests.infra import REPO

# What the original DAMNIT 0.4 creates (sqlite_master type/name pairs).
V4_OBJECTS = {
    ("table", "run_info"), ("index", "proposal_run"), ("table", "run_variables"),
    ("index", "variable_version"), ("view", "runs"), ("view", "max_diffs"), ("table", "metameta"),
    ("index", "sqlite_autoindex_metameta_1"), ("table", "variables"),
    ("index", "sqlite_autoindex_variables_1"), ("table", "time_comments"), ("table", "tags"),
    ("index", "sqlite_autoindex_tags_1"), ("table", "sqlite_sequence"), ("table", "variable_tags"),
    ("index", "sqlite_autoindex_variable_tags_1"),
    ("trigger", "delete_orphan_tags_after_variable_tag_delete"),
}
RUN_VARIABLES_COLUMNS = ["proposal", "run", "name", "version", "value", "timestamp", "max_diff", "provenance",
                         "summary_type", "summary_method", "attributes"]


@pytest.fixture
def db(tmp_path):
    db = initialize_proposal(tmp_path / "amore", 1234)
    yield db
    db.close()


def columns(conn, table):
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def test_new_database_schema_and_metameta(tmp_path):
    db = initialize_proposal(tmp_path, 1234)
    objects = {(r[0], r[1]) for r in db.conn.execute("SELECT type, name FROM sqlite_master")}
    assert objects == V4_OBJECTS
    assert columns(db.conn, "run_variables") == RUN_VARIABLES_COLUMNS
    assert columns(db.conn, "run_info") == ["proposal", "run", "start_time", "added_at"]
    assert columns(db.conn, "variables") == ["name", "type", "title", "description", "attributes"]
    meta = db.metameta.to_dict()
    assert meta["data_format_version"] == LATEST_VERSION == 4
    assert re.fullmatch(r"[0-9a-f]{40}", meta["db_id"])
    assert meta["proposal"] == 1234
    assert meta["concurrent_jobs"] == 15
    assert meta["damnit_python"] == sys.executable
    assert meta["context_python"] == sys.executable
    assert db.kafka_topic == f"test.damnit.db-{meta['db_id']}"
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "context.py").is_file()
    assert os.stat(tmp_path / "runs.sqlite").st_mode & 0o777 == 0o666
    db.close()
    # Reopening keeps the id and doesn't rewrite anything.
    with DamnitDB.from_dir(tmp_path) as db2:
        assert db2.metameta["db_id"] == meta["db_id"]


def test_missing_database(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs.sqlite"):
        DamnitDB.from_dir(tmp_path)


def test_metameta_mapping(db):
    m = db.metameta
    m["slurm_time"] = "01:00:00"
    assert m["slurm_time"] == "01:00:00" and "slurm_time" in m
    m.update({"noncluster_cpus": 8, "noncluster_mem": "50G"})
    assert m.get("noncluster_cpus") == 8
    assert m.setdefault("noncluster_cpus", 2) == 8
    assert m.setdefault("slurm_partition", "upex") == "upex"
    del m["slurm_partition"]
    with pytest.raises(KeyError):
        m["slurm_partition"]
    with pytest.raises(KeyError):
        del m["slurm_partition"]
    assert len(m) == len(list(m)) == len(m.to_dict())
    assert dict(m.items())["noncluster_mem"] == "50G"


def test_set_variables_values_and_views(db):
    db.set_variables(1234, 5, {
        "scalar": ReducedData(np.float32(1.5), max_diff=np.float64(0.25)),
        "integer": ReducedData(np.int64(7)),
        "flag": ReducedData(np.bool_(True)),
        "text": ReducedData("hello"),
        "png": ReducedData(b"\x89PNG\r\n\x1a\n0000"),
        "cplx": ReducedData(1 + 2j),
        "arr": ReducedData(np.arange(6.0).reshape(2, 3)),
        "trend": ReducedData(np.ones((2, 4)), summary_type="trendline"),
        "fancy": ReducedData(3.0, summary_method="mean", attributes={"bold": True, "units": "eV",
                                                                     "background": np.array([1, 2, 3])}),
        "failed": ReducedData(None, attributes={"error": "boom", "error_cls": "ValueError"}),
        "start_time": ReducedData(1.7e9),
    }, provenance="context.py")
    rows = {r["name"]: r for r in db.conn.execute("SELECT * FROM run_variables")}
    assert "start_time" not in rows
    assert db.conn.execute("SELECT start_time FROM run_info WHERE run=5").fetchone()[0] == 1.7e9
    assert rows["scalar"]["value"] == 1.5 and rows["scalar"]["max_diff"] == 0.25
    assert rows["integer"]["value"] == 7 and rows["flag"]["value"] == 1
    assert rows["png"]["value"].startswith(b"\x89PNG") and rows["png"]["summary_type"] is None
    assert rows["cplx"]["summary_type"] == "complex" and blob2complex(rows["cplx"]["value"]) == 1 + 2j
    assert rows["arr"]["summary_type"] == "numpy"
    np.testing.assert_array_equal(blob2numpy(rows["arr"]["value"]), np.arange(6.0).reshape(2, 3))
    assert rows["trend"]["summary_type"] == "trendline"
    assert rows["fancy"]["summary_method"] == "mean"
    assert rows["fancy"]["attributes"] == '{"bold": true, "units": "eV", "background": [1, 2, 3]}'
    assert rows["failed"]["value"] is None and rows["failed"]["summary_type"] is None
    assert '"error_cls": "ValueError"' in rows["failed"]["attributes"]
    assert all(r["provenance"] == "context.py" and r["version"] == 1 for r in rows.values())

    view = dict(db.conn.execute("SELECT * FROM runs").fetchone())
    assert view["scalar"] == 1.5 and view["text"] == "hello" and view["start_time"] == 1.7e9
    assert dict(db.conn.execute("SELECT * FROM max_diffs").fetchone())["scalar"] == 0.25

    # Overwrite: same row, new value; a value of None clears value and metadata.
    db.set_variables(1234, 5, {"scalar": ReducedData(None)})
    row = db.conn.execute("SELECT value, max_diff, attributes FROM run_variables WHERE name='scalar'").fetchone()
    assert tuple(row) == (None, None, None)
    assert db.conn.execute("SELECT count(*) FROM run_variables WHERE name='scalar'").fetchone()[0] == 1


def test_set_variables_rejects_bad_input(db):
    with pytest.raises(ValueError, match="Invalid variable name 'bad name' for p1234 r1"):
        db.set_variables(1234, 1, {"bad name": ReducedData(1)})
    with pytest.raises(TypeError, match="'obj'.*p1234 r1"):
        db.set_variables(1234, 1, {"obj": ReducedData({"a": 1})})
    with pytest.raises(TypeError, match="object array"):
        db.set_variables(1234, 1, {"obj": ReducedData(np.array([None, 1]))})
    # Nothing half-written
    assert db.conn.execute("SELECT count(*) FROM run_variables").fetchone()[0] == 0


def test_text_sqlite_cannot_hold_is_escaped_and_big_integers_become_floats(db):
    # Non-UTF-8 bytes come back from a run file with surrogate escapes; other lone surrogates too.
    db.set_variables(1234, 1, {"raw": ReducedData("ok \udcff\udcfe"), "odd": ReducedData("\ud800!"),
                               "nul": ReducedData("a\x00b"), "huge": ReducedData(np.uint64(2**64 - 1)),
                               "small": ReducedData(-2**63)})
    values = dict(db.conn.execute("SELECT name, value FROM run_variables"))
    assert values == {"raw": "ok \\xff\\xfe", "odd": "\\ud800!", "nul": "a\x00b", "huge": float(2**64 - 1),
                      "small": -2**63}


def test_unstorable_says_what_set_variables_would_refuse(db):
    refused = db.unstorable(1234, 1, {"ok": ReducedData(1.0), "obj": ReducedData(object()),
                                      "objarr": ReducedData(np.array([None, 1]))})
    assert sorted(refused) == ["obj", "objarr"]
    assert isinstance(refused["obj"], TypeError) and "'obj'" in str(refused["obj"])
    limit = db.conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    db.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
    try:
        refused = db.unstorable(1234, 1, {"long": ReducedData("x" * 1001), "fits": ReducedData("é" * 500)})
    finally:
        db.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
    assert list(refused) == ["long"] and "too large for the database" in str(refused["long"])
    assert db.conn.execute("SELECT count(*) FROM run_variables").fetchone()[0] == 0


def test_dotted_names_and_quotes_in_views(db):
    db.set_variables(1234, 1, {"grp.sub": ReducedData(1.0)})
    assert dict(db.conn.execute("SELECT * FROM runs").fetchone())["grp.sub"] == 1.0


def test_run_comment_and_ensure_run(db):
    db.ensure_run(1234, 3, added_at=100.0)
    db.ensure_run(1234, 3, start_time=200.0)
    assert tuple(db.conn.execute("SELECT added_at, start_time FROM run_info").fetchone()) == (100.0, 200.0)
    db.change_run_comment(1234, 3, "dark run")
    assert db.conn.execute("SELECT comment FROM runs WHERE run=3").fetchone()[0] == "dark run"
    assert db.conn.execute("SELECT provenance FROM run_variables WHERE name='comment'").fetchone()[0] == ""


def test_standalone_comments(db):
    a = db.add_standalone_comment(10.0, "beam down")
    b = db.add_standalone_comment(5.0, "started")
    db.change_standalone_comment(a, "beam back")
    assert db.standalone_comments() == [{"id": b, "timestamp": 5.0, "comment": "started"},
                                        {"id": a, "timestamp": 10.0, "comment": "beam back"}]
    with pytest.raises(KeyError, match="99"):
        db.change_standalone_comment(99, "x")
    db.delete_standalone_comment(b)
    assert [c["id"] for c in db.standalone_comments()] == [a]


def test_user_variables(db):
    db.add_user_variable(UserEditableVariable("good", "Good run", "boolean", "Is it good?"))
    db.add_user_variable(UserEditableVariable("sample", "Sample", "string"))
    uv = db.get_user_variables()
    assert set(uv) == {"good", "sample"} and uv["good"].description == "Is it good?"
    assert "good" in db.variable_names()
    assert "good" in [r[1] for r in db.conn.execute("PRAGMA table_info(runs)")]
    with pytest.raises(ValueError, match="already exists"):
        db.add_user_variable(UserEditableVariable("good", "Other", "integer"))
    with pytest.raises(ValueError, match="already used by variable 'sample'"):
        db.add_user_variable(UserEditableVariable("sample2", "Sample", "string"))
    with pytest.raises(ValueError, match="unknown type 'float'"):
        db.add_user_variable(UserEditableVariable("x", "X", "float"))
    with pytest.raises(ValueError, match="not valid"):
        db.add_user_variable(UserEditableVariable("1x", "X", "string"))
    db.add_user_variable(UserEditableVariable("good", "Good run", "integer"), exist_ok=True)
    assert db.get_user_variables()["good"].variable_type == "integer"

    assert db.set_user_variable_value(1234, 1, "sample", "Au foil") == "Au foil"
    assert db.set_user_variable_value(1234, 1, "good", " 42 ") == 42
    with pytest.raises(ValueError, match=r"Invalid value for 'Good run' \(integer\): 'abc' is not a whole"):
        db.set_user_variable_value(1234, 1, "good", "abc")
    assert db.set_user_variable_value(1234, 1, "sample", "") is None
    rows = dict(db.conn.execute("SELECT name, provenance FROM run_variables").fetchall())
    assert rows == {"sample": "manual-input", "good": "manual-input"}
    with pytest.raises(KeyError, match="not a user-editable"):
        db.set_user_variable_value(1234, 1, "nope", "1")


def test_update_computed_variables_and_tags(db):
    defs = {
        "a": {"title": "A", "description": "first", "tags": ["x", "y"], "data": "raw", "type": None},
        "b": {"title": "B", "description": None, "tags": "x"},
    }
    assert set(db.update_computed_variables(defs)) == {"a", "b"}
    assert db.get_variable_tags("a") == ["x", "y"] and db.get_variables_by_tag("x") == ["a", "b"]
    assert db.update_computed_variables(defs) == {}  # nothing changed, nothing re-announced
    defs["a"]["tags"] = ["x"]
    assert set(db.update_computed_variables(defs)) == {"a"}
    assert db.get_all_tags() == ["x"]  # 'y' lost its last reference → removed by the trigger
    assert set(db.update_computed_variables({"a": {"title": "A2", "description": "first", "tags": ["x"]}})) == {"a"}
    # Variables dropped from the context are kept.
    assert dict(db.conn.execute("SELECT name, title FROM variables").fetchall()) == {"a": "A2", "b": "B"}
    assert db.variable_titles() == {"a": "A2", "b": "B"}
    assert db.variable_descriptions() == {"a": "first"}

    assert db.add_tag("z") == db.get_tag_id("z")
    db.tag_variable("b", "z")
    db.untag_variable("b", "z")
    assert db.get_tag_id("z") is None
    assert db.get_tag_id("nonexistent") is None


def test_delete_variable(db):
    db.update_computed_variables({"a": {"title": "A", "description": "", "tags": ["t"]}})
    db.set_variables(1234, 1, {"a": ReducedData(1.0), "b": ReducedData(2.0)})
    db.delete_variable("a")
    assert "a" not in db.variable_names()
    assert db.get_all_tags() == []
    assert "a" not in [r[1] for r in db.conn.execute("PRAGMA table_info(runs)")]
    assert db.conn.execute("SELECT b FROM runs").fetchone()[0] == 2.0


# -- migrations ---------------------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE run_info(proposal, run, start_time, added_at);
CREATE UNIQUE INDEX proposal_run ON run_info (proposal, run);
CREATE TABLE run_variables(proposal, run, name, version, value, timestamp, max_diff, provenance,
                           summary_type, summary_method);
CREATE UNIQUE INDEX variable_version ON run_variables (proposal, run, name, version);
CREATE VIEW runs AS SELECT * FROM run_info;
CREATE VIEW max_diffs AS SELECT proposal, run FROM run_info;
CREATE TABLE metameta(key PRIMARY KEY NOT NULL, value);
CREATE TABLE variables(name TEXT PRIMARY KEY NOT NULL, type TEXT, title TEXT, description TEXT,
                       attributes TEXT);
CREATE TABLE time_comments(timestamp, comment);
INSERT INTO metameta VALUES ('data_format_version', 1), ('proposal', 1234),
    ('db_id', 'abcdefabcdefabcdefabcdefabcdefabcdefabcd');
INSERT INTO run_info VALUES (1234, 1, 1.7e9, 1.7e9);
INSERT INTO run_variables VALUES (1234, 1, 'x', 1, 3.5, 1.7e9, NULL, 'context.py', NULL, '');
INSERT INTO variables VALUES ('x', NULL, 'X', 'an x', NULL);
INSERT INTO time_comments VALUES (1.7e9, 'hello');
"""
V2_EXTRA = """
ALTER TABLE run_variables ADD COLUMN attributes;
UPDATE run_variables SET attributes = '{"units": "mm"}';
UPDATE metameta SET value = 2 WHERE key = 'data_format_version';
"""
V3_EXTRA = """
CREATE TABLE tags(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL);
CREATE TABLE variable_tags(variable_name TEXT NOT NULL, tag_id INTEGER NOT NULL,
    FOREIGN KEY (variable_name) REFERENCES variables(name) ON DELETE CASCADE,
    FOREIGN KEY (tag_id) REFERENCES tags(id) ON DELETE CASCADE, PRIMARY KEY (variable_name, tag_id));
INSERT INTO tags (name) VALUES ('old');
INSERT INTO variable_tags VALUES ('x', 1);
UPDATE metameta SET value = 3 WHERE key = 'data_format_version';
"""
V0_SCHEMA = """
CREATE TABLE runs(proposal, runnr, start_time, added_at, comment, var1);
CREATE UNIQUE INDEX proposal_run ON runs (proposal, runnr);
CREATE TABLE metameta(key PRIMARY KEY NOT NULL, value);
CREATE TABLE variables(name TEXT PRIMARY KEY NOT NULL, type TEXT, title TEXT, description TEXT, attributes TEXT);
CREATE TABLE time_comments(timestamp, comment);
INSERT INTO runs VALUES (3422, 1, 1683091429.38, 1683098801.77, 'agipd dark', 300.55);
INSERT INTO metameta VALUES ('proposal', 3422);
"""


def make_db(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.close()
    return path


@pytest.mark.parametrize("version", [1, 2, 3])
def test_migrate_to_v4(tmp_path, version):
    script = V1_SCHEMA + (V2_EXTRA if version >= 2 else "") + (V3_EXTRA if version >= 3 else "")
    path = make_db(tmp_path / "runs.sqlite", script)
    with DamnitDB(path) as db:
        assert db.metameta["data_format_version"] == 4
        objects = {(r[0], r[1]) for r in db.conn.execute("SELECT type, name FROM sqlite_master")}
        assert objects == V4_OBJECTS
        assert columns(db.conn, "run_variables") == RUN_VARIABLES_COLUMNS
        # Data survived
        assert db.conn.execute("SELECT value FROM run_variables WHERE name='x'").fetchone()[0] == 3.5
        assert db.standalone_comments()[0]["comment"] == "hello"
        assert db.metameta["db_id"] == "abcdefabcdefabcdefabcdefabcdefabcdefabcd"
        if version >= 2:
            assert db.conn.execute("SELECT attributes FROM run_variables").fetchone()[0] == '{"units": "mm"}'
        if version == 3:
            assert db.get_variable_tags("x") == ["old"]
        # The upgraded database works: tag sync + orphan trigger
        db.update_computed_variables({"x": {"title": "X", "description": "an x", "tags": ["new"]}})
        assert db.get_all_tags() == ["new"]
        db.set_variables(1234, 1, {"y": ReducedData(1.0)})
        assert dict(db.conn.execute("SELECT * FROM runs").fetchone())["y"] == 1.0


def test_migration_steps_commit_separately(tmp_path):
    # A view named variable_tags makes the v3→v4 step (a trigger on that table) fail; v1→v3 must stick.
    path = make_db(tmp_path / "runs.sqlite", V1_SCHEMA + "CREATE VIEW variable_tags AS SELECT 1 AS tag_id;")
    with pytest.raises(sqlite3.OperationalError):
        DamnitDB(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM metameta WHERE key='data_format_version'").fetchone()[0] == 3
    assert "attributes" in columns(conn, "run_variables")
    assert conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchone() is None


def test_v0_database_is_refused_with_advice(tmp_path):
    path = make_db(tmp_path / "runs.sqlite", V0_SCHEMA)
    with pytest.raises(LegacyDatabaseError) as info:
        DamnitDB(path)
    msg = str(info.value)
    assert str(path) in msg and "v0" in msg and "damnit migrate v0-to-v1" in msg
    # Untouched
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM metameta").fetchone()[0] == 1
    with DamnitDB(path, allow_old=True) as db:
        assert db.conn.execute("SELECT comment FROM runs").fetchone()[0] == "agipd dark"


def test_newer_version_is_refused(tmp_path):
    path = make_db(tmp_path / "runs.sqlite", V1_SCHEMA + "UPDATE metameta SET value=5 WHERE key='data_format_version';")
    with pytest.raises(DatabaseVersionError, match="v5, newer"):
        DamnitDB(path)


def test_not_a_damnit_database(tmp_path):
    path = make_db(tmp_path / "runs.sqlite", "CREATE TABLE other(x);")
    with pytest.raises(DatabaseVersionError, match="not a DAMNIT database"):
        DamnitDB(path)


def test_read_only_flag(db, tmp_path):
    db.set_variables(1234, 1, {"x": ReducedData(1.0)})
    with DamnitDB.from_dir(db.path.parent, read_only=True) as ro:
        assert ro.read_only
        assert ro.conn.execute("SELECT x FROM runs").fetchone()[0] == 1.0
        with pytest.raises(PermissionError, match="read-only"):
            ro.set_variables(1234, 1, {"x": ReducedData(2.0)})
        with pytest.raises(PermissionError, match="read-only"):
            ro.metameta["a"] = 1


def run_without_write_access(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run Python as a user for whom file permissions apply (root minus its override capabilities)."""
    return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
                           sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


@pytest.mark.parametrize("clean_close", [True, False])
def test_read_only_directory_opens_for_reading(clean_close):
    """A user without write access (file 0444, dir 0555) can still read a WAL database."""
    top = Path(tempfile.mkdtemp(prefix="damnit-ro-"))
    try:
        os.chmod(top, 0o755)
        d = top / "amore"
        db = initialize_proposal(d, 1234)
        db.set_variables(1234, 1, {"x": ReducedData(1.5), "start_time": ReducedData(1.7e9)})
        db.change_run_comment(1234, 1, "hi")
        if clean_close:
            db.close()  # removes -wal/-shm
        os.chmod(d / "runs.sqlite", 0o444)
        os.chmod(d, 0o555)
        code = textwrap.dedent(f"""
            from backend.storage.database import DamnitDB
            from backend.storage.api import Damnit
            db = DamnitDB.from_dir({str(d)!r})
            assert db.read_only
            print(db.conn.execute("SELECT x FROM runs").fetchone()[0])
            try:
                db.change_run_comment(1234, 1, "no")
            except PermissionError as e:
                print("refused:", e)
            print(Damnit({str(d)!r}).table()["comment"].tolist())
        """)
        proc = run_without_write_access(code, top)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "1.5" and lines[1].startswith("refused:") and "read-only" in lines[1]
        assert lines[2] == "['hi']"
        if not clean_close:
            db.close()
    finally:
        os.chmod(top / "amore", 0o755)
        subprocess.run(["rm", "-rf", str(top)], check=True)


WRITER = """
import sys, time
from backend.storage.database import DamnitDB
from backend.storage.records import ReducedData
db_dir, wid, nruns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = DamnitDB.from_dir(db_dir)
for run in range(nruns):
    # Every writer writes its own variables into every run (same rows in run_info, new view columns)
    db.set_variables(1234, run, {f"w{wid}_v{i}": ReducedData(float(wid * 1000 + run * 10 + i)) for i in range(5)},
                     provenance=f"writer{wid}")
    db.update_computed_variables({f"w{wid}_v0": {"title": f"W{wid}", "description": str(run), "tags": [f"t{run % 3}"]}})
    db.change_run_comment(1234, run, f"by {wid}")
    db.metameta[f"counter_{wid}"] = run
print("done", wid)
"""


def test_concurrent_writers_lose_nothing(db):
    n_writers, n_runs = 4, 25
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db.path.parent), str(w), str(n_runs)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(n_writers)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "locked" not in err
    values = {(r[0], r[1]): r[2] for r in db.conn.execute("SELECT run, name, value FROM run_variables")
              if r[1] != "comment"}
    assert len(values) == n_writers * n_runs * 5
    for w in range(n_writers):
        for run in range(n_runs):
            for i in range(5):
                assert values[(run, f"w{w}_v{i}")] == w * 1000 + run * 10 + i
        assert db.metameta[f"counter_{w}"] == n_runs - 1
    # Views know every column and every run
    cols = [r[1] for r in db.conn.execute("PRAGMA table_info(runs)")]
    assert all(f"w{w}_v{i}" in cols for w in range(n_writers) for i in range(5))
    assert db.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == n_runs
    assert db.conn.execute("SELECT count(*) FROM run_info").fetchone()[0] == n_runs


# -- user variable types -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [("true", True), ("YES", True), (" 1 ", True), ("False", False),
                                           ("no", False), ("0", False)])
def test_boolean_parsing(text, expected):
    assert UserEditableVariable("ok", "OK", "boolean").parse(text) is expected


@pytest.mark.parametrize("vtype,text,message", [
    ("boolean", "T", "'T' is not a boolean: use one of true/false, yes/no, 1/0"),
    ("boolean", "maybe", "not a boolean"),
    ("integer", "1.5", "'1.5' is not a whole number"),
    ("integer", "ten", "is not a whole number"),
    ("number", "1,5", "'1,5' is not a number"),
])
def test_bad_user_input_is_explained(vtype, text, message):
    var = UserEditableVariable("v", "My var", vtype)
    with pytest.raises(ValueError, match=re.escape(f"Invalid value for 'My var' ({vtype}): ") + ".*" + re.escape(message)):
        var.parse(text)


def test_value_types_parse_and_describe():
    from backend.storage.user_variables import value_types_by_name
    assert UserEditableVariable("n", "N", "integer").parse("-7") == -7
    assert UserEditableVariable("x", "X", "number").parse("85.4E7") == 85.4e7
    assert UserEditableVariable("s", "S", "string").parse("  Dark frame ") == "  Dark frame "
    for vtype in ("boolean", "integer", "number", "string"):
        var = UserEditableVariable("v", "V", vtype)
        assert var.parse("") is None and var.parse("   ") is None and var.parse(None) is None
        t = value_types_by_name[vtype]
        assert t.description and t.examples and str(t) == vtype
        for example in t.examples:  # every advertised example is accepted
            var.parse(example)
    assert value_types_by_name["boolean"].from_db_value(1) is True
    assert value_types_by_name["boolean"].from_db_value(None) is None


def test_threads_sharing_one_connection(db):
    import threading
    errors = []

    def work(tid):
        try:
            for run in range(20):
                db.set_variables(1234, run, {f"t{tid}": ReducedData(float(tid * 100 + run))})
                db.change_run_comment(1234, run, f"t{tid}")
                db.conn.execute("SELECT count(*) FROM run_variables").fetchone()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    values = {(r[0], r[1]): r[2] for r in db.conn.execute("SELECT run, name, value FROM run_variables")}
    assert all(values[(run, f"t{t}")] == t * 100 + run for t in range(4) for run in range(20))


def test_wal_switch_does_not_stall_when_another_process_reads(tmp_path):
    """An original-created (rollback-journal) DB held open by a reader: opening ours must not hang."""
    import time
    path = make_db(tmp_path / "runs.sqlite", V1_SCHEMA + V2_EXTRA + V3_EXTRA)
    with DamnitDB(path) as db:  # upgrade to v4, switches to WAL
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM run_info").fetchall()  # holds a SHARED lock
    t0 = time.monotonic()
    with DamnitDB(path) as db:
        assert db.conn.execute("SELECT count(*) FROM run_info").fetchone()[0] == 1
    assert time.monotonic() - t0 < 10
    reader.execute("COMMIT")
    with DamnitDB(path) as db:
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_initialize_proposal_copies_context_and_user_variables(tmp_path):
    src = initialize_proposal(tmp_path / "old", 1000)
    src.add_user_variable(UserEditableVariable("sample", "Sample", "string", "what was measured"))
    src.add_user_variable(UserEditableVariable("good", "Good", "boolean"))
    src.close()
    ctx = tmp_path / "ctx.py"
    ctx.write_text("# my context\n")
    db = initialize_proposal(tmp_path / "new", 2000, context_file_src=ctx, user_vars_src=tmp_path / "old")
    assert (tmp_path / "new" / "context.py").read_text() == "# my context\n"
    assert {n: v.description for n, v in db.get_user_variables().items()} == {
        "sample": "what was measured", "good": ""}
    assert db.metameta["proposal"] == 2000
    # Re-initialising an existing directory keeps its database and context
    (tmp_path / "new" / "context.py").write_text("# edited\n")
    again = initialize_proposal(tmp_path / "new", None)
    assert again.metameta["db_id"] == db.metameta["db_id"]
    assert (tmp_path / "new" / "context.py").read_text() == "# edited\n"
    with pytest.raises(ValueError, match="proposal number is needed"):
        initialize_proposal(tmp_path / "third")


def test_journal_mode_can_stay_rollback_for_multi_host_sites(tmp_path, monkeypatch):
    db = initialize_proposal(tmp_path, 1)
    db.close()
    monkeypatch.setenv("DAMNIT_SQLITE_JOURNAL_MODE", "delete")
    with DamnitDB.from_dir(tmp_path) as db:
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        db.change_run_comment(1, 1, "still works")
    monkeypatch.setenv("DAMNIT_SQLITE_JOURNAL_MODE", "memory")
    with pytest.raises(ValueError, match="DAMNIT_SQLITE_JOURNAL_MODE"):
        DamnitDB.from_dir(tmp_path)


def test_network_filesystems_keep_the_rollback_journal(tmp_path, monkeypatch):
    import backend.storage.connections as dbmod

    monkeypatch.delenv("DAMNIT_SQLITE_JOURNAL_MODE", raising=False)
    monkeypatch.setattr(dbmod, "filesystem_type", lambda path: "gpfs")
    with initialize_proposal(tmp_path, 1) as db:
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        db.change_run_comment(1, 1, "on GPFS")
    monkeypatch.setattr(dbmod, "filesystem_type", lambda path: "ext4")
    assert dbmod.journal_mode_for(tmp_path / "runs.sqlite") == "wal"


def test_filesystem_type_reads_proc_mounts(tmp_path):
    from backend.storage.connections import filesystem_type

    fstype = filesystem_type(tmp_path)
    assert fstype is None or fstype in open("/proc/mounts").read()


OPEN_CLOSE_WRITER = """
import sys
from backend.storage.database import DamnitDB
from backend.storage.records import ReducedData
d, wid = sys.argv[1], int(sys.argv[2])
for run in range(30):
    with DamnitDB.from_dir(d) as db:  # open/close each time: the journal mode flips under contention
        db.set_variables(1234, run, {f"w{wid}": ReducedData(float(run))})
        db.change_run_comment(1234, run, str(wid))
"""


def test_concurrent_short_lived_connections(tmp_path):
    initialize_proposal(tmp_path, 1234).close()
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_CLOSE_WRITER, str(tmp_path), str(w)], cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for w in range(5)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with DamnitDB.from_dir(tmp_path) as db:
        values = {(r[0], r[1]): r[2] for r in db.conn.execute("SELECT run, name, value FROM run_variables")}
    assert all(values[(run, f"w{w}")] == run for w in range(5) for run in range(30))
    assert sqlite3.connect(tmp_path / "runs.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "delete"
