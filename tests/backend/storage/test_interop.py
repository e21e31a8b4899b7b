"""Compatibility guarantee: the original `damnit` (its own venv) reads what we write, and we read what it writes.

The same probe (every public read of `Damnit`/`RunVariables`/`VariableData`, values encoded as JSON) runs in
both implementations over the same directory; the answers must match, except where the original raises and
ours deliberately answers (listed in ORACLE_RAISES_OURS_ANSWERS) or ours is deliberately better
(OUR_IMPROVEMENTS).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from backend.storage.api import Damnit
from backend.storage.blobs import blob2numpy
from backend.storage.damnit_folder import initialize_proposal
from backend.storage.database import DamnitDB
from backend.storage.h5format import merge_fragment, read_reduced, run_file_path, write_results
from backend.storage.records import ReducedData
from backend.storage.user_variables import UserEditableVariable
from tests.backend.storage.test_api import PLOTLY_JSON, START, results_for
from tests.infra import REPO

pytestmark = pytest.mark.oracle

# Encodes any value returned by the read API as plain JSON, identically in both interpreters.
ENCODE = r'''
import hashlib, json, math
import numpy as np

def _clean(x):
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if isinstance(x, complex):
        return {"complex": [_clean(x.real), _clean(x.imag)]}
    if isinstance(x, (list, tuple)):
        return [_clean(i) for i in x]
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, np.generic):
        return _clean(x.item())
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, bytes):
        return {"bytes": hashlib.sha1(x).hexdigest(), "len": len(x)}
    return x

def enc(v):
    import pandas as pd
    if v is None:
        return {"none": True}
    if v is pd.NA:
        return {"na": True}
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (str, bytes, int, float, complex, np.generic)):
        return _clean(v)
    if isinstance(v, pd.Timestamp):
        return {"ts": v.isoformat()}
    if isinstance(v, np.ndarray):
        return {"array": _clean(v), "dtype": str(v.dtype), "shape": list(v.shape)}
    if isinstance(v, pd.DataFrame):
        return {"frame": {str(c): [enc(x) for x in v[c]] for c in v.columns}}
    mod = type(v).__module__
    if mod.startswith("xarray"):
        return {"xarray": type(v).__name__, "dict": _clean(v.to_dict(data="list")),
                "dtypes": sorted(str(a.dtype) for a in ([v] if type(v).__name__ == "DataArray" else v.data_vars.values()))}
    if mod.startswith("plotly"):
        return {"plotly": json.loads(v.to_json())}
    return {"repr": repr(v)}

def attempt(fn):
    try:
        return enc(fn())
    except Exception as e:
        return {"raised": type(e).__name__}

def probe(Damnit, db_dir):
    db = Damnit(db_dir)
    out = {"proposal": db.proposal, "runs": sorted(db.runs()), "table": attempt(db.table),
           "table_titles": attempt(lambda: db.table(with_titles=True)), "per_run": {}}
    for run in out["runs"]:
        rv = db[run]
        keys = rv.keys()
        info = {"keys": keys, "titles": rv.titles(), "vars": {}}
        for k in keys:
            vd = rv[k]
            info["vars"][k] = {
                "title": vd.title, "name": vd.name, "by_title": rv[vd.title].name,
                "read": attempt(vd.read),
                "read_json": attempt(lambda: vd.read(deserialize_plotly=False)),
                "summary": attempt(vd.summary),
                "preview": attempt(vd.preview_data),
                "preview_nofallback": attempt(lambda: vd.preview_data(data_fallback=False)),
                "units": attempt(lambda: vd.units),
                "type_hint": attempt(lambda: getattr(vd.type_hint(), "value", None)),
            }
        out["per_run"][str(run)] = info
    return out
'''

ORACLE_PROBE = ENCODE + r'''
import sys
from damnit import Damnit
print(json.dumps(probe(Damnit, sys.argv[1]) if len(sys.argv) > 1 else None))
'''

# (variable, field): the original raises, ours answers.
ORACLE_RAISES_OURS_ANSWERS = {
    ("summary_only", "read"), ("summary_only", "read_json"), ("summary_only", "type_hint"),
    ("summary_only", "preview"),  # no data group: original KeyErrors, ours reads the summary / None
    # Variables only in the database (comment, user-editable): the original looks for them in the HDF5
    # file and raises KeyError; ours answers None.
    *((name, field) for name in ("comment", "good", "count", "note")
      for field in ("preview", "preview_nofallback", "type_hint")),
}
# (variable, field): both answer, ours is deliberately different.
OUR_IMPROVEMENTS = {
    ("start_time", "summary"),  # original: None (start_time lives in run_info); ours: the value
}


def ours_probe(db_dir: Path) -> dict:
    ns: dict = {}
    exec(ENCODE, ns)
    return json.loads(json.dumps(ns["probe"](Damnit, db_dir)))


def oracle_probe(oracle, db_dir: Path) -> dict:
    return oracle.run_json(ORACLE_PROBE.replace("sys.argv[1]", repr(str(db_dir))).replace(
        "len(sys.argv) > 1", "True"))


def compare_probes(ours: dict, theirs: dict) -> None:
    assert ours["proposal"] == theirs["proposal"]
    assert ours["runs"] == theirs["runs"]
    for key in ("table", "table_titles"):
        assert "raised" not in theirs[key], theirs[key]
        our_frame, their_frame = ours[key]["frame"], theirs[key]["frame"]
        assert set(our_frame) == set(their_frame)
        for col, values in their_frame.items():
            assert our_frame[col] == values, f"{key} column {col!r}"
    for run, theirs_run in theirs["per_run"].items():
        ours_run = ours["per_run"][run]
        assert ours_run["keys"] == theirs_run["keys"], f"run {run}"
        assert ours_run["titles"] == theirs_run["titles"], f"run {run}"
        for name, their_fields in theirs_run["vars"].items():
            for field, their_value in their_fields.items():
                our_value = ours_run["vars"][name][field]
                where = f"run {run} {name}.{field}"
                if isinstance(their_value, dict) and "raised" in their_value:
                    assert (name, field) in ORACLE_RAISES_OURS_ANSWERS, f"{where}: original raised {their_value}"
                    assert not (isinstance(our_value, dict) and "raised" in our_value), where
                elif (name, field) in OUR_IMPROVEMENTS:
                    continue
                else:
                    assert our_value == their_value, where


# -- ours → original ----------------------------------------------------------------------------------

def build_our_db(d: Path) -> Path:
    db = initialize_proposal(d, 1234)
    # Like the processing does, every computed variable is defined (the original needs that to index them).
    db.update_computed_variables({
        **{r.name: {"title": r.name, "description": None} for r in results_for(1) if r.name != "start_time"},
        "scalar": {"title": "Pulse energy", "description": "XGM", "tags": ["xgm"]},
        "string": {"title": "State", "description": None},
        "grp.member": {"title": "Group/Member", "description": "dotted"},
    })
    db.delete_variable("run")
    db.add_user_variable(UserEditableVariable("good", "Good run", "boolean"))
    db.add_user_variable(UserEditableVariable("count", "Count", "integer"))
    db.add_user_variable(UserEditableVariable("note", "Note", "string"))
    for run in (1, 2, 3):
        results = [r for r in results_for(run) if r.name != "run"]  # the original can't table() a 'run' var
        if run == 3:
            results = [r for r in results if r.name != "integer"]
        from backend.storage.records import VariableResult as VR
        results.append(VR("grp.member", data=np.asarray(run), summary=run))
        path = run_file_path(d, 1234, run)
        write_results(path, results, provenance="context.py")
        # A second pass over some variables: the file is rebuilt, copying the NetCDF groups across.
        write_results(path, [r for r in results if r.name in ("scalar", "string", "fig")])
        db.set_variables(1234, run, read_reduced(path), provenance="context.py")
    db.change_run_comment(1234, 1, "first!")
    db.set_user_variable_value(1234, 1, "good", "yes")
    db.set_user_variable_value(1234, 2, "good", "no")
    db.set_user_variable_value(1234, 3, "count", "12")
    db.set_user_variable_value(1234, 2, "note", "a note")
    db.add_standalone_comment(START, "beam down")
    db.ensure_run(1234, 4)  # pre-created
    db.close()
    return d


def test_original_reads_our_database(tmp_path, damnit_oracle):
    d = build_our_db(tmp_path / "amore")
    with DamnitDB.from_dir(d) as live:  # while one of ours has it open, the database is in WAL mode
        assert live.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        theirs = oracle_probe(damnit_oracle, d)
        compare_probes(ours_probe(d), theirs)

    # Spot checks on what the original itself answered, so a shared mistake can't pass.
    r1 = theirs["per_run"]["1"]["vars"]
    assert r1["scalar"]["read"] == 1.5 and r1["scalar"]["units"] == "mJ" and r1["scalar"]["title"] == "Pulse energy"
    assert r1["string"]["read"] == "run 1" and r1["cplx"]["read"] == {"complex": [1.0, 1.0]}
    assert r1["cplx"]["summary"] == {"complex": [1.0, 1.0]}
    assert r1["line"]["read"]["array"] == [float(i) for i in range(10)]
    assert r1["line"]["summary"]["shape"] == [2, 10]
    assert r1["darr"]["read"]["xarray"] == "DataArray" and r1["darr"]["type_hint"] == "dataarray"
    assert r1["darr"]["read"]["dict"]["attrs"] == {"units": "keV", "long_name": "detector"}
    assert r1["darr"]["units"] == "keV"
    assert set(r1["dset"]["read"]["dict"]["data_vars"]) == {"a_b", "c"}
    assert r1["fig"]["read"]["plotly"]["data"][0]["y"] == [3, 4]
    assert json.loads(r1["fig"]["read_json"]) == json.loads(PLOTLY_JSON)
    assert r1["rgba"]["type_hint"] == "image" and r1["rgba"]["preview"]["shape"] == [3, 4, 4]
    assert r1["with_preview"]["preview_nofallback"]["array"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert r1["image2d"]["summary"]["bytes"]  # PNG thumbnail bytes
    assert r1["comment"]["read"] == "first!" and r1["good"]["read"] == 1
    assert r1["grp.member"]["read"] == 1 and r1["grp.member"]["title"] == "Group/Member"
    assert "failing" not in theirs["per_run"]["1"]["keys"]
    table = theirs["table"]["frame"]
    assert table["scalar"] == [1.5, 3.0, 4.5]
    assert table["line"] == ["<sparkline>"] * 3 and table["image2d"] == ["<thumbnail>"] * 3
    assert table["numpy_summary"] == ["<ndarray>"] * 3
    assert table["integer"][2] == {"na": True} and table["failing"][0] == {"none": True}
    assert table["count"] == [{"na": True}, {"na": True}, 12] and table["note"][1] == "a note"
    assert table["start_time"][0] == {"ts": "2023-11-14T23:13:21+01:00"}
    assert "Pulse energy" in theirs["table_titles"]["frame"]


def test_original_reads_our_database_in_a_read_only_location(tmp_path, damnit_oracle):
    """Once our last connection closes the file is back in rollback-journal mode, which the original
    (like plain sqlite3) can read where it can't create files; a WAL file it could not open."""
    import os
    import subprocess
    import sys

    d = build_our_db(tmp_path / "amore")
    assert sqlite3.connect(d / "runs.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    os.chmod(d / "runs.sqlite", 0o444)
    os.chmod(d, 0o555)
    try:
        code = f"from damnit import Damnit\nprint(Damnit({str(d)!r}).table()['scalar'].tolist())"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        # root without its permission-override capabilities: file modes apply as for any user
        proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
                               str(damnit_oracle.python), "-c", code], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[1.5, 3.0, 4.5]"
        ours = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
                               sys.executable, "-c", code.replace("from damnit import", "from backend.storage.api import")],
                              capture_output=True, text=True, timeout=120,
                              env={**env, "PYTHONPATH": str(REPO)})
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout.strip() == "[1.5, 3.0, 4.5]"
    finally:
        os.chmod(d, 0o755)


