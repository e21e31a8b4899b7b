"""Every view has a link: the page in front, the selected runs and each page's own view (the run
table's sort, filters and hidden columns; the Plots page's kind and axes) live in the address bar, so a
link pasted into a logbook or a chat opens the same view for a colleague, under any proxy prefix.

A page takes part by defining ``LINK_PARAMS`` (the params whose changes change the link), ``to_link()``
(its view as query values; a default view adds nothing) and ``from_link(query)`` (applies what a link
says, returning what it could not use: links are typed and pasted by people, and may be hostile). The
shell owns one ``ViewLinks`` per session: it applies the link the page was opened with to each page as
that page is built, and rewrites the address (``history.replaceState``: no history entry per click)
whenever a linked param changes. Query keys the dashboard does not own (``proposal``, ``db``) are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import panel as pn
import param

from app.display.text import escape
from app.live.session import SessionState
from backend.base.runs import RunSpecError, format_runs, parse_run_spec

log = logging.getLogger(__name__)

PAGE_KEY, RUNS_KEY = "page", "runs"
MAX_LINK_RUNS = 10_000  # a link naming more runs than this is not a selection anyone made by hand


class ViewAddress(pn.custom.JSComponent):
    """Keeps the address bar's query equal to ``query`` and offers "Copy link to this view"."""

    query = param.String(default="", doc="The view's query string, without '?'")

    _esm = """
    export function render({ model, el }) {
      const show = () => {
        const url = new URL(window.location.href)
        url.search = model.query ? '?' + model.query : ''
        if (url.href !== window.location.href) window.history.replaceState(window.history.state, '', url)
      }
      show()
      model.on('query', show)
      const button = document.createElement('button')
      button.className = 'dmn-copy-link'
      button.type = 'button'
      button.textContent = 'Copy link'
      button.title = 'Copy a link to this view (page, selected runs, sort, filters, plot)'
      Object.assign(button.style, { cursor: 'pointer', padding: '3px 10px', borderRadius: '4px',
        border: '1px solid #888', background: 'transparent', color: 'inherit',  // both themes
        font: 'inherit', whiteSpace: 'nowrap' })
      const note = document.createElement('span')
      note.className = 'dmn-copy-link-note'
      Object.assign(note.style, { marginLeft: '6px', fontSize: '12px' })
      const fallback = (href) => {
        // No clipboard here (plain http behind a proxy): show the link selected for Ctrl+C.
        const field = document.createElement('input')
        field.className = 'dmn-copy-link-field'
        field.readOnly = true
        field.value = href
        field.style.width = '28em'
        note.replaceChildren(field, document.createTextNode(' Ctrl+C to copy'))
        field.focus()
        field.select()
      }
      button.addEventListener('click', () => {
        show()
        const href = window.location.href
        const done = () => { note.textContent = 'Link copied'; setTimeout(() => { note.textContent = '' }, 3000) }
        if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(href).then(done, () => fallback(href))
        else fallback(href)
      })
      el.replaceChildren(button, note)
    }
    """


def encode_runs(runs: list[int]) -> str:
    return format_runs(runs).replace(" ", "")


def decode_runs(text: str) -> list[int]:
    """Run numbers from a link (``3,5-7``); RunSpecError when it is not a list of runs."""
    runs = parse_run_spec(text)
    if runs is None:
        raise RunSpecError("'all' is not a selection")
    if len(runs) > MAX_LINK_RUNS:
        raise RunSpecError(f"more than {MAX_LINK_RUNS} runs")
    return runs


def first_values(args: Mapping[str, Any]) -> dict[str, str]:
    """Panel's ``session_args`` (lists of bytes) as one string per key."""
    out = {}
    for key, values in (args or {}).items():
        value = values[0] if isinstance(values, list | tuple) and values else values
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[str(key)] = str(value)
    return out


class ViewLinks:
    """One session's link: composes the address from the session and its pages, applies a link."""

    def __init__(self, session: SessionState, opened_with: Mapping[str, str]):
        self.session = session
        self.opened_with = dict(opened_with)
        self.address = ViewAddress(query=urlencode(self.opened_with), height=34, margin=(6, 10),
                                   sizing_mode="fixed", width=130)
        self.pages: list[Any] = []
        self.problems: list[str] = []
        runs = self.opened_with.get(RUNS_KEY)
        if runs:
            try:
                wanted = decode_runs(runs)
            except RunSpecError as e:
                self.report([f"runs: {e}"])
            else:
                known = [r for r in wanted if session.source.has_run(session.source.key_for(None, r))]
                if len(known) < len(wanted):
                    self.report([f"runs not in this proposal: {format_runs(set(wanted) - set(known))}"])
                if known:
                    session.selected_runs = known
        session.param.watch(lambda e: self.update(), ["selected_runs", "active_page"])

    def attach(self, page: Any) -> None:
        """A page was built: it shows the link's view, and its changes change the link from now on."""
        if not hasattr(page, "to_link"):
            return
        try:
            self.report(page.from_link(self.opened_with) or [])
        except Exception as e:  # a link must never stop a page from opening
            log.warning("Could not apply the link %s to %s: %s", self.opened_with, type(page).__name__, e)
            self.report([f"{type(page).__name__}: {e}"])
        self.pages.append(page)
        page.param.watch(lambda e: self.update(), list(page.LINK_PARAMS))
        self.update()

    def report(self, problems: list[str]) -> None:
        """Tell the user which parts of the link were not used (as text: a link may carry markup)."""
        if not problems:
            return
        self.problems.extend(problems)
        text = escape(("Parts of this link were not used: " + "; ".join(problems))[:500])

        def show() -> None:
            if pn.state.notifications is not None:
                pn.state.notifications.warning(text, duration=10_000)

        pn.state.onload(show)  # at once when the page is already loaded

    def query(self) -> dict[str, str]:
        owned = {PAGE_KEY, RUNS_KEY} | {key for page in self.pages for key in getattr(page, "LINK_KEYS", ())}
        query = {k: v for k, v in self.opened_with.items() if k not in owned}
        if self.session.active_page:
            query[PAGE_KEY] = self.session.active_page
        if self.session.selected_runs:
            query[RUNS_KEY] = encode_runs(self.session.selected_runs)
        for page in self.pages:
            query.update(page.to_link())
        return query

    def update(self) -> None:
        self.address.query = urlencode(self.query())
