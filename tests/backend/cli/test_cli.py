"""The core `damnit` verbs (docs/spec.md "Command line"): init, proposal, new-id, db-config, read-context, reprocess.

Commands run in-process through `backend.cli.main` (processing still uses real worker processes and
extra-data mock runs); one test runs the installed command as a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from backend.cli import main
from backend.storage.database import DamnitDB
from backend.storage.logbook_settings import read_logbook_settings
from backend.storage.user_variables import UserEditableVariable
from tests.infra import REPO

PROPOSAL = 1234

CONTEXT = """\
from damnit_ctx import Variable

@Variable(title="Trains", tags=["run"])
def n_trains(run):
    return len(run.train_ids)

@Variable(title="Sample X", units="mm", tags=["motor", "sample"])
def sample_x(run):
    return float(run["SPB_IRU_MOTORS/MOTOR/SAMPLE_X", "actualPosition"].ndarray().mean())

@Variable(title="XGM energy", units="uJ", summary="mean")
def xgm_energy(run):
    return run["SA1_XTD2_XGM/DOOCS/MAIN", "pulseEnergy.photonFlux"].xarray()
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("XFEL_DATA_ROOT", raising=False)


def init_db(path: Path, context: str = CONTEXT, proposal: int = PROPOSAL) -> Path:
    ctx = path.parent / f"{path.name}-context.py"
    ctx.write_text(context)
    assert main(["init", str(path), "--proposal", str(proposal), "--context", str(ctx)]) == 0
    return path


def rows(db_dir: Path, sql: str, *params):
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def values(db_dir: Path) -> dict[tuple[int, str], object]:
    return {(r, n): v for r, n, v in rows(db_dir, "SELECT run, name, value FROM run_variables")}


# -- init ------------------------------------------------------------------------------------------


def test_init_with_proposal_creates_db_and_empty_context(tmp_path, capsys):
    d = tmp_path / "new" / "amore"
    assert main(["init", str(d), "--proposal", "1234"]) == 0
    assert "Setting up DAMNIT in" in capsys.readouterr().out
    assert (d / "runs.sqlite").is_file()
    assert (d / "context.py").read_text() == ""
    db = DamnitDB.from_dir(d)
    assert db.metameta["proposal"] == 1234
    assert re.fullmatch(r"[0-9a-f]{40}", db.metameta["db_id"])
    assert db.metameta["data_format_version"] == 4


def test_init_infers_proposal_from_path_and_requires_it_otherwise(tmp_path, capsys):
    d = tmp_path / "SPB" / "202501" / "p002222" / "usr" / "Shared" / "amore"
    assert main(["init", str(d)]) == 0
    assert DamnitDB.from_dir(d).metameta["proposal"] == 2222

    assert main(["init", str(tmp_path / "elsewhere")]) == 1
    assert "--proposal is required" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere" / "runs.sqlite").exists()


def test_init_by_proposal_number_uses_the_data_root(make_mock_runs, capsys):
    prop_dir = make_mock_runs(PROPOSAL, 1)
    assert main(["init", str(PROPOSAL)]) == 0
    amore = prop_dir / "usr" / "Shared" / "amore"
    assert (amore / "runs.sqlite").is_file()
    assert DamnitDB.from_dir(amore).metameta["proposal"] == PROPOSAL

    assert main(["init", "9999"]) == 1
    assert "proposal 9999 not found" in capsys.readouterr().err


def test_init_with_context_and_like(tmp_path, capsys):
    src = init_db(tmp_path / "src")
    DamnitDB.from_dir(src).add_user_variable(
        UserEditableVariable("quality", "Quality", "string", "Sample quality"))

    like = tmp_path / "like"
    assert main(["init", str(like), "--proposal", "5678", "--like", str(src)]) == 0
    assert (like / "context.py").read_text() == CONTEXT
    db = DamnitDB.from_dir(like)
    assert db.metameta["proposal"] == 5678
    assert db.metameta["db_id"] != DamnitDB.from_dir(src).metameta["db_id"]
    uv = db.get_user_variables()
    assert uv["quality"].title == "Quality" and uv["quality"].variable_type == "string"

    # --context wins over the --like context
    other = tmp_path / "other.py"
    other.write_text("# other\n")
    both = tmp_path / "both"
    assert main(["init", str(both), "--proposal", "1", "--like", str(src), "--context", str(other)]) == 0
    assert (both / "context.py").read_text() == "# other\n"

    capsys.readouterr()
    assert main(["init", str(tmp_path / "x"), "--proposal", "1", "--context", str(tmp_path / "nope.py")]) == 1
    assert "nope.py is not a file" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "y"), "--proposal", "1", "--like", "not-a-dir-or-number"]) == 1
    assert "not a proposal number or DAMNIT database directory" in capsys.readouterr().err


