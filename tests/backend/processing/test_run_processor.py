"""RunProcessor and `python -m backend.services.job`: context workers → HDF5 → runs.sqlite → messages.

Run data are extra-data mock runs (backend/mockruns.py); the context runs in real worker processes.
Assertions read runs.sqlite and the HDF5 files directly, so they check the stored formats.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest

from backend.processing.run_processor import ContextLoadError, NothingProcessed, RunProcessor
from backend.processing.workers import RunRequest
from backend.storage.database import DamnitDB
from tests.infra import REPO

CONTEXTS = REPO / "contexts"
PROPOSAL = 1234

SIMPLE_CONTEXT = """\
from damnit_ctx import Variable

@Variable(title="Trains", tags=["run", "basic"])
def n_trains(run):
    return len(run.train_ids)

@Variable(title="Sample X", units="mm")
def sample_x(run):
    return float(run["SPB_IRU_MOTORS/MOTOR/SAMPLE_X", "actualPosition"].ndarray().mean())

@Variable(title="Broken")
def broken(run):
    raise ValueError("this variable always fails")

@Variable(title="Double trains")
def double_trains(run, n: "var#n_trains"):
    return 2 * n
"""


class RecordingProducer:
    """Collects the update messages RunProcessor sends (stands in for Kafka in unit tests)."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args, **kwargs):
            if name not in ("flush", "close"):
                self.calls.append((name, args[1:], kwargs))  # drop the db argument
        return record

    def kinds(self):
        return [c[0] for c in self.calls]


def make_db(db_dir: Path, context: str) -> Path:
    db_dir.mkdir(parents=True, exist_ok=True)
    db = DamnitDB.from_dir(db_dir, create=True)
    db.metameta["proposal"] = PROPOSAL
    db.close()
    (db_dir / "context.py").write_text(context)
    return db_dir


def db_rows(db_dir: Path) -> dict[tuple[int, str], tuple]:
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    rows = conn.execute("SELECT run, name, value, attributes, provenance FROM run_variables").fetchall()
    conn.close()
    return {(r, n): (v, a, p) for r, n, v, a, p in rows}


def start_times(db_dir: Path) -> dict[int, float]:
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    rows = conn.execute("SELECT run, start_time FROM run_info").fetchall()
    conn.close()
    return dict(rows)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def process(db_dir, runs, producer=None, n_workers=None, **req_kw):
    processor = RunProcessor(db_dir, producer=producer or RecordingProducer(), n_workers=n_workers)
    reqs = [RunRequest(proposal=PROPOSAL, run=r, **req_kw) for r in runs]
    return list(processor.process(reqs))


def test_process_writes_h5_db_logs_and_messages(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, [1, 2])
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    producer = RecordingProducer()

    outcomes = process(db_dir, [1, 2], producer=producer, n_workers=1)

    assert sorted(o.request.run for o in outcomes) == [1, 2]
    assert all(o.run_error is None for o in outcomes)
    rows = db_rows(db_dir)
    for run in (1, 2):
        assert rows[(run, "n_trains")][0] == 50
        assert rows[(run, "double_trains")][0] == 100
        assert rows[(run, "sample_x")][0] == pytest.approx(1.0 + 0.25 * run, abs=1e-2)
        assert json.loads(rows[(run, "sample_x")][1])["units"] == "mm"
        assert rows[(run, "n_trains")][2] == "context.py"
        with h5py.File(db_dir / "extracted_data" / f"p{PROPOSAL}_r{run}.h5") as f:
            assert f["n_trains/data"][()] == 50
            assert f[".reduced/n_trains"][()] == 50
            assert ".errors" in f and "broken" in f[".errors"]
        log = (db_dir / "process_logs" / f"r{run}-p{PROPOSAL}.out").read_text()
        assert f"----- Processing r{run} (p{PROPOSAL})" in log
    # start_time goes to run_info, from the first train's timestamp
    st = start_times(db_dir)
    assert st[2] - st[1] == pytest.approx(600, abs=1)

    kinds = producer.kinds()
    assert kinds.count("variable_set") == 4
    # one worker: run 1 runs, run 2 waits, then runs (heartbeats may repeat RUNNING)
    states = [(c[2]["run"], c[2]["status"]) for c in producer.calls if c[0] == "processing_state_set"]
    assert list(dict.fromkeys(states)) == [(1, "RUNNING"), (2, "PENDING"), (2, "RUNNING")]
    assert kinds.count("run_values_updated") == 2
    assert kinds.count("processing_finished") == 2
    updated = [c for c in producer.calls if c[0] == "run_values_updated"]
    assert set(updated[0][1][2]) == {"n_trains", "sample_x", "broken", "double_trains", "start_time"}
    states = [c[2] for c in producer.calls if c[0] == "processing_state_set"]
    finished = {c[1][0] for c in producer.calls if c[0] == "processing_finished"}
    assert {s["processing_id"] for s in states} == finished
    assert all(s["data"] == "all" and s["slurm_job_id"] is None for s in states)
    # the variables table got the context's variables with tags
    db = DamnitDB.from_dir(db_dir)
    assert sorted(db.get_variable_tags("n_trains")) == ["basic", "run"]


