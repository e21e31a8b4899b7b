"""The app shell: picks the proposal for this session, builds its SessionState and shows the pages as
tabs under a header with the proposal, the connection state and the user's write permission."""

from __future__ import annotations

import logging

import panel as pn
import param

from app.access import may_see
from app.config import ServerConfig, get_config
from app.display import theme
from app.display.hv import import_soon
from app.display.plots import warm_up_now
from app.display.text import escape
from app.live.session import SessionState, every
from app.live.source import ProposalSource, get_source
from app.pages import load_pages
from app.pages.bigscreen import BigScreen
from app.pages.landing import ProposalDirectory
from app.pages.view_links import PAGE_KEY, ViewLinks, first_values
from backend.base.paths import find_database_dir

log = logging.getLogger(__name__)

CSS = """
.dmn-conn { padding: 2px 8px; border-radius: 10px; font-size: 12px; color: white; font-family: sans-serif; }
.dmn-conn-live { background: #2e7d32; }
.dmn-conn-polling { background: #f9a825; color: black; }
.dmn-conn-starting { background: #777; }
.dmn-conn-disconnected { background: #c62828; }
"""


class ConnectionBadge(pn.custom.JSComponent):
    """live / polling (server side) or disconnected (no heartbeat from the server for 7 s)."""

    state = param.String(default="starting")
    heartbeat = param.Integer(default=0)

    _stylesheets = [CSS]
    _esm = """
    export function render({ model, el }) {
      const span = document.createElement('span')
      span.setAttribute('data-testid', 'connection-state')
      el.appendChild(span)
      let last = Date.now()
      function draw() {
        const stale = Date.now() - last > 7000
        const s = stale ? 'disconnected' : model.state
        span.textContent = s
        span.className = 'dmn-conn dmn-conn-' + s
        span.title = stale ? 'No contact with the dashboard server; reconnecting...'
                   : (s === 'live' ? 'Updates arrive through Kafka' : 'Updates by polling the database')
      }
      model.on('heartbeat', () => { last = Date.now(); draw() })
      model.on('state', draw)
      const timer = setInterval(draw, 1000)
      model.on('remove', () => clearInterval(timer))
      draw()
    }
    """


class ScriptLoader(pn.custom.JSComponent):
    """Loads the big scripts only other pages need (plotly, the ace editor: 5 MB) after the run table
    is on screen, instead of before anything is drawn; ``loaded`` turns True when they are in."""

    urls = param.List(default=[])
    delay_ms = param.Integer(default=50, doc="Wait until the user has been idle this long (the table's "
                             "clicks should not queue behind parsing 5 MB of scripts)")
    hurry = param.Boolean(default=False, doc="Another page wants them now: do not wait for delay_ms")
    loaded = param.Boolean(default=False)
    drawn = param.Boolean(default=False, doc="The browser painted the page once (set by the browser)")

    _esm = """
    function load(src) {
      return new Promise((resolve) => {
        const s = document.createElement('script')
        s.src = src
        s.onload = resolve
        s.onerror = () => { console.error('could not load ' + src); resolve() }
        document.head.appendChild(s)
      })
    }
    export function render({ model, el }) {
      el.style.display = 'none'
      requestAnimationFrame(() => setTimeout(() => { model.drawn = true }, 0))  // after the next paint
      let started = false
      const go = async () => {
        if (started) return
        started = true
        for (const url of model.urls) {  // in order: ace's extensions need ace
          const name = url.split('/').pop()
          if (!Array.from(document.scripts).some(s => s.src.endsWith(name))) await load(url)
        }
        model.loaded = true
      }
      // Parsing them blocks the page for a second or more: wait until the user has left the page
      // alone for delay_ms (each click or key press starts the wait again), unless a page hurries.
      let timer = setTimeout(go, model.delay_ms)
      const poke = () => { if (!started) { clearTimeout(timer); timer = setTimeout(go, model.delay_ms) } }
      for (const type of ['pointerdown', 'keydown', 'wheel']) document.addEventListener(type, poke, true)
      model.on('hurry', go)
      if (model.hurry) go()
    }
    """


