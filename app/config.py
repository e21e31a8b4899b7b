"""Server-wide dashboard settings, decided once by ``app.server.serve`` and handed to every session.

``app.server.serve`` (behind ``panel_serve.sh``) parses the command line, resolves databases and writes this
config as JSON into ``DAMNIT_DASHBOARD_CONFIG``; the Panel app reads it back. Only databases listed
here (or proposal numbers that resolve to an official DAMNIT folder when ``allow_lookup`` is set) can
be opened: a URL never names a path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backend.base.paths import data_roots, find_database_dir

ENV_VAR = "DAMNIT_DASHBOARD_CONFIG"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class ServerConfig:
    databases: list[str] = field(default_factory=list)  # absolute DB dirs, in command-line order
    read_only: bool = False
    address: str = "127.0.0.1"
    prefix: str = ""
    auth: str = "none"  # none | oauth | header
    user_header: str = ""  # trusted proxy header carrying the user name (auth == "header")
    allow_lookup: bool = False  # may users open other proposals by number (none given on the CLI)
    demo: bool = False
    context_editors: list[str] = field(default_factory=list)  # --context-editors: user names, or ["*"]
    timezone: str = ""  # --timezone: every time shown or exported is in this zone ('' = the server's)
    unload_after: float = 600.0  # --unload-after: seconds before a proposal no session uses is closed (0: never)

    @property
    def tz(self) -> dt.tzinfo:
        return zone(self.timezone)

    @property
    def loopback(self) -> bool:
        return self.address in LOOPBACK

    @property
    def writes_need_user(self) -> bool:
        """Writes need an authenticated user when auth is configured or the server is reachable from
        other machines (then unauthenticated writes are refused)."""
        return self.auth != "none" or not self.loopback

    def context_edit_refusal(self, user: str) -> str:
        """Why ``user`` may not save the context file ('' = allowed). The context file is code the backend
        runs as the listener's user, so beyond loopback-without-auth only users named in
        --context-editors may change it, and nobody without that option."""
        if self.read_only:
            return "The dashboard was started with --read-only"
        if not self.writes_need_user:
            return ""
        if not self.context_editors:
            return ("Editing the context file is disabled on this server; start it with "
                    "--context-editors USER,... (or '*' for every signed-in user) to allow it")
        if not user:
            return "Editing the context file needs a signed-in user named in --context-editors"
        if user in self.context_editors or "*" in self.context_editors:
            return ""
        return f"{user} may not edit the context file (not in --context-editors)"

    def to_env(self) -> str:
        return json.dumps(asdict(self))


@lru_cache(maxsize=1)
def _cached(raw: str) -> ServerConfig:
    return ServerConfig(**json.loads(raw)) if raw else ServerConfig(allow_lookup=True)


def get_config() -> ServerConfig:
    """The config of this server process (defaults: loopback, no databases, lookup by number)."""
    return _cached(os.environ.get(ENV_VAR, ""))


def resolve_database(arg: str | os.PathLike) -> Path:
    """A command-line argument → DB dir: a folder with runs.sqlite, the runs.sqlite itself, or a
    proposal number. Raises ValueError saying what was wrong."""
    text = str(arg)
    if text.isdigit() and not Path(text).exists():
        found = find_database_dir(int(text))
        if found is None:
            roots = ", ".join(map(str, data_roots()))
            raise ValueError(f"Proposal {text}: no DAMNIT database in */*/p{int(text):06d}/usr/Shared/amore "
                             f"under {roots}")
        return found.resolve()
    p = Path(text).expanduser()
    if p.is_file() and p.name == "runs.sqlite":
        p = p.parent
    if not p.is_dir():
        raise ValueError(f"{text}: no such folder")
    if not (p / "runs.sqlite").is_file():
        raise ValueError(f"{text}: not a DAMNIT folder (no runs.sqlite)")
    return p.resolve()


# ---------------------------------------------------------------- the server's clock

def _local_zone_name() -> str | None:
    """The IANA name of this machine's zone ($TZ, else where /etc/localtime points), if it has one."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name and not name.startswith("/"):
        return name
    try:
        target = Path(name or "/etc/localtime").resolve()
    except OSError:
        return None
    parts = target.parts
    if "zoneinfo" in parts:
        return "/".join(parts[parts.index("zoneinfo") + 1:]) or None
    return None


@lru_cache(maxsize=8)
def zone(name: str = "") -> dt.tzinfo:
    """The zone called ``name`` ('' = the server's local zone); ValueError for an unknown name."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (use a name like Europe/Berlin or UTC)") from None
    local = _local_zone_name()
    if local:
        try:
            return ZoneInfo(local)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return dt.datetime.now().astimezone().tzinfo or dt.timezone.utc


def zone_label(tz: dt.tzinfo) -> str:
    """How a zone is named next to times: its IANA name, or its offset."""
    return getattr(tz, "key", None) or dt.datetime.now(tz).strftime("UTC%z")
