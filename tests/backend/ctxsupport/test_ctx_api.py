"""The context-file API (damnit_ctx) and ContextFile building, checking, filtering and execution."""
from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from tests.ctx_helpers import build, ctxrunner, damnit_ctx, run_mock

ContextFileErrors = damnit_ctx.ContextFileErrors
RunData = damnit_ctx.RunData


# --------------------------------------------------------------------------------------- Variable

def test_variable_decorator_forms_and_metadata():
    ctx = build('''
        @Variable
        def bare(run):
            """Docstring becomes
            the description."""
            return 1

        @Variable()
        def called(run):
            return 2

        @Variable("Positional title", summary="mean", tags="one", units="mJ", data="proc", cluster=True)
        def titled(run):
            return 3

        @Variable(title="T", description="explicit", tags=["a", "b"], transient=True)
        def helper(run):
            return object()
    ''')
    info = ctx.vars_to_dict(inc_transient=True)
    assert info["bare"]["title"] == "bare"
    assert info["bare"]["description"] == "Docstring becomes\nthe description."
    assert info["called"]["title"] == "called" and info["called"]["data"] == "raw"
    assert info["titled"] == {"title": "Positional title", "description": None, "tags": ["one"],
                              "data": "proc", "cluster": True, "transient": False, "units": "mJ",
                              "type": None}
    assert ctx.vars["titled"].summary == "mean"
    assert info["helper"]["description"] == "explicit" and info["helper"]["tags"] == ["a", "b"]
    assert "helper" not in ctx.vars_to_dict()


def test_execution_order_is_damnits():
    """As DAMNIT (graphlib): variables whose dependencies are met run in definition order, in waves."""
    ctx = build('''
        @Variable
        def a(run):
            return 1
        @Variable
        def b(run, c: "var#c"):
            return c
        @Variable
        def c(run):
            return 2
        @Variable
        def d(run, b: "var#b"):
            return b
        @Variable
        def e(run):
            return 3
    ''')
    assert ctx.ordered_vars() == ("a", "c", "e", "b", "d")
    assert run_mock(ctx).cells["d"].data == 2


# ---------------------------------------------------------------------------------- build checks

def _problems(code, tmp_path):
    with pytest.raises(ContextFileErrors) as info:
        build(code, tmp_path)
    return str(info.value)


def test_checks_report_every_problem_with_file_and_line(tmp_path):
    msg = _problems('''
        @Variable(data="calibrated")
        def bad_data(run):
            return 1

        @Variable(tags=["ok", ""])
        def bad_tags(run):
            return 1

        @Variable(units="")
        def bad_units(run):
            return 1

        @Variable(title="Same")
        def first(run):
            return 1

        @Variable(title="Same")
        def second(run):
            return 1

        @Variable
        def unknown(run, x: "input#threshold"):
            return x

        @Variable
        def bad_mymdc(run, x: "mymdc#beamtime"):
            return x

        @Variable
        def bad_meta(run, x: "meta#instrument"):
            return x
    ''', tmp_path)
    path = str(tmp_path / "context.py")
    lines = msg.splitlines()
    # HEADER is 2 lines; the dedented code starts with an empty line
    assert f"{path}:4: variable 'bad_data': data='calibrated' is invalid" in msg
    assert f"{path}:8: variable 'bad_tags': tags=['ok', ''] is invalid" in msg
    assert f"{path}:12: variable 'bad_units': units='' is invalid" in msg
    assert "duplicate titles between them ('Same'): first (" + path + ":16), second (" + path + ":20)" in msg
    assert f"{path}:24: variable 'unknown': argument 'x' has an unknown annotation 'input#threshold'" in msg
    assert f"{path}:28: variable 'bad_mymdc': argument 'x' has an invalid MyMdC dependency 'beamtime'" in msg
    assert f"{path}:32: variable 'bad_meta': argument 'x' has an unknown meta# field 'instrument'" in msg
    assert len(lines) == 7


