"""The run table as the browser sees it, shared by all sessions of one proposal.

Holds the column definitions (titles, ``/`` groups, tooltips, tags, editability) and the rendered HTML
of the cells pages have shown (bounded, least recently used first out), invalidated cell by cell from
the source's changes. A page is rendered in one pass: its blobs (sparkline data, image sizes) are read
from the database together, and only for the cells on it.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from app.config import get_config, zone_label
from app.display.formatting import format_editable, format_time
from app.live.records import Change
from app.live.source import ProposalSource
from app.pages.run_table import cells

FIXED_COLUMNS = ("run", "start_time", "comment")  # always first, in this order
PAGE_SIZE = 50  # runs per page of the table
CELLS_PER_PAGE = 6000  # wide tables get shorter pages, so a page stays quick to send and draw
HTML_CACHE_SIZE = 200_000  # rendered cells kept per proposal (a page of a wide table is ~6000)
THUMBNAIL_CACHE_SIZE = 4096  # scaled thumbnails kept per proposal (browsers cache them too)


def page_size_for(n_columns: int) -> int:
    """Runs per page of a table showing ``n_columns`` columns."""
    return max(20, min(PAGE_SIZE, CELLS_PER_PAGE // max(1, n_columns)))


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    title: str  # full title (may contain '/')
    description: str
    tags: tuple[str, ...]
    editable_type: str | None  # 'comment' | user variable type | None
    units: str | None = None

    @property
    def group(self) -> str | None:
        head, sep, _ = self.title.partition("/")
        return head.strip() if sep else None

    @property
    def short_title(self) -> str:
        _, sep, tail = self.title.partition("/")
        return tail.strip() if sep else self.title

    @property
    def tooltip(self) -> str:
        """Title, units, description, name and tags: plain text (the table shows it escaped)."""
        parts = [self.title + (f" [{self.units}]" if self.units else "")]
        if self.description:
            parts.append(self.description)
        if self.name not in (self.title, *FIXED_COLUMNS):
            parts.append(f"name: {self.name}")
        if self.tags:
            parts.append("tags: " + ", ".join(self.tags))
        return "\n".join(parts)


class TableModel:
    """Per-source display state. Get it with ``get_table_model(source)``."""

    def __init__(self, source: ProposalSource):
        self.source = source
        self.tz = get_config().tz
        self.lock = threading.RLock()
        self._html: OrderedDict[tuple[int, str], str] = OrderedDict()
        self._png: OrderedDict[tuple[int, str], tuple[str, bytes]] = OrderedDict()  # -> (version, png)
        self._specs: dict[str, ColumnSpec] | None = None
        # Subscribed first, so the cache is already invalidated when sessions hear about a change.
        source.subscribe(self._on_change, session=False)

    def _on_change(self, change: Change) -> None:
        with self.lock:
            if change.reset:
                self._html.clear()
                self._png.clear()
            if change.variables or change.reset:
                self._specs = None
            if len(change.changed) > 100:  # e.g. the older runs of a big proposal arrived: look the cache over
                self._html = _without(self._html, change.changed)
                self._png = _without(self._png, change.changed)
            else:
                for key, names in change.changed.items():
                    for n in names:
                        self._html.pop((key, n), None)
                        self._png.pop((key, n), None)
            for key in change.processing:
                self._html.pop((key, "run"), None)
            if change.changed and self._specs is not None:
                known = set(self._specs)
                if not set().union(*change.changed.values()) <= known:
                    self._specs = None

    # -- columns ----------------------------------------------------------------------------------
    def specs(self) -> dict[str, ColumnSpec]:
        """All columns: fixed ones first, then variables in the source's order."""
        with self.lock:
            if self._specs is not None:
                return self._specs
        src = self.source
        specs = {
            "run": ColumnSpec("run", "Run", "Run number (⚙ processing, ⋮ queued, ⏳ waiting for Slurm, "
                                           "✕ processing failed: hover for why)", (), None),
            "start_time": ColumnSpec("start_time", "Timestamp", f"Start of the run ({zone_label(self.tz)})",
                                     (), None),
            "comment": ColumnSpec("comment", "Comment", "Free-text comment on the run (editable)", (), "comment"),
        }
        for name in src.column_names():
            v = src.variable(name)
            specs[name] = ColumnSpec(name, v.display_title, v.description or "", v.tags, v.type, src.units(name))
        with self.lock:
            self._specs = specs
        return specs

    def tags(self) -> list[str]:
        return sorted({t for s in self.specs().values() for t in s.tags})

    # -- cells ------------------------------------------------------------------------------------
    def cell_text(self, key: int, name: str) -> str:
        """The display string of one cell: HTML for computed columns, plain text for editable ones."""
        return self.render([key], [name])[name][0]

    def render(self, keys: Sequence[int], names: Sequence[str]) -> dict[str, list[str]]:
        """The display strings of a page: ``{name: [text per key]}``."""
        out: dict[str, list[str | None]] = {n: [None] * len(keys) for n in names}
        todo: list[tuple[int, int, str]] = []
        with self.lock:
            for i, key in enumerate(keys):
                for name in names:
                    got = self._html.get((key, name))
                    if got is None:
                        todo.append((i, key, name))
                    else:
                        self._html.move_to_end((key, name))
                        out[name][i] = got
        if todo:
            rendered = self._render_cells([(key, name) for _, key, name in todo])
            with self.lock:
                for (i, key, name), text in zip(todo, rendered):
                    out[name][i] = text
                    self._html[(key, name)] = text
                while len(self._html) > HTML_CACHE_SIZE:
                    self._html.popitem(last=False)
        return out  # type: ignore[return-value]

    def _render_cells(self, wanted: list[tuple[int, str]]) -> list[str]:
        src = self.source
        specs = self.specs()
        decoded = {kn: src.cell(*kn) for kn in wanted}
        trend = [kn for kn, c in decoded.items() if c is not None and c.blob_type == "trendline"]
        heads = [kn for kn, c in decoded.items() if c is not None and c.blob_type in ("png", "numpy")]
        blobs = src.blobs(trend)
        blobs.update(src.blobs(heads, head=cells.BLOB_HEAD))
        out = []
        for key, name in wanted:
            cell = decoded[(key, name)]
            if name == "run":
                out.append(cells.run_html(src.run_of(key)[1] if src.has_run(key) else key, src.processing_for(key),
                                          src.failure_for(key), src.waiting_for(key), self.tz))
            elif name == "start_time":
                out.append(format_time(src.start_time(key), self.tz))
            elif name == "comment" or (name in specs and specs[name].editable_type is not None):
                out.append(format_editable(cell.value if cell is not None else None))
            else:
                url = self.thumbnail_url(key, name, cell.timestamp) if cell is not None and \
                    cell.blob_type == "png" else None
                out.append(cells.cell_html(cell, blobs.get((key, name)), url))
        return out

    # -- thumbnails -------------------------------------------------------------------------------
    def thumbnail_url(self, key: int, name: str, timestamp: float | None) -> str:
        """Where the browser fetches a cell's thumbnail (``app/server/thumbnails.py``), relative to the
        page so it works under any prefix or proxy path; ``v`` changes with the value, so it can be
        cached for good."""
        return f"thumbnail/{self.source.token}/{key}/{quote(name, safe='')}.png?v={_version(timestamp)}"

    def thumbnail(self, key: int, name: str, *, full: bool = False) -> tuple[bytes, str] | None:
        """A cell's thumbnail scaled for the table (``full``: as stored), and its version (as in
        ``thumbnail_url``)."""
        cell = self.source.cell(key, name)
        if cell is None or cell.blob_type != "png":
            return None
        version = _version(cell.timestamp)
        ck = (key, name)
        if not full:
            with self.lock:
                got = self._png.get(ck)
                if got is not None and got[0] == version:
                    self._png.move_to_end(ck)
                    return got[1], version
        value = self.source.blobs([ck]).get(ck)
        if value is None:
            return None
        if full:
            return value, version
        png = cells.cell_png(value)
        with self.lock:
            self._png[ck] = (version, png)
            while len(self._png) > THUMBNAIL_CACHE_SIZE:
                self._png.popitem(last=False)
        return png, version


def _without(cache: OrderedDict, changed: dict[int, set[str]]) -> OrderedDict:
    return OrderedDict((kn, v) for kn, v in cache.items() if kn[1] not in changed.get(kn[0], ()))


def _version(timestamp: float | None) -> str:
    """Names one stored value in a URL: its write time (a new value, a new URL, so browsers may cache)."""
    return f"{zlib.crc32(repr(timestamp).encode()):08x}"


_MODELS_LOCK = threading.Lock()


def get_table_model(source: ProposalSource) -> TableModel:
    """The source's table model (one per proposal, dropped when the source is unloaded)."""
    with _MODELS_LOCK:
        model = source.caches.get("table_model")
        if model is None:
            model = source.caches["table_model"] = TableModel(source)
        return model
