"""Reprocessing benchmark: `damnit reprocess all --direct`, ours vs the original DAMNIT, side by side.

Both get the same mock runs, the same context file (contexts/demo_context.py) and an offline broker.
The original is timed for `reprocess all --direct` plus `combiner now` (its results only reach the
database through the combiner); ours for `reprocess all --direct` alone (it writes the database
itself). Each time is wall-clock of the whole command, interpreter start-up included. The script then
checks that both databases hold values for every run and that the scalar values agree.

    python benchmarks/bench_reprocess.py [--runs 20] [--ntrains 50] [--original DAMNIT_COMMAND]   (default: the test oracle's venv)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.base import mockruns  # noqa: E402
from tests.infra.oracle import ensure_oracle  # noqa: E402

PROPOSAL = 2468
CONTEXT = REPO / "contexts" / "demo_context.py"


def run(cmd: list[str], cwd: Path, env: dict, what: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{what} failed (exit {res.returncode}):\n$ {' '.join(cmd)}\n{res.stdout[-3000:]}\n"
                 f"{res.stderr[-3000:]}")
    return elapsed


def register_runs(db_dir: Path, runs: list[int]) -> None:
    """Record the runs as the listener would have, so `reprocess all` finds them."""
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    with conn:
        conn.executemany("INSERT OR IGNORE INTO run_info (proposal, run, added_at) VALUES (?, ?, ?)",
                         [(PROPOSAL, r, time.time()) for r in runs])
    conn.close()


def db_values(db_dir: Path) -> dict[int, dict[str, object]]:
    """{run: {name: value}} for the rows with a value (errors and skips excluded)."""
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    rows = conn.execute("SELECT run, name, value FROM run_variables WHERE value IS NOT NULL").fetchall()
    starts = conn.execute("SELECT run, start_time FROM run_info").fetchall()
    conn.close()
    out: dict[int, dict[str, object]] = {}
    for run_no, name, value in rows:
        out.setdefault(run_no, {})[name] = value
    for run_no, start in starts:
        if start is not None:
            out.setdefault(run_no, {})["start_time"] = start
    return out


def compare(ours: dict, theirs: dict, runs: list[int]) -> list[str]:
    problems = []
    for r in runs:
        a, b = ours.get(r, {}), theirs.get(r, {})
        if not a:
            problems.append(f"ours: no values for run {r}")
        if not b:
            problems.append(f"original: no values for run {r}")
        if set(a) != set(b):
            problems.append(f"run {r}: names differ: only ours {sorted(set(a) - set(b))}, "
                            f"only original {sorted(set(b) - set(a))}")
        for name in set(a) & set(b):
            va, vb = a[name], b[name]
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                if not math.isclose(va, vb, rel_tol=1e-5, abs_tol=1e-9):
                    problems.append(f"run {r} {name}: ours {va!r} != original {vb!r}")
            elif isinstance(va, str) and isinstance(vb, str) and va != vb:
                problems.append(f"run {r} {name}: ours {va!r} != original {vb!r}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ntrains", type=int, default=50)
    ap.add_argument("--original", default=None,
                    help="the original's `damnit` command (default: the tests' oracle venv, tests/infra/oracle.py)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    original = Path(args.original) if args.original else ensure_oracle().damnit_exe
    if not original.is_file():
        sys.exit(f"original DAMNIT not found at {original}")
    original_python = str(original.parent / "python")
    runs = list(range(1, args.runs + 1))

    tmp = Path(tempfile.mkdtemp(prefix="bench-reprocess-"))
    try:
        data_root = tmp / "exp"
        t0 = time.perf_counter()
        mockruns.make_proposal(data_root, PROPOSAL, runs, ntrains=args.ntrains, with_proc=True)
        print(f"Wrote {len(runs)} mock runs ({args.ntrains} trains, raw + proc) in "
              f"{time.perf_counter() - t0:.1f} s under {data_root}")

        env = dict(os.environ, EXTRA_DATA_DATA_ROOT=str(data_root), AMORE_BROKER="none", MPLBACKEND="Agg")
        env.pop("XFEL_DATA_ROOT", None)
        ours_cmd = [sys.executable, "-m", "backend.cli"]
        ours_env = dict(env, PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))

        ours_dir, orig_dir = tmp / "ours", tmp / "original"
        run([*ours_cmd, "init", str(ours_dir), "--proposal", str(PROPOSAL), "--context", str(CONTEXT)],
            tmp, ours_env, "ours: init")
        run([str(original), "init", str(orig_dir), "--proposal", str(PROPOSAL), "--context", str(CONTEXT)],
            tmp, env, "original: init")
        run([str(original), "db-config", "context_python", original_python], orig_dir, env,
            "original: db-config")
        register_runs(ours_dir, runs)
        register_runs(orig_dir, runs)

        t_ours = run([*ours_cmd, "reprocess", "all", "--direct"], ours_dir, ours_env, "ours: reprocess")
        print(f"ours:     reprocess all --direct             {t_ours:7.2f} s")

        t_orig_rep = run([str(original), "reprocess", "all", "--direct"], orig_dir, env, "original: reprocess")
        t_orig_comb = run([str(original), "combiner", "now", "."], orig_dir, env, "original: combiner now")
        t_orig = t_orig_rep + t_orig_comb
        print(f"original: reprocess all --direct + combiner  {t_orig:7.2f} s "
              f"({t_orig_rep:.2f} + {t_orig_comb:.2f})")

        ours_vals, orig_vals = db_values(ours_dir), db_values(orig_dir)
        problems = compare(ours_vals, orig_vals, runs)
        n_vals = sum(len(v) for v in ours_vals.values())
        print(f"values:   ours {n_vals}, original {sum(len(v) for v in orig_vals.values())} "
              f"over {len(runs)} runs")
        for p in problems[:20]:
            print("  MISMATCH", p)
        print(f"RESULT runs={len(runs)} cpus={os.cpu_count()} ours={t_ours:.2f}s original={t_orig:.2f}s "
              f"speedup={t_orig / t_ours:.1f}x per_run_ours={t_ours / len(runs):.3f}s "
              f"per_run_original={t_orig / len(runs):.3f}s values_agree={not problems}")
        return 1 if problems else 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
