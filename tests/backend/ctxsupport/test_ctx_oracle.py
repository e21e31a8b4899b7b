"""The same context executed by the original DAMNIT and by us gives the same metadata, order, errors
(classes and exact messages), summaries, group titles, log lines and thumbnail geometry; where a context
file has problems, ours are instances of the exception classes the original raises."""
from __future__ import annotations

import graphlib
import io
import json
import logging
import re

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from backend.processing.summaries import is_png, summarise
from tests.ctx_helpers import build, ctxrunner, damnit_ctx  # noqa: F401

import ctx_storable  # noqa: E402  isort: skip

pytestmark = pytest.mark.oracle

CONTEXT = '''
import numpy as np
import xarray as xr
from damnit_ctx import Variable, Cell, Group, Skip

@Variable(title="Scalar", units="mJ", tags=["a", "b"])
def scalar(run, n: "meta#run_number"):
    """A scalar."""
    return n * 1.5

@Variable(title="Text")
def text(run):
    return "hello"

@Variable(title="Line", summary="mean")
def line(run):
    return np.sin(np.linspace(0, 10, 500))

@Variable(title="Line default")
def line_default(run):
    return xr.DataArray(np.cos(np.linspace(0, 10, 5000)), dims=["x"],
                        coords={"x": np.linspace(0, 1, 5000)}, attrs={"units": "V"})

@Variable(title="Image")
def image(run):
    return np.arange(100.0).reshape(10, 10)

@Variable(title="Cube")
def cube(run):
    return np.zeros((2, 3, 4), dtype=np.int16)

@Variable(title="Dataset")
def dataset(run):
    return xr.Dataset({"a": ("x", np.arange(1000.0))})

@Variable(title="Complex")
def cplx(run):
    return 2 - 1j

@Variable(title="Bools")
def bools(run):
    return np.array([True, False, True])

@Variable(title="Formatted")
def formatted(run):
    return Cell(np.arange(4.0), summary_value=12, bold=False, background="#00ff7f", units="um")

@Variable(title="Bad summary", summary="not_a_numpy_function")
def bad_summary(run):
    return np.array([1.0, 2.0])

@Variable(title="Fails")
def fails(run):
    raise ValueError("first line\\nsecond line")

@Variable(title="Skips")
def skips(run):
    raise Skip("nothing here")

@Variable(title="Nothing")
def nothing(run):
    return None

@Variable(title="Dep on fail")
def dep_fail(run, x: "var#fails", y: "var#scalar"):
    return x

@Variable(title="Dep on both")
def dep_both(run, x: "var#dep_fail", y: "var#skips"):
    return x

@Variable(title="Dep on skip")
def dep_skip(run, y: "var#skips"):
    return y

@Variable(title="Dep on none")
def dep_none(run, y: "var#nothing"):
    return y

@Variable(title="Glob")
def glob(run, parts: "var#line*"):
    return len(parts)

@Variable(title="Unsaveable")
def unsaveable(run):
    return {"a": 1}

@Variable(title="Proc", data="proc", cluster=True)
def proc_var(run):
    return 1

@Variable(title="Promoted")
def promoted(run, p: "var#proc_var"):
    return p

@Group(tags="grp")
class G:
    factor: float = 2.0

    @Variable(title="Base")
    def base(self, run):
        return 3.0

    @Variable(title="Scaled")
    def scaled(self, run, b: "self#base"):
        return b * self.factor

g = G(title="The group")
'''

ORACLE_CODE = '''
import json, sys
import numpy as np
from damnit.context import ContextFile
from ctxrunner import mock_run
ctx = ContextFile.from_str(sys.stdin.read())
res = ctx.execute(mock_run(), 5, 1234, {})

def plain(x):
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8 and x[:8].tobytes() == b"\\x89PNG\\r\\n\\x1a\\n":
            return "<png>"
        if np.iscomplexobj(x):
            return ["complex", float(x.real), float(x.imag)]
        return ["array", x.shape, np.asarray(x, dtype=float).round(6).tolist()] if x.ndim else float(x)
    if hasattr(x, "data") and isinstance(getattr(x, "data"), bytes):
        return "<png>"
    if isinstance(x, (np.generic,)):
        return plain(np.asarray(x))
    return x

out = {"vars": ctx.vars_to_dict(), "order": list(ctx.ordered_vars()),
       "data": {n: [v.data.value, bool(v.cluster)] for n, v in ctx.vars.items()},
       "errors": {n: [type(e).__name__, str(e)] for n, e in res.errors.items()},
       "summaries": {}, "attrs": {}}
for name, cell in res.cells.items():
    if name == "start_time":
        continue
    out["summaries"][name] = plain(cell.get_summary(name))
    attrs = dict(cell.summary_attrs())
    s = cell.get_summary(name)
    if isinstance(s, np.ndarray) and s.ndim == 2 and s.shape[0] == 2:
        attrs["summary_type"] = "trendline"
    out["attrs"][name] = {k: plain(v) if not isinstance(v, (bool, np.bool_)) else bool(v)
                          for k, v in attrs.items()}
print(json.dumps(out, default=str))
'''


