"""The escaping layer (app/display/text.py) on its own, and the plot helpers that use it: hostile names
become text, never markup, TeX or a format string (the browser side: browser/test_hostile_payloads.py)."""

from __future__ import annotations

import html

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest
import xarray as xr
from bokeh.models import Axis

from app.display.plots import dataframe_view, plot_value
from app.display.text import (
    WORD_JOINER,
    escape,
    plot_name,
    plot_text,
    plot_title,
    safe_options,
    safe_table,
    safe_text,
)

IMG = '<img src=x onerror=alert("x")>'


def test_escape_and_safe_text_stay_text_on_update():
    assert escape('"\'<>&') == "&quot;&#x27;&lt;&gt;&amp;"
    assert escape(None) == ""
    pane = safe_text(IMG)
    model = pane.get_root()
    # Panel's HTML model carries the markup escaped once more (its view decodes it): decoded, it must
    # still be the text escaped.
    assert "<img" not in html.unescape(model.text) and "&lt;img" in html.unescape(model.text)
    pane.object = "<script>alert(1)</script>"
    assert html.unescape(model.text) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert pane.styles["overflow-wrap"] == "anywhere"  # a 5000-character word wraps


def test_safe_options_escapes_labels_not_values():
    assert safe_options({IMG: "v1"}) == {escape(IMG): "v1"}
    assert safe_options([IMG]) == {escape(IMG): IMG}


def test_safe_table_renames_fields_and_escapes_titles():
    frame = pd.DataFrame({IMG: [1, 2], "a.b": ["x", "y"], ("t", "u"): [3, 4]})
    frame.index.name = "<b>idx</b>"
    shown, titles = safe_table(frame)
    assert dataframe_view(frame).objects[1].titles == titles
    assert list(shown.columns) == ["c0", "c1", "c2"] and shown.index.name == "index"
    assert titles == {"index": "&lt;b&gt;idx&lt;/b&gt;", "c0": escape(IMG), "c1": "a.b", "c2": "t / u"}
    assert list(frame.columns)[0] == IMG  # the caller's frame is not changed
    multi = pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["r", None]))
    shown, titles = safe_table(multi)
    assert list(shown.index.names) == ["index0", "index1"]
    assert titles["index0"] == "r" and titles["index1"] == "index"


@pytest.mark.parametrize("text", ["$$x^2$$", r"a \(x\) b", r"\[y\]", "$$a$$ and $$b$$"])
def test_plot_text_is_never_tex(text):
    shown = plot_text(text)
    assert shown.replace(WORD_JOINER, "") == text
    assert "$$" not in shown and "\\(" not in shown and "\\[" not in shown


def test_plot_title_doubles_braces_and_plot_name_drops_control_characters():
    assert plot_title("{x} {0} $$t$$") == "{{x}} {{0}} $" + WORD_JOINER + "$t$" + WORD_JOINER + "$"
    assert plot_name("a\x01b\x1bc\x7f") == "abc"
    assert plot_name("\x01") == "_"


def test_hostile_names_plot_as_written():
    """Titles, dimension names, units and coordinates from data: the plot is made, and Bokeh gets the
    text as written (braces kept, no TeX delimiter left)."""
    title = "{x} $$y$$ " + IMG
    da = xr.DataArray(np.arange(12.0).reshape(3, 4), dims=["d\x01{0}", "e"], name="n\x1b$$z$$",
                      attrs={"units": "$$u$$"})
    for value in (np.arange(5.0), np.ones((4, 5)), da, da[0]):
        models = plot_value(value, title=title).get_root().references()
        texts = [m.text for m in models if type(m).__name__ == "Title" and m.text]
        labels = [str(m.axis_label) for m in models if isinstance(m, Axis) and m.axis_label]
        assert any("{x}" in t and IMG in t for t in texts), texts
        assert labels and all("$$" not in t for t in texts + labels), texts + labels


def test_summary_title_keeps_braces():
    curve = hv.Curve(([0, 1], [1, 2])).opts(title=plot_title("{label} {x}"))
    fig = hv.render(curve, backend="bokeh")
    assert fig.title.text == "{label} {x}"


def test_frames_keep_their_widget_and_its_label_is_text():
    """A 3-D value's frames: the widget is shown with the plot; Panel's slider puts its label into HTML,
    so a frame dimension named like markup is escaped there (a list of string frames draws it as text)."""
    numeric = xr.DataArray(np.arange(60.0).reshape(3, 4, 5), dims=[IMG, "y", "x"], coords={IMG: [0.5, 1.5, 2.5]})
    view = plot_value(numeric, title="t")
    slider = next(iter(view.select(pn.widgets.DiscreteSlider)))
    assert slider.label == escape(IMG)
    strings = xr.DataArray(np.ones((2, 4, 5)), dims=["shot", "y", "x"], coords={"shot": [IMG, "b"]})
    select = next(iter(plot_value(strings, title="t").select(pn.widgets.Select)))
    assert select.options == [IMG, "b"]