def test_original_writes_into_our_wal_database(tmp_path, damnit_oracle):
    d = build_our_db(tmp_path / "amore")
    keep_open = DamnitDB.from_dir(d)  # a concurrent reader/writer of ours while the original writes
    damnit_oracle.run_python(
        "from damnit.backend.db import DamnitDB\n"
        f"db = DamnitDB.from_dir({str(d)!r})\n"
        "db.change_run_comment(1234, 2, 'from the original')\n"
        "db.add_standalone_comment(5.0, 'theirs')\n")
    keep_open.change_run_comment(1234, 3, "from ours")
    keep_open.close()
    df = Damnit(d).table()
    assert df["comment"].tolist() == ["first!", "from the original", "from ours"]
    assert [c["comment"] for c in DamnitDB.from_dir(d).standalone_comments()] == ["theirs", "beam down"]


def test_same_schema_as_original(tmp_path, damnit_oracle):
    theirs = tmp_path / "theirs"
    damnit_oracle.run_python("from pathlib import Path\nfrom damnit.backend.db import initialize_proposal\n"
                             f"initialize_proposal(Path({str(theirs)!r}), 1234)\n")
    ours = initialize_proposal(tmp_path / "ours", 1234)
    ours.close()

    def describe(path):
        conn = sqlite3.connect(path)
        objects = sorted(tuple(r) for r in conn.execute("SELECT type, name, tbl_name FROM sqlite_master"))
        cols = {name: [tuple(c)[1:] for c in conn.execute(f"PRAGMA table_info({name})")]
                for typ, name, _ in objects if typ == "table"}
        idx = {name: [tuple(c) for c in conn.execute(f"PRAGMA index_info({name})")]
               for typ, name, _ in objects if typ == "index"}
        fks = [tuple(r) for r in conn.execute("PRAGMA foreign_key_list(variable_tags)")]
        meta = dict(conn.execute("SELECT key, value FROM metameta"))
        return objects, cols, idx, fks, meta

    o_obj, o_cols, o_idx, o_fks, o_meta = describe(tmp_path / "ours" / "runs.sqlite")
    t_obj, t_cols, t_idx, t_fks, t_meta = describe(theirs / "runs.sqlite")
    assert (o_obj, o_cols, o_idx, o_fks) == (t_obj, t_cols, t_idx, t_fks)
    assert set(o_meta) == set(t_meta)
    assert o_meta["data_format_version"] == t_meta["data_format_version"] == 4
    assert o_meta["concurrent_jobs"] == t_meta["concurrent_jobs"] == 15
    # Both open each other's fresh database.
    with DamnitDB.from_dir(theirs) as db:
        assert db.metameta["proposal"] == 1234
    damnit_oracle.run_python("from damnit.backend.db import DamnitDB\n"
                             f"assert DamnitDB.from_dir({str(tmp_path / 'ours')!r}).metameta['proposal'] == 1234\n")


