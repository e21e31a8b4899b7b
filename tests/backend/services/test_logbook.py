"""The logbook client against a small local Zulip (tests/infra/zulip.py): both ways in (the facility's
proxy, Zulip's REST API), refusals, time-outs, a server that is down, Markdown that shows hostile text
as text, and the original DAMNIT's own client reading our zulip.cfg and talking to the same server."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest
from PIL import Image

from app.server.launcher import free_port
from backend.services.logbook import (
    MAX_MESSAGE_CHARS,
    LogbookError,
    markdown_table,
    markdown_text,
    open_logbook,
)
from backend.storage.logbook_settings import LogbookSettings, update_logbook_settings
from tests.infra.zulip import PROXY_PREFIX, FakeZulip


def png_bytes(w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def zulip():
    with FakeZulip() as z:
        yield z


def proxy_settings(z: FakeZulip, **kw) -> LogbookSettings:
    return LogbookSettings(**{"url": z.proxy_url, "key": z.token, "topics": ("beamtime",), **kw})


def bot_settings(z: FakeZulip, **kw) -> LogbookSettings:
    return LogbookSettings(**{"url": z.url, "key": z.bot_key, "email": z.bot_email, "stream": "p002468 logbook",
                              **kw})


# --- the facility's proxy (the original's way) ---------------------------------------------------------

def test_proxy_message(zulip):
    book = open_logbook(proxy_settings(zulip))
    assert book.stream() == zulip.stream
    posted = book.send("beamtime", "hello **logbook**")
    assert posted.message_ids == (1001,) and posted.topic == "beamtime" and posted.stream == zulip.stream
    msg, = zulip.messages
    assert (msg.stream, msg.topic, msg.content) == (zulip.stream, "beamtime", "hello **logbook**")
    req = zulip.requests[-1]
    assert req.path == PROXY_PREFIX + "/send_message" and req.query == {"topic": "beamtime"}
    assert req.headers["x-api-key"] == zulip.token and "authorization" not in req.headers
    assert req.form == {"content": "hello **logbook**"} and req.files == {}


def test_proxy_image_is_uploaded_and_linked(zulip):
    png = png_bytes()
    open_logbook(proxy_settings(zulip)).send_image("beamtime", "XGM vs run", png, "xgm.png")
    req = zulip.requests[-1]
    assert req.files == {"image": ("xgm.png", png)} and req.form == {"content": "XGM vs run"}
    link, = zulip.uploads
    assert zulip.uploads[link] == png
    assert zulip.messages[0].content == f"XGM vs run\n\n[]({link})"


# --- Zulip's REST API as a bot -------------------------------------------------------------------------

def test_direct_message_with_basic_auth(zulip):
    book = open_logbook(bot_settings(zulip))
    assert book.check() == "DAMNIT bot"
    book.send("beamtime", "runs 3-5 look good")
    req = zulip.requests[-1]
    assert req.path == "/api/v1/messages"
    assert req.headers["authorization"].startswith("Basic ")
    assert req.form == {"type": "stream", "to": "p002468 logbook", "topic": "beamtime",
                        "content": "runs 3-5 look good"}
    book.send("beamtime", "elsewhere", stream="other stream")
    assert zulip.messages[-1].stream == "other stream"


def test_direct_image_is_uploaded_then_linked(zulip):
    png = png_bytes()
    posted = open_logbook(bot_settings(zulip)).send_image("beamtime", "Energy [uJ]", png, "energy.png")
    upload, message = zulip.requests[-2:]
    assert upload.path == "/api/v1/user_uploads" and upload.files == {"file": ("energy.png", png)}
    assert message.path == "/api/v1/messages"
    assert posted.upload_url in zulip.uploads and zulip.uploads[posted.upload_url] == png
    assert zulip.messages[0].content == f"Energy [uJ]\n\n[energy.png]({posted.upload_url})"


# --- failures ------------------------------------------------------------------------------------------

def test_wrong_key_is_refused_with_the_servers_reason(zulip, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LogbookError) as e:
        open_logbook(proxy_settings(zulip, key="wrong-proxy-key")).send("beamtime", "x")
    assert str(e.value) == "Zulip refused: 401 Unauthorized: Unauthorised"
    with pytest.raises(LogbookError) as e:
        open_logbook(bot_settings(zulip, key="wrong-bot-key")).send("beamtime", "x")
    assert str(e.value) == "Zulip refused: 401 Unauthorized: Invalid API key"
    assert "wrong-" not in caplog.text and zulip.bot_key not in caplog.text and zulip.token not in caplog.text
    assert zulip.messages == []


def test_unknown_stream_and_bad_input(zulip):
    book = open_logbook(bot_settings(zulip))
    with pytest.raises(LogbookError, match="Zulip refused: 400 Bad Request: Channel 'nope' does not exist"):
        book.send("beamtime", "x", stream="nope")
    with pytest.raises(LogbookError, match="choose a topic"):
        book.send("  ", "x")
    with pytest.raises(LogbookError, match="Zulip allows 60"):
        book.send("t" * 61, "x")
    with pytest.raises(LogbookError, match="the message is empty"):
        book.send("beamtime", " \n")
    with pytest.raises(LogbookError, match=f"Zulip takes {MAX_MESSAGE_CHARS}"):
        book.send("beamtime", "x" * (MAX_MESSAGE_CHARS + 1))
    assert zulip.messages == []


def test_incomplete_settings_say_what_is_missing():
    with pytest.raises(LogbookError, match="zulip.url, zulip.key missing"):
        open_logbook(LogbookSettings())
    with pytest.raises(LogbookError, match="zulip.stream missing"):
        open_logbook(LogbookSettings(url="https://z.example.org", key="k", email="bot@z.example.org"))


def test_a_slow_server_times_out(zulip):
    zulip.delay = 3
    t0 = time.monotonic()
    with pytest.raises(LogbookError, match=r"did not answer within 0.5 s"):
        open_logbook(proxy_settings(zulip), timeout=0.5).send("beamtime", "x")
    assert time.monotonic() - t0 < 2.5


def test_a_server_that_is_down():
    url = f"http://127.0.0.1:{free_port()}/proxy/api"
    with pytest.raises(LogbookError, match=rf"could not reach the logbook at {url}/me: .*refused"):
        open_logbook(LogbookSettings(url=url, key="k"), timeout=2).send("beamtime", "x")
    base = url.removesuffix("/proxy/api")
    with pytest.raises(LogbookError, match=rf"could not reach the logbook at {base}/api/v1/user_uploads: .*refused"):
        open_logbook(LogbookSettings(url=base, key="k", email="bot@z.test", stream="s"), timeout=2).send_image(
            "beamtime", "", png_bytes())


def test_an_answer_that_is_not_json(zulip):
    zulip.uploads["/user_uploads/2/00/me"] = b"<html>a login page</html>"  # served as is by GET
    with pytest.raises(LogbookError, match="answered with something that is not JSON: b'<html>a login"):
        open_logbook(LogbookSettings(url=zulip.url + "/user_uploads/2/00", key="k")).stream()


# --- Markdown ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    ("plain text, 3.5 uJ (ok): fine", "plain text, 3.5 uJ (ok): fine"),
    ("<img src=x onerror=alert(1)>", "`<img src=x onerror=alert(1)>`"),
    ("@**all** look", "`@**all** look`"),
    ("a | b", "`a | b`"),
    ("[click](https://evil.example)", "`[click](https://evil.example)`"),
    ("uses `code` here", "``uses `code` here``"),
    ("`", "`` ` ``"),
    ("two\nlines\ttab", "two lines tab"),
    (None, ""),
    ("$$x^2$$ and ~~gone~~", "`$$x^2$$ and ~~gone~~`"),
])
def test_cells_show_literally(value, shown):
    assert markdown_text(value) == shown


def test_table_and_title():
    msg, = markdown_table(["Run", "Comment"], [["3", "ok"], ["5", "<b>x</b>"]], title="Good runs")
    assert msg == "### Good runs\n| Run | Comment |\n|---|---|\n| 3 | ok |\n| 5 | `<b>x</b>` |"


def test_long_tables_are_split_with_the_header_in_each_message():
    rows = [[str(i), "x" * 80] for i in range(400)]
    messages = markdown_table(["Run", "Text"], rows, title="All")
    assert len(messages) > 2
    assert all(len(m) <= MAX_MESSAGE_CHARS for m in messages)
    assert messages[0].startswith("### All\n| Run | Text |") and messages[1].startswith("| Run | Text |")
    sent = [line for m in messages for line in m.splitlines() if line.startswith("| ") and "Text" not in line]
    assert [line.split(" | ")[0][2:] for line in sent] == [str(i) for i in range(400)]
    with pytest.raises(LogbookError, match="one row of the table"):
        markdown_table(["a"], [["y" * MAX_MESSAGE_CHARS]])


# --- the original DAMNIT's client, unchanged, against our zulip.cfg and the same server --------------

ORACLE_CLIENT = r'''
import json, os, sys, types
from pathlib import Path
# The original's logbook module needs PyQt6 only for its dialog classes; stand-ins let it import.
qt, core, widgets = (types.ModuleType(n) for n in ("PyQt6", "PyQt6.QtCore", "PyQt6.QtWidgets"))
class Widget:
    def __init__(self, *a, **k): pass
widgets.QDialog = widgets.QWidget = Widget
qt.QtCore, qt.QtWidgets = core, widgets
sys.modules.update({"PyQt6": qt, "PyQt6.QtCore": core, "PyQt6.QtWidgets": widgets})
import damnit
gui = types.ModuleType("damnit.gui")  # without damnit/gui/__init__.py, which starts the whole GUI
gui.__path__ = [os.path.join(os.path.dirname(damnit.__file__), "gui")]
sys.modules["damnit.gui"] = gui
from damnit.gui import zulip_messenger as zm

errors = []
messenger = types.SimpleNamespace(config_path=Path(sys.argv[1]) / "zulip.cfg", error_dialog=errors.append,
                                  fetch_topics=lambda: [], last_topic=None)
messenger.fetch_stream = lambda: zm.ZulipMessenger.fetch_stream(messenger)
ok = zm.ZulipMessenger.fetch_config(messenger)
dialog = types.SimpleNamespace(
    messenger=messenger, kind="figure", img=open(sys.argv[2], "rb"), msg=None,
    edit_title=types.SimpleNamespace(text=lambda: "from the original"),
    edit_topic=types.SimpleNamespace(currentText=lambda: messenger.topics[0]),
    main_window=types.SimpleNamespace(show_status_message=lambda *a, **k: None),
    show_msg=lambda msg, level="error": errors.append(msg), accept=lambda: None)
dialog._send_msg = lambda *a: zm.ZulipConfig._send_msg(dialog, *a)
zm.ZulipConfig.handle_form(dialog)
print(json.dumps({"ok": ok, "key": messenger.key, "url": messenger.url, "topics": messenger.topics,
                  "stream": messenger.stream, "last_topic": messenger.last_topic, "errors": errors}))
'''


def test_the_original_reads_our_settings_and_sends_as_we_do(zulip, damnit_oracle, tmp_path):
    db = tmp_path / "amore"
    db.mkdir()
    update_logbook_settings(db, url=zulip.proxy_url, key=zulip.token, topics="beamtime, alignment")
    png = tmp_path / "plot.png"
    png.write_bytes(png_bytes())
    script = tmp_path / "original_client.py"
    script.write_text(ORACLE_CLIENT)
    out = damnit_oracle._run([str(damnit_oracle.python), str(script), str(db), str(png)], cwd=tmp_path, env=None,
                             timeout=120, check=True).stdout
    theirs = json.loads(out.strip().splitlines()[-1])
    assert theirs == {"ok": True, "key": zulip.token, "url": zulip.proxy_url, "topics": ["beamtime", "alignment"],
                      "stream": zulip.stream, "last_topic": "beamtime", "errors": []}
    original = zulip.requests[-1]
    # ours, the same way in
    from backend.storage.logbook_settings import read_logbook_settings

    open_logbook(read_logbook_settings(db)).send_image("beamtime", "from here", png.read_bytes(), "plot.png")
    ours = zulip.requests[-1]
    for r in (original, ours):
        assert r.method == "POST" and r.path == PROXY_PREFIX + "/send_message"
        assert r.query == {"topic": "beamtime"} and r.headers["x-api-key"] == zulip.token
        assert set(r.form) == {"content"} and set(r.files) == {"image"}
        assert r.files["image"][1] == png.read_bytes()
    assert [m.content.split("\n\n")[0] for m in zulip.messages] == ["from the original", "from here"]
    assert Path(db / "zulip.cfg").read_text().startswith("[ZULIP]\n")