def _plain(x):
    if is_png(x):
        return "<png>"
    if isinstance(x, np.ndarray):
        if np.iscomplexobj(x):
            return ["complex", float(x.real), float(x.imag)]
        return ["array", list(x.shape), np.asarray(x, dtype=float).round(6).tolist()] if x.ndim else float(x)
    return x


def _ours():
    ctx = build(CONTEXT, header=False)
    records = {}

    def on_done(name, cell, exc, elapsed):
        if exc is None:
            records[name] = summarise(ctx_storable.cell_record(name, cell, elapsed, 1 << 30))

    res = ctx.execute(ctxrunner.mock_run(), 5, 1234, {}, on_done=on_done)
    out = {"vars": {n: {k: v[k] for k in ("title", "description", "tags", "type")}
                    for n, v in ctx.vars_to_dict().items()},
           "order": list(ctx.ordered_vars()),
           "data": {n: [v.data.value, bool(v.cluster)] for n, v in ctx.vars.items()},
           "errors": {n: [type(e).__name__, str(e)] for n, e in res.errors.items()},
           "summaries": {}, "attrs": {}}
    for name, r in records.items():
        if name == "start_time" or r.data is None and r.summary is None:
            continue
        out["summaries"][name] = _plain(r.summary)
        out["attrs"][name] = {k: (bool(v) if isinstance(v, (bool, np.bool_)) else _plain(v))
                              for k, v in r.summary_attrs.items()}
    return out


def test_same_results_as_the_original(damnit_oracle):
    proc = damnit_oracle._run([str(damnit_oracle.python), "-c", ORACLE_CODE], cwd=None,
                              env={"MPLBACKEND": "Agg"}, timeout=300, check=True, stdin=CONTEXT)
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = _ours()
    for meta in theirs["vars"].values():
        meta["tags"] = list(meta["tags"]) if meta["tags"] is not None else None
        meta.pop("attributes")
    assert ours["vars"] == theirs["vars"]
    assert ours["order"] == theirs["order"]
    assert ours["data"] == theirs["data"]

    # both refuse values HDF5 cannot hold (our message names the variable and the reason)
    assert ours["errors"].pop("unsaveable")[0] == theirs["errors"].pop("unsaveable")[0] == "TypeError"
    assert ours["errors"] == theirs["errors"]

    theirs["summaries"].pop("unsaveable", None)
    theirs["attrs"].pop("unsaveable", None)
    for name in ("nothing",):  # None: no summary in either
        theirs["summaries"].pop(name, None)
        theirs["attrs"].pop(name, None)
    # trendlines: the original uses the fpcs downsampler, we our own min/max one: compare the envelope
    for name in ("line_default",):
        t, o = theirs["summaries"].pop(name), ours["summaries"].pop(name)
        assert t[0] == "array" and o[0] == "array" and o[1][0] == 2
        assert max(o[2][1]) == pytest.approx(max(t[2][1]), abs=1e-3)
        assert min(o[2][1]) == pytest.approx(min(t[2][1]), abs=1e-3)
        assert abs(o[1][1] - t[1][1]) < 60
    assert ours["summaries"] == theirs["summaries"]
    assert ours["attrs"] == theirs["attrs"]


# -- groups: names, titles and order ------------------------------------------------------------------