def test_original_table_with_fixed_column_names_fails_ours_works(tmp_path, damnit_oracle):
    d = tmp_path / "amore"
    db = initialize_proposal(d, 1234)
    db.set_variables(1234, 1, {"run": ReducedData(7.0), "proposal": ReducedData(1.0)}, start_time=START)
    db.close()
    out = damnit_oracle.run_json(ENCODE + f"\nfrom damnit import Damnit\nprint(json.dumps(attempt(Damnit({str(d)!r}).table)))")
    assert out == {"raised": "ValueError"}
    df = Damnit(d).table()
    assert df["run"].tolist() == [1] and df["var:run"].tolist() == [7.0] and df["var:proposal"].tolist() == [1.0]


# -- original → ours ----------------------------------------------------------------------------------

ORIGINAL_WRITER = r'''
import sys
from pathlib import Path
import numpy as np, xarray as xr
import matplotlib
matplotlib.use("Agg")
from matplotlib.figure import Figure
from damnit.backend.db import DamnitDB, ReducedData, initialize_proposal
from damnit.backend.user_variables import UserEditableVariable
from damnit.backend.combine import gather_all_fragments
from damnit.context import Cell, save_fragment

d = Path(sys.argv[1])
START = float(sys.argv[2])
initialize_proposal(d, 1234)
db = DamnitDB.from_dir(d)
db.update_computed_variables({
    "scalar": {"title": "Pulse energy", "description": "XGM", "tags": ["xgm", "fast"], "attributes": None, "type": None},
    "string": {"title": "State", "description": None, "tags": [], "attributes": None, "type": None},
    "darr": {"title": "Detector/Image", "description": "A DataArray", "tags": ["det"], "attributes": None, "type": None},
})
db.add_user_variable(UserEditableVariable("good", "Good run", "boolean"))
for run in (1, 2, 3):
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([1, run, 3])
    da = xr.DataArray(np.arange(6.0).reshape(2, 3) * run, dims=("x", "y"), coords={"x": [10, 20]}, name="det",
                      attrs={"units": "keV"})
    ds = xr.Dataset({"a/b": ("t", np.arange(4) + run), "c": ("t", np.ones(4))}, coords={"t": np.arange(4)})
    cells = {
        "start_time": Cell(np.float64(START + run)),
        "scalar": Cell(np.float64(run * 1.5), bold=True, background="#00ff00", units="mJ"),
        "integer": Cell(np.int64(run)),
        "flag": Cell(np.bool_(run % 2)),
        "string": Cell(f"run {run}"),
        "cplx": Cell(np.complex128(run + 1j)),
        "line": Cell(np.arange(300.0) * run),
        "image2d": Cell(np.random.default_rng(run).random((20, 30))),
        "cube": Cell(np.zeros((2, 2, 2))),
        "mean": Cell(np.arange(5.0) * run, summary="mean"),
        "darr": Cell(da),
        "unnamed": Cell(xr.DataArray(np.arange(4.0) * run, dims=["q"])),
        "dset": Cell(ds),
        "figure": Cell(fig),
        "with_preview": Cell(np.asarray(float(run)), preview=np.arange(5.0) * run),
        "summary_only": Cell(None, summary_value=99.0),
    }
    errors = {"failing": ValueError("it broke")}
    if run == 3:
        del cells["integer"]
    save_fragment(d, 1234, run, cells, errors, provenance="context.py")
gather_all_fragments(d)
# As read-context would: every variable of the context is defined (the original API needs that).
defs = {name: {"title": name, "description": None, "tags": [], "attributes": None, "type": None}
        for name in [*cells, "integer", "failing"] if name != "start_time"}
for name in ("scalar", "string", "darr"):
    defs.pop(name)
db.update_computed_variables(defs)
# A second fragment for run 2 replaces data by an error and an error by data.
save_fragment(d, 1234, 2, {"failing": Cell(np.float64(5.0))}, {"scalar": RuntimeError("second pass")},
              provenance="context.py")
gather_all_fragments(d)
db.change_run_comment(1234, 1, "first!")
db.set_variable(1234, 1, "good", ReducedData(True), provenance="manual-input")
db.add_standalone_comment(START, "beam down")
print("written")
'''


