"""The ``panel serve`` process that ``panel_serve.sh`` starts: ``python -m app.server.process serve ...``.

Opens the served databases in a thread first, then runs Panel's command line in this one. Reading a
big proposal is mostly SQLite's and Arrow's C code (a second or two for 5000 runs x 300 variables),
which runs while Panel, Bokeh and the dashboard are imported (as long again, holding the GIL);
``setup.py`` then finds the sources open, or waits for them (``get_source`` opens each once). A database
that cannot be opened here is tried again, and its error logged, by ``setup.py``. With ``--num-procs``
nothing is opened before the fork: threads do not survive it (``app/live/source.py`` forgets inherited
sources in a child too).
"""

from __future__ import annotations

import logging
import sys
import threading

from app.config import get_config
from app.live.source import get_source
from backend.base.messages import quiet_client_connection_logs

log = logging.getLogger(__name__)


def open_databases() -> None:
    for db_dir in get_config().databases:
        try:
            get_source(db_dir)
        except Exception as e:  # setup.py tries again and reports it
            log.debug("Opening %s early failed: %s", db_dir, e)


def main() -> int:
    quiet_client_connection_logs()  # before a source's Kafka client first fails (setup.py says it once)
    if "--num-procs" not in sys.argv:  # forked processes open their own (setup.py runs in each)
        threading.Thread(target=open_databases, name="damnit-open-databases", daemon=True).start()
    # Imported here, after the thread started: importing Panel is the second the thread's reading fills.
    from panel.command import main as panel_main

    panel_main(sys.argv)  # as `python -m panel` calls it
    return 0


if __name__ == "__main__":
    sys.exit(main())
