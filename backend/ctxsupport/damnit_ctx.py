"""The API that context files import: ``from damnit_ctx import Variable, Cell, Group, Skip, RunData``.

This module runs inside the user's ``context_python``, so it imports only the standard library and
numpy; xarray, matplotlib, plotly and pandas objects are recognised without importing those packages.
"""

from __future__ import annotations

import ast
import contextvars
import dataclasses
import hashlib
import inspect
import re
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from enum import Enum
from graphlib import CycleError

import numpy as np

__all__ = [
    "Cell",
    "Pipeline",
    "ContextFileErrors",
    "CyclicDependencyErrors",
    "DependencyError",
    "Group",
    "GroupError",
    "GroupPathError",
    "InvalidDataErrors",
    "UnknownDependencyErrors",
    "RunData",
    "Skip",
    "Variable",
]


class RunData(Enum):
    """Which data a variable needs; decides which run event (migration/calibration) triggers it."""

    RAW = "raw"
    PROC = "proc"
    ALL = "all"


# --------------------------------------------------------------------------------------------- errors

class Skip(Exception):
    """Raise ``Skip("reason")`` in a variable to leave its cell empty with an explanation."""


class GroupError(Exception):
    """A ``@Group`` is defined or used in a way that cannot be turned into variables."""


class GroupPathError(GroupError, AttributeError):
    """A ``"self#a.b"`` path goes through an attribute that is missing or is not a group.

    Also an AttributeError, which is what DAMNIT raises here, so code catching that keeps working.
    """


class ContextFileErrors(RuntimeError):
    """Every problem found while checking a context file (one per line).

    Where DAMNIT raises a standard exception instead (it stops at the first problem), the error is
    also an instance of that class: see the subclasses below.
    """

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class UnknownDependencyErrors(ContextFileErrors, KeyError):
    """The problems include a ``var#`` annotation that matches no variable (DAMNIT: KeyError)."""


class CyclicDependencyErrors(ContextFileErrors, CycleError):
    """The problems include variables depending on each other in a cycle (DAMNIT: CycleError)."""


class InvalidDataErrors(ContextFileErrors, ValueError):
    """The problems include a ``data=`` other than 'raw' or 'proc' (DAMNIT: ValueError)."""


def _tree_lines(dep_name: str, exc: BaseException, indent: str, last: bool) -> list[str]:
    """Lines describing why one dependency gave no value, nested for dependency errors."""
    head = indent + ("└ " if last else "├ ")
    child_indent = indent + ("   " if last else "│  ")
    if isinstance(exc, DependencyError):
        lines = [f"{head}({dep_name}) skipped"]
        if not exc.dep_errors:
            return lines + [f"{child_indent}<no details>"]
        for i, (sub_name, sub_exc) in enumerate(exc.dep_errors):
            lines += _tree_lines(sub_name, sub_exc, child_indent, i == len(exc.dep_errors) - 1)
        return lines
    cls = type(exc).__name__
    text = str(exc)
    if not text:
        return [f"{head}({dep_name}) failed: {cls}"]
    first, *rest = text.splitlines()
    return [f"{head}({dep_name}) failed: {cls}: {first}"] + [child_indent + line for line in rest]


class DependencyError(RuntimeError):
    """A variable could not run because dependencies failed; the message is a tree of the causes."""

    def __init__(self, dep_errors: Iterable[tuple[str, BaseException]]):
        self.dep_errors = list(dep_errors)
        lines = ["Skipped due to missing dependency:"]
        for i, (name, exc) in enumerate(self.dep_errors):
            lines += _tree_lines(name, exc, "", i == len(self.dep_errors) - 1)
        super().__init__("\n".join(lines))


# ------------------------------------------------------------------------------------- type sniffing

