"""``panel serve --plugins app.server.routes``: the dashboard's own HTTP endpoints next to Panel's.

- ``<prefix>/thumbnail/...``: run-table thumbnails (``app/thumbnails.py``).
- ``<prefix>/damnit-assets/...``: the files of ``app/assets/`` (browser code loaded by every page).
"""

from pathlib import Path

from tornado.web import StaticFileHandler

from app.server.thumbnails import ThumbnailHandler

ASSETS = Path(__file__).resolve().parents[1] / "assets"

ROUTES = [
    (r"/thumbnail/([A-Za-z0-9_-]+)/(\d+)/([^/]+)\.png", ThumbnailHandler, {}),
    (r"/damnit-assets/(.*)", StaticFileHandler, {"path": str(ASSETS)}),
]
