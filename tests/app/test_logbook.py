"""Sending to the logbook from a dashboard session, without a browser: who may send and who may change
the settings (checked on the server, whatever the page shows), the table the dialog builds, the audit
log, and a send through the dialog's own code path to a local Zulip (tests/infra/zulip.py)."""

from __future__ import annotations

import logging

import holoviews as hv
import numpy as np
import pytest

from app import shell
from app.actions import logbook as actions
from app.config import ServerConfig
from app.live.source import ProposalSource
from app.pages.logbook import SendPlot, SendTable, table_rows
from backend.services.logbook import LogbookError
from backend.storage.logbook_settings import read_logbook_settings, settings_path, update_logbook_settings
from backend.storage.synthetic import make_database, set_value
from tests.infra.zulip import FakeZulip

HOSTILE = "<img src=x onerror=alert(1)>"
COLUMNS = ["run", "start_time", "comment", "v000", "v003", "v006", "v008"]  # v003 thumbnails, v006 trendlines


@pytest.fixture
def zulip():
    with FakeZulip() as z:
        yield z


@pytest.fixture
def source(tmp_path, zulip):
    db = make_database(tmp_path / "db", proposal=2468, n_runs=8, n_vars=10)
    set_value(db, 5, "comment", HOSTILE)
    update_logbook_settings(db, url=zulip.proxy_url, key=zulip.token, topics=["beamtime"])
    src = ProposalSource(db, broker="none", start=False)
    yield src
    src.stop()


def session_for(source, monkeypatch, user: str = "", **cfg):
    monkeypatch.setattr(shell, "session_user", lambda _cfg: user)
    return shell.make_session(source, ServerConfig(**cfg))


def test_the_dialog_sends_the_selected_runs_as_a_table(source, zulip, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="app.actions.logbook")
    session = session_for(source, monkeypatch)
    session.selected_runs = [5, 3]
    dialog = SendTable(session=session, columns=lambda: COLUMNS)
    assert dialog.open_button.label == "Send 2 runs to logbook" and not dialog.open_button.disabled
    dialog._open()  # work "in the background" runs right here outside a server
    assert dialog.dialog.visible and dialog.stream.value == zulip.stream and dialog.topic.value == "beamtime"
    text = dialog.message.value
    assert f"`{HOSTILE}`" in text and "v003" not in text and "v006" not in text
    dialog._send()
    msg, = zulip.messages
    lines = msg.content.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 3", "| 5"]
    assert not dialog.dialog.visible and dialog.status.object.startswith("Sent to the logbook")
    assert actions.last_topic(session) == "beamtime"
    assert f"local user sent runs 3, 5 as a table to stream '{zulip.stream}', topic 'beamtime'" in caplog.text
    assert zulip.token not in caplog.text


def test_an_edited_message_goes_as_written(source, zulip, monkeypatch):
    session = session_for(source, monkeypatch)
    session.selected_runs = [2]
    dialog = SendTable(session=session, columns=lambda: COLUMNS)
    dialog._open()
    dialog.message.value = "Run 2 was **the** good one"
    dialog._send()
    assert zulip.messages[0].content == "Run 2 was **the** good one"


def test_a_refused_send_is_logged_without_the_key(source, zulip, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="app.actions.logbook")
    update_logbook_settings(source.db_dir, key="wrong-key-789")
    session = session_for(source, monkeypatch)
    with pytest.raises(LogbookError, match="401"):
        actions.send_text(session, "x", topic="beamtime")
    assert "local user could not send a message (topic 'beamtime')" in caplog.text and "401" in caplog.text
    assert "wrong-key-789" not in caplog.text


