"""Posting to the experiment's logbook, a Zulip stream: text messages, tables and images.

Two ways in, chosen by the database's settings (``backend/storage/logbook_settings.py``):

- the facility's write-only proxy, which is what the original DAMNIT speaks: the token in an
  ``X-API-key`` header; ``GET <url>/me`` names the proposal's stream; ``POST <url>/send_message?topic=T``
  with the form field ``content`` and an optional file ``image``, which the proxy uploads and links at
  the end of the message;
- a Zulip server directly, with Zulip's REST API and HTTP basic auth (bot email + API key):
  ``POST /api/v1/user_uploads`` for a file, then ``POST /api/v1/messages`` with a link to it.

Every request has a time limit, and every failure is a ``LogbookError`` saying what went wrong in the
words of the server that refused (``Zulip refused: 401 Unauthorized: Invalid API key``). The key is
sent only in the request headers: never logged, never in an error message.

``markdown_table`` writes rows as a Zulip Markdown table that shows every cell as the literal text it
is: Zulip has no backslash escapes, so a cell holding Markdown, a mention (``@**all**`` would notify
the whole stream) or HTML is shown as inline code instead, and a long table is split into several
messages below Zulip's 10 000 characters, each with the header row, as the original does.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backend.storage.logbook_settings import LogbookSettings

log = logging.getLogger(__name__)

TIMEOUT = 15.0  # seconds for one request (an upload included)
MAX_MESSAGE_CHARS = 10_000  # Zulip's limit for one message
MAX_TOPIC_CHARS = 60  # Zulip's limit for a topic name
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # Zulip's default upload limit


class LogbookError(Exception):
    """Sending to the logbook failed; the message says why (for the user, without secrets)."""


@dataclass(frozen=True)
class Posted:
    """What one send did: where it went, the messages it made and the uploaded file's link, if any."""

    stream: str
    topic: str
    message_ids: tuple[int, ...]
    upload_url: str | None = None


# --------------------------------------------------------------------------------------------------
# Markdown that Zulip shows as the text it is
# --------------------------------------------------------------------------------------------------

# What Zulip's Markdown would turn into something else inside a table cell: code spans, emphasis,
# mentions and stream links (all need *), strike-through, links and images ([), TeX ($$), timestamps and
# HTML-looking text (<), the cell separator (|), and backslashes (kept literal in code, should Zulip
# ever add escapes). Emoji names (:name:) are left alone: times are full of colons.
_SPECIAL = re.compile(r"[`*\[\]|<>\\]|~~|\$\$")


def markdown_text(value: Any) -> str:
    """One table cell (or header) as Zulip Markdown that displays ``value`` literally, on one line."""
    text = " ".join(str("" if value is None else value).split())
    if not _SPECIAL.search(text):
        return text
    # Inline code shows its content as is. Its fence is one backtick longer than any run inside; a
    # space pads content that starts or ends with a backtick. '|' is still a cell separator for the
    # table parser outside of code spans only, so inside one it is safe.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table_lines(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, str, list[str]]:
    head = "| " + " | ".join(markdown_text(h) or " " for h in headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in rows]
    return head, rule, body


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "",
                   max_chars: int = MAX_MESSAGE_CHARS) -> list[str]:
    """``rows`` under ``headers`` as Zulip messages (Markdown tables, each at most ``max_chars``).

    ``title``, if given, heads the first message (as the original's "### title"). It is the sender's
    own text and may use Markdown. Raises LogbookError if even one row does not fit in a message.
    """
    if not headers:
        raise LogbookError("no columns to send")
    head, rule, body = _table_lines(headers, rows)
    first_prefix = f"### {' '.join(title.split())}\n" if title.strip() else ""
    messages: list[str] = []
    current: list[str] = []
    size = 0

    def flush() -> None:
        prefix = "" if messages else first_prefix
        messages.append(prefix + "\n".join([head, rule, *current]))

    base = len(head) + len(rule) + 2
    for line in body:
        limit = max_chars - base - (0 if messages else len(first_prefix))
        if len(line) + 1 > limit:
            raise LogbookError(f"one row of the table is {len(line)} characters long, more than a Zulip "
                               f"message may hold ({max_chars}); leave out some columns")
        if current and size + len(line) + 1 > limit:
            flush()
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    flush()
    return messages


