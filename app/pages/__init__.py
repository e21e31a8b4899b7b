"""Page registry: each page is a module here with ``TITLE``, ``SLUG`` and ``view(session) -> Viewable``.

The app shell shows the pages in ``PAGE_ORDER`` that exist, as tabs; ``?page=<slug>`` opens one.
A page that fails to import is shown as an error tab (with the reason) rather than hiding the app.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

PAGE_ORDER = ["run_table", "inspect", "plots", "processing", "comments", "context_editor", "bigscreen"]


@dataclass
class PageInfo:
    slug: str
    title: str
    module: ModuleType | None
    error: str | None = None

    def view(self, session: Any):
        import panel as pn

        if self.module is None:
            return pn.pane.Alert(f"Page {self.slug!r} could not be loaded:\n\n```\n{self.error}\n```",
                                 alert_type="danger")
        return self.module.view(session)


def load_pages() -> list[PageInfo]:
    """Import the page modules that exist, in display order."""
    pages = []
    for name in PAGE_ORDER:
        modname = f"{__name__}.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # page not written yet
            pages.append(PageInfo(name, name.replace("_", " ").title(), None, traceback.format_exc()))
            continue
        except Exception:
            log.exception("Page %s failed to import", modname)
            pages.append(PageInfo(name, name.replace("_", " ").title(), None, traceback.format_exc()))
            continue
        pages.append(PageInfo(getattr(mod, "SLUG", name), getattr(mod, "TITLE", name), mod))
    return pages
