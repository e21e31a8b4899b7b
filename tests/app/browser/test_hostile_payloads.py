"""Hostile text on every page of the dashboard, in a real browser (issue: no text from data runs as code).

One proposal of extra-data mock runs is processed for real (``damnit reprocess --direct``) with a context
file whose titles, descriptions, units, tags, string values, errors, Skip reasons, printed log lines and
plot labels (xarray names, dimensions, coordinate units, DataFrame columns, Dataset variables, plotly
titles) are the payloads of ``hostile_data.PAYLOADS``; user variables, run comments and standalone
comments hold them too (written through ``DamnitDB``), and the decoy proposal lives in a folder named
like one. The real dashboard (``panel_serve.sh``) serves it in normal and in ``--read-only`` mode, and
Chromium visits every page: it hovers every run-table header, the thumbnails and the plots, opens every
card, picks payload variables on the plot axes, opens the log viewer, and in normal mode types payloads
where users type (a run comment, a user-variable title and value, a standalone comment, the runs to
reprocess, a context file whose error message holds them).

It fails on any dialog, any console error, any request to another host (or to the ``x`` an ``<img src=x>``
asks for), and any element made from a payload (found by a MutationObserver that also watches every
shadow root, and by a full scan of the page): event-handler attributes, scripts, styles, links, images
or frames carrying a payload's marker. The payloads must be visible as literal text where shown.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from app.display.text import WORD_JOINER
from app.server.launcher import DashboardServer
from backend.base import mockruns
from tests.app.browser.hostile_data import KEYS, PAYLOADS, SHORT, context_code, fill_user_fields, user_title
from tests.app.membership_rule import SIGNED_IN
from tests.infra import REPO
from tests.infra.browser import ALL_BOKEH_VIEWS_JS

pytestmark = pytest.mark.browser

PROPOSAL = 4321
DECOY = 4322  # served too in normal mode, from a folder named like a payload (the landing page lists it)
RUNS = [1, 2, 3]
DECOY_FOLDER = '<img src=x onerror=alert("XSS20")> "amore\''
USER = '<img src=x onerror=alert("XSS21")>'  # the signed-in user's name in normal mode
T0 = time.monotonic()
MODES = ["normal", "read_only"]

# Installed before any page script: records elements made from payloads as they appear (tooltips and
# notifications come and go), in the document and in every shadow root Panel and Bokeh attach.
GUARD_JS = r"""
(() => {
  const found = window.__xss_found = [];
  const MARK = /XSS\d\d/;
  const TEXT_ATTRS = new Set(["title", "alt", "value", "label", "placeholder", "tabulator-field"]);
  const URL_ATTRS = new Set(["href", "src", "xlink:href", "action", "formaction", "data", "srcdoc", "poster"]);
  const say = (el, why) => found.push(why + ": " + (el.outerHTML || "").slice(0, 300));
  function check(el) {
    const tag = el.tagName.toUpperCase();
    for (const a of Array.from(el.attributes || [])) {
      const n = a.name.toLowerCase();
      if (n.startsWith("on")) say(el, "event attribute " + n);
      else if (URL_ATTRS.has(n) && /^\s*(javascript|vbscript|data:text\/html)/i.test(a.value)) say(el, "script URL in " + n);
      else if (MARK.test(a.value) && !TEXT_ATTRS.has(n) && !n.startsWith("data-") && !n.startsWith("aria-"))
        say(el, "payload in attribute " + n);
    }
    if (["SCRIPT", "STYLE", "B", "I", "A", "IFRAME", "OBJECT", "EMBED", "BASE", "FORM", "CIRCLE"].includes(tag)
        && MARK.test(el.textContent || "")) say(el, "element made from a payload");
    if (tag === "IMG" && /(^x$)|XSS/.test(el.getAttribute("src") || "")) say(el, "image made from a payload");
  }
  function visit(root) {
    if (root.nodeType === 1) check(root);
    if (root.querySelectorAll) for (const el of root.querySelectorAll("*")) check(el);
  }
  const observer = new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1 || n.nodeType === 11) visit(n);
  });
  const watch = (root) => observer.observe(root, {childList: true, subtree: true});
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    const root = attach.call(this, init);
    watch(root);
    return root;
  };
  watch(document);
  window.__xss_scan = () => {
    const stack = [document];
    while (stack.length) {
      const r = stack.pop();
      for (const el of r.querySelectorAll("*")) { check(el); if (el.shadowRoot) stack.push(el.shadowRoot); }
    }
    return found.slice();
  };
  // The text of a node, shadow roots included (innerText and textContent stop at them), and what
  // inputs hold.
  const deepText = (root) => {
    const out = [], stack = [root];
    while (stack.length) {
      const n = stack.pop();
      if (n.nodeType === 3) { out.push(n.data); continue; }
      if (n.nodeType !== 1 && n.nodeType !== 11) continue;
      if (n.nodeType === 1 && ["STYLE", "SCRIPT"].includes(n.tagName)) continue;
      if (n.nodeType === 1 && ["INPUT", "TEXTAREA"].includes(n.tagName)) out.push(n.value || "");
      const kids = [...(n.shadowRoot ? n.shadowRoot.childNodes : []), ...n.childNodes];
      for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]);
    }
    return out.join("\n");
  };
  window.__deep_text = () => deepText(document.body);
  // The deep text of every element matching a selector, anywhere on the page.
  window.__deep_query_text = (selector) => {
    const out = [], stack = [document];
    while (stack.length) {
      const r = stack.pop();
      for (const el of r.querySelectorAll("*")) {
        if (el.matches(selector)) out.push(deepText(el));
        if (el.shadowRoot) stack.push(el.shadowRoot);
      }
    }
    return out;
  };
})();
"""

# Points of every Bokeh plot in view to hover (screen coordinates): a few data points of each glyph
# that has them, and the middle of the frame (images answer anywhere).
PLOT_POINTS_JS = """() => {
  const views = (ALL_BOKEH_VIEWS)();
  const out = [];
  for (const v of views) {
    if (!v.frame || !v.canvas_view || !v.renderer_views) continue;
    const rect = v.canvas_view.el.getBoundingClientRect();
    if (rect.width < 50 || rect.height < 50 || rect.bottom < 0 || rect.top > window.innerHeight) continue;
    const bbox = v.frame.bbox;
    out.push([rect.left + bbox.x + bbox.width / 2, rect.top + bbox.y + bbox.height / 2]);
    for (const rv of v.renderer_views.values()) {
      const g = rv.glyph;
      if (!g || !g.sx || !g.sy) continue;
      const n = g.sx.length;
      for (const i of [0, Math.floor(n / 2), n - 1]) {
        const x = rect.left + g.sx[i], y = rect.top + g.sy[i];
        if (isFinite(x) && isFinite(y)) out.push([x, y]);
      }
    }
  }
  return out;
}""".replace("ALL_BOKEH_VIEWS", ALL_BOKEH_VIEWS_JS)

# The texts of every Bokeh title and axis label (they are drawn on the canvas), without the word joiners
# that keep Bokeh from reading TeX delimiters (app/display/text.py plot_text: they are invisible).
PLOT_LABELS_JS = """() => {
  const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    if (m.type === 'Title' && m.text) out.push(String(m.text));
    if (m.axis_label != null) out.push(String(m.axis_label));
    if (m.type === 'LegendItem' && m.label) out.push(String(m.label.value ?? m.label));
  }
  return out.map(t => t.replace(/\u2060/g, ''));
}"""

# Texts Bokeh draws as mathematics (TeX between $$...$$ in a title or an axis label): a payload's must
# be drawn as the text it is.
MATH_TEXT_JS = """() => {
  const out = [], seen = new Set();
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    if (v.model && ['TeX', 'MathML', 'Ascii'].includes(v.model.type)) out.push(v.model.type + ': ' + v.model.text);
    for (const c of (v.children_views ? v.children_views() : [])) walk(c);
  };
  for (const v of Object.values(window.Bokeh.index)) walk(v);
  return out;
}"""

# Hover tooltips are lists of (label, field) pairs: labels are drawn as text by Bokeh, a string or a
# template would be HTML. Returns the ones that are not.
HTML_TOOLTIPS_JS = """() => {
  const bad = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    if (m.type !== 'HoverTool' || m.tooltips == null) continue;
    if (!Array.isArray(m.tooltips)) { bad.push(String(m.tooltips)); continue; }
    for (const [label, value] of m.tooltips) if (!/^\\s*(\\$[\\w.]+|@\\{[^}]*\\}|@\\w+)(\\{[^}]*\\})?\\s*$/.test(value)) bad.push(label + ' -> ' + value);
  }
  return bad;
}"""


def normal(text: str) -> str:
    """Whitespace as a browser may lay it out (line breaks kept or folded), without the invisible word
    joiners that keep Bokeh from reading TeX in plot labels (app/display/text.py ``plot_text``)."""
    return re.sub(r"\s+", " ", text.replace(WORD_JOINER, ""))


# ------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The processed hostile proposal, the decoy, and the environment to process more."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "exp"
    mockruns.make_proposal(data, PROPOSAL, RUNS, ntrains=20)
    mockruns.make_proposal(data, DECOY, [1], ntrains=5)
    (root / "context.py").write_text(context_code())
    env = {**os.environ, "EXTRA_DATA_DATA_ROOT": str(data), "AMORE_BROKER": "none",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    db, decoy = root / "amore", root / DECOY_FOLDER / "amore"
    for where, proposal in ((db, PROPOSAL), (decoy, DECOY)):
        res = subprocess.run([sys.executable, "-m", "backend.cli", "init", str(where), "--proposal", str(proposal),
                              "--context", str(root / "context.py")], env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([sys.executable, "-m", "backend.cli", "reprocess", f"{RUNS[0]}-{RUNS[-1]}", "--direct"],
                         cwd=db, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    fill_user_fields(db, PROPOSAL, RUNS)
    return {"db": db, "decoy": decoy, "data": data, "root": root}


@pytest.fixture(scope="module")
def servers(hostile):
    """One dashboard per mode, started when first asked for: normal mode serves the decoy too."""
    started: dict[str, DashboardServer] = {}

    def get(mode: str) -> tuple[DashboardServer, str]:
        if mode not in started:
            dbs = [hostile["db"], hostile["decoy"]] if mode == "normal" else [hostile["db"]]
            # Normal mode: the user's name comes from a proxy's header, and is a payload too.
            flags = ["--read-only"] if mode == "read_only" else [
                "--user-header", "X-Forwarded-User", "--context-editors", "*"]
            env = {"AMORE_BROKER": "none", "EXTRA_DATA_DATA_ROOT": str(hostile["data"]), **SIGNED_IN}
            srv = DashboardServer(dbs, *flags, env=env,
                                  log_path=hostile["root"] / f"server-{mode}.log")
            try:
                srv.start()
            except RuntimeError as e:
                pytest.fail(str(e), pytrace=False)
            started[mode] = srv
        srv = started[mode]
        return srv, f"{srv.url}?proposal={PROPOSAL}&" if mode == "normal" else f"{srv.url}?"

    yield get
    for srv in started.values():
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (each test gets its own context)."""
    from playwright.sync_api import sync_playwright

    from tests.infra.browser import launch_chromium

    pw = sync_playwright().start()
    try:
        b = launch_chromium(pw)
    except Exception as e:
        pw.stop()
        pytest.fail(f"Chromium did not start: {e}", pytrace=False)
    yield b
    b.close()
    pw.stop()


