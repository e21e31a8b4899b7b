"""Dashboard internals without a browser: the shared source and its columnar table, cell rendering,
sorting, filters, export, write permissions and server configuration."""

from __future__ import annotations

import io
import sqlite3
import time

import numpy as np
import pytest

from app.config import ServerConfig, resolve_database
from app.display.formatting import format_number, join_numbers
from app.live import source as source_module
from app.live.records import Change
from app.live.session import SessionState
from app.live.source import ProposalSource, get_source, unload_idle
from app.live.table import TableCell
from app.pages.run_table import cells
from backend.storage.arrow_reader import ArrowReader
from backend.storage.blobs import numpy2blob
from backend.storage.run_values import BlobKind, Kind, read_run_values
from backend.storage.synthetic import make_database, set_value


@pytest.fixture
def db(tmp_path):
    return make_database(tmp_path / "db", proposal=1234, n_runs=12, n_vars=10)


@pytest.fixture
def source(db):
    src = ProposalSource(db, broker="none", start=False)
    yield src
    src.stop()


def cell(value=None, *, kind=None, blob=0, max_diff=None, provenance=None, **attributes) -> TableCell:
    if kind is None:
        kind = {int: Kind.INT, float: Kind.REAL, str: Kind.TEXT}.get(type(value), Kind.EMPTY)
    return TableCell(kind=kind, value=value, blob=blob, attributes=attributes, max_diff=max_diff,
                     provenance=provenance, timestamp=1.0)


# ---------------------------------------------------------------- source

def test_source_loads_runs_variables_and_cells(source):
    assert source.proposal == 1234
    assert source.run_keys() == list(range(1, 13))
    assert source.variable("v003").title == "Spectrometer/png 3"
    assert source.variable("v000").tags == ("scalars",)
    assert source.variable("good").type == "boolean"
    assert source.cell(3, "comment").value == "run 3"
    png, trend = source.cell(1, "v003"), source.cell(1, "v006")
    assert png.blob_type == "png" and png.table_value == "<thumbnail>"
    assert trend.blob_type == "trendline" and trend.table_value == "<sparkline>"
    blobs = source.blobs([(1, "v003"), (1, "v006"), (1, "v000")])
    assert blobs[(1, "v003")].startswith(b"\x89PNG") and (1, "v000") not in blobs
    assert isinstance(np.load(io.BytesIO(blobs[(1, "v006")])), np.ndarray)
    assert source.blobs([(1, "v003")], head=24)[(1, "v003")] == blobs[(1, "v003")][:24]
    # Cells are typed arrays, not Python objects: a few dozen bytes each.
    assert source.table.nbytes < 60 * source.table.kind.size + 2000


def test_poll_finds_new_run_changed_cell_and_new_column(source, db):
    got: list[Change] = []
    source.subscribe(got.append)
    set_value(db, 13, "v000", 1.5)
    set_value(db, 2, "v001", 2.5)
    set_value(db, 2, "brand_new", "x")
    change = source.poll()
    assert change.new_runs == [13]
    assert change.changed == {2: {"v001", "brand_new"}}
    assert change.variables  # a column nobody had seen
    assert got == [change]
    assert source.cell(13, "v000").value == 1.5 and source.cell(2, "v001").value == 2.5
    assert source.cell(2, "brand_new").value == "x"
    assert not source.poll()  # nothing new: no change, no emit
    assert len(got) == 1


def test_incremental_updates_match_a_full_reload(source, db):
    for run, val in [(3, 9.0), (14, 1.0), (5, None), (6, "text now"), (7, 2**62)]:
        set_value(db, run, "v002", val)
        source.poll()
    fresh = ProposalSource(db, broker="none", start=False)
    assert source.run_keys() == fresh.run_keys()
    for key in fresh.run_keys():
        for name in fresh.column_names():
            a, b = source.cell(key, name), fresh.cell(key, name)
            assert (a is None) == (b is None) and (a is None or (a.kind, a.value, a.attributes) ==
                                                   (b.kind, b.value, b.attributes)), (key, name)
    assert source.cell(7, "v002").value == 2**62  # integers stay exact