def test_missing_dependency_is_located(tmp_path):
    msg = _problems('''
        @Variable
        def a(run, x: "var#nothing_*"):
            return x
    ''', tmp_path)
    assert msg == (f"{tmp_path / 'context.py'}:4: variable 'a': argument 'x' depends on 'var#nothing_*', "
                   "but no variable matches that name")


def test_cycle_is_reported_with_locations(tmp_path):
    msg = _problems('''
        @Variable
        def a(run, x: "var#c"):
            return x
        @Variable
        def b(run, x: "var#a"):
            return x
        @Variable
        def c(run, x: "var#b"):
            return x
        @Variable
        def d(run):
            return 1
    ''', tmp_path)
    assert msg.startswith("These Variables have cyclical dependencies, which is not allowed: ")
    assert "a -> c -> b -> a" in msg
    for name, line in (("a", 4), ("b", 7), ("c", 10)):
        assert f"{tmp_path / 'context.py'}:{line}: {name}" in msg
    assert ": d" not in msg


def test_invalid_variable_name(tmp_path):
    msg = _problems('''
        def make():
            def f(run):
                return 1
            f.__name__ = "not valid"
            return Variable()(f)
        v = make()
    ''', tmp_path)
    assert "variable 'not valid': the name is not a valid Python identifier or dotted name" in msg


def test_raw_variable_depending_on_proc_and_promotion(tmp_path):
    msg = _problems('''
        @Variable(data="proc")
        def p(run):
            return 1
        @Variable(data="raw")
        def r(run, x: "var#p"):
            return x
    ''', tmp_path)
    assert "variable 'r' is triggered by migration of raw data (data='raw'), but depends on these " \
           "Variables that require proc data: p" in msg

    ctx = build('''
        @Variable(data="proc")
        def p(run):
            return 1
        @Variable(cluster=True)
        def big(run):
            return 1
        @Variable
        def mid(run, x: "var#p"):
            return x
        @Variable
        def top(run, x: "var#mid", y: "var#big"):
            return x
        @Variable
        def plain(run):
            return 1
    ''')
    assert ctx.vars["mid"].data is RunData.PROC and ctx.vars["top"].data is RunData.PROC
    assert ctx.vars["top"].cluster and not ctx.vars["mid"].cluster
    assert ctx.vars["plain"].data is RunData.RAW and not ctx.vars["plain"].cluster


def test_future_annotations_in_context_file():
    """With PEP 563 the string annotations arrive quoted twice; they must still work."""
    ctx = ctxrunner.ContextFile.from_str(
        "from __future__ import annotations\nfrom damnit_ctx import Variable\n"
        "@Variable\ndef a(run):\n    return 2\n"
        "@Variable\ndef b(run, x: 'var#a', n: 'meta#run_number'):\n    return x * n\n")
    assert ctx.vars["b"].string_annotations() == {"x": "var#a", "n": "meta#run_number"}
    assert run_mock(ctx, run_number=5).cells["b"].data == 10


def test_type_hints_are_not_damnit_annotations():
    """Hints, as types or as strings (all strings under PEP 563), are left alone: only ``kind#field``
    strings are DAMNIT's. (The original fails such variables, or the whole file for hints that are
    types.) A string with ``#`` that is not DAMNIT's is still a located problem."""
    code = ("from __future__ import annotations\nfrom damnit_ctx import Variable\n"
            "from extra_data import DataCollection\n"
            "@Variable\ndef a(run: DataCollection, n: int = 3) -> float:\n    return 2.0 * n\n"
            "@Variable\ndef b(run: 'DataCollection', x: 'var#a', k: 'meta#run_number') -> 'float':\n"
            "    return x * k\n")
    ctx = ctxrunner.ContextFile.from_str(code)
    assert ctx.vars["a"].string_annotations() == {}
    assert ctx.vars["b"].string_annotations() == {"x": "var#a", "k": "meta#run_number"}
    res = run_mock(ctx, run_number=5)
    assert not res.errors and res.cells["b"].data == 30.0
    without_future = code.replace("from __future__ import annotations\n", "")
    assert run_mock(ctxrunner.ContextFile.from_str(without_future), run_number=2).cells["b"].data == 12.0
    with pytest.raises(ContextFileErrors, match=r"<string>:4: variable 'a': argument 'n' has an unknown "
                                                r"annotation 'vra#x'"):
        ctxrunner.ContextFile.from_str(code.replace("n: int = 3", "n: 'vra#x' = 3"))