@pytest.fixture
def original_db(tmp_path, damnit_oracle) -> Path:
    d = tmp_path / "amore"
    damnit_oracle.run_python(ORIGINAL_WRITER.replace("sys.argv[1]", repr(str(d))).replace(
        "float(sys.argv[2])", repr(START)))
    return d


def test_we_read_the_original_database(original_db, damnit_oracle):
    theirs_before = oracle_probe(damnit_oracle, original_db)
    ours = ours_probe(original_db)  # opening it with ours (WAL on) must not change anything for them
    compare_probes(ours, theirs_before)
    theirs_after = oracle_probe(damnit_oracle, original_db)
    assert theirs_after == theirs_before

    r2 = ours["per_run"]["2"]["vars"]
    assert "scalar" not in ours["per_run"]["2"]["keys"] and r2["failing"]["read"] == 5.0
    r1 = ours["per_run"]["1"]["vars"]
    assert r1["scalar"]["read"] == 1.5 and r1["scalar"]["units"] == "mJ"
    assert r1["darr"]["read"]["dict"]["name"] == "det" and r1["darr"]["title"] == "Detector/Image"
    assert r1["unnamed"]["read"]["xarray"] == "DataArray"
    assert r1["figure"]["type_hint"] == "image" and r1["figure"]["read"]["shape"][2] == 4
    assert r1["mean"]["summary"] == 2.0
    assert r1["line"]["summary"]["shape"][0] == 2
    assert ours["table"]["frame"]["line"] == ["<sparkline>"] * 3
    assert ours["table"]["frame"]["flag"] == [1, 0, 1]


