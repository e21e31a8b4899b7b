"""A small Zulip for tests, on a free loopback port: the endpoints the logbook client calls, recording
every request (headers, query, form fields, uploaded files).

Two faces, as in the field:
- the facility's write-only proxy under ``/proxy/api``: ``GET /me`` names the stream of the token in
  ``X-API-key``; ``POST /send_message?topic=`` takes ``content`` and an optional file ``image``, which it
  stores as an upload and links at the end of the message, as the real proxy does;
- Zulip's REST API under ``/api/v1`` with HTTP basic auth (bot email + API key): ``GET /users/me``,
  ``POST /messages`` (form-encoded or multipart), ``POST /user_uploads``; uploads are served back from
  ``/user_uploads/...``.

Errors look like the real ones: the proxy answers 403/401 with FastAPI's ``{"detail": ...}``, Zulip
with ``{"result": "error", "msg": ..., "code": ...}``. ``delay`` makes every answer late (timeouts).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import itertools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROXY_PREFIX = "/proxy/api"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case (HTTP header names are case-insensitive)
    query: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # field -> (filename, data)


@dataclass
class Message:
    stream: str
    topic: str
    content: str
    sender: str
    id: int


class FakeZulip:
    """``with FakeZulip() as z: z.proxy_url, z.url, z.messages, z.uploads, z.requests``"""

    def __init__(self, *, token: str = "proxy-token-123", stream: str = "p002468 logbook",
                 bot_email: str = "damnit-bot@zulip.test", bot_key: str = "bot-key-456",
                 streams: tuple[str, ...] = ("p002468 logbook", "other stream")):
        self.token, self.stream = token, stream
        self.bot_email, self.bot_key = bot_email, bot_key
        self.streams = set(streams)
        self.delay = 0.0
        self.requests: list[Recorded] = []
        self.messages: list[Message] = []
        self.uploads: dict[str, bytes] = {}  # link -> data
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- addresses --------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def proxy_url(self) -> str:
        return self.base + PROXY_PREFIX

    @property
    def url(self) -> str:
        return self.base

    # -- life -------------------------------------------------------------------------------------
    def start(self) -> FakeZulip:
        zulip = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                zulip._handle(self, "GET")

            def do_POST(self):
                zulip._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-zulip", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeZulip:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- requests ---------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        rec = Recorded(method, parsed.path, {k.lower(): v for k, v in h.headers.items()},
                       dict(urllib.parse.parse_qsl(parsed.query)))
        ctype = h.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            rec.form, rec.files = _parse_multipart(ctype, body)
        elif ctype.startswith("application/x-www-form-urlencoded"):
            rec.form = dict(urllib.parse.parse_qsl(body.decode()))
        with self._lock:
            self.requests.append(rec)
        if self.delay:
            time.sleep(self.delay)
        try:
            status, payload, raw_type = self._route(rec)
        except Exception as e:  # a bug here should show in the test, as a 500 with the reason
            status, payload, raw_type = 500, {"result": "error", "msg": f"fake zulip: {e!r}"}, None
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", raw_type or "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def _route(self, rec: Recorded):
        path = rec.path
        if path.startswith(PROXY_PREFIX + "/"):
            return self._proxy(rec, path[len(PROXY_PREFIX):])
        if path.startswith("/api/v1/"):
            return self._zulip(rec, path[len("/api/v1"):])
        if path.startswith("/user_uploads/") and rec.method == "GET":
            data = self.uploads.get(path)
            if data is None:
                return 404, {"result": "error", "msg": "Not Found"}, None
            return 200, data, "image/png"
        return 404, {"detail": "Not Found"}, None

    def _proxy(self, rec: Recorded, path: str):
        key = rec.headers.get("x-api-key")
        if not key:
            return 403, {"detail": "Not authenticated"}, None
        if key != self.token:
            return 401, {"detail": "Unauthorised"}, None
        if path == "/me" and rec.method == "GET":
            return 200, {"proposal_no": 2468, "stream": self.stream, "bot_name": "DAMNIT bot"}, None
        if path == "/send_message" and rec.method == "POST":
            topic = rec.query.get("topic")
            if not topic:
                return 422, {"detail": [{"loc": ["query", "topic"], "msg": "Field required"}]}, None
            if "content" not in rec.form:
                return 422, {"detail": [{"loc": ["body", "content"], "msg": "Field required"}]}, None
            content = rec.form["content"]
            if "image" in rec.files:
                filename, data = rec.files["image"]
                link = self._store_upload(filename, data)
                content += f"\n\n[]({link})"
            return 200, self._post(self.stream, topic, content, "proxy"), None
        return 404, {"detail": "Not Found"}, None

    def _zulip(self, rec: Recorded, path: str):
        auth = rec.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.bot_email}:{self.bot_key}".encode()).decode()
        if auth != expected:
            return 401, {"result": "error", "msg": "Invalid API key", "code": "INVALID_API_KEY"}, None
        if path == "/users/me" and rec.method == "GET":
            return 200, {"result": "success", "msg": "", "email": self.bot_email, "full_name": "DAMNIT bot"}, None
        if path == "/messages" and rec.method == "POST":
            form = rec.form
            if form.get("type") not in ("stream", "channel"):
                return 400, {"result": "error", "msg": "Invalid message type", "code": "BAD_REQUEST"}, None
            stream = form.get("to", "")
            if stream not in self.streams:
                return 400, {"result": "error", "msg": f"Channel '{stream}' does not exist",
                             "code": "STREAM_DOES_NOT_EXIST"}, None
            if not form.get("topic"):
                return 400, {"result": "error", "msg": "Topic can't be empty", "code": "BAD_REQUEST"}, None
            if not form.get("content", "").strip():
                return 400, {"result": "error", "msg": "Message must not be empty", "code": "BAD_REQUEST"}, None
            return 200, self._post(stream, form["topic"], form["content"], "bot"), None
        if path == "/user_uploads" and rec.method == "POST":
            if len(rec.files) != 1:
                return 400, {"result": "error", "msg": "You must specify a file to upload",
                             "code": "BAD_REQUEST"}, None
            (filename, data), = rec.files.values()
            link = self._store_upload(filename, data)
            return 200, {"result": "success", "msg": "", "uri": link, "url": link, "filename": filename}, None
        return 404, {"result": "error", "msg": "Invalid API path", "code": "BAD_REQUEST"}, None

    def _store_upload(self, filename: str, data: bytes) -> str:
        with self._lock:
            link = f"/user_uploads/2/{len(self.uploads):02x}/{urllib.parse.quote(filename)}"
            self.uploads[link] = data
        return link

    def _post(self, stream: str, topic: str, content: str, sender: str) -> dict:
        with self._lock:
            mid = next(self._ids)
            self.messages.append(Message(stream, topic, content, sender, mid))
        return {"result": "success", "msg": "", "id": mid}


def _parse_multipart(ctype: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body)
    form, files = {}, {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            files[name] = (filename, data)
        else:
            form[name] = data.decode(part.get_content_charset() or "utf-8")
    return form, files
