"""Builds a checked ``ContextFile`` from a context file and executes its variables for one run.

Command line (run in ``context_python`` with this folder on ``PYTHONPATH``):
  ``python -m ctxrunner ctx CONTEXT.py OUT.json``  -> variable metadata or error_info as JSON
  ``python -m ctxrunner worker --context PATH --result-fd N``  -> long-lived worker (see ctx_worker)
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import json
import logging
import os
import sys
import time
import traceback
import types
from datetime import timezone
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import ctx_compat
import numpy as np
from ctx_groups import assign_group_names, collect_groups, expand_groups
from ctx_metadata import MetadataSource
from ctx_storable import exception_text, unstorable_text
from damnit_ctx import (
    Cell,
    ContextFileErrors,
    CyclicDependencyErrors,
    DependencyError,
    GroupError,
    InvalidDataErrors,
    RunData,
    Skip,
    UnknownDependencyErrors,
    Variable,
    is_damnit_annotation,
    is_group_instance,
    pipeline_scope,
)

log = logging.getLogger("ctxrunner")
ctx_compat.install()  # `from damnit.context import Variable` in context files

MYMDC_FIELDS = ("sample_name", "run_type", "techniques")
META_FIELDS = ("run_number", "proposal", "proposal_path")
# Names the database and the run files use for a run's own metadata: a variable of that name would
# silently overwrite it (``proposal``, ``run`` and ``added_at`` are kept apart instead, as the original).
RESERVED_NAMES = {
    "start_time": "the run's start time, which DAMNIT records for every run (the Timestamp column)",
    "comment": "the run's comment, which users write in the run table",
}
_GLOB_CHARS = "*?["
_module_counter = 0


class ContextFile:
    """The variables of a context file, checked, dependency-resolved and ordered.

    Build with ``ContextFile.from_py_file(path)`` / ``from_str(code, path)``; every problem found is
    reported together in a ``ContextFileErrors`` whose lines start with ``file:line``.
    """

    def __init__(self, vars: dict[str, Variable], code: str = "", path: str = "<string>", *,
                 check: bool = True):
        self.vars = dict(vars)
        self.code = code
        self.path = path
        problems: list[str] = []
        self._deps = self._resolve_dependencies(problems)
        unknown_dependencies = bool(problems)
        cycle = False
        try:
            self._order = self._topological_order()
        except CyclicDependencyErrors as exc:
            problems.extend(exc.problems)
            self._order = tuple(self.vars)
            cycle = True
        else:
            self._promote()
        if check:
            problems.extend(self.problems())
        if problems:
            raise self._errors(problems, unknown_dependencies=unknown_dependencies, cycle=cycle)

    def _errors(self, problems: list[str], *, unknown_dependencies: bool = False, cycle: bool = False
                ) -> ContextFileErrors:
        """All the problems in one error, which is also an instance of what DAMNIT raises for the
        first of them it meets (it stops there): KeyError, then CycleError, then ValueError."""
        if unknown_dependencies:
            return UnknownDependencyErrors(problems)
        if cycle:
            return CyclicDependencyErrors(problems)
        if not all(var.data_is_valid for var in self.vars.values()):
            return InvalidDataErrors(problems)
        return ContextFileErrors(problems)

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def from_py_file(cls, path: Path | str) -> ContextFile:
        path = Path(path)
        return cls.from_str(path.read_text(), str(path.absolute()))

    @classmethod
    def from_str(cls, code: str, path: str = "<string>") -> ContextFile:
        global _module_counter
        # A real module, so that dataclasses (Groups) and pickling can look the code's module up.
        _module_counter += 1
        module = types.ModuleType(f"__damnit_context_{_module_counter}__")
        module.__file__ = path
        sys.modules[module.__name__] = module
        namespace = module.__dict__
        with pipeline_scope() as state:
            exec(compile(code, path, "exec", dont_inherit=True), namespace)
        found = {}
        for value in namespace.values():
            if isinstance(value, Variable) and value.func is not None:
                found[value.name] = value  # two globals holding same-named variables: the last wins
        if not state.used:  # plain context file: every Variable and Group in its globals
            found.update(expand_groups(namespace, found))
            return cls(found, code, path)
        # Pipeline.default() / set_default() was used: the default pipeline decides
        assign_group_names(namespace)
        pipe = state.pipeline
        if not state.explicit:
            pipe.add(*found.values(), *[v for v in namespace.values() if is_group_instance(v)])
        return pipe._rebuild(code=code, path=path)

    def _resolve_dependencies(self, problems: list[str]) -> dict[str, set[str]]:
        deps = {}
        for name, var in self.vars.items():
            deps[name] = set()
            for arg, pattern in var.arg_dependencies("var#").items():
                matches = fnmatch.filter(self.vars, pattern)
                if not matches:
                    problems.append(f"{var.location()}: variable {name!r}: argument {arg!r} depends on "
                                    f"'var#{pattern}', but no variable matches that name")
                deps[name].update(m for m in matches if m != name or pattern == name)
        return deps

    def _topological_order(self) -> tuple[str, ...]:
        """Dependencies first, in the same order as DAMNIT (graphlib, nodes added in definition order)."""
        position = {name: i for i, name in enumerate(self.vars)}
        sorter = TopologicalSorter()
        for name in self.vars:
            sorter.add(name, *sorted(self._deps[name], key=position.__getitem__))
        try:
            return tuple(sorter.static_order())
        except CycleError:
            cycle = self._find_cycle(list(self.vars))
            where = "\n".join(f"  {self.vars[n].location()}: {n}" for n in cycle)
            raise CyclicDependencyErrors([
                "These Variables have cyclical dependencies, which is not allowed: "
                + " -> ".join(cycle + [cycle[0]]) + "\n" + where]) from None

    def _find_cycle(self, names: list[str]) -> list[str]:
        """One dependency cycle among ``names`` (which must contain one)."""
        todo = set(names)
        while True:  # drop nodes that cannot be on a cycle (no remaining dependencies)
            leaves = {n for n in todo if not (self._deps[n] & todo)}
            if not leaves:
                break
            todo -= leaves
        start = next(n for n in names if n in todo)
        path, node = [], start
        while node not in path:
            path.append(node)
            node = next(d for d in sorted(self._deps[node]) if d in todo)
        return path[path.index(node):]

    def _promote(self) -> None:
        """Variables inherit proc-ness (unless explicit) and cluster-ness from their dependencies."""
        for name in self._order:
            var = self.vars[name]
            deps = [self.vars[d] for d in self.all_dependencies(name)]
            if var._data is None and any(d.data_is_valid and d.data is RunData.PROC for d in deps):
                var._data = RunData.PROC.value
            if any(d.cluster for d in deps):
                var.cluster = True

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise self._errors(problems)

    def problems(self) -> list[str]:
        """Everything wrong with the variables' settings and annotations, one located line each."""
        problems = []
        for name, var in self.vars.items():
            problems.extend(var.check())
            where = f"{var.location()}: variable {name!r}"
            if name in RESERVED_NAMES:
                problems.append(f"{where}: the name {name!r} is reserved for {RESERVED_NAMES[name]}; "
                                "rename the function")
            problems.extend(f"{where}: {problem}" for problem in _text_problems(var))
            for arg, ann in var.string_annotations().items():
                kind, sep, field = ann.partition("#")
                if not sep or kind not in ("var", "param", "meta", "mymdc"):
                    problems.append(f"{where}: argument {arg!r} has an unknown annotation {ann!r} "
                                    "(use var#, param#, meta# or mymdc#)")
                elif kind == "meta" and field not in META_FIELDS:
                    problems.append(f"{where}: argument {arg!r} has an unknown meta# field {field!r} "
                                    f"(known: {', '.join(META_FIELDS)})")
                elif kind == "mymdc" and field not in MYMDC_FIELDS:
                    problems.append(f"{where}: argument {arg!r} has an invalid MyMdC dependency "
                                    f"{field!r} (known: {', '.join(MYMDC_FIELDS)})")
            if var._data == "raw":
                proc_deps = sorted(d for d in self.all_dependencies(name)
                                   if self.vars[d].data_is_valid and self.vars[d].data is RunData.PROC)
                if proc_deps:
                    problems.append(f"{where} is triggered by migration of raw data (data='raw'), but "
                                    f"depends on these Variables that require proc data: "
                                    f"{', '.join(proc_deps)}\n"
                                    f"Remove data='raw' for {name} or change it to data='proc'")
        by_title: dict[str, list[str]] = {}
        for name, var in self.vars.items():
            if isinstance(var.title, str):
                by_title.setdefault(var.title, []).append(name)
        for title, names in by_title.items():
            if len(names) > 1:
                places = ", ".join(f"{n} ({self.vars[n].location()})" for n in names)
                problems.append(f"These Variables have duplicate titles between them ({title!r}): {places}")
        return problems

    # ------------------------------------------------------------------------------ inspection

    def ordered_vars(self) -> tuple[str, ...]:
        return self._order

    def direct_dependencies(self, var: str | Variable) -> set[str]:
        """Names of the variables ``var`` (a name, or a Variable as DAMNIT takes) depends on directly."""
        return set(self._deps[_var_name(var)])

    def all_dependencies(self, *variables: str | Variable) -> set[str]:
        """Names of everything the given variables (names or Variables) depend on, directly or not."""
        found: set[str] = set()
        todo = [d for v in variables for d in self._deps[_var_name(v)]]
        while todo:
            dep = todo.pop()
            if dep not in found:
                found.add(dep)
                todo.extend(self._deps[dep])
        return found

    def vars_to_dict(self, inc_transient: bool = False) -> dict[str, dict]:
        """Metadata per variable, as written to the ``variables`` table (plus what the runner needs)."""
        return {
            name: {
                "title": var.title,
                "description": var.description,
                "tags": list(var.tags) if var.tags is not None else None,
                "data": var.data.value,
                "cluster": bool(var.cluster),
                "transient": bool(var.transient),
                "units": var.units,
                "type": None,
            }
            for name, var in self.vars.items() if inc_transient or not var.transient
        }

    def filter(self, run_data=RunData.ALL, cluster=None, match=(), variables=(), *,
               name_matches=None) -> ContextFile:
        """Variables to run for one trigger, plus everything they depend on.

        ``run_data``: raw/proc select variables needing that data (all: every variable);
        ``cluster``: None = both; ``variables``: exact names (takes precedence over ``match``);
        ``match``: case-insensitive substrings of titles.
        """
        run_data = RunData(run_data)
        match = tuple(name_matches if name_matches is not None else match)
        picked = {}
        for name, var in self.vars.items():
            title = (var.title or name).lower()
            if run_data is not RunData.ALL and var.data is not run_data:
                continue
            if cluster is not None and bool(cluster) != bool(var.cluster):
                continue
            if variables:
                if name not in variables:
                    continue
            elif match and not any(m.lower() in title for m in match):
                continue
            picked[name] = var
        for dep in self.all_dependencies(*picked):
            picked.setdefault(dep, self.vars[dep])
        ordered = {n: self.vars[n] for n in self.vars if n in picked}
        new = object.__new__(ContextFile)
        new.vars, new.code, new.path = ordered, self.code, self.path
        new._deps = {n: {d for d in self._deps[n] if d in ordered} for n in ordered}
        new._order = tuple(n for n in self._order if n in ordered)
        return new

    # ------------------------------------------------------------------------------- execution

    def execute(self, run, run_number: int, proposal: int, param_values: dict | None = None, *,
                prefailed: dict[str, BaseException] | None = None, metadata: MetadataSource | None = None,
                on_start=None, on_done=None, label: str = "") -> Results:
        """Run every variable in dependency order.

        ``prefailed`` marks variables as already failed (they hung or crashed earlier) without running
        them. ``on_start(name)`` and ``on_done(name, cell, error, elapsed)`` are called around each
        variable; ``on_done`` may raise to turn a computed value into that variable's error (e.g. it
        cannot be stored), which its dependents then see.
        """
        label = f"[{label}] " if label and label != "default" else ""
        param_values = param_values or {}
        prefailed = prefailed or {}
        metadata = metadata or MetadataSource(proposal, run_number)
        start_time = get_start_time(run)
        values: dict[str, object] = {"start_time": start_time}
        cells: dict[str, Cell] = {}
        errors: dict[str, BaseException] = {}
        start_cell = Cell(start_time)
        if on_done is not None:
            on_done("start_time", start_cell, None, 0.0)
        cells["start_time"] = start_cell

        for name in self._order:
            var = self.vars[name]
            t0 = time.perf_counter()
            if on_start is not None:
                on_start(name)
            cell = dependency_failure = None
            try:
                if name in prefailed:
                    raise prefailed[name]
                kwargs, missing_deps, missing_params = self._arguments(
                    var, run, values, param_values, metadata, run_number, proposal)
                if missing_deps:
                    log.warning("%sSkipping %s because of missing dependencies: %s",
                                label, name, ", ".join(missing_deps))
                    dependency_failure = _dependency_failure(missing_deps, errors)
                    raise dependency_failure
                if missing_params:
                    log.warning("%sSkipping %s because of missing parameter values: %s",
                                label, name, ", ".join(missing_params))
                    continue
                cell = var.evaluate(run, kwargs)
                _flush_stdout()  # user prints land before our log line
                elapsed = time.perf_counter() - t0
                if on_done is not None and not var.transient:
                    on_done(name, cell, None, elapsed)
            except BaseException as exc:  # sys.exit(), KeyboardInterrupt... fail only that variable
                _flush_stdout()
                exc = _readable(exc)
                elapsed = time.perf_counter() - t0
                errors[name] = exc
                cell = None
                if exc is dependency_failure:
                    pass  # the warning above says it all; DAMNIT logs no error for dependents either
                elif isinstance(exc, (Skip, DependencyError)):
                    log.error("%sSkipped %s: %s", label, name, exc)
                elif name in prefailed:
                    log.error("%sNot running %s: %s: %s", label, name, type(exc).__name__, exc)
                else:
                    log.error("%sCould not get data for %s\n%s", label, name, variable_traceback(exc).rstrip())
                if on_done is not None and not var.transient:
                    on_done(name, None, exc, elapsed)
                continue
            log.info("%sComputed %s in %.3f s", label, name, elapsed)
            if not var.transient:
                cells[name] = cell
            if cell.data is not None:
                values[name] = cell.data

        for name, var in self.vars.items():
            if var.transient:
                errors.pop(name, None)
        return Results(cells, errors, start_time)

    def _arguments(self, var, run, values, param_values, metadata, run_number, proposal):
        kwargs, missing_deps, missing_params = {}, [], []
        annotations = var.annotations()
        for arg, param in inspect.signature(var.func).parameters.items():
            ann = annotations.get(arg)
            if not is_damnit_annotation(ann):  # a type hint
                continue
            has_default = param.default is not inspect.Parameter.empty
            kind, _, field = ann.partition("#")
            if kind == "var":
                found = fnmatch.filter(values, field)
                if found == [field]:
                    kwargs[arg] = values[field]
                elif found and any(ch in field for ch in _GLOB_CHARS):
                    kwargs[arg] = {n: values[n] for n in found}
                elif not has_default:
                    missing_deps.extend(fnmatch.filter(self.vars, field))
            elif kind == "param":
                if field in param_values:
                    kwargs[arg] = param_values[field]
                elif not has_default:
                    missing_params.append(field)
            elif kind == "mymdc":
                kwargs[arg] = metadata.get(field)
            elif ann == "meta#run_number":
                kwargs[arg] = run_number
            elif ann == "meta#proposal":
                kwargs[arg] = proposal
            elif ann == "meta#proposal_path":
                kwargs[arg] = get_proposal_path(run)
            else:
                raise RuntimeError(f"Unknown path {ann!r} for variable {var.title!r}")
        return kwargs, missing_deps, missing_params


