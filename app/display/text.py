"""The one escaping rule: every string from a context file, a user, a run's data or a log reaches the
browser as text.

Panel renders HTML (``pn.pane.HTML``, ``Str`` in this version, ``Markdown``, ``Alert``, notifications,
``Card`` titles), and so do Choices.js option labels, Tabulator's ``html`` formatter, column titles and
header tooltips, and Bokeh string hover tooltips. Pages never put data into those directly: they use
``SafeText`` (a pane whose object is always escaped), ``escape`` for the few places that build markup,
``safe_options`` for option labels, ``safe_table`` for a data frame shown in a Tabulator and
``plot_title`` for a HoloViews title (a format string, where Bokeh would also read TeX),
``plot_text`` for an axis label or unit (a dimension's label) and ``plot_name`` for a HoloViews
dimension name.
docs/dashboard.md ("Security") lists every place and the test that tries it with hostile input.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

import panel as pn


def escape(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe inside attributes); None → ''."""
    return html.escape("" if value is None else str(value), quote=True)


class SafeText(pn.pane.HTML):
    """Text that is always shown as text: escaped on every update, line breaks kept."""

    def _transform_object(self, obj: Any) -> dict:
        return super()._transform_object(escape(obj))


def safe_text(text: Any = "", css_classes: list[str] | None = None, *, sizing_mode: str | None = None,
              width: int | None = None, **styles: str) -> SafeText:
    """A ``SafeText`` in the page's font with the given CSS styles; ``.object`` stays escaped. Line breaks
    are kept, and a word too long for the line (a 5000-character title) is broken instead of widening
    the page."""
    extra = {k: v for k, v in (("sizing_mode", sizing_mode), ("width", width)) if v is not None}
    return SafeText("" if text is None else str(text),
                    styles={"white-space": "pre-wrap", "overflow-wrap": "anywhere", **styles},
                    css_classes=css_classes or [], **extra)


def safe_options(options: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    """Options for a choice widget whose labels the browser renders as HTML (MultiChoice/Choices.js):
    labels escaped, values untouched."""
    items = options.items() if isinstance(options, Mapping) else ((o, o) for o in options)
    return {escape(label): value for label, value in items}


def safe_table(frame: Any) -> tuple[Any, dict[str, str]]:
    """A data frame whose column and index names come from data, ready for ``pn.widgets.Tabulator``
    (which renders column titles and header tooltips as HTML, and reads a field name with a dot as a
    path into the row): the columns renamed ``c0, c1, ...``, the index ``index`` (``index0, ...``
    for several levels), and the names as escaped ``titles``. The values are not copied."""
    shown = frame.copy(deep=False)
    names = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in frame.columns]
    shown.columns = [f"c{i}" for i in range(len(names))]
    levels = list(frame.index.names)
    fields = ["index"] if len(levels) == 1 else [f"index{i}" for i in range(len(levels))]
    shown.index = shown.index.set_names(fields)
    titles = {field: escape("index" if name is None else name) for field, name in zip(fields, levels)}
    titles.update({f"c{i}": escape(name) for i, name in enumerate(names)})
    return shown, titles


# Bokeh reads TeX between ``$$...$$``, ``\[...\]`` or ``\(...\)`` anywhere in a title or an axis label
# and draws it as mathematics (MathJax). A word joiner (invisible, no line break) after the first
# character of each delimiter keeps the text as it was written.
_TEX_DELIMITER = re.compile(r"\$\$|\\[][()]")
WORD_JOINER = "\u2060"


def plot_text(text: Any) -> str:
    """``text`` for a Bokeh title or axis label (a HoloViews dimension's label or unit): drawn as the
    text it is, never as TeX. Bokeh draws these on the canvas, so no HTML escaping is needed."""
    return _TEX_DELIMITER.sub(lambda m: m.group()[0] + WORD_JOINER + m.group()[1:],
                              "" if text is None else str(text))


def plot_title(text: Any) -> str:
    """``text`` as a HoloViews ``title`` option, which is a format string (``'{label} {group}'``): braces
    doubled, so a title such as ``{x}`` is shown as it is instead of failing the whole plot; never TeX
    (``plot_text``)."""
    return plot_text(text).replace("{", "{{").replace("}", "}}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def plot_name(text: Any) -> str:
    """``text`` as a HoloViews dimension name: without control characters, which HoloViews refuses in
    names (the plot would fail); the dimension's label keeps the text as it is."""
    return _CONTROL.sub("", "" if text is None else str(text)) or "_"