def is_instance_of(obj, module: str, cls: str) -> bool:
    """isinstance(obj, module.cls), without importing ``module`` if the user never did."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(obj, getattr(mod, cls, ()))


def is_xarray(obj) -> bool:
    return is_instance_of(obj, "xarray", "DataArray") or is_instance_of(obj, "xarray", "Dataset")


def is_mpl_figure(obj) -> bool:
    return is_instance_of(obj, "matplotlib.figure", "Figure")


def is_mpl_axes(obj) -> bool:
    return is_instance_of(obj, "matplotlib.axes", "Axes")


def is_plotly_figure(obj) -> bool:
    return is_instance_of(obj, "plotly.graph_objs", "Figure")


def is_figure(obj) -> bool:
    return is_mpl_figure(obj) or is_plotly_figure(obj)


def pandas_kind(obj) -> str | None:
    """'series' or 'dataframe' for pandas objects (stored as Parquet, like DAMNIT), else None."""
    if is_instance_of(obj, "pandas", "Series"):
        return "series"
    if is_instance_of(obj, "pandas", "DataFrame"):
        return "dataframe"
    return None


def unstorable_dtype_reason(dtype: np.dtype) -> str | None:
    """Why HDF5 can't hold arrays of this dtype, or None if it can."""
    if dtype.hasobject:
        return "it holds Python objects (object dtype)"
    if dtype.fields:
        for sub, *_ in dtype.fields.values():
            reason = unstorable_dtype_reason(sub)
            if reason:
                return reason
        return None
    if dtype.kind in "biufcS":
        return None
    if dtype.kind == "U":
        return f"HDF5 cannot store numpy unicode arrays ({dtype}); join them into one str or encode to bytes"
    return f"HDF5 cannot store numpy arrays of dtype {dtype}"


# ------------------------------------------------------------------------------------------ Variable

def unquote_annotation(ann):
    """``"'var#x'"`` -> ``"var#x"``: with ``from __future__ import annotations`` string annotations
    arrive quoted a second time."""
    if isinstance(ann, str) and len(ann) >= 2 and ann[0] == ann[-1] and ann[0] in "'\"":
        try:
            value = ast.literal_eval(ann)
        except (ValueError, SyntaxError):
            return ann
        if isinstance(value, str):
            return value
    return ann


def is_damnit_annotation(ann) -> bool:
    """``"var#x"``, ``"meta#run_number"``, ...: a string with a ``#`` (type hints have none)."""
    return isinstance(ann, str) and "#" in ann


class Variable:
    """Decorator turning ``def f(run, ...)`` into a column of the run table.

    Usable as ``@Variable``, ``@Variable()`` or ``@Variable("Title", ...)``.
    """

    def __init__(self, title=None, description=None, summary=None, data=None, cluster=False,
                 tags=None, transient=False, units=None):
        self.title = None if callable(title) else title
        self.description = description
        self.summary = summary
        self._data = data
        self.cluster = cluster
        self.tags = (tags,) if isinstance(tags, str) else tags
        self.transient = transient
        self.units = units
        self.func = None
        self.name = None
        # Annotations rewritten for group members (self# -> var#); None means use the function's own.
        self._annotation_overrides = None
        if callable(title):  # bare @Variable
            self(title)

    def __call__(self, func):
        self.func = func
        self.name = func.__name__
        if self.title is None:
            self.title = self.name
        if self.description is None:
            self.description = inspect.getdoc(func)
        return self

    def __get__(self, instance, owner):
        # Accessing a member variable on a Group instance gives a reference that knows its group.
        if instance is not None and is_group_instance(instance):
            return GroupBoundVariable(instance, self)
        return self

    def __repr__(self) -> str:
        return f"<Variable {self.name!r}>"

    @property
    def data(self) -> RunData:
        return RunData.RAW if self._data is None else RunData(self._data)

    @property
    def data_is_valid(self) -> bool:
        return self._data in (None, "raw", "proc")

    def annotations(self) -> dict:
        if self._annotation_overrides is not None:
            return self._annotation_overrides
        return {k: unquote_annotation(v) for k, v in getattr(self.func, "__annotations__", {}).items()}

    def string_annotations(self) -> dict[str, str]:
        """Argument name -> annotation, for the string annotations DAMNIT interprets (``kind#field``).

        Other strings are type hints (``run: "DataCollection"``, or any hint under ``from __future__
        import annotations``) and are ignored like hints that are types.
        """
        return {k: v for k, v in self.annotations().items() if is_damnit_annotation(v) and k != "return"}

    def arg_dependencies(self, prefix: str = "var#") -> dict[str, str]:
        return {arg: ann[len(prefix):] for arg, ann in self.string_annotations().items()
                if ann.startswith(prefix)}

    def location(self) -> str:
        """``file:line`` of the function, for error messages."""
        code = getattr(inspect.unwrap(self.func), "__code__", None) if self.func else None
        if code is None:
            return "<unknown>"
        return f"{code.co_filename}:{code.co_firstlineno}"

    def check(self) -> list[str]:
        """Problems with this variable's own settings (without its dependencies)."""
        problems = []
        where = f"{self.location()}: variable {self.name!r}"
        if not self.name or not all(part.isidentifier() for part in self.name.split(".")):
            problems.append(f"{where}: the name is not a valid Python identifier or dotted name")
        if not self.data_is_valid:
            problems.append(f"{where}: data={self._data!r} is invalid (use 'raw' or 'proc')")
        if self.tags is not None and (
                not isinstance(self.tags, Iterable)
                or not all(isinstance(t, str) and t for t in self.tags)):
            problems.append(f"{where}: tags={self.tags!r} is invalid "
                            "(must be a non-empty string or an iterable of non-empty strings)")
        if self.units is not None and (not isinstance(self.units, str) or not self.units):
            problems.append(f"{where}: units={self.units!r} is invalid (must be a non-empty string)")
        if self.title is not None and not isinstance(self.title, str):
            problems.append(f"{where}: title={self.title!r} is invalid (use a string)")
        if self.summary is not None and not isinstance(self.summary, str):
            problems.append(f"{where}: summary={self.summary!r} is invalid "
                            "(use the name of a numpy function, e.g. 'mean')")
        return problems

    def evaluate(self, run, kwargs: dict):
        """Call the function; wrap a plain return value in a Cell (transients: no checks)."""
        value = self.func(run, **kwargs)
        if self.transient:
            return value if isinstance(value, Cell) else _PlainResult(value)
        cell = value if isinstance(value, Cell) else Cell(value, _owner=self.name)
        if cell.summary is None:
            cell.summary = self.summary
        if cell.units is None:
            cell.units = self.units
        return cell