def deferred_script_urls() -> list[str]:
    """Scripts of the extensions that are left out of the first page load (see app/server/main.py)."""
    from panel.io.resources import bundled_files
    from panel.models.ace import AcePlot
    from panel.models.plotly import PlotlyPlot

    return [*bundled_files(AcePlot), *bundled_files(PlotlyPlot)]


def page_drawn(session: SessionState) -> None:
    """The browser painted this session's first page: what start-up put off may take the CPU now."""
    if session.source is not None:
        session.source.first_page_shown()  # a big proposal's older runs
    import_soon()  # HoloViews, for the first plot


def session_user(cfg: ServerConfig) -> str:
    if cfg.auth == "oauth":
        return pn.state.user or ""
    if cfg.auth == "header" and cfg.user_header:
        headers = pn.state.headers or {}
        for k, v in headers.items():
            if k.lower() == cfg.user_header.lower():
                return str(v)
    return ""


def make_session(source: ProposalSource | None, cfg: ServerConfig) -> SessionState:
    user = session_user(cfg)
    if cfg.read_only:
        can_write, reason = False, "The dashboard was started with --read-only"
    elif cfg.writes_need_user and not user:
        can_write = False
        reason = ("Editing needs a signed-in user: this server is reachable from other machines "
                  "(configure OAuth or a trusted proxy header)")
    else:
        can_write, reason = True, ""
    context_reason = cfg.context_edit_refusal(user) if can_write else reason
    return SessionState(source=source, read_only=cfg.read_only, user=user, can_write=can_write,
                        write_denied_reason=reason, can_edit_context=not context_reason,
                        context_edit_denied_reason=context_reason)


def pick_source(cfg: ServerConfig, user: str) -> tuple[ProposalSource | None, str]:
    """The source this session asked for with ``?proposal=N`` / ``?db=i`` (or the only one served), if
    this user may see it; otherwise (None, why), the reason never revealing more than was asked."""
    args = pn.state.session_args or {}
    prop = (args.get("proposal") or [b""])[0].decode()
    db_index = (args.get("db") or [b""])[0].decode()
    db_dir = None
    if prop:
        if not prop.isdigit():
            return None, f"Not a proposal number: {prop!r}"
        for d in cfg.databases:
            src = get_source(d)
            if src.proposal == int(prop):
                db_dir = src.db_dir
                break
        else:
            if cfg.allow_lookup and not cfg.databases:
                db_dir = find_database_dir(int(prop))
        if db_dir is None:
            return None, f"Proposal {prop} is not served here"
        if not may_see(cfg, user, int(prop), db_dir):
            log.warning("Refused p%s to %s: not a member", prop, user or "an anonymous user")
            return None, f"You are not a member of proposal {int(prop)}" + (f" ({user})" if user else "")
        return get_source(db_dir), ""
    if db_index:
        if not (db_index.isdigit() and int(db_index) < len(cfg.databases)):
            return None, f"No database #{db_index} is served here"
        db_dir = cfg.databases[int(db_index)]
    elif len(cfg.databases) == 1:
        db_dir = cfg.databases[0]
    else:
        return None, ""
    source = get_source(db_dir)
    if not may_see(cfg, user, source.proposal, source.db_dir):
        log.warning("Refused %s to %s: not a member", source.db_dir, user or "an anonymous user")
        return None, f"You are not a member of proposal {source.proposal}" + (f" ({user})" if user else "")
    return source, ""