def check_topic(topic: str) -> str:
    topic = " ".join((topic or "").split())
    if not topic:
        raise LogbookError("choose a topic: Zulip puts every message under one")
    if len(topic) > MAX_TOPIC_CHARS:
        raise LogbookError(f"the topic is {len(topic)} characters long; Zulip allows {MAX_TOPIC_CHARS}")
    return topic


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------

def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "damnit-" + uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                     f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode() + value.encode() + b"\r\n")
    for name, (filename, data, ctype) in files.items():
        safe_name = re.sub(r'["\\\r\n]', "_", filename)
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe_name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _refusal(body: bytes) -> str:
    """The reason a server gives in its error body: Zulip's ``msg``, FastAPI's ``detail``, or the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300]
    if isinstance(data, dict):
        reason = data.get("msg") or data.get("detail") or data.get("message")
        if reason:
            return reason if isinstance(reason, str) else json.dumps(reason)[:300]
    return text[:300]


class _Http:
    def __init__(self, base_url: str, headers: dict[str, str], timeout: float):
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.timeout = timeout

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: bytes | None = None,
                content_type: str | None = None) -> dict:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        shown = self.base_url + path  # for messages: the query may hold a topic, never a secret
        headers = {"Accept": "application/json", "User-Agent": "DAMNIT-web", **self.headers}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                log.debug("%s %s: %s", method, shown, resp.status)
        except urllib.error.HTTPError as e:
            log.debug("%s %s: %s", method, shown, e.code)
            try:
                reason = _refusal(e.read())
            except OSError:  # a time-out too
                reason = ""
            raise LogbookError(f"Zulip refused: {e.code} {e.reason}" + (f": {reason}" if reason else "")) from None
        except TimeoutError:
            raise LogbookError(f"the logbook at {shown} did not answer within {self.timeout:g} s") from None
        except urllib.error.URLError as e:
            why = e.reason
            if isinstance(why, TimeoutError):
                raise LogbookError(f"the logbook at {shown} did not answer within {self.timeout:g} s") from None
            raise LogbookError(f"could not reach the logbook at {shown}: {why}") from None
        except (OSError, ValueError) as e:  # connection reset, bad URL, ...
            raise LogbookError(f"could not reach the logbook at {shown}: {e}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise LogbookError(f"the logbook at {shown} answered with something that is not JSON: "
                               f"{raw[:120]!r}") from None
        if isinstance(data, dict) and data.get("result", "success") != "success":
            raise LogbookError(f"Zulip refused: {data.get('msg') or data}")
        return data if isinstance(data, dict) else {"value": data}


# --------------------------------------------------------------------------------------------------
# The two ways in
# --------------------------------------------------------------------------------------------------

class Logbook:
    """One database's logbook. ``open_logbook(settings)`` picks the kind."""

    def __init__(self, settings: LogbookSettings, timeout: float = TIMEOUT):
        missing = settings.missing()
        if missing:
            raise LogbookError("the logbook is not set up for this database: " + ", ".join(
                f"zulip.{m}" for m in missing) + " missing (damnit db-config, or the dashboard's logbook settings)")
        self.settings = settings
        self.timeout = timeout

    def stream(self) -> str:
        """The stream messages go to (asks the proxy, which decides)."""
        raise NotImplementedError

    def send(self, topic: str, content: str, *, stream: str | None = None) -> Posted:
        raise NotImplementedError

    def send_image(self, topic: str, caption: str, image: bytes, filename: str = "plot.png", *,
                   stream: str | None = None) -> Posted:
        raise NotImplementedError

    def send_all(self, topic: str, messages: Sequence[str], *, stream: str | None = None) -> Posted:
        """Several messages in order (a long table); stops at the first refusal."""
        ids: list[int] = []
        posted = None
        for content in messages:
            try:
                posted = self.send(topic, content, stream=stream)
            except LogbookError as e:
                if ids:
                    raise LogbookError(f"{e} (after {len(ids)} of {len(messages)} messages were sent)") from None
                raise
            ids.extend(posted.message_ids)
        assert posted is not None, "send_all needs at least one message"
        return Posted(posted.stream, posted.topic, tuple(ids))