def test_our_read_reduced_matches_what_the_original_stored(original_db):
    """read_reduced on the original's run files gives the rows its combiner wrote (docs/spec.md "HDF5: from file to database")."""
    conn = sqlite3.connect(original_db / "runs.sqlite")
    conn.row_factory = sqlite3.Row
    for run in (1, 3):  # run 2 had a second fragment merged on top
        reduced = read_reduced(run_file_path(original_db, 1234, run))
        rows = {r["name"]: r for r in conn.execute("SELECT * FROM run_variables WHERE run=? AND name != 'comment'"
                                                   " AND name != 'good'", (run,))}
        assert set(reduced) == set(rows) | {"start_time"}
        for name, row in rows.items():
            red = reduced[name]
            probe_db = DamnitDB._variable_row(1234, run, name, red, "context.py", 0.0)
            value, max_diff, summary_type, summary_method, attributes = (
                probe_db[4], probe_db[6], probe_db[8], probe_db[9], probe_db[10])
            if isinstance(row["value"], bytes) and row["summary_type"] in ("numpy", "trendline"):
                np.testing.assert_array_equal(blob2numpy(value), blob2numpy(row["value"]))
            else:
                assert value == row["value"], name
            assert (max_diff, summary_type, summary_method) == (
                row["max_diff"], row["summary_type"], row["summary_method"]), name
            assert (json.loads(attributes) if attributes else None) == (
                json.loads(row["attributes"]) if row["attributes"] else None), name