def test_dependencies_by_name_or_by_variable():
    ctx = build('''
        @Variable
        def a(run):
            return 1
        @Variable
        def b(run, x: "var#a"):
            return x
        @Variable
        def c(run, y: "var#b"):
            return y
    ''')
    assert ctx.direct_dependencies("c") == ctx.direct_dependencies(ctx.vars["c"]) == {"b"}
    assert ctx.all_dependencies(ctx.vars["c"]) == ctx.all_dependencies("c") == {"a", "b"}
    assert ctx.all_dependencies(ctx.vars["a"], "b") == {"a"}


# ------------------------------------------------------------------------------------- execution

def test_dependency_error_tree_format_matches_damnit():
    ctx = build('''
        @Variable
        def a(run):
            raise ValueError("bad value\\nsecond line")
        @Variable
        def s(run):
            raise Skip("nothing to see")
        @Variable
        def b(run, x: "var#a"):
            return x
        @Variable
        def c(run, x: "var#b", y: "var#s"):
            return x
        @Variable
        def d(run, x: "var#c"):
            return x
        @Variable
        def e(run, y: "var#s"):
            return y
        @Variable
        def f(run, z: "var#e"):
            return z
        @Variable
        def g(run):
            raise KeyError()
        @Variable
        def h(run, x: "var#g"):
            return x
    ''')
    errors = run_mock(ctx).errors
    assert type(errors["b"]).__name__ == "DependencyError"
    assert str(errors["b"]) == ("Skipped due to missing dependency:\n"
                                "└ (a) failed: ValueError: bad value\n"
                                "   second line")
    assert str(errors["c"]) == ("Skipped due to missing dependency:\n"
                                "├ (b) skipped\n"
                                "│  └ (a) failed: ValueError: bad value\n"
                                "│     second line\n"
                                "└ (s) failed: Skip: nothing to see")
    assert str(errors["d"]) == ("Skipped due to missing dependency:\n"
                                "└ (c) skipped\n"
                                "   ├ (b) skipped\n"
                                "   │  └ (a) failed: ValueError: bad value\n"
                                "   │     second line\n"
                                "   └ (s) failed: Skip: nothing to see")
    # only skips below: the dependent is itself a Skip
    assert isinstance(errors["e"], damnit_ctx.Skip)
    assert str(errors["e"]) == "Skipped due to missing dependency:\n└ (s) failed: Skip: nothing to see"
    assert isinstance(errors["f"], damnit_ctx.Skip)
    assert str(errors["f"]) == ("Skipped due to missing dependency:\n└ (e) failed: Skip: Skipped due to "
                                "missing dependency:\n   └ (s) failed: Skip: nothing to see")
    assert str(errors["h"]).endswith("└ (g) failed: KeyError")


def test_none_dependencies_defaults_and_globs():
    ctx = build('''
        @Variable
        def nothing(run):
            return None
        @Variable
        def fails(run):
            raise RuntimeError("x")
        @Variable
        def needs_nothing(run, x: "var#nothing"):
            return 1
        @Variable
        def with_default(run, x: "var#fails", y: "var#nothing" = 7):
            return y
        @Variable
        def xgm_a(run):
            return 1.0
        @Variable
        def xgm_b(run):
            return 2.0
        @Variable
        def xgm_c(run):
            raise Skip("no")
        @Variable
        def total(run, parts: "var#xgm_*"):
            return sum(parts.values())
        @Variable
        def single(run, a: "var#xgm_a"):
            return a
    ''')
    res = run_mock(ctx)
    assert isinstance(res.errors["needs_nothing"], damnit_ctx.Skip)
    assert str(res.errors["needs_nothing"]) == f"Dependencies returned no data:{os.linesep}- 'nothing'"
    assert "with_default" in res.errors  # 'fails' has no default
    assert res.cells["total"].data == 3.0
    assert res.cells["single"].data == 1.0
    assert "nothing" in res.cells and res.cells["nothing"].data is None


