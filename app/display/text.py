"""The one escaping rule: every string from a context file, a user, a run's data or a log reaches the
browser as text.

Panel renders HTML (``pn.pane.HTML``, ``Str`` in this version, ``Markdown``, ``Alert``), and so do
Choices.js option labels, Tabulator's ``html`` formatter and header tooltips, and Bokeh hover tooltips.
Pages never put data into those directly: they use ``SafeText`` (a pane whose object is always escaped),
``escape`` for the few places that build markup, and ``safe_options`` for option labels.
docs/dashboard.md ("Security") lists every place and the test that tries it with hostile input.
"""

from __future__ import annotations

import html
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
    """A ``SafeText`` in the page's font with the given CSS styles; ``.object`` stays escaped."""
    extra = {k: v for k, v in (("sizing_mode", sizing_mode), ("width", width)) if v is not None}
    return SafeText("" if text is None else str(text), styles={"white-space": "pre-wrap", **styles},
                    css_classes=css_classes or [], **extra)


def safe_options(options: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    """Options for a choice widget whose labels the browser renders as HTML (MultiChoice/Choices.js):
    labels escaped, values untouched."""
    items = options.items() if isinstance(options, Mapping) else ((o, o) for o in options)
    return {escape(label): value for label, value in items}