class _PlainResult:
    """Holds a transient variable's value, which may be any Python object."""

    def __init__(self, data):
        self.data = data


# ---------------------------------------------------------------------------------------------- Cell

class Cell:
    """A return value with table display options.

    ``data``: array-like, str, None, xarray object, pandas Series/DataFrame, matplotlib Figure/Axes or plotly
    Figure.
    ``summary``: numpy function name reducing ``data`` for the table; ``summary_value``: the table value
    itself; ``bold``; ``background``: ``'#rrggbb'`` or an (R, G, B) sequence 0-255; ``preview``: a 1-D/2-D
    array or a figure shown when the cell is opened; ``units``: physical units.
    """

    def __init__(self, data, summary=None, summary_value=None, bold=None, background=None, *,
                 preview=None, units=None, _owner=None):
        owner = f" returned by variable {_owner!r}" if _owner else ""
        if is_mpl_axes(data):
            data = data.get_figure()
        if not (data is None or isinstance(data, str) or is_xarray(data) or is_figure(data) or pandas_kind(data)):
            original_type = type(data).__name__
            arr = np.asarray(data)
            reason = unstorable_dtype_reason(arr.dtype)
            if reason:
                raise TypeError(f"cannot store value of type {original_type}{owner}: {reason}")
            data = arr

        if summary_value is not None and not isinstance(summary_value, str):
            arr = np.asarray(summary_value)
            if arr.dtype.hasobject or unstorable_dtype_reason(arr.dtype):
                raise TypeError("summary_value must be a number or a string, "
                                f"not {type(summary_value).__name__}")
            summary_value = arr

        if preview is not None:
            if is_instance_of(preview, "pandas", "Series"):
                preview = preview.to_numpy()
            if is_mpl_axes(preview):
                preview = preview.get_figure()
            elif isinstance(preview, np.ndarray) or is_instance_of(preview, "xarray", "DataArray"):
                if preview.ndim not in (1, 2):
                    raise TypeError(f"preview must be a 1D or 2D array (shape is {preview.shape})")
                if not (np.issubdtype(preview.dtype, np.number) or preview.dtype == np.bool_):
                    raise TypeError(f"preview array must be numeric (dtype is {preview.dtype})")
            elif not is_figure(preview):
                raise TypeError(f"preview must be an array or a figure, not {type(preview).__name__}")

        if units is None and is_instance_of(data, "xarray", "DataArray"):
            attr_units = data.attrs.get("units")
            if isinstance(attr_units, str) and attr_units:
                units = attr_units
        if units is not None and not isinstance(units, str):
            raise TypeError(f"units must be a string, not {type(units).__name__}")
        if summary is not None and not isinstance(summary, str):
            raise TypeError(f"summary must be the name of a numpy function, not {type(summary).__name__}")
        if bold is not None:
            bold = bool(bold)

        self.data = data
        self.summary = summary
        self.summary_value = summary_value
        self.bold = bold
        self.background = self._parse_colour(background)
        self.preview = preview
        self.units = units

    @staticmethod
    def _parse_colour(colour):
        if colour is None:
            return None
        if isinstance(colour, str):
            if not re.fullmatch(r"#[0-9A-Fa-f]{6}", colour):
                raise ValueError(f"background colour {colour!r} is not a hex code like '#ffcc00'")
            return np.frombuffer(bytes.fromhex(colour[1:]), dtype=np.uint8).copy()
        if isinstance(colour, (Sequence, np.ndarray)):
            if len(colour) != 3:
                raise TypeError(f"background needs 3 values (R, G, B), got {len(colour)}")
            if not all(0 <= v <= 255 for v in colour):
                raise ValueError("background colour values must be between 0 and 255")
            return np.array(colour, dtype=np.uint8)
        raise TypeError(f"background must be '#rrggbb' or (R, G, B), not {type(colour).__name__}")