GROUPS_CONTEXT = '''
from damnit_ctx import Variable, Group

@Group(tags="det")
class Detector:
    @Variable(title="Raw")
    def raw(self, run):
        return 1.0

    @Variable(title="Scaled")
    def scaled(self, run, raw: "self#raw"):
        return raw * 2

@Group
class Station:
    first: Detector = None
    second: Detector = None

    @Variable(title="Total")
    def total(self, run, a: "self#first.scaled", b: "self#second.raw"):
        return a + b

@Variable(title="Top")
def top(run):
    return 0.0

station = Station(first=Detector(), second=Detector(title="Second"))
dotted = Detector(name="explicit.dot")
custom = Station(name="x.y", sep=" | ", first=Detector())
plain = Detector()
'''

GROUPS_ORACLE = '''
import json, sys
from damnit.context import ContextFile
from ctxrunner import mock_run
ctx = ContextFile.from_str(sys.stdin.read())
res = ctx.execute(mock_run(), 5, 1234, {})
print(json.dumps({"vars": [[n, v["title"], sorted(v["tags"] or [])] for n, v in ctx.vars_to_dict().items()],
                  "order": list(ctx.ordered_vars()), "cells": list(res.cells),
                  "errors": {n: type(e).__name__ for n, e in res.errors.items()}}))
'''


def test_group_names_titles_and_order_as_the_original(damnit_oracle):
    """An explicit name keeps its dots in the title (``explicit.dot/Raw``); names given by the global
    and nested paths become ``station/first/Raw``; variables come in the original's order (which is
    the column order in the database)."""
    proc = damnit_oracle._run([str(damnit_oracle.python), "-c", GROUPS_ORACLE], cwd=None, env=None, timeout=300,
                              check=True, stdin=GROUPS_CONTEXT)
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ctx = build(GROUPS_CONTEXT, header=False)
    res = ctx.execute(ctxrunner.mock_run(), 5, 1234, {})
    ours = {"vars": [[n, v["title"], sorted(v["tags"] or [])] for n, v in ctx.vars_to_dict().items()],
            "order": list(ctx.ordered_vars()), "cells": list(res.cells),
            "errors": {n: type(e).__name__ for n, e in res.errors.items()}}
    assert ours == theirs
    titles = dict((n, t) for n, t, _ in ours["vars"])
    assert titles["explicit.dot.raw"] == "explicit.dot/Raw"
    assert titles["x.y.total"] == "x.y | Total" and titles["x.y.first.raw"] == "x/y/first/Raw"
    assert titles["station.second.raw"] == "Second/Raw"


# -- errors: the original's exception classes and the phrases its users match ----------------------------

ERROR_CASES = {
    "cycle": '''
@Variable
def a(run, x: "var#b"):
    return x
@Variable
def b(run, x: "var#a"):
    return x
''',
    "group cycle": '''
@Group
class G:
    @Variable
    def a(self, run, v: "self#b"):
        return v
    @Variable
    def b(self, run, v: "self#a"):
        return v
g = G(name="g")
''',
    "unknown var": '''
@Variable
def foo(run, bar: "var#bar"):
    return bar
''',
    "unknown glob": '''
@Variable
def foo(run, bar: "var#bar*"):
    return bar
''',
    "unknown var and cycle": '''
@Variable
def a(run, x: "var#b"):
    return x
@Variable
def b(run, x: "var#a", y: "var#nope"):
    return x
''',
    "self path through a missing attribute": '''
@Group
class G:
    @Variable
    def out(self, run, v: "self#no_such_group.x"):
        return v
g = G()
''',
    "self path through a number": '''
@Group
class G:
    blah: int = 5
    @Variable
    def out(self, run, v: "self#blah.x"):
        return v
g = G()
''',
    "self glob before the leaf": '''
@Group
class Other:
    @Variable
    def var(self, run):
        return 1
@Group
class G:
    other: Other = None
    @Variable
    def out(self, run, v: "self#other*.var"):
        return v
g = G(other=Other(name="other"))
''',
    "self to a number": '''
@Group
class G:
    blah: int = 5
    @Variable
    def out(self, run, v: "self#blah"):
        return v
g = G()
''',
    "self to nothing": '''
@Group
class G:
    @Variable
    def out(self, run, v: "self#nothing"):
        return v
g = G()
''',
    "bad data": '''
@Variable(data="scratch/test")
def var(run):
    return 42
''',
    "bad data of a dependency": '''
@Variable(data="bogus", units="")
def var(run):
    return 42
@Variable
def w(run, v: "var#var"):
    return v
''',
    "empty units": '''
@Variable(units="")
def var(run):
    return 42
''',
    "empty tag": '''
@Variable(title="Foo", tags=["bar", ""])
def foo(run):
    return 42
''',
    "bad name": '''
@Variable
def var(run):
    return 42
var.name = "var.1.name"
''',
    "duplicate titles": '''
@Variable(title="Foo")
def foo(run):
    return 1
@Variable(title="Foo")
def bar(run):
    return 2
''',
    "ambiguous group": '''
@Group
class G:
    @Variable
    def v(self, run):
        return 1
g = G()
h = g
''',
    "group name twice": '''
@Group
class G:
    @Variable
    def v(self, run):
        return 1
g = G(name="same")
h = G(name="same")
''',
}
# Words the original's messages contain that code (and the original's own tests) match on.
PHRASES = ["cyclical dependencies", "'bar'", "bar*", "no_such_group", "type 'int'", "must be a non-empty string",
           "not a valid Python identifier", "multiple names", "used by multiple group instances", "foo", "bar",
           "duplicate titles"]

