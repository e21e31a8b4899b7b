"""Setting up a DAMNIT database from the dashboard, as the original GUI's "new database" dialog does:
a proposal number, a context template, user-editable variables copied from another proposal.

Only users who may change context files may do it (it creates one), and only for proposals they belong
to; every database made is logged with the user.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.access import may_see
from app.config import ServerConfig
from backend.base.paths import ProposalNotFound, amore_dir, find_database_dir, proposal_dir
from backend.storage.damnit_folder import initialize_proposal

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # who made which database: an audit trail, always in the server log

CONTEXTS = Path(__file__).resolve().parents[2] / "contexts"


def context_templates() -> list[Path]:
    """The context files a new database can start from (``contexts/``)."""
    return sorted(CONTEXTS.glob("*.py"))


def create_database(cfg: ServerConfig, user: str, proposal: int | None, context: str | None,
                    like: int | None) -> Path:
    """Set up ``<proposal>/usr/Shared/amore``; returns it. PermissionError or ValueError say why not."""
    refusal = "The dashboard was started with --read-only" if cfg.read_only else cfg.context_edit_refusal(user)
    if refusal:
        raise PermissionError(refusal)
    if proposal is None or proposal <= 0:
        raise ValueError("give the proposal number")
    try:
        folder = proposal_dir(proposal)
    except ProposalNotFound as e:
        raise ValueError(str(e)) from None
    if not may_see(cfg, user, proposal, folder):
        raise PermissionError(f"{user} is not a member of proposal {proposal}")
    db_dir = amore_dir(proposal)
    if (db_dir / "runs.sqlite").exists():
        raise ValueError(f"proposal {proposal} already has a database ({db_dir})")
    if context is not None and Path(context).resolve() not in [p.resolve() for p in context_templates()]:
        raise ValueError("unknown context template")
    user_vars = None
    if like is not None:
        user_vars = find_database_dir(like)
        if user_vars is None or not may_see(cfg, user, like, user_vars):
            raise ValueError(f"proposal {like} has no DAMNIT database here to copy user variables from")
    initialize_proposal(db_dir, proposal, context_file_src=context, user_vars_src=user_vars).close()
    log.info("New DAMNIT database for p%d in %s by %s (template %s, user variables from %s)", proposal, db_dir,
             user or "local user", Path(context).name if context else "none", f"p{like}" if like else "nobody")
    return db_dir