# --------------------------------------------------------------------------------------------- Group

_GROUP_RESERVED = ("name", "title", "tags", "sep")


def normalize_tags(tags) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        return (tags,)
    return tuple(tags)


def is_group_instance(obj) -> bool:
    return not isinstance(obj, type) and getattr(type(obj), "__damnit_group__", False) is True


def Group(_cls=None, *, tags=None):
    """Class decorator for a reusable set of variables, instantiated in the context file.

    The class becomes a keyword-only dataclass with extra fields ``name`` (default: the global it is
    assigned to), ``title`` (default: the name), ``tags`` (added to every member's tags) and ``sep``
    (between group and variable titles, default ``/``). Members are named ``<group>.<method>`` and can
    depend on each other with ``"self#other"`` annotations.
    """

    def decorate(cls):
        own_fields = set(cls.__dict__.get("__annotations__", {}))
        clash = sorted(own_fields.intersection(_GROUP_RESERVED))
        if clash:
            raise GroupError(f"Group class {cls.__name__!r} cannot declare reserved fields: "
                             f"{', '.join(clash)}")
        clash = sorted(set(cls.__dict__).intersection(_GROUP_RESERVED))
        if clash:
            raise GroupError(f"Group class {cls.__name__!r} cannot override reserved attributes: "
                             f"{', '.join(clash)}")

        default_tags = tags
        if default_tags is None:  # inherit the nearest decorated parent's tags
            for base in cls.__mro__[1:]:
                if "__damnit_group_tags__" in base.__dict__:
                    default_tags = base.__dict__["__damnit_group_tags__"]
                    break
        default_tags = normalize_tags(default_tags)

        annotations = dict(cls.__dict__.get("__annotations__", {}))
        annotations.update(name=object, title=object, tags=object, sep=str)
        cls.__annotations__ = annotations
        cls.name = dataclasses.field(default=None, kw_only=True)
        cls.title = dataclasses.field(default=None, kw_only=True)
        cls.tags = dataclasses.field(default=default_tags, kw_only=True)
        cls.sep = dataclasses.field(default="/", kw_only=True)
        cls.__damnit_group__ = True
        cls.__damnit_group_tags__ = default_tags

        user_post_init = cls.__dict__.get("__post_init__")

        def __post_init__(self):
            self.tags = normalize_tags(self.tags)
            if self.title is None:  # an explicit name is the title as given, dots and all (as DAMNIT)
                self.title = self.name
            if user_post_init is not None:
                user_post_init(self)
            else:
                for base in type(self).__mro__[1:]:
                    parent = base.__dict__.get("__damnit_user_post_init__")
                    if parent is not None:
                        parent(self)
                        break

        cls.__damnit_user_post_init__ = user_post_init
        cls.__post_init__ = __post_init__
        return dataclasses.dataclass(cls, kw_only=True)

    return decorate if _cls is None else decorate(_cls)


