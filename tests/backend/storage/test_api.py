"""Our read API (backend.storage.api) over a database and HDF5 files written by our storage layer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from backend.storage.api import Damnit, DataType, RunVariables, VariableData
from backend.storage.damnit_folder import initialize_proposal
from backend.storage.h5format import read_reduced, run_file_path, write_results
from backend.storage.records import ReducedData
from backend.storage.records import VariableResult as VR
from backend.storage.user_variables import UserEditableVariable

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
START = 1_700_000_000.0
PLOTLY_JSON = json.dumps({"data": [{"type": "scatter", "x": [1, 2], "y": [3, 4]}], "layout": {}})


def results_for(run: int) -> list[VR]:
    da = xr.DataArray(np.arange(6.0).reshape(2, 3) * run, dims=("x", "y"), coords={"x": [10, 20]},
                      name="det", attrs={"units": "keV", "long_name": "detector"})
    ds = xr.Dataset({"a/b": ("t", np.arange(4) + run), "c": ("t", np.ones(4))}, coords={"t": np.arange(4)})
    return [
        VR("start_time", data=np.float64(START + run), summary=START + run),
        VR("scalar", data=np.float64(run * 1.5), summary=run * 1.5, summary_attrs={"units": "mJ", "bold": True}),
        VR("integer", data=np.int64(run), summary=run),
        VR("string", data=f"run {run}", summary=f"run {run}"),
        VR("cplx", data=np.complex128(run + 1j), summary=complex(run, 1)),
        VR("line", data=np.arange(10.0) * run,
           summary=np.vstack([np.arange(10.0), np.arange(10.0) * run]), summary_attrs={"max_diff": 9.0 * run}),
        VR("image2d", data=np.ones((4, 5)) * run, summary=PNG, summary_attrs={"max_diff": 0.0}),
        VR("cube", data=np.zeros((2, 2, 2)), summary="float64: (2, 2, 2)"),
        VR("darr", data=da, objtype="dataarray", summary=PNG, summary_attrs={"units": "keV"}),
        VR("dset", data=ds, objtype="dataset", summary="Dataset (0.00MB)"),
        VR("rgba", data=np.full((3, 4, 4), 7, dtype=np.uint8), objtype="image", summary=PNG),
        VR("fig", data=PLOTLY_JSON, objtype="PlotlyFigure", summary=PNG),
        VR("with_preview", data=np.asarray(float(run)), preview=np.arange(5.0), summary=float(run)),
        VR("summary_only", summary=99.0),
        VR("numpy_summary", data=np.arange(3.0), summary=np.arange(3.0), summary_attrs={"summary_type": "numpy"}),
        VR("run", data=np.int64(run * 100), summary=run * 100),  # named like a fixed column
        VR("failing", error="it broke", error_cls="ValueError"),
    ]


@pytest.fixture
def db_dir(tmp_path):
    d = tmp_path / "amore"
    db = initialize_proposal(d, 1234)
    db.update_computed_variables({
        "scalar": {"title": "Pulse energy", "description": "XGM", "tags": ["xgm"]},
        "string": {"title": "State", "description": None},
        "run": {"title": "Run", "description": "a variable called run"},
    })
    db.add_user_variable(UserEditableVariable("good", "Good run", "boolean"))
    db.add_user_variable(UserEditableVariable("note", "Note", "string"))
    for run in (1, 2, 3):
        path = run_file_path(d, 1234, run)
        results = results_for(run)
        if run == 3:  # run 3 has no value for 'integer' at all
            results = [r for r in results if r.name != "integer"]
        write_results(path, results, provenance="context.py")
        db.set_variables(1234, run, read_reduced(path), provenance="context.py")
    db.change_run_comment(1234, 1, "first!")
    db.set_user_variable_value(1234, 1, "good", "yes")
    db.set_user_variable_value(1234, 2, "good", "no")
    db.ensure_run(1234, 4)  # pre-created, never taken
    db.close()
    return d


def test_open_by_path_and_proposal(db_dir, tmp_path, monkeypatch):
    assert Damnit(db_dir).proposal == 1234
    assert Damnit(str(db_dir)).proposal == 1234
    root = tmp_path / "exp"
    prop_dir = root / "SPB" / "202401" / "p001234" / "usr" / "Shared"
    prop_dir.mkdir(parents=True)
    (prop_dir / "amore").symlink_to(db_dir)
    monkeypatch.setenv("XFEL_DATA_ROOT", str(root))
    assert Damnit(1234).runs() == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="p009999|9999"):
        Damnit(9999)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Damnit(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="runs.sqlite"):
        Damnit(tmp_path)
    with pytest.raises(TypeError, match="Unsupported location"):
        Damnit(1.5)


def test_indexing(db_dir):
    db = Damnit(db_dir)
    assert isinstance(db[1], RunVariables) and db[1].run == 1 and db[1].proposal == 1234
    assert isinstance(db[1234, 2], RunVariables) and db[1234, 2].run == 2
    assert isinstance(db[1, "scalar"], VariableData)
    assert db[1234, 3, "scalar"].read() == 4.5
    assert db[1].file == db_dir / "extracted_data" / "p1234_r1.h5"
    with pytest.raises(KeyError, match="Unknown run 4"):
        db[4]  # pre-created runs aren't listed
    with pytest.raises(KeyError):
        db[99]
    with pytest.raises(TypeError):
        db["scalar"]
    with pytest.raises(KeyError, match="it failed: ValueError: it broke"):
        db[1, "failing"]
    with pytest.raises(KeyError, match="not found"):
        db[1, "nope"]
    assert repr(db) == "<Damnit database for p1234>"


def test_keys_and_titles(db_dir):
    rv = Damnit(db_dir)[1]
    expected = sorted(["start_time", "scalar", "integer", "string", "cplx", "line", "image2d", "cube", "darr",
                       "dset", "rgba", "fig", "with_preview", "summary_only", "numpy_summary", "run", "comment",
                       "good"])
    assert rv.keys() == expected
    assert "note" not in rv.keys() and "failing" not in rv.keys()
    titles = rv.titles()
    assert {"Timestamp", "Comment", "Pulse energy", "State", "Good run", "Run"} <= set(titles)
    assert "scalar" not in titles and "cube" in titles
    assert rv["Pulse energy"].name == "scalar" and rv["scalar"].title == "Pulse energy"
    assert rv["Timestamp"].read() == START + 1
    assert "State" in rv and "nope" not in rv
    assert "integer" not in Damnit(db_dir)[3].keys()


def test_read_every_kind(db_dir):
    rv = Damnit(db_dir)[2]
    assert rv["scalar"].read() == 3.0 and isinstance(rv["scalar"].read(), np.floating)
    assert rv["integer"].read() == 2
    assert rv["string"].read() == "run 2"
    assert rv["cplx"].read() == 2 + 1j
    np.testing.assert_array_equal(rv["line"].read(), np.arange(10.0) * 2)
    assert rv["cube"].read().shape == (2, 2, 2)
    darr = rv["darr"].read()
    assert isinstance(darr, xr.DataArray) and darr.name == "det" and darr.dims == ("x", "y")
    assert darr.attrs == {"units": "keV", "long_name": "detector"}
    np.testing.assert_array_equal(darr.values, np.arange(6.0).reshape(2, 3) * 2)
    dset = rv["dset"].read()
    assert isinstance(dset, xr.Dataset) and set(dset.data_vars) == {"a_b", "c"}
    assert not any(k.startswith("_damnit") for k in dset.attrs)
    assert dset["a_b"].values.tolist() == [2, 3, 4, 5]
    assert rv["rgba"].read().shape == (3, 4, 4)
    fig = rv["fig"].read()
    assert type(fig).__name__ == "Figure" and list(fig.data[0].y) == [3, 4]
    assert json.loads(rv["fig"].read(deserialize_plotly=False)) == json.loads(PLOTLY_JSON)
    assert rv["summary_only"].read() == 99.0
    assert "comment" not in rv.keys()  # no comment on run 2
    assert Damnit(db_dir)[1, "comment"].read() == "first!"
    assert Damnit(db_dir)[1, "good"].read() is True
    assert rv["good"].read() is False
    assert rv["run"].read() == 200


def test_type_hints_units_summary(db_dir):
    rv = Damnit(db_dir)[1]
    assert rv["darr"].type_hint() is DataType.DataArray
    assert rv["dset"].type_hint() is DataType.Dataset
    assert rv["rgba"].type_hint() is DataType.Image
    assert rv["fig"].type_hint() is DataType.PlotlyFigure
    assert rv["scalar"].type_hint() is None and rv["good"].type_hint() is None
    assert rv["scalar"].units == "mJ" and rv["darr"].units == "keV" and rv["integer"].units is None
    assert rv["scalar"].summary() == 1.5
    assert rv["cplx"].summary() == 1 + 1j
    line = rv["line"].summary()
    assert line.shape == (2, 10) and line[1, -1] == 9.0
    np.testing.assert_array_equal(rv["numpy_summary"].summary(), np.arange(3.0))
    assert rv["image2d"].summary() == PNG
    assert rv["string"].summary() == "run 1"


def test_preview_data(db_dir):
    rv = Damnit(db_dir)[3]
    np.testing.assert_array_equal(rv["with_preview"].preview_data(), np.arange(5.0))
    assert rv["with_preview"].preview_data(data_fallback=False).shape == (5,)
    np.testing.assert_array_equal(rv["line"].preview_data(), np.arange(10.0) * 3)
    assert rv["line"].preview_data(data_fallback=False) is None
    assert rv["image2d"].preview_data().shape == (4, 5)
    assert isinstance(rv["darr"].preview_data(), xr.DataArray)
    assert rv["rgba"].preview_data().shape == (3, 4, 4)
    assert rv["dset"].preview_data() is None
    assert rv["cube"].preview_data() is None  # 3-D but not RGB(A)
    assert rv["scalar"].preview_data() is None  # 0-d
    assert rv["string"].preview_data() is None
    assert type(rv["fig"].preview_data()).__name__ == "Figure"
    assert isinstance(rv["fig"].preview_data(deserialize_plotly=False), str)
    assert Damnit(db_dir)[1, "good"].preview_data() is None


def test_table(db_dir):
    df = Damnit(db_dir).table()
    assert list(df.columns[:4]) == ["proposal", "run", "start_time", "comment"]
    assert "var:run" in df.columns and df.columns.is_unique
    assert df["run"].tolist() == [1, 2, 3] and df["proposal"].tolist() == [1234] * 3
    assert df["var:run"].tolist() == [100, 200, 300]
    assert str(df["start_time"].dt.tz) == "Europe/Berlin"
    assert df["start_time"][0] == pd.Timestamp(START + 1, unit="s", tz="UTC")
    assert df["comment"].tolist()[0] == "first!" and pd.isna(df["comment"][1])
    assert df["scalar"].tolist() == [1.5, 3.0, 4.5] and df["scalar"].dtype == np.float64
    assert df["integer"][2] is pd.NA  # no row for run 3
    assert df["failing"].tolist() == [None, None, None]  # rows exist, value NULL (errors)
    assert df["note"].tolist() == [None, None, None]  # defined, never set
    assert df["good"].tolist()[:2] == [1, 0] and df["good"][2] is pd.NA
    assert df["line"].tolist() == ["<sparkline>"] * 3
    assert df["image2d"].tolist() == ["<thumbnail>"] * 3
    assert df["numpy_summary"].tolist() == ["<ndarray>"] * 3
    assert df["cplx"].tolist() == [1 + 1j, 2 + 1j, 3 + 1j]
    assert df["cube"][0] == "float64: (2, 2, 2)"
    assert "start_time" not in df.columns[4:]

    titled = Damnit(db_dir).table(with_titles=True)
    assert list(titled.columns[:4]) == ["Proposal", "Run", "Timestamp", "comment"]
    assert "Pulse energy" in titled.columns and "State" in titled.columns
    assert "Run (run)" in titled.columns and titled.columns.is_unique
    assert titled["Good run"].tolist()[:2] == [1, 0]


def test_table_comment_column_always_present(tmp_path):
    db = initialize_proposal(tmp_path, 77)
    db.set_variables(77, 1, {"x": ReducedData(1.0)}, start_time=START)
    df = Damnit(tmp_path).table()
    assert list(df.columns) == ["proposal", "run", "start_time", "comment", "x"]
    assert df["comment"].tolist() == [None]
    empty = initialize_proposal(tmp_path / "empty", 78)
    assert list(Damnit(empty.path.parent).table().columns) == ["proposal", "run", "start_time", "comment"]


def test_table_multiple_versions_and_proposals(tmp_path):
    db = initialize_proposal(tmp_path, 1)
    db.set_variables(1, 1, {"x": ReducedData(1.0)}, start_time=START)
    db.set_variables(2, 1, {"x": ReducedData(2.0)}, start_time=START + 1)
    db.conn.execute("INSERT INTO run_variables (proposal, run, name, version, value) VALUES (1, 1, 'x', 2, 5.0)")
    df = Damnit(tmp_path).table()
    assert df[["proposal", "run", "x"]].values.tolist() == [[1, 1, 5.0], [2, 1, 2.0]]


def test_table_newest_version_wins_in_one_proposal(tmp_path):
    db = initialize_proposal(tmp_path, 1)
    db.set_variables(1, 1, {"x": ReducedData(1.0), "y": ReducedData("a")}, start_time=START)
    db.set_variables(1, 2, {"x": ReducedData(3.0)}, start_time=START + 1)
    db.conn.execute("INSERT INTO run_variables (proposal, run, name, version, value) VALUES (1, 1, 'x', 3, 5.0)")
    db.conn.execute("INSERT INTO run_variables (proposal, run, name, version, value) VALUES (1, 1, 'x', 2, 4.0)")
    df = Damnit(tmp_path).table()
    assert df["x"].tolist() == [5.0, 3.0] and df["y"][0] == "a"


@pytest.mark.parametrize("parallel", [False, True])
def test_table_leaves_out_rows_without_proposal_run_or_name(tmp_path, monkeypatch, parallel):
    """Such rows (hand-made databases) are dropped after reading the whole table, by SQL otherwise;
    ``parallel``: read in rowid ranges on threads, as big tables are."""
    from backend.storage import arrow_reader

    monkeypatch.setattr(arrow_reader, "PARALLEL_MIN_ROWS", 1 if parallel else 10**9)
    db = initialize_proposal(tmp_path, 1)
    db.set_variables(1, 1, {"x": ReducedData(1.0), "y": ReducedData("a")}, start_time=START)
    db.set_variables(1, 2, {"x": ReducedData(3.0)}, start_time=START + 1)
    for row in ("NULL, 1, 'x'", "1, NULL, 'x'", "1, 1, NULL", "1, 2, NULL"):
        db.conn.execute(f"INSERT INTO run_variables (proposal, run, name, version, value) VALUES ({row}, 1, 9.0)")
    db.conn.commit()
    df = Damnit(tmp_path).table()
    assert list(df.columns) == ["proposal", "run", "start_time", "comment", "x", "y"]
    assert df["x"].tolist() == [1.0, 3.0] and df["y"][0] == "a"


def test_preview_plots(db_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rv = Damnit(db_dir)[1]
    lines = rv["line"].preview()  # 1-D: markers against the index
    assert lines[0].get_marker() == "o" and len(lines[0].get_xdata()) == 10
    image = rv["image2d"].preview()
    assert image.get_array().shape == (4, 5)
    assert rv["rgba"].preview().get_array().shape == (3, 4, 4)
    assert rv["darr"].preview() is not None  # xarray draws it
    with pytest.raises(ValueError, match="No preview available for 'dset'"):
        rv["dset"].preview()
    plt.close("all")


def test_run_without_hdf5_file_reads_from_database(db_dir):
    run_file_path(db_dir, 1234, 2).unlink()
    rv = Damnit(db_dir)[2]
    assert {"scalar", "string", "good"} <= set(rv.keys()) and "failing" not in rv.keys()
    assert rv["scalar"].read() == 3.0 and rv["Pulse energy"].units == "mJ"
    assert rv["scalar"].preview_data() is None and rv["scalar"].type_hint() is None
    assert Damnit(db_dir).table()["scalar"].tolist() == [1.5, 3.0, 4.5]
