"""Hostile and careless context files, run through ``damnit reprocess --direct`` as a user would.

Each case adds one variable, ``hostile`` (and its dependent ``after_hostile``), to an ordinary context
and processes two extra-data mock runs with one worker. Whatever the hostile code does, the command
must end with the expected status and message, the run's other variables must be stored, both runs
must be in the database (the second one processed normally after whatever the first did), the run
files and runs.sqlite must agree on every name and error, and ``PRAGMA integrity_check`` must be clean.
Cases that the context check refuses (``refused``) are first processed with the ordinary context:
the refusal must then leave everything as it was.

Time limits are kept short with ``damnit db-config`` so that the whole corpus runs in a few minutes.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import pytest

from tests.infra import REPO

PROPOSAL = 1234
RUNS = (1, 2)
NTRAINS = 50

ORDINARY = """\
import os, signal, sys, time
import numpy as np
from damnit_ctx import Cell, Variable

@Variable(title="Good")
def good(run):
    return 42

@Variable(title="Trains")
def n_trains(run):
    return len(run.train_ids)

@Variable(title="Label")
def label(run, n: "var#n_trains"):
    print("label computed")
    return f"{n} trains"

@Variable(title="Motor", units="mm")
def motor(run):
    return run["SPB_IRU_MOTORS/MOTOR/SAMPLE_X", "actualPosition"].ndarray()
"""

DEPENDENT = """

@Variable(title="After hostile")
def after_hostile(run, x: "var#hostile"):
    return 1
