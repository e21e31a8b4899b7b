"""Debian's Chromium driven by Playwright (never ``playwright install``: it downloads a browser)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("DAMNIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
]


# A JS function (for page.evaluate / eval) returning every Bokeh view on the page: views nest, and a
# page's widgets are reached through them (their DOM lives in shadow roots).
ALL_BOKEH_VIEWS_JS = """
() => {
  const out = [];
  const walk = (v) => { if (!v || out.includes(v)) return; out.push(v);
                        for (const c of (v.child_views || [])) walk(c); };
  for (const v of Object.values(window.Bokeh.index)) walk(v);
  return out;
}
"""


class BrowserError(RuntimeError):
    """Chromium or Playwright is missing or does not start."""


def chromium_path() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        raise BrowserError(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium "
                           "(or set DAMNIT_TEST_CHROMIUM)")
    return path


def launch_chromium(playwright, **kw):
    """Launch headless Chromium with the flags that work on these machines."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True,
                                      **kw)
