"""Turns ``@Group`` instances found in a context file into ordinary, uniquely named Variables."""

from __future__ import annotations

import copy
import inspect
import re
from collections import deque

from damnit_ctx import (
    GroupBoundVariable,
    GroupError,
    GroupPathError,
    Variable,
    is_group_instance,
    normalize_tags,
)

_GLOB_CHARS = "*?["


def _child_groups(group):
    return [(attr, value) for attr, value in vars(group).items() if is_group_instance(value)]


def assign_group_names(namespace: dict) -> None:
    """Name unnamed groups after the global (or ``parent.attr`` path) that holds them.

    The shortest path wins; one instance reachable by two paths of the same length is ambiguous.
    """
    best: dict[int, tuple[object, int, set[str]]] = {}  # id -> (group, depth, names at that depth)
    queue = deque()

    def offer(group, path, depth):
        known = best.get(id(group))
        if known is None or depth < known[1]:
            best[id(group)] = (group, depth, {path})
            queue.append((group, path, depth))
        elif depth == known[1]:
            known[2].add(path)

    for global_name, value in namespace.items():
        if not global_name.startswith("__") and is_group_instance(value):
            offer(value, value.name or global_name, 0)

    while queue:
        group, path, depth = queue.popleft()
        if best[id(group)][1] != depth:
            continue
        prefix = group.name or path
        for attr, child in _child_groups(group):
            offer(child, f"{prefix}.{attr}", depth + 1)

    for group, _, names in best.values():
        if group.name is None:
            if len(names) > 1:
                raise GroupError(f"Group instance of {type(group).__name__!r} is reachable under "
                                 f"multiple names {sorted(names)}; give it an explicit name=...")
            group.name = names.pop()
        if group.title is None:
            group.title = group.name.replace(".", group.sep)


def collect_groups(objects) -> list:
    """Every group instance among ``objects`` and nested inside them, each once.

    Depth first from the last: the order DAMNIT gives their variables (in the database too).
    """
    found, seen = [], set()
    pending = [obj for obj in objects if is_group_instance(obj)]
    while pending:
        group = pending.pop()
        if id(group) in seen:
            continue
        seen.add(id(group))
        if not isinstance(group.name, str) or not group.name:
            if group.name is None:
                raise GroupError(f"Group instance of {type(group).__name__!r} has no name; pass name=... "
                                 "or assign it to a variable in the context file")
            raise GroupError(f"Group instance of {type(group).__name__!r} has an invalid name "
                             f"{group.name!r}")
        found.append(group)
        pending.extend(child for _, child in _child_groups(group))
    return found


def _member_definitions(group) -> dict[str, Variable]:
    """Variables defined on the group's class and its bases (subclasses override)."""
    members = {}
    for klass in reversed(type(group).__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Variable):
                members[attr] = value
    return members


def _missing_placeholder(group, path: str) -> Variable:
    """A transient variable standing in for an optional component left as None: it returns None,
    so dependents are skipped (or get their default value)."""

    def missing_component(run):
        return None

    var = Variable(transient=True)(missing_component)
    safe_path = re.sub(r"[!?*\[\]]", "_", path)
    var.name = f"{group.name}.__missing__.{safe_path}"
    var.title = var.name
    return var


def _resolve_self(path: str, group, full_path: str) -> tuple[str, Variable | None]:
    """``self#a.b`` -> (``var#<name>``, placeholder variable or None)."""
    head, _, rest = path.partition(".")
    if rest:
        try:
            target = getattr(group, head)
        except AttributeError:
            raise GroupPathError(f"'self#{full_path}' in group {group.name!r}: attribute {head!r} does "
                                 "not exist") from None
        if target is None:
            placeholder = _missing_placeholder(group, full_path)
            return f"var#{placeholder.name}", placeholder
        if not is_group_instance(target):
            raise GroupPathError(f"'self#{full_path}' in group {group.name!r}: attribute {head!r} is of "
                                 f"type {type(target).__name__!r}, not a group")
        return _resolve_self(rest, target, full_path)

    try:
        target = getattr(group, head)
    except AttributeError:
        if any(ch in head for ch in _GLOB_CHARS):
            return f"var#{group.name}.{head}", None
        raise GroupError(f"Attribute {head!r} on group {group.name!r} does not exist, but "
                         f"'self#{full_path}' refers to it") from None
    if target is None:
        placeholder = _missing_placeholder(group, full_path)
        return f"var#{placeholder.name}", placeholder
    if not isinstance(target, (Variable, GroupBoundVariable)):
        raise GroupError(f"Attribute {head!r} on group {group.name!r} is of type "
                         f"{type(target).__name__!r}, but 'self#{full_path}' needs a Variable")
    return f"var#{target.name}", None


def _expand(group) -> dict[str, Variable]:
    out = {}
    for definition in _member_definitions(group).values():
        bound = definition.func.__get__(group, type(group))
        var = copy.copy(definition)
        var.func = bound
        var.name = f"{group.name}.{definition.name}"
        var.title = f"{group.title}{group.sep}{definition.title}"
        var.tags = tuple(sorted(set(group.tags) | set(normalize_tags(definition.tags))))
        raw_annotations = definition.annotations()
        annotations = {}
        for arg in inspect.signature(bound).parameters:
            ann = raw_annotations.get(arg)
            if isinstance(ann, str) and ann.startswith("self#"):
                ann, placeholder = _resolve_self(ann[len("self#"):], group, ann[len("self#"):])
                if placeholder is not None:
                    out[placeholder.name] = placeholder
            if ann is not None:
                annotations[arg] = ann
        var._annotation_overrides = annotations
        out[var.name] = var
    return out


def expand_groups(namespace: dict, existing: dict[str, Variable]) -> dict[str, Variable]:
    """Variables for all groups in a context namespace, named ``<group>.<member>``."""
    assign_group_names(namespace)
    groups = collect_groups(namespace.values())
    by_name = {}
    for group in groups:
        other = by_name.setdefault(group.name, group)
        if other is not group:
            raise GroupError(f"Group name {group.name!r} is used by multiple group instances")
    expanded: dict[str, Variable] = {}
    for group in groups:
        for name, var in _expand(group).items():
            if name in existing or name in expanded:
                if "__missing__" in name.split(".") and name in expanded:
                    continue  # the same optional component referenced twice
                raise GroupError(f"Duplicate variable name {name!r} from group {group.name!r}")
            expanded[name] = var
    return expanded