def _text_problems(var: Variable) -> list[str]:
    """Titles, descriptions, units and tags go to the database as text: they must be storable."""
    fields = [("title", var.title), ("description", var.description), ("units", var.units)]
    if isinstance(var.tags, (list, tuple)):
        fields += [("tag", tag) for tag in var.tags]
    problems = []
    for field, value in fields:
        if isinstance(value, str) and (reason := unstorable_text(value)):
            problems.append(f"its {field} {value[:80]!r} {reason}")
    return problems


def build_context(variables: dict[str, Variable], groups=(), code: str = "", path: str = "<string>"
                  ) -> ContextFile:
    """A ContextFile from explicit variables and (named) group instances, as Pipelines assemble them."""
    by_name = {}
    for group in groups:
        collect_groups([group])  # checks that it has a name (nested groups get theirs below)
        if by_name.setdefault(group.name, group) is not group:
            raise GroupError(f"Group name {group.name!r} is used by multiple group instances")
    variables = dict(variables)
    variables.update(expand_groups(by_name, variables))
    return ContextFile(variables, code, path)


def _readable(exc: BaseException) -> BaseException:
    """``exc``, or a stand-in of the same class name if its message cannot be read (a ``__str__`` that
    fails would otherwise break its dependents' error messages and the record)."""
    try:
        if type(str(exc)) is str:
            return exc
    except Exception:
        pass
    stand_in = type(type(exc).__name__, (Exception,), {})(exception_text(exc))
    return stand_in.with_traceback(exc.__traceback__)