def test_default_used_when_dependency_fails():
    ctx = build('''
        @Variable
        def fails(run):
            raise RuntimeError("x")
        @Variable
        def fallback(run, x: "var#fails" = 42):
            return x
    ''')
    assert run_mock(ctx).cells["fallback"].data == 42


def test_transient_variables():
    ctx = build('''
        @Variable(transient=True)
        def helper(run):
            return {"any": object()}
        @Variable(transient=True)
        def broken_helper(run):
            raise ValueError("nope")
        @Variable
        def uses(run, h: "var#helper"):
            return len(h)
        @Variable
        def uses_broken(run, h: "var#broken_helper"):
            return h
    ''')
    res = run_mock(ctx)
    assert "helper" not in res.cells and res.cells["uses"].data == 1
    assert "broken_helper" not in res.errors
    assert str(res.errors["uses_broken"]) == ("Skipped due to missing dependency:\n"
                                              "└ (broken_helper) failed: ValueError: nope")


def test_meta_and_param_annotations():
    ctx = build('''
        @Variable
        def meta(run, r: "meta#run_number", p: "meta#proposal", path: "meta#proposal_path"):
            return f"{p}/{r}/{path!r}"
        @Variable
        def param(run, t: "param#threshold"):
            return t
        @Variable
        def param_default(run, t: "param#threshold" = 0.5):
            return t
    ''')
    res = ctx.execute(ctxrunner.mock_run(), 7, 2222, {})
    assert res.cells["meta"].data == np.asarray("2222/7/''")
    assert "param" not in res.cells and "param" not in res.errors  # silently skipped, as DAMNIT
    assert res.cells["param_default"].data == 0.5
    res = ctx.execute(ctxrunner.mock_run(), 7, 2222, {"threshold": 3})
    assert res.cells["param"].data == 3 and res.cells["param_default"].data == 3


class FakeMyMdC:
    calls = []

    def __init__(self, proposal):
        self.proposal = proposal

    def sample_name(self, run):
        FakeMyMdC.calls.append(("sample_name", self.proposal, run))
        return f"sample-{run}"

    def run_type(self, run):
        return "Calibration"

    def techniques(self, run):
        return [{"name": "SFX", "identifier": "PaNET01188"}]


def test_mymdc_through_pluggable_client(monkeypatch):
    code = '''
        @Variable
        def sample(run, s: "mymdc#sample_name", t: "mymdc#run_type"):
            return f"{s} {t}"
        @Variable
        def techniques(run, t: "mymdc#techniques"):
            return t[0]["name"]
        @Variable
        def unrelated(run):
            return 1
    '''
    monkeypatch.setenv("DAMNIT_MYMDC_CLIENT", f"{__name__}:FakeMyMdC")
    FakeMyMdC.calls.clear()
    res = run_mock(build(code), run_number=12, proposal=4321)
    assert str(res.cells["sample"].data) == "sample-12 Calibration"
    assert str(res.cells["techniques"].data) == "SFX"
    assert FakeMyMdC.calls == [("sample_name", 4321, 12)]

    # no client available: only the mymdc variables fail, with a clear message
    monkeypatch.delenv("DAMNIT_MYMDC_CLIENT")
    res = run_mock(build(code))
    assert "mymdc# arguments need MyMdC access" in str(res.errors["sample"])
    assert set(res.errors) == {"sample", "techniques"} and res.cells["unrelated"].data == 1

    monkeypatch.setenv("DAMNIT_MYMDC_CLIENT", "no_colon_here")
    assert "is not of the form 'module:callable'" in str(run_mock(build(code)).errors["sample"])


