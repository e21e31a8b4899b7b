"""HoloViews, imported on first use, on the server's event loop.

Importing it and registering its Bokeh backend takes 0.37 s of CPU (matplotlib's colour tables
included) that a server's start and the run table's first page do not need: it is imported once a
first page is on screen (``import_soon``), or by the first plot. ``hv`` stands for the module:
``from app.display.hv import hv`` then ``hv.Curve(...)`` as usual.

On a server the import happens on the event loop's thread only (``import_on_server_loop``). Panel's own
code imports parts of HoloViews as soon as it sees it in ``sys.modules``; while an import is under way
in another thread (a run panel loading its plots), that fails half done ("partially initialized
module"). A plot built in another thread first waits for the loop to import it.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from types import ModuleType
from typing import Any

LOOP_WAIT = 60.0  # s a thread waits for the event loop to import HoloViews
_LOCK = threading.Lock()
_MODULE: ModuleType | None = None
_LOOP: Any = None  # the server's tornado IOLoop
_LOOP_THREAD: threading.Thread | None = None


def _import() -> ModuleType:
    global _MODULE
    with _LOCK:
        if _MODULE is None:
            import holoviews as module
            import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh backend for .opts())

            module.Store.set_current_backend("bokeh")
            _MODULE = module
    return _MODULE


def holoviews() -> ModuleType:
    """The holoviews module, with the Bokeh backend registered and current."""
    if _MODULE is not None:
        return _MODULE
    loop = _LOOP
    if loop is None or threading.current_thread() is _LOOP_THREAD:
        return _import()
    done: Future = Future()

    def run() -> None:
        try:
            done.set_result(_import())
        except BaseException as e:  # handed to the waiting thread
            done.set_exception(e)

    loop.add_callback(run)
    try:
        return done.result(timeout=LOOP_WAIT)
    except TimeoutError:  # the loop is stuck or gone: better a plot than a thread that waits for ever
        logging.getLogger(__name__).warning("The server's event loop did not import HoloViews within %.0f s; "
                                            "importing it in %s", LOOP_WAIT, threading.current_thread().name)
        return _import()


def import_on_server_loop() -> None:
    """From now on, import HoloViews on the calling thread's event loop (a server's, at set-up)."""
    global _LOOP, _LOOP_THREAD
    from tornado.ioloop import IOLoop

    _LOOP, _LOOP_THREAD = IOLoop.current(), threading.current_thread()


def import_soon() -> None:
    """Import HoloViews at the loop's next turn, if not yet done (a first page is on screen)."""
    if _MODULE is None and _LOOP is not None:
        _LOOP.add_callback(holoviews)


class _LazyHoloViews:
    def __getattr__(self, name: str) -> Any:
        return getattr(holoviews(), name)


hv: Any = _LazyHoloViews()
