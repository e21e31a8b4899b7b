"""Who may see a proposal: when users sign in, each sees and edits only the proposals they belong to.

The facility's convention decides by default: a user belongs to a proposal when they are a member of
the Unix group that owns the proposal's folder (``<data root>/<instrument>/<cycle>/p<NNNNNN>``, or, for a
DAMNIT folder elsewhere, the folder itself). ``DAMNIT_MEMBERSHIP=module:callable`` replaces that rule
(for example to ask the facility's proposal database): ``callable(user: str, proposal: int) -> bool``.
Answers are cached for ``DAMNIT_MEMBERSHIP_CACHE`` seconds (default 60), so a slow proposal database is
asked once a minute per user and proposal, not on every thumbnail.

Without sign-in (no ``--basic-auth``/OAuth/``--user-header``) there are no users to tell apart and every
proposal the server serves is open; ``--read-only`` and ``--context-editors`` apply on top either way.
"""

from __future__ import annotations

import grp
import importlib
import logging
import os
import pwd
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.config import ServerConfig
from backend.base.paths import find_proposal_dir

log = logging.getLogger(__name__)

MEMBERSHIP_ENV = "DAMNIT_MEMBERSHIP"
CACHE_ENV = "DAMNIT_MEMBERSHIP_CACHE"
Rule = Callable[[str, int], bool]


def proposal_folder(proposal: int | None, db_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder whose group decides membership: the proposal's data folder, else the DAMNIT folder."""
    if proposal is not None:
        found = find_proposal_dir(int(proposal))
        if found is not None:
            return found
    return Path(db_dir) if db_dir is not None else None


def unix_group_member(user: str, folder: str | os.PathLike | None) -> bool:
    """Is ``user`` in the Unix group owning ``folder`` (as a listed member or by primary group)?"""
    if not user or folder is None:
        return False
    try:
        gid = os.stat(folder).st_gid
        group = grp.getgrgid(gid)
    except (OSError, KeyError):
        return False
    if user in group.gr_mem:
        return True
    try:
        return pwd.getpwnam(user).pw_gid == gid
    except KeyError:
        return False


def load_rule(spec: str) -> Rule:
    """``module:callable`` → the callable (ValueError saying what is wrong)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{MEMBERSHIP_ENV} must be 'module:callable', not {spec!r}")
    try:
        rule = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{MEMBERSHIP_ENV}={spec!r}: {e}") from None
    if not callable(rule):
        raise ValueError(f"{MEMBERSHIP_ENV}={spec!r} is not callable")
    return rule


class Membership:
    """``membership(user, proposal, db_dir)``: may this user see this proposal? Cached."""

    def __init__(self, rule: Rule | None = None, ttl: float = 60.0):
        self.rule = rule
        self.ttl = ttl
        self._cache: dict[tuple[str, int | None, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def __call__(self, user: str, proposal: int | None, db_dir: str | os.PathLike | None = None) -> bool:
        key = (user, proposal, str(db_dir))
        now = time.monotonic()
        with self._lock:
            got = self._cache.get(key)
            if got is not None and now - got[0] < self.ttl:
                return got[1]
        allowed = self._decide(user, proposal, db_dir)
        with self._lock:
            self._cache[key] = (now, allowed)
        return allowed

    def _decide(self, user: str, proposal: int | None, db_dir) -> bool:
        if not user:
            return False
        if self.rule is not None:
            if proposal is None:
                return False
            try:
                return bool(self.rule(user, int(proposal)))
            except Exception:
                log.exception("The membership rule failed for %s and p%s; access refused", user, proposal)
                return False
        return unix_group_member(user, proposal_folder(proposal, db_dir))


_MEMBERSHIP: Membership | None = None


def get_membership() -> Membership:
    """This process's membership check, from the environment (``DAMNIT_MEMBERSHIP``, ``..._CACHE``)."""
    global _MEMBERSHIP
    if _MEMBERSHIP is None:
        spec = os.environ.get(MEMBERSHIP_ENV, "").strip()
        ttl = float(os.environ.get(CACHE_ENV, "60") or 60)
        _MEMBERSHIP = Membership(load_rule(spec) if spec else None, ttl)
    return _MEMBERSHIP


def may_see(cfg: ServerConfig, user: str, proposal: int | None, db_dir: str | os.PathLike | None = None) -> bool:
    """May ``user`` open this proposal on this server? Everyone may where nobody signs in."""
    if cfg.auth == "none":
        return True
    return get_membership()(user, proposal, db_dir)