def test_refresh_run_after_message(source, db):
    set_value(db, 4, "v001", -7.25, attributes={"bold": True})
    change = source.refresh_run(1234, 4, ["v001"], message_time=time.time())
    assert change.changed == {4: {"v001"}} and change.message_time is not None
    assert source.cell(4, "v001").attributes == {"bold": True}
    assert not source.refresh_run(1234, 4, ["v001"])  # same content: nothing to patch
    with sqlite3.connect(db / "runs.sqlite") as conn:
        conn.execute("DELETE FROM run_variables WHERE run=4 AND name='v001'")
    assert source.refresh_run(1234, 4, ["v001"]).changed == {4: {"v001"}}
    assert source.cell(4, "v001") is None


@pytest.fixture
def newest_first(monkeypatch):
    """Open newest runs first from 4 of 12 runs on (the real thresholds: 200 runs and 200 000 cells)."""
    monkeypatch.setattr(source_module, "HEAD_RUNS", 4)
    monkeypatch.setattr(source_module, "SPLIT_MIN_CELLS", 0)


def assert_same_cells(a: ProposalSource, b: ProposalSource) -> None:
    assert a.run_keys() == b.run_keys() and a.column_names() == b.column_names()
    for key in b.run_keys():
        for name in ["comment", *b.column_names()]:
            x, y = a.cell(key, name), b.cell(key, name)
            assert (x is None) == (y is None) and (x is None or (x.kind, x.value, x.attributes, x.timestamp)
                                                   == (y.kind, y.value, y.attributes, y.timestamp)), (key, name)


def test_a_big_proposal_opens_newest_runs_first_then_the_rest(db, newest_first):
    from app.pages.run_table.model import get_table_model

    src = ProposalSource(db, broker="none", start=False)
    src.reload(newest_first=True)
    assert src.run_keys() == list(range(1, 13))  # every run's row (counts and pages) at once
    assert src.cell(12, "v000") is not None and src.cell(9, "comment").value == "run 9"
    assert src.cell(8, "v000") is None and src.cell(3, "comment") is None and not src.loaded.is_set()
    model = get_table_model(src)
    assert model.cell_text(3, "comment") == ""  # rendered (and cached) before the rest arrived
    changes = []
    src.subscribe(changes.append)
    src._load_rest()
    assert src.loaded.is_set() and src.wait_loaded(0)
    assert_same_cells(src, ProposalSource(db, broker="none", start=False))
    (change,) = changes
    assert change.loaded and not change.new_runs and set(change.changed) == set(range(1, 9))
    assert {"v000", "comment"} <= change.changed[3]
    assert model.cell_text(3, "comment") == "run 3"  # the cached empty cell was dropped


def test_a_change_while_the_rest_is_read_is_not_lost(db, newest_first, monkeypatch):
    """The whole read may predate a change already applied to the first table: the poll after it
    reads everything written since the first read again."""
    src = ProposalSource(db, broker="none", start=False)
    src.reload(newest_first=True)
    with ArrowReader(db / "runs.sqlite") as reader:
        before = read_run_values(reader, details=True)
    set_value(db, 2, "v001", -1.5)  # an older run reprocessed
    set_value(db, 11, "v001", -2.5)
    set_value(db, 13, "v001", -3.5)  # a new run
    for run in (2, 11, 13):
        src.refresh_run(1234, run, ["v001"])
    assert src.cell(13, "v001").value == -3.5
    monkeypatch.setattr(source_module, "read_run_values", lambda reader, **kw: before)
    src._load_rest()  # as if it had read before those writes
    monkeypatch.setattr(source_module, "read_run_values", read_run_values)
    assert src.cell(2, "v001").value != -1.5 and src.cell(13, "v001") is None
    changes = []
    src.subscribe(changes.append)
    src.poll()  # what the source's loop does next
    assert [src.cell(r, "v001").value for r in (2, 11, 13)] == [-1.5, -2.5, -3.5]
    assert {2, 11, 13} <= set(changes[0].changed)
    assert_same_cells(src, ProposalSource(db, broker="none", start=False))


