"""The run table as the browser sees it, shared by all sessions of one proposal.

Holds the column definitions (titles, `/` groups, tooltips, tags, editability) and a cache of the HTML
of each displayed cell, filled lazily (only cells on pages someone looks at are ever rendered) and
invalidated cell by cell from the source's changes.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

from app import table_format as fmt
from app.state import PNG_MAGIC, STATIC_COLUMNS, Change, ProposalSource

FIXED_COLUMNS = ("run", "start_time", "comment")  # always first, in this order
HIDDEN_ALWAYS = ("proposal", "added_at")
THUMBNAIL_CACHE_SIZE = 4096  # scaled thumbnails kept per proposal (browsers cache them too)


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
        self.lock = threading.RLock()
        self._html: dict[tuple[int, str], str] = {}
        self._png: OrderedDict[tuple[int, str], tuple[str, bytes]] = OrderedDict()  # -> (version, png)
        self._specs: dict[str, ColumnSpec] | None = None
        # Subscribed first, so the cache is already invalidated when sessions hear about a change.
        source.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        with self.lock:
            if change.reset:
                self._html.clear()
                self._png.clear()
            if change.variables or change.reset:
                self._specs = None
            for key, names in change.changed.items():
                for n in names:
                    self._html.pop((key, n), None)
                    self._png.pop((key, n), None)
            for key in change.processing:
                self._html.pop((key, "run"), None)
            if change.changed and self._specs is not None:
                known = set(self._specs)
                if any(n not in known for names in change.changed.values() for n in names):
                    self._specs = None

    # -- columns ----------------------------------------------------------------------------------
    def specs(self) -> dict[str, ColumnSpec]:
        """All columns: fixed ones first, then variables in the source's order."""
        with self.lock:
            if self._specs is not None:
                return self._specs
        src = self.source
        specs = {
            "run": ColumnSpec("run", "Run", "Run number (⚙ processing, ⋮ queued)", (), None),
            "start_time": ColumnSpec("start_time", "Timestamp", "Start of the run (local time)", (), None),
            "comment": ColumnSpec("comment", "Comment", "Free-text comment on the run (editable)", (), "comment"),
        }
        units_by_name = self._units_by_name()
        for name in src.column_names():
            v = src.variable(name)
            specs[name] = ColumnSpec(name, v.display_title, v.description or "", v.tags,
                                     v.type, units_by_name.get(name))
        with self.lock:
            self._specs = specs
        return specs

    def _units_by_name(self) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.source.lock:
            for r in list(self.source.runs.values())[-20:]:  # units are per variable; recent runs suffice
                for n, c in r.cells.items():
                    if c.attributes_json and n not in out:
                        u = c.attributes.get("units")
                        if u:
                            out[n] = str(u)
        return out

    def tags(self) -> list[str]:
        return sorted({t for s in self.specs().values() for t in s.tags})

    # -- cells ------------------------------------------------------------------------------------
    def cell_text(self, key: int, name: str) -> str:
        """The display string of one cell: HTML for computed columns, plain text for editable ones."""
        ck = (key, name)
        with self.lock:
            got = self._html.get(ck)
        if got is not None:
            return got
        src = self.source
        with src.lock:
            run = src.runs.get(key)
            if run is None:
                return ""
            if name == "run":
                text = fmt.run_html(run.run, src.processing_for(key))
            elif name == "start_time":
                text = fmt.format_timestamp(run.start_time)
            elif name == "proposal":
                text = str(run.proposal)
            elif name == "added_at":
                text = fmt.format_timestamp(run.added_at)
            else:
                cell = run.cells.get(name)
                spec = self.specs().get(name)
                if name == "comment" or (spec is not None and spec.editable_type is not None):
                    text = fmt.plain_text(cell.value if cell is not None else None)
                else:
                    text = fmt.cell_html(cell, lambda png: self.thumbnail_url(key, name, png))
        with self.lock:
            self._html[ck] = text
        return text

    def thumbnail_url(self, key: int, name: str, png: bytes) -> str:
        """Where the browser fetches a cell's thumbnail (``app/thumbnails.py``), relative to the page
        so it works under any prefix or proxy path; ``v`` changes with the image, so it can be cached."""
        return f"thumbnail/{self.source.token}/{key}/{quote(name, safe='')}.png?v={_version(png)}"

    def thumbnail(self, key: int, name: str, *, full: bool = False) -> tuple[bytes, str] | None:
        """A cell's thumbnail scaled for the table (``full``: as stored), and its version (as in
        ``thumbnail_url``)."""
        value = self.raw_value(key, name)
        if not isinstance(value, bytes) or not value.startswith(PNG_MAGIC):
            return None
        version = _version(value)
        if full:
            return value, version
        ck = (key, name)
        with self.lock:
            got = self._png.get(ck)
            if got is not None and got[0] == version:
                self._png.move_to_end(ck)
                return got[1], version
        png = fmt.cell_png(value)
        with self.lock:
            self._png[ck] = (version, png)
            while len(self._png) > THUMBNAIL_CACHE_SIZE:
                self._png.popitem(last=False)
        return png, version

    def raw_value(self, key: int, name: str):
        src = self.source
        with src.lock:
            run = src.runs.get(key)
            if run is None:
                return None
            if name in ("run", "proposal", "start_time", "added_at"):
                return getattr(run, name)
            cell = run.cells.get(name)
            return cell.value if cell is not None else None


def _version(png: bytes) -> str:
    """Names one image's content in its URL (a new image, a new URL: browsers may cache the old one)."""
    return f"{zlib.crc32(png):08x}"


_MODELS: dict[int, TableModel] = {}
_MODELS_LOCK = threading.Lock()


def get_table_model(source: ProposalSource) -> TableModel:
    with _MODELS_LOCK:
        m = _MODELS.get(id(source))
        if m is None or m.source is not source:
            m = _MODELS[id(source)] = TableModel(source)
        return m


__all__ = ["ColumnSpec", "TableModel", "get_table_model", "FIXED_COLUMNS", "HIDDEN_ALWAYS", "STATIC_COLUMNS"]
