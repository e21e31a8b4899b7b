"""@Group: naming, nesting, self# links, optional components, inheritance and the GroupError cases."""
from __future__ import annotations

import pytest

from tests.ctx_helpers import build, damnit_ctx, run_mock

GroupError = damnit_ctx.GroupError

DETECTOR = '''
    @Group(tags="det")
    class Detector:
        gain: float = 2.0

        @Variable(title="Raw", units="adu")
        def raw(self, run):
            return 10.0

        @Variable(title="Scaled", tags=["z", "a"])
        def scaled(self, run, raw: "self#raw"):
            return raw * self.gain
'''


def _values(ctx, **kw):
    res = run_mock(ctx, **kw)
    return {k: (c.data.item() if hasattr(c.data, "item") else c.data) for k, c in res.cells.items()}, res.errors


def test_names_titles_tags_and_self_links():
    ctx = build(DETECTOR + '''
    det = Detector(gain=3.0)
    other = Detector(name="second", title="Second det", sep=" - ", tags=["extra"])
    ''')
    info = ctx.vars_to_dict()
    assert set(info) == {"det.raw", "det.scaled", "second.raw", "second.scaled"}
    assert info["det.raw"]["title"] == "det/Raw"
    assert info["det.scaled"]["tags"] == ["a", "det", "z"]
    assert info["second.scaled"]["title"] == "Second det - Scaled"
    assert info["second.raw"]["tags"] == ["extra"]
    assert info["det.raw"]["units"] == "adu"
    values, errors = _values(ctx)
    assert not errors
    assert values["det.scaled"] == 30.0 and values["second.scaled"] == 20.0


def test_nested_groups_paths_and_shortest_name():
    ctx = build(DETECTOR + '''
    @Group
    class Station:
        detector: Detector
        offset: float = 1.0

        @Variable
        def total(self, run, scaled: "self#detector.scaled"):
            return scaled + self.offset

    station = Station(detector=Detector())
    shared = Detector(gain=5.0)
    a = Station(detector=shared)
    named = Station(name="st", detector=Detector(), title="The station")
    ''')
    names = set(ctx.vars)
    assert {"station.detector.raw", "station.total", "shared.scaled", "a.total", "st.detector.raw"} <= names
    assert "a.detector.raw" not in names  # `shared` (depth 0) beats `a.detector` (depth 1)
    assert ctx.vars["station.detector.scaled"].title == "station/detector/Scaled"
    assert ctx.vars["st.total"].title == "The station/total"
    values, _ = _values(ctx)
    assert values["station.total"] == 21.0
    assert values["a.total"] == 51.0


def test_group_errors_for_ambiguous_and_duplicate_names():
    with pytest.raises(GroupError, match=r"multiple names \['p.left', 'p.right'\]"):
        build(DETECTOR + """
    @Group
    class Pair:
        left: Detector
        right: Detector
    shared = Detector()
    p = Pair(left=shared, right=shared)
    del shared
    """)
    with pytest.raises(GroupError, match="used by multiple group instances"):
        build(DETECTOR + """
    one = Detector(name="same")
    two = Detector(name="same")
    """)
    with pytest.raises(GroupError, match="Duplicate variable name 'det.raw'"):
        build(DETECTOR + """
    det = Detector()
    def f(run):
        return 1
    f.__name__ = "det.raw"
    clash = Variable()(f)
    """)


def test_reserved_fields_are_refused():
    with pytest.raises(GroupError, match="reserved fields: name"):
        build('''
        @Group
        class Bad:
            name: str = "x"
        ''')
    with pytest.raises(GroupError, match="reserved attributes: title"):
        build('''
        @Group
        class Bad:
            title = "x"
        ''')


def test_bad_self_references():
    with pytest.raises(GroupError, match="Attribute 'missing' on group 'g' does not exist"):
        build('''
        @Group
        class G:
            @Variable
            def a(self, run, x: "self#missing"):
                return x
        g = G()
        ''')
    with pytest.raises(GroupError, match="is of type 'int'"):
        build('''
        @Group
        class G:
            number: int = 3
            @Variable
            def a(self, run, x: "self#number"):
                return x
        g = G()
        ''')