def test_failing_variable_keeps_the_others(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    process(db_dir, [1])
    rows = db_rows(db_dir)
    value, attrs, _ = rows[(1, "broken")]
    assert value is None
    attrs = json.loads(attrs)
    assert attrs["error_cls"] == "ValueError"
    assert "always fails" in attrs["error"]
    assert rows[(1, "n_trains")][0] == 50
    assert rows[(1, "sample_x")][0] is not None


def test_syntax_error_in_context_is_located_and_db_untouched(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    process(db_dir, [1])
    before_rows = db_rows(db_dir)
    h5 = db_dir / "extracted_data" / f"p{PROPOSAL}_r1.h5"
    before_h5 = h5.stat().st_mtime_ns
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    before_vars = conn.execute("SELECT * FROM variables ORDER BY name").fetchall()
    conn.close()

    (db_dir / "context.py").write_text("from damnit_ctx import Variable\n\n@Variable(title='x'\ndef x(run):\n"
                                       "    return 1\n")
    producer = RecordingProducer()
    processor = RunProcessor(db_dir, producer=producer)
    with pytest.raises(ContextLoadError) as excinfo:
        list(processor.process([RunRequest(proposal=PROPOSAL, run=1)]))
    msg = str(excinfo.value)
    assert "context.py:" in msg and "SyntaxError" in msg
    assert excinfo.value.info.get("lineno") in (3, 4)

    assert db_rows(db_dir) == before_rows
    assert h5.stat().st_mtime_ns == before_h5
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    assert conn.execute("SELECT * FROM variables ORDER BY name").fetchall() == before_vars
    conn.close()
    assert producer.kinds() == ["processing_finished"]  # nothing announced but the end of the attempt


def test_run_that_cannot_be_opened_keeps_its_earlier_data(tmp_path, make_mock_runs):
    prop_dir = make_mock_runs(PROPOSAL, [1, 2])
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    process(db_dir, [1, 2])
    before = db_rows(db_dir)
    h5_before = (db_dir / "extracted_data" / f"p{PROPOSAL}_r2.h5").read_bytes()

    # Run 2's data becomes unreadable: a later reprocess fails for it but not for run 1.
    for f in (prop_dir / "raw" / "r0002").iterdir():
        f.write_bytes(b"not an HDF5 file")
    outcomes = {o.request.run: o for o in process(db_dir, [1, 2])}

    assert outcomes[1].run_error is None
    assert outcomes[2].run_error is not None
    after = db_rows(db_dir)
    assert {k: v[:2] for k, v in after.items() if k[0] == 2} == {k: v[:2] for k, v in before.items() if k[0] == 2}
    assert (db_dir / "extracted_data" / f"p{PROPOSAL}_r2.h5").read_bytes() == h5_before
    log = (db_dir / "process_logs" / f"r2-p{PROPOSAL}.out").read_text()
    assert "could not be processed" in log


def test_var_and_match_select_variables(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    process(db_dir, [1], variables=["double_trains"])
    names = {n for (_, n) in db_rows(db_dir)}
    assert names == {"double_trains", "n_trains"}  # plus its dependency

    db2 = make_db(tmp_path / "db2", SIMPLE_CONTEXT)
    process(db2, [1], match=["sample"])
    assert {n for (_, n) in db_rows(db2)} == {"sample_x"}


def test_reprocessing_one_variable_keeps_the_rest(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    process(db_dir, [1])
    process(db_dir, [1], variables=["sample_x"])
    rows = db_rows(db_dir)
    assert {"n_trains", "sample_x", "broken", "double_trains"} <= {n for (_, n) in rows}
    with h5py.File(db_dir / "extracted_data" / f"p{PROPOSAL}_r1.h5") as f:
        assert f["double_trains/data"][()] == 100


def test_demo_context_over_mock_runs(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, [1, 2], with_proc=True)
    db_dir = make_db(tmp_path / "db", (CONTEXTS / "demo_context.py").read_text())
    outcomes = process(db_dir, [1, 2])
    assert all(o.run_error is None for o in outcomes)
    rows = db_rows(db_dir)

    errors = {k: json.loads(v[1]) for k, v in rows.items() if v[1] and "error" in json.loads(v[1])}
    # Run 1 has 17 pulses per train: energy_spread is skipped; nothing else fails.
    assert set(errors) == {(1, "energy_spread")}
    assert errors[(1, "energy_spread")]["error_cls"] == "Skip"
    assert rows[(2, "energy_spread")][0] > 0

    assert rows[(1, "run_length")][0] == "0:00:05"
    assert rows[(1, "beam_status")][0] in ("Strong beam", "OK", "Weak beam")
    assert json.loads(rows[(1, "xgm.energy")][1])["units"] == "uJ"
    assert rows[(1, "xgm.pulses")][0] == 17
    assert rows[(1, "spectrum_peak")][0] == pytest.approx(9300, abs=60)
    quality = json.loads(rows[(1, "spot_quality")][1])
    assert quality["bold"] is True and list(quality["background"]) == [0xB6, 0xE3, 0xB6]
    assert isinstance(rows[(1, "camera_image")][0], bytes) and rows[(1, "camera_image")][0][:4] == b"\x89PNG"
    assert rows[(1, "energy_histogram")][0][:4] == b"\x89PNG"
    assert "camera_frames" not in {n for (_, n) in rows}  # transient

    db = DamnitDB.from_dir(db_dir)
    assert "XGM" in db.get_variable_tags("xgm.energy")
    with h5py.File(db_dir / "extracted_data" / f"p{PROPOSAL}_r1.h5") as f:
        assert f["camera_image"].attrs["_damnit_objtype"] == "dataarray"
        assert f["energy_histogram"].attrs["_damnit_objtype"] == "image"
        assert f["energy_histogram/data"].ndim == 3
        assert f[".reduced/camera_intensity"][()] > 0
        assert f["spot_centre/data"].dtype.kind == "c"


def _module_cmd(*args):
    return [sys.executable, "-m", "backend.services.job", *map(str, args)]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_python_m_extraction_processes_one_run(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, 3)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    res = subprocess.run(_module_cmd(PROPOSAL, 3, "all", "--db-dir", db_dir, "--update-vars",
                                     "--processing-id", "abc123", "--var", "sample_x"),
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = db_rows(db_dir)
    assert {n for (_, n) in rows} == {"sample_x"}
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    assert {r[0] for r in conn.execute("SELECT name FROM variables")} == {
        "n_trains", "sample_x", "broken", "double_trains"}
    conn.close()


def test_python_m_extraction_bad_context_fails_with_location(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, 1)
    bad = SIMPLE_CONTEXT + textwrap.dedent("""
        @Variable(title="Uses missing")
        def uses_missing(run):
            return undefined_name  # noqa
        x = 1 / 0
    """)
    db_dir = make_db(tmp_path / "db", bad)
    res = subprocess.run(_module_cmd(PROPOSAL, 1, "all", "--db-dir", db_dir, "--update-vars"),
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    lineno = bad.splitlines().index("x = 1 / 0") + 1
    assert f"context.py:{lineno}" in res.stderr
    assert "ZeroDivisionError" in res.stderr
    assert db_rows(db_dir) == {}
    log = (db_dir / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()
    assert "ZeroDivisionError" in log


SLOW_CONTEXT = SIMPLE_CONTEXT + """
import time

@Variable(title="Slow")
def slow(run):
    time.sleep(4)
    return "finished"

@Variable(title="After slow")
def after_slow(run, s: "var#slow"):
    return s + "!"
"""


def test_variable_timeout_setting_is_followed_by_a_kept_processor(tmp_path, make_mock_runs):
    """The listener keeps one RunProcessor: a changed `variable_timeout` applies from the next batch."""
    make_mock_runs(PROPOSAL, [1, 2])
    db_dir = make_db(tmp_path / "db", SLOW_CONTEXT)
    DamnitDB.from_dir(db_dir).metameta["variable_timeout"] = 1
    with RunProcessor(db_dir, producer=RecordingProducer(), n_workers=1) as processor:
        outcomes = list(processor.process([RunRequest(proposal=PROPOSAL, run=r) for r in (1, 2)]))
        assert all(o.run_error is None for o in outcomes)
        rows = db_rows(db_dir)
        for run in (1, 2):  # the second run is processed normally after the first one's timeout
            slow = json.loads(rows[(run, "slow")][1])
            assert slow["error_cls"] == "TimeoutError"
            assert slow["error"] == ("variable 'slow' did not finish within the time limit of 1 s (the "
                                     "variable_timeout setting) and was stopped")
            assert json.loads(rows[(run, "after_slow")][1])["error_cls"] == "DependencyError"
            assert rows[(run, "n_trains")][0] == 50 and rows[(run, "double_trains")][0] == 100
        assert "TimeoutError: variable 'slow'" in (db_dir / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()

        DamnitDB.from_dir(db_dir).metameta["variable_timeout"] = "30"  # as `damnit db-config` without --num
        list(processor.process([RunRequest(proposal=PROPOSAL, run=1)]))
    rows = db_rows(db_dir)
    assert rows[(1, "slow")][0] == "finished" and rows[(1, "after_slow")][0] == "finished!"


def test_job_command_follows_the_variable_timeout_setting(tmp_path, make_mock_runs):
    """What Slurm jobs (and `damnit process`) run obeys the database's time limit."""
    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SLOW_CONTEXT)
    DamnitDB.from_dir(db_dir).metameta["variable_timeout"] = 1.5
    res = subprocess.run(_module_cmd(PROPOSAL, 1, "all", "--db-dir", db_dir, "--update-vars"),
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "(3 variable errors)" in res.stderr  # `slow`, `after_slow` and `broken` (which always fails)
    rows = db_rows(db_dir)
    assert json.loads(rows[(1, "slow")][1])["error"].endswith("time limit of 1.5 s (the variable_timeout "
                                                              "setting) and was stopped")
    assert rows[(1, "sample_x")][0] is not None


def test_bad_limit_setting_stops_processing_before_anything_is_written(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    DamnitDB.from_dir(db_dir).metameta["context_load_timeout"] = "soon"
    processor = RunProcessor(db_dir, producer=RecordingProducer())
    with pytest.raises(NothingProcessed, match=r"the context_load_timeout setting is 'soon', not a positive "
                                               r"number of seconds; fix it with `damnit db-config --num "
                                               r"context_load_timeout 300.0`"):
        list(processor.process([RunRequest(proposal=PROPOSAL, run=1)]))
    processor.warm_up()  # the listener's warm-up only logs it
    assert db_rows(db_dir) == {} and not (db_dir / "extracted_data" / f"p{PROPOSAL}_r1.h5").exists()


def test_processor_keeps_workers_and_follows_context_edits(tmp_path, make_mock_runs, monkeypatch):
    import backend.processing.run_processor

    evaluations = []
    real_load = backend.processing.run_processor.load_context_info
    monkeypatch.setattr(backend.processing.run_processor, "load_context_info",
                        lambda *a, **kw: evaluations.append(1) or real_load(*a, **kw))
    make_mock_runs(PROPOSAL, [1, 2, 3])
    ctx = "import os\nfrom damnit_ctx import Variable\n\n@Variable(title='Worker pid')\ndef pid(run):\n" \
          "    return os.getpid()\n"
    db_dir = make_db(tmp_path / "db", ctx)
    with RunProcessor(db_dir, producer=RecordingProducer(), n_workers=1) as processor:
        list(processor.process([RunRequest(proposal=PROPOSAL, run=1)]))
        list(processor.process([RunRequest(proposal=PROPOSAL, run=2)]))
        pids = {r: v[0] for (r, n), v in db_rows(db_dir).items() if n == "pid"}
        assert pids[1] == pids[2]  # the same long-lived worker took both calls

        (db_dir / "context.py").write_text(ctx + "\n@Variable(title='Ten')\ndef ten(run):\n    return 10\n")
        list(processor.process([RunRequest(proposal=PROPOSAL, run=3)]))
    rows = db_rows(db_dir)
    assert len(evaluations) == 2  # once, and again after the edit
    assert rows[(3, "ten")][0] == 10
    assert rows[(3, "pid")][0] != pids[1]  # reloaded in a fresh worker


ORACLE_READ_ALL = """
import json, sys
import numpy as np
from damnit import Damnit
db = Damnit(sys.argv[1] if len(sys.argv) > 1 else {db!r})
out = {{"columns": sorted(db.table().columns), "runs": {{}}}}
for run in db.runs():
    rv = db[run]
    kinds = {{}}
    for name in rv.keys():
        value = rv[name].read()
        kinds[name] = type(value).__name__ + (str(np.shape(value)) if hasattr(value, "shape") else "")
    out["runs"][str(run)] = kinds
print(json.dumps(out))
"""


def _assert_same_as_original(tmp_path, context: Path, runs: list[int], damnit_oracle) -> tuple[Path, Path]:
    """Process ``runs`` with ``context`` here and with the original: same runs.sqlite rows, and the
    original's API reads both databases alike. Returns (ours, theirs)."""
    ours = make_db(tmp_path / "ours", context.read_text())
    process(ours, runs)
    theirs = damnit_oracle.make_reference_db(tmp_path / "theirs", PROPOSAL, runs, context)

    def table(db_dir):
        conn = sqlite3.connect(db_dir / "runs.sqlite")
        rows = conn.execute("SELECT run, name, value, summary_type, summary_method, attributes, max_diff"
                            " FROM run_variables").fetchall()
        conn.close()
        return {(r, n): rest for r, n, *rest in rows}

    mine, ref = table(ours), table(theirs)
    assert set(mine) == set(ref)
    for key, (value, stype, smethod, attrs, max_diff) in ref.items():
        m_value, m_stype, m_smethod, m_attrs, m_max_diff = mine[key]
        assert (m_stype, m_smethod) == (stype, smethod), key
        m_attrs, attrs = json.loads(m_attrs or "{}"), json.loads(attrs or "{}")
        assert m_attrs.keys() == attrs.keys(), key
        for attr, expected in attrs.items():  # e.g. bold, units, background ([r, g, b]), error
            if isinstance(expected, float):
                assert m_attrs[attr] == pytest.approx(expected), (key, attr)
            else:
                assert m_attrs[attr] == expected, (key, attr)
        if isinstance(value, (int, float)):
            assert m_value == pytest.approx(value, rel=1e-6), key
        elif isinstance(value, bytes):
            assert isinstance(m_value, bytes) and m_value[:8] == value[:8], key  # same blob kind (PNG, .npy)
        else:
            assert m_value == value, key
        assert (m_max_diff is None) == (max_diff is None), key
    assert start_times(ours) == pytest.approx(start_times(theirs))

    read_ours = damnit_oracle.run_json(ORACLE_READ_ALL.format(db=str(ours)))
    read_ref = damnit_oracle.run_json(ORACLE_READ_ALL.format(db=str(theirs)))
    assert read_ours == read_ref
    return ours, theirs


@pytest.mark.oracle
def test_results_match_the_original(tmp_path, make_mock_runs, damnit_oracle):
    """Same context, same runs: our runs.sqlite rows match the original's, and its API reads ours."""
    make_mock_runs(PROPOSAL, [1, 2], with_proc=True)
    _assert_same_as_original(tmp_path, CONTEXTS / "demo_context.py", [1, 2], damnit_oracle)


PANDAS_CONTEXT = """\
import numpy as np
import pandas as pd
from damnit_ctx import Cell, Variable

@Variable(title="Train table")
def train_table(run):
    tids = np.asarray(run.train_ids, dtype=np.int64)
    return pd.DataFrame({"train_id": tids, "x": np.arange(len(tids)) * 0.5,
                         "label": [f"t{i}" for i in range(len(tids))]})

@Variable(title="X per train")
def x_series(run):
    return pd.Series(np.linspace(0, 1, len(run.train_ids)) ** 2, name="x")

@Variable(title="Mean of a series", summary="mean")
def mean_series(run):
    return pd.Series(np.arange(10.0) * run.train_ids[0] % 7)

@Variable(title="Frame in a cell")
def frame_cell(run):
    return Cell(pd.DataFrame({"a": [1, 2, 3]}), bold=True)
"""

ORACLE_READ_PANDAS = """
import json, sys
from damnit import Damnit
db = Damnit({db!r})
out = {{}}
for run in db.runs():
    for name in ("train_table", "x_series", "mean_series", "frame_cell"):
        value = db[run, name].read()
        out[f"{{run}}/{{name}}"] = [type(value).__name__, value.to_json(), db[run, name].summary()
                                    if name not in ("x_series",) else None]
print(json.dumps(out))
"""


@pytest.mark.oracle
def test_pandas_values_stored_as_the_original_stores_them(tmp_path, make_mock_runs, damnit_oracle):
    """A context returning pandas Series/DataFrames: the same rows as the original's, Parquet payloads
    the original reads back as the same objects, and our API reads them too."""
    from backend.storage.api import Damnit

    make_mock_runs(PROPOSAL, [1, 2])
    context = tmp_path / "pandas_context.py"
    context.write_text(PANDAS_CONTEXT)
    ours, theirs = _assert_same_as_original(tmp_path, context, [1, 2], damnit_oracle)
    read_ours = damnit_oracle.run_json(ORACLE_READ_PANDAS.format(db=str(ours)))
    read_ref = damnit_oracle.run_json(ORACLE_READ_PANDAS.format(db=str(theirs)))
    assert read_ours == read_ref
    assert read_ours["1/train_table"][0] == "DataFrame" and read_ours["1/x_series"][0] == "Series"
    assert read_ours["1/train_table"][2].startswith("DataFrame (")

    for db_dir in (ours, theirs):  # and we read both alike
        frame = Damnit(db_dir)[1, "train_table"].read()
        assert list(frame.columns) == ["train_id", "x", "label"] and frame["x"].iloc[2] == 1.0
        series = Damnit(db_dir)[1, "x_series"]
        assert series.read().name == "x" and series.preview_data().iloc[-1] == 1.0
        assert series.summary().shape[0] == 2  # a trendline, like an array's


@pytest.mark.kafka
def test_update_messages_reach_the_broker(tmp_path, make_mock_runs, amore_broker):
    """Processing announces itself on test.damnit.db-<db_id> through a real broker, in order."""
    import asyncio

    from backend.base.messages import UpdateProducer, iter_messages

    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    topic = DamnitDB.from_dir(db_dir).kafka_topic
    with UpdateProducer.from_env() as producer:
        assert producer.online
        outcomes = list(RunProcessor(db_dir, producer=producer).process([RunRequest(proposal=PROPOSAL, run=1)]))
    assert outcomes[0].run_error is None

    async def collect():
        got = []
        async for kind, data in iter_messages(topic, [amore_broker.address], from_beginning=True):
            got.append((kind, data))
            if kind == "processing_finished":
                return got

    messages = asyncio.run(asyncio.wait_for(collect(), 30))
    kinds = [k for k, _ in messages]
    assert kinds[:4] == ["variable_set"] * 4
    assert kinds[4] == "processing_state_set" and kinds[-2:] == ["run_values_updated", "processing_finished"]
    var = {d["name"]: d for _, d in messages[:4]}
    assert var["n_trains"] == {"name": "n_trains", "title": "Trains", "description": None,
                               "tags": ["run", "basic"], "attributes": None, "type": None}
    state = messages[4][1]
    assert state["status"] == "RUNNING" and (state["proposal"], state["run"], state["data"]) == (PROPOSAL, 1, "all")
    assert messages[-1][1] == {"processing_id": state["processing_id"]}
    updated = messages[-2][1]
    assert (updated["proposal"], updated["run"]) == (PROPOSAL, 1)
    assert updated["values"] == {"n_trains": None, "sample_x": None, "broken": None, "double_trains": None,
                                 "start_time": None}


def test_sandbox_args_wrap_every_context_process(tmp_path, make_mock_runs):
    """`--sandbox-args` (the listener's sandbox_args): context processes run as `<args> <proposal> -- ...`."""
    make_mock_runs(PROPOSAL, 1)
    db_dir = make_db(tmp_path / "db", SIMPLE_CONTEXT)
    calls = tmp_path / "sandbox-calls.txt"
    sandbox = tmp_path / "fake-sandbox"
    sandbox.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                       'while [ "$1" != "--" ]; do shift; done\nshift\n'
                       'if [ "$1" = whoami ]; then echo sandboxed-user; exit 0; fi\nexec "$@"\n')
    sandbox.chmod(0o755)
    res = subprocess.run(_module_cmd(PROPOSAL, 1, "all", "--db-dir", db_dir, "--var", "n_trains",
                                     "--sandbox-args", f"{sandbox} --flag"),
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert db_rows(db_dir)[(1, "n_trains")][0] == 50
    lines = calls.read_text().splitlines()
    assert f"--flag {PROPOSAL} -- whoami" in lines
    assert any(line.startswith(f"--flag {PROPOSAL} -- {sys.executable} -m ctxrunner ctx") for line in lines)
    assert any(line.startswith(f"--flag {PROPOSAL} -- {sys.executable} -u -m ctxrunner worker") for line in lines)
    log = (db_dir / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()
    assert f"----- Processing r1 (p{PROPOSAL}) as sandboxed-user on " in log
