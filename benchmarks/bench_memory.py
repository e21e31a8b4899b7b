"""Peak memory while a large value is computed, handed over and stored; ours and the original side by side.

One context variable returns an array of ``--size-mb`` MiB (1-D float64, 2-D float32 image, or an
xarray DataArray); the run is a mock run (``--mock``), so only the value's journey is measured.

Ours (in this process, with a RunProcessor): the parent's peak RSS above its RSS just before the run
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``): receiving the value from the worker,
summarising it (trendline, thumbnail, max_diff) and writing it to the run file and runs.sqlite; and the
context worker's peak above its RSS after a warm-up run (the array itself, 1x, plus what handing it over
costs). The original (``damnit reprocess --direct --mock`` in its own venv, built as the tests build it,
tests/infra/oracle.py): the largest peak RSS of its processes (its ctxrunner computes, summarises and
writes the value in one process), above the same figure for a 1-element value.

    python benchmarks/bench_memory.py [--size-mb 512] [--kinds 1d,2d,dataarray] [--no-original]

Prints one line per kind and a final ``RESULT`` line with the worst ratio (peak extra memory / value size).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.processing.requests import RunRequest  # noqa: E402
from backend.processing.run_processor import RunProcessor  # noqa: E402
from backend.storage.damnit_folder import initialize_proposal  # noqa: E402

PROPOSAL = 2468
MiB = 1024**2

CONTEXT = """\
import os
import numpy as np
from damnit_ctx import Variable

N = int(os.environ.get("BENCH_BYTES", "8"))
KIND = os.environ.get("BENCH_KIND", "1d")

@Variable(title="small")
def small(run):
    return np.arange(10.0)

@Variable(title="big")
def big(run):
    if KIND == "1d":
        return np.random.default_rng(1).random(N // 8)
    side = int((N // 4) ** 0.5)
    image = np.random.default_rng(1).random((side, side), dtype=np.float32)
    if KIND == "2d":
        return image
    import xarray as xr
    return xr.DataArray(image, dims=["y", "x"], coords={"y": np.arange(side), "x": np.arange(side)})
"""


def _status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak(pid: int | str = "self") -> int:
    """Reset the process's peak RSS to its current RSS (Linux); returns that RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return _status(pid)["VmRSS"]


def measure_ours(kind: str, nbytes: int, workdir: Path) -> tuple[float, float, float]:
    """(parent peak extra, worker peak extra, seconds) for one run storing the big value."""
    db_dir = workdir / f"ours-{kind}"
    db = initialize_proposal(db_dir, PROPOSAL)
    db.close()
    (db_dir / "context.py").write_text(CONTEXT)
    os.environ.update(BENCH_BYTES=str(nbytes), BENCH_KIND=kind)
    processor = RunProcessor(db_dir, n_workers=1)
    try:
        list(processor.process([RunRequest(PROPOSAL, 1, mock=True, variables=("small",))]))
        worker_pid = processor._pool._workers[0].proc.pid
        worker_base = _reset_peak(worker_pid)
        parent_base = _reset_peak()
        t0 = time.perf_counter()
        (outcome,) = processor.process([RunRequest(PROPOSAL, 1, mock=True, variables=("big",))])
        elapsed = time.perf_counter() - t0
        parent_peak = _status()["VmHWM"]
        worker_peak = _status(worker_pid)["VmHWM"]
    finally:
        processor.close()
    if outcome.run_error or any(r.is_error for r in outcome.results):
        sys.exit(f"ours failed to store the {kind} value: {outcome.run_error or outcome.results}")
    del outcome
    return parent_peak - parent_base, worker_peak - worker_base, elapsed


_CHILD_PEAK = """\
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def measure_original(kind: str, nbytes: int, workdir: Path) -> tuple[float, float]:
    """(largest process's peak above the same with a tiny value, seconds) for the original."""
    from tests.infra.oracle import ensure_oracle

    oracle = ensure_oracle()
    peaks = []
    for size in (8, nbytes):
        db_dir = workdir / f"original-{kind}-{size}"
        ctx = workdir / "context.py"
        ctx.write_text(CONTEXT)
        oracle.damnit("init", db_dir, "--proposal", str(PROPOSAL), "--context", ctx)
        oracle.damnit("db-config", "context_python", oracle.python, cwd=db_dir)
        env = {**os.environ, "BENCH_BYTES": str(size), "BENCH_KIND": kind, "AMORE_BROKER": "none"}
        env.pop("PYTHONPATH", None)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _CHILD_PEAK, str(oracle.damnit_exe), "reprocess",
                              "--direct", "--mock", "--match", "big", "1"], cwd=db_dir, env=env,
                             capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(f"the original failed:\n{out.stderr[-3000:]}")
        peaks.append(int(out.stdout.strip().splitlines()[-1]))
    return peaks[1] - peaks[0], elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=512, help="size of the value in MiB (default 512)")
    ap.add_argument("--kinds", default="1d,2d,dataarray", help="comma-separated: 1d, 2d, dataarray")
    ap.add_argument("--no-original", action="store_true", help="measure ours only")
    args = ap.parse_args(argv)
    os.environ.setdefault("AMORE_BROKER", "none")
    os.environ.setdefault("MPLBACKEND", "Agg")
    nbytes = args.size_mb * MiB
    worst = 0.0
    print(f"value size: {args.size_mb} MiB; figures are peak RSS above the baseline, and that / value size")
    with tempfile.TemporaryDirectory(prefix="damnit-bench-mem-") as tmp:
        for kind in args.kinds.split(","):
            parent, worker, secs = measure_ours(kind, nbytes, Path(tmp))
            line = (f"{kind:>9}: ours parent {parent / MiB:7.0f} MiB ({parent / nbytes:.2f}x), worker "
                    f"{worker / MiB:7.0f} MiB ({worker / nbytes:.2f}x), {secs:.1f} s")
            worst = max(worst, parent / nbytes, worker / nbytes)
            if not args.no_original:
                orig, osecs = measure_original(kind, nbytes, Path(tmp))
                line += f" | original {orig / MiB:7.0f} MiB ({orig / nbytes:.2f}x), {osecs:.1f} s"
            print(line, flush=True)
    print(f"RESULT worst ratio (ours, parent or worker) {worst:.2f}x of the value size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
