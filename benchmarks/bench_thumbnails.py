"""Run-table thumbnails: what a page of DAMNIT-sized (300 px) thumbnails costs to send: inlined as
stored, inlined scaled to the cell (``app/pages/run_table/cells.py: cell_png``), or by URL (``app/server/thumbnails.py``).

    python benchmarks/bench_thumbnails.py [--cells 600]

Thumbnails are made as the original makes them (matplotlib ``imshow`` of a noisy detector-like image,
1 inch at 300 dpi; trendline thumbnails 2 x 2/3 inch). Prints the page's cell HTML bytes and
the server time to render them once (the table caches rendered cells).
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.live.table import TableCell  # noqa: E402
from app.pages.run_table import cells  # noqa: E402
from backend.storage.run_values import BlobKind, Kind  # noqa: E402


def png_cell() -> TableCell:
    """A table cell holding a thumbnail, as the live table reads one from runs.sqlite."""
    return TableCell(kind=Kind.BLOB, value=None, blob=BlobKind.UNTYPED + BlobKind.PNG, attributes={},
                     max_diff=None, provenance=None, timestamp=None)


def damnit_thumbnails(n: int) -> list[bytes]:
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    y, x = np.mgrid[:256, :256]
    out = []
    for i in range(n):
        image = i % 2 == 0
        fig = Figure(figsize=(1, 1) if image else (2, 2 / 3))
        ax = fig.add_subplot()
        fig.subplots_adjust(left=0, right=1, bottom=0, top=1)
        if image:
            ax.imshow(np.exp(-((x - 128 - i) ** 2 + (y - 128) ** 2) / 2000) * 100 + rng.normal(0, 5, x.shape))
        else:
            ax.plot(np.cumsum(rng.normal(size=1000)))
        ax.axis("off")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=300 if image else None)
        out.append(buf.getvalue())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=600, help="thumbnails on one page (20 rows x 30 columns)")
    args = ap.parse_args()
    distinct = damnit_thumbnails(20)
    pngs = [distinct[i % len(distinct)] for i in range(args.cells)]
    stored = sum(len(base64.b64encode(p)) for p in pngs)

    t = time.perf_counter()
    inlined = [cells.cell_html(png_cell(), p) for p in pngs]
    inline_s = time.perf_counter() - t
    t = time.perf_counter()
    by_url = [cells.cell_html(png_cell(), p, f"thumbnail/tok/{i}/v{i}.png?v={zlib.crc32(p):08x}")
              for i, p in enumerate(pngs)]
    url_s = time.perf_counter() - t
    t = time.perf_counter()
    scaled = [cells.cell_png(p) for p in distinct]
    per_image_ms = (time.perf_counter() - t) / len(distinct) * 1e3
    inline_b, url_b = sum(map(len, inlined)), sum(map(len, by_url))
    print(f"{args.cells} thumbnails in one page's cell HTML:")
    print(f"  inlined as stored      {stored / 1e6:7.2f} MB")
    print(f"  inlined, scaled        {inline_b / 1e6:7.2f} MB, rendered in {inline_s:.2f} s")
    print(f"  by URL (thumbnails) {url_b / 1e6:6.3f} MB, rendered in {url_s:.3f} s; each image then "
          f"{sum(map(len, scaled)) / len(scaled) / 1e3:.1f} kB, scaled in {per_image_ms:.1f} ms when first fetched")
    print(f"RESULT thumbnails page {stored / 1e6:.2f} MB inlined -> {inline_b / 1e6:.2f} MB scaled -> "
          f"{url_b / 1e6:.3f} MB by URL (render {inline_s:.2f} s -> {url_s:.3f} s)")


if __name__ == "__main__":
    main()
