"""``panel serve --plugins app.server.routes``: the dashboard's own HTTP endpoints next to Panel's.

- ``<prefix>/``: the app, ``<prefix>/main``, keeping the query (``/?mode=bigscreen&vars=...`` is the
  address a wall display is given; Panel's own redirect drops the query).
- ``<prefix>/thumbnail/...``: run-table thumbnails (``app/server/thumbnails.py``).
- ``<prefix>/damnit-assets/...``: the files of ``app/assets/`` (browser code loaded by every page).
- ``<prefix>/health``: ``ok`` once the server listens (its proposals are open by then), for launchers,
  proxies and process managers: cheaper than asking for a page, which builds a whole session.
"""

from pathlib import Path

from tornado.web import RequestHandler, StaticFileHandler

from app.server.thumbnails import ThumbnailHandler

ASSETS = Path(__file__).resolve().parents[1] / "assets"
APP = "main"


class RootRedirect(RequestHandler):
    """``<prefix>/`` or ``<prefix>`` → ``<prefix>/main?<the same query>``, as a relative address, so it
    also works behind a proxy that serves the dashboard under another path."""

    def get(self) -> None:
        path = self.request.path
        target = APP if path.endswith("/") else f"{path.rsplit('/', 1)[-1]}/{APP}"
        query = self.request.query
        self.redirect(f"{target}?{query}" if query else target)

    head = get


class Health(RequestHandler):
    """``ok``: the server is up. Says nothing about any proposal."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.write("ok\n")

    head = get


ROUTES = [
    # Before Panel's own root handler: Bokeh adds plugin routes ahead of its top-level ones.
    (r"/?", RootRedirect, {}),
    (r"/thumbnail/([A-Za-z0-9_-]+)/(\d+)/([^/]+)\.png", ThumbnailHandler, {}),
    (r"/damnit-assets/(.*)", StaticFileHandler, {"path": str(ASSETS)}),
    (r"/health", Health, {}),
]