def test_start_time_cell_and_callbacks():
    ctx = build('''
        @Variable
        def a(run):
            return 1
    ''')
    seen = []
    res = run_mock(ctx, on_start=seen.append,
                   on_done=lambda name, cell, exc, elapsed: seen.append(("done", name, exc)))
    assert isinstance(res.start_time, float)
    assert float(res.cells["start_time"].data) == res.start_time
    assert seen == [("done", "start_time", None), "a", ("done", "a", None)]


def test_prefailed_variables_are_not_run():
    ctx = build('''
        @Variable
        def slow(run):
            raise AssertionError("must not run")
        @Variable
        def after(run, x: "var#slow"):
            return x
    ''')
    res = run_mock(ctx, prefailed={"slow": TimeoutError("too slow")})
    assert isinstance(res.errors["slow"], TimeoutError)
    assert str(res.errors["after"]) == "Skipped due to missing dependency:\n└ (slow) failed: TimeoutError: too slow"


def test_on_done_failure_becomes_the_variables_error():
    ctx = build('''
        @Variable
        def a(run):
            return 1
        @Variable
        def b(run, x: "var#a"):
            return x
    ''')

    def on_done(name, cell, exc, elapsed):
        if name == "a" and exc is None:
            raise TypeError("cannot store")

    res = run_mock(ctx, on_done=on_done)
    assert str(res.errors["a"]) == "cannot store"
    assert "└ (a) failed: TypeError: cannot store" in str(res.errors["b"])


# ---------------------------------------------------------------------------------------- filter

FILTER_CODE = '''
    @Variable(title="XGM energy")
    def energy(run):
        return 1
    @Variable(title="Camera image", data="proc")
    def image(run):
        return 1
    @Variable(title="Cluster stuff", cluster=True)
    def heavy(run, e: "var#energy"):
        return 1
    @Variable(title="Derived")
    def derived(run, i: "var#image"):
        return 1
'''


def test_filter_by_data_cluster_match_and_names():
    ctx = build(FILTER_CODE)
    assert set(ctx.filter(RunData.RAW).vars) == {"energy", "heavy"}
    assert set(ctx.filter(RunData.PROC).vars) == {"image", "derived"}
    assert set(ctx.filter(RunData.ALL).vars) == set(ctx.vars)
    assert set(ctx.filter("all", cluster=False).vars) == {"energy", "image", "derived"}
    # dependencies are re-added even if they don't match the cluster flag
    assert set(ctx.filter("all", cluster=True).vars) == {"heavy", "energy"}
    assert set(ctx.filter("all", match=["camera"]).vars) == {"image"}
    assert set(ctx.filter("all", name_matches=["DERIVED"]).vars) == {"derived", "image"}
    # --var (exact names) overrides --match
    assert set(ctx.filter("all", match=["camera"], variables=["energy"]).vars) == {"energy"}
    sub = ctx.filter("all", variables=["derived"])
    assert sub.ordered_vars() == ("image", "derived")
    assert set(run_mock(sub).cells) == {"start_time", "image", "derived"}


# ------------------------------------------------------------------------------------------- Cell

def test_cell_options_and_validation():
    Cell = damnit_ctx.Cell
    c = Cell(np.arange(3), summary="sum", summary_value=5, bold=1, background="#ff8000",
             preview=np.ones((2, 2)), units="V")
    assert c.bold is True and c.background.tolist() == [255, 128, 0]
    assert c.background.dtype == np.uint8 and c.summary_value == 5 and c.units == "V"
    assert Cell(1, background=(1, 2, 3)).background.tolist() == [1, 2, 3]
    for bad, exc in (("red", ValueError), ((1, 2), TypeError), ((0, 0, 300), ValueError), (1.5, TypeError)):
        with pytest.raises(exc):
            Cell(1, background=bad)
    with pytest.raises(TypeError, match="1D or 2D"):
        Cell(1, preview=np.ones((2, 2, 2)))
    with pytest.raises(TypeError, match="numeric"):
        Cell(1, preview=np.array(["a", "b"]))
    with pytest.raises(TypeError, match="preview must be an array or a figure"):
        Cell(1, preview=[1, 2])
    with pytest.raises(TypeError, match="units must be a string"):
        Cell(1, units=5)
    with pytest.raises(TypeError, match="summary_value must be a number or a string"):
        Cell(1, summary_value=[object()])
    with pytest.raises(TypeError, match="cannot store value of type list.*object dtype"):
        Cell([1, "a", None])
    with pytest.raises(TypeError, match="unicode"):
        Cell(["a", "b"])
    with pytest.raises(TypeError, match="datetime64"):
        Cell(np.array(["2020-01-01"], dtype="datetime64[s]"))
    da = xr.DataArray(np.arange(3.0), dims=["x"], attrs={"units": "eV"})
    assert Cell(da).units == "eV"
    assert Cell(da, units="keV").units == "keV"


