"""The run table's thumbnails served by URL (routed in ``app/routes.py``).

Inlined as data URIs, a page of a big proposal carried hundreds of images in its first message and
the browser decoded all of them before the table was usable. Served here, each ``<img loading=lazy>``
is fetched only when it scrolls into view, and cached by the browser (the URL changes with the image).

``GET <prefix>/thumbnail/<source token>/<run key>/<variable>.png?v=<version>[&full=1]``: ``full`` gives
the image as stored, for the preview shown on hover (``app/assets/thumbnail_preview.js``). The token is a
random name of a database this server already has open (``ProposalSource.token``), so a URL can neither
name a path nor open anything. Reads follow the page's rules: with authentication configured (OAuth,
``--basic-auth``, ``--user-header``), only a signed-in member of the proposal gets images.
"""

from __future__ import annotations

from tornado.ioloop import IOLoop
from tornado.web import HTTPError, RequestHandler

from app.access import may_see
from app.config import get_config
from app.live.source import source_by_token
from app.pages.run_table.model import get_table_model

IMMUTABLE = "private, max-age=31536000, immutable"


class ThumbnailHandler(RequestHandler):
    """One cell's PNG thumbnail, scaled for the table."""

    def get_current_user(self):
        provider = getattr(self.application, "auth_provider", None)
        if provider is None or provider.get_user is None:
            return "default_user"  # no authentication configured: the page is open too
        return provider.get_user(self)

    async def prepare(self) -> None:
        provider = getattr(self.application, "auth_provider", None)
        if provider is not None and provider.get_user_async is not None:
            self.current_user = await provider.get_user_async(self)

    def _user_name(self, cfg) -> str:
        """The signed-in user, found the way the pages find it (app/shell.py ``session_user``)."""
        if cfg.auth == "header" and cfg.user_header:
            return self.request.headers.get(cfg.user_header, "")
        user = self.current_user
        return user.decode() if isinstance(user, bytes) else str(user or "")

    async def get(self, token: str, key: str, name: str) -> None:  # path arguments arrive URL-decoded
        if not self.current_user:
            raise HTTPError(403, "sign in to see thumbnails")
        source = source_by_token(token)
        if source is None:
            raise HTTPError(404)
        cfg = get_config()
        if not may_see(cfg, self._user_name(cfg), source.proposal, source.db_dir):
            raise HTTPError(403, "not a member of this proposal")
        model = get_table_model(source)
        full = self.get_argument("full", "") == "1"
        # Scaling a large thumbnail takes milliseconds: keep it off the server's event loop.
        found = await IOLoop.current().run_in_executor(None, lambda: model.thumbnail(int(key), name, full=full))
        if found is None:
            raise HTTPError(404)
        png, version = found
        self.set_header("Content-Type", "image/png")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", IMMUTABLE if self.get_argument("v", "") == version else "no-cache")
        self.finish(png)