def test_the_rest_is_read_once_a_first_page_is_shown_or_after_a_while(db, newest_first, monkeypatch):
    monkeypatch.setattr(source_module, "REST_WAIT", 120)
    src = ProposalSource(db, broker="none")
    try:
        assert not src.loaded.wait(1.5) and src.cell(3, "v000") is None
        src.first_page_shown()  # a session's page was painted
        assert src.loaded.wait(20) and src.cell(3, "v000") is not None
    finally:
        src.stop()
    monkeypatch.setattr(source_module, "REST_WAIT", 0.5)
    src = ProposalSource(db, broker="none")  # nobody came
    try:
        assert src.loaded.wait(20) and src.cell(3, "v000") is not None
    finally:
        src.stop()


def test_an_export_waits_for_the_older_runs(db, newest_first):
    import datetime as dt
    import threading

    from app.pages.run_table import export

    src = ProposalSource(db, broker="none", start=False)
    src.reload(newest_first=True)
    threading.Timer(0.5, src._load_rest).start()
    df = export.export_frame(src, ["run", "v000"], {"run": "Run", "v000": "v000"}, dt.timezone.utc)
    assert len(df) == 12 and df["v000"].notna().sum() >= 10  # not just the newest 4


def test_a_sorted_page_is_sorted_again_when_the_older_runs_arrive(db, newest_first):
    from app.pages.run_table import RunTablePage

    src = ProposalSource(db, broker="none", start=False)
    src.reload(newest_first=True)
    page = RunTablePage(session=SessionState(source=src, can_write=False))
    page.table.sorters = [{"field": "v001", "dir": "desc"}]
    assert set(list(page.table.page_keys())[:4]) == {9, 10, 11, 12}  # the only runs with values yet
    changes = []
    src.subscribe(changes.append)
    src._load_rest()
    page._apply_change(changes[0])
    values = {k: c.value for k in src.run_keys() if (c := src.cell(k, "v001")) is not None and c.value is not None}
    expected = sorted(values, key=lambda k: -values[k])
    assert list(page.table.page_keys())[:len(expected)] == expected and len(expected) > 4


def test_standalone_comments_follow_the_database(source, db):
    from backend.storage.database import DamnitDB

    got: list[Change] = []
    source.subscribe(got.append)
    with DamnitDB.from_dir(db) as writer:
        writer.add_standalone_comment(5.0, "beam <b>down</b>")
    assert source.poll().comments
    assert source.comments[-1]["comment"] == "beam <b>down</b>"


def test_processing_states(source):
    got = []
    source.subscribe(got.append)
    source.handle_message("processing_state_set", {"processing_id": "a", "proposal": 1234, "run": 5,
                                                   "status": "PENDING", "data": "raw"})
    source.handle_message("processing_state_set", {"processing_id": "b", "proposal": 1234, "run": 5,
                                                   "status": "RUNNING", "data": "all"})
    assert {d["processing_id"] for d in source.processing_for(5)} == {"a", "b"}
    source.handle_message("processing_finished", {"processing_id": "b"})
    # 'a' was merged into 'b' (queued before it finished): it goes too.
    assert source.processing_for(5) == []
    assert [c.processing for c in got] == [[5], [5], [5]]
    source.expire_processing(now=time.time() + 3600 * 2)
    assert source.processing == {}
    source.handle_message("processing_state_set", {"run": "x"})  # malformed: ignored, not raised


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs.sqlite"):
        ProposalSource(tmp_path, start=False)


def test_idle_sources_are_unloaded_and_reopened(db, monkeypatch):
    monkeypatch.setenv("AMORE_BROKER", "none")
    from app.pages.run_table.model import get_table_model

    src = get_source(db)
    get_table_model(src)  # shared state of sessions: does not keep the source loaded

    def session(change):
        pass

    src.subscribe(session)
    assert unload_idle(0) == []  # a session follows it
    src.unsubscribe(session)
    assert unload_idle(3600) == []  # used just now
    assert unload_idle(0) == [db.resolve()]
    assert src._stop.is_set()
    again = get_source(db)
    assert again is not src and again.run_keys() == src.run_keys()
    assert get_table_model(again) is not get_table_model(src)
    unload_idle(0)


