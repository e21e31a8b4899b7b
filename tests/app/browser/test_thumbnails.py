"""Thumbnails served by URL (``app/server/thumbnails.py``): what the cell HTML says, what the endpoint answers
(cache headers, unknown names), and that with authentication configured only a signed-in browser
gets images. The server tests use the real ``panel_serve.sh`` and Chromium."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from app.live.source import ProposalSource
from app.live.table import TableCell
from app.pages.run_table import cells
from app.pages.run_table.model import get_table_model
from app.server.launcher import DashboardServer
from backend.storage.run_values import BlobKind, Kind
from backend.storage.synthetic import make_database, set_value


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_cell_html_points_at_a_versioned_url_with_a_fixed_size():
    big = _png(300, 150)
    cell = TableCell(kind=Kind.BLOB, value=None, blob=BlobKind.UNTYPED + BlobKind.PNG, attributes={},
                     max_diff=None, provenance=None, timestamp=1.0)
    html = cells.cell_html(cell, big[:cells.BLOB_HEAD], "thumbnail/tok/5/a%20b.png?v=1&x=<>")
    # The shown size fits 100x35 and keeps the aspect ratio, so rows don't jump when images arrive.
    assert "width='70' height='35'" in html and "loading='lazy'" in html
    assert "src='thumbnail/tok/5/a%20b.png?v=1&amp;x=&lt;&gt;'" in html  # escaped like all cell text
    assert "base64" not in html
    inline = cells.cell_html(cell, big)  # no URL: inlined (scaled)
    assert "src='data:image/png;base64," in inline


def test_table_model_thumbnail_versions_follow_the_value(tmp_path):
    db = make_database(tmp_path / "db", proposal=1234, n_runs=3, n_vars=5)
    src = ProposalSource(db, broker="none", start=False)
    model = get_table_model(src)
    key = src.key_for(1234, 2)
    html = model.cell_text(key, "v003")
    url = re.search(r"src='([^']+)'", html)[1]
    assert url.startswith(f"thumbnail/{src.token}/{key}/v003.png?v=")
    png, version = model.thumbnail(key, "v003")
    assert png.startswith(b"\x89PNG") and url.endswith(f"v={version}")
    assert model.thumbnail(key, "v000") is None  # a number, not an image
    assert model.thumbnail(key + 999, "v003") is None

    set_value(db, 2, "v003", _png(400, 100))
    src.poll(force=True)
    png2, version2 = model.thumbnail(key, "v003")
    assert version2 != version
    assert Image.open(io.BytesIO(png2)).size == (200, 50)  # scaled to the cell's box
    assert f"v={version2}" in model.cell_text(key, "v003")


@pytest.fixture
def thumb_db(tmp_path):
    return make_database(tmp_path / "db", proposal=1234, n_runs=5, n_vars=5)


def _first_thumbnail(page) -> str:
    page.set_viewport_size({"width": 2000, "height": 900})
    img = page.locator(".tabulator-cell[tabulator-field='v003'] img.dmn-thumb").first
    img.wait_for(timeout=30000)
    return img.get_attribute("src")


@pytest.mark.browser
def test_endpoint_serves_cacheable_pngs_and_nothing_else(thumb_db, page, tmp_path):
    with DashboardServer([thumb_db], env={"AMORE_BROKER": "none"}, log_path=tmp_path / "srv.log") as srv:
        page.goto(srv.url)
        src = _first_thumbnail(page)
        base = srv.url.rsplit("/", 1)[0] + "/"
        ok = page.request.get(base + src)
        assert ok.status == 200 and ok.headers["content-type"] == "image/png"
        assert ok.body().startswith(b"\x89PNG")
        assert "immutable" in ok.headers["cache-control"]
        stale = page.request.get(base + re.sub(r"v=\w+", "v=0", src))  # an old version: current image
        assert stale.status == 200 and stale.headers["cache-control"] == "no-cache"
        token = src.split("/")[1]
        for bad in ("thumbnail/NotAToken/1/v003.png", src.replace(token, token[::-1]).split("?")[0],
                    f"thumbnail/{token}/1/v000.png", f"thumbnail/{token}/999999/v003.png",
                    f"thumbnail/{token}/1/..%2F..%2Fruns.sqlite.png", "thumbnail/../runs.sqlite"):
            assert page.request.get(base + bad).status == 404, bad


@pytest.mark.browser
def test_with_authentication_signed_in_users_get_thumbnails_and_edits_are_logged(thumb_db, page, chromium_browser, tmp_path):
    """Panel's --basic-auth (the same path as OAuth: the signed-in user is pn.state.user): a stranger's
    request for an image is refused; the signed-in user sees images, edits, and the edit is logged."""
    from tests.app.browser.test_dashboard import cell, db_comment, wait_for
    from tests.app.membership_rule import SIGNED_IN

    with DashboardServer([thumb_db], "--basic-auth", "s3cret-pw", "--cookie-secret", "x" * 32,
                         env={"AMORE_BROKER": "none", **SIGNED_IN}, log_path=tmp_path / "srv.log") as srv:
        page.goto(srv.url)
        page.locator("input[name='username']").fill("alice")
        page.locator("input[name='password']").fill("s3cret-pw")
        page.locator("input[name='password']").press("Enter")
        src = _first_thumbnail(page)
        base = srv.url.rsplit("/", 1)[0] + "/"
        assert page.request.get(base + src).status == 200
        stranger = chromium_browser.new_context()
        try:
            assert stranger.request.get(base + src).status == 403
        finally:
            stranger.close()
        target = cell(page, 2, "comment")
        target.click()
        target.locator("input").fill("checked by alice")
        target.locator("input").press("Enter")
        assert wait_for(lambda: db_comment(thumb_db, 2) == "checked by alice")
        assert wait_for(lambda: "Edit by alice" in srv.log())


@pytest.mark.browser
def test_hovering_a_thumbnail_shows_the_stored_image(thumb_db, page, tmp_path):
    from tests.app.browser.test_dashboard import cell

    big = _png(300, 120)
    set_value(thumb_db, 3, "v003", big)
    with DashboardServer([thumb_db], env={"AMORE_BROKER": "none"}, log_path=tmp_path / "srv.log") as srv:
        page.goto(srv.url)
        _first_thumbnail(page)
        thumb = cell(page, 3, "v003").locator("img.dmn-thumb")
        assert thumb.evaluate("i => i.naturalWidth") <= cells.THUMB_BOX[0]  # the table's image is scaled
        thumb.hover()
        preview = page.locator("img.dmn-thumb-preview")
        preview.wait_for(state="visible", timeout=10000)
        assert "full=1" in preview.get_attribute("src")
        page.wait_for_function("() => document.querySelector('img.dmn-thumb-preview').naturalWidth === 300")
        base = srv.url.rsplit("/", 1)[0] + "/"
        assert page.request.get(base + thumb.get_attribute("src") + "&full=1").body() == big
        page.locator(".tabulator-cell[tabulator-field='run']").first.hover()
        preview.wait_for(state="hidden", timeout=5000)
