"""Light and dark: which theme a session uses, and the styles that follow it.

A browser's choice is kept in its ``localStorage`` (``damnit-theme``) and mirrored in a cookie of the
same name, which the server reads when it builds the page (a theme is applied when components are
created, so switching reloads the page). ``?theme=dark`` or ``?theme=light`` in the URL wins for that
page (the big screen is dark unless its URL says otherwise). Without any choice the page follows the
browser's ``prefers-color-scheme``.

Panel's own themes colour widgets, cards and the Bokeh plots; the CSS here makes the tables (Tabulator)
and our own pieces follow them through Panel's CSS variables, so one stylesheet serves both themes.
"""

from __future__ import annotations

from collections.abc import Mapping

import panel as pn
import param

LIGHT, DARK = "light", "dark"
COOKIE = "damnit-theme"
_PANEL_NAMES = {LIGHT: "default", DARK: "dark"}  # Panel calls the light theme "default"


def parse(text: str | bytes | None) -> str | None:
    """'light' / 'dark' from a URL argument or cookie ('default' is Panel's name for light)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = (text or "").strip().lower()
    if text in (LIGHT, "default"):
        return LIGHT
    return DARK if text == DARK else None


def choose(args: Mapping[str, list] | None, cookies: Mapping[str, str] | None, default: str = LIGHT,
           *, remembered: bool = True) -> tuple[str, bool]:
    """(theme, named in the URL) for a new session: ``?theme=``, else the browser's remembered choice
    (unless ``remembered`` is False, as for the big screen whose URL alone defines it), else ``default``."""
    from_url = parse(((args or {}).get("theme") or [b""])[0])
    if from_url:
        return from_url, True
    if remembered:
        from_cookie = parse((cookies or {}).get(COOKIE))
        if from_cookie:
            return from_cookie, False
    return default, False


def apply(theme: str) -> None:
    """Make ``theme`` this session's Panel theme (call before building the page: components pick the
    theme up when they are created)."""
    pn.config.theme = _PANEL_NAMES.get(theme, "default")


def current() -> str:
    """This session's theme (as set by ``apply``)."""
    return DARK if pn.config.theme == "dark" else LIGHT


# Tables (Tabulator's "simple" theme is light only): colours from Panel's theme variables, which every
# component's shadow root inherits, so the same rules serve the light and the dark theme. ``!important``
# because Tabulator's theme sheet comes later and its rules are as specific.
TABLE_CSS = """
.tabulator, .tabulator .tabulator-header, .tabulator .tabulator-header .tabulator-col,
.tabulator .tabulator-header .tabulator-col .tabulator-col-content, .tabulator .tabulator-tableholder,
.tabulator .tabulator-tableholder .tabulator-table, .tabulator .tabulator-footer {
  background-color: var(--panel-background-color) !important; color: var(--panel-on-background-color) !important;
  border-color: var(--panel-border-color) !important; }
.tabulator .tabulator-row { background-color: var(--panel-background-color) !important;
                            color: var(--panel-on-background-color) !important;
                            border-color: var(--panel-border-color) !important; }
.tabulator .tabulator-row.tabulator-row-even { background-color: var(--panel-surface-color) !important; }
.tabulator .tabulator-row .tabulator-cell { border-color: var(--panel-border-color) !important; }
.tabulator .tabulator-row.tabulator-selectable:hover {
  background-color: color-mix(in srgb, var(--panel-primary-color) 18%, var(--panel-background-color)) !important; }
.tabulator .tabulator-row.tabulator-selected, .tabulator .tabulator-row.tabulator-selected:hover {
  background-color: color-mix(in srgb, var(--panel-primary-color) 35%, var(--panel-background-color)) !important; }
.tabulator .tabulator-row .tabulator-cell.tabulator-frozen { background-color: inherit !important; }
.tabulator .tabulator-footer .tabulator-page { background-color: var(--panel-surface-color) !important;
                                               color: var(--panel-on-background-color) !important; }
.tabulator .tabulator-footer .tabulator-page.active { color: var(--panel-primary-color) !important; }
.tabulator .tabulator-footer .tabulator-page:disabled { opacity: 0.5; }
"""


# The tab headers: the active one readable in both themes.
TABS_CSS = """
.bk-header .bk-tab { color: var(--panel-on-background-color); }
.bk-header .bk-tab.bk-active { color: var(--panel-on-background-color); background-color: var(--panel-surface-color);
                               border-color: var(--panel-border-color); }
"""


class ThemeToggle(pn.custom.JSComponent):
    """The header's light/dark switch: remembers the choice in this browser and reloads the page in it.

    On load it also brings the server in line with the browser: when the remembered choice (or, with
    none, the system's dark mode) differs from the theme the page was built in and the URL names no
    theme, it sets the cookie and reloads once."""

    theme = param.Selector(default=LIGHT, objects=[LIGHT, DARK], doc="The theme this page was built in")
    explicit = param.Boolean(default=False, doc="The URL names the theme: do not override it")

    _esm = """
    const KEY = 'damnit-theme'
    function tellServer(theme) {
      document.cookie = KEY + '=' + theme + '; path=/; max-age=31536000; SameSite=Lax'
    }
    function remember(theme) {
      try { localStorage.setItem(KEY, theme) } catch (e) {}
      tellServer(theme)
    }
    export function render({ model, el }) {
      const button = document.createElement('button')
      button.className = 'dmn-theme-toggle'
      button.setAttribute('data-testid', 'theme-toggle')
      const other = () => (model.theme === 'dark' ? 'light' : 'dark')
      const draw = () => {
        button.textContent = model.theme === 'dark' ? '\\u2600 Light' : '\\u263E Dark'
        button.title = 'Switch to the ' + other() + ' theme (remembered in this browser)'
      }
      button.addEventListener('click', () => {
        remember(other())
        const url = new URL(window.location.href)
        url.searchParams.delete('theme')
        window.location.replace(url.toString())
      })
      el.appendChild(button)
      draw()
      model.on('theme', draw)
      let wanted = null
      try { wanted = localStorage.getItem(KEY) } catch (e) {}
      if (!wanted && window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches) wanted = 'dark'
      if (!model.explicit && (wanted === 'dark' || wanted === 'light') && wanted !== model.theme) {
        const tried = sessionStorage.getItem(KEY + '-synced')
        if (tried !== wanted) {  // once per tab: a browser refusing cookies must not reload forever
          sessionStorage.setItem(KEY + '-synced', wanted)
          tellServer(wanted)
          window.location.reload()
        }
      }
    }
    """

    _stylesheets = ["""
    .dmn-theme-toggle { font: 13px sans-serif; padding: 3px 10px; border-radius: 12px; cursor: pointer;
                        border: 1px solid var(--panel-border-color, #ccc);
                        background: var(--panel-surface-color, #f3f3f3);
                        color: var(--panel-on-background-color, #222); }
    """]