# ---------------------------------------------------------------- rendering

@pytest.mark.parametrize("value, text", [
    (3.0, "3"), (12345.0, "1.234e+04"), (0.5, "0.5000"), (1e-5, "1.000e-05"), (-2.25, "-2.2500"),
    (7, "7"), (True, "true"), (float("nan"), "NaN"), ("abc", "abc"), (1 + 2j, "1+2j"),
])
def test_numbers_follow_damnit(value, text):
    assert format_number(value) == text


def test_joined_numbers_are_format_number_joined():
    """``join_numbers`` (sparklines' hover data, one formatting call per line) spells every float as
    ``format_number`` does: integral, fixed, scientific, the edges between them, NaN and infinities."""
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(size=300), rng.normal(size=300) * 1e7, rng.normal(size=100) * 1e-7,
                             np.arange(-12000.0, 12000.0, 37.0),
                             [0.0, -0.0, 1e-4, -1e-4, 1.00001e-4, 1e4, -1e4, 9999.0, 9999.5, 0.5, 2.0 ** 53,
                              1e300, 5e-324, np.nan, np.inf, -np.inf]])
    for sep in (" ", ", ", "%"):
        assert join_numbers(values, sep) == sep.join(format_number(v) for v in values.tolist())
    assert join_numbers(np.array([])) == ""
    assert join_numbers(np.array([np.nan, 1.0])) == "NaN 1"


def test_cell_html_escapes_everything():
    evil = "<img src=x onerror=alert(1)>"
    assert "<img" not in cells.cell_html(cell(evil))
    assert "&lt;img" in cells.cell_html(cell(evil))
    out = cells.cell_html(cell(1.5, units="<b>m</b>"))
    assert "<b>" not in out and "&lt;b&gt;m" in out
    err = cells.cell_html(cell(None, error="bad <script>", error_cls="ValueError"))
    assert "dmn-err" in err and "<script>" not in err and "ValueError: bad &lt;script&gt;" in err
    skip = cells.cell_html(cell(None, error="no XGM", error_cls="Skip"))
    assert "dmn-skip" in skip and "Skipped: no XGM" in skip
    prov = cells.cell_html(cell("v", provenance="robot'><script>"))
    assert "<script>" not in prov and "Provenance: robot" in prov


def test_cell_html_bold_background_images_sparklines_arrays():
    assert "font-weight:bold" in cells.cell_html(cell(2.0, max_diff=0.5))
    assert "font-weight:bold" not in cells.cell_html(cell(2.0, max_diff=0.0))
    assert "font-weight:bold" not in cells.cell_html(cell(2.0, max_diff=3.0, bold=False))
    bg = cells.cell_html(cell(2.0, background=[10, 10, 10]))
    assert "background:rgb(10,10,10)" in bg and "color:#fff" in bg
    png = cells.cell_html(cell(kind=Kind.BLOB, blob=BlobKind.UNTYPED + BlobKind.PNG), b"\x89PNG\r\n\x1a\nxyz")
    assert "<img class='dmn-thumb' src='data:image/png;base64," in png
    trend = numpy2blob(np.vstack([np.arange(5.0), [1, 3, 2, 5, 4]]))
    assert "<svg class='dmn-spark'" in cells.cell_html(cell(kind=Kind.BLOB, blob=BlobKind.TRENDLINE), trend)
    arr = numpy2blob(np.zeros((3, 4), np.float32))
    assert "float32: (3, 4)" in cells.cell_html(cell(kind=Kind.BLOB, blob=BlobKind.NUMPY + BlobKind.NPY), arr[:256])
    assert cells.run_html(5, [{"status": "PENDING"}]).endswith("5<span class='dmn-proc-mark' "
                                                              "title='Processing is queued'> ⋮</span></b>")
    assert "Slurm job 12" in cells.run_html(5, [{"status": "RUNNING", "slurm_job_id": "12"}])


