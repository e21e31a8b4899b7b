"""``panel serve --setup`` script: open the served databases before the first visitor arrives, so the
first page is quick even for a 5000-run proposal, and connect the update producer."""

import logging
import os

from app.config import get_config
from app.edits import warm_producer
from app.state import get_source
from app.table_model import get_table_model

log = logging.getLogger("app.setup")
if os.environ.get("DAMNIT_LOG_LATENCY"):  # benchmarks: per-session message → patch timings on stderr
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("app.latency").addHandler(_h)
    logging.getLogger("app.latency").setLevel(logging.DEBUG)

for db_dir in get_config().databases:
    try:
        src = get_source(db_dir)
        model = get_table_model(src)
        model.specs()
        src.frame()
        # Render the pages a first visitor sees or asks for first (the newest runs, the page before,
        # "First": the oldest runs) so they are served from the cache.
        keys, names = src.run_keys(), list(model.specs())  # specs: the fixed columns, then variables
        for key in dict.fromkeys([*keys[-100:], *keys[:50]]):
            for name in names:
                model.cell_text(key, name)
        log.info("Loaded %s: %d runs", db_dir, len(src.runs))
    except Exception as e:  # the landing page shows the error; keep serving the others
        log.error("Cannot open %s: %s", db_dir, e)
if not get_config().read_only:
    warm_producer()