def build_app() -> pn.viewable.Viewable:
    """One session's page."""
    cfg = get_config()
    args = pn.state.session_args or {}
    bigscreen = (args.get("mode") or [b""])[0] == b"bigscreen"
    # The theme first: components take it when they are created. A wall display is dark unless its URL
    # says otherwise (its URL alone defines it); other pages follow the browser's remembered choice.
    chosen, explicit = theme.choose(args, pn.state.cookies, theme.DARK if bigscreen else theme.LIGHT,
                                    remembered=not bigscreen)
    theme.apply(chosen)
    user = session_user(cfg)
    try:
        source, message = pick_source(cfg, user)
    except Exception as e:  # a served DB became unreadable
        log.exception("Cannot open the database asked for")
        source, message = None, f"Cannot open the database: {e}"
    if source is None:
        return ProposalDirectory(cfg=cfg, user=user, message=message)
    session = make_session(source, cfg)
    if bigscreen:
        return BigScreen(session=session, fill=True)  # a wall display: that page alone, no tabs or edits

    badge = ConnectionBadge(state=source.connection, height=24, width=110)
    session.on_change(lambda ch: setattr(badge, "state", source.connection) if ch.connection else None)
    every(2000, lambda: setattr(badge, "heartbeat", badge.heartbeat + 1))

    who = escape(session.user) if session.user else ""
    if session.read_only:
        mode = "<span title='Started with --read-only' style='color:#a00'>read-only</span>"
    elif not session.can_write:
        mode = f"<span title='{escape(session.write_denied_reason)}' style='color:#a00'>view only</span>"
    else:
        mode = ""
    title = escape(f"DAMNIT: {source.title}")
    header = pn.Row(
        pn.pane.HTML(f"<b style='font-size:18px'>{title}</b> <span style='opacity:0.65'>"
                     f"{escape(str(source.db_dir))}</span>"),
        pn.HSpacer(),
        pn.pane.HTML(f"{who} {mode}", margin=(8, 10)),
        theme.ThemeToggle(theme=chosen, explicit=explicit, height=28, width=90, margin=(4, 10)),
        badge,
        sizing_mode="stretch_width",
    )
    if len(cfg.databases) > 1 or cfg.allow_lookup:
        header.insert(1, pn.pane.HTML("<a href='?' style='color:inherit'>all proposals</a>", margin=(8, 10)))

    pages = load_pages()
    opened_with = first_values(args)
    want = opened_with.get(PAGE_KEY, "")
    links = ViewLinks(session, opened_with)
    header.insert(len(header.objects) - 2, links.address)
    slots = [pn.Column(sizing_mode="stretch_both", name=p.title) for p in pages]
    tabs = pn.Tabs(*slots, sizing_mode="stretch_both", dynamic=False, stylesheets=[theme.TABS_CSS])

    start = next((i for i, p in enumerate(pages) if p.slug == want), 0)
    loader = ScriptLoader(urls=deferred_script_urls(), width=0, height=0, margin=0,
                          delay_ms=3000 if pages and pages[start].slug == "table" else 50)

    def fill(index: int) -> None:
        if 0 <= index < len(pages) and pages[index].slug != "table" and not loader.loaded:
            # The page may need plotly/ace: build it once they are in the browser.
            if not slots[index].objects:
                slots[index].objects = [pn.indicators.LoadingSpinner(value=True, width=40, height=40)]
                loader.param.watch(lambda ev: fill(index), "loaded", onlychanged=True)
                loader.hurry = True
            return
        if 0 <= index < len(pages) and (not slots[index].objects or isinstance(
                slots[index].objects[0], pn.indicators.LoadingSpinner)):
            try:
                view = pages[index].view(session)
                slots[index].objects = [view]
                links.attach(view)  # shows the view the link names; its changes change the link
            except Exception as e:
                log.exception("Page %s failed", pages[index].slug)
                slots[index].objects = [pn.pane.Alert(f"This page failed: {escape(repr(e))}",
                                                      alert_type="danger")]

    def on_tab(index: int) -> None:
        if 0 <= index < len(pages):
            session.active_page = pages[index].slug
        fill(index)

    tabs.param.watch(lambda ev: on_tab(ev.new), "active")
    loader.param.watch(lambda ev: setattr(session, "scripts_loaded", ev.new), "loaded")
    # The page is drawn and the browser idle: time for the server's one-off plot set-up (app/server/setup.py).
    loader.param.watch(lambda ev: warm_up_now() if ev.new else None, "loaded")
    loader.param.watch(lambda ev: page_drawn(session) if ev.new else None, "drawn")
    session.param.watch(lambda ev: setattr(loader, "hurry", True), "scripts_wanted")

    def bring_to_front(event) -> None:
        index = next((i for i, p in enumerate(pages) if p.slug == event.new), None)
        if index is not None:
            tabs.active = index

    session.param.watch(bring_to_front, "open_page", onlychanged=False)
    tabs.active = start
    on_tab(start)
    return pn.Column(header, tabs, loader, sizing_mode="stretch_both")