"""


@dataclass
class Case:
    code: str  # defines the variable `hostile` (or, for refusals, whatever is refused)
    error: tuple[str, str] | None = None  # (class, message regex) recorded for `hostile` in every run
    value: object = None  # the database value of `hostile` when it is stored (callable: a check)
    refused: str | None = None  # regex of the located context error; nothing may change
    settings: dict = field(default_factory=dict)  # `damnit db-config --num` before processing
    output: str = ""  # regex the command's output must also contain
    check: object = None  # extra check(db_dir, output)
    dependents_ran: bool = False  # the error came from storing the value: its dependent got the value


def _log(db_dir: Path, run: int) -> str:
    return (db_dir / "process_logs" / f"r{run}-p{PROPOSAL}.out").read_text(errors="replace")


def _check_huge_print(db_dir: Path, output: str) -> None:
    for run in RUNS:
        assert (db_dir / "process_logs" / f"r{run}-p{PROPOSAL}.out").stat().st_size > 20_000_000


def _check_streams_repaired(db_dir: Path, output: str) -> None:
    for run in RUNS:
        assert "label computed" in _log(db_dir, run)  # `label` runs after `hostile`, and prints


def _check_no_orphans(db_dir: Path, output: str) -> None:
    for pid in map(int, (db_dir / "children").read_text().split()):
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def _check_fork_once(db_dir: Path, output: str) -> None:
    for run in RUNS:
        assert _log(db_dir, run).count("Computed after_hostile") == 1


def _check_kept_apart(db_dir: Path, output: str) -> None:
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    info = conn.execute("SELECT proposal, run, added_at FROM run_info ORDER BY run").fetchall()
    values = dict(conn.execute("SELECT name, value FROM run_variables WHERE run=1").fetchall())
    conn.close()
    assert [(p, r) for p, r, _ in info] == [(PROPOSAL, 1), (PROPOSAL, 2)]
    assert all(isinstance(a, float) and a > 1e9 for _, _, a in info)
    assert (values["proposal"], values["run"], values["added_at"]) == ("mine", "also mine", "mine too")


CASES = {
    # -- values that HDF5 or SQLite refuse, or store differently
    "nul_in_string": Case("return 'a\\x00b'", error=("ValueError", r"contains a NUL character \(at position 1\)")),
    "lone_surrogate": Case("return 'ok \\udcff'", error=("ValueError", r"contains a lone surrogate '\\udcff'")),
    "non_utf8_bytes": Case("return b'\\xff\\xfe\\x00'", value="\\xff\\xfe"),  # as the original: HDF5 |S
    "nul_in_summary_value": Case("return Cell(1.0, summary_value='a\\x00b')",
                                 error=("ValueError", r"summary_value .* NUL")),
    "nul_in_units": Case("return Cell(1.0, units='m\\x00m')", error=("ValueError", r"units .* NUL")),
    "hostile_exception_text": Case("raise ValueError('bad \\udcff and \\x00')",
                                   error=("ValueError", r"^bad \\udcff and \\x00$")),
    "exception_whose_str_fails": Case(
        "class Nasty(Exception):\n        def __str__(self):\n            raise RuntimeError('no')\n"
        "    raise Nasty()", error=("Nasty", r"could not be read")),
    "nul_in_xarray_attribute": Case(
        "import xarray as xr\n    return xr.DataArray([1, 2], dims=['x'], attrs={'note': 'a\\x00b'})",
        error=("ValueError", r"attribute note .* NUL character")),
    # refused by NetCDF only when the parent writes it (so its dependent did get the value), as the original
    "surrogate_in_xarray_coordinate": Case(
        "import xarray as xr\n    return xr.DataArray([1, 2], dims=['x'], coords={'x': ['a\\udcff', 'b']})",
        error=("UnicodeEncodeError", r"could not store the value: .*surrogates not allowed"), dependents_ran=True),
    "integer_beyond_int64": Case("return np.uint64(2**64 - 1)", value=float(2**64 - 1)),
    "extremely_long_string": Case("return 'x' * 30_000_000", value=lambda v: v == "x" * 30_000_000),
    # -- values that cannot be stored at all
    "unstorable_object": Case("return object()", error=("TypeError", r"cannot store value of type object")),
    "generator": Case("return (i for i in range(3))", error=("TypeError", r"type generator")),
    "module": Case("return np", error=("TypeError", r"type module")),
    "lambda": Case("return lambda: 1", error=("TypeError", r"type function")),
    "dict_with_non_string_keys": Case("return {1: 2, (3, 4): 'x'}", error=("TypeError", r"type dict")),
    "object_array": Case("return np.array([1, 'a', None], dtype=object)", error=("TypeError", r"object dtype")),
    "datetime64_array": Case("return np.arange('2025-01', '2025-03', dtype='datetime64[D]')",
                             error=("TypeError", r"dtype datetime64")),
    "timedelta64_array": Case("return np.arange(5).astype('timedelta64[s]')",
                              error=("TypeError", r"dtype timedelta64")),
    "array_over_the_size_limit": Case("return np.ones(1_000_000)", settings={"max_variable_bytes": 1_000_000},
                                      error=("ValueTooLarge", r"more than the limit of 976\.6 KiB")),
    "impossible_allocation": Case("return np.ones(10**15)", error=("MemoryError", r"Unable to allocate")),
    "huge_print": Case("print('x' * 25_000_000)\n    return 1", value=1, check=_check_huge_print),
    # -- code that tries to stop, hang or kill the processing
    "endless_loop": Case("while True:\n        pass", settings={"variable_timeout": 2},
                         error=("TimeoutError", r"did not finish within the time limit of 2 s")),
    "ignores_sigterm_and_sleeps": Case("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    time.sleep(3600)",
                                       settings={"variable_timeout": 2}, error=("TimeoutError", r"time limit")),
    "endless_loop_at_import": Case("return 1",
                                   settings={"context_load_timeout": 6},
                                   refused=r"loading the context file took longer than 6 s"),
    "sys_exit": Case("sys.exit(3)", error=("SystemExit", r"^3$")),
    "keyboard_interrupt": Case("raise KeyboardInterrupt('stop it')", error=("KeyboardInterrupt", r"^stop it$")),
    "base_exception": Case("raise BaseException('base')", error=("BaseException", r"^base$")),
    "os_exit": Case("os._exit(5)", error=("WorkerCrashError", r"died while computing 'hostile' \(exit code 5\)")),
    "segfault": Case("import ctypes\n    ctypes.string_at(0)",
                     error=("WorkerCrashError", r"killed by signal SIGSEGV")),
    "kills_itself": Case("os.kill(os.getpid(), signal.SIGKILL)", error=("WorkerCrashError", r"SIGKILL")),
    "recursion": Case("def f(n):\n        return f(n + 1)\n    return f(0)", error=("RecursionError", r"recursion")),
    "closes_stdout_and_stderr": Case("sys.stdout.close()\n    sys.stderr.close()\n    os.close(1)\n"
                                     "    os.close(2)\n    return 7",
                                     value=7, check=_check_streams_repaired),
    "forks_a_child_that_returns": Case("return 8 if os.fork() else 9", value=8, check=_check_fork_once),
    "leaves_a_child_running": Case(
        "import subprocess\n    p = subprocess.Popen(['sleep', '600'])\n"
        "    with open('children', 'a') as f:\n        f.write(f'{p.pid} ')\n    return 10",
        value=10, check=_check_no_orphans),
    "endless_background_thread": Case(
        "import threading\n    threading.Thread(target=lambda: time.sleep(3600)).start()\n    return 11", value=11),
    "garbage_on_the_result_pipe": Case(
        "fd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n    os.write(fd, b'\\xff' * 64)\n    return 1",
        error=("FrameError", r"could not decode")),
    "forged_frame_that_would_run_code_in_the_parent": Case(
        "import pickle, struct\n"
        "    class Evil:\n        def __reduce__(self):\n            return (os.system, ('touch pwned',))\n"
        "    payload = pickle.dumps(('var_done', Evil()), protocol=5)\n"
        "    fd = int(sys.argv[sys.argv.index('--result-fd') + 1])\n"
        "    os.write(fd, struct.pack('<QI', len(payload), 0) + payload)\n    return 1",
        error=("FrameError", r"could not decode .*a frame may not contain posix\.system"),
        check=lambda db_dir, output: not (db_dir / "pwned").exists() or pytest.fail("the forged frame ran code")),
    "closes_every_file_descriptor": Case("os.closerange(0, 1024)\n    return 1",
                                         error=("WorkerCrashError", r"died while computing 'hostile'")),
    # -- definitions that would overwrite run metadata or cannot be stored as text: refused, located
    "start_time_variable": Case("return 5.0", refused=r"context.py:\d+: variable 'start_time': the name "
                                r"'start_time' is reserved for the run's start time"),
    "comment_variable": Case("return 'overwritten'", refused=r"variable 'comment': the name 'comment' is reserved"),
    "lone_surrogate_in_title": Case("return 1", refused=r"context.py:\d+: variable 'hostile': its title "
                                    r"'Hostile \\udcff' contains a lone surrogate"),
    "proposal_run_added_at_kept_apart": Case("return 1", value=1, check=_check_kept_apart),
}

# Variables whose name is the point of the case, defined in place of `hostile`.
RENAMED = {
    "start_time_variable": "start_time",
    "comment_variable": "comment",
}
EXTRA_CODE = {  # (text to replace, replacement) or (None, code to append)
    "endless_loop_at_import": (None, "\nwhile True:\n    time.sleep(0.1)\n"),
    "lone_surrogate_in_title": ("title=\"Hostile\"", "title=\"Hostile \\udcff\""),
    "proposal_run_added_at_kept_apart": (None, '''

@Variable(title="Proposal variable")
def proposal(run):
    return "mine"

@Variable(title="Run variable")
def run(run):
    return "also mine"

@Variable(title="Added at variable")
def added_at(run):
    return "mine too"
'''),
}


def context_for(name: str, case: Case) -> str:
    var = RENAMED.get(name, "hostile")
    body = "    " + case.code  # (its later lines are written indented as the function's body)
    code = ORDINARY + f'\n\n@Variable(title="Hostile")\ndef {var}(run):\n{body}\n'
    if var == "hostile":
        code += DEPENDENT
    old_new = EXTRA_CODE.get(name)
    if old_new and old_new[0]:
        code = code.replace(*old_new)
    elif old_new:
        code += old_new[1]
    return code


def damnit(db_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "AMORE_BROKER": "none", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=db_dir, env=env, text=True,
                          capture_output=True, timeout=timeout, errors="replace")


def h5_state(db_dir: Path, run: int) -> tuple[set[str], dict[str, tuple[str, str]], float]:
    """(names, {name: (error class, message)}, start time) in a run file."""
    with h5py.File(db_dir / "extracted_data" / f"p{PROPOSAL}_r{run}.h5", "r") as f:
        names = {k for k in f if not k.startswith(".")}
        for group in (".reduced", ".preview", ".errors"):
            names |= set(f[group])
        errors = {n: (ds.attrs["type"], ds.asstr()[()]) for n, ds in f[".errors"].items()}
        return names, errors, float(f[".reduced/start_time"][()])


def db_state(db_dir: Path) -> dict:
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        info = {r: (p, s) for p, r, s in conn.execute("SELECT proposal, run, start_time FROM run_info")}
        rows = conn.execute("SELECT run, name, value, attributes FROM run_variables").fetchall()
    finally:
        conn.close()
    return {"info": info, "rows": {(r, n): (v, json.loads(a) if a else {}) for r, n, v, a in rows}}


def check_agreement(db_dir: Path, db: dict) -> None:
    for run in RUNS:
        names, errors, start = h5_state(db_dir, run)
        rows = {n: va for (r, n), va in db["rows"].items() if r == run}
        assert names - {"start_time"} == set(rows), f"r{run}: run file and database disagree on names"
        db_errors = {n: (a["error_cls"], a["error"]) for n, (v, a) in rows.items() if "error" in a}
        assert db_errors == errors, f"r{run}: run file and database disagree on errors"
        assert db["info"][run] == (PROPOSAL, start)


def check_ordinary_values(db: dict) -> None:
    for run in RUNS:
        assert db["rows"][(run, "good")][0] == 42
        assert db["rows"][(run, "n_trains")][0] == NTRAINS
        assert db["rows"][(run, "label")][0] == f"{NTRAINS} trains"
        assert isinstance(db["rows"][(run, "motor")][0], bytes)  # a trendline (numpy blob)
        assert db["rows"][(run, "motor")][1]["units"] == "mm"


@pytest.fixture
def db_dir(tmp_path, make_mock_runs):
    make_mock_runs(PROPOSAL, list(RUNS), ntrains=NTRAINS)
    db_dir = tmp_path / "amore"
    (tmp_path / "ordinary.py").write_text(ORDINARY)
    result = damnit(tmp_path, "init", str(db_dir), "--proposal", str(PROPOSAL), "--context",
                    str(tmp_path / "ordinary.py"))
    assert result.returncode == 0, result.stderr
    return db_dir


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_context(name, db_dir):
    case = CASES[name]
    settings = {"variable_timeout": 20, **case.settings}
    for key, value in settings.items():
        assert damnit(db_dir, "db-config", "--num", key, str(value)).returncode == 0
    if case.refused:
        seeded = damnit(db_dir, "reprocess", "--direct", "--concurrent-jobs", "1", *map(str, RUNS))
        assert seeded.returncode == 0, seeded.stderr
        before = db_state(db_dir)
        files_before = {p.name: p.read_bytes() for p in (db_dir / "extracted_data").iterdir()}

    (db_dir / "context.py").write_text(context_for(name, case))
    result = damnit(db_dir, "reprocess", "--direct", "--concurrent-jobs", "1", *map(str, RUNS))
    output = result.stdout + result.stderr
    db = db_state(db_dir)

    assert set(db["info"]) == set(RUNS), output  # both runs are in the database
    check_ordinary_values(db)
    check_agreement(db_dir, db)
    if case.refused:
        assert result.returncode == 1, output
        assert re.search(case.refused, output), output
        assert "Nothing was processed; the database is unchanged." in output
        assert "Traceback" not in output
        assert db == before
        assert {p.name: p.read_bytes() for p in (db_dir / "extracted_data").iterdir()} == files_before
    else:
        assert result.returncode == 0, output
        # `hostile` and its dependent, in each run
        n_errors = (1 if case.dependents_ran else 2) * len(RUNS) if case.error else 0
        assert re.search(rf"Processed 2 runs in [\d.]+ s: 2 succeeded, 0 failed, {n_errors} variable errors, "
                         r"0 skipped", output), output
        for run in RUNS:
            value, attrs = db["rows"][(run, "hostile")]
            if case.error:
                cls, pattern = case.error
                assert value is None and attrs["error_cls"] == cls, attrs
                assert re.search(pattern, attrs["error"]), attrs["error"]
                if case.dependents_ran:
                    assert db["rows"][(run, "after_hostile")][0] == 1
                    continue
                dependent = db["rows"][(run, "after_hostile")][1]
                assert dependent["error_cls"] == "DependencyError"
                assert dependent["error"].startswith(f"Skipped due to missing dependency:\n└ (hostile) failed: {cls}")
            else:
                assert callable(case.value) and case.value(value) or value == case.value, repr(value)[:200]
                assert "error" not in attrs
                assert db["rows"][(run, "after_hostile")][0] == 1
    if case.output:
        assert re.search(case.output, output), output
    if case.check:
        case.check(db_dir, output)