ERRORS_ORACLE = '''
import json, sys
from damnit.context import ContextFile
cases = json.loads(sys.stdin.read())
phrases = cases.pop("__phrases__")
out = {}
for label, code in cases.items():
    try:
        ContextFile.from_str(code)
    except Exception as e:
        out[label] = [type(e).__name__, [p for p in phrases if p in str(e)]]
    else:
        out[label] = None
print(json.dumps(out))
'''


def test_errors_are_instances_of_what_the_original_raises(damnit_oracle):
    """Code written against the original catches the same classes from us (ours are subclasses that
    also carry every problem, located), and the phrases people match in its messages are in ours."""
    header = "from damnit_ctx import Variable, Group\n"
    cases = {label: header + code for label, code in ERROR_CASES.items()}
    proc = damnit_oracle._run([str(damnit_oracle.python), "-c", ERRORS_ORACLE], cwd=None, env=None,
                              timeout=300, check=True, stdin=json.dumps({**cases, "__phrases__": PHRASES}))
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    classes = {"CycleError": graphlib.CycleError, "KeyError": KeyError, "AttributeError": AttributeError,
               "ValueError": ValueError, "GroupError": damnit_ctx.GroupError,
               "ContextFileErrors": damnit_ctx.ContextFileErrors}
    seen = set()
    for label, code in cases.items():
        assert theirs[label] is not None, f"{label}: the original accepts it"
        their_cls, their_phrases = theirs[label]
        with pytest.raises(Exception) as info:
            ctxrunner.ContextFile.from_str(code, "<test>")
        assert isinstance(info.value, classes[their_cls]), f"{label}: ours {info.type.__name__}, theirs {their_cls}"
        assert isinstance(info.value, (damnit_ctx.ContextFileErrors, damnit_ctx.GroupError)), label
        missing = [p for p in their_phrases if p not in str(info.value)]
        assert not missing, f"{label}: {str(info.value)!r} lacks {missing}"
        seen.add(their_cls)
    assert seen == set(classes)  # every class the original raises was tried

    # ours still say where, and report everything at once
    with pytest.raises(KeyError) as info:
        ctxrunner.ContextFile.from_str(cases["unknown var and cycle"], "/ctx/context.py")
    assert isinstance(info.value, damnit_ctx.ContextFileErrors) and not isinstance(info.value, graphlib.CycleError)
    assert len(info.value.problems) == 2 and "/ctx/context.py:6: variable 'b'" in str(info.value)
    with pytest.raises(ValueError) as info:
        ctxrunner.ContextFile.from_str(cases["bad data of a dependency"], "/ctx/context.py")
    assert "/ctx/context.py:3: variable 'var': data='bogus' is invalid" in str(info.value)
    assert "units='' is invalid (must be a non-empty string)" in str(info.value)


# -- logging of a failing variable and its dependents ----------------------------------------------------

LOGGING_CONTEXT = '''
from damnit_ctx import Variable, Skip

@Variable(title="Fails")
def fails(run):
    raise RuntimeError("boom")

@Variable(title="After fail")
def after_fail(run, x: "var#fails"):
    return x

@Variable(title="After that")
def after_that(run, x: "var#after_fail"):
    return x

@Variable(title="Skips")
def skips(run):
    raise Skip("not here")

@Variable(title="After skip")
def after_skip(run, x: "var#skips"):
    return x

@Variable(title="Nothing")
def nothing(run):
    return None

@Variable(title="After nothing")
def after_nothing(run, x: "var#nothing"):
    return x
'''