def _flush_stdout() -> None:
    """Flush user prints; a stdout the user closed or replaced is the worker's to repair, not an error."""
    try:
        sys.stdout.flush()
    except Exception:
        pass


def _var_name(var: str | Variable) -> str:
    return var if isinstance(var, str) else var.name


def _dependency_failure(missing: list[str], errors: dict[str, BaseException]) -> Exception:
    failed = [(dep, errors[dep]) for dep in missing if dep in errors]
    if failed:
        err = DependencyError(failed)
        if all(isinstance(e, Skip) or type(e).__name__ == "SourceNameError" for _, e in failed):
            return Skip(str(err))
        return err
    listed = "".join(f"{os.linesep}- '{dep}'" for dep in missing)
    return Skip(f"Dependencies returned no data:{listed}")


class Results:
    """What one execution produced: cells of non-transient variables and errors by name."""

    def __init__(self, cells: dict[str, Cell], errors: dict[str, BaseException], start_time: float):
        self.cells = cells
        self.errors = errors
        self.start_time = start_time


# ----------------------------------------------------------------------------------- run helpers

def _is_data_collection(run) -> bool:
    mod = sys.modules.get("extra_data")
    return mod is not None and isinstance(run, mod.DataCollection)


def get_start_time(run) -> float:
    """First train's timestamp (UTC epoch s); oldest raw file's mtime if unrecorded; now otherwise."""
    if not _is_data_collection(run):
        return time.time()
    stamps = run.select_trains(np.s_[:1]).train_timestamps()
    if len(stamps) and not np.isnat(stamps[0]):
        return np.datetime64(stamps[0], "us").item().replace(tzinfo=timezone.utc).timestamp()
    names = sorted(f.filename for f in run.files)
    raw = [n for n in names if "raw" in n] or names
    return Path(raw[0]).stat().st_mtime


