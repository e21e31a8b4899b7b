"""The run table's layout, filters, menus, variable deletion and pre-created runs without a browser:
the page's params and the messages its browser side sends, the layout store, the writes and their
rights (tests/app/browser/test_run_table_features.py drives the same in Chromium)."""

from __future__ import annotations

import json
import sqlite3

import h5py
import numpy as np
import pytest

from app.actions import edits
from app.live.session import SessionState
from app.live.source import ProposalSource
from app.pages.run_table import cells
from app.pages.run_table.filter_panel import histogram_svg
from app.pages.run_table.layouts import LayoutStore, TableLayout, table_key
from app.pages.run_table.page import RunTablePage, css_string
from app.pages.run_table.rows import RowFilter
from backend.storage.database import DamnitDB
from backend.storage.h5format import read_reduced, run_file_path, write_results
from backend.storage.records import VariableResult
from backend.storage.synthetic import make_database

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def db(tmp_path):
    return make_database(tmp_path / "db", proposal=1234, n_runs=12, n_vars=10)


@pytest.fixture
def source(db):
    src = ProposalSource(db, broker="none", start=False)
    yield src
    src.stop()


def session(source, **rights) -> SessionState:
    return SessionState(source=source, **{"can_write": True, "can_edit_context": True, **rights})


class Bridge:
    """Stands in for the browser: what the page sends it, and messages as the browser sends them."""

    def __init__(self, page: RunTablePage):
        self.page, self.sent = page, []
        page.bridge.send = self.sent.append
        page._table_ids = lambda: {"T1"}

    def __call__(self, kind: str, **msg) -> None:
        self.page._on_bridge({"kind": kind, "table": "T1", **msg})


def with_run_files(db, runs, names=("v000", "v001")) -> None:
    """HDF5 run files holding ``names`` (data, summary and preview), as processing writes them."""
    for run in runs:
        write_results(run_file_path(db, 1234, run), [
            VariableResult(n, data=np.arange(5.0) + run, summary=float(run), preview=np.arange(3.0))
            for n in names])


# ---------------------------------------------------------------- layout

def test_layout_from_untrusted_json_is_checked_and_bounded():
    assert TableLayout.from_json("nope") is None and TableLayout.from_json([1]) is None
    got = TableLayout.from_json({"order": ["a", 3, "", "a", "b" * 400, "c"], "hidden": "x",
                                 "widths": {"a": 5, "b": 10 ** 9, "c": "wide", "d": True, "e": float("nan"), "f": 120.7},
                                 "hierarchical": "no", "show_processing": False})
    assert got.order == ["a", "c"] and got.hidden == []
    assert got.widths == {"a": 30, "b": 2000, "f": 120}
    assert got.hierarchical is True and got.show_processing is False
    assert TableLayout.from_json(got.to_json()) == got


def test_layout_store_keeps_one_file_per_user_outside_any_proposal(tmp_path):
    store = LayoutStore(tmp_path / "state")
    layout = TableLayout(order=["v001", "comment"], hidden=["start_time"], widths={"v001": 300})
    assert store.save("alice", "p1234", layout)
    assert store.load("alice", "p1234") == layout
    assert store.load("alice", "p99") is None and store.load("bob", "p1234") is None
    assert not store.save("", "p1234", layout) and store.load("", "p1234") is None
    for hostile in ("../../etc/passwd", "/abs", "a/b\\c", "..", EVIL):
        path = store.path_for(hostile)
        assert path.parent == store.folder and not path.name.startswith(".")
        assert store.save(hostile, "p1", layout) and store.load(hostile, "p1") == layout
    assert store.path_for("a/b") != store.path_for("a_b")  # names differing in left-out characters
    assert sorted(p.suffix for p in (tmp_path / "state").iterdir()) == [".json"] * 6  # alice and the five above
    (store.path_for("carol")).write_text("{not json")
    assert store.load("carol", "p1234") is None  # a damaged file is ignored, and replaced on save
    assert store.save("carol", "p1234", layout) and store.load("carol", "p1234") == layout
    assert table_key(1234, tmp_path) == "p1234" and str(tmp_path) not in table_key(None, tmp_path)


