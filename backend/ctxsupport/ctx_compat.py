"""Lets context files written as ``from damnit.context import Variable, Cell, ...`` run unchanged.

The original DAMNIT re-exports the context API from ``damnit.context``. We answer that import with
our own API (so the objects are the ones our runner understands), whether or not the original
``damnit`` package is installed in the context environment; ``import damnit`` itself still gives the
real package when there is one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

_EXPORTS = ("Cell", "ContextFileErrors", "Group", "GroupError", "Pipeline", "RunData", "Skip", "Variable")


class _ContextModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Provides ``damnit.context`` (first on sys.meta_path)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "damnit.context":
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        import ctxrunner
        import damnit_ctx

        for name in _EXPORTS:
            setattr(module, name, getattr(damnit_ctx, name))
        module.ContextFile = ctxrunner.ContextFile
        module.Results = ctxrunner.Results
        module.get_proposal_path = ctxrunner.get_proposal_path
        module.__all__ = [*_EXPORTS, "ContextFile", "Results", "get_proposal_path"]


class _FallbackPackageFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Provides an empty ``damnit`` package when the original is not installed (last on sys.meta_path)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "damnit":
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name, "Stand-in: the original DAMNIT is not installed here.")
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(f, _ContextModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _ContextModuleFinder())
        sys.meta_path.append(_FallbackPackageFinder())