def test_init_on_existing_folder_keeps_context_and_db(tmp_path):
    d = init_db(tmp_path / "db")
    db_id = DamnitDB.from_dir(d).metameta["db_id"]
    other = tmp_path / "other.py"
    other.write_text("# other\n")
    assert main(["init", str(d), "--proposal", "1", "--context", str(other)]) == 0
    assert (d / "context.py").read_text() == CONTEXT
    meta = DamnitDB.from_dir(d).metameta
    assert meta["db_id"] == db_id and meta["proposal"] == PROPOSAL


# -- settings verbs --------------------------------------------------------------------------------


def test_db_config_view_set_delete(tmp_path, monkeypatch, capsys):
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    assert main(["db-config", "slurm-time", "04:00:00"]) == 0
    assert main(["db-config", "--num", "concurrent_jobs", "7"]) == 0
    assert main(["db-config", "--num", "ratio", "0.5"]) == 0
    capsys.readouterr()
    assert main(["db-config", "slurm_time"]) == 0
    assert capsys.readouterr().out.strip() == "'04:00:00'"
    assert main(["db-config"]) == 0
    listing = capsys.readouterr().out
    assert "concurrent_jobs=7\n" in listing and "ratio=0.5\n" in listing and f"proposal={PROPOSAL}" in listing
    assert main(["db-config", "-d", "slurm_time"]) == 0
    assert "slurm_time" not in DamnitDB.from_dir(d).metameta

    assert main(["db-config", "slurm_time"]) == 1
    assert "key slurm_time not found" in capsys.readouterr().err
    assert main(["db-config", "-d"]) == 1
    assert "no key specified" in capsys.readouterr().err
    assert main(["db-config", "--num", "x", "abc"]) == 1
    assert "not a number" in capsys.readouterr().err