def test_page_state_is_in_params_and_arranges_the_table(source):
    page = RunTablePage(session=session(source))
    cols = list(page.table.value.columns)
    assert cols[:4] == ["run", "start_time", "comment", "v001"]
    page.param.update(column_order=["v003", "comment", "v001"], hidden_columns=["start_time", "v002"],
                      column_widths={"v001": 333})
    cols = list(page.table.value.columns)
    assert cols[:4] == ["run", "v003", "comment", "v001"]
    assert "start_time" not in cols and "v002" not in cols and page.table.widths["v001"] == 333
    assert "v002" not in page.columns_choice.value and page.fixed_choice.value == ["comment"]
    # Grouped headers: short titles under a group; flat: the full title and no groups.
    assert page.table.titles["v001"] == "float 1" and page.table.groups
    page.hierarchical_headers = False
    assert page.table.titles["v001"] == "Camera/float 1" and page.table.groups == {}
    page.show_processing = False
    assert any(".dmn-proc-mark { display: none" in s for s in page.table.stylesheets)
    assert page.layout() == TableLayout(order=["v003", "comment", "v001"], hidden=["start_time", "v002"],
                                        widths={"v001": 333}, hierarchical=False, show_processing=False)


def test_browser_drags_and_chooser_keep_hidden_columns_in_place(source):
    page = RunTablePage(session=session(source))
    bridge = Bridge(page)
    page.hidden_columns = ["v005"]
    before = page.ordered_columns()
    shown = [c for c in page.table.value.columns if c != "run"]
    moved = [shown[3], *shown[:3], *shown[4:]]
    bridge("moved", order=moved)
    assert [c for c in page.ordered_columns() if c != "v005"] == moved
    assert page.ordered_columns().index("v005") == before.index("v005")  # a hidden column keeps its place
    assert list(page.table.value.columns)[1:] == moved  # the skeleton follows, without a rebuild
    bridge("resized", field="v001", width=412)
    assert page.column_widths == {"v001": 412} and page.table.widths["v001"] == 412
    bridge("resized", field="v001", width=10 ** 6)
    assert page.column_widths["v001"] == 2000
    stored = [m for m in bridge.sent if m["kind"] == "store"]
    assert stored and stored[-1]["layout"]["widths"] == {"v001": 2000}
    # The chooser: remove a variable (hidden) and reorder; fixed columns stay where they are.
    order_before = page.ordered_columns()
    variables = [c for c in order_before if c not in ("start_time", "comment")]
    page.columns_choice.value = [variables[2], variables[0]]
    assert set(page.hidden_columns) == set(variables) - {variables[2], variables[0]}
    assert page.visible_variables() == [variables[2], variables[0]]
    assert [c for c in page.ordered_columns() if c in ("start_time", "comment")] == \
        [c for c in order_before if c in ("start_time", "comment")]
    page.fixed_choice.value = ["start_time"]
    assert "comment" in page.hidden_columns and "comment" not in page.table.value.columns


