"""Context-engine benchmark: executing a context over many small runs, ours vs the original DAMNIT.

Ours: one ``WorkerPool`` (N long-lived workers, context loaded once each), results summarised in the
parent (thumbnails, trendlines) — everything up to, not including, writing HDF5/SQLite.
Original: what its extraction job does for the context per run, ``python -m ctxrunner exec PROP RUN
all`` in its own ctxsupport (a fresh interpreter that loads the context, executes it and writes a
fragment file with summaries), run N at a time in parallel for fairness.

    python benchmarks/bench_context_runner.py [--runs 20] [--workers 2] [--ntrains 50]
        [--original-python PYTHON]   (default: the test oracle's venv, built in .test-venvs/ on first use)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.base import mockruns  # noqa: E402
from backend.processing.requests import RunRequest  # noqa: E402
from backend.processing.workers import WorkerPool  # noqa: E402
from tests.infra.oracle import ensure_oracle  # noqa: E402

PROPOSAL = 2468
CONTEXT = REPO / "contexts" / "demo_context.py"


def time_ours(db_dir: Path, runs: list[int], workers: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    n_values = 0
    first = None
    with WorkerPool(db_dir, n_workers=workers) as pool:
        for outcome in pool.process([RunRequest(PROPOSAL, r) for r in runs]):
            if outcome.run_error:
                sys.exit(f"run {outcome.request.run} failed: {outcome.run_error}")
            first = first or time.perf_counter() - t0
            n_values += sum(not r.is_error for r in outcome.results)
        elapsed = time.perf_counter() - t0
    return elapsed, first, n_values


def time_original(python: str, db_dir: Path, runs: list[int], workers: int) -> float:
    ctxsupport = subprocess.run(
        [python, "-c", "import damnit, os; print(os.path.join(os.path.dirname(damnit.__file__), "
                       "'ctxsupport'))"], capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=ctxsupport, MPLBACKEND="Agg", AMORE_BROKER="none")

    def one(run: int) -> None:
        res = subprocess.run([python, "-m", "ctxrunner", "exec", str(PROPOSAL), str(run), "all"],
                             cwd=db_dir, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"original ctxrunner failed for run {run}:\n{res.stderr[-3000:]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, runs))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ntrains", type=int, default=50)
    ap.add_argument("--original-python", default=None,
                    help="Python of the original DAMNIT (default: the tests' oracle venv, tests/infra/oracle.py)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-ctx-"))
    try:
        root = tmp / "exp"
        runs = list(range(1, args.runs + 1))
        mockruns.make_proposal(root, PROPOSAL, runs, ntrains=args.ntrains, with_proc=True)
        os.environ["EXTRA_DATA_DATA_ROOT"] = str(root)
        ours_dir, orig_dir = tmp / "ours", tmp / "orig"
        for d in (ours_dir, orig_dir):
            d.mkdir()
            shutil.copy(CONTEXT, d / "context.py")

        ours, first, n_values = time_ours(ours_dir, runs, args.workers)
        print(f"ours: {ours:.2f} s for {len(runs)} runs ({ours / len(runs):.3f} s/run, "
              f"first run after {first:.2f} s, {n_values} values) with {args.workers} workers")
        if args.original_python is None:
            args.original_python = str(ensure_oracle().python)
        if Path(args.original_python).exists():
            orig = time_original(args.original_python, orig_dir, runs, args.workers)
            print(f"original: {orig:.2f} s ({orig / len(runs):.3f} s/run), {args.workers} in parallel")
            print(f"RESULT runs={len(runs)} ours_s_per_run={ours / len(runs):.3f} "
                  f"original_s_per_run={orig / len(runs):.3f} speedup={orig / ours:.1f}x")
        else:
            print(f"RESULT runs={len(runs)} ours_s_per_run={ours / len(runs):.3f} (original not found)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