def test_submit_fragment_merged_by_us(tmp_path, damnit_oracle):
    """A fragment from the original's damnit.submit() merged with our h5format into our run file."""
    d = build_our_db(tmp_path / "amore")
    out = damnit_oracle.run_python(
        "import numpy as np, xarray as xr, glob\n"
        "from damnit import submit\n"
        "from damnit.context import Cell\n"
        f"submit(1234, 1, {{'ext_value': Cell(np.float64(2.5), units='V'), 'scalar': np.float64(-1.0),"
        " 'ext_da': xr.DataArray(np.arange(3.0), dims=['e'], coords={'e': [1, 2, 3]}, name='v')},"
        f" provenance='ext-script', errors={{'string': RuntimeError('resubmitted')}}, damnit_dir={str(d)!r})\n"
        f"print(glob.glob({str(d / 'extracted_data' / '*.ready.h5')!r})[0])\n")
    fragment = Path(out.strip().splitlines()[-1])
    dst = run_file_path(d, 1234, 1)
    names, provenance = merge_fragment(fragment, dst)
    assert names == {"ext_value", "scalar", "ext_da", "string"} and provenance == "ext-script"
    with DamnitDB.from_dir(d) as db:
        db.set_variables(1234, 1, read_reduced(dst, names), provenance=provenance)
    with h5py.File(dst) as f:
        assert "string" not in f and f[".errors/string"].attrs["type"] == "RuntimeError"
        assert f["darr"].attrs["_damnit_objtype"] == "dataarray"  # untouched
    compare_probes(ours_probe(d), oracle_probe(damnit_oracle, d))
    rv = Damnit(d)[1]
    assert rv["ext_value"].read() == 2.5 and rv["ext_value"].units == "V"
    assert rv["scalar"].read() == -1.0 and rv["ext_da"].read().coords["e"].values.tolist() == [1, 2, 3]
    assert "string" not in rv.keys()
    strings = Damnit(d).table()["string"].tolist()
    assert strings[1:] == ["run 2", "run 3"] and strings[0] != strings[0]  # error → missing (NaN in a str column)
    prov = sqlite3.connect(d / "runs.sqlite").execute(
        "SELECT provenance FROM run_variables WHERE run=1 AND name='ext_value'").fetchone()[0]
    assert prov == "ext-script"