def test_browser_layout_used_unless_the_server_has_the_users(source, tmp_path, monkeypatch):
    store = LayoutStore(tmp_path / "state")
    monkeypatch.setattr("app.pages.run_table.page.layout_store", lambda: store)
    browser = {"order": ["v002"], "hidden": ["comment"], "widths": {"v002": 250}}
    anon = RunTablePage(session=session(source))
    bridge = Bridge(anon)
    bridge("stored-layout", layout=browser)
    assert anon.hidden_columns == ["comment"] and anon.column_widths == {"v002": 250}
    assert store.load("", table_key(1234, source.db_dir)) is None
    # A signed-in user without a server copy: the browser's is used and kept on the server.
    alice = RunTablePage(session=session(source, user="alice"))
    Bridge(alice)("stored-layout", layout=browser)
    assert store.load("alice", "p1234").hidden == ["comment"]
    # With a server copy, the page opens arranged by it and the browser's copy is replaced.
    store.save("bob", "p1234", TableLayout(hidden=["v001"], hierarchical=False))
    bob = RunTablePage(session=session(source, user="bob"))
    assert "v001" not in bob.table.value.columns and bob.table.groups == {}
    bridge = Bridge(bob)
    bridge("stored-layout", layout=browser)
    assert bob.hidden_columns == ["v001"] and bridge.sent[-1] == {"kind": "store", "layout": bob.layout().to_json()}
    bob.hide_column("v003")
    assert store.load("bob", "p1234").hidden == ["v001", "v003"]
    # Garbage from a browser changes nothing.
    before = anon.layout()
    Bridge(anon)("stored-layout", layout="<script>")
    assert anon.layout() == before


# ---------------------------------------------------------------- filters

def test_presence_filter_and_histogram(source, db):
    page = RunTablePage(session=session(source))
    page.add_filter(RowFilter(column="v005", title="t", kind="presence", has_value=True))
    with_value = [k for k in source.run_keys() if source.cell(k, "v005") is not None
                  and source.cell(k, "v005").value is not None]
    assert sorted(page.table._processed.index) == sorted(with_value)
    page.add_filter(RowFilter(column="v005", title="t", kind="presence", has_value=False))
    assert sorted(page.table._processed.index) == sorted(set(source.run_keys()) - set(with_value))
    assert RowFilter(column="c", title=EVIL, kind="presence", has_value=False).label() == f"{EVIL}: empty"
    # The filtered column's header is marked, by a rule naming it safely.
    assert any('tabulator-field="v005"' in s for s in page.table.stylesheets)
    assert css_string('a"]{}</style>') == "a\\22 \\5d \\7b \\7d \\3c \\2f style\\3e "
    page.clear_filters()
    assert not any("tabulator-field" in s for s in page.table.stylesheets)
    svg = histogram_svg(np.array([1.0, 2, 2, 3, np.nan, 10]), 1.0, 10.0, 2.0, None, bins=9)
    assert "data-counts='1 2 1 0 0 0 0 0 1'" in svg  # bins of 1 from 1 to 10; the NaN left out
    assert svg.count("dmn-hist-in") == 3 and svg.count("dmn-hist-out") == 1  # kept: from 2 up
    assert "<title>2 runs: 2 … 3</title>" in svg and "<title>1 run: 1 … 2</title>" in svg


def test_filter_panel_slider_and_fields_agree(source):
    page = RunTablePage(session=session(source))
    panel = page.filter_panel
    panel.show("v001")
    values = np.array([source.cell(k, "v001").value for k in source.run_keys()
                       if source.cell(k, "v001") is not None and source.cell(k, "v001").value is not None])
    assert panel.slider.start == pytest.approx(values.min()) and panel.slider.end == pytest.approx(values.max())
    assert panel.low.value is None and panel.high.value is None
    mid = float(np.median(values))
    panel.low.value = mid  # typed: the slider follows and the filter applies
    assert panel.slider.value[0] == pytest.approx(mid)
    assert [f.low for f in page.filters] == [mid] and page.filters[0].high is None
    assert all(source.cell(k, "v001").value >= mid for k in page.table._processed.index)
    panel.slider.value = (panel.slider.start, mid)  # dragged: the fields follow
    assert panel.low.value is None and panel.high.value == pytest.approx(mid, rel=1e-3)
    panel.mode.value = "empty"
    assert page.filters[-1].kind == "presence" and not page.filters[-1].has_value


# ---------------------------------------------------------------- menus

