"""How much the run inspector sends to the browser for large values, and how long it takes to build.

For each value (a long 1-D trace, a large 2-D detector image, a large RGB image) it builds the
inspector's plot (``app.display.plots.plot_value``: min/max envelope to 10 000 points, block means to
1000 px per side) and, for comparison, the same HoloViews element with the full data, serialises both
Bokeh documents as the server would, and prints build time and payload size.

    python benchmarks/bench_pages.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def payload_bytes(viewable) -> int:
    """Bytes of the Bokeh document JSON (arrays included) that a browser would receive."""
    from bokeh.document import Document

    doc = Document()
    doc.add_root(viewable.get_root(doc))
    data = doc.to_json(deferred=False)
    return len(json.dumps(data, default=lambda o: o.decode() if isinstance(o, bytes) else str(o)))


def naive(value):
    """The same kind of plot without any reduction (what a direct HoloViews plot would ship)."""
    import holoviews as hv
    import panel as pn

    if value.ndim == 1:
        return pn.pane.HoloViews(hv.Curve((np.arange(len(value)), value)))
    if value.ndim == 3:
        return pn.pane.HoloViews(hv.RGB(value))
    return pn.pane.HoloViews(hv.Image(value).opts(colorbar=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from app.display.plots import plot_value

    rng = np.random.default_rng(0)
    values = {
        "1-D trace, 5 M points (float64)": np.cumsum(rng.normal(size=5_000_000)),
        "2-D image 4096x4096 (float32)": rng.random((4096, 4096), dtype=np.float32),
        "RGBA image 2000x3000 (uint8)": rng.integers(0, 255, (2000, 3000, 4), dtype=np.uint8),
    }
    print(f"{'value':36} {'ours: build':>12} {'payload':>10} | {'full data: build':>16} {'payload':>10} | ratio")
    for label, value in values.items():
        ours_t, full_t = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            ours = payload_bytes(plot_value(value, title=label))
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            full = payload_bytes(naive(value))
            full_t.append(time.perf_counter() - t)
        print(f"{label:36} {min(ours_t):10.2f} s {ours / 1e6:8.2f} MB | {min(full_t):14.2f} s "
              f"{full / 1e6:8.1f} MB | {full / ours:5.0f}x smaller")
    print("RESULT payloads and build times above (best of", args.repeat, "runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
