"""``panel serve --setup`` script: open the served databases before the first visitor arrives, so the
first page is quick even for a 5000-run proposal, and connect the update producer."""

import logging
import os
import sys

import panel as pn

from app.actions.edits import warm_producer
from app.config import get_config
from app.display.hv import holoviews, import_on_server_loop
from app.display.plots import warm_up_in_background
from app.live.source import get_source, release_freed_memory, unload_idle
from app.pages.run_table.model import get_table_model, page_size_for
from backend.base.messages import quiet_client_connection_logs

log = logging.getLogger("app.setup")
# What the dashboard does (proposals opened and unloaded, refusals, edits, the broker going away and
# coming back) is in the server's log. A broker's outage is said once, by the live sources and the edit
# producer: aiokafka's error for every retry is hidden.
logging.getLogger("app").setLevel(logging.INFO)
quiet_client_connection_logs()
if os.environ.get("DAMNIT_LOG_LATENCY"):  # benchmarks: per-session message → patch timings on stderr
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("app.latency").addHandler(_h)
    logging.getLogger("app.latency").setLevel(logging.DEBUG)


for db_dir in get_config().databases:
    try:
        src = get_source(db_dir)
        model = get_table_model(src)
        # Render the page a first visitor sees (the newest runs) so it is served from the cache.
        specs = list(model.specs())  # fixed columns, then variables
        model.render(src.run_keys()[-page_size_for(len(specs)):][::-1], specs)
        log.info("Ready: %s", db_dir)
    except Exception as e:  # the landing page shows the error; keep serving the others
        log.error("Cannot open %s: %s", db_dir, e)
if not get_config().read_only:
    warm_producer()
release_freed_memory()
if "--num-threads" in sys.argv or os.environ.get("PANEL_NUM_THREADS"):
    holoviews()  # sessions' callbacks run in a thread pool, racing any later import: import it now
else:
    import_on_server_loop()  # HoloViews is imported after the first page (app/display/hv.py)
# The first plot a process draws costs seconds of one-off set-up in HoloViews: pay it before the first
# visitor's first click, but after their table is drawn (app.shell says when), or in 20 s if nobody came.
warm_up_in_background(at_latest=20)
if get_config().unload_after > 0:
    # Proposals nobody looks at give their memory and Kafka subscription back (a facility's server).
    after = get_config().unload_after
    pn.state.schedule_task("damnit-unload-idle-proposals", lambda: unload_idle(after),
                           period=f"{max(10, min(after, 60)):.0f}s")