def test_menu_actions(source, db):
    ses = session(source)
    page = RunTablePage(session=ses)
    bridge = Bridge(page)
    page.table.page_keys = lambda: [12, 11, 10, 9]
    bridge("copy", indices=[2, 0, 99, "x"], request=7)
    sent = bridge.sent[-1]
    assert sent["kind"] == "clipboard" and sent["request"] == 7
    lines = sent["text"].splitlines()
    assert lines[0].startswith("| Run") and "Timestamp" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["12", "10"]  # in the order shown
    bridge("plot", field="v001")
    assert ses.plot_request == {"x": "run", "y": "v001"} and ses.open_page == "plots"
    bridge("plot", field="v008")  # text: nothing to plot against run
    assert "no numbers" in page.status.object and ses.plot_request["y"] == "v001"
    bridge("sort", field="v001", dir="desc")
    assert page.sorters == page.table.sorters == [{"field": "v001", "dir": "desc"}]
    bridge("hide", field="v001")
    assert "v001" in page.hidden_columns
    bridge("hide", field="run")
    assert "run" not in page.hidden_columns
    bridge("filter", field="v002")
    assert not page.filters_card.collapsed and page.filter_panel.column == "v002"
    bridge("logs", index=1)
    assert ses.selected_runs == [11] and ses.open_page == "processing"
    bridge("inspect", index=3)
    assert ses.selected_runs == [9] and ses.open_page == "inspect"
    # Not this page's table, unknown kinds, hostile fields: ignored.
    page._on_bridge({"kind": "hide", "table": "other", "field": "v002"})
    bridge("hide", field=EVIL)
    bridge("eval", code="alert(1)")
    assert "v002" not in page.hidden_columns and EVIL not in page.hidden_columns


def test_reprocess_from_the_menu_asks_first_and_needs_write_rights(source, monkeypatch):
    submitted = []

    class Board:
        def submit(self, runs, variables, backend, user):
            submitted.append((runs, variables, user))
            return type("Job", (), {"runs": runs, "message": "local job 1"})()

    monkeypatch.setattr("app.pages.run_table.menus.job_board", lambda *a: Board())
    monkeypatch.setattr("app.pages.run_table.menus.runs_with_data", lambda proposal: {10, 12})
    page = RunTablePage(session=session(source, user="alice"))
    bridge = Bridge(page)
    page.table.page_keys = lambda: [12, 11, 10]
    bridge("reprocess", indices=[0, 1, 2])
    assert page.confirm_bar.visible and "10, 12" in page.confirm_text.object and "11" in page.confirm_text.object
    assert not submitted
    page._on_confirm()
    assert submitted == [([10, 12], [], "alice")] and not page.confirm_bar.visible
    ro = RunTablePage(session=session(source, can_write=False, write_denied_reason="read-only server"))
    bridge = Bridge(ro)
    ro.table.page_keys = lambda: [12]
    bridge("reprocess", indices=[0])
    assert not ro.confirm_bar.visible and "read-only server" in ro.status.object and len(submitted) == 1


# ---------------------------------------------------------------- deleting a variable

