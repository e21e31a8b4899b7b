"""Per-run HDF5 files: layout, merge rules, atomic/locked writes, fragments, summaries for the DB."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import xarray as xr

from backend.storage.h5format import (
    delete_variable_from_all_runs,
    merge_fragment,
    read_provenance,
    read_reduced,
    run_file_path,
    write_results,
)
from backend.storage.records import VariableResult as VR
from tests.infra import REPO

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def dataarray():
    return xr.DataArray(np.arange(12.0).reshape(3, 4), dims=("x", "y"), coords={"x": [1, 2, 3]}, name="foo",
                        attrs={"units": "mm"})


def dataset():
    return xr.Dataset({"a/b": ("t", np.arange(5)), "c": ("t", np.ones(5)), "s": ((), 2.5)},
                      coords={"t": np.arange(5) * 2}, attrs={"source": "test"})


def all_kinds() -> list[VR]:
    return [
        VR("scalar", data=np.float64(3.5), summary=3.5,
           summary_attrs={"bold": True, "background": "#ff0000", "units": "eV"}),
        VR("integer", data=np.asarray(7), summary=7),
        VR("flag", data=np.bool_(True), summary=True),
        VR("string", data="héllo", summary="héllo"),
        VR("cplx", data=np.complex128(1 + 2j), summary=1 + 2j),
        VR("arr1d", data=np.arange(10.0), summary=np.vstack([np.arange(10.0), np.arange(10.0)]),
           summary_attrs={"max_diff": 9.0}),
        VR("arr2d", data=np.arange(20.0).reshape(4, 5), summary=PNG, summary_attrs={"max_diff": 19.0}),
        VR("arr3d", data=np.zeros((2, 3, 4), dtype=np.float32), summary="float32: (2, 3, 4)"),
        VR("mean", data=np.arange(4.0), summary=1.5, summary_attrs={"summary_method": "mean", "max_diff": 3.0}),
        VR("da", data=dataarray(), objtype="dataarray", summary=PNG, summary_attrs={"units": "mm"}),
        VR("ds", data=dataset(), objtype="dataset", summary="Dataset (0.00MB)"),
        VR("img", data=np.zeros((5, 6, 4), dtype=np.uint8), objtype="image", summary=PNG),
        VR("fig", data='{"data": [], "layout": {}}', objtype="PlotlyFigure", summary=PNG),
        VR("prev", data=np.asarray(5.0), preview=np.arange(6.0), summary=5.0),
        VR("prev_da", data=np.asarray(1.0), preview=xr.DataArray(np.arange(3.0), dims=["q"]),
           preview_objtype="dataarray", summary=1.0),
        VR("texts", data=np.array(["a", "bc"]), summary="2 strings"),
        VR("summary_only", summary=42.0),
        VR("bad", error="oops", error_cls="ValueError"),
        VR("grp.member", data=np.asarray(1), summary=1),
    ]


def test_layout_and_attributes(tmp_path):
    path = tmp_path / "p1234_r5.h5"
    assert write_results(path, all_kinds(), provenance="context.py")[0].name == "scalar"
    assert os.stat(path).st_mode & 0o777 == 0o666
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p1234_r5.h5.lock", "p1234_r5.h5"]
    with h5py.File(path) as f:
        assert dict(f.attrs) == {"provenance": "context.py"}
        assert set(f) == {".reduced", ".preview", ".errors", "scalar", "integer", "flag", "string", "cplx",
                          "arr1d", "arr2d", "arr3d", "mean", "da", "ds", "img", "fig", "prev", "prev_da",
                          "texts", "grp.member"}
        red = f[".reduced"]
        s = red["scalar"]
        assert s.dtype == np.float64 and s.shape == ()
        assert s.attrs["bold"] is np.True_ or s.attrs["bold"] == np.True_
        assert s.attrs["background"].dtype == np.uint8 and s.attrs["background"].tolist() == [255, 0, 0]
        assert s.attrs["units"] == "eV"
        assert red["integer"].dtype == np.int64 and red["flag"].dtype == bool
        assert h5py.check_string_dtype(red["string"].dtype).encoding == "utf-8"
        assert red["cplx"].dtype == np.complex128
        assert red["arr1d"].shape == (2, 10) and red["arr1d"].attrs["summary_type"] == "trendline"
        assert red["arr1d"].attrs["max_diff"].dtype == np.float64
        assert red["arr2d"].dtype == np.uint8 and red["arr2d"][()].tobytes() == PNG
        assert red["mean"].attrs["summary_method"] == "mean"
        assert "summary_type" not in red["scalar"].attrs and "bold" not in red["integer"].attrs
        assert red["summary_only"][()] == 42.0 and "summary_only" not in f

        assert f["scalar/data"][()] == 3.5 and f["string/data"].asstr()[()] == "héllo"
        assert f["cplx/data"][()] == 1 + 2j
        assert f["arr2d/data"].shape == (4, 5) and f["arr2d/data"].compression is None
        assert f["texts/data"].asstr()[:].tolist() == ["a", "bc"]
        assert f["img"].attrs["_damnit_objtype"] == "image" and f["img/data"].dtype == np.uint8
        assert f["fig"].attrs["_damnit_objtype"] == "PlotlyFigure"
        assert f["fig/data"][()].tobytes() == b'{"data": [], "layout": {}}'
        assert "_damnit_objtype" not in f["scalar"].attrs
        assert f[".preview/prev"][()].tolist() == list(range(6))
        assert f[".preview/prev_da"].attrs["_damnit_objtype"] == "dataarray"

        da = f["da"]
        assert da.attrs["_damnit_objtype"] == "dataarray"
        assert da["foo"].compression == "gzip" and da["foo"].compression_opts == 1 and da["foo"].shuffle
        assert da["x"].is_scale
        assert f["ds"].attrs["_damnit_objtype"] == "dataset" and "a_b" in f["ds"]
        # NetCDF dimension ids are file-wide
        dimids = [int(o.attrs["_Netcdf4Dimid"]) for g in ("da", "ds") for o in f[g].values()
                  if o.is_scale]
        assert len(dimids) == len(set(dimids))

        err = f[".errors/bad"]
        assert err.asstr()[()] == "oops" and err.attrs["type"] == "ValueError"

    # xarray reads the NetCDF groups back intact
    da = xr.load_dataarray(path, group="da", engine="h5netcdf")
    xr.testing.assert_equal(da, dataarray())
    assert da.name == "foo" and da.attrs["units"] == "mm" and da.coords["x"].values.tolist() == [1, 2, 3]
    ds = xr.load_dataset(path, group="ds", engine="h5netcdf")
    assert set(ds.data_vars) == {"a_b", "c", "s"} and ds.attrs["source"] == "test"
    assert float(ds["s"]) == 2.5
    # and so does the netCDF-C library
    import netCDF4
    with netCDF4.Dataset(path) as nc:
        assert nc["da"]["foo"].shape == (3, 4) and nc["ds"]["a_b"][:].tolist() == [0, 1, 2, 3, 4]


def test_unnamed_and_coord_named_dataarrays(tmp_path):
    path = tmp_path / "p1_r1.h5"
    unnamed = xr.DataArray(np.arange(3.0), dims=["x"])
    clash = xr.DataArray(np.arange(3.0), dims=["x"], coords={"x": [5, 6, 7]}, name="x")
    write_results(path, [VR("u", data=unnamed, objtype="dataarray"), VR("c", data=clash, objtype="dataarray")])
    with h5py.File(path) as f:
        assert "__xarray_dataarray_variable__" in f["u"] and "__xarray_dataarray_variable__" in f["c"]
    c = xr.load_dataarray(path, group="c", engine="h5netcdf")
    assert c.name == "x" and c.values.tolist() == [0.0, 1.0, 2.0]


def test_xarray_as_netcdf_bytes(tmp_path):
    da = dataarray()
    write_results(tmp_path / "f.h5", [VR("da", data=da.to_netcdf(engine="h5netcdf"), objtype="dataarray")])
    xr.testing.assert_identical(xr.load_dataarray(tmp_path / "f.h5", group="da", engine="h5netcdf"), da)


def test_merge_replaces_everything_under_a_name(tmp_path):
    path = tmp_path / "p1_r1.h5"
    write_results(path, [VR("x", data=np.arange(3.0), preview=np.arange(2.0), summary=1.0),
                         VR("keep", data=np.asarray(9), summary=9)], provenance="context.py")
    write_results(path, [VR("x", error="boom", error_cls="RuntimeError")], provenance="other")
    with h5py.File(path) as f:
        assert "x" not in f and "x" not in f[".reduced"] and "x" not in f[".preview"]
        assert f[".errors/x"].attrs["type"] == "RuntimeError"
        assert f["keep/data"][()] == 9 and f[".reduced/keep"][()] == 9
    assert read_provenance(path) == "context.py"  # set when the file was created
    write_results(path, [VR("x", data=dataarray(), objtype="dataarray", summary=2.0)])
    with h5py.File(path) as f:
        assert "x" not in f[".errors"] and f["x"].attrs["_damnit_objtype"] == "dataarray"
    # Replacing a NetCDF group by another keeps the file readable
    write_results(path, [VR("x", data=dataarray() * 2, objtype="dataarray", summary=3.0)])
    assert float(xr.load_dataarray(path, group="x", engine="h5netcdf").max()) == 22.0
    assert read_reduced(path)["x"].value == 3.0


def test_unstorable_value_becomes_that_variables_error(tmp_path):
    path = tmp_path / "p1_r1.h5"
    write_results(path, [VR("a", data=np.asarray(1.0), summary=1.0), VR("b", data=np.asarray(1.0))])
    stored = write_results(path, [VR("a", data=np.asarray(2.0), summary=2.0),
                                  VR("b", data=np.array([object(), 1], dtype=object)),
                                  VR("c", data="a\x00b", summary="a\x00b")])
    assert [r.error_cls for r in stored] == [None, "TypeError", "ValueError"]
    assert stored[1].error == "could not store the value: object arrays can't be stored in HDF5"
    assert stored[2].error.startswith("could not store the value: ")
    with h5py.File(path) as f:
        assert f["a/data"][()] == 2.0
        assert "b" not in f and "b" not in f[".reduced"] and "c" not in f and "c" not in f[".reduced"]
        assert f[".errors/b"].attrs["type"] == "TypeError"
    reduced = read_reduced(path)
    assert reduced["a"].value == 2.0
    assert reduced["b"].attributes["error_cls"] == "TypeError" and reduced["c"].value is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p1_r1.h5.lock", "p1_r1.h5"]
    with pytest.raises(ValueError, match="'a/b'"):
        write_results(path, [VR("a/b", data=np.asarray(1))])


def test_database_refusals_and_failures_keep_the_file_and_database_in_step(tmp_path):
    path = tmp_path / "p1_r1.h5"
    write_results(path, [VR("a", data=np.asarray(1.0), summary=1.0)])
    committed = []
    stored = write_results(path, [VR("a", data=np.asarray(2.0), summary=2.0), VR("b", data="x", summary="x")],
                           vet=lambda summaries: {"b": TypeError("nope")} if "b" in summaries else {},
                           commit=committed.append)
    assert (stored[1].error, stored[1].error_cls) == ("could not store the value in the database: nope",
                                                      "TypeError")
    assert committed[0]["a"].value == 2.0 and committed[0]["b"].attributes == {
        "error": "could not store the value in the database: nope", "error_cls": "TypeError"}
    assert read_reduced(path) == committed[0]

    def fail(summaries):
        raise RuntimeError("database is locked")

    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="database is locked"):
        write_results(path, [VR("a", data=np.asarray(3.0), summary=3.0)], commit=fail)
    assert path.read_bytes() == before  # the database was not written, so neither is the file
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p1_r1.h5.lock", "p1_r1.h5"]


def test_error_messages_with_nul_and_surrogates_are_kept_escaped(tmp_path):
    path = tmp_path / "p1_r1.h5"
    write_results(path, [VR("e", error="bad \udcff and \x00 here", error_cls="Weird\x00Error")])
    reduced = read_reduced(path)["e"]
    assert reduced.attributes == {"error": "bad \\udcff and \\x00 here", "error_cls": "Weird\\x00Error"}


def test_read_reduced_for_the_database(tmp_path):
    path = tmp_path / "p1_r1.h5"
    write_results(path, all_kinds())
    red = read_reduced(path)
    assert red["scalar"].value == 3.5 and type(red["scalar"].value) is float
    assert red["scalar"].attributes == {"bold": True, "background": [255, 0, 0], "units": "eV"}
    assert red["integer"].value == 7 and type(red["integer"].value) is int
    assert red["flag"].value is True
    assert red["string"].value == "héllo"
    assert red["cplx"].value == 1 + 2j
    assert red["arr1d"].summary_type == "trendline" and red["arr1d"].value.shape == (2, 10)
    assert red["arr1d"].max_diff == 9.0 and red["arr1d"].attributes == {}
    assert red["arr2d"].value == PNG and red["arr2d"].summary_type is None
    assert red["mean"].summary_method == "mean" and red["scalar"].summary_method == ""
    assert red["da"].attributes == {"units": "mm"}
    assert red["bad"].value is None and red["bad"].attributes == {"error": "oops", "error_cls": "ValueError"}
    assert "prev" in red and "texts" in red and "grp.member" in red
    assert set(read_reduced(path, ["scalar", "bad", "nope"])) == {"scalar", "bad"}


def test_merge_fragment_with_netcdf(tmp_path):
    dst = tmp_path / "p1_r1.h5"
    write_results(dst, [VR("da", data=dataarray(), objtype="dataarray", summary=1.0),
                        VR("old", data=np.asarray(1), summary=1)], provenance="context.py")
    frag = tmp_path / "p1_r1.abc.ready.h5"
    write_results(frag, [VR("ds", data=dataset(), objtype="dataset", summary="Dataset"),
                         VR("old", error="gone", error_cls="Skip"),
                         VR("da2", data=dataarray() + 1, objtype="dataarray", preview=np.arange(3.0))],
                  provenance="my-script")
    names, provenance = merge_fragment(frag, dst)
    assert names == {"ds", "old", "da2"} and provenance == "my-script"
    assert not frag.exists()
    with h5py.File(dst) as f:
        assert "old" not in f and f[".errors/old"].attrs["type"] == "Skip"
        assert f["da2"].attrs["_damnit_objtype"] == "dataarray"
        dimids = [int(o.attrs["_Netcdf4Dimid"]) for g in ("da", "ds", "da2") for o in f[g].values()
                  if o.is_scale]
        assert len(dimids) == len(set(dimids))
        # dimension scales attached inside the destination file
        assert f["da2/foo"].dims[0][0].name == "/da2/x"
    xr.testing.assert_equal(xr.load_dataset(dst, group="ds", engine="h5netcdf"),
                            dataset().rename_vars({"a/b": "a_b"}))
    assert xr.load_dataset(dst, group="ds", engine="h5netcdf")["a_b"].dims == ("t",)
    da2 = xr.load_dataarray(dst, group="da2", engine="h5netcdf")
    assert da2.dims == ("x", "y") and da2.coords["x"].values.tolist() == [1, 2, 3]
    import netCDF4
    with netCDF4.Dataset(dst) as nc:
        assert nc["da2"]["foo"].dimensions == ("x", "y")
        assert nc["ds"]["c"].dimensions == ("t",)

    # Into a missing destination: the fragment becomes the run file
    dst2 = tmp_path / "p1_r2.h5"
    frag2 = tmp_path / "p1_r2.x.ready.h5"
    write_results(frag2, [VR("v", data=np.asarray(3.0), summary=3.0)], provenance="ext")
    merge_fragment(frag2, dst2)
    assert read_provenance(dst2) == "ext" and read_reduced(dst2)["v"].value == 3.0
    assert os.stat(dst2).st_mode & 0o777 == 0o666


def test_delete_variable_from_all_runs(tmp_path):
    for run in (1, 2):
        write_results(run_file_path(tmp_path, 1, run), [VR("a", data=np.asarray(1), summary=1),
                                                        VR("b", error="x", error_cls="E")])
    assert delete_variable_from_all_runs(tmp_path, "b") == 2
    assert delete_variable_from_all_runs(tmp_path, "b") == 0
    with h5py.File(run_file_path(tmp_path, 1, 2)) as f:
        assert "b" not in f[".errors"] and "a" in f


WRITER = """
import sys, numpy as np
from backend.storage.h5format import write_results
from backend.storage.records import VariableResult as VR
path, wid = sys.argv[1], int(sys.argv[2])
for i in range(8):
    write_results(path, [VR(f"w{wid}_{i}", data=np.full(100, wid * 100 + i), summary=float(wid * 100 + i))])
