"""The dashboard's pages, in the order the app shows them as tabs (``?page=<slug>`` opens one).

Each page is a ``pn.viewable.Viewer`` built from the session's ``SessionState``. They are imported
here, so a page that fails to import stops the server at start-up with the error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import panel as pn

from app.live.session import SessionState
from app.pages import bigscreen, comments, context_editor, inspect, plots, processing, run_table


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    viewer: type[pn.viewable.Viewer]

    def view(self, session: SessionState) -> pn.viewable.Viewer:
        return self.viewer(session=session)


PAGES = [Page(m.SLUG, m.TITLE, m.PAGE) for m in
         (run_table, inspect, plots, processing, comments, context_editor, bigscreen)]


def load_pages() -> list[Page]:
    return list(PAGES)