def test_thumbnails_scaled_to_the_cell():
    from PIL import Image

    def png(w, h, mode="RGBA"):
        buf = io.BytesIO()
        rng = np.random.default_rng(1)
        Image.fromarray(rng.integers(0, 255, (h, w, len(mode)), dtype=np.uint8), mode).save(buf, format="PNG")
        return buf.getvalue()

    big = png(300, 300)  # DAMNIT's thumbnail size
    out = cells.cell_png(big)
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (70, 70) and img.mode == "RGBA"
    assert len(out) < len(big) / 10
    wide = cells.cell_png(png(600, 200, "RGB"))
    with Image.open(io.BytesIO(wide)) as img:
        assert img.size == (200, 67)
    small = png(32, 16)
    assert cells.cell_png(small) is small  # already fits: not decoded
    broken = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x10\x00\x00\x00\x10\x00garbage"
    assert cells.cell_png(broken) == broken  # shown as stored


def test_page_renders_from_cache_and_invalidates_changed_cells(source, db):
    from app.pages.run_table.model import get_table_model

    model = get_table_model(source)
    first = model.render([1, 2], ["run", "v000", "v003", "v006"])
    assert first["run"] == ["<b>1</b>", "<b>2</b>"] and "thumbnail/" in first["v003"][0]
    assert "<svg" in first["v006"][0]
    set_value(db, 2, "v000", 123.0)
    source.poll()
    again = model.render([1, 2], ["v000"])
    assert again["v000"][0] == first["v000"][0] and "123" in again["v000"][1]


# ---------------------------------------------------------------- sorting, filters, export

def test_sort_numbers_numerically_text_casefolded_empties_last(tmp_path):
    from app.pages.run_table.rows import sort_rows

    db = make_database(tmp_path / "s", n_runs=6, n_vars=1)
    for run, value in zip(range(1, 7), [10.0, "b", None, 9, "A", 100.5]):
        set_value(db, run, "x", value)
    src = ProposalSource(db, broker="none", start=False)
    table = src.table
    values = lambda rows: [src.cell(int(k), "x").value for k in table.keys[rows]]  # noqa: E731
    assert values(sort_rows(table, table.order(), [{"field": "x", "dir": "asc"}])) == [9, 10.0, 100.5, "A", "b", None]
    assert values(sort_rows(table, table.order(), [{"field": "x", "dir": "desc"}])) == [100.5, 10.0, 9, "b", "A", None]


def test_row_filters(tmp_path):
    from app.pages.run_table.rows import RowFilter, is_numeric

    db = make_database(tmp_path / "f", n_runs=4, n_vars=0, user_vars=False)
    for run, (x, y) in enumerate([(1.0, "a"), (5.0, "b"), (None, None), (10.0, "a")], start=1):
        set_value(db, run, "x", x)
        set_value(db, run, "y", y)
    table = ProposalSource(db, broker="none", start=False).table
    rows = table.order()
    f = RowFilter(column="x", title="X", kind="range", low=2, high=10)
    assert list(f.mask(table, rows)) == [False, True, False, True]
    f.include_empty = True
    assert list(f.mask(table, rows)) == [False, True, True, True]
    c = RowFilter(column="y", title="Y", kind="categories", categories=["a"])
    assert list(c.mask(table, rows)) == [True, False, False, True]
    assert is_numeric(table, "x") and not is_numeric(table, "y")


