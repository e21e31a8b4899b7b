"""Sending to the logbook from the dashboard in a real browser, against a small local Zulip
(tests/infra/zulip.py): two selected runs as a Markdown table through the facility's proxy, a plot as a
PNG through Zulip's REST API, the settings set up from the dialog, hostile text kept as text on both
sides, and no send controls in a read-only dashboard."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from app.server.launcher import DashboardServer
from backend.storage.logbook_settings import read_logbook_settings, settings_path, update_logbook_settings
from backend.storage.synthetic import make_database, set_value
from tests.app.browser.test_dashboard import cell, open_table, wait_for
from tests.infra.zulip import FakeZulip

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_TOPIC = "<img src=y onerror=alert(2)>"


@pytest.fixture
def serve(tmp_path):
    """Start dashboards of the given databases (with flags); stopped after the test."""
    servers: list[DashboardServer] = []

    def start(databases, *flags):
        srv = DashboardServer(databases, *flags, env={"AMORE_BROKER": "none"},
                              log_path=tmp_path / f"server{len(servers)}.log")
        servers.append(srv)
        try:
            return srv.start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def zulip():
    with FakeZulip() as z:
        yield z


@pytest.fixture
def db(tmp_path):
    d = make_database(tmp_path / "db", proposal=2468, n_runs=12, n_vars=6)
    set_value(d, 3, "comment", "beam ok")
    set_value(d, 5, "comment", HOSTILE)
    return d


def watch_alerts(page) -> list[str]:
    alerts: list[str] = []

    def on_dialog(d):
        alerts.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    return alerts


def dialog(page, kind: str):
    return page.locator(f".dmn-logbook-{kind}")


def status_text(box) -> str:
    """The dialog's status line (a Panel HTML pane: its text is in its shadow root)."""
    return box.locator(".dmn-logbook-status").evaluate(
        "e => (e.shadowRoot ? e.shadowRoot.textContent : e.textContent) || ''")


def test_two_runs_go_to_the_stream_as_a_markdown_table(serve, db, zulip, page):
    update_logbook_settings(db, url=zulip.proxy_url, key=zulip.token, topics=["beamtime", HOSTILE_TOPIC])
    srv = serve([db])
    alerts = watch_alerts(page)
    open_table(page, srv.url)
    cell(page, 3, "start_time").click()
    cell(page, 5, "start_time").click(modifiers=["Control"])
    page.get_by_role("button", name="Send 2 runs to logbook").click()
    box = dialog(page, "table")
    box.wait_for(state="visible")
    stream = box.locator(".dmn-logbook-stream input")
    assert wait_for(lambda: stream.input_value() == zulip.stream)  # asked the proxy
    message = box.locator(".dmn-logbook-message textarea")
    text = message.input_value()
    assert "| Run |" in text and f"`{HOSTILE}`" in text and "beam ok" in text
    assert box.locator("img").count() == 0 and page.evaluate("() => document.querySelectorAll('img[src=x]').length") == 0
    topic = box.locator(".dmn-logbook-topic input")
    assert topic.input_value() == "beamtime"
    known = box.locator(".dmn-logbook-topics select")
    assert known.locator("option").all_inner_texts() == ["(pick one)", "beamtime", HOSTILE_TOPIC]  # offered as text
    known.select_option(HOSTILE_TOPIC)
    assert wait_for(lambda: topic.input_value() == HOSTILE_TOPIC)
    box.get_by_label("Title (optional)").fill("Good runs")
    assert wait_for(lambda: message.input_value().startswith("### Good runs\n"))
    box.locator(".dmn-logbook-send button").click()
    assert wait_for(lambda: len(zulip.messages) == 1, timeout=15), box.inner_text()
    msg = zulip.messages[0]
    assert (msg.stream, msg.topic) == (zulip.stream, HOSTILE_TOPIC)
    lines = msg.content.splitlines()
    assert lines[0] == "### Good runs"
    assert lines[1].startswith("| Run | Timestamp (") and "| Comment |" in lines[1]
    assert re.match(r"\|---\|", lines[2])
    runs = [line.split(" | ")[0].lstrip("| ") for line in lines[3:]]
    assert runs == ["3", "5"]
    assert f"| `{HOSTILE}` |" in lines[4] and "| beam ok |" in lines[3]
    req = [r for r in zulip.requests if r.path.endswith("/send_message")][0]
    assert req.headers["x-api-key"] == zulip.token and req.query == {"topic": HOSTILE_TOPIC}
    note = page.locator(".notyf__message", has_text=f"Sent to the logbook ({zulip.stream} > {HOSTILE_TOPIC})")
    note.wait_for(timeout=5000)  # the topic shown as text
    assert wait_for(lambda: not box.is_visible())
    assert page.locator("img[src=x], img[src=y]").count() == 0 and alerts == []


