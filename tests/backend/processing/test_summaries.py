"""Worker records -> VariableResult: transport decoding, summaries by type and precedence, attributes."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from backend.processing import summaries
from backend.storage.records import OBJTYPE_DATAARRAY, OBJTYPE_DATASET, OBJTYPE_IMAGE, OBJTYPE_PLOTLY
from tests.ctx_helpers import damnit_ctx  # noqa: F401  (puts ctxsupport on sys.path)

import ctx_storable  # noqa: E402  isort: skip

LIMIT = 1 << 30


def result(value, name="v", **cell_kw):
    """What the parent gets for a variable returning ``value`` (through the real worker conversion)."""
    cell = value if isinstance(value, damnit_ctx.Cell) else damnit_ctx.Cell(value, **cell_kw)
    record = ctx_storable.cell_record(name, cell, 0.1, LIMIT)
    return summaries.summarise(record)


def png_size(summary) -> tuple[int, int]:
    assert summaries.is_png(summary), summary
    return Image.open(io.BytesIO(summary.tobytes())).size


def test_scalars_strings_complex_bool_and_none():
    r = result(3.5)
    assert r.data == 3.5 and r.summary == 3.5 and r.summary.ndim == 0 and r.summary_attrs == {}
    assert result(7).summary.dtype.kind == "i"
    assert result("hello").summary == "hello" and result("hello").data == "hello"
    c = result(1 + 2j)
    assert c.summary == 1 + 2j and c.data.dtype == np.complex128
    assert result(True).summary == np.True_
    none = result(None)
    assert none.data is None and none.summary is None and not none.is_error
    assert result(None, summary_value=4).summary == 4


def test_one_dimensional_gives_trendline_keeping_extremes():
    y = np.sin(np.linspace(0, 20, 10_000))
    y[1234] = 50.0
    y[8765] = -40.0
    y[5000] = np.nan
    r = result(y)
    assert r.summary.dtype == np.float64 and r.summary.shape[0] == 2
    assert 100 <= r.summary.shape[1] <= 160
    assert r.summary_attrs["summary_type"] == "trendline"
    xs, ys = r.summary
    assert np.all(np.diff(xs) >= 0)
    assert 50.0 in ys and -40.0 in ys and 1234 in xs and 8765 in xs
    assert r.summary_attrs["max_diff"] == pytest.approx(90.0)
    short = result(np.array([3.0, 1.0, 2.0]))
    assert short.summary.tolist() == [[0, 1, 2], [3, 1, 2]]


def test_trendline_uses_dataarray_coordinates():
    t0 = np.datetime64("2025-01-01T00:00:00", "ns")
    da = xr.DataArray([1.0, 2.0, 3.0], dims=["time"],
                      coords={"time": t0 + np.arange(3) * np.timedelta64(1, "s")})
    r = result(da)
    assert r.objtype == OBJTYPE_DATAARRAY and isinstance(r.data, xr.DataArray)
    assert r.data.identical(da)
    assert np.allclose(np.diff(r.summary[0]), 1.0) and r.summary[0][0] == pytest.approx(1735689600.0)
    unsorted = xr.DataArray([1.0, 2.0, 3.0], dims=["x"], coords={"x": [3, 1, 2]})
    assert result(unsorted).summary.tolist() == [[1, 2, 3], [2, 3, 1]]


def test_two_dimensional_thumbnail():
    img = np.random.default_rng(0).normal(size=(40, 80))
    img[0, 0] = np.nan
    img[1, 1] = 1e9  # outlier must not flatten the colour scale (1-99 % quantiles)
    r = result(img)
    assert png_size(r.summary) == (300, 300)
    pixels = np.asarray(Image.open(io.BytesIO(r.summary.tobytes())))
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20


def rgb(summary) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(summary.tobytes())).convert("RGB")).astype(int)


@pytest.mark.parametrize("shape", [(1, 100), (100, 1), (2, 500), (100, 100), (1000, 1000), (3, 4), (500, 2)])
def test_two_dimensional_thumbnails_are_square_with_the_array_stretched_over_them(shape):
    """As DAMNIT: every 2-D array gives a 300x300 PNG filled edge to edge, so a single row is visible."""
    rows, cols = shape
    ramp = np.add.outer(np.arange(rows) * cols, np.arange(cols)).astype(float)  # increases along each row
    pixels = rgb(result(ramp).summary)
    assert pixels.shape == (300, 300, 3)
    assert not (pixels == 255).all(axis=-1).any()  # no white margin anywhere: the array fills the square
    dark, bright = pixels[5, 5], pixels[-5, -5]  # viridis: first value dark purple, last bright yellow
    assert dark.sum() < 250 and bright.sum() > 450
    if rows <= 300 and cols <= 300:  # enlarged by whole pixels: each array cell is one flat block
        block = pixels[: 300 // rows, : 300 // cols]
        assert (block == block[0, 0]).all()


def test_dataarray_thumbnails_follow_xarray_orientation():
    """xarray draws y increasing upwards: row 0 at the bottom unless the y coordinate descends; a
    descending x coordinate puts column 0 on the right."""
    a = np.zeros((4, 5))
    a[0, :] = 1.0  # first row bright
    a[1:, 0] = 0.5  # first column mid (except the bright corner)
    bright, purple = [253, 231, 36], [68, 1, 84]

    def corners(obj):
        px = rgb(result(obj).summary)
        return px[10, 150].tolist(), px[290, 150].tolist(), px[150, 10].tolist(), px[150, 290].tolist()

    top, bottom, left, right = corners(a)  # a numpy array: row 0 at the top, as printed
    assert top == bright and bottom == purple and left != purple and right == purple
    top, bottom, left, right = corners(xr.DataArray(a, dims=["y", "x"]))
    assert top == purple and bottom == bright and left != purple and right == purple
    top, bottom, left, right = corners(xr.DataArray(a, dims=["y", "x"], coords={"y": [3, 2, 1, 0]}))
    assert top == bright and bottom == purple
    top, bottom, left, right = corners(xr.DataArray(a, dims=["y", "x"], coords={"x": [9, 7, 5, 3, 1]}))
    assert top == purple and left == purple and right != purple
    # labels that are not numbers keep the index order
    top, bottom, *_ = corners(xr.DataArray(a, dims=["y", "x"], coords={"y": list("dcba")}))
    assert bottom == bright


def test_higher_dimensions_datasets_and_xarray_round_trip():
    r = result(np.zeros((2, 3, 4), dtype=np.float32))
    assert r.summary == "float32: (2, 3, 4)"
    ds = xr.Dataset({"a/b": ("x", np.arange(1000.0)), "c": 1.0},
                    attrs={"note": "hi", "arr": np.arange(3)})
    r = result(ds)
    assert r.objtype == OBJTYPE_DATASET and r.summary == "Dataset (0.01MB)"
    assert set(r.data.data_vars) == {"a_b", "c"} and r.data.attrs["note"] == "hi"
    named = xr.DataArray(np.arange(3), dims=["x"], name="SA1_XTD2_XGM/DOOCS/MAIN.x")
    assert result(named).data.name == "SA1_XTD2_XGM_DOOCS_MAIN.x"
    with pytest.raises(TypeError, match=r"attribute bad=\{'nested': 1\}"):
        result(xr.DataArray([1, 2], dims=["x"], attrs={"bad": {"nested": 1}}))


def test_matplotlib_figure_and_axes():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot([1, 3, 2])
    r = result(ax)
    assert r.objtype == OBJTYPE_IMAGE and r.data.dtype == np.uint8 and r.data.shape == (400, 600, 4)
    assert png_size(r.summary) == (300, 200)
    assert "max_diff" not in r.summary_attrs
    small = Figure(figsize=(1, 1), dpi=100)
    assert png_size(result(small).summary) == (100, 100)


def test_plotly_figure_json_and_thumbnail_without_kaleido():
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=np.arange(10), y=np.arange(10.0) ** 2))
    fig.add_trace(go.Heatmap(z=np.eye(3)))
    r = result(fig)
    assert r.objtype == OBJTYPE_PLOTLY and r.data.dtype == np.uint8
    import plotly.io as pio

    assert pio.from_json(r.data.tobytes().decode()).data[0].type == "scatter"
    w, h = png_size(r.summary)
    assert max(w, h) == 300


def test_summary_precedence_and_failing_numpy_summary(caplog):
    arr = np.array([1.0, 5.0, 3.0])
    assert result(arr, summary="max").summary == 5.0
    assert result(arr, summary="max").summary_attrs["summary_method"] == "max"
    assert result(arr, summary="max", summary_value="chosen").summary == "chosen"
    with caplog.at_level(logging.ERROR):
        r = result(arr, summary="no_such_function")
    assert "Failed to produce summary data for v" in caplog.text
    assert r.summary_attrs["summary_type"] == "trendline"  # fell through to the default


def test_preview_drives_default_summary():
    data = np.zeros((5, 6, 7))
    r = result(data, preview=np.arange(4.0))
    assert r.summary_attrs["summary_type"] == "trendline" and r.preview.tolist() == [0, 1, 2, 3]
    assert r.preview_objtype is None
    r = result(np.arange(3.0), preview=xr.DataArray(np.ones((4, 4)), dims=["a", "b"]))
    assert r.preview_objtype == OBJTYPE_DATAARRAY and summaries.is_png(r.summary)
    from matplotlib.figure import Figure

    r = result("text data", preview=Figure(figsize=(2, 2), dpi=50))
    assert r.preview_objtype == OBJTYPE_IMAGE and png_size(r.summary) == (100, 100)


def test_cell_attributes_and_max_diff():
    r = result(np.array([1.0, np.nan, 4.0]), bold=False, background="#102030", units="mJ")
    assert r.summary_attrs["bold"] == np.False_ and isinstance(r.summary_attrs["bold"], np.bool_)
    bg = r.summary_attrs["background"]
    assert bg.dtype == np.uint8 and bg.tolist() == [16, 32, 48]
    assert r.summary_attrs["units"] == "mJ"
    assert r.summary_attrs["max_diff"] == 3.0 and r.summary_attrs["max_diff"].dtype == np.float64
    assert "max_diff" not in result(np.array([True, False])).summary_attrs  # as the original
    assert "max_diff" not in result(np.array([2.0])).summary_attrs
    assert "max_diff" not in result(np.float64(2.0)).summary_attrs


def test_error_records():
    record = ctx_storable.error_record("v", ValueError("broken"), 0.2, "tb")
    r = summaries.summarise(record)
    assert r.is_error and r.error == "broken" and r.error_cls == "ValueError" and r.data is None


def test_size_limit():
    with pytest.raises(ctx_storable.ValueTooLarge, match="'big' returned 7.8 KiB, more than the limit"):
        ctx_storable.cell_record("big", damnit_ctx.Cell(np.zeros(1000)), 0.0, 4000)


def test_only_plain_objects_cross_to_the_parent():
    class Custom:
        pass

    da = xr.DataArray([1, 2], dims=["x"], attrs={"things": [Custom()]})
    with pytest.raises(TypeError, match=r"cannot store the xarray object returned by variable 'v': "
                       r"attrs.things holds a tests.backend.processing.test_summaries.Custom object"):
        result(da)


def test_pandas_values_become_parquet_with_damnit_summaries(monkeypatch):
    import pandas as pd

    frame = pd.DataFrame({"a": np.arange(1000.0), "b": ["x"] * 1000})
    r = result(frame)
    assert r.objtype == "dataframe" and r.data.dtype == np.uint8
    assert pd.read_parquet(io.BytesIO(r.data.tobytes())).equals(frame)
    assert r.summary.startswith("DataFrame (") and r.summary.endswith("MB)")
    assert "max_diff" not in r.summary_attrs

    s = result(pd.Series(np.arange(20.0) ** 2, name="sq"))
    assert s.objtype == "series" and s.summary.shape == (2, 20)  # a trendline of the values
    assert s.summary_attrs["max_diff"] == 361.0
    assert result(pd.Series(np.arange(4.0)), summary="sum").summary == 6.0
    assert result(pd.Series(["a", "b"])).summary in ("object: (2,)", "str: (2,)")

    # Without pyarrow in the context environment: that variable's error says what to install.
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda *a, **k: (_ for _ in ()).throw(
        ImportError("Unable to find a usable engine")))
    with pytest.raises(TypeError, match="needs pyarrow in the context environment"):
        result(frame, name="table")