def test_export_placeholders_titles_zone_and_formula_defusing(source, db):
    import openpyxl

    from app.config import zone
    from app.pages.run_table import export

    set_value(db, 1, "v008", "=HYPERLINK(\"http://evil\")")
    set_value(db, 2, "v008", "-3 is text")
    source.poll()
    df = export.export_frame(source, ["run", "start_time", "comment", "v003", "v006", "v000", "v008"],
                             {"run": "Run", "start_time": "Timestamp", "comment": "Comment", "v003": "XGM/png 3",
                              "v006": "Camera/trend", "v000": "XGM/float 0", "v008": "text"}, zone("UTC"))
    assert list(df.columns) == ["Run", "Timestamp", "Comment", "XGM/png 3", "Camera/trend", "XGM/float 0", "text"]
    assert df["XGM/png 3"].iloc[0] == "<image>" and df["Camera/trend"].iloc[0] == "<trendline>"
    assert df["Timestamp"].iloc[0].endswith(time.strftime("%Y", time.gmtime(source.start_time(1))))
    md = export.to_markdown(df.head(3))
    assert md.splitlines()[0].startswith("| Run") and "| run 3" in md
    csv = export.to_csv(df).decode().splitlines()
    assert csv[1].split(",")[0] == "1"  # numbers stay numbers
    assert "'=HYPERLINK" in csv[1] and "'-3 is text" in csv[2]
    sheet = openpyxl.load_workbook(io.BytesIO(export.to_excel(df, "t"))).active
    texts = [c for c in sheet["G"] if c.value and str(c.value).startswith("=")]
    assert texts and all(c.data_type == "s" for c in texts)


# ---------------------------------------------------------------- writes and configuration

def test_writes_refused_without_permission(source, db):
    from app.actions import edits

    ro = SessionState(source=source, read_only=True, can_write=False, write_denied_reason="read-only server")
    with pytest.raises(PermissionError, match="read-only"):
        edits.set_comment(ro, 3, "nope")
    with pytest.raises(PermissionError):
        edits.add_user_variable(ro, "Title", "", "string")
    with pytest.raises(PermissionError):
        edits.add_standalone_comment(ro, 1.0, "nope")
    rw = SessionState(source=source, can_write=True)
    edits.set_comment(rw, 3, "yes")
    with sqlite3.connect(db / "runs.sqlite") as conn:
        assert conn.execute("SELECT value FROM run_variables WHERE run=3 AND name='comment'").fetchone() == ("yes",)
    assert source.cell(3, "comment").value == "yes"
    with pytest.raises(ValueError, match="not a whole number"):
        edits.set_user_value(rw, 3, "shots", "many")
    assert edits.set_user_value(rw, 3, "good", "yes") is True
    assert edits.add_user_variable(rw, "Sample 2 / thickness", "", "number") == "sample_2_thickness"
    assert source.variable("sample_2_thickness").type == "number"
    with pytest.raises(ValueError, match="already exists"):
        edits.add_user_variable(rw, "Other", "sample_2_thickness", "number")
    with pytest.raises(ValueError, match="empty"):
        edits.add_standalone_comment(rw, 1.0, "  ")
    assert edits.add_standalone_comment(rw, 1.0, "note") >= 1