LOGGING_ORACLE = '''
import json, logging, sys
from damnit.context import ContextFile
from ctxrunner import mock_run
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.getMessage().splitlines()[0]])
logging.getLogger("ctxrunner").addHandler(Keep())
logging.getLogger("ctxrunner").setLevel(logging.INFO)
ContextFile.from_str(sys.stdin.read()).execute(mock_run(), 5, 1234, {})
print(json.dumps(records))
'''


def test_dependents_of_a_failing_variable_log_only_a_warning(damnit_oracle, caplog):
    proc = damnit_oracle._run([str(damnit_oracle.python), "-c", LOGGING_ORACLE], cwd=None, env=None,
                              timeout=300, check=True, stdin=LOGGING_CONTEXT)
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ctx = build(LOGGING_CONTEXT, header=False)
    with caplog.at_level(logging.INFO, logger="ctxrunner"):
        ctx.execute(ctxrunner.mock_run(), 5, 1234, {})
    ours = [[r.levelname, r.getMessage().splitlines()[0]] for r in caplog.records if r.name == "ctxrunner"]

    def plain(records):  # timings differ
        return [[level, re.sub(r"in [\d.]+ s$", "in N s", msg)] for level, msg in records]

    assert plain(ours) == plain(theirs)
    assert [m for level, m in ours if level == "ERROR"] == ["Could not get data for fails", "Skipped skips: not here"]


# -- 2-D thumbnails -----------------------------------------------------------------------------------

THUMBS_ORACLE = '''
import io, json
import numpy as np, xarray as xr
from PIL import Image
from damnit.context import Cell

def png(obj):
    summary = Cell(obj).get_summary("v")
    img = Image.open(io.BytesIO(summary.data)).convert("RGB")
    px = np.asarray(img)
    return [list(img.size), [px[10, 150].tolist(), px[290, 150].tolist(), px[150, 10].tolist(),
                             px[150, 290].tolist()]]

out = {}
for shape in SHAPES:
    a = np.random.default_rng(0).random(shape)
    out[f"np{shape}"] = png(a)[0]
    out[f"xr{shape}"] = png(xr.DataArray(a, dims=["y", "x"]))[0]
a = np.zeros((4, 5)); a[0, :] = 1.0; a[1:, 0] = 0.5
for label, coords in COORDS.items():
    out[label] = png(xr.DataArray(a, dims=["y", "x"], coords=coords) if label != "numpy" else a)
print(json.dumps(out))
'''
THUMB_SHAPES = [(1, 100), (100, 1), (2, 500), (100, 100), (1000, 1000), (3, 4)]
THUMB_COORDS = {"numpy": {}, "no coords": {}, "y descending": {"y": [3, 2, 1, 0]},
                "x descending": {"x": [9, 7, 5, 3, 1]}, "y labels": {"y": list("dcba")}}


def test_2d_thumbnails_have_the_original_geometry(damnit_oracle):
    """Every 2-D array gives a 300x300 PNG, stretched to fill it, oriented like the original's."""
    code = THUMBS_ORACLE.replace("SHAPES", repr(THUMB_SHAPES)).replace("COORDS", repr(THUMB_COORDS))
    theirs = damnit_oracle.run_json(code, env={"MPLBACKEND": "Agg"})

    def png(obj):
        summary = summarise(ctx_storable.cell_record("v", damnit_ctx.Cell(obj), 0.0, 1 << 30)).summary
        assert is_png(summary)
        img = Image.open(io.BytesIO(summary.tobytes())).convert("RGB")
        px = np.asarray(img)
        return [list(img.size), [px[10, 150].tolist(), px[290, 150].tolist(), px[150, 10].tolist(),
                                 px[150, 290].tolist()]]

    for shape in THUMB_SHAPES:
        a = np.random.default_rng(0).random(shape)
        assert png(a)[0] == theirs[f"np{shape}"] == [300, 300], shape
        assert png(xr.DataArray(a, dims=["y", "x"]))[0] == theirs[f"xr{shape}"] == [300, 300], shape
    a = np.zeros((4, 5))
    a[0, :] = 1.0
    a[1:, 0] = 0.5
    for label, coords in THUMB_COORDS.items():
        ours = png(xr.DataArray(a, dims=["y", "x"], coords=coords) if label != "numpy" else a)
        assert ours == theirs[label], label  # top, bottom, left and right middles: the same colours
