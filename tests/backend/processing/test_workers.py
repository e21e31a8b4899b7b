"""WorkerPool and load_context_info over real context files and extra-data mock runs."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from backend.base import mockruns
from backend.processing.summaries import is_png
from backend.processing.workers import RunRequest, WorkerPool, load_context_info
from backend.storage.records import OBJTYPE_DATAARRAY, OBJTYPE_DATASET, OBJTYPE_IMAGE, OBJTYPE_PLOTLY
from tests.ctx_helpers import write_context

PROPOSAL = 2345

EVERY_TYPE = '''
import xarray as xr
XGM = "SA1_XTD2_XGM/DOOCS/MAIN"
CAMERA = "SPB_IRU_CAM/CAM/SIDEMIC:daqOutput"

@Variable(title="Energy", units="uJ", summary="mean")
def energy(run):
    """Per-train pulse energy."""
    return run[XGM, "pulseEnergy.photonFlux"].xarray()

@Variable(title="Mean energy")
def mean_energy(run, e: "var#energy"):
    print("user print for run", len(run.train_ids))
    return float(e.mean())

@Variable(title="Trains")
def n_trains(run, r: "meta#run_number"):
    return len(run.train_ids)

@Variable(title="Status")
def status(run, e: "var#mean_energy"):
    return "strong" if e > 0 else "none"

@Variable(title="Image")
def image(run):
    return run[CAMERA, "data.image.pixels"].xarray().mean("trainId")

@Variable(title="Stack")
def stack(run):
    return run[CAMERA, "data.image.pixels"].ndarray()[:3]

@Variable(title="Dataset")
def dataset(run, e: "var#energy"):
    return xr.Dataset({"energy": e, "doubled": e * 2})

@Variable(title="Figure")
def figure(run, e: "var#energy"):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4, 3), dpi=100)
    fig.add_subplot().plot(e.values)
    return fig

@Variable(title="Plotly")
def plotly_fig(run, e: "var#energy"):
    import plotly.graph_objects as go
    return go.Figure(go.Scatter(y=e.values))

@Variable(title="Complex")
def cplx(run):
    return 1 + 2j

@Variable(title="Nothing")
def nothing(run):
    return None

@Variable(title="Formatted", units="mm")
def formatted(run, e: "var#mean_energy"):
    return Cell(np.arange(5.0), summary_value=e, bold=True, background=(0, 128, 255),
                preview=np.arange(3.0), units="cm")

@Variable(transient=True)
def helper(run):
    return object()

@Variable(title="Uses helper")
def uses_helper(run, h: "var#helper"):
    return 1
'''


def _by_name(outcome):
    return {r.name: r for r in outcome.results}


@pytest.fixture
def db_dir(tmp_path):
    d = tmp_path / "db"
    d.mkdir()
    return d


def test_every_return_type_over_mock_runs(make_mock_runs, db_dir):
    make_mock_runs(PROPOSAL, [1, 2, 3])
    write_context(db_dir, EVERY_TYPE)
    with WorkerPool(db_dir, n_workers=2, variable_timeout=60) as pool:
        outcomes = {o.request.run: o for o in pool.process(
            [RunRequest(PROPOSAL, run) for run in (1, 2, 3)])}
    assert set(outcomes) == {1, 2, 3}
    means = []
    for run, outcome in outcomes.items():
        assert outcome.run_error is None
        res = _by_name(outcome)
        errors = {n: r.error for n, r in res.items() if r.is_error}
        assert not errors, errors
        assert "helper" not in res
        assert res["start_time"].data == pytest.approx(
            mockruns.BASE_START_TIME + (run - 1) * mockruns.RUN_SPACING_S)
        assert outcome.start_time == pytest.approx(float(res["start_time"].data))

        energy = res["energy"]
        assert energy.objtype == OBJTYPE_DATAARRAY and energy.data.shape == (50,)
        assert energy.summary_attrs["summary_method"] == "mean" and energy.summary_attrs["units"] == "uJ"
        assert energy.summary == pytest.approx(float(energy.data.mean()))
        assert energy.summary_attrs["max_diff"] > 0
        means.append(float(res["mean_energy"].data))
        assert res["n_trains"].data == 50
        assert res["status"].data == "strong"
        assert is_png(res["image"].summary) and res["image"].data.shape == (64, 48)
        assert res["stack"].summary == "uint16: (3, 64, 48)"
        assert res["dataset"].objtype == OBJTYPE_DATASET and res["dataset"].summary.startswith("Dataset (")
        assert isinstance(res["dataset"].data, xr.Dataset)
        assert res["figure"].objtype == OBJTYPE_IMAGE and res["figure"].data.shape == (300, 400, 4)
        assert Image.open(io.BytesIO(res["figure"].summary.tobytes())).size == (300, 225)
        assert res["plotly_fig"].objtype == OBJTYPE_PLOTLY and is_png(res["plotly_fig"].summary)
        assert res["cplx"].data == 1 + 2j
        assert res["nothing"].data is None and res["nothing"].summary is None
        fmt = res["formatted"]
        assert fmt.summary == pytest.approx(means[-1])
        assert fmt.summary_attrs["bold"] and fmt.summary_attrs["background"].tolist() == [0, 128, 255]
        assert fmt.summary_attrs["units"] == "cm" and fmt.summary_attrs["max_diff"] == 4.0
        assert fmt.preview.tolist() == [0, 1, 2]
        assert res["uses_helper"].data == 1

        log = (db_dir / "process_logs" / f"r{run}-p{PROPOSAL}.out").read_text()
        assert "Computed energy in " in log and "Computed uses_helper in" in log
        assert "user print for run 50" in log
    assert len(set(means)) == 3 and all(m > 0 for m in means)  # real, run-dependent data


BROKEN = '''
import os, time

@Variable
def fine(run, r: "meta#run_number"):
    return r * 10

@Variable
def fails(run):
    raise ValueError("this variable is broken")

@Variable
def skipped(run):
    raise Skip("not this time")

@Variable
def unstorable(run):
    return {"a": 1}

@Variable
def too_big(run):
    return np.ones(100_000)

@Variable
def depends(run, x: "var#fails", y: "var#fine"):
    return x

@Variable
def hangs(run, r: "meta#run_number"):
    if r == 1:
        while True:
            time.sleep(0.01)
    return "no hang"

@Variable
def crashes(run, r: "meta#run_number"):
    if r == 2:
        os._exit(7)
    if r == 3:
        import ctypes
        ctypes.string_at(0)  # segfault
    return "no crash"

@Variable
def after_hang(run, h: "var#hangs", c: "var#crashes"):
    return h + " " + c

@Variable
def last(run, f: "var#fine"):
    return f + 1
'''


def test_errors_hangs_and_crashes_cost_only_their_variable(make_mock_runs, db_dir):
    make_mock_runs(PROPOSAL, [1, 2, 3, 4])
    write_context(db_dir, BROKEN)
    with WorkerPool(db_dir, n_workers=2, variable_timeout=1.5, max_variable_bytes=100_000) as pool:
        outcomes = {o.request.run: o for o in pool.process(
            [RunRequest(PROPOSAL, run) for run in (1, 2, 3, 4)])}
        # the pool still works afterwards
        again = list(pool.process([RunRequest(PROPOSAL, 4)]))
    assert _by_name(again[0])["after_hang"].data == "no hang no crash"

    for run, outcome in outcomes.items():
        assert outcome.run_error is None
        res = _by_name(outcome)
        assert res["fine"].data == run * 10 and res["last"].data == run * 10 + 1
        assert (res["fails"].error_cls, res["fails"].error) == ("ValueError", "this variable is broken")
        assert (res["skipped"].error_cls, res["skipped"].error) == ("Skip", "not this time")
        assert res["unstorable"].error_cls == "TypeError"
        assert res["unstorable"].error.startswith("cannot store value of type dict returned by variable "
                                                  "'unstorable'")
        assert res["too_big"].error_cls == "ValueTooLarge" and "more than the limit" in res["too_big"].error
        assert res["depends"].error == ("Skipped due to missing dependency:\n"
                                        "└ (fails) failed: ValueError: this variable is broken")
    hang = _by_name(outcomes[1])
    assert hang["hangs"].error_cls == "TimeoutError"
    assert hang["hangs"].error == ("variable 'hangs' did not finish within the time limit of 1.5 s (the "
                                   "variable_timeout setting) and was stopped")
    assert hang["after_hang"].error.startswith("Skipped due to missing dependency:\n└ (hangs) failed: "
                                               "TimeoutError")
    assert hang["crashes"].data == "no crash"
    crash = _by_name(outcomes[2])
    assert crash["crashes"].error_cls == "WorkerCrashError"
    assert crash["crashes"].error == "the worker process died while computing 'crashes' (exit code 7)"
    assert crash["hangs"].data == "no hang"
    segv = _by_name(outcomes[3])
    assert segv["crashes"].error == "the worker process died while computing 'crashes' (killed by signal SIGSEGV)"
    assert _by_name(outcomes[4])["after_hang"].data == "no hang no crash"

    log = (db_dir / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()
    assert "TimeoutError: variable 'hangs' did not finish" in log
    assert "Could not get data for fails" in log and "ValueError: this variable is broken" in log
    assert "Skipped skipped: not this time" in log
    assert "Not running hangs: TimeoutError" in log


def test_context_syntax_and_import_errors(make_mock_runs, db_dir):
    make_mock_runs(PROPOSAL, [1])
    path = write_context(db_dir, '''
        @Variable
        def ok(run):
            return 1

        @Variable
        def broken(run)
            return 2
    ''')
    info = load_context_info(db_dir)["error"]
    assert info["cls"] == "SyntaxError" and info["lineno"] == 9 and info["filename"] == str(path)
    with WorkerPool(db_dir, n_workers=1) as pool:
        (outcome,) = pool.process([RunRequest(PROPOSAL, 1)])
        assert outcome.run_error["cls"] == "SyntaxError" and outcome.run_error["lineno"] == 9
        assert "Context file could not be loaded: SyntaxError" in \
            (db_dir / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()

        # fixing the file is picked up by the same pool
        write_context(db_dir, "import not_installed_module_abc\n")
        info = load_context_info(db_dir)["error"]
        assert info["cls"] == "ModuleNotFoundError" and info["lineno"] == 3
        (outcome,) = pool.process([RunRequest(PROPOSAL, 1)])
        assert outcome.run_error["cls"] == "ModuleNotFoundError"

        write_context(db_dir, "@Variable\ndef ok(run):\n    return 5\n")
        (outcome,) = pool.process([RunRequest(PROPOSAL, 1)])
        assert outcome.run_error is None and _by_name(outcome)["ok"].data == 5


def test_context_reloaded_when_file_changes(make_mock_runs, db_dir):
    make_mock_runs(PROPOSAL, [1])
    write_context(db_dir, "@Variable\ndef a(run):\n    return 1\n")
    with WorkerPool(db_dir, n_workers=1) as pool:
        (first,) = pool.process([RunRequest(PROPOSAL, 1)])
        write_context(db_dir, "@Variable\ndef a(run):\n    return 2\n@Variable\ndef b(run):\n    return 3\n")
        (second,) = pool.process([RunRequest(PROPOSAL, 1)])
    assert _by_name(first)["a"].data == 1 and "b" not in _by_name(first)
    assert _by_name(second)["a"].data == 2 and _by_name(second)["b"].data == 3


def test_context_reloaded_when_an_imported_helper_changes(db_dir):
    (db_dir / "helper_mod.py").write_text("VALUE = 1\n")
    write_context(db_dir, "import helper_mod\n@Variable\ndef a(run):\n    return helper_mod.VALUE\n")
    with WorkerPool(db_dir, n_workers=1) as pool:
        (first,) = pool.process([RunRequest(PROPOSAL, 1, mock=True)])
        (db_dir / "helper_mod.py").write_text("VALUE = 22\n")
        (second,) = pool.process([RunRequest(PROPOSAL, 1, mock=True)])
    assert _by_name(first)["a"].data == 1 and _by_name(second)["a"].data == 22


def test_missing_run_selection_and_proc_fallback(make_mock_runs, db_dir):
    make_mock_runs(PROPOSAL, [1])
    write_context(db_dir, '''
        @Variable(title="Raw trains")
        def raw_trains(run):
            return len(run.train_ids)
        @Variable(title="Spectrum", data="proc")
        def spectrum(run):
            return run["SPB_XTD9_SPECTROMETER/PROC/SPECTRUM:output", "data.spectrum"].ndarray().mean()
        @Variable(title="Other")
        def other(run):
            return 1
    ''')
    with WorkerPool(db_dir, n_workers=1) as pool:
        outcomes = {o.request.run: o for o in pool.process([
            RunRequest(PROPOSAL, 1),  # no proc data: only raw variables
            RunRequest(PROPOSAL, 99),  # no such run
        ])}
        (picked,) = pool.process([RunRequest(PROPOSAL, 1, variables=["other"])])
        (matched,) = pool.process([RunRequest(PROPOSAL, 1, match=["RAW"])])
        (mocked,) = pool.process([RunRequest(PROPOSAL, 5, mock=True, run_data="raw")])
    assert set(_by_name(outcomes[1])) == {"start_time", "raw_trains", "other"}
    assert outcomes[99].run_error["cls"] == "FileNotFoundError"
    assert set(_by_name(picked)) == {"start_time", "other"}
    assert set(_by_name(matched)) == {"start_time", "raw_trains"}
    assert _by_name(mocked)["raw_trains"].data == 10


def test_proc_variables_with_proc_data(make_mock_runs, db_dir):
    make_mock_runs(PROPOSAL, [1], with_proc=True)
    write_context(db_dir, '''
        @Variable(data="proc")
        def spectrum(run):
            return run["SPB_XTD9_SPECTROMETER/PROC/SPECTRUM:output", "data.spectrum"].ndarray().mean()
        @Variable(data="raw")
        def raw(run):
            return 1
    ''')
    with WorkerPool(db_dir) as pool:
        (proc,) = pool.process([RunRequest(PROPOSAL, 1, run_data="proc")])
    assert set(_by_name(proc)) == {"start_time", "spectrum"}
    assert _by_name(proc)["spectrum"].data > 0


def test_load_context_info(db_dir):
    write_context(db_dir, '''
        @Variable(data="proc", tags=["x"])
        def p(run):
            """Proc thing."""
            return 1
        @Variable(units="mm", cluster=True)
        def q(run, x: "var#p"):
            return x
        @Variable(transient=True)
        def t(run):
            return 1
    ''')
    info = load_context_info(db_dir)["variables"]
    assert info["p"] == {"title": "p", "description": "Proc thing.", "tags": ["x"], "data": "proc",
                         "cluster": False, "transient": False, "units": None, "type": None}
    assert info["q"]["data"] == "proc" and info["q"]["cluster"] and info["q"]["units"] == "mm"
    assert info["t"]["transient"]


def test_context_python_that_cannot_start(tmp_path, db_dir):
    write_context(db_dir, "@Variable\ndef a(run):\n    return 1\n")
    bad_python = tmp_path / "python"
    bad_python.write_text("#!/bin/sh\necho 'no numpy here' >&2\nexit 3\n")
    bad_python.chmod(0o755)
    info = load_context_info(db_dir, context_python=str(bad_python))["error"]
    assert "exit code 3" in info["message"] and "no numpy here" in info["traceback"]
    with WorkerPool(db_dir, context_python=str(bad_python)) as pool:
        (outcome,) = pool.process([RunRequest(PROPOSAL, 1, mock=True)])
    assert "exited before it was ready (exit code 3)" in outcome.run_error["message"]
    assert "no numpy here" in outcome.run_error["traceback"]


def test_ctxrunner_ctx_command_line(db_dir, tmp_path):
    import json
    import subprocess

    from backend.processing.workers import worker_env

    write_context(db_dir, "@Variable\ndef a(run):\n    return 1\n")
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "-m", "ctxrunner", "ctx", str(db_dir / "context.py"), str(out)],
                   env=worker_env(), check=True, cwd=db_dir)
    assert json.loads(out.read_text())["variables"]["a"]["title"] == "a"


@pytest.mark.oracle
def test_context_python_in_another_environment(damnit_oracle, make_mock_runs, db_dir):
    """The context runs in a different venv (the original DAMNIT's, which has its own damnit_ctx and
    damnit.context): our ctxsupport is used there, and `from damnit.context import ...` still works."""
    make_mock_runs(PROPOSAL, [1])
    write_context(db_dir, '''
        from damnit.context import Variable as OldStyleVariable
        import sys

        @OldStyleVariable(title="Interpreter")
        def interpreter(run):
            return sys.executable

        @Variable(title="Energy")
        def energy(run):
            return run["SA1_XTD2_XGM/DOOCS/MAIN", "pulseEnergy.photonFlux"].xarray()
    ''')
    python = str(damnit_oracle.python)
    info = load_context_info(db_dir, context_python=python)
    assert set(info["variables"]) == {"interpreter", "energy"}, info
    with WorkerPool(db_dir, context_python=python) as pool:
        (outcome,) = pool.process([RunRequest(PROPOSAL, 1)])
    res = _by_name(outcome)
    assert res["interpreter"].data == python
    assert res["energy"].objtype == OBJTYPE_DATAARRAY and float(res["energy"].data.mean()) > 0


def test_large_values_and_many_runs_on_few_workers(db_dir):
    """Frames far bigger than a pipe buffer arrive intact; every run comes back exactly once."""
    write_context(db_dir, '''
        @Variable
        def big(run, n: "meta#run_number"):
            return np.full((1200, 1200), float(n))  # 11.5 MB
        @Variable
        def small(run, n: "meta#run_number"):
            return n
    ''')
    with WorkerPool(db_dir, n_workers=2) as pool:
        outcomes = list(pool.process([RunRequest(PROPOSAL, r, mock=True) for r in range(1, 4)]))
        many = list(pool.process([RunRequest(PROPOSAL, r, mock=True, variables=["small"])
                                  for r in range(1, 21)]))
    for outcome in outcomes:
        big = _by_name(outcome)["big"]
        assert big.data.shape == (1200, 1200) and np.all(big.data == outcome.request.run)
        assert is_png(big.summary)
    assert sorted(o.request.run for o in many) == list(range(1, 21))
    assert all(_by_name(o)["small"].data == o.request.run for o in many)


def test_user_code_reading_stdin_does_not_disturb_the_protocol(db_dir):
    write_context(db_dir, '''
        import subprocess, sys
        @Variable
        def reads_stdin(run):
            return sys.stdin.read()  # EOF at once: /dev/null
        @Variable
        def child_reads_stdin(run):
            return subprocess.run(["cat"], capture_output=True, text=True, timeout=10).stdout
    ''')
    with WorkerPool(db_dir) as pool:
        outcomes = list(pool.process([RunRequest(PROPOSAL, r, mock=True) for r in (1, 2, 3)]))
    assert sorted(o.request.run for o in outcomes) == [1, 2, 3]
    for outcome in outcomes:
        res = _by_name(outcome)
        assert res["reads_stdin"].data == "" and res["child_reads_stdin"].data == ""


def test_abandoned_iteration_stops_its_runs_and_the_pool_stays_usable(db_dir):
    write_context(db_dir, '''
        import time
        @Variable
        def slow(run, n: "meta#run_number"):
            if n > 1:
                time.sleep(60)
            return n
    ''')
    with WorkerPool(db_dir, n_workers=2) as pool:
        it = pool.process([RunRequest(PROPOSAL, r, mock=True) for r in (2, 1, 3)])
        first = next(it)
        with pytest.raises(RuntimeError, match="already running"):
            next(pool.process([RunRequest(PROPOSAL, 1, mock=True)]))
        it.close()
        (again,) = pool.process([RunRequest(PROPOSAL, 1, mock=True)])
    assert first.request.run == 1 and _by_name(again)["slow"].data == 1
    assert "Processing was stopped" in (db_dir / "process_logs" / f"r2-p{PROPOSAL}.out").read_text()


def test_mymdc_client_and_helper_modules_next_to_the_context(db_dir, monkeypatch):
    (db_dir / "site_mymdc.py").write_text(
        "class Client:\n"
        "    def __init__(self, proposal):\n        self.proposal = proposal\n"
        "    def sample_name(self, run):\n        return f'sample {self.proposal}-{run}'\n"
        "    def run_type(self, run):\n        raise ConnectionError('MyMdC is unreachable')\n"
        "    def techniques(self, run):\n        return []\n")
    (db_dir / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    write_context(db_dir, '''
        from helpers import double
        @Variable
        def sample(run, s: "mymdc#sample_name"):
            return s
        @Variable
        def run_type(run, t: "mymdc#run_type"):
            return t
        @Variable
        def doubled(run, n: "meta#run_number"):
            return double(n)
    ''')
    monkeypatch.setenv("DAMNIT_MYMDC_CLIENT", "site_mymdc:Client")
    with WorkerPool(db_dir) as pool:
        (outcome,) = pool.process([RunRequest(PROPOSAL, 4, mock=True)])
    res = _by_name(outcome)
    assert res["sample"].data == f"sample {PROPOSAL}-4"
    assert (res["run_type"].error_cls, res["run_type"].error) == ("ConnectionError", "MyMdC is unreachable")
    assert res["doubled"].data == 8


def test_context_that_hangs_while_loading(db_dir):
    write_context(db_dir, "import time\nprint('loading...', flush=True)\ntime.sleep(600)\n")
    with WorkerPool(db_dir, load_timeout=3) as pool:
        (outcome,) = pool.process([RunRequest(PROPOSAL, 1, mock=True)])
    assert outcome.run_error["cls"] == "TimeoutError"
    assert outcome.run_error["message"] == ("loading the context file took longer than 3 s (the "
                                            "context_load_timeout setting): does its module-level code "
                                            "wait for something?")
