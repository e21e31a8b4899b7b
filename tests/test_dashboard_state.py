"""Dashboard internals without a browser: the shared source, cell rendering, sorting, filters, export,
write permissions and server configuration."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

from app import table_format as fmt
from app.config import ServerConfig, resolve_database
from app.state import Cell, Change, ProposalSource, SessionState
from app.synthetic import make_database, set_value


@pytest.fixture
def db(tmp_path):
    return make_database(tmp_path / "db", proposal=1234, n_runs=12, n_vars=10)


@pytest.fixture
def source(db):
    src = ProposalSource(db, broker="none", start=False)
    yield src
    src.stop()


# ---------------------------------------------------------------- source

def test_source_loads_runs_and_variables(source):
    assert source.proposal == 1234
    assert len(source.runs) == 12
    assert source.variable("v003").title == "Spectrometer/png 3"
    assert source.variable("v000").tags == ("scalars",)
    assert source.variable("good").type == "boolean"
    df = source.frame()
    assert list(df.columns[:5]) == ["proposal", "run", "start_time", "added_at", "comment"]
    assert df.loc[3, "comment"] == "run 3"
    assert df.loc[1, "v003"] == "<thumbnail>"
    assert df.loc[1, "v006"] == "<sparkline>"
    assert isinstance(source.runs[1].cells["v006"].value, np.ndarray)
    assert source.runs[1].cells["v003"].value.startswith(b"\x89PNG")


def test_poll_finds_new_run_changed_cell_and_new_column(source, db):
    got: list[Change] = []
    source.subscribe(got.append)
    old_frame = source.frame()
    set_value(db, 13, "v000", 1.5)
    set_value(db, 2, "v001", 2.5)
    set_value(db, 2, "brand_new", "x")
    change = source.poll()
    assert change.new_runs == [13]
    assert change.changed == {2: {"v001", "brand_new"}}
    assert change.variables  # a column nobody had seen
    assert got == [change]
    df = source.frame()
    assert df.loc[13, "v000"] == 1.5 and df.loc[2, "v001"] == 2.5 and df.loc[2, "brand_new"] == "x"
    assert old_frame.loc[2, "v001"] != 2.5  # frames handed out earlier never change
    assert not source.poll()  # nothing new: no change, no emit
    assert len(got) == 1


def test_incremental_frame_matches_full_rebuild(source, db):
    source.frame()
    for run, val in [(3, 9.0), (14, 1.0), (5, None)]:
        set_value(db, run, "v002", val)
        source.poll()
    incremental = source.frame()
    rebuilt = source._build_frame(sorted(source.runs), source.column_names())
    pd.testing.assert_frame_equal(incremental, rebuilt)


def test_refresh_run_after_message(source, db):
    set_value(db, 4, "v001", -7.25, attributes={"bold": True})
    change = source.refresh_run(1234, 4, ["v001"], message_time=time.time())
    assert change.changed == {4: {"v001"}} and change.message_time is not None
    assert source.runs[4].cells["v001"].attributes == {"bold": True}
    assert not source.refresh_run(1234, 4, ["v001"])  # same content: nothing to patch


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
    source.handle_message("processing_state_set", {"processing_id": "c", "proposal": 1234, "run": 99,
                                                   "status": "RUNNING", "data": "all"})
    assert 99 in source.runs  # a run announced by processing gets a row
    source.expire_processing(now=time.time() + 3600 * 2)
    assert source.processing == {}
    source.handle_message("processing_state_set", {"run": "x"})  # malformed: ignored, not raised


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs.sqlite"):
        ProposalSource(tmp_path, start=False)


# ---------------------------------------------------------------- rendering

@pytest.mark.parametrize("value, text", [
    (3.0, "3"), (12345.0, "1.234e+04"), (0.5, "0.5000"), (1e-5, "1.000e-05"), (-2.25, "-2.2500"),
    (7, "7"), (True, "true"), (float("nan"), "NaN"), ("abc", "abc"),
])
def test_prettify_follows_damnit(value, text):
    assert fmt.prettify(value) == text


def test_cell_html_escapes_everything():
    evil = "<img src=x onerror=alert(1)>"
    assert "<img" not in fmt.cell_html(Cell.of(evil))
    assert "&lt;img" in fmt.cell_html(Cell.of(evil))
    out = fmt.cell_html(Cell.of(1.5, units="<b>m</b>"))
    assert "<b>" not in out and "&lt;b&gt;m" in out
    err = fmt.cell_html(Cell.of(None, error="bad <script>", error_cls="ValueError"))
    assert "dmn-err" in err and "<script>" not in err and "ValueError: bad &lt;script&gt;" in err
    skip = fmt.cell_html(Cell.of(None, error="no XGM", error_cls="Skip"))
    assert "dmn-skip" in skip and "Skipped: no XGM" in skip
    prov = fmt.cell_html(Cell("v", provenance="robot'><script>"))
    assert "<script>" not in prov and "Provenance: robot" in prov


def test_cell_html_bold_background_images_sparklines():
    assert "font-weight:bold" in fmt.cell_html(Cell(2.0, max_diff=0.5))
    assert "font-weight:bold" not in fmt.cell_html(Cell(2.0, max_diff=0.0))
    assert "font-weight:bold" not in fmt.cell_html(Cell(2.0, attributes_json='{"bold": false}', max_diff=3.0))
    bg = fmt.cell_html(Cell(2.0, attributes_json='{"background": [10, 10, 10]}'))
    assert "background:rgb(10,10,10)" in bg and "color:#fff" in bg
    png = fmt.cell_html(Cell(b"\x89PNG\r\n\x1a\nxyz"))
    assert "<img class='dmn-thumb' src='data:image/png;base64," in png
    trend = np.vstack([np.arange(5.0), [1, 3, 2, 5, 4]])
    buf = __import__("io").BytesIO()
    np.save(buf, trend)
    assert "<svg class='dmn-spark'" in fmt.cell_html(Cell(buf.getvalue(), summary_type="trendline"))
    assert fmt.run_html(5, [{"status": "PENDING"}]).endswith("5 ⋮</b>")
    assert "Slurm job 12" in fmt.run_html(5, [{"status": "RUNNING", "slurm_job_id": "12"}])


def test_thumbnails_scaled_to_the_cell():
    import base64
    import io

    from PIL import Image

    def png(w, h, mode="RGBA"):
        buf = io.BytesIO()
        rng = np.random.default_rng(1)
        Image.fromarray(rng.integers(0, 255, (h, w, len(mode)), dtype=np.uint8), mode).save(buf, format="PNG")
        return buf.getvalue()

    big = png(300, 300)  # DAMNIT's thumbnail size
    out = fmt.cell_png(big)
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (70, 70) and img.mode == "RGBA"
    assert len(out) < len(big) / 10
    wide = fmt.cell_png(png(600, 200, "RGB"))
    with Image.open(io.BytesIO(wide)) as img:
        assert img.size == (200, 67)
    small = png(32, 16)
    assert fmt.cell_png(small) is small  # already fits: not decoded
    html_ = fmt.cell_html(Cell(big))
    assert base64.b64encode(out).decode() in html_
    broken = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x10\x00\x00\x00\x10\x00garbage"
    assert fmt.cell_png(broken) == broken  # shown as stored


# ---------------------------------------------------------------- sorting, filters, export

def _table(values):
    from app.pages.run_table import RunTabulator

    index = range(1, len(values) + 1)
    df = pd.DataFrame({"run": list(index), "x": pd.Series(values, index=index, dtype=object)}, index=index)
    return RunTabulator(value=df, pagination="remote")


def test_sort_numbers_numerically_text_casefolded_empties_last():
    t = _table([10.0, "b", None, 9, "A", 100.5])
    t.sorters = [{"field": "x", "dir": "asc"}]
    assert list(t._sort_df(t.value)["x"]) == [9, 10.0, 100.5, "A", "b", None]
    t.sorters = [{"field": "x", "dir": "desc"}]
    assert list(t._sort_df(t.value)["x"]) == [100.5, 10.0, 9, "b", "A", None]


def test_row_filters():
    from app.pages.run_table import RowFilter, is_numeric_column

    s = pd.Series([1.0, 5.0, None, 10.0], dtype=object)
    f = RowFilter(column="x", title="X", kind="range", low=2, high=10)
    assert list(f.mask(s)) == [False, True, False, True]
    f.include_empty = True
    assert list(f.mask(s)) == [False, True, True, True]
    c = RowFilter(column="y", title="Y", kind="categories", categories=["a"])
    assert list(c.mask(pd.Series(["a", "b", None], dtype=object))) == [True, False, False]
    assert is_numeric_column(s) and not is_numeric_column(pd.Series(["a", 1], dtype=object))


def test_export_placeholders_titles_and_markdown(source):
    from app.pages.run_table import export_frame, to_markdown

    df = export_frame(source, ["run", "start_time", "comment", "v003", "v006", "v000"],
                      {"run": "Run", "start_time": "Timestamp", "comment": "Comment", "v003": "XGM/png 3",
                       "v006": "Camera/trend", "v000": "XGM/float 0"})
    assert list(df.columns) == ["Run", "Timestamp", "Comment", "XGM/png 3", "Camera/trend", "XGM/float 0"]
    assert df["XGM/png 3"].iloc[0] == "<image>" and df["Camera/trend"].iloc[0] == "<trendline>"
    md = to_markdown(df.head(3))
    assert md.splitlines()[0].startswith("| Run") and "| run 3" in md


# ---------------------------------------------------------------- writes and configuration

def test_writes_refused_without_permission(source, db):
    from app import edits

    ro = SessionState(source=source, read_only=True, can_write=False, write_denied_reason="read-only server")
    with pytest.raises(PermissionError, match="read-only"):
        edits.set_comment(ro, 3, "nope")
    with pytest.raises(PermissionError):
        edits.add_user_variable(ro, "Title", "", "string")
    rw = SessionState(source=source, can_write=True)
    edits.set_comment(rw, 3, "yes")
    with sqlite3.connect(db / "runs.sqlite") as conn:
        assert conn.execute("SELECT value FROM run_variables WHERE run=3 AND name='comment'").fetchone() == ("yes",)
    assert source.frame().loc[3, "comment"] == "yes"
    with pytest.raises(ValueError, match="not a whole number"):
        edits.set_user_value(rw, 3, "shots", "many")
    assert edits.set_user_value(rw, 3, "good", "yes") is True
    assert edits.add_user_variable(rw, "Sample 2 / thickness", "", "number") == "sample_2_thickness"
    assert source.variable("sample_2_thickness").type == "number"
    with pytest.raises(ValueError, match="already exists"):
        edits.add_user_variable(rw, "Other", "sample_2_thickness", "number")


def test_server_config_and_startup_notes(tmp_path, db):
    from app.serve import startup_notes

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


def test_panel_auth_options_pass_through_with_their_values():
    from app.serve import split_auth_args

    ours, auth = split_auth_args(["--port", "1", "--basic-auth", "pw", "--cookie-secret=s", "/db",
                                  "--oauth-optional", "/db2", "--oauth-guest-endpoints", "/a", "/b",
                                  "--read-only"])
    assert ours == ["--port", "1", "/db", "/db2", "--read-only"]
    assert auth == ["--basic-auth", "pw", "--cookie-secret=s", "--oauth-optional",
                    "--oauth-guest-endpoints", "/a", "/b"]


def test_export_widgets_produce_csv_excel_markdown(source):
    import openpyxl

    from app.pages.run_table import RunTablePage

    session = SessionState(source=source, can_write=True)
    page = RunTablePage(session)
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


def test_page_filters_sorting_and_columns(source):
    from app.pages.run_table import RowFilter, RunTablePage

    page = RunTablePage(SessionState(source=source, can_write=False))
    page.filter_controls()
    values = source.frame()["v001"]
    lo, hi = sorted(v for v in values if v is not None)[3], sorted(v for v in values if v is not None)[8]
    page.add_filter(RowFilter(column="v001", title="v001", kind="range", low=lo, high=hi))
    kept = page.table._processed.index
    assert len(kept) == 6 and all(lo <= values[k] <= hi for k in kept)
    assert len(page.filter_list.objects) == 1
    page.clear_filters()
    assert len(page.table._processed) == 12
    # Tags choose columns; editable columns are kept; nothing is editable without permission.
    page.tag_choice.value = ["images"]
    cols = list(page.table.value.columns)
    assert cols[:3] == ["run", "start_time", "comment"] and "v003" in cols and "v000" not in cols
    assert page.table.editable_columns == [] and all(e is None for e in page.table.editors.values())