def test_optional_components_skip_dependents_or_use_defaults():
    ctx = build(DETECTOR + '''
    @Group
    class Station:
        detector: Detector | None = None

        @Variable
        def total(self, run, scaled: "self#detector.scaled"):
            return scaled

        @Variable
        def with_default(self, run, scaled: "self#detector.scaled" = -1.0):
            return scaled

        @Variable
        def after_total(self, run, t: "self#total"):
            return t

    empty = Station()
    full = Station(detector=Detector())
    ''')
    values, errors = _values(ctx)
    assert values["full.total"] == 20.0
    assert values["empty.with_default"] == -1.0
    assert str(errors["empty.total"]) == \
        "Dependencies returned no data:\n- 'empty.__missing__.detector.scaled'"
    assert isinstance(errors["empty.after_total"], damnit_ctx.Skip)  # cascades as a skip
    assert "(empty.total) failed: Skip: Dependencies returned no data" in str(errors["empty.after_total"])
    assert not any("__missing__" in n for n in ctx.vars_to_dict())  # placeholders are transient


def test_globs_and_links_to_other_variables():
    ctx = build(DETECTOR + '''
    @Variable
    def top(run):
        return 100.0

    @Group
    class Sum:
        source: object = None
        det: Detector | None = None

        @Variable
        def part_1(self, run):
            return 1.0
        @Variable
        def part_2(self, run):
            return 2.0
        @Variable
        def total(self, run, parts: "self#part_*"):
            return sum(parts.values())
        @Variable
        def from_det(self, run, raws: "self#det.r*"):
            return ",".join(sorted(raws))
        @Variable
        def linked(self, run, x: "self#source"):
            return x + 1

    d = Detector()
    s = Sum(source=top, det=d)
    t = Sum(source=d.scaled, det=d)
    ''')
    values, errors = _values(ctx)
    assert not errors, errors
    assert values["s.total"] == 3.0
    assert str(values["s.from_det"]) == "d.raw"
    assert values["s.linked"] == 101.0
    assert values["t.linked"] == 21.0


def test_inheritance_tags_and_post_init():
    ctx = build(DETECTOR + '''
    @Group
    class Better(Detector):
        @Variable(title="Scaled")
        def scaled(self, run, raw: "self#raw"):
            return raw * self.gain * 10

        @Variable
        def extra(self, run):
            return self.setup_value

        def __post_init__(self):
            self.setup_value = 5

    @Group(tags=["new"])
    class Retagged(Detector):
        pass

    b = Better()
    r = Retagged()
    ''')
    info = ctx.vars_to_dict()
    assert info["b.raw"]["tags"] == ["det"]  # inherited decorator tags
    assert info["r.raw"]["tags"] == ["new"]  # overridden
    values, errors = _values(ctx)
    assert not errors
    assert values["b.scaled"] == 200.0 and values["b.extra"] == 5 and values["r.scaled"] == 20.0


def test_cycles_between_group_members_are_reported():
    with pytest.raises(damnit_ctx.ContextFileErrors, match="cyclical dependencies"):
        build('''
        @Group
        class G:
            @Variable
            def a(self, run, x: "self#b"):
                return x
            @Variable
            def b(self, run, x: "self#a"):
                return x
        g = G()
        ''')


def test_unnamed_group_outside_namespace_is_not_collected():
    ctx = build(DETECTOR + '''
    def make():
        return Detector()
    made = [make()]  # not a group itself: ignored, as in DAMNIT
    ''')
    assert ctx.vars == {}


def test_an_explicit_name_is_the_title_as_given():
    ctx = build(DETECTOR + '''
    dotted = Detector(name="hall.b")
    titled = Detector(name="x.y", title="X Y")
    ''')
    assert ctx.vars["hall.b.raw"].title == "hall.b/Raw"
    assert ctx.vars["x.y.scaled"].title == "X Y/Scaled"


def test_bad_self_paths_are_also_attribute_errors():
    """DAMNIT raises AttributeError for a self# path through a missing or non-group attribute."""
    for path in ("missing.raw", "gain.raw", "det*.raw"):
        with pytest.raises(AttributeError) as info:
            build(DETECTOR + f'''
    @Group
    class Holder:
        gain: float = 1.0
        @Variable
        def a(self, run, x: "self#{path}"):
            return x
    h = Holder()
    ''')
        assert isinstance(info.value, GroupError) and f"'self#{path}' in group 'h'" in str(info.value)
