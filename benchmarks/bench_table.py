"""Time `Damnit.table()` (ours) against the original `damnit.api.Damnit.table()` on the same database.

    python benchmarks/bench_table.py [--runs 2000] [--variables 200] [--repeat 3] [--keep DIR]
                                     [--original-python PYTHON]   (default: the test oracle's venv)

Builds runs.sqlite with our DamnitDB (floats, ints, strings, trendlines, thumbnails, numpy and complex
summaries, errors, ~5% missing cells, comments, titles), then times table() in each implementation
(interleaved rounds, best of --repeat, wall and CPU time, import/open/warm-up excluded;
the original runs in its own interpreter) and
checks both give the same cells. Prints `RESULT table ours=..s original=..s ratio=..x`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.storage.api import Damnit  # noqa: E402
from backend.storage.damnit_folder import initialize_proposal  # noqa: E402
from backend.storage.records import ReducedData  # noqa: E402
from tests.infra.oracle import ensure_oracle  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
PROPOSAL = 2345

ORIGINAL_SCRIPT = r"""
import json, sys, time
from damnit import Damnit
db = Damnit(sys.argv[1])
db.table()  # warm-up: page cache, lazy imports
w0, c0 = time.perf_counter(), time.process_time()
df = db.table()
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
sample = {c: [None if v is None else repr(v) for v in df[c].head(50)] for c in df.columns}
print(json.dumps({"wall": wall, "cpu": cpu, "shape": df.shape, "sample": sample}))
"""


def variable_kinds(n_vars: int) -> list[tuple[str, str]]:
    kinds = ["float"] * 150 + ["string"] * 20 + ["int"] * 10 + ["trendline"] * 10 + ["thumbnail"] * 5 \
        + ["complex"] * 3 + ["numpy"] * 2
    kinds = (kinds * (n_vars // len(kinds) + 1))[:n_vars]
    return [(f"var_{i:03d}_{k}", k) for i, k in enumerate(kinds)]


def make_value(kind: str, rng: np.random.Generator) -> ReducedData:
    if kind == "float":
        return ReducedData(float(rng.normal()), max_diff=float(rng.random()))
    if kind == "int":
        return ReducedData(int(rng.integers(0, 1000)))
    if kind == "string":
        return ReducedData(f"state-{rng.integers(0, 5)}")
    if kind == "trendline":
        return ReducedData(np.vstack([np.arange(150.0), rng.normal(size=150)]), summary_type="trendline")
    if kind == "thumbnail":
        return ReducedData(PNG)
    if kind == "complex":
        return ReducedData(complex(rng.normal(), rng.normal()))
    return ReducedData(rng.normal(size=(3, 3)))


def build_db(db_dir: Path, n_runs: int, n_vars: int) -> float:
    rng = np.random.default_rng(42)
    db = initialize_proposal(db_dir, PROPOSAL)
    kinds = variable_kinds(n_vars)
    db.update_computed_variables({name: {"title": f"Title {name}", "description": kind, "tags": [kind]}
                                  for name, kind in kinds})
    t0 = time.perf_counter()
    for run in range(1, n_runs + 1):
        values = {}
        for name, kind in kinds:
            p = rng.random()
            if p < 0.05:
                continue  # never computed for this run
            if p < 0.06:
                values[name] = ReducedData(None, attributes={"error": "boom", "error_cls": "ValueError"})
            else:
                values[name] = make_value(kind, rng)
        db.set_variables(PROPOSAL, run, values, provenance="context.py", start_time=1.7e9 + 60 * run)
        if run % 7 == 0:
            db.change_run_comment(PROPOSAL, run, f"comment {run}")
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--variables", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="build the database here (reused if it exists)")
    ap.add_argument("--original-python", default=None,
                    help="Python of the original DAMNIT (default: the tests' oracle venv, tests/infra/oracle.py)")
    args = ap.parse_args()
    if args.original_python is None:
        args.original_python = str(ensure_oracle().python)

    tmp = None
    if args.keep:
        db_dir = args.keep
    else:
        tmp = tempfile.TemporaryDirectory()
        db_dir = Path(tmp.name) / "amore"
    if not (db_dir / "runs.sqlite").exists():
        write_s = build_db(db_dir, args.runs, args.variables)
        print(f"built {args.runs} runs x {args.variables} variables in {write_s:.1f} s "
              f"({write_s / args.runs * 1000:.1f} ms per run via set_variables)")

    # Interleave the two implementations round by round so that load from other processes hits both alike;
    # report the best wall-clock and CPU times of each.
    ours = Damnit(db_dir)
    ours.table()  # warm-up
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    ours_wall, ours_cpu, orig_wall, orig_cpu = [], [], [], []
    for _ in range(args.repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        df = ours.table()
        ours_wall.append(time.perf_counter() - w0)
        ours_cpu.append(time.process_time() - c0)
        proc = subprocess.run([args.original_python, "-c", ORIGINAL_SCRIPT, str(db_dir)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"original damnit failed:\n{proc.stderr[-3000:]}")
        orig = json.loads(proc.stdout.strip().splitlines()[-1])
        orig_wall.append(orig["wall"])
        orig_cpu.append(orig["cpu"])
    t0 = time.perf_counter()
    ours.table(with_titles=True)
    titles_s = time.perf_counter() - t0

    # Same cells? Compare the first 50 rows of every column both have (repr, NaN/NA/None all "missing").
    def norm(v):
        return None if v in (None, "nan", "<NA>", "NaT") else v
    mismatches = 0
    for col, values in orig["sample"].items():
        if col not in df:
            mismatches += 1
            continue
        ours_vals = [None if v is None else repr(v) for v in df[col].head(50)]
        if col == "start_time":
            ours_vals = [repr(v) for v in df[col].head(50)]
        mismatches += sum(norm(a) != norm(b) for a, b in zip(values, ours_vals))
    print(f"ours:     table() best of {args.repeat}: wall {min(ours_wall):.3f} s, CPU {min(ours_cpu):.3f} s "
          f"(with_titles {titles_s:.3f} s), shape {df.shape}")
    print(f"original: table() best of {args.repeat}: wall {min(orig_wall):.3f} s, CPU {min(orig_cpu):.3f} s, "
          f"shape {tuple(orig['shape'])}")
    print(f"cells compared (first 50 rows): mismatches = {mismatches}")
    print(f"RESULT table ours={min(ours_wall):.3f}s original={min(orig_wall):.3f}s "
          f"ratio={min(orig_wall) / min(ours_wall):.1f}x (CPU ratio {min(orig_cpu) / min(ours_cpu):.1f}x)")


if __name__ == "__main__":
    main()
