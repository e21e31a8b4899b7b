"""The landing page of a server that serves several proposals (a facility's): every proposal it may
serve, by cycle and instrument, searchable; a click opens one (``?proposal=N``, a stable link that
works behind the proxy prefix). Users who may change context files can set up a new DAMNIT database
here, as the original GUI's "new database" dialog does.

Served proposals are those given on the command line, and, when none were given, every DAMNIT folder
under the data roots (``XFEL_DATA_ROOT``, ``EXTRA_DATA_DATA_ROOT``). With sign-in configured, each user
sees only the proposals they belong to (``app/access.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import panel as pn
import param

from app.access import may_see
from app.actions.databases import context_templates, create_database
from app.config import ServerConfig
from app.display.text import safe_text
from backend.base.paths import (
    list_database_dirs,
)
from backend.storage import catalog
from backend.storage.arrow_reader import ArrowReader

log = logging.getLogger(__name__)

SCAN_CACHE_S = 60.0  # the data roots are scanned at most once a minute (GPFS listings are slow)


@dataclass(frozen=True)
class Listed:
    proposal: int | None
    instrument: str
    cycle: str
    db_dir: Path
    link: str


_SCAN: tuple[float, list] = (0.0, [])


def forget_scan() -> None:
    """Scan the data roots again on the next visit (a database was just made)."""
    global _SCAN
    _SCAN = (0.0, [])


def discovered() -> list:
    """DAMNIT folders under the data roots (cached for ``SCAN_CACHE_S``)."""
    global _SCAN
    if time.monotonic() - _SCAN[0] > SCAN_CACHE_S:
        _SCAN = (time.monotonic(), list_database_dirs())
    return _SCAN[1]


def served_proposals(cfg: ServerConfig, user: str) -> list[Listed]:
    """What this user may open here: the command line's databases, else those under the data roots."""
    out: list[Listed] = []
    if cfg.databases:
        for i, d in enumerate(cfg.databases):
            db_dir = Path(d)
            try:
                with ArrowReader(db_dir / "runs.sqlite") as reader:
                    proposal = catalog.settings(reader).get("proposal")
                proposal = int(proposal) if proposal not in (None, "") else None
            except (OSError, ValueError) as e:
                log.warning("Cannot read %s: %s", db_dir, e)
                proposal = None
            parts = db_dir.parts
            instrument, cycle = (parts[-6], parts[-5]) if len(parts) >= 6 and parts[-3:] == (
                "usr", "Shared", "amore") else ("", "")
            link = f"?proposal={proposal}" if proposal is not None else f"?db={i}"
            out.append(Listed(proposal, instrument, cycle, db_dir, link))
    elif cfg.allow_lookup:
        out = [Listed(f.proposal, f.instrument, f.cycle, f.db_dir, f"?proposal={f.proposal}") for f in discovered()]
    return [p for p in out if may_see(cfg, user, p.proposal, p.db_dir)]


class ProposalDirectory(pn.viewable.Viewer):
    """The searchable list of proposals, and the new-database form for those who may make one."""

    cfg = param.ClassSelector(class_=ServerConfig)
    user = param.String(default="")
    message = param.String(default="", doc="Why the page the user asked for is not shown (escaped)")

    def __init__(self, **params):
        super().__init__(**params)
        self.listed = served_proposals(self.cfg, self.user)
        self.search = pn.widgets.TextInput(placeholder="Search: proposal, instrument or cycle", width=320)
        self.table = pn.widgets.Tabulator(
            pn.bind(self._frame, self.search.param.value_input),  # the rows follow the search as it is typed
            show_index=False, disabled=True, sizing_mode="stretch_width", layout="fit_data_stretch",
            pagination="local", page_size=25, css_classes=["damnit-proposals"],
            formatters={"Proposal": {"type": "link", "urlField": "Link", "target": "_self"},
                        "Instrument": {"type": "plaintext"}, "Cycle": {"type": "plaintext"},
                        "Folder": {"type": "plaintext"}},
            hidden_columns=["Link"])

    def _frame(self, text: str) -> pd.DataFrame:
        text = (text or "").strip().lower()
        rows = [{"Proposal": str(p.proposal) if p.proposal is not None else p.db_dir.name, "Instrument": p.instrument,
                 "Cycle": p.cycle, "Folder": str(p.db_dir), "Link": p.link} for p in self.listed
                if not text or text in f"{p.proposal} {p.instrument} {p.cycle}".lower()]
        return pd.DataFrame(rows, columns=["Proposal", "Instrument", "Cycle", "Folder", "Link"])

    def new_database_form(self) -> pn.viewable.Viewable | None:
        """The original's "new database" dialog: proposal number, a context template, user-editable
        variables copied from another proposal. Only for users who may change context files."""
        cfg = self.cfg
        if cfg.read_only or not cfg.allow_lookup or cfg.context_edit_refusal(self.user):
            return None
        number = pn.widgets.IntInput(label="Proposal number", value=None, width=160)
        templates = {"(empty context file)": ""} | {p.stem: str(p) for p in context_templates()}
        template = pn.widgets.Select(label="Context template", options=templates, width=220)
        like = pn.widgets.IntInput(label="Copy user variables from proposal (optional)", value=None, width=280)
        create = pn.widgets.Button(label="Create database", color="primary", align="end")
        feedback = safe_text("")

        def on_create(_=None) -> None:
            try:
                create_database(self.cfg, self.user, number.value, template.value or None, like.value)
            except (ValueError, PermissionError, OSError) as e:
                feedback.object = f"Not created: {e}"
                feedback.styles = {**feedback.styles, "color": "#b00"}
                return
            forget_scan()
            pn.state.location.search = f"?proposal={int(number.value)}"
            pn.state.location.reload = True

        create.on_click(on_create)
        return pn.Card(pn.Row(number, template, like, create), feedback, title="New DAMNIT database",
                       collapsed=True, sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        parts: list = [pn.pane.HTML("<h2>DAMNIT: proposals</h2>")]
        if self.message:
            parts.append(safe_text(self.message, css_classes=["damnit-landing-message"], color="#664d03",
                                   background="#fff3cd", padding="8px", **{"border-radius": "4px"}))
        if self.listed:
            parts += [self.search, self.table]
        else:
            parts.append(safe_text("No proposals to show" + (" that you are a member of" if self.cfg.auth != "none"
                                                             else "") + "."))
        form = self.new_database_form()
        if form is not None:
            parts.append(form)
        return pn.Column(*parts, sizing_mode="stretch_width")