PIPELINE_CONTEXT = '''
import numpy as np
import xarray as xr
from damnit_ctx import Cell, Skip, Variable

@Variable(title="Number", units="mm", tags=["basic"])
def number(run, run_no: "meta#run_number"):
    """A number from the run number"""
    return run_no * 1.5

@Variable(title="Text")
def text(run, n: "var#number"):
    return f"n={n}"

@Variable(title="Line", summary="max")
def line(run, run_no: "meta#run_number"):
    return np.arange(100.0) * run_no

@Variable(title="Trend")
def trend(run, run_no: "meta#run_number"):
    return np.sin(np.arange(500.0) / 50) * run_no

@Variable(title="Image")
def image(run, run_no: "meta#run_number"):
    return np.random.default_rng(run_no).random((32, 32))

@Variable(title="Detector/DA", tags=["det"])
def da(run, run_no: "meta#run_number"):
    return xr.DataArray(np.arange(6.0).reshape(2, 3) * run_no, dims=("x", "y"), coords={"x": [1, 2]},
                        attrs={"units": "V"})

@Variable(title="DS")
def ds(run):
    return xr.Dataset({"a/b": ("t", np.arange(3)), "c": ("t", np.ones(3))})

@Variable(title="Complex")
def cplx(run, run_no: "meta#run_number"):
    return complex(run_no, 2)

@Variable(title="Fails")
def fails(run):
    raise ValueError("nope")

@Variable(title="Skipped")
def skipped(run):
    raise Skip("not today")

@Variable(title="Dependent")
def dependent(run, x: "var#fails"):
    return 1

@Variable(title="Fancy")
def fancy(run):
    return Cell(np.arange(5.0), summary_value=3.0, bold=True, background="#112233", preview=np.arange(3.0))

@Variable(transient=True)
def hidden(run):
    return 5
'''


def test_we_read_what_the_original_pipeline_produced(tmp_path, damnit_oracle):
    """`damnit init` + `reprocess --direct --mock` + `combiner now` by the original; read by ours."""
    d = tmp_path / "amore"
    ctx = tmp_path / "context.py"
    ctx.write_text(PIPELINE_CONTEXT)
    damnit_oracle.damnit("init", d, "--proposal", "1234", "--context", ctx, cwd=tmp_path)
    damnit_oracle.damnit("db-config", "context_python", damnit_oracle.python, cwd=d)
    damnit_oracle.damnit("reprocess", "1", "2", "--mock", "--direct", cwd=d)
    damnit_oracle.damnit("combiner", "now", d, cwd=d)

    theirs = oracle_probe(damnit_oracle, d)
    ours = ours_probe(d)
    assert ours["runs"] == [1, 2]
    compare_probes(ours, theirs)
    r2 = ours["per_run"]["2"]["vars"]
    assert r2["number"]["read"] == 3.0 and r2["number"]["units"] == "mm" and r2["number"]["title"] == "Number"
    assert r2["text"]["read"] == "n=3.0"
    assert r2["line"]["summary"] == 198.0
    assert r2["trend"]["summary"]["shape"][0] == 2  # trendline
    assert r2["da"]["read"]["dict"]["attrs"] == {"units": "V"} and r2["da"]["units"] == "V"
    assert r2["cplx"]["read"] == {"complex": [2.0, 2.0]}
    assert r2["fancy"]["summary"] == 3.0 and r2["fancy"]["preview_nofallback"]["array"] == [0.0, 1.0, 2.0]
    assert "fails" not in ours["per_run"]["2"]["keys"] and "hidden" not in ours["per_run"]["2"]["keys"]
    table = ours["table"]["frame"]
    assert table["image"] == ["<thumbnail>"] * 2 and table["trend"] == ["<sparkline>"] * 2
    assert table["fails"] == [{"none": True}] * 2

    # What our DB layer sees of their data: errors carried in attributes, tags synced.
    with DamnitDB.from_dir(d) as db:
        attrs = json.loads(db.conn.execute(
            "SELECT attributes FROM run_variables WHERE run=1 AND name='skipped'").fetchone()[0])
        assert attrs == {"error": "not today", "error_cls": "Skip"}
        dep = json.loads(db.conn.execute(
            "SELECT attributes FROM run_variables WHERE run=1 AND name='dependent'").fetchone()[0])
        assert dep["error_cls"] == "DependencyError"
        assert db.get_variables_by_tag("det") == ["da"]
        fancy = read_reduced(run_file_path(d, 1234, 1), ["fancy"])["fancy"]
        assert fancy.attributes == {"bold": True, "background": [17, 34, 51]}
        # and our updates of their database don't disturb them
        db.update_computed_variables({"number": {"title": "Number!", "description": "changed", "tags": ["basic"]}})
        db.change_run_comment(1234, 2, "ours")
    theirs_after = oracle_probe(damnit_oracle, d)
    assert theirs_after["per_run"]["2"]["vars"]["number"]["title"] == "Number!"
    assert theirs_after["table"]["frame"]["comment"][1] == "ours"


