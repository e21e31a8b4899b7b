"""The pure parts of what people see: the server's clock on the command line, the theme a session
gets, the big screen's URL settings and type sizes, booleans and images as the display layer draws them."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest
import xarray as xr

from app.display import plots as vp
from app.display import theme
from app.display.formatting import format_summary
from app.display.run_contents import StoredVariable, holds_booleans
from app.pages.bigscreen import ScreenSettings, _value_sizes


def test_timezone_on_the_command_line_is_checked_and_named(monkeypatch, capsys, tmp_path):
    from app.config import ServerConfig, zone_label
    from app.server import serve

    with pytest.raises(SystemExit) as exit:
        serve.main(["--timezone", "Mars/Olympus_Mons", str(tmp_path)])
    assert exit.value.code == 2
    assert "--timezone: unknown time zone 'Mars/Olympus_Mons'" in capsys.readouterr().err
    cfg = ServerConfig(timezone="Asia/Tokyo")
    assert zone_label(cfg.tz) == "Asia/Tokyo"
    assert any("times shown in Asia/Tokyo" in line for line in serve.startup_notes(cfg, 5006))
    assert any("--timezone ZONE" in line for line in serve.startup_notes(ServerConfig(), 5006))


def test_theme_from_the_url_then_the_browser_then_the_default():
    cookies = {theme.COOKIE: "dark"}
    assert theme.choose({}, {}) == (theme.LIGHT, False)
    assert theme.choose({}, cookies) == (theme.DARK, False)  # the browser's remembered choice
    assert theme.choose({"theme": [b"light"]}, cookies) == (theme.LIGHT, True)  # the URL wins
    assert theme.choose({"theme": [b"default"]}, {}) == (theme.LIGHT, True)  # Panel's name for light
    assert theme.choose({"theme": [b"<script>"]}, {theme.COOKIE: "nonsense"}) == (theme.LIGHT, False)
    # A wall display: dark unless its URL says otherwise, whatever the browser remembers.
    assert theme.choose({}, {theme.COOKIE: "light"}, theme.DARK, remembered=False) == (theme.DARK, False)


def test_big_screen_settings_come_from_the_url():
    s = ScreenSettings.from_args({"vars": [b"a, b,,c"], "plots": [b"img"], "interval": [b"1"], "old": [b"nan"]})
    assert s.variables == ("a", "b", "c") and s.plots == ("img",)
    assert s.interval_s == 3 and s.old_after_min == 60  # at least 3 s; nonsense falls back to the default
    assert ScreenSettings.from_args({"interval": [b"x"]}).interval_s == 12
    assert ScreenSettings.from_args(None) == ScreenSettings()


def test_big_screen_values_fit_their_column():
    name, sizes = _value_sizes(8, ["40", "9331.6582 eV"])
    value_vh = float(sizes[0].split("vh")[0].removeprefix("min("))
    assert 8 * (1.75 * value_vh + 1) <= 82  # eight values fit the column's height ...
    assert value_vh * 0.72 >= 3  # ... with digits at least 3 % of the screen's height tall
    assert float(sizes[1].split(", ")[1].removesuffix("vw)")) * 0.6 * 12 <= 25.01  # and the longer one its width
    assert float(name.removesuffix("vh")) == pytest.approx(value_vh / 2, abs=0.01)


def test_booleans_are_true_and_false_where_the_table_keeps_0_and_1():
    assert format_summary(1, boolean=True) == "true" and format_summary(0.0, boolean=True) == "false"
    assert format_summary(1) == "1" and format_summary(2, boolean=True) == "2"
    assert format_summary(1.5 - 2j, "V") == "1.5-2j V"
    assert holds_booleans("boolean", None)
    assert holds_booleans(None, StoredVariable("flag", dtype="b1"))
    assert not holds_booleans(None, StoredVariable("n", dtype="i8"))


def _hook_figure(element):
    """The Bokeh figure HoloViews builds for ``element`` (hooks applied)."""
    import holoviews as hv

    return hv.renderer("bokeh").get_plot(element).state


def test_images_get_square_pixels_or_their_coordinates_spacing():
    img = np.zeros((48, 64))
    fig = _hook_figure(vp.image_element(vp.Image2D.from_array(img)))
    assert fig.match_aspect and fig.aspect_scale == 1 and fig.y_range.flipped  # row 0 on top, like a camera
    # Coordinates on both axes in the same units (or both without): drawn to scale, one unit as long on both.
    da = xr.DataArray(img, dims=["y", "x"], coords={"y": np.arange(48) * 2.0, "x": np.arange(64) * 0.5})
    fig = _hook_figure(vp.dataarray_element(da))
    assert fig.match_aspect and fig.aspect_scale == 1 and not fig.y_range.flipped  # as xarray draws it
    da.x.attrs["units"] = da.y.attrs["units"] = "mm"
    assert _hook_figure(vp.dataarray_element(da)).aspect_scale == 1
    # Units that differ (x every 0.5 mm, y every 2 eV) cannot be compared: square pixels then, one y unit a
    # quarter as tall as an x unit is wide.
    da.y.attrs["units"] = "eV"
    assert _hook_figure(vp.dataarray_element(da)).aspect_scale == pytest.approx(4.0)
    del da.coords["y"]  # coordinates on one axis only: square pixels too
    assert _hook_figure(vp.dataarray_element(da)).aspect_scale == pytest.approx(2.0)
    wide = vp.Image2D.from_array(np.zeros((10, 2000)))
    assert wide.elongated and not vp.Image2D.from_array(img).elongated  # DAMNIT stretches > 4:1 images
    assert not _hook_figure(vp.image_element(wide, stretch=True)).match_aspect


def test_two_d_values_as_lines_one_per_row():
    img = vp.Image2D.from_array(np.arange(12.0).reshape(3, 4), title="t")
    lines = vp.lines_element(img)
    assert len(lines) == 3 and list(lines.keys()) == [0, 1, 2]
    assert list(lines[2].dimension_values(1)) == [8.0, 9.0, 10.0, 11.0]
    many = vp.lines_element(vp.Image2D.from_array(np.zeros((500, 10))), max_lines=100)
    assert len(many) == 100


def test_stored_figures_are_shown_pixel_for_pixel():
    from io import BytesIO

    from PIL import Image

    rgba = np.zeros((200, 400, 4), np.uint8)
    rgba[:100, :, 0] = 255
    rgba[100:, :, 2] = 255
    rgba[..., 3] = 255
    view = vp.plot_value(rgba, title="<b>fig</b>", objtype="image")
    image = next(o for o in view.objects if isinstance(o, vp.StoredImage))
    assert (image.natural_width, image.natural_height) == (400, 200)
    png = Image.open(BytesIO(__import__("base64").b64decode(image.src.split(",", 1)[1])))
    assert np.array_equal(np.asarray(png), rgba)  # the very pixels, upright
    assert "<b>" not in view.objects[0].get_root().text  # the title as text
    wall = vp.plot_value(rgba, objtype="image", style=vp.PlotStyle(height=None, controls=False, titles=False))
    assert isinstance(wall, vp.StoredImage) and wall.fill


def test_zero_d_dataarray_is_a_formatted_value():
    view = vp.plot_value(xr.DataArray(np.float64(2.5), attrs={"units": "mJ"}))
    assert "2.5000 mJ" in view.get_root().text


@pytest.mark.parametrize("shape, frames, kind", [((3, 4, 5, 6), 12, hv.Image), ((2, 3, 4, 5, 6), 24, hv.Image),
                                                 ((4, 5, 6), 4, hv.Image), ((2, 5, 8, 8, 3), 10, hv.RGB)])
def test_values_of_more_than_three_dimensions_are_frames_not_a_recursion(shape, frames, kind):
    """4-D and higher: the leading axes become one frame axis (a map of maps made HoloViews recurse)."""
    element = vp.array_element(np.arange(np.prod(shape), dtype=float).reshape(shape))
    assert isinstance(element, hv.HoloMap) and len(element) == frames and isinstance(element.last, kind)
    first = np.asarray(element[0].dimension_values(2 if kind is hv.Image else 0, flat=False))
    assert first.size and np.isfinite(first).all()


def test_train_id_axes_ask_for_few_ticks_so_ten_digit_labels_do_not_collide():
    """The run panel is ~400 px wide: Bokeh's default of 6+ ticks put 1000800000, 1000800005, ... on
    top of each other. Small numbers keep the default."""
    from bokeh.models import Plot

    def ticker(coords):
        da = xr.DataArray(np.random.default_rng(0).random(40), dims=["trainId"], coords={"trainId": coords})
        (plot,) = vp.plot_value(da, title="t").get_root().select({"type": Plot})
        return plot.xaxis[0].ticker, type(plot.xaxis[0].formatter).__name__

    ticks, formatter = ticker(np.arange(1000800000, 1000800040))
    assert ticks.desired_num_ticks == vp.LONG_LABEL_TICKS == 3 and formatter == "PrintfTickFormatter"
    assert ticker(np.arange(40))[0].desired_num_ticks == 6  # Bokeh's default
