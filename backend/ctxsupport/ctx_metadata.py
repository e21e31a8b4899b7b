"""Run metadata from MyMdC (``mymdc#sample_name``, ``mymdc#run_type``, ``mymdc#techniques``).

The client is pluggable so that offline sites and tests can provide their own:
``DAMNIT_MYMDC_CLIENT=module:callable`` names a callable taking the proposal number and returning an
object with ``sample_name(run)``, ``run_type(run)`` and ``techniques(run)``. Without it,
``extra_proposal`` is used when installed. Failures become errors of the variables asking for the data.
"""

from __future__ import annotations

import importlib
import os

CLIENT_ENV = "DAMNIT_MYMDC_CLIENT"


class MyMdCUnavailable(RuntimeError):
    """No way to reach MyMdC from this environment."""


class _ExtraProposalClient:
    def __init__(self, proposal: int):
        import extra_proposal

        self._proposal = extra_proposal.Proposal(proposal)

    def _run(self, run: int):
        return self._proposal[run]

    def sample_name(self, run: int):
        return self._run(run).sample_name()

    def run_type(self, run: int):
        return self._run(run).run_type()

    def techniques(self, run: int):
        return self._run(run).techniques()


def make_client(proposal: int):
    spec = os.environ.get(CLIENT_ENV)
    if spec:
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise MyMdCUnavailable(f"{CLIENT_ENV}={spec!r} is not of the form 'module:callable'")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(proposal)
    try:
        return _ExtraProposalClient(proposal)
    except ImportError:
        raise MyMdCUnavailable(
            "mymdc# arguments need MyMdC access: install extra_proposal in the context Python "
            f"environment or set {CLIENT_ENV}=module:callable") from None


class MetadataSource:
    """Per-run access to MyMdC fields; the client is created on first use and reused."""

    def __init__(self, proposal: int, run: int):
        self.proposal = proposal
        self.run = run
        self._client = None

    def get(self, field: str):
        if self._client is None:
            self._client = make_client(self.proposal)
        return getattr(self._client, field)(self.run)
