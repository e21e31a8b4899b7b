"""Each browser session's view of a proposal: ``SessionState``; how a session follows the source's
changes and a timer (both ended with the session); and how slow work (reading HDF5, validating a
context) runs off the server's event loop, shared by every session, with its result applied back in the
session that asked for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import panel as pn
import param
from panel.io.state import set_curdoc

from app.live.records import Change
from app.live.source import ProposalSource

Callback = Callable[[Change], None]
T = TypeVar("T")
log = logging.getLogger(__name__)


class SessionState(param.Parameterized):
    """What one browser session is looking at and may do. Every page receives one."""

    source = param.ClassSelector(class_=ProposalSource, doc="The proposal this session shows")
    selected_runs = param.List(default=[], item_type=int, doc="Run numbers selected in the run table")
    read_only = param.Boolean(default=False, doc="Server started with --read-only: no edit controls")
    user = param.String(default="", doc="Authenticated user name ('' when none)")
    can_write = param.Boolean(default=False, doc="May this session change the DB (comments, user vars, ...)")
    write_denied_reason = param.String(default="", doc="Why can_write is False, for a tooltip/notice")
    can_edit_context = param.Boolean(default=False, doc="May this session save the context file (code the "
                                     "backend runs: a stronger right than can_write, see --context-editors)")
    context_edit_denied_reason = param.String(default="", doc="Why can_edit_context is False, one line")
    open_page = param.String(default="", doc="Slug of a page a page asks the shell to bring to the front "
                             "(e.g. the run table's double click opens 'inspect'); set it again to repeat")
    active_page = param.String(default="", doc="Slug of the page in front (set by the shell): pages that "
                               "draw for the user (the run panel) wait while they are hidden")
    scripts_loaded = param.Boolean(default=False, doc="The big scripts left out of the first page load "
                                   "(plotly, ace) are in the browser (set by the shell)")
    scripts_wanted = param.Event(doc="A page needs those scripts now (the shell loads them at once)")

    def on_change(self, callback: Callback) -> Callback:
        """Subscribe ``callback(change)`` to the source, run on THIS session's event loop with the
        document lock held, and unsubscribed automatically when the session closes."""
        doc = pn.state.curdoc
        source = self.source

        def run_in_session(change: Change) -> None:
            # With the session's document as Panel's current doc, widget and model updates made by
            # the callback go out in this tick instead of being re-scheduled for a later one.
            with set_curdoc(doc):
                callback(change)

        def marshal(change: Change) -> None:
            if doc is None or doc.session_context is None:
                callback(change)
                return
            try:
                doc.add_next_tick_callback(partial(run_in_session, change))
            except Exception:  # session already gone
                source.unsubscribe(marshal)

        source.subscribe(marshal)
        if doc is not None and doc.session_context is not None:
            pn.state.on_session_destroyed(lambda ctx: source.unsubscribe(marshal))
        return marshal

    def check_write(self) -> None:
        """Raise PermissionError unless this session may write (the server-side guard for every edit)."""
        if not self.can_write:
            raise PermissionError(self.write_denied_reason or "This dashboard is read-only")

    def check_context_edit(self) -> None:
        """Raise PermissionError unless this session may save the context file (server-side guard)."""
        if not (self.can_write and self.can_edit_context):
            raise PermissionError(self.context_edit_denied_reason or self.write_denied_reason
                                  or "Editing the context file is not allowed")


def every(period_ms: int, callback: Callable[[], object]) -> None:
    """Call ``callback`` every ``period_ms`` in this session, stopping when the session ends. Outside
    a server session (tests, notebooks) nothing is scheduled."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return
    timer = pn.state.add_periodic_callback(callback, period_ms)
    pn.state.on_session_destroyed(lambda ctx: timer.stop())


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
