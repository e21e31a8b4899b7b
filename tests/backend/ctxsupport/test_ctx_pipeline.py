"""Pipeline: programmatic building, selection and execution of variables, and default pipelines."""
from __future__ import annotations

import textwrap

import pytest

from backend.base import mockruns
from backend.processing.workers import RunRequest, WorkerPool
from tests.ctx_helpers import HEADER, ctxrunner, damnit_ctx, write_context

Pipeline = damnit_ctx.Pipeline
Variable = damnit_ctx.Variable

CODE = HEADER + textwrap.dedent('''
    @Variable(title="A")
    def a(run, n: "meta#run_number"):
        return n

    @Variable(title="B", data="proc")
    def b(run, x: "var#a", scale: "param#scale" = 2):
        return x * scale

    @Group
    class G:
        @Variable(title="V")
        def v(self, run):
            return 7

    g = G()
''')


@damnit_ctx.Group
class Station:
    @Variable(title="V")
    def v(self, run):
        return 7


def _data(res, name):
    return res.cells[name].data.item()


def test_from_str_select_and_execute_with_params():
    pipe = Pipeline.from_str(CODE).with_context(proposal=1, run_number=4)
    assert set(pipe.vars) == {"a", "b", "g.v"}
    res = pipe.execute(data=ctxrunner.mock_run())
    assert _data(res, "b") == 8 and _data(res, "g.v") == 7 and pipe.results is res
    res = pipe.execute(data=ctxrunner.mock_run(), param_values={"scale": 10})
    assert _data(res, "b") == 40
    sub = pipe.select(variables=["b"])
    assert set(sub.vars) == {"a", "b"} and set(pipe.vars) == {"a", "b", "g.v"}
    assert set(pipe.select(run_data="raw").vars) == {"a", "g.v"}
    assert set(pipe.select(match=["v"]).vars) == {"g.v"}
    assert pipe.vars_to_dict()["g.v"]["title"] == "g/V"
    with pytest.raises(ValueError, match="proposal and run_number"):
        Pipeline.from_str(CODE).execute(data=ctxrunner.mock_run())


def test_add_union_and_copies():
    def make(name, value):
        def f(run):
            return value
        f.__name__ = name
        return Variable()(f)

    x, y, y2 = make("x", 1), make("y", 2), make("y", 3)
    group_cls = Station
    pipe = Pipeline(proposal=1, run_number=2).add(x, [y, {"grp": group_cls()}])
    assert set(pipe.vars) == {"x", "y", "grp.v"}
    with pytest.raises(damnit_ctx.GroupError, match="Duplicate variable name 'y'"):
        Pipeline().add(y, y2)
    with pytest.raises(TypeError, match="not 'str'"):
        Pipeline().add("x")
    with pytest.raises(damnit_ctx.GroupError, match="has no name"):
        Pipeline().add(group_cls())

    left, right = Pipeline(1, 2).add(x, y), Pipeline(1, 2).add(y2)
    with pytest.raises(ValueError, match="Duplicate variable name 'y'"):
        left.union(right)
    assert _data(left.union(right, on_conflict="left").execute(data=ctxrunner.mock_run()), "y") == 2
    assert _data(left.union(right, on_conflict="right").execute(data=ctxrunner.mock_run()), "y") == 3
    copy = left.with_context(run_number=9, name="other")
    assert (copy.run_number, left.run_number, copy.name) == (9, 2, "other")
    assert len(left.name) == 12


def test_default_pipeline_adds_to_and_replaces_discovery():
    added = ctxrunner.ContextFile.from_str(HEADER + textwrap.dedent('''
        from damnit_ctx import Pipeline

        @Variable
        def plain(run):
            return 1

        def make(i):
            @Variable(title=f"Made {i}")
            def f(run):
                return i
            f.name = f"made_{i}"
            return f

        Pipeline.default().add([make(i) for i in range(3)])
    '''))
    assert set(added.vars) == {"plain", "made_0", "made_1", "made_2"}

    replaced = ctxrunner.ContextFile.from_str(HEADER + textwrap.dedent('''
        from damnit_ctx import Pipeline

        @Variable
        def ignored(run):
            return 1

        @Variable
        def chosen(run):
            return 2

        Pipeline.set_default(Pipeline().add(chosen))
    '''))
    assert set(replaced.vars) == {"chosen"}
    # the default-pipeline state does not leak into the next context
    assert set(ctxrunner.ContextFile.from_str(CODE).vars) == {"a", "b", "g.v"}


def test_execute_opens_runs_and_nested_pipelines_in_a_worker(make_mock_runs, tmp_path):
    make_mock_runs(3456, [1, 2])
    (tmp_path / "other.py").write_text(HEADER + textwrap.dedent('''
        @Variable
        def trains(run):
            return len(run.train_ids)
        @Variable(data="proc")
        def needs_proc(run):
            return 1
    '''))
    pipe = Pipeline.from_context_file(tmp_path / "other.py").with_context(proposal=3456, run_number=2)
    res = pipe.execute()  # no proc data: only raw variables run
    assert _data(res, "trains") == 50 and "needs_proc" not in res.cells

    db = tmp_path / "db"
    write_context(db, f'''
        from damnit_ctx import Pipeline

        @Variable
        def previous_run_trains(run, n: "meta#run_number", p: "meta#proposal"):
            other = Pipeline.from_context_file({str(tmp_path / "other.py")!r})
            res = other.with_context(proposal=p, run_number=n - 1).execute()
            return res.cells["trains"].data
    ''')
    with WorkerPool(db) as pool:
        (outcome,) = pool.process([RunRequest(3456, 2)])
    values = {r.name: r for r in outcome.results}
    assert values["previous_run_trains"].data == 50, values["previous_run_trains"].error
    assert values["start_time"].data == pytest.approx(mockruns.BASE_START_TIME + mockruns.RUN_SPACING_S)