def test_server_config_and_startup_notes(tmp_path, db):
    from app.config import zone, zone_label
    from app.server.serve import startup_notes

    assert resolve_database(db) == db.resolve()
    assert resolve_database(db / "runs.sqlite") == db.resolve()
    with pytest.raises(ValueError, match="not a DAMNIT folder"):
        resolve_database(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        resolve_database(tmp_path / "nope")
    open_cfg = ServerConfig(address="0.0.0.0")
    assert open_cfg.writes_need_user
    assert any("VIEW-ONLY" in n for n in startup_notes(open_cfg, 5006))
    assert not ServerConfig().writes_need_user
    assert any("read-only" in n for n in startup_notes(ServerConfig(read_only=True), 5006))
    assert zone_label(ServerConfig(timezone="Asia/Tokyo").tz) == "Asia/Tokyo"
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus")


def test_panel_auth_options_pass_through_with_their_values():
    from app.server.serve import split_auth_args

    ours, auth = split_auth_args(["--port", "1", "--basic-auth", "pw", "--cookie-secret=s", "/db",
                                  "--oauth-optional", "/db2", "--oauth-guest-endpoints", "/a", "/b",
                                  "--read-only"])
    assert ours == ["--port", "1", "/db", "/db2", "--read-only"]
    assert auth == ["--basic-auth", "pw", "--cookie-secret=s", "--oauth-optional",
                    "--oauth-guest-endpoints", "/a", "/b"]


def test_export_widgets_produce_csv_excel_markdown(source):
    import openpyxl

    from app.pages.run_table import RunTablePage

    page = RunTablePage(session=SessionState(source=source, can_write=True))
    csv_w, excel_w, md_w = page.export_widgets()
    assert csv_w.filename == "p1234_run_table.csv"
    csv = csv_w.callback().read().decode()
    assert csv.splitlines()[0].startswith("Run,Timestamp,Comment,")
    assert len(csv.splitlines()) == 13
    book = openpyxl.load_workbook(excel_w.callback())
    sheet = book["p1234 DAMNIT run table"]
    assert [c.value for c in sheet[1]][:3] == ["Run", "Timestamp", "Comment"]
    assert sheet.max_row == 13
    md = md_w.callback().read().decode()
    assert md.startswith("| Run") and "<image>" in md


def test_page_opens_newest_first_with_filters_sorting_and_columns(source):
    from app.pages.run_table import RunTablePage
    from app.pages.run_table.rows import RowFilter

    page = RunTablePage(session=SessionState(source=source, can_write=False))
    assert list(page.table.page_keys())[:3] == [12, 11, 10]  # a full first page of the newest runs
    page.filter_controls()
    values = {k: source.cell(k, "v001").value for k in source.run_keys()}
    known = sorted(v for v in values.values() if v is not None)
    lo, hi = known[3], known[8]
    page.add_filter(RowFilter(column="v001", title="v001", kind="range", low=lo, high=hi))
    kept = page.table._processed.index
    assert len(kept) == 6 and all(lo <= values[k] <= hi for k in kept)
    assert len(page.filter_list.objects) == 1
    page.clear_filters()
    assert len(page.table._processed) == 12
    page.table.sorters = [{"field": "run", "dir": "asc"}]
    assert list(page.table.page_keys())[:2] == [1, 2]
    # Tags choose columns; editable columns are kept; nothing is editable without permission.
    page.tag_choice.value = ["images"]
    cols = list(page.table.value.columns)
    assert cols[:3] == ["run", "start_time", "comment"] and "v003" in cols and "v000" not in cols
    assert page.table.editable_columns == [] and all(e is None for e in page.table.editors.values())


def test_a_view_link_round_trips_and_opens_with_the_right_rows_selected(source):
    """Runs, sort, filters and hidden columns from a link; a new view highlights the linked runs
    (Panel alone would highlight the rows at those positions of the unsorted frame)."""
    from bokeh.document import Document

    from app.pages.run_table import RunTablePage
    from app.pages.view_links import ViewLinks

    session = SessionState(source=source, can_write=False)
    link = {"page": "table", "runs": "3,5", "sort": "run:desc", "hide": "v002,nonexistent",
            "filter": '[{"c":"v001","k":"range","lo":-1e300,"hi":1e300}]', "proposal": "1"}
    links = ViewLinks(session, link)
    assert session.selected_runs == [3, 5]
    page = RunTablePage(session=session)
    links.attach(page)
    assert "hide: nonexistent" in links.problems and len(links.problems) == 1
    assert len(page.filters) == 1
    page._on_bridge({"kind": "stored-layout", "layout": None})  # the browser says it keeps no layout
    assert page.hidden_columns == ["v002"]
    model = page.table.get_root(Document())
    shown = [page.table.page_keys()[i] for i in model.source.selected.indices]
    assert sorted(source.run_of(k)[1] for k in shown) == [3, 5]
    query = dict(p.split("=", 1) for p in links.address.query.split("&"))
    assert query["runs"] == "3%2C5" and query["hide"] == "v002" and query["proposal"] == "1"
    assert "sort" not in query  # newest first is the default view
    # Hostile or broken parts are reported, never applied or raised.
    bad = ViewLinks(SessionState(source=source, can_write=False),
                    {"runs": "<script>", "sort": "x:up", "filter": "{", "hide": "run"})
    page2 = RunTablePage(session=bad.session)
    bad.attach(page2)
    assert bad.session.selected_runs == [] and len(bad.problems) == 4
    assert page2.hidden_columns == [] and page2.filters == []
