"""Shared fixtures: mock run data and the real components (Kafka, Slurm, Chromium, the original DAMNIT).

Real components are started by the tests themselves on loopback; if one cannot start, the test that
asked for it fails with the component's log, it is never skipped.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from backend import mockruns


@pytest.fixture
def mock_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root, with ``EXTRA_DATA_DATA_ROOT`` pointing at it (also for subprocesses)."""
    root = tmp_path / "exp"
    root.mkdir()
    monkeypatch.setenv("EXTRA_DATA_DATA_ROOT", str(root))
    return root


@pytest.fixture
def make_mock_runs(mock_data_root: Path) -> Callable[..., Path]:
    """Factory: ``make_mock_runs(proposal, runs, with_proc=False, **make_run_kw) -> proposal dir``."""

    def make(proposal: int, runs: Iterable[int] | int, *, with_proc: bool = False, **kw) -> Path:
        if isinstance(runs, int):
            runs = [runs]
        return mockruns.make_proposal(mock_data_root, proposal, runs, with_proc=with_proc, **kw)

    return make
