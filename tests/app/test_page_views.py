"""The pages' derived views follow their params (no browser): what a pane or widget shows is recomputed
when the param it depends on changes, and stays escaped text."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ServerConfig
from app.display.text import SafeText
from app.live.session import SessionState
from app.live.source import ProposalSource
from app.pages import landing
from app.pages.bigscreen import BigScreen
from app.pages.inspect import InspectPage
from app.pages.logbook import SendTable
from app.pages.run_panel import RunPanel
from backend.storage.synthetic import make_database, set_value

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def db(tmp_path):
    return make_database(tmp_path / "db", n_runs=3, n_vars=0, user_vars=False)


@pytest.fixture
def session(db):
    return SessionState(source=ProposalSource(db, broker="none", start=False), can_write=True)


def test_run_panel_title_and_button_follow_the_selected_run(session):
    panel = RunPanel(session=session)
    assert panel.title.object == "No run selected" and panel.open_inspect.disabled
    key = session.source.key_for(None, 2)
    session.selected_runs = [key]
    assert panel.run == key and panel.title.object == f"Run {key}" and not panel.open_inspect.disabled
    panel.showing = False  # off screen: nothing drawn, the title still says which run is selected
    assert panel.body.objects == []
    session.selected_runs = []
    assert panel.title.object == "No run selected" and panel.open_inspect.disabled
    panel.showing = True
    assert "Click a run" in panel.body.objects[0].object


def test_inspect_follows_the_selection_and_reloads(session):
    page = InspectPage(session=session)
    keys = session.source.run_keys()
    assert page.run == keys[-1] and page.run_select.value == keys[-1]
    first = page.body.objects[0]
    session.selected_runs = [keys[0]]
    assert page.run == keys[0] and page.run_select.value == keys[0]
    assert page.body.objects[0] is not first
    shown = page.body.objects[0]
    page.refresh.clicks += 1
    page.refresh.param.trigger("value")  # what a click in the browser does
    assert page.body.objects[0] is not shown


def test_big_screen_header_follows_the_newest_run_as_text(db, session):
    set_value(db, 3, "energy", 9.25)
    set_value(db, 3, "label", HOSTILE)
    session.source.poll(force=True)
    screen = BigScreen(session=session, fill=True)
    layout = screen.__panel__()
    assert layout.run.object == "Run 3" and layout.started.object.startswith("started ")
    assert "9.2500" in [v.objects[1].object for v in layout.values.objects]
    assert layout.status.newest_data > 0
    set_value(db, 4, "energy", 1.5)
    set_value(db, 4, HOSTILE, 7.0)  # a number under a hostile name: one of the key values
    session.source.poll(force=True)
    assert screen.run == 4 and layout.run.object == "Run 4"
    names = [box.objects[0] for box in layout.values.objects]
    hostile = next(p for p in names if p.object == HOSTILE)
    assert isinstance(hostile, SafeText) and "<img" not in hostile._transform_object(HOSTILE)["object"]
    set_value(db, 4, "energy", 2.75)  # reprocessed: the values shown change, the run does not
    session.source.poll(force=True)
    assert "2.7500" in [v.objects[1].object for v in layout.values.objects]


def test_logbook_button_follows_the_selection(session):
    dialog = SendTable(session=session, columns=lambda: ["run"])
    assert dialog.open_button.disabled and dialog.open_button.label == "Send to logbook"
    session.selected_runs = session.source.run_keys()[:1]
    assert not dialog.open_button.disabled and dialog.open_button.label == "Send 1 run to logbook"


def test_landing_search_filters_the_table(monkeypatch):
    listed = [landing.Listed(900001, "SPB", "202401", Path("/a"), "?proposal=900001"),
              landing.Listed(900002, "FXE", "202402", Path("/b"), "?proposal=900002")]
    monkeypatch.setattr(landing, "served_proposals", lambda cfg, user: listed)
    directory = landing.ProposalDirectory(cfg=ServerConfig(), user="")
    assert len(directory.table.value) == 2
    directory.search.value_input = "fxe"
    assert directory.table.value["Proposal"].tolist() == ["900002"]
    directory.search.value_input = ""
    assert len(directory.table.value) == 2
