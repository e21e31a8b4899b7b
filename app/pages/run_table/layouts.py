"""The run table's layout, remembered per user: column order, hidden columns, widths, flat or grouped
headers and whether the processing marks show.

Every browser keeps its user's layout in its own storage (``localStorage``, one entry per proposal;
``js/table_bridge.js``). When users sign in, the server keeps it too, so it follows them to any
browser: one small JSON file per user in a state folder of the server's, ``DAMNIT_WEB_STATE_DIR``
(default ``$XDG_STATE_HOME/damnit-web`` or ``~/.local/state/damnit-web``), never in a proposal's
folder. A layout comes from a browser, so it is checked and trimmed before it is used or stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_DIR_ENV = "DAMNIT_WEB_STATE_DIR"
MAX_NAMES = 5000  # columns a layout may name (a proposal has a few hundred)
MAX_NAME_LENGTH = 300
MIN_WIDTH, MAX_WIDTH = 30, 2000  # px
MAX_TABLES = 500  # proposals remembered per user (the least recently saved go first)


@dataclass
class TableLayout:
    """How one user arranges one proposal's run table (the Run column is always first)."""

    order: list[str] = field(default_factory=list)  # columns after Run, in display order, shown or not
    hidden: list[str] = field(default_factory=list)
    widths: dict[str, int] = field(default_factory=dict)  # px, as the user resized them
    hierarchical: bool = True  # titles with '/' as grouped headers (else flat, full titles)
    show_processing: bool = True  # the ⚙/⋮ marks in the Run column

    @classmethod
    def from_json(cls, obj: Any) -> TableLayout | None:
        """A layout from untrusted JSON (a browser's storage or message): wrong types are dropped,
        sizes bounded; None when it is not a layout at all."""
        if not isinstance(obj, dict):
            return None

        def names(value: Any) -> list[str]:
            if not isinstance(value, list):
                return []
            out = [v for v in value[:MAX_NAMES] if isinstance(v, str) and 0 < len(v) <= MAX_NAME_LENGTH]
            return list(dict.fromkeys(out))

        widths = {}
        raw = obj.get("widths")
        if isinstance(raw, dict):
            for k, v in list(raw.items())[:MAX_NAMES]:
                if isinstance(k, str) and 0 < len(k) <= MAX_NAME_LENGTH and isinstance(v, (int, float)) \
                        and not isinstance(v, bool) and v == v:
                    widths[k] = int(min(MAX_WIDTH, max(MIN_WIDTH, v)))
        flag = obj.get("hierarchical")
        marks = obj.get("show_processing")
        return cls(order=names(obj.get("order")), hidden=names(obj.get("hidden")), widths=widths,
                   hierarchical=flag if isinstance(flag, bool) else True,
                   show_processing=marks if isinstance(marks, bool) else True)

    def to_json(self) -> dict:
        return asdict(self)


def state_dir() -> Path:
    """The server's own state folder (layouts of signed-in users)."""
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "damnit-web"


def table_key(proposal: int | None, db_dir: str | os.PathLike) -> str:
    """Names one proposal's table in a layout store and the browser's storage: ``p<N>``, or a hash of
    the folder for a database without a proposal number (a path never goes to the browser)."""
    if proposal is not None:
        return f"p{int(proposal)}"
    return "db-" + hashlib.sha256(str(Path(db_dir).resolve()).encode()).hexdigest()[:16]


class LayoutStore:
    """Layouts of signed-in users: ``<folder>/<user>.json`` holding ``{table key: layout}``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def path_for(self, user: str) -> Path:
        """The user's file: a readable, safe prefix of the name plus a hash of all of it (names that
        differ only in characters left out get different files; no name can reach outside)."""
        readable = re.sub(r"[^A-Za-z0-9_.@-]", "_", user)[:60].lstrip(".") or "user"
        digest = hashlib.sha256(user.encode()).hexdigest()[:12]
        return self.folder / f"{readable}-{digest}.json"

    def _read(self, user: str) -> dict:
        try:
            obj = json.loads(self.path_for(user).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("Ignoring unreadable layouts of %s: %s", user, e)
            return {}
        tables = obj.get("tables") if isinstance(obj, dict) else None
        return tables if isinstance(tables, dict) else {}

    def load(self, user: str, key: str) -> TableLayout | None:
        if not user:
            return None
        with self._lock:
            return TableLayout.from_json(self._read(user).get(key))

    def save(self, user: str, key: str, layout: TableLayout) -> bool:
        """Store one table's layout (atomically: a reader never sees half a file); False if the folder
        can't be written (logged: the browser still keeps it)."""
        if not user:
            return False
        with self._lock:
            tables = self._read(user)
            tables.pop(key, None)
            tables[key] = layout.to_json()  # last saved last, so the oldest go first when trimming
            while len(tables) > MAX_TABLES:
                tables.pop(next(iter(tables)))
            try:
                self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".layout-", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as f:
                        json.dump({"version": 1, "tables": tables}, f)
                    os.replace(tmp, self.path_for(user))
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            except OSError as e:
                log.warning("Could not save the table layout of %s in %s: %s", user, self.folder, e)
                return False
        return True


_STORE: LayoutStore | None = None
_STORE_LOCK = threading.Lock()


def layout_store() -> LayoutStore:
    """This server's store (in ``state_dir()/table-layouts``)."""
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            _STORE = LayoutStore(state_dir() / "table-layouts")
        return _STORE