def test_delete_variable_everywhere_and_only_with_context_rights(source, db):
    with_run_files(db, range(1, 13))
    with sqlite3.connect(db / "runs.sqlite") as conn:
        had = conn.execute("SELECT count(*) FROM run_variables WHERE name='v001'").fetchone()[0]
    assert had >= 10
    for rights in ({"can_edit_context": False}, {"can_write": False}):
        with pytest.raises(PermissionError):
            edits.delete_variable(session(source, **rights), "v001")
    with pytest.raises(ValueError, match="no variable"):
        edits.delete_variable(session(source), "nope")
    other = RunTablePage(session=session(source))
    assert "v001" in other.table.value.columns
    seen = []
    result = edits.delete_variable(session(source, user="alice"), "v001", lambda i, n: seen.append((i, n)))
    assert result.runs == had and result.files_changed == 12 and not result.files_failed
    assert seen[-1] == (12, 12)
    with sqlite3.connect(db / "runs.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM run_variables WHERE name='v001'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM variables WHERE name='v001'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM variable_tags WHERE variable_name='v001'").fetchone()[0] == 0
        assert "v001" not in [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    for run in range(1, 13):
        path = run_file_path(db, 1234, run)
        with h5py.File(path) as f:
            assert not [k for k in ("v001", ".reduced/v001", ".preview/v001", ".errors/v001") if k in f]
        assert read_reduced(path)["v000"].value == float(run)  # the others are kept
    assert "v001" not in source.column_names() and source.cell(3, "v001") is None
    assert "v001" not in other.table.value.columns  # a page of the same source drops the column
    assert "v001" not in other.columns_choice.options.values()


def test_a_deletion_by_another_process_is_noticed_by_polling(source, db):
    page = RunTablePage(session=session(source))
    page.add_filter(RowFilter(column="v002", title="x", kind="range", low=0.0))
    with DamnitDB.from_dir(db) as conn:
        conn.delete_variable("v002")
    change = source.poll(force=True)
    assert change.variables and all("v002" in names for names in change.changed.values()) and change.changed
    assert "v002" not in source.column_names()
    assert "v002" not in page.table.value.columns and page.filters == []


def test_delete_from_the_menu_confirms_with_name_and_count(source, db):
    page = RunTablePage(session=session(source))
    bridge = Bridge(page)
    bridge("delete", field="v003")
    n = edits.runs_with_values(page.session, "v003")
    assert page.confirm_bar.visible and "Spectrometer/png 3" in page.confirm_text.object and f"{n} runs" in \
        page.confirm_text.object
    page._on_confirm()
    assert "v003" not in source.column_names()
    refused = RunTablePage(session=session(source, can_edit_context=False,
                                           context_edit_denied_reason="bob may not edit the context file"))
    bridge = Bridge(refused)
    bridge("delete", field="v004")
    assert not refused.confirm_bar.visible and "bob may not" in refused.status.object
    assert "v004" in source.column_names()


# ---------------------------------------------------------------- pre-created runs

def test_precreated_runs_take_comments_and_fill_when_taken(source, db):
    ses = session(source, can_edit_context=False)
    with pytest.raises(PermissionError):
        edits.precreate_runs(session(source, can_write=False), 2)
    with pytest.raises(ValueError, match="between 1 and"):
        edits.precreate_runs(ses, 0)
    runs = edits.precreate_runs(ses, 3)
    assert runs == [13, 14, 15]
    source.poll(force=True)
    assert source.run_keys()[-3:] == [13, 14, 15] and source.start_time(14) is None
    page = RunTablePage(session=ses)
    assert list(page.table.page_keys())[:3] == [15, 14, 13]
    with sqlite3.connect(db / "runs.sqlite") as conn:
        assert conn.execute("SELECT start_time FROM run_info WHERE run=14").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM runs WHERE run=14").fetchone() == (1,)
    edits.set_comment(ses, 14, "sample B, 5 mm")
    assert edits.precreate_runs(ses, 1) == [16]  # after the pre-created ones
    with DamnitDB.from_dir(db) as conn:  # the run is taken: its start time arrives
        conn.set_variables(1234, 14, {}, start_time=1.7e9)
    change = source.poll(force=True)
    assert "start_time" in change.changed[14] and source.start_time(14) == 1.7e9
    assert source.cell(14, "comment").value == "sample B, 5 mm"


# ---------------------------------------------------------------- cells

def test_sparkline_carries_the_values_it_draws():
    x = np.linspace(0, 1, 500)
    y = np.sin(x * 7)
    y[321] = 9.0
    svg = cells.sparkline_svg(np.vstack([x, y]))
    xs = svg.split("data-x='")[1].split("'")[0].split()
    ys = svg.split("data-y='")[1].split("'")[0].split()
    pts = svg.split("points='")[1].split("'")[0].split()
    assert len(xs) == len(ys) == len(pts) <= cells.SPARK_POINTS and "9" in ys
    assert "<title>" not in svg and "max 9" in svg
    assert json.dumps(cells.sparkline_svg(np.array([1.0, 2.0])))  # short lines too