class Guarded:
    """A page whose dialogs, console errors and requests to other hosts are recorded, with the
    payload guard installed."""

    def __init__(self, browser, server: DashboardServer, shots: Path, name: str):
        self.ctx = browser.new_context(viewport={"width": 1700, "height": 1000},
                                       extra_http_headers={"X-Forwarded-User": USER})
        self.ctx.add_init_script(GUARD_JS)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(60_000)
        self.origin = f"http://127.0.0.1:{server.port}"
        self.shots, self.name = shots, name
        self.problems: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text[:500]}"))
        self.page.on("pageerror", self._page_error)
        self.page.on("request", self._request)

    def _page_error(self, error) -> None:
        # plotly.js throws this when a figure is removed while it draws (the run panel switching runs
        # as the test clicks cells of another run): a known fault unrelated to the payloads.
        if "reading '_guiEditing'" not in str(error):
            self.problems.append(f"page error: {error}")

    def _dialog(self, dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def _request(self, request) -> None:
        url = request.url
        if url.startswith(("data:", "blob:", "about:")):
            return
        parts = urllib.parse.urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.problems.append(f"request to another host: {url}")
        elif re.search(r"/x$|XSS", urllib.parse.unquote(parts.path)):
            self.problems.append(f"request made by a payload: {url}")

    def check(self, where: str) -> None:
        """Nothing made from a payload so far (observer + a full scan), no dialog, error or foreign request,
        no text drawn as TeX."""
        print(f"{time.monotonic() - T0:7.1f} s  {self.name}: {where}", flush=True)
        found = self.page.evaluate("window.__xss_scan ? window.__xss_scan() : ['guard not installed']")
        math = self.page.evaluate(f"window.Bokeh ? ({MATH_TEXT_JS})() : []")
        problems = self.problems + found + [f"drawn as mathematics: {m}" for m in math]
        if problems:
            self.screenshot(f"FAILED-{where}")
        assert not problems, f"{where}:\n" + "\n".join(dict.fromkeys(problems))

    def text(self, selector: str | None = None) -> str:
        """What the page (or the elements matching ``selector``) shows, shadow roots included."""
        if selector is None:
            return normal(self.page.evaluate("window.__deep_text()"))
        return normal("\n".join(self.page.evaluate("(s) => window.__deep_query_text(s)", selector)))

    def hover_all(self, selector: str) -> None:
        for el in self.page.locator(selector).all():
            if el.is_visible():
                el.hover()

    def assert_literal(self, keys, where: str, text: str | None = None) -> None:
        """Each payload of ``keys`` is shown as the literal text it is."""
        text = normal(text) if text is not None else self.text()
        missing = [k for k in keys if normal(PAYLOADS[k]) not in text]
        if missing:
            self.screenshot(f"FAILED-literal-{where}")
        assert not missing, f"{where}: not shown as literal text: {missing}"

    def screenshot(self, what: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{self.name}-{what}.png"))

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def guarded(browser, tmp_path_factory, request):
    made: list[Guarded] = []
    shots = tmp_path_factory.getbasetemp() / "hostile-screenshots"
    shots.mkdir(exist_ok=True)

    def make(server: DashboardServer) -> Guarded:
        g = Guarded(browser, server, shots, re.sub(r"\W", "_", request.node.name))
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def wait_for(pred, timeout: float = 15.0, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


def hover_plots(g: Guarded) -> list[str]:
    """Hover data points of every Bokeh plot on the page, one plot scrolled into view at a time;
    returns the texts of the hover tooltips seen."""
    page = g.page
    seen: list[str] = []
    views = f"({ALL_BOKEH_VIEWS_JS})().filter(v => v.frame && v.canvas_view)"
    n = page.evaluate(f"() => {views}.length")
    for i in range(n):
        page.evaluate(f"(i) => {views}[i].canvas_view.el.scrollIntoView({{block: 'center'}})", i)
        time.sleep(0.1)
        for x, y in page.evaluate(PLOT_POINTS_JS)[:4]:
            page.mouse.move(x, y)
            page.mouse.move(x + 1, y)
            wait_for(lambda: any(page.evaluate("window.__deep_query_text('.bk-tooltip-content')")),
                     timeout=0.3, interval=0.05)
            seen.extend(t for t in page.evaluate("window.__deep_query_text('.bk-tooltip-content')") if t.strip())
    page.mouse.move(1, 1)
    return seen


def open_tab(g: Guarded, base: str, slug: str) -> None:
    g.page.goto(f"{base}page={slug}")


# ---------------------------------------------------------------------------------------------- tests

def numeric_title(key: str) -> str:
    return f"{PAYLOADS[key]} #num"


@pytest.mark.parametrize("mode", MODES)
def test_run_table_headers_cells_panel_and_controls(servers, guarded, mode):
    srv, base = servers(mode)
    g = guarded(srv)
    page = g.page
    page.goto(f"{base}page=table")
    page.wait_for_selector(".tabulator-row .tabulator-cell[tabulator-field='run']", timeout=60_000)
    g.check("table opened")
    g.assert_literal(KEYS, "run table cells (comments, strings, units, user values)")
    if mode == "normal":
        assert USER in g.text(), "the user's name in the header"
    g.screenshot("table")

    # Every header and group header, hovered: its tooltip is the title, units, description and tags as text.
    find = f"() => ({ALL_BOKEH_VIEWS_JS})().find(v => v.tabulator && v.el.closest && 1).tabulator"
    fields = page.evaluate(f"""() => {{ const t = ({find})(); t.options.tooltipDelay = 0;
        return t.getColumns().map(c => c.getField()).filter(f => f && f !== '_index') }}""")
    assert len(fields) > 4 * len(KEYS), fields
    tips: dict[str, str] = {}

    def show_column(field: str) -> list[float]:
        """Scroll the table to a column (columns are drawn when in view); its header's middle."""
        page.evaluate(f"""(field) => {{ const t = ({find})(); const col = t.getColumn(field)._column;
            const holder = t.rowManager.element;
            holder.scrollLeft = Math.max(0, col.getLeftOffset() - holder.clientWidth / 2) }}""", field)
        header = page.locator(f".tabulator-col[tabulator-field='{field}']")
        assert wait_for(lambda: header.count() > 0 and header.first.is_visible(), timeout=10), field
        box = header.first.bounding_box()
        return [box["x"] + box["width"] / 2, box["y"] + min(box["height"] / 2, 12)]

    def shown_tooltip() -> str:
        return "\n".join(page.locator(".tabulator-tooltip").all_text_contents())

    for field in fields:
        # A header's tooltip names its variable (fixed columns name none): wait for that one, the
        # previous header's may linger.
        for _ in range(3):
            box = show_column(field)
            page.mouse.move(1, 1)
            page.mouse.move(*box)
            page.mouse.move(box[0] + 1, box[1])
            if wait_for(lambda f=field: f"name: {f}" in (t := shown_tooltip()) or (t and "name: " not in t),
                        timeout=2, interval=0.05):
                break
        tips[field] = shown_tooltip()
    for key in KEYS:
        assert normal(PAYLOADS[key]) in normal(tips.get(f"num_{key}", "")), (key, tips.get(f"num_{key}"))
        assert normal(user_title(key)) in normal(tips.get(f"uv_{key}", "")), (key, tips.get(f"uv_{key}"))
    g.check("headers hovered")

    # Group headers (titles with '/') are hovered too.
    groups = page.locator(".tabulator-col-group > .tabulator-col-content")
    for i in range(min(groups.count(), 20)):
        if groups.nth(i).is_visible():
            groups.nth(i).hover()
    # Thumbnails and error marks.
    show_column("picture")
    thumb = page.locator("img.dmn-thumb").first
    thumb.wait_for()
    thumb.hover()
    page.locator(".dmn-thumb-preview").wait_for(state="visible")
    g.check("thumbnail and group headers hovered")

    # The run panel beside the table: values, errors (opened) and plots of run 1.
    show_column("start_time")
    page.locator(".tabulator-cell[tabulator-field='run']", has_text=re.compile(r"^\s*1\s*$")).click()
    panel = page.locator(".dmn-run-panel")
    panel.locator(".damnit-scalars").wait_for()
    panel.get_by_text(re.compile(r"variable\(s\) failed or were skipped")).click()
    panel.locator(".damnit-errors").wait_for(state="visible")
    assert wait_for(lambda: page.locator(".dmn-panel-run-1.damnit-plot-ready").count() >= 8, timeout=30)
    g.assert_literal(KEYS, "run panel (string values, titles, errors, skips)",
                     g.text(".dmn-run-panel"))
    g.screenshot("run-panel")
    tips_seen = hover_plots(g)
    assert tips_seen, "no hover tooltip appeared on the run panel's plots"
    g.check("run panel plots hovered")

    # The column and tag choosers list titles and tags as text.
    page.get_by_text("Columns", exact=True).click()
    chooser = page.locator(".choices >> visible=true").first
    chooser.wait_for()
    chooser.click()
    options = g.text(".choices__list--dropdown .choices__item")
    g.assert_literal(SHORT, "column chooser options", options)
    page.keyboard.press("Escape")
    # A row filter on a string column: its values are payloads, and so is the filter's chip.
    page.get_by_text("Row filters", exact=True).click()
    page.get_by_label("Filter column").select_option(label="String img")
    g.check("choosers opened")
    values = page.locator(".bk-input-group").filter(has=page.locator("label", has_text=re.compile(r"^\s*values\s*$"))
                                                     ).locator(".choices")  # the filter's values
    values.wait_for()
    values.click()
    option = page.locator(".choices__list--dropdown .choices__item--selectable >> visible=true").filter(
        has_text="XSS01").first
    option.click()
    page.get_by_role("button", name="Apply filter").click()
    chip = page.get_by_role("button", name=re.compile(r"^✕ "))
    chip.wait_for()
    assert PAYLOADS["img"] in chip.inner_text()
    g.check("row filter applied")
    chip.click()
    chip.wait_for(state="detached")

    def edit(run: int, field: str, text: str) -> None:
        """Type into a cell's editor (a click while the page is redrawn can be lost: click again)."""
        show_column(field)
        # The run's cell of that column, found through Tabulator (the run column may be out of view).
        page.evaluate(f"""([run, field]) => {{ const t = ({find})();
            for (const el of document.querySelectorAll('[data-hostile-edit]')) el.removeAttribute('data-hostile-edit');
            const row = t.getRows().find(r => String(r.getData().run).replace(/<[^>]*>/g, '').trim() == String(run));
            row.getCell(field).getElement().setAttribute('data-hostile-edit', '1') }}""", [run, field])
        cell = page.locator("[data-hostile-edit]")
        for _ in range(5):
            cell.click()
            if wait_for(lambda: cell.locator("input").count() > 0, timeout=2):
                break
        cell.locator("input").fill(text)
        cell.locator("input").press("Enter")

    if mode == "normal":
        # Users type payloads: a run comment, a bad value of a number variable (its error is a
        # notification), a new user variable.
        edit(2, "comment", PAYLOADS["svg"] + " typed")
        page.locator(".tabulator-cell[tabulator-field='comment']").get_by_text(PAYLOADS["svg"] + " typed").wait_for()
        edit(2, "uv_number", PAYLOADS["img"])
        page.locator(".dmn-status [data-level='error']").wait_for()
        page.locator(".notyf__message").first.wait_for()
        g.assert_literal(["img"], "error notification",
                         g.text(".notyf__message"))
        page.get_by_text("Add user variable", exact=True).click()
        page.get_by_label("Title *").fill(PAYLOADS["script"] + " made here")
        page.get_by_label("Description").fill(PAYLOADS["attr"])
        page.get_by_role("button", name="Create variable").click()
        page.locator(".dmn-status").get_by_text(re.compile("created")).wait_for()
        g.check("typed payloads")
    g.check("run table done")


@pytest.mark.parametrize("mode", MODES)
def test_inspect_every_card(servers, guarded, mode):
    srv, base = servers(mode)
    g = guarded(srv)
    page = g.page
    open_tab(g, base, "inspect")
    # The newest run (every run has the payloads): switching runs while plotly draws can make plotly.js
    # throw on a removed figure, which is not what this test is about.
    page.locator(".damnit-inspect-title").get_by_text(f"Run {RUNS[-1]}", exact=True).wait_for()
    cards = page.locator(".damnit-var-card")
    assert wait_for(lambda: cards.count() >= 9 and page.locator(".damnit-var-card .damnit-plot-ready").count()
                    == cards.count(), timeout=60), (cards.count(), page.locator(".damnit-plot-ready").count())
    page.get_by_text(re.compile(r"variable\(s\) failed or were skipped")).click()
    page.locator(".damnit-errors").wait_for(state="visible")
    g.assert_literal(KEYS, "inspect (values, titles, errors, skips)")
    g.screenshot("inspect")
    g.check("inspect opened")
    # Every Dataset variable shown in turn.
    dataset = page.locator(".damnit-var-payload_dataset select")
    for label in dataset.locator("option").all_text_contents():
        dataset.select_option(label=label)
        time.sleep(0.3)
    # Frames of a 3-D value: picked by a slider named like a payload (Panel puts that name into HTML), or
    # from a list of payloads.
    g.assert_literal(["img"], "frame slider", g.text(".damnit-var-cube"))
    g.assert_literal(["script", "jslink"], "frame list", g.text(".damnit-var-shots"))
    page.locator(".damnit-var-shots select").select_option(index=1)
    g.check("frames")
    # The DataFrame's headers hovered: their titles and tooltips are text.
    frame = page.locator(".damnit-var-payload_frame")
    frame.locator(".tabulator-col:not([tabulator-field='_index'])").first.wait_for()
    g.assert_literal(["img", "script", "jslink", "entity", "bokeh", "css", "svg"], "DataFrame headers",
                     g.text(".damnit-var-payload_frame"))
    g.hover_all(".damnit-var-payload_frame .tabulator-col")
    g.check("cards, dataset, frame")
    assert not page.evaluate(HTML_TOOLTIPS_JS)
    tips = hover_plots(g)
    assert tips, "no hover tooltip appeared on the Inspect page's plots"
    labels = page.evaluate(PLOT_LABELS_JS)
    g.assert_literal(["img", "script", "bokeh", "template", "attr"], "plot titles and axis labels", "\n".join(labels))
    g.check("inspect plots hovered")


@pytest.mark.parametrize("mode", MODES)
def test_plots_with_payload_axes(servers, guarded, mode):
    srv, base = servers(mode)
    g = guarded(srv)
    page = g.page
    open_tab(g, base, "plots")
    page.get_by_text(re.compile(r"\d+ runs plotted")).wait_for(timeout=60_000)
    y = page.get_by_label("Y", exact=True)
    x = page.get_by_label("X", exact=True)
    options = "\n".join(y.locator("option").all_text_contents())
    g.assert_literal(SHORT, "Y axis options", options)
    for ykey, xkey in [("img", "template"), ("bokeh", "attr"), ("script", "entity"), ("long", "ctrl")]:
        y.select_option(label=numeric_title(ykey))
        x.select_option(label=numeric_title(xkey))
        wanted = normal(f"{numeric_title(ykey)} vs. {numeric_title(xkey)}")
        assert wait_for(lambda w=wanted: any(w in normal(t) for t in page.evaluate(PLOT_LABELS_JS)), timeout=30), \
            (ykey, xkey)
        labels = "\n".join(page.evaluate(PLOT_LABELS_JS))
        g.assert_literal([ykey, xkey], f"summary plot of {ykey} vs {xkey}", labels)
        tips = hover_plots(g)
        assert tips, f"no tooltip on the summary plot of {ykey} vs {xkey}"
        g.assert_literal([ykey], "summary plot tooltip", "\n".join(tips))
        g.check(f"summary {ykey} vs {xkey}")
    page.get_by_role("button", name="Histogram").click()
    assert wait_for(lambda: any("distribution over runs" in t for t in page.evaluate(PLOT_LABELS_JS)))
    g.assert_literal(["long"], "histogram title", "\n".join(page.evaluate(PLOT_LABELS_JS)))
    g.screenshot("plots")
    # Per-run overlay of a payload-named array.
    array = page.get_by_label("Array (Y)")
    array.select_option(label=[t for t in array.locator("option").all_text_contents() if t.startswith("Line 2")][0])
    page.get_by_role("button", name="Plot selected runs").click()
    page.locator(".damnit-overlay-plot canvas").first.wait_for()
    assert wait_for(lambda: any("per run" in t for t in page.evaluate(PLOT_LABELS_JS)))
    hover_plots(g)
    assert not page.evaluate(HTML_TOOLTIPS_JS)
    g.check("plots page")


@pytest.mark.parametrize("mode", MODES)
def test_processing_log_and_jobs(servers, guarded, hostile, mode):
    srv, base = servers(mode)
    g = guarded(srv)
    page = g.page
    open_tab(g, base, "processing")
    page.locator(".damnit-log").wait_for()
    page.get_by_label("Processing log of run").select_option(label="1")
    assert wait_for(lambda: "XSS01" in g.text(".damnit-log"), timeout=30)
    g.assert_literal(KEYS, "processing log", g.text(".damnit-log"))
    g.screenshot("processing")
    g.check("log viewer")
    if mode == "normal":
        runs = page.get_by_placeholder("e.g. 1-10, 15  or  all")
        runs.fill(PAYLOADS["img"])
        runs.press("Enter")
        page.get_by_text("bad run number '<img'", exact=False).wait_for()
        g.check("bad run selection")
        runs.fill("1")
        runs.press("Enter")
        page.get_by_text("1 runs selected").wait_for()
        page.locator(".choices >> visible=true").first.click()
        options = g.text(".choices__list--dropdown .choices__item")
        g.assert_literal(SHORT, "variables to reprocess", options)
        page.keyboard.press("Escape")
        page.get_by_role("button", name="This machine").click()
        page.get_by_role("button", name="Reprocess").click()
        page.locator(".damnit-jobs").get_by_text("DONE").wait_for(timeout=120_000)
        assert USER in g.text(".damnit-jobs"), "the user's name in the job list"
        g.hover_all(".damnit-jobs .tabulator-col")
        g.check("reprocessed from the page")


@pytest.mark.parametrize("mode", MODES)
def test_comments(servers, guarded, mode):
    srv, base = servers(mode)
    g = guarded(srv)
    page = g.page
    open_tab(g, base, "comments")
    table = page.locator(".damnit-comments")
    table.locator(".tabulator-row").first.wait_for(timeout=60_000)
    g.assert_literal(KEYS, "standalone comments")
    g.hover_all(".damnit-comments .tabulator-col")
    g.screenshot("comments")
    g.check("comments")
    if mode == "normal":
        typed = PAYLOADS["textarea"] + " published"
        page.locator(".damnit-new-comment textarea").fill(typed)
        page.get_by_role("button", name="Publish").click()
        table.get_by_text(typed).wait_for()
        g.check("comment published")


@pytest.mark.parametrize("mode", MODES)
def test_context_file_messages(servers, guarded, mode):
    srv, base = servers(mode)
    g = guarded(srv)
    page = g.page
    open_tab(g, base, "context_editor")
    page.locator(".damnit-context-editor .ace_content").wait_for(timeout=60_000)
    g.check("context editor")
    if mode == "normal":
        message = " ".join(PAYLOADS[k] for k in SHORT if k not in ("ctrl",))
        code = f"from damnit_ctx import Variable\n\nraise RuntimeError({message!r})\n"
        page.locator(".damnit-context-editor .ace_text-input").focus()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(code)
        page.get_by_role("button", name="Validate").click()
        assert wait_for(lambda: "XSS01" in g.text(".damnit-context-details"), timeout=60)
        g.assert_literal([k for k in SHORT if k != "ctrl"], "context check message", g.text(".damnit-context-details"))
        g.screenshot("context-check")
        g.check("context validated")
    else:
        assert page.get_by_role("button", name="Save").is_disabled()


@pytest.mark.parametrize("mode", MODES)
def test_big_screen(servers, guarded, mode):
    srv, base = servers(mode)
    g = guarded(srv)
    page = g.page
    open_tab(g, base, "bigscreen")
    page.locator(".dmn-bigscreen").wait_for(timeout=60_000)
    page.get_by_text(f"Run {RUNS[-1]}", exact=True).wait_for()
    g.check("big screen tab")
    wanted = ",".join([f"num_{k}" for k in SHORT] + [PAYLOADS["img"]])
    page.goto(f"{base}mode=bigscreen&vars={urllib.parse.quote(wanted)}&plots=image_map,line_3,payload_frame")
    page.locator(".dmn-big-var").first.wait_for(timeout=60_000)
    assert wait_for(lambda: page.locator(".dmn-bigscreen canvas, .dmn-bigscreen .tabulator").count() > 0, timeout=30)
    g.assert_literal(SHORT, "big screen key values")
    g.screenshot("bigscreen")
    hover_plots(g)
    g.check("big screen")


def test_landing_page_and_decoy_folder(servers, guarded, hostile):
    srv, _ = servers("normal")
    g = guarded(srv)
    page = g.page
    page.goto(srv.url)
    page.locator(".damnit-proposals .tabulator-row").first.wait_for(timeout=60_000)
    assert DECOY_FOLDER in g.text()
    g.hover_all(".damnit-proposals .tabulator-col")
    g.check("landing page")
    page.goto(f"{srv.url}?proposal={urllib.parse.quote(PAYLOADS['img'])}")
    page.locator(".damnit-landing-message").wait_for()
    g.assert_literal(["img"], "refusal message")
    page.goto(f"{srv.url}?proposal={DECOY}")
    page.locator(".tabulator").first.wait_for()
    assert DECOY_FOLDER in g.text()
    g.screenshot("decoy")
    g.check("decoy proposal")
