"""HoloViews is imported on first use, and on a server only on its event loop's thread: Panel imports
parts of it as soon as it is in ``sys.modules``, and an import half done in another thread then fails
(it did: a run panel's plot thread against a page being built)."""

from __future__ import annotations

import asyncio
import threading

from tornado.ioloop import IOLoop

import app.display.hv as lazy


def test_a_plot_thread_has_holoviews_imported_on_the_servers_loop(monkeypatch):
    monkeypatch.setattr(lazy, "_MODULE", None)
    monkeypatch.setattr(lazy, "_LOOP", None)
    monkeypatch.setattr(lazy, "_LOOP_THREAD", None)
    imported_on = []
    real_import = lazy._import
    monkeypatch.setattr(lazy, "_import", lambda: imported_on.append(threading.current_thread()) or real_import())
    ready = threading.Event()

    def server() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        lazy.import_on_server_loop()
        ready.set()
        IOLoop.current().start()

    loop_thread = threading.Thread(target=server, daemon=True)
    loop_thread.start()
    assert ready.wait(10)
    got = []
    worker = threading.Thread(target=lambda: got.append(lazy.hv.Curve([1, 2, 3])))
    worker.start()
    worker.join(60)
    lazy._LOOP.add_callback(lazy._LOOP.stop)
    loop_thread.join(10)
    assert imported_on == [loop_thread] and type(got[0]).__name__ == "Curve"
    assert lazy.holoviews() is lazy._MODULE  # once imported, every thread gets it at once
