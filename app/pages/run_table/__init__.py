"""The run table page (``page.py``) and its parts: the Tabulator widget over the live table
(``tabulator.py``, browser code in ``js/``), the shared rendered model (``model.py``), cell HTML
(``cells.py``), row filters and sorting (``rows.py``) and export (``export.py``)."""

from __future__ import annotations

from app.pages.run_table.page import SLUG, TITLE, RunTablePage

PAGE = RunTablePage
__all__ = ["PAGE", "SLUG", "TITLE"]