def get_proposal_path(run):
    if not _is_data_collection(run):
        return ""
    return Path(*Path(run.files[0].filename).parts[:-3])


def mock_run():
    """A stand-in run (``--mock``): 10 trains with 2017 timestamps and one fake file."""
    from unittest.mock import MagicMock

    run = MagicMock()
    run.files = [MagicMock(filename="/tmp/foo/bar.h5")]
    run.train_ids = np.arange(10)
    run.select_trains.side_effect = lambda *a, **k: run
    run.train_timestamps.side_effect = lambda: np.array(
        run.train_ids + 1493892000000000000, dtype="datetime64[ns]")
    return run


def error_info(exc: BaseException, context_path: str | None = None) -> dict:
    """Plain description of an exception, located in the context file where possible."""
    filename, lineno, offset = context_path, -1, 0
    if isinstance(exc, SyntaxError):
        filename = exc.filename or context_path
        lineno = exc.lineno or -1
        offset = max((exc.offset or 1) - 1, 0)
    else:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if context_path is not None and frame.filename == context_path:
                lineno = frame.lineno
                break
        if lineno == -1 and isinstance(exc, ContextFileErrors) and context_path:
            # problems start with "path:line: "
            for problem in exc.problems:
                head = problem.split(": ", 1)[0]
                if head.startswith(context_path + ":") and head.rsplit(":", 1)[1].isdigit():
                    lineno = int(head.rsplit(":", 1)[1])
                    break
    return {
        "cls": type(exc).__name__,
        "message": str(exc),
        "traceback": _user_traceback(exc, context_path),
        "filename": filename,
        "lineno": lineno,
        "offset": offset,
    }