GROUPS_CONTEXT = '''
import numpy as np
from damnit_ctx import Group, Variable

@Group(tags="det")
class Det:
    @Variable(title="Row")
    def row(self, run):
        return np.arange(100.0).reshape(1, 100)

    @Variable(title="Total")
    def total(self, run, row: "self#row"):
        return float(row.sum())

@Variable(title="Top")
def top(run):
    return 1.0

hall = Det(name="hall.b")
station = Det()
'''


def test_group_titles_and_2d_thumbnails_reach_the_database_as_in_the_original(tmp_path, damnit_oracle):
    """The same context processed by the original and by us: variable titles (an explicit group name
    keeps its dots), ``table(with_titles=True)`` read by either API, and 300x300 thumbnails."""
    ctx = tmp_path / "context.py"
    ctx.write_text(GROUPS_CONTEXT)
    theirs = tmp_path / "theirs"
    damnit_oracle.damnit("init", theirs, "--proposal", "1234", "--context", ctx)
    damnit_oracle.damnit("db-config", "context_python", damnit_oracle.python, cwd=theirs)
    damnit_oracle.damnit("reprocess", "1", "--mock", "--direct", cwd=theirs)
    damnit_oracle.damnit("combiner", "now", theirs, cwd=theirs)
    ours = tmp_path / "ours"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AMORE_BROKER": "none", "MPLBACKEND": "Agg"}
    for args, cwd in ((["init", str(ours), "--proposal", "1234", "--context", str(ctx)], tmp_path),
                      (["reprocess", "1", "--mock", "--direct"], ours)):
        res = subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]

    def variables(d):
        conn = sqlite3.connect(d / "runs.sqlite")
        try:
            return sorted(conn.execute("SELECT name, title FROM variables"))
        finally:
            conn.close()

    assert variables(ours) == variables(theirs)
    assert ("hall.b.total", "hall.b/Total") in variables(ours) and ("station.row", "station/Row") in variables(ours)

    columns = "import json; from damnit import Damnit; print(json.dumps(list(Damnit({!r}).table(with_titles=True).columns)))"
    their_columns = damnit_oracle.run_json(columns.format(str(theirs)))
    assert damnit_oracle.run_json(columns.format(str(ours))) == their_columns
    assert list(Damnit(ours).table(with_titles=True).columns) == their_columns
    assert "hall.b/Total" in their_columns

    def thumbnail_size(d, name):
        conn = sqlite3.connect(d / "runs.sqlite")
        try:
            (blob,) = conn.execute("SELECT value FROM run_variables WHERE run=1 AND name=?", (name,)).fetchone()
        finally:
            conn.close()
        return Image.open(io.BytesIO(blob)).size

    for name in ("hall.b.row", "station.row"):
        assert thumbnail_size(ours, name) == thumbnail_size(theirs, name) == (300, 300)