def test_read_only_sessions_cannot_send(source, zulip, monkeypatch):
    session = session_for(source, monkeypatch, read_only=True)
    session.selected_runs = [3]
    dialog = SendTable(session=session, columns=lambda: COLUMNS)
    assert not dialog.__panel__().visible
    for forged in (lambda: actions.send_table(session, ["Run"], [["3"]], topic="beamtime"),
                   lambda: actions.send_text(session, "forged", topic="beamtime"),
                   lambda: actions.send_plot(session, b"\x89PNG...", topic="beamtime"),
                   lambda: dialog._post("beamtime", None)):
        with pytest.raises(PermissionError, match="read-only"):
            forged()
    assert zulip.requests == [] and zulip.messages == []


def test_remote_sessions_need_a_signed_in_user(source, zulip, monkeypatch):
    session = session_for(source, monkeypatch, address="0.0.0.0", auth="header", user_header="X-User")
    with pytest.raises(PermissionError, match="signed-in user"):
        actions.send_text(session, "x", topic="beamtime")
    assert zulip.requests == []


def test_only_context_editors_change_the_settings(source, zulip, monkeypatch):
    cfg = dict(address="0.0.0.0", auth="header", user_header="X-User", context_editors=["alice"])
    bob = session_for(source, monkeypatch, user="bob", **cfg)
    assert bob.can_write and not bob.can_edit_context
    assert not SendTable(session=bob, columns=lambda: COLUMNS).settings.visible
    before = settings_path(source.db_dir).read_text()
    with pytest.raises(PermissionError):
        actions.save_settings(bob, url="https://evil.example.org", key="stolen", topics="x")
    assert settings_path(source.db_dir).read_text() == before
    actions.send_text(bob, "bob may still send", topic="beamtime")  # sending is a write, not a setting
    assert zulip.messages[-1].content == "bob may still send"

    alice = session_for(source, monkeypatch, user="alice", **cfg)
    dialog = SendTable(session=alice, columns=lambda: COLUMNS)
    assert dialog.settings.visible
    dialog._open()
    assert dialog.set_key.value == "" and dialog.set_key.placeholder.startswith("set")
    dialog.set_topics.value = "beamtime\nalignment"
    dialog._save_settings()
    saved = read_logbook_settings(source.db_dir)
    assert saved.key == zulip.token and saved.topics == ("beamtime", "alignment")  # an empty key keeps it
    dialog.set_url.value = "not a url"
    dialog._save_settings()
    assert "must start with http" in dialog.status.object
    assert read_logbook_settings(source.db_dir).url == zulip.proxy_url
    assert zulip.token not in repr(actions.logbook_info(alice))


def test_table_rows_as_the_table_shows_them(source):
    tz = ServerConfig().tz
    set_value(source.db_dir, 4, "v000", float("nan"))
    source.reload()
    headers, rows = table_rows(source, [4, 2, 99], COLUMNS, tz)
    title = {n: source.variable(n).display_title for n in COLUMNS[3:]}
    assert headers[0] == "Run" and headers[1].startswith("Timestamp (") and headers[2] == "Comment"
    assert headers[3].startswith(title["v000"]) and headers[4] == title["v008"]
    assert len(headers) == 5  # thumbnails (v003) and trendlines (v006) left out
    assert [r[0] for r in rows] == ["2", "4"]  # ascending; a run not in the table is skipped
    assert rows[1][3] == ""  # NaN: empty, as the original's copy


def test_the_plot_dialog_draws_and_sends_a_png(source, zulip, monkeypatch):
    session = session_for(source, monkeypatch)
    curve = hv.Curve(np.sin(np.linspace(0, 6, 200))).opts(title="A sine")
    dialog = SendPlot(session=session, plot=lambda: curve, name_hint="sine wave")
    dialog._open()
    assert dialog.caption.value == "A sine (p2468)" and dialog.preview.visible and not dialog.send_button.disabled
    dialog._send()
    (link, png), = zulip.uploads.items()
    assert png.startswith(b"\x89PNG") and zulip.messages[0].content == f"A sine (p2468)\n\n[]({link})"
    assert zulip.requests[-1].files["image"][0] == "sine_wave.png"

    empty = SendPlot(session=session, plot=lambda: None)
    empty._open()
    assert "nothing is plotted yet" in empty.status.object and empty.send_button.disabled