def plot_image(zulip: FakeZulip) -> tuple[str, Image.Image]:
    (link, data), = zulip.uploads.items()
    return link, Image.open(io.BytesIO(data))


def test_a_plot_is_uploaded_as_png_and_linked(serve, db, zulip, page):
    update_logbook_settings(db, url=zulip.url, key=zulip.bot_key, email=zulip.bot_email, stream=zulip.stream,
                            topics=["plots"])
    srv = serve([db])
    page.set_viewport_size({"width": 1600, "height": 1100})
    page.goto(srv.url + "?page=plots")
    button = page.locator(".dmn-logbook-open-plot button").first
    button.wait_for(timeout=30000)
    page.locator(".damnit-summary-plot canvas").first.wait_for(timeout=30000)
    button.click()
    box = dialog(page, "plot").first
    box.wait_for(state="visible")
    box.locator(".dmn-logbook-preview img").wait_for(timeout=20000)
    caption = box.locator(".dmn-logbook-caption textarea")
    assert " vs. Run (p2468)" in caption.input_value()
    caption.fill("Energy over the shift")
    assert box.locator(".dmn-logbook-stream input").input_value() == zulip.stream
    box.locator(".dmn-logbook-send button").click()
    assert wait_for(lambda: len(zulip.messages) == 1, timeout=15), box.inner_text()
    link, img = plot_image(zulip)
    assert img.format == "PNG" and 600 <= img.width <= 1400 and 350 <= img.height <= 900
    pixels = np.asarray(img.convert("RGB"), dtype=float)
    assert pixels.std() > 20  # not blank: axes, labels, points
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 20
    msg = zulip.messages[0]
    assert (msg.stream, msg.topic) == (zulip.stream, "plots")
    assert msg.content == f"Energy over the shift\n\n[summary.png]({link})"
    upload = [r for r in zulip.requests if r.path == "/api/v1/user_uploads"][0]
    assert upload.headers["authorization"].startswith("Basic ") and upload.files["file"][0] == "summary.png"


def test_settings_from_the_dialog_then_send(serve, db, zulip, page):
    srv = serve([db])
    open_table(page, srv.url)
    cell(page, 3, "start_time").click()
    page.get_by_role("button", name="Send 1 run to logbook").click()
    box = dialog(page, "table")
    box.wait_for(state="visible")
    assert "No logbook is set up" in status_text(box)
    assert box.locator(".dmn-logbook-send button").is_disabled()
    settings = box.locator(".dmn-logbook-settings")
    settings.get_by_label(re.compile("^Address")).fill(zulip.proxy_url)
    settings.get_by_label(re.compile("^Key")).fill(zulip.token)
    settings.get_by_label(re.compile("^Topics")).fill("beamtime\nalignment")
    settings.locator(".dmn-logbook-save button").click()
    assert wait_for(lambda: read_logbook_settings(db).key == zulip.token)
    assert read_logbook_settings(db).topics == ("beamtime", "alignment")
    assert wait_for(lambda: box.locator(".dmn-logbook-stream input").input_value() == zulip.stream)
    assert settings.get_by_label(re.compile("^Key")).input_value() == ""  # the key is not sent back
    assert zulip.token not in page.content()
    box.locator(".dmn-logbook-send button").click()
    assert wait_for(lambda: len(zulip.messages) == 1, timeout=15)
    assert zulip.messages[0].topic == "beamtime"


def test_refusals_are_shown_with_the_reason(serve, db, zulip, page):
    update_logbook_settings(db, url=zulip.proxy_url, key="not-the-token", topics=["beamtime"])
    srv = serve([db])
    open_table(page, srv.url)
    cell(page, 3, "start_time").click()
    page.get_by_role("button", name="Send 1 run to logbook").click()
    box = dialog(page, "table")
    box.wait_for(state="visible")
    assert wait_for(lambda: "Unauthorised" in status_text(box))
    box.locator(".dmn-logbook-send button").click()
    assert wait_for(lambda: "Not sent: Zulip refused: 401 Unauthorized: Unauthorised" in status_text(box))
    page.locator(".notyf__message", has_text="Not sent: Zulip refused: 401").wait_for(timeout=5000)
    assert zulip.messages == [] and box.is_visible()


def test_read_only_dashboard_has_no_send_controls(serve, db, zulip, page):
    update_logbook_settings(db, url=zulip.proxy_url, key=zulip.token, topics=["beamtime"])
    srv = serve([db], "--read-only")
    open_table(page, srv.url)
    cell(page, 3, "start_time").click()
    assert page.get_by_role("button", name=re.compile("to logbook")).count() == 0
    page.goto(srv.url + "?page=plots")
    page.locator(".damnit-summary-plot canvas").first.wait_for(timeout=30000)
    assert page.get_by_role("button", name=re.compile("logbook")).count() == 0
    assert zulip.requests == []
    assert settings_path(db).read_text().count(zulip.token) == 1