"""


def test_concurrent_writers_of_one_run_lose_nothing(tmp_path):
    path = tmp_path / "extracted_data" / "p1_r1.h5"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w)], cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    red = read_reduced(path)
    assert {n: r.value for n, r in red.items()} == {f"w{w}_{i}": float(w * 100 + i)
                                                    for w in range(4) for i in range(8)}
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_rewrites_repack_the_file_and_keep_netcdf_intact(tmp_path):
    path = tmp_path / "p1_r1.h5"
    write_results(path, [VR("da", data=dataarray(), objtype="dataarray", summary=1.0),
                         VR("ds", data=dataset(), objtype="dataset", summary="x"),
                         VR("big", data=np.random.default_rng(0).random(200_000), summary=0.5)])
    size = path.stat().st_size
    for i in range(5):  # replacing data must not leave dead space behind
        write_results(path, [VR("big", data=np.random.default_rng(i).random(200_000), summary=float(i))])
    assert path.stat().st_size < size * 1.2
    assert read_reduced(path)["big"].value == 4.0
    xr.testing.assert_equal(xr.load_dataarray(path, group="da", engine="h5netcdf"), dataarray())
    xr.testing.assert_equal(xr.load_dataset(path, group="ds", engine="h5netcdf"),
                            dataset().rename_vars({"a/b": "a_b"}))
    write_results(path, [VR("da2", data=dataarray() * 3, objtype="dataarray")])
    import netCDF4
    with netCDF4.Dataset(path) as nc:
        assert nc["da"]["foo"].dimensions == ("x", "y") and nc["da2"]["foo"][:].max() == 33
        assert nc["ds"]["c"].dimensions == ("t",)
    with h5py.File(path) as f:
        assert f["da2/foo"].dims[0][0].name == "/da2/x" and f["da/foo"].dims[0][0].name == "/da/x"
        dimids = [int(o.attrs["_Netcdf4Dimid"]) for g in ("da", "ds", "da2") for o in f[g].values() if o.is_scale]
        assert len(dimids) == len(set(dimids))
        assert f.attrs["provenance"] == "context.py"


def test_unreadable_run_file_is_reported(tmp_path):
    path = tmp_path / "p1_r1.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(OSError, match=r"Cannot update .*p1_r1.h5: it is not a readable HDF5 file.*Move it away"):
        write_results(path, [VR("a", data=np.asarray(1.0))])
    assert path.read_bytes() == b"not hdf5 at all"


def test_stale_temp_files_of_a_dead_writer_are_removed(tmp_path):
    path = tmp_path / "p1_r1.h5"
    stale = tmp_path / ".p1_r1.h5.abc123.tmp"
    stale.write_bytes(b"half-written")
    other_run = tmp_path / ".p1_r10.h5.abc123.tmp"
    other_run.write_bytes(b"someone else's")
    write_results(path, [VR("a", data=np.asarray(1.0), summary=1.0)])
    assert not stale.exists() and other_run.exists()


KILLED_WRITER = """
import sys
import numpy as np
from backend.storage import h5format
from backend.storage.records import VariableResult

def hang(*args, **kwargs):  # the writer is killed while the temporary copy is being written
    print("writing", flush=True)
    import time
    time.sleep(600)

h5format.write_netcdf_group = hang
h5format.write_results(sys.argv[1], [VariableResult("big", data=np.ones(1_000_000), summary=1.0),
                                     VariableResult("da", data=__import__("xarray").DataArray([1]),
                                                    objtype="dataarray")])
"""


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "extracted_data" / "p1_r1.h5"
    write_results(path, [VR("a", data=np.asarray(1.0), summary=1.0)])
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert writer.stdout.readline() == "writing\n"
        temps = [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
        assert len(temps) == 1 and temps[0].stat().st_size > 8_000_000  # the new data, half-way
    finally:
        writer.kill()
        writer.wait()
    assert temps[0].exists()  # SIGKILL: nothing could clean up

    write_results(path, [VR("b", data=np.asarray(2.0), summary=2.0)])
    assert sorted(p.name for p in path.parent.iterdir()) == [".p1_r1.h5.lock", "p1_r1.h5"]
    assert sorted(read_reduced(path)) == ["a", "b"]
