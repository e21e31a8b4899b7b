"""Run slow work (reading HDF5, validating a context) off the server's event loop, then apply the result
in the browser session that asked for it.

The Tornado loop is shared by every session of the server, so a blocking read there would freeze all
users. Work goes to a small thread pool; the result is handed back with the session document's
``add_next_tick_callback``, where changing Panel objects is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import panel as pn

log = logging.getLogger(__name__)
T = TypeVar("T")
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="damnit-dashboard-io")


def in_background(work: Callable[[], T], apply: Callable[[T | None, BaseException | None], Any]) -> None:
    """Run ``work()`` in a thread, then ``apply(result, error)`` on the current session's loop.

    Outside a server session (tests, notebooks) both run right here, synchronously.
    """
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        try:
            result = work()
        except Exception as e:
            apply(None, e)
        else:
            apply(result, None)
        return

    def done(future) -> None:
        error = future.exception()
        result = None if error is not None else future.result()

        def apply_now() -> None:
            try:
                apply(result, error)
            except Exception:
                log.exception("Applying a background result failed")

        try:
            doc.add_next_tick_callback(apply_now)
        except Exception:  # the session closed meanwhile
            pass

    _POOL.submit(work).add_done_callback(done)