def test_units_precedence_through_variables():
    ctx = build('''
        import xarray as xr
        @Variable(units="mm")
        def plain(run):
            return 1
        @Variable(units="mm")
        def cell_override(run):
            return Cell(1, units="um")
        @Variable(units="mm")
        def from_attrs(run):
            return xr.DataArray([1, 2], dims=["x"], attrs={"units": "nm"})
        @Variable(summary="max")
        def summary_default(run):
            return Cell([1, 2])
        @Variable(summary="max")
        def summary_override(run):
            return Cell([1, 2], summary="min")
    ''')
    cells = run_mock(ctx).cells
    assert cells["plain"].units == "mm"
    assert cells["cell_override"].units == "um"
    assert cells["from_attrs"].units == "nm"
    assert cells["summary_default"].summary == "max" and cells["summary_override"].summary == "min"


def test_unstorable_return_is_that_variables_error():
    ctx = build('''
        @Variable
        def objects(run):
            return {"a": 1}
        @Variable
        def ok(run):
            return 2
        @Variable
        def exits(run):
            import sys
            sys.exit(3)
    ''')
    res = run_mock(ctx)
    assert isinstance(res.errors["exits"], SystemExit)
    assert isinstance(res.errors["objects"], TypeError)
    assert str(res.errors["objects"]).startswith("cannot store value of type dict returned by variable 'objects'")
    assert res.cells["ok"].data == 2


def test_context_import_and_syntax_errors_carry_location(tmp_path):
    (tmp_path / "context.py").write_text("from damnit_ctx import Variable\n\n@Variable\ndef a(run)\n    return 1\n")
    info = ctxrunner.load_context_for_info(tmp_path / "context.py")["error"]
    assert info["cls"] == "SyntaxError" and info["lineno"] == 4 and info["offset"] == 10
    assert info["filename"] == str(tmp_path / "context.py")

    (tmp_path / "context.py").write_text("import os\nimport not_a_module_xyz\n")
    info = ctxrunner.load_context_for_info(tmp_path / "context.py")["error"]
    assert info["cls"] == "ModuleNotFoundError" and info["lineno"] == 2
    assert "not_a_module_xyz" in info["message"] and "Traceback" in info["traceback"]

    (tmp_path / "context.py").write_text("from damnit_ctx import Variable\n\n\n@Variable(units=3)\n"
                                         "def a(run):\n    return 1\n")
    info = ctxrunner.load_context_for_info(tmp_path / "context.py")["error"]
    assert info["cls"] == "ContextFileErrors" and info["lineno"] == 4


def test_damnit_context_import_still_works():
    ctx = ctxrunner.ContextFile.from_str(
        "from damnit.context import Variable, Cell\n"
        "@Variable(title='X')\ndef x(run):\n    return Cell(3, bold=True)\n")
    assert run_mock(ctx).cells["x"].bold is True


def test_all_kinds_of_problems_reported_together(tmp_path):
    msg = _problems('''
        @Variable(units=5)
        def a(run, x: "var#missing"):
            return x
        @Variable
        def b(run, x: "var#c"):
            return x
        @Variable
        def c(run, x: "var#b"):
            return x
    ''', tmp_path)
    assert "depends on 'var#missing'" in msg and "cyclical dependencies" in msg and "units=5" in msg
