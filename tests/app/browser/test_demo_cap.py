"""``panel_serve.sh --demo`` keeps its folder bounded: only the newest ``--demo-keep-runs`` runs keep their
files (raw and proc data, per-run HDF5 values, processing logs), while the table keeps every run. Without a
cap the demo grew by about 2.5 MB a run, 430 MB in 25 minutes."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import h5py
import pytest

from app.server.demo import DEMO_PROPOSAL
from app.server.launcher import DashboardServer

KEEP = 3
RUNS = 14


def _du(paths) -> int:
    total = 0
    for root in paths:
        for f in [Path(root), *Path(root).rglob("*")]:
            try:
                if f.is_file():
                    total += f.stat().st_size
            except FileNotFoundError:  # deleted while we looked
                pass
    return total


def _raw_runs(base: Path) -> list[int]:
    return sorted(int(p.name[1:]) for p in base.glob(f"exp/*/*/p{DEMO_PROPOSAL:06d}/raw/r*") if p.name[1:].isdigit())


def _run_files(base: Path, run: int) -> list[Path]:
    return [*base.glob(f"exp/*/*/p{DEMO_PROPOSAL:06d}/*/r{run:04d}"),
            *base.glob(f"amore/extracted_data/p{DEMO_PROPOSAL}_r{run}.h5"),
            *base.glob(f"amore/extracted_data/.p{DEMO_PROPOSAL}_r{run}.h5.*"),
            *base.glob(f"amore/process_logs/r{run}-p{DEMO_PROPOSAL}.out")]


def test_demo_keeps_only_the_newest_runs_files(tmp_path):
    base = tmp_path / "demo"
    srv = DashboardServer([], "--demo", "--demo-dir", str(base), "--demo-interval", "1",
                          "--demo-keep-runs", str(KEEP), log_path=tmp_path / "demo.log", timeout=120)
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    data = [base / "exp", base / "amore" / "extracted_data", base / "amore" / "process_logs"]
    sizes, counts = [], []
    try:
        deadline = time.monotonic() + 180
        while max(_raw_runs(base), default=0) < RUNS and time.monotonic() < deadline:
            sizes.append(_du(data))
            counts.append(len(_raw_runs(base)))
            time.sleep(0.25)
        assert max(_raw_runs(base), default=0) >= RUNS, f"the demo took too few runs:\n{srv.log()}"
        # Stop taking runs, and let processing finish so that the kept runs' value files can be measured.
        srv.stop()
        time.sleep(1)
        newest = max(_raw_runs(base))
    finally:
        srv.stop()
    log = (tmp_path / "demo.log").read_text()

    assert f"files of the newest {KEEP} runs are kept in {base}" in log, log[-3000:]
    # Taking a run and pruning follow each other: at most one run more than the cap, ever.
    assert max(counts) <= KEEP + 1, counts
    runs = _raw_runs(base)
    assert len(runs) == KEEP and runs == list(range(runs[-1] - KEEP + 1, runs[-1] + 1)), runs
    for old in range(1, runs[0]):
        assert not _run_files(base, old), f"run {old} still has files: {_run_files(base, old)}"
    # The folder stays under the cap: KEEP runs' files, plus the run being taken and a value file being
    # written (HDF5 files are written to a temporary file, then renamed).
    per_run = max(_du(_run_files(base, r)) for r in runs)
    h5 = max(f.stat().st_size for f in base.glob("amore/extracted_data/*.h5"))
    assert per_run > 1_000_000 and h5 > 100_000, f"a run's files are only {per_run} bytes: nothing was measured"
    cap = (KEEP + 1) * per_run + h5
    assert max(sizes) <= cap, (max(sizes), cap)
    assert len(sizes) > 20, sizes
    # The table keeps its history: older runs are still in runs.sqlite.
    with sqlite3.connect(base / "amore" / "runs.sqlite") as conn:
        in_db = {r for (r,) in conn.execute("SELECT DISTINCT run FROM run_variables")}
    assert {r for r in in_db if r < runs[0]}, sorted(in_db)
    print(f"demo cap: {KEEP} runs kept of {newest}, {per_run / 1e6:.1f} MB a run, "
          f"folder at most {max(sizes) / 1e6:.1f} MB")


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def test_demo_tries_a_run_again_when_its_file_is_held(tmp_path):
    """A run file another process holds (HDF5's lock) makes that run fail once: the demo says so and writes
    it at the next interval, instead of stopping for good."""
    import subprocess
    import sys

    from app.server.demo import Demo
    from backend.base.mockruns import proposal_dir

    demo = Demo(tmp_path / "demo", interval=0.5, keep_runs=0, max_runs=5)
    demo.prepare()
    # Run 1's proc file (a raw folder would change which run the demo takes next).
    held = proposal_dir(demo.data_root, DEMO_PROPOSAL) / "proc" / "r0001" / "CORR-R0001-DA01-S00000.h5"
    held.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'w'); "
                               "print('holding', flush=True); time.sleep(3)", str(held)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "holding"
    said: list[str] = []  # what the demo logs (its own handler: other tests may reconfigure logging)
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("damnit.demo")
    level, disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.disabled = False
    try:
        demo.start()
        assert _wait(lambda: _raw_runs(demo.base) == [1, 2, 3, 4, 5], 120), _raw_runs(demo.base)
    finally:
        demo.stop()
        holder.wait(10)
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
    assert [m for m in said if "could not write run 1" in m], said
    assert not [m for m in said if "stopped taking runs" in m], said
    with h5py.File(held) as f:  # written in full the second time
        assert "INSTRUMENT" in f and "METADATA" in f and f["METADATA/dataFormatVersion"][0]
