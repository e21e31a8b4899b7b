"""Unit tests of the dashboard pages' pure logic: value plots, context validation, run selections, logs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from app.actions.context_check import (
    ERROR,
    OK,
    WARNING,
    ContextChangedOnDisk,
    check_syntax,
    file_fingerprint,
    pyflakes_warnings,
    save_context,
)
from app.actions.processing_jobs import LogTail, runs_selected
from app.display import plots as vp
from app.display.formatting import format_value
from app.display.text import safe_text
from app.pages.plots import aligned_arrays, histogram, numeric_columns, scatter_data
from backend.base.runs import RunSpecError, format_runs

# -- value plots --------------------------------------------------------------------------------------


def test_downsample_1d_keeps_spikes_and_limits_points():
    x = np.arange(1_000_000)
    y = np.sin(x / 1000.0)
    y[123_457] = 99.0
    y[654_321] = -99.0
    xs, ys = vp.downsample_1d(x, y, max_points=10_000)
    assert len(xs) <= 10_000
    assert ys.max() == 99.0 and ys.min() == -99.0
    assert 123_457 in xs and 654_321 in xs
    assert np.all(np.diff(xs) > 0)  # still in order


def test_downsample_1d_leaves_short_data_alone_and_survives_nans():
    y = np.array([1.0, np.nan, 3.0])
    xs, ys = vp.downsample_1d(np.arange(3), y)
    assert len(xs) == 3
    y = np.full(50_000, np.nan)
    y[10] = 5
    xs, ys = vp.downsample_1d(np.arange(50_000), y, max_points=100)
    assert len(xs) <= 100 and np.nanmax(ys) == 5


def test_downsample_2d_block_means_and_keeps_rgb_dtype():
    img = np.arange(3000 * 2000, dtype=float).reshape(3000, 2000)
    small, f = vp.downsample_2d(img, max_pixels=1000)
    assert f == 3 and small.shape == (1000, 666)
    assert small[0, 0] == pytest.approx(img[:3, :3].mean())
    rgb = np.random.default_rng(0).integers(0, 255, (2400, 1200, 4), dtype=np.uint8)
    small, f = vp.downsample_2d(rgb, max_pixels=1000)
    assert f == 3 and small.dtype == np.uint8 and small.shape == (800, 400, 4)


def test_robust_clim_uses_1_and_99_percentiles():
    data = np.linspace(0, 100, 10_000)
    data[0], data[-1] = -1e9, 1e9  # outliers must not stretch the colour scale
    lo, hi = vp.robust_clim(data.reshape(100, 100))
    assert lo == pytest.approx(1, abs=0.05) and hi == pytest.approx(99, abs=0.05)
    assert vp.robust_clim(np.full((3, 3), np.nan)) is None
    lo, hi = vp.robust_clim(np.ones((4, 4)))
    assert lo < 1 < hi


def _bokeh_models(viewable):
    root = viewable.get_root()
    return {type(m).__name__ for m in root.references()}, root


@pytest.mark.parametrize("value, expect", [
    (np.arange(50.0), "GlyphRenderer"),
    (np.random.default_rng(1).random((40, 30)), "ColorBar"),
    (np.zeros((20, 30, 4), np.uint8), "StoredImage"),  # as stored: a PNG, not a resampled plot
    (xr.DataArray(np.arange(5.0), dims=["trainId"], coords={"trainId": np.arange(5) + 10**9}, name="e",
                  attrs={"units": "uJ"}), "GlyphRenderer"),
    (xr.DataArray(np.ones((4, 6)), dims=["y", "x"], coords={"x": np.linspace(0, 1, 6)}), "ColorBar"),
    (np.random.default_rng(2).random((3, 10, 12)), "Slider"),  # a stack: one image per slice
])
def test_plot_value_kinds(value, expect):
    kinds, _ = _bokeh_models(vp.plot_value(value, title="t", units="mm"))
    assert any(k.startswith(expect) for k in kinds), kinds


def test_plot_value_dataarray_axes_use_dims_coords_and_units():
    da = xr.DataArray(np.arange(5.0), dims=["trainId"], coords={"trainId": np.arange(5) + 10**9},
                      name="energy", attrs={"units": "uJ"})
    el = vp.dataarray_element(da)
    curve = el.Curve.I if hasattr(el, "Curve") else el
    assert curve.kdims[0].name == "trainId"
    assert curve.vdims[0].unit == "uJ"
    assert list(curve.dimension_values("trainId")) == list(np.arange(5) + 10**9)


def test_plot_value_dataset_offers_each_variable():
    ds = xr.Dataset({"a": ("t", np.arange(4.0)), "b": (("t", "u"), np.ones((4, 3)))})
    view = vp.plot_value(ds, title="ds")
    select = view.objects[0].objects[0]
    assert select.options == ["a", "b"]
    select.value = "b"
    kinds, _ = _bokeh_models(view)
    assert "ColorBar" in kinds


def test_plot_value_plotly_json_and_text_is_escaped():
    fig = '{"data": [{"type": "scatter", "y": [1, 2, 3]}], "layout": {}}'
    kinds, _ = _bokeh_models(vp.plot_value(fig, objtype="PlotlyFigure"))
    assert "PlotlyPlot" in kinds
    text = safe_text("<script>x</script>")
    _, root = _bokeh_models(text)
    assert "<script>" not in root.text
    text.object = "<b>bold?</b>"
    assert "<b>" not in text.get_root().text


def test_pandas_values_in_the_inspector(tmp_path):
    """DataFrames are stored as Parquet bytes (uint8): the inspector must show a table or a line, never
    plot those bytes."""
    import pandas as pd

    from app.display.run_contents import load_for_display, scan_run_file
    from backend.storage.damnit_folder import initialize_proposal
    from backend.storage.h5format import run_file_path, write_results
    from backend.storage.records import VariableResult

    frame = pd.DataFrame({"train": [10, 11, 12], "label": ["<b>a</b>", "b", "c"]})
    series = pd.Series([1.0, 4.0, 9.0], index=[10, 11, 12], name="sq")
    db_dir = tmp_path / "db"
    initialize_proposal(db_dir, 1234)
    path = run_file_path(db_dir, 1234, 1)
    parquet = {k: np.frombuffer(v.to_parquet(path=None, engine="pyarrow", index=None), dtype=np.uint8)
               for k, v in (("frame", frame), ("series", series.to_frame(name="sq")))}
    write_results(path, [
        VariableResult("frame", data=parquet["frame"], objtype="dataframe", summary="DataFrame (0.00MB)"),
        VariableResult("series", data=parquet["series"], objtype="series", summary=2.0)])
    stored = scan_run_file(path)
    assert stored["frame"].is_plottable and stored["frame"].size_text == "DataFrame"
    assert stored["series"].size_text == "Series"

    loaded = load_for_display(db_dir, 1, "frame")
    assert isinstance(loaded.value, pd.DataFrame) and loaded.objtype == "dataframe"
    view = vp.plot_value(loaded.value, objtype=loaded.objtype)
    table = view.objects[1]
    # Fields are c0, c1, ... (app/display/text.py safe_table), the names are the titles.
    assert table.titles["c1"] == "label" and table.disabled
    assert table.value["c1"].tolist() == ["<b>a</b>", "b", "c"]
    kinds, _ = _bokeh_models(vp.plot_value(load_for_display(db_dir, 1, "series").value, title="Squares"))
    assert "GlyphRenderer" in kinds  # a line, against the index
    kinds, _ = _bokeh_models(vp.plot_value(pd.Series(["x", "y"])))
    assert "DataTabulator" in kinds  # text values listed, not plotted


def test_large_image_is_reduced_before_it_reaches_the_browser():
    img = np.random.default_rng(3).random((4000, 4000)).astype(np.float32)
    _, root = _bokeh_models(vp.plot_value(img))
    sizes = [m.data["image"][0].size for m in root.references() if type(m).__name__ == "ColumnDataSource"
             and "image" in m.data]
    assert sizes and max(sizes) <= vp.MAX_PIXELS ** 2


def test_inspect_formats_values_like_the_table():
    assert format_value(3.0) == "3"
    assert format_value(3.14159, "mm") == "3.1416 mm"
    assert format_value(123456.0) == "1.235e+05"
    assert format_value(np.int64(7)) == "7"
    assert format_value("x", "mm") == "x"
    assert format_value(True) == "true" and format_value(np.bool_(False)) == "false"
    assert format_value(1.5 - 2j, "V") == "1.5-2j V"


# -- context validation -------------------------------------------------------------------------------


def test_syntax_error_reports_line():
    res = check_syntax("from damnit_ctx import Variable\n\n@Variable()\ndef f(run):\n    return (1\n")
    assert res.status == ERROR and res.lineno in (5, 6)
    assert "line" in res.summary


def test_pyflakes_ignores_annotation_names_but_reports_real_problems():
    code = ("import os\nfrom damnit_ctx import Variable\n\n@Variable()\n"
            "def f(run, x: var#y):\n    return undefined_thing\n")
    code = code.replace("var#y", "'var#y'")
    warnings = pyflakes_warnings(code + "\ndef g(a: meta, b: mymdc): return self\n")
    text = "\n".join(warnings)
    assert "'os' imported but unused" in text
    assert "undefined name 'undefined_thing'" in text
    assert "'meta'" not in text and "'mymdc'" not in text and "'self'" not in text


def test_save_detects_changes_on_disk(tmp_path):
    path = tmp_path / "context.py"
    path.write_text("a = 1\n")
    path.chmod(0o666)
    fp = file_fingerprint(path)
    fp2 = save_context(path, "a = 2\n", fp)
    assert path.read_text() == "a = 2\n" and fp2 == file_fingerprint(path)
    assert path.stat().st_mode & 0o777 == 0o666
    path.write_text("a = 3  # someone else\n")
    with pytest.raises(ContextChangedOnDisk):
        save_context(path, "a = 4\n", fp2)
    assert path.read_text() == "a = 3  # someone else\n"
    save_context(path, "a = 4\n", fp2, force=True)
    assert path.read_text() == "a = 4\n"


def test_engine_check_reports_context_errors_with_line_numbers(tmp_path):
    """The engine (ctxrunner ctx) catches what compile() cannot: e.g. a dependency on a missing variable."""
    from app.actions.context_check import check_context

    good = ("from damnit_ctx import Variable\n\n@Variable(title='A')\ndef a(run):\n    return 1\n")
    assert check_context(good, tmp_path).status == OK
    bad_import = "import no_such_module_xyz\n" + good
    res = check_context(bad_import, tmp_path)
    assert res.status == ERROR and res.lineno == 1 and "no_such_module_xyz" in res.message
    warn = "import os\n" + good
    assert check_context(warn, tmp_path).status == WARNING


# -- runs, jobs, logs ----------------------------------------------------------------------------------


def test_parse_run_spec():
    assert runs_selected("1-3, 7 9", []) == [1, 2, 3, 7, 9]
    assert runs_selected("all", [5, 3, 4]) == [3, 4, 5]
    assert runs_selected("4-4,4", []) == [4]
    for bad in ("", "1-", "x", "5-2", "1,,b"):
        with pytest.raises(RunSpecError):
            runs_selected(bad, [])


def test_format_runs():
    assert format_runs([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert format_runs([]) == ""


def test_log_tail_appends_notices_truncation_and_deletion(tmp_path):
    path = tmp_path / "r1-p1.out"
    tail = LogTail(path)
    assert not tail.poll() and tail.missing
    path.write_text("first\n")
    assert tail.poll() and tail.text == "first\n"
    with open(path, "a") as f:
        f.write("second\n")
    assert tail.poll() and tail.text == "first\nsecond\n"
    assert not tail.poll()
    path.write_text("new\n")  # truncated and rewritten
    assert tail.poll() and tail.text == "new\n"
    path.unlink()
    assert tail.poll() and "not found or deleted" in tail.text


# -- summary plot data ----------------------------------------------------------------------------------


def test_scatter_data_and_numeric_columns(tmp_path):
    from app.live.source import ProposalSource
    from backend.storage.synthetic import make_database, set_value

    db = make_database(tmp_path / "db", n_runs=3, n_vars=0, user_vars=False)
    for run, (energy, img, flag) in enumerate([(1.5, b"\x89PNG\r\n\x1a\n", 1), (None, b"\x89PNG\r\n\x1a\n", 0),
                                                (3.5, None, 1)], start=1):
        set_value(db, run, "energy", energy)
        set_value(db, run, "img", img)
        set_value(db, run, "flag", flag)
    source = ProposalSource(db, broker="none", start=False)
    assert set(numeric_columns(source)) == {"run", "start_time", "energy", "flag"}
    data = scatter_data(source, "run", "energy")
    assert list(data["run"]) == [1, 3] and list(data["y"]) == [1.5, 3.5]
    edges, density = histogram(np.array([1.0, 2.0, np.nan, 2.0]), 2)
    assert len(edges) == 3 and np.isclose((density * np.diff(edges)).sum(), 1)


def test_overlay_alignment_on_train_ids():
    y = xr.DataArray([1.0, 2.0, 3.0], dims=["trainId"], coords={"trainId": [10, 11, 12]})
    x = xr.DataArray([5.0, 6.0], dims=["trainId"], coords={"trainId": [11, 12]})
    xs, ys, _ = aligned_arrays(y, x)
    assert list(xs) == [5.0, 6.0] and list(ys) == [2.0, 3.0]
    xs, ys, label = aligned_arrays(y, None)  # per-train data of each run starts at 0: runs lie on top of each other
    assert list(xs) == [0, 1, 2] and label.startswith("trainId")
    xs, ys, label = aligned_arrays(y, None, relative=False)  # or on absolute train IDs
    assert list(xs) == [10, 11, 12] and label == "trainId"
    energy = xr.DataArray([1.0, 2.0], dims=["energy"], coords={"energy": [7.0, 8.0]})
    assert list(aligned_arrays(energy, None)[0]) == [7.0, 8.0]  # only train IDs are counted from the first
    with pytest.raises(ValueError, match="lengths differ"):
        aligned_arrays(np.arange(3.0), np.arange(4.0))
    with pytest.raises(ValueError, match="common"):
        aligned_arrays(y, xr.DataArray([1.0], dims=["trainId"], coords={"trainId": [99]}))


# -- standalone comments --------------------------------------------------------------------------------


def test_standalone_comments_add_edit_list(tmp_path):
    import datetime as dt

    from app.actions import edits
    from app.config import zone
    from app.live.session import SessionState
    from app.live.source import ProposalSource
    from app.pages.comments import comments_frame
    from backend.storage.database import DamnitDB
    from backend.storage.synthetic import make_database

    db = make_database(tmp_path / "db", n_runs=1, n_vars=0)
    session = SessionState(source=ProposalSource(db, broker="none", start=False), can_write=True)
    berlin = zone("Europe/Berlin")
    first = edits.add_standalone_comment(session, dt.datetime(2026, 3, 1, 10, 0, tzinfo=berlin).timestamp(),
                                         "  beam lost  ")
    second = edits.add_standalone_comment(session, dt.datetime(2026, 3, 1, 11, 30, tzinfo=berlin).timestamp(),
                                          "back")
    with pytest.raises(ValueError, match="empty"):
        edits.add_standalone_comment(session, 0.0, "   ")
    edits.edit_standalone_comment(session, first, "beam lost (vacuum)")
    with pytest.raises(KeyError):
        edits.edit_standalone_comment(session, 999, "nope")
    session.source.poll()
    df = comments_frame(session.source.comments, berlin)
    assert list(df["#"]) == [second, first]  # newest first
    assert list(df["Comment"]) == ["back", "beam lost (vacuum)"]
    assert df["Timestamp"].iloc[1] == "10:00:00 01/03/2026"  # shown in the server's zone, as the run table does
    assert comments_frame(session.source.comments, zone("UTC"))["Timestamp"].iloc[1] == "09:00:00 01/03/2026"
    with DamnitDB.from_dir(db) as writer:
        ts = {c["id"]: c["timestamp"] for c in writer.standalone_comments()}
    assert ts[first] == dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc).timestamp()


def test_variable_titles_in_choice_widgets_are_text():
    """MultiChoice (Choices.js) renders option labels as HTML, a native <select> as text: titles from a
    context file are escaped for the first and passed as they are to the second."""
    from types import SimpleNamespace

    from app.pages.processing import _computed_variables

    evil = "<img src=x onerror=alert(1)> & co"
    var = SimpleNamespace(name="x", title=evil, display_title=evil, user_editable=False)
    options = _computed_variables(SimpleNamespace(variables={"x": var}))
    assert list(options) == ["&lt;img src=x onerror=alert(1)&gt; &amp; co (x)"]
