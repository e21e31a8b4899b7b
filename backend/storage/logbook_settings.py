"""The database's logbook settings: ``zulip.cfg`` in the DAMNIT folder, the file the original DAMNIT reads.

The original GUI posts to the experiment's Zulip stream through the facility's write-only proxy and
reads where from ``<DAMNIT folder>/zulip.cfg`` (the facility writes one into every proposal's official
folder). We read and write the same file, so one configured for the original works here and ours works
there::

    [ZULIP]
    url = https://proxy.example.org/api    # the proxy's address
    key = ...                              # the proxy's token for this proposal (a secret)
    topics = ["beamtime", "alignment"]     # topics the send dialog offers (a JSON list)

Ours also talks to a Zulip server directly (Zulip's REST API) when the file names a bot: then ``url``
is the Zulip server, ``key`` the bot's API key, and two more keys say who and where::

    email = damnit-bot@zulip.example.org   # the bot's address
    stream = p2468                         # the stream to post to (the proxy knows its own)

Values are stored as the original's ``ConfigParser`` reads them (``%`` doubled); other keys and
sections in the file are kept. The file holds a secret, so a new one is readable by its owner and
group only (0660); rewriting keeps the mode of the one it replaces.
"""

from __future__ import annotations

import configparser
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "zulip.cfg"
SECTION = "ZULIP"
FIELDS = ("url", "key", "topics", "email", "stream")
NEW_FILE_MODE = 0o660


class LogbookSettingsError(ValueError):
    """zulip.cfg cannot be read, or a value cannot be stored (the message names the file and the key)."""


@dataclass(frozen=True)
class LogbookSettings:
    url: str = ""
    key: str = field(default="", repr=False)  # never in logs or reprs
    topics: tuple[str, ...] = ()
    email: str = ""
    stream: str = ""

    @property
    def direct(self) -> bool:
        """True: post to a Zulip server as a bot (``email``); False: through the facility's proxy."""
        return bool(self.email)

    @property
    def configured(self) -> bool:
        return not self.missing()

    def missing(self) -> list[str]:
        """The keys still needed before anything can be sent (empty when complete)."""
        needed = ["url", "key"] + (["stream"] if self.direct else [])
        return [k for k in needed if not getattr(self, k)]


def settings_path(db_dir: str | os.PathLike) -> Path:
    return Path(db_dir) / FILE_NAME


def _parser() -> configparser.ConfigParser:
    return configparser.ConfigParser()  # the original's parser: BasicInterpolation, lower-case keys


def parse_topics(text: str, where: str = FILE_NAME, *, lenient: bool = False) -> tuple[str, ...]:
    """A JSON list of topic names (the file's form, as the original reads it); ``lenient`` (typed input)
    also takes names separated by commas or new lines."""
    text = (text or "").strip()
    if not text:
        return ()
    if text.startswith("[") or not lenient:
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise LogbookSettingsError(f"{where}: topics is not a valid JSON list ({e.msg}): {text!r}") from None
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise LogbookSettingsError(f"{where}: topics must be a list of topic names, like "
                                       f'["beamtime", "alignment"], not {text!r}')
    else:
        items = text.replace("\n", ",").split(",")
    return tuple(dict.fromkeys(t.strip() for t in items if t.strip()))


def read_logbook_settings(db_dir: str | os.PathLike) -> LogbookSettings:
    """The settings in ``<db_dir>/zulip.cfg`` (empty settings when there is no such file)."""
    path = settings_path(db_dir)
    parser = _parser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        return LogbookSettings()
    except (OSError, UnicodeDecodeError) as e:
        raise LogbookSettingsError(f"{path}: cannot be read: {e}") from None
    except configparser.Error as e:
        raise LogbookSettingsError(f"{path}: not a valid settings file: {e}") from None
    if not parser.has_section(SECTION):
        return LogbookSettings()
    values = {}
    try:
        for k in FIELDS:
            values[k] = parser.get(SECTION, k, fallback="").strip()
    except configparser.Error as e:
        raise LogbookSettingsError(f"{path}: [{SECTION}] {k}: {e}") from None
    return LogbookSettings(url=values["url"], key=values["key"], email=values["email"], stream=values["stream"],
                           topics=parse_topics(values["topics"], f"{path}: [{SECTION}]"))


def _check(name: str, value: str) -> str:
    value = str(value).strip()
    if "\n" in value or "\r" in value:
        raise LogbookSettingsError(f"zulip.{name} must be one line")
    if name == "url" and value and not value.startswith(("http://", "https://")):
        raise LogbookSettingsError(f"zulip.url must start with http:// or https://, not {value!r}")
    return value


def _serialised(name: str, value) -> str:
    """A value as the file holds it ('' = leave the key out)."""
    if name == "topics":
        if isinstance(value, str):
            value = parse_topics(value, "zulip.topics", lenient=True)
        topics = list(dict.fromkeys(str(t).strip() for t in (value or ()) if str(t).strip()))
        return json.dumps(topics) if topics else ""
    return _check(name, "" if value is None else value)


def _store(path: Path, values: dict[str, str]) -> None:
    """Put ``values`` (serialised; '' removes a key) into the file at ``path``, atomically, keeping its
    mode and everything else in it; a file left with nothing in it is removed."""
    parser = _parser()
    mode = NEW_FILE_MODE
    try:
        mode = path.stat().st_mode & 0o7777
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise LogbookSettingsError(f"{path}: cannot be updated, fix or remove it first: {e}") from None
    if not parser.has_section(SECTION):
        parser.add_section(SECTION)
    for name, value in values.items():
        if value:
            parser.set(SECTION, name, value.replace("%", "%%"))
        else:
            parser.remove_option(SECTION, name)
    if not parser.items(SECTION, raw=True):
        parser.remove_section(SECTION)
    if not parser.sections():
        path.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            parser.write(f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_logbook_settings(db_dir: str | os.PathLike, settings: LogbookSettings) -> Path:
    """Store all of ``settings`` in ``<db_dir>/zulip.cfg`` (empty values are left out)."""
    path = settings_path(db_dir)
    _store(path, {name: _serialised(name, getattr(settings, name)) for name in FIELDS})
    return path


def update_logbook_settings(db_dir: str | os.PathLike, **changes: str | Iterable[str] | None) -> None:
    """Change some settings (``None`` or '' removes one), leaving the others as they are in the file
    (so a broken value can be replaced or removed). Nothing is written if a new value is bad."""
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise LogbookSettingsError(f"unknown logbook setting(s): {', '.join(sorted(unknown))} "
                                   f"(known: {', '.join(FIELDS)})")
    _store(settings_path(db_dir), {name: _serialised(name, value) for name, value in changes.items()})