def test_db_config_shows_and_checks_the_processing_limits(tmp_path, monkeypatch, capsys):
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    capsys.readouterr()
    assert main(["db-config"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "variable_timeout=3600.0  (default)" in listing
    assert "context_load_timeout=300.0  (default)" in listing
    assert f"max_variable_bytes={4 * 1024**3}  (default)" in listing
    assert main(["db-config", "variable_timeout"]) == 0
    assert capsys.readouterr().out == "3600.0  (default)\n"

    assert main(["db-config", "variable-timeout", "600"]) == 0  # stored as a number even without --num
    assert DamnitDB.from_dir(d).metameta["variable_timeout"] == 600
    assert main(["db-config", "variable_timeout", "2.5"]) == 0
    assert main(["db-config"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "variable_timeout=2.5" in listing and not any(line.startswith("variable_timeout=3600") for line in listing)

    for bad in ("soon", "0", "-5", "inf", "nan"):
        assert main(["db-config", "variable_timeout", bad]) == 1
        assert (f"variable_timeout must be a positive number of seconds, not {bad!r} (its default is 3600.0)"
                in capsys.readouterr().err)
    assert DamnitDB.from_dir(d).metameta["variable_timeout"] == 2.5
    assert main(["db-config", "-d", "variable_timeout"]) == 0
    assert main(["db-config", "variable_timeout"]) == 0
    assert capsys.readouterr().out == "3600.0  (default)\n"


def test_db_config_logbook_settings_in_zulip_cfg(tmp_path, monkeypatch, capsys):
    """zulip.* are the logbook settings the original reads from zulip.cfg; the key is never printed."""
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    assert main(["db-config", "zulip.url", "https://proxy.example.org/api"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-token\n"))
    assert main(["db-config", "zulip.key", "-"]) == 0
    assert main(["db-config", "zulip.topics", "beamtime, alignment"]) == 0
    assert "[ZULIP]" in (d / "zulip.cfg").read_text()
    assert read_logbook_settings(d).topics == ("beamtime", "alignment")
    assert "zulip" not in json.dumps(DamnitDB.from_dir(d).metameta.to_dict())  # not in metameta
    capsys.readouterr()
    assert main(["db-config"]) == 0
    listing = capsys.readouterr().out
    assert "zulip.url='https://proxy.example.org/api'\n" in listing
    assert "zulip.key=(set, not shown)\n" in listing and "s3cret" not in listing
    assert "zulip.topics=['beamtime', 'alignment']\n" in listing
    assert main(["db-config", "zulip.key"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "zulip.cfg" in out
    assert main(["db-config", "zulip.topics"]) == 0
    assert capsys.readouterr().out == "['beamtime', 'alignment']\n"

    assert main(["db-config", "zulip.url", "proxy.example.org"]) == 1
    assert "must start with http" in capsys.readouterr().err
    assert main(["db-config", "zulip.colour", "red"]) == 1
    assert "unknown logbook setting zulip.colour" in capsys.readouterr().err
    assert main(["db-config", "--num", "zulip.url", "5"]) == 1
    assert main(["db-config", "zulip.stream"]) == 1
    assert "key zulip.stream not found" in capsys.readouterr().err
    assert main(["db-config", "-d", "zulip.key"]) == 0
    assert read_logbook_settings(d).key == "" and read_logbook_settings(d).url == "https://proxy.example.org/api"

    (d / "zulip.cfg").write_text("[ZULIP]\ntopics = [oops\n")
    assert main(["db-config"]) == 0  # the database's other settings still list
    assert "zulip.cfg: [ZULIP]: topics is not a valid JSON list" in capsys.readouterr().err
    assert main(["db-config", "zulip.topics"]) == 1
    assert main(["db-config", "zulip.topics", "beamtime"]) == 0  # the fix
    assert read_logbook_settings(d).topics == ("beamtime",)


def test_proposal_and_new_id(tmp_path, monkeypatch, capsys):
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    capsys.readouterr()
    assert main(["proposal"]) == 0
    assert capsys.readouterr().out.strip() == f"Current proposal number: {PROPOSAL}"
    assert main(["proposal", str(PROPOSAL)]) == 0
    assert "No change" in capsys.readouterr().out
    assert main(["proposal", "4321"]) == 0
    assert capsys.readouterr().out.strip() == f"Changed proposal to 4321 (was {PROPOSAL})"
    assert DamnitDB.from_dir(d).metameta["proposal"] == 4321

    old = DamnitDB.from_dir(d).metameta["db_id"]
    assert main(["new-id", str(d)]) == 0
    new = DamnitDB.from_dir(d).metameta["db_id"]
    assert new != old and re.fullmatch(r"[0-9a-f]{40}", new)
    assert new in capsys.readouterr().out
    assert main(["new-id"]) == 0  # default: the current directory
    assert DamnitDB.from_dir(d).metameta["db_id"] != new


def test_verbs_outside_a_damnit_folder_fail_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv in (["proposal"], ["db-config"], ["read-context"], ["new-id"], ["reprocess", "1", "--direct"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "is not a DAMNIT directory (no runs.sqlite)" in err, (argv, err)
    assert not (tmp_path / "runs.sqlite").exists()


# -- read-context ------------------------------------------------------------------------------------


def test_read_context_updates_variables_and_tags(tmp_path, monkeypatch, capsys):
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    capsys.readouterr()
    assert main(["read-context"]) == 0
    assert "Read 3 variable(s)" in capsys.readouterr().out
    vars_ = {r[0]: r[1:] for r in rows(d, "SELECT name, title, type FROM variables")}
    assert vars_ == {"n_trains": ("Trains", None), "sample_x": ("Sample X", None),
                     "xgm_energy": ("XGM energy", None)}
    db = DamnitDB.from_dir(d)
    assert sorted(db.get_variable_tags("sample_x")) == ["motor", "sample"]

    (d / "context.py").write_text(CONTEXT.replace('tags=["motor", "sample"]', 'tags=["motor"]')
                                  .replace('title="Trains"', 'title="Train count"'))
    assert main(["read-context"]) == 0
    db = DamnitDB.from_dir(d)
    assert db.get_variable_tags("sample_x") == ["motor"]
    assert "sample" not in db.get_all_tags()
    assert rows(d, "SELECT title FROM variables WHERE name='n_trains'") == [("Train count",)]


def test_read_context_error_is_located_and_changes_nothing(tmp_path, monkeypatch, capsys):
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    assert main(["read-context"]) == 0
    before = rows(d, "SELECT * FROM variables ORDER BY name")
    (d / "context.py").write_text(CONTEXT + "\n@Variable(title='Trains')\ndef dup(run):\n    return 1\n")
    capsys.readouterr()
    assert main(["read-context"]) == 1
    err = capsys.readouterr().err
    assert "context.py" in err and "Trains" in err  # duplicate title named
    (d / "context.py").write_text("from damnit_ctx import Variable\n\ndef f(:\n    pass\n")
    assert main(["read-context"]) == 1
    err = capsys.readouterr().err
    assert "context.py:3" in err and "SyntaxError" in err
    assert rows(d, "SELECT * FROM variables ORDER BY name") == before


# -- reprocess ---------------------------------------------------------------------------------------


def test_reprocess_of_a_run_missing_on_disk_replaces_its_old_failure(tmp_path, make_mock_runs, monkeypatch,
                                                                    capsys):
    """A failed run's mark must not keep an old reason (a context error fixed since) when the new attempt
    could not even start; a run without a mark gets none."""
    from backend.storage import processing_state

    make_mock_runs(PROPOSAL, [1])
    d = init_db(tmp_path / "db")
    with DamnitDB.from_dir(d) as db:
        processing_state.record_failure(db, PROPOSAL, 7, processing_state.CONTEXT, "SyntaxError: old")
    monkeypatch.chdir(d)
    assert main(["reprocess", "1", "7", "8", "--direct"]) == 0
    assert "skipping 2 runs because they don't exist: [7, 8]" in capsys.readouterr().err
    with DamnitDB.from_dir(d) as db:
        failed = {f.run: f for f in processing_state.failures(db)}
    assert set(failed) == {7}
    assert failed[7].kind == processing_state.PROCESSING and "no files of run 7" in failed[7].reason


def test_reprocess_direct_end_to_end(tmp_path, make_mock_runs, monkeypatch, capsys):
    make_mock_runs(PROPOSAL, [1, 2, 3])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(tmp_path)
    assert main(["reprocess", "1", "2", "3", "7", "--direct", "--in", str(d)]) == 0
    out, err = capsys.readouterr()
    assert "skipping 1 runs because they don't exist: [7]" in err
    assert re.search(r"Processed 3 runs in [\d.]+ s: 3 succeeded, 0 failed, 0 variable errors, 0 skipped", out)
    assert "3/3" in err  # the progress bar reached the end

    v = values(d)
    for run in (1, 2, 3):
        assert v[(run, "n_trains")] == 50
        assert v[(run, "sample_x")] == pytest.approx(1 + 0.25 * run, abs=0.01)
        assert v[(run, "xgm_energy")] > 100
        with h5py.File(d / "extracted_data" / f"p{PROPOSAL}_r{run}.h5") as f:
            assert f["xgm_energy"].attrs["_damnit_objtype"] == "dataarray"
            assert "trainId" in f["xgm_energy"]
        assert (d / "process_logs" / f"r{run}-p{PROPOSAL}.out").read_text().count("----- Processing") == 1
    assert all(st is not None for (st,) in rows(d, "SELECT start_time FROM run_info"))

    # 'all' reprocesses every recorded run found on disk; runs missing on disk are skipped
    (d / "context.py").write_text(CONTEXT + "\n@Variable(title='Run no')\ndef run_no(run, r: 'meta#run_number'):\n"
                                            "    return r\n")
    DamnitDB.from_dir(d).ensure_run(PROPOSAL, 99)
    monkeypatch.chdir(d)
    assert main(["reprocess", "all", "--direct"]) == 0
    out, _ = capsys.readouterr()
    assert "Reprocessing 3 runs already recorded, skipping 1..." in out
    assert {r: values(d)[(r, "run_no")] for r in (1, 2, 3)} == {1: 1, 2: 2, 3: 3}


def test_reprocess_match_and_var(tmp_path, make_mock_runs, monkeypatch):
    make_mock_runs(PROPOSAL, [1, 2])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    assert main(["reprocess", "1", "--direct", "--match", "sample"]) == 0
    assert set(values(d)) == {(1, "sample_x")}
    assert main(["reprocess", "2", "--direct", "--var", "n_trains", "--var", "xgm_energy"]) == 0
    assert set(values(d)) == {(1, "sample_x"), (2, "n_trains"), (2, "xgm_energy")}
    assert main(["reprocess", "1-2", "--direct", "--match", "TRAINS", "--match", "xgm"]) == 0
    assert set(values(d)) == {(1, "sample_x"), (1, "n_trains"), (1, "xgm_energy"),
                              (2, "n_trains"), (2, "xgm_energy")}


def test_reprocess_bad_input(tmp_path, make_mock_runs, monkeypatch, capsys):
    make_mock_runs(PROPOSAL, [1])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    for argv, message in [
        (["reprocess", "abc", "--direct"], "bad run number 'abc'"),
        (["reprocess", "5-3", "--direct"], "bad run range '5-3'"),
        (["reprocess", "all", "3", "--direct"], "'all' cannot be combined"),
        (["reprocess", "8", "--direct"], "none of the given runs exist"),
        (["reprocess", "1", "--direct", "--in", "/no/such/dir"], "not a proposal number or DAMNIT"),
        (["reprocess", "1", "--direct", "--proposal", "4444"], "proposal 4444 has no data folder under"),
    ]:
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv
    assert values(d) == {}


def test_reprocess_with_broken_context_leaves_earlier_data(tmp_path, make_mock_runs, monkeypatch, capsys):
    make_mock_runs(PROPOSAL, [1, 2])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    assert main(["reprocess", "1", "2", "--direct"]) == 0
    before = rows(d, "SELECT * FROM run_variables ORDER BY run, name")
    (d / "context.py").write_text(CONTEXT + "\nimport not_a_real_module_xyz\n")
    capsys.readouterr()
    assert main(["reprocess", "1", "2", "--direct"]) == 1
    err = capsys.readouterr().err
    lineno = (CONTEXT + "\nimport not_a_real_module_xyz\n").splitlines().index("import not_a_real_module_xyz") + 1
    assert f"context.py:{lineno}" in err and "ModuleNotFoundError" in err
    assert "database is unchanged" in err
    assert rows(d, "SELECT * FROM run_variables ORDER BY run, name") == before
    for run in (1, 2):
        log = (d / "process_logs" / f"r{run}-p{PROPOSAL}.out").read_text()
        assert f"context.py:{lineno}" in log and "Nothing was processed for this run." in log


def test_reprocess_one_failing_run_is_reported(tmp_path, make_mock_runs, monkeypatch, capsys):
    prop_dir = make_mock_runs(PROPOSAL, [1, 2])
    d = init_db(tmp_path / "db")
    for f in (prop_dir / "raw" / "r0002").iterdir():
        f.write_bytes(b"garbage")
    monkeypatch.chdir(d)
    assert main(["reprocess", "1", "2", "--direct"]) == 1
    out, err = capsys.readouterr()
    assert "1 succeeded, 1 failed" in out
    assert "r2 (p1234) failed" in err and "r2-p1234.out" in err
    assert values(d)[(1, "n_trains")] == 50
    assert not any(r == 2 for (r, _) in values(d))


def test_reprocess_mock_needs_no_data(tmp_path, monkeypatch):
    d = init_db(tmp_path / "db", "from damnit_ctx import Variable\n\n@Variable(title='Const')\n"
                                 "def const(run, r: 'meta#run_number'):\n    return r * 10\n")
    monkeypatch.chdir(d)
    assert main(["reprocess", "5", "6", "--direct", "--mock"]) == 0
    assert values(d) == {(5, "const"): 50, (6, "const"): 60}


def test_installed_damnit_command(tmp_path, make_mock_runs):
    """The `damnit` console script of this environment (pip install -e) runs the same verbs."""
    damnit = Path(sys.executable).parent / "damnit"
    assert damnit.is_file(), f"no damnit console script next to {sys.executable}: pip install -e the project"
    make_mock_runs(PROPOSAL, [1])
    d = init_db(tmp_path / "db")
    res = subprocess.run([str(damnit), "reprocess", "1", "--direct"], cwd=d, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1 succeeded" in res.stdout
    res = subprocess.run([str(damnit), "process", str(PROPOSAL), "1", "all", "--var", "sample_x"], cwd=d,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    attrs = rows(d, "SELECT attributes FROM run_variables WHERE name='sample_x'")[0][0]
    assert json.loads(attrs)["units"] == "mm"


def test_reprocess_through_slurm(tmp_path, make_mock_runs, slurm_cluster, monkeypatch, capsys):
    """Without --direct, runs go to Slurm as an array; each task runs `python -m backend.services.job`."""
    import time

    make_mock_runs(PROPOSAL, [1, 2])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    for key, value in (("noncluster_cpus", "1"), ("noncluster_mem", "200M"), ("slurm_time", "00:05:00")):
        assert main(["db-config", key, value]) == 0
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    capsys.readouterr()
    assert main(["reprocess", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Submitted 2 run\(s\) to Slurm: \d+_0, \d+_1", out)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        v = values(d)
        if (1, "sample_x") in v and (2, "sample_x") in v:
            break
        time.sleep(0.5)
    else:
        logs = {p.name: p.read_text()[-2000:] for p in (d / "process_logs").glob("*.out")}
        pytest.fail(f"Slurm jobs did not store values in time; logs: {logs}; slurm: {slurm_cluster.log_tail()}")
    assert v[(1, "n_trains")] == 50 and v[(2, "sample_x")] == pytest.approx(1.5, abs=0.01)
    assert "----- Processing r1 (p1234)" in (d / "process_logs" / "r1-p1234.out").read_text()


def test_reprocess_watch_runs_jobs_one_by_one_with_live_output(tmp_path, make_mock_runs, slurm_cluster,
                                                                monkeypatch, capsys):
    make_mock_runs(PROPOSAL, [1, 2])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    for key, value in (("noncluster_cpus", "1"), ("noncluster_mem", "200M"), ("slurm_time", "00:05:00")):
        assert main(["db-config", key, value]) == 0
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    capsys.readouterr()
    assert main(["reprocess", "1", "2", "--watch", "--var", "sample_x"]) == 0
    out = capsys.readouterr().out
    # the runs' logs were shown as they were written, in order
    assert out.index("----- Processing r1 (p1234)") < out.index("----- Processing r2 (p1234)")
    assert "Computed sample_x" in out
    assert "2 succeeded, 0 failed" in out
    assert set(values(d)) == {(1, "sample_x"), (2, "sample_x")}
    assert {r[0] for r in rows(d, "SELECT name FROM variables")} == {"n_trains", "sample_x", "xgm_energy"}


def test_unreadable_database_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs.sqlite").write_text("this is not SQLite")
    monkeypatch.chdir(tmp_path)
    assert main(["db-config"]) == 1
    assert f"cannot open {tmp_path / 'runs.sqlite'}: file is not a database" in capsys.readouterr().err


def test_reprocess_without_slurm_says_so(tmp_path, make_mock_runs, monkeypatch, capsys):
    make_mock_runs(PROPOSAL, [1])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["reprocess", "1"]) == 1
    err = capsys.readouterr().err
    assert "Slurm submission failed" in err and "sbatch" in err and "use --direct" in err
    assert values(d) == {}


def test_reprocess_selection_typos_are_errors(tmp_path, make_mock_runs, monkeypatch, capsys):
    make_mock_runs(PROPOSAL, [1])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    assert main(["reprocess", "1", "--direct", "--var", "sample_y"]) == 1
    err = capsys.readouterr().err
    assert "has no variable named 'sample_y'; it defines: n_trains, sample_x, xgm_energy" in err
    assert main(["reprocess", "1", "--direct", "--match", "nothing like this"]) == 1
    assert "no variable title in" in capsys.readouterr().err
    assert values(d) == {}
    log = (d / "process_logs" / f"r1-p{PROPOSAL}.out").read_text()
    assert "no variable named 'sample_y'" in log


def test_reprocess_concurrent_jobs_sets_the_worker_count(tmp_path, make_mock_runs, monkeypatch):
    make_mock_runs(PROPOSAL, [1, 2, 3])
    d = init_db(tmp_path / "db", "import os\nfrom damnit_ctx import Variable\n\n@Variable(title='pid')\n"
                                 "def pid(run):\n    return os.getpid()\n")
    monkeypatch.chdir(d)
    assert main(["reprocess", "1-3", "--direct", "--concurrent-jobs", "1"]) == 0
    assert len({v for (_, n), v in values(d).items() if n == "pid"}) == 1  # one worker took all runs


def test_missing_context_python_is_a_clear_error(tmp_path, make_mock_runs, monkeypatch, capsys):
    make_mock_runs(PROPOSAL, [1])
    d = init_db(tmp_path / "db")
    monkeypatch.chdir(d)
    assert main(["db-config", "context_python", "/no/such/python"]) == 0
    capsys.readouterr()
    assert main(["reprocess", "1", "--direct"]) == 1
    err = capsys.readouterr().err
    assert "cannot start the context interpreter '/no/such/python' (the `context_python` setting" in err
    assert main(["read-context"]) == 1
    assert "/no/such/python" in capsys.readouterr().err
    assert values(d) == {}


# -- side by side with the original ----------------------------------------------------------------


def _script_target(name: str) -> tuple[str, str]:
    """The ``module:function`` that pyproject.toml installs as the console script ``name``."""
    text = (REPO / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]  # (tomllib needs Python 3.11)
    target = re.search(rf'^{re.escape(name)}\s*=\s*"([^"]+)"', scripts, re.M)
    assert target, f"pyproject.toml installs no console script {name!r}"
    module, _, func = target[1].partition(":")
    return module, func


def run_console_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a console script of ours the way pip's generated launcher does (argv[0] is its name), from
    the target declared in pyproject.toml, so that no reinstall is needed."""
    module, func = _script_target(name)
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {func}; sys.exit({func}())"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.oracle
def test_amore_proto_warns_about_the_rename_then_acts_as_damnit(tmp_path, damnit_oracle):
    ours_dir = init_db(tmp_path / "ours")
    theirs_dir = tmp_path / "theirs"
    damnit_oracle.damnit("init", theirs_dir, "--proposal", str(PROPOSAL))
    amore_proto = damnit_oracle.venv / "bin" / "amore-proto"
    for args in (["proposal"], ["proposal", "4321"], ["proposal"], ["--help"], [], ["no-such-verb"]):
        theirs = damnit_oracle._run([str(amore_proto), *args], cwd=theirs_dir, env=None, timeout=120,
                                    check=False)
        ours = run_console_script("amore-proto", *args, cwd=ours_dir)
        assert ours.returncode == theirs.returncode, (args, ours.stderr, theirs.stderr)
        warning = "Warning: 'amore-proto' has been renamed to 'damnit'. Please update your scripts."
        assert ours.stderr.splitlines()[0] == theirs.stderr.splitlines()[0] == warning, args
        if args and args[0] == "proposal":
            assert ours.stdout == theirs.stdout, args
        elif args == ["--help"]:
            assert ours.stdout.startswith("usage: amore-proto ") and theirs.stdout.startswith("usage: amore-proto ")
        else:
            assert "usage: amore-proto " in ours.stderr and "usage: amore-proto " in theirs.stderr
    assert DamnitDB.from_dir(ours_dir).metameta["proposal"] == 4321
    # `damnit` itself stays quiet
    res = run_console_script("damnit", "proposal", cwd=ours_dir)
    assert res.returncode == 0 and "renamed" not in res.stderr and res.stdout == "Current proposal number: 4321\n"


@pytest.mark.oracle
def test_reprocess_of_runs_that_do_not_exist_is_an_error_unlike_the_original(tmp_path, make_mock_runs,
                                                                             damnit_oracle, monkeypatch, capsys):
    """A deliberate difference (docs/cli.md): the original warns and exits 0 having done nothing; we
    give the same warning, then an error and exit status 1, so that a script or a typo notices."""
    make_mock_runs(PROPOSAL, [1])
    theirs_dir = tmp_path / "theirs"
    damnit_oracle.damnit("init", theirs_dir, "--proposal", str(PROPOSAL))
    damnit_oracle.damnit("db-config", "context_python", damnit_oracle.python, cwd=theirs_dir)
    theirs = damnit_oracle.damnit("reprocess", "10", "--direct", cwd=theirs_dir, check=False)
    ours_dir = init_db(tmp_path / "ours")
    monkeypatch.chdir(ours_dir)
    capsys.readouterr()
    assert main(["reprocess", "10", "--direct"]) == 1
    out, err = capsys.readouterr()
    warning = "Warning: skipping 1 runs because they don't exist: [10]"
    assert theirs.returncode == 0 and warning in theirs.stdout
    assert warning in err and "Error: none of the given runs exist on disk; nothing to process" in err
    assert rows(ours_dir, "SELECT run FROM run_info") == []
    # with one run that exists both go ahead and succeed
    theirs = damnit_oracle.damnit("reprocess", "1", "10", "--direct", cwd=theirs_dir, check=False)
    assert theirs.returncode == 0, theirs.stderr[-2000:]
    assert main(["reprocess", "1", "10", "--direct"]) == 0
    assert warning in capsys.readouterr().err