class GroupBoundVariable:
    """A group member variable reached through an instance (``grp.var``); its full name is resolved
    lazily because the group's name is often only known after the context file has run."""

    def __init__(self, group, var_def: Variable):
        self._group = group
        self._var_def = var_def

    @property
    def name(self) -> str:
        return f"{self._group.name}.{self._var_def.name}"

    def __getattr__(self, attr):
        return getattr(self._var_def, attr)

    def __repr__(self) -> str:
        return f"<group variable {self.name!r}>"


# ------------------------------------------------------------------------------------------ Pipeline

class _PipelineState:
    """The default pipeline of one context-file execution."""

    def __init__(self):
        self.pipeline = Pipeline(name="default")
        self.explicit = False  # set_default() was called: ignore auto-discovery
        self.used = False


_DEFAULT_PIPELINE: contextvars.ContextVar[_PipelineState | None] = contextvars.ContextVar(
    "damnit_default_pipeline", default=None)


@contextmanager
def pipeline_scope():
    """Give one execution of a context file its own default pipeline (restored afterwards)."""
    state = _PipelineState()
    token = _DEFAULT_PIPELINE.set(state)
    try:
        yield state
    finally:
        _DEFAULT_PIPELINE.reset(token)


def _flatten_items(items) -> tuple[list, list]:
    """Variables and group instances from Variables, groups, ``{name: group}`` dicts and sequences."""
    variables, groups = [], []

    def visit(item):
        if isinstance(item, Variable):
            variables.append(item)
        elif is_group_instance(item):
            groups.append(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if is_group_instance(value) and value.name is None:
                    value.name = key
                if isinstance(value, (Variable, dict)) or is_group_instance(value):
                    visit(value)
                else:
                    raise TypeError(f"Pipeline.add got {type(value).__name__!r} under key {key!r}; "
                                    "expected a Variable or Group instance")
        elif isinstance(item, Sequence) and not isinstance(item, (str, bytes, bytearray)):
            for sub in item:
                visit(sub)
        else:
            raise TypeError("Pipeline.add accepts Variables, Group instances, dicts of them or "
                            f"sequences of them, not {type(item).__name__!r}")

    for item in items:
        visit(item)
    return variables, groups


class Pipeline:
    """Select and execute a set of Variables/Groups programmatically.

    ``Pipeline.from_context_file(path)`` / ``from_str(code)`` compile a context; ``.add(...)`` adds
    variables or groups; ``.select(...)`` narrows it down; ``.execute()`` runs it on
    ``data=`` or on run ``run_number`` of ``proposal`` opened with extra_data. Inside a context file,
    ``Pipeline.default().add(...)`` adds to what DAMNIT discovers and ``Pipeline.set_default(p)``
    replaces discovery by ``p``.
    """

    def __init__(self, proposal=None, run_number=None, *, name=None, data=None, run_data=None,
                 param_values=None, _context=None):
        self._name = name
        self.proposal = proposal
        self.run_number = run_number
        self.data = data
        self.run_data = self._run_data(run_data)
        self.param_values = dict(param_values or {})
        self._context = _context
        self._variables: dict[str, Variable] = dict(_context.vars) if _context is not None else {}
        self._groups: list = []
        self._code = _context.code if _context is not None else ""
        self._path = getattr(_context, "path", "<pipeline>") if _context is not None else "<pipeline>"
        self._last_results = None

    @staticmethod
    def _run_data(value) -> RunData:
        return RunData.ALL if value is None else RunData(value)

    # ------------------------------------------------------------------ default pipeline
    @classmethod
    def _state(cls) -> _PipelineState:
        state = _DEFAULT_PIPELINE.get()
        if state is None:
            state = _PipelineState()
            _DEFAULT_PIPELINE.set(state)
        state.used = True
        return state

    @classmethod
    def default(cls) -> Pipeline:
        """The pipeline the context file being loaded contributes to."""
        return cls._state().pipeline

    @classmethod
    def set_default(cls, pipeline: Pipeline) -> Pipeline:
        """Make ``pipeline`` the whole context: variables not added to it are ignored."""
        if not isinstance(pipeline, Pipeline):
            raise TypeError("Pipeline.set_default expects a Pipeline instance")
        state = cls._state()
        state.pipeline = pipeline
        state.explicit = True
        return pipeline

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_context_file(cls, path, *, name=None) -> Pipeline:
        from ctxrunner import ContextFile

        return cls(name=name, _context=ContextFile.from_py_file(path))

    @classmethod
    def from_str(cls, code: str, *, path: str = "<string>", name=None) -> Pipeline:
        from ctxrunner import ContextFile

        return cls(name=name, _context=ContextFile.from_str(code, path))

    def copy(self) -> Pipeline:
        new = Pipeline(self.proposal, self.run_number, name=self._name, data=self.data,
                       run_data=self.run_data, param_values=self.param_values)
        new._variables = dict(self._variables)
        new._groups = list(self._groups)
        new._code, new._path, new._context = self._code, self._path, self._context
        return new

    def add(self, *items) -> Pipeline:
        variables, groups = _flatten_items(items)
        for var in variables:
            known = self._variables.get(var.name)
            if known is not None and known is not var:
                raise GroupError(f"Duplicate variable name {var.name!r}")
            self._variables[var.name] = var
        for group in groups:
            if not any(group is g for g in self._groups):
                self._groups.append(group)
        self._rebuild()
        return self

    def union(self, other: Pipeline, *, on_conflict: str = "error") -> Pipeline:
        """A new pipeline with the variables of both; same-named different variables per
        ``on_conflict``: "error", "left" (keep ours) or "right" (take theirs)."""
        if not isinstance(other, Pipeline):
            raise TypeError("Pipeline.union expects a Pipeline instance")
        if on_conflict not in ("error", "left", "right"):
            raise ValueError("on_conflict must be 'error', 'left' or 'right'")
        merged = dict(self.context.vars)
        for name, var in other.context.vars.items():
            mine = merged.get(name)
            if mine is None or mine is var or on_conflict == "right":
                merged[name] = var
            elif on_conflict == "error":
                raise ValueError(f"Duplicate variable name {name!r}")
        new = self.copy()
        new._variables, new._groups = merged, []
        new._rebuild()
        return new

    def with_context(self, *, name=None, proposal=None, run_number=None, run_data=None, data=None,
                     param_values=None) -> Pipeline:
        new = self.copy()
        if name is not None:
            new._name = name
        if proposal is not None:
            new.proposal = proposal
        if run_number is not None:
            new.run_number = run_number
        if run_data is not None:
            new.run_data = self._run_data(run_data)
        if data is not None:
            new.data = data
        if param_values is not None:
            new.param_values = dict(param_values)
        return new

    def _rebuild(self, code: str | None = None, path: str | None = None):
        from ctxrunner import build_context

        if code is not None:
            self._code = code
        if path is not None:
            self._path = path
        self._context = build_context(self._variables, self._groups, self._code, self._path)
        self._last_results = None
        return self._context

    # ------------------------------------------------------------------ use
    @property
    def name(self) -> str:
        if self._name is not None:
            return self._name
        parts = [*self.param_values, str(self.proposal), str(self.run_number), *self.context.vars]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]

    @property
    def context(self):
        if self._context is None:
            self._rebuild()
        return self._context

    @property
    def vars(self) -> dict:
        return self.context.vars

    @property
    def results(self):
        return self._last_results

    def vars_to_dict(self, inc_transient: bool = False) -> dict:
        return self.context.vars_to_dict(inc_transient=inc_transient)

    def select(self, *, variables=(), match=(), run_data=None, cluster=None) -> Pipeline:
        new = self.copy()
        new._context = self.context.filter(run_data=self._run_data(run_data), cluster=cluster,
                                           match=match, variables=variables)
        new._variables, new._groups = dict(new._context.vars), []
        return new

    def execute(self, *, data=None, param_values=None):
        """Run the variables; returns Results (``.cells``, ``.errors``), also kept as ``.results``."""
        if self.proposal is None or self.run_number is None:
            raise ValueError("proposal and run_number must be set to execute a Pipeline")
        ctx = self.context
        run = data if data is not None else self.data
        if run is None:
            import extra_data

            if self.run_data is not RunData.RAW and any(
                    v.data is RunData.PROC for v in ctx.vars.values()):
                try:
                    extra_data.open_run(self.proposal, self.run_number, data="proc")
                except FileNotFoundError:
                    ctx = ctx.filter(run_data=RunData.RAW)
            run = extra_data.open_run(self.proposal, self.run_number,
                                      data="raw" if self.run_data is RunData.RAW else "all")
        params = {**self.param_values, **(param_values or {})}
        self._last_results = ctx.execute(run, self.run_number, self.proposal, params, label=self.name)
        return self._last_results