_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


def variable_traceback(exc: BaseException) -> str:
    """A variable's traceback without the runner's own frames (they come first)."""
    tb = exc.__traceback__
    while tb is not None and os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == _OWN_DIR:
        tb = tb.tb_next
    if tb is None:  # raised by our own checks (e.g. a value that cannot be stored): the message says it
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _user_traceback(exc: BaseException, context_path: str | None) -> str:
    """The traceback from the context file's first frame on (our loading machinery is noise to the
    user); just the exception line when the problem was found by our checks, not in user code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != context_path:
        tb = tb.tb_next
    if tb is None and not isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def load_context_for_info(path: Path) -> dict:
    """``{"variables": ...}`` or ``{"error": error_info}`` for a context file."""
    path = Path(path)
    try:
        ctx = ContextFile.from_py_file(path)
    except BaseException as exc:  # whatever the user's code raises is reported
        return {"error": error_info(exc, str(path.absolute()))}
    return {"variables": ctx.vars_to_dict(inc_transient=True)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ctxrunner")
    sub = ap.add_subparsers(dest="subcmd", required=True)
    ctx_ap = sub.add_parser("ctx", help="evaluate a context file and write its variables as JSON")
    ctx_ap.add_argument("context_file", type=Path)
    ctx_ap.add_argument("out_file", type=Path)
    worker_ap = sub.add_parser("worker", help="serve run requests (see ctx_worker)")
    worker_ap.add_argument("--context", type=Path, default=Path("context.py"))
    worker_ap.add_argument("--result-fd", type=int, required=True)
    worker_ap.add_argument("--max-variable-bytes", type=int, default=None)
    args = ap.parse_args(argv)

    if args.subcmd == "ctx":
        logging.basicConfig(level=logging.INFO)
        info = load_context_for_info(args.context_file)
        args.out_file.write_text(json.dumps(info, default=str))
        return 0
    import ctx_worker

    return ctx_worker.serve(args.context, args.result_fd, max_variable_bytes=args.max_variable_bytes)


if __name__ == "__main__":
    sys.exit(main())