class ProxyLogbook(Logbook):
    """The facility's write-only proxy (the original's way): the key picks the proposal and its stream."""

    def __init__(self, settings: LogbookSettings, timeout: float = TIMEOUT):
        super().__init__(settings, timeout)
        self.http = _Http(settings.url, {"X-API-key": settings.key}, timeout)
        self._stream: str | None = None

    def stream(self) -> str:
        if self._stream is None:
            me = self.http.request("GET", "/me")
            stream = me.get("stream")
            if not stream:
                raise LogbookError(f"the logbook proxy at {self.http.base_url} knows no stream for this key")
            self._stream = str(stream)
        return self._stream

    def _send(self, topic: str, content: str, files: dict) -> dict:
        body, ctype = _multipart({"content": content}, files)
        return self.http.request("POST", "/send_message", query={"topic": check_topic(topic)}, body=body,
                                 content_type=ctype)

    # Each send first asks which stream (once per instance), as the original does before it sends:
    # the answer names where the message went, and a wrong key is refused before anything is posted.
    def send(self, topic: str, content: str, *, stream: str | None = None) -> Posted:
        _check_content(content)
        where = self.stream()
        data = self._send(topic, content, {})
        return Posted(where, check_topic(topic), _ids(data))

    def send_image(self, topic: str, caption: str, image: bytes, filename: str = "plot.png", *,
                   stream: str | None = None) -> Posted:
        _check_upload(image)
        where = self.stream()
        data = self._send(topic, caption or "", {"image": (filename, image, "image/png")})
        return Posted(where, check_topic(topic), _ids(data))


class ZulipLogbook(Logbook):
    """A Zulip server's REST API as a bot (``email`` + API ``key``), posting to ``stream``."""

    def __init__(self, settings: LogbookSettings, timeout: float = TIMEOUT):
        super().__init__(settings, timeout)
        token = base64.b64encode(f"{settings.email}:{settings.key}".encode()).decode()
        self.http = _Http(settings.url.rstrip("/") + "/api/v1", {"Authorization": f"Basic {token}"}, timeout)

    def stream(self) -> str:
        return self.settings.stream

    def check(self) -> str:
        """Whether the server accepts the bot's credentials: its name as Zulip knows it."""
        me = self.http.request("GET", "/users/me")
        return str(me.get("full_name") or me.get("email") or self.settings.email)

    def send(self, topic: str, content: str, *, stream: str | None = None) -> Posted:
        _check_content(content)
        stream = (stream or self.settings.stream).strip()
        if not stream:
            raise LogbookError("choose a stream to post to")
        topic = check_topic(topic)
        body = urllib.parse.urlencode({"type": "stream", "to": stream, "topic": topic, "content": content}).encode()
        data = self.http.request("POST", "/messages", body=body, content_type="application/x-www-form-urlencoded")
        return Posted(stream, topic, _ids(data))

    def upload(self, image: bytes, filename: str, content_type: str = "image/png") -> str:
        """Upload a file; returns its link as Zulip gives it (``/user_uploads/...``)."""
        _check_upload(image)
        body, ctype = _multipart({}, {"file": (filename, image, content_type)})
        data = self.http.request("POST", "/user_uploads", body=body, content_type=ctype)
        link = data.get("url") or data.get("uri")  # "uri" before Zulip 9.0
        if not link:
            raise LogbookError("Zulip accepted the upload but gave no link to it")
        return str(link)

    def send_image(self, topic: str, caption: str, image: bytes, filename: str = "plot.png", *,
                   stream: str | None = None) -> Posted:
        check_topic(topic)
        link = self.upload(image, filename)
        label = re.sub(r"[\[\]()\\]", "_", filename)
        content = (caption.strip() + "\n\n" if caption and caption.strip() else "") + f"[{label}]({link})"
        posted = self.send(topic, content, stream=stream)
        return Posted(posted.stream, posted.topic, posted.message_ids, link)


def open_logbook(settings: LogbookSettings, timeout: float = TIMEOUT) -> Logbook:
    """The logbook these settings describe (LogbookError when they are incomplete)."""
    return (ZulipLogbook if settings.direct else ProxyLogbook)(settings, timeout)


def _ids(data: dict) -> tuple[int, ...]:
    mid = data.get("id")
    return (int(mid),) if isinstance(mid, int) else ()


def _check_content(content: str) -> None:
    if not content or not content.strip():
        raise LogbookError("the message is empty")
    if len(content) > MAX_MESSAGE_CHARS:
        raise LogbookError(f"the message is {len(content)} characters long; Zulip takes {MAX_MESSAGE_CHARS}")


def _check_upload(data: bytes) -> None:
    if not data:
        raise LogbookError("the image is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise LogbookError(f"the image is {len(data) / 1e6:.1f} MB; Zulip takes at most "
                           f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB")
