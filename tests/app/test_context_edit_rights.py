"""Who may save the context file (code the backend runs): the --context-editors rules, the server-side
guard, the kept previous versions, and one real browser forging a save it is not allowed to make."""

from __future__ import annotations

import asyncio
import re
import stat
import time

import pytest

from app import shell
from app.actions.context_check import HISTORY_DIR, file_fingerprint, keep_previous_version, save_context
from app.config import ServerConfig
from app.live.session import SessionState
from app.live.source import ProposalSource
from app.server.serve import startup_notes
from backend.storage.synthetic import make_database
from tests.infra.browser import ALL_BOKEH_VIEWS_JS

CONTEXT = 'from damnit_ctx import Variable\n\n\n@Variable(title="Answer")\ndef answer(run):\n    return 42\n'
HEADER = ServerConfig(auth="header", user_header="X-Remote-User")


def session_for(cfg: ServerConfig, user: str, monkeypatch, source=None) -> SessionState:
    """The session the shell builds for ``user`` (the header/OAuth lookup needs a live request)."""
    monkeypatch.setattr(shell, "session_user", lambda _cfg: user)
    return shell.make_session(source, cfg)


def assert_refused(session: SessionState, match: str) -> None:
    assert not session.can_edit_context
    with pytest.raises(PermissionError, match=match):
        session.check_context_edit()


def context_notes(cfg: ServerConfig) -> str:
    return "\n".join(n for n in startup_notes(cfg, 5006) if "context file" in n)


# ---------------------------------------------------------------- the rules

def test_loopback_without_auth_lets_the_local_user_edit(monkeypatch):
    for cfg in (ServerConfig(), ServerConfig(address="::1", context_editors=["alice"])):
        s = session_for(cfg, "", monkeypatch)
        assert s.can_write and s.can_edit_context and s.context_edit_denied_reason == ""
        s.check_context_edit()
    assert "anyone on this machine" in context_notes(ServerConfig())


def test_user_header_needs_the_user_in_context_editors(monkeypatch):
    cfg = ServerConfig(auth="header", user_header="X-Remote-User", context_editors=["alice", "bob"])
    alice = session_for(cfg, "alice", monkeypatch)
    assert alice.can_edit_context
    alice.check_context_edit()
    mallory = session_for(cfg, "mallory", monkeypatch)
    assert mallory.can_write  # may comment, but not change the code
    assert_refused(mallory, "mallory may not edit the context file")
    assert_refused(session_for(cfg, "ALICE", monkeypatch), "not in --context-editors")  # names are exact
    assert_refused(session_for(cfg, "", monkeypatch), "signed-in user")
    assert "editable by alice, bob" in context_notes(cfg)


def test_without_context_editors_nobody_may_edit_once_auth_or_network_is_involved(monkeypatch):
    for cfg in (HEADER, ServerConfig(auth="oauth"), ServerConfig(address="0.0.0.0", auth="oauth")):
        s = session_for(cfg, "alice", monkeypatch)
        assert s.can_write
        assert_refused(s, "--context-editors USER")
        assert "nobody may edit it" in context_notes(cfg)
    # Reachable from other machines without authentication: no user, so nobody, whatever the list says.
    open_cfg = ServerConfig(address="0.0.0.0", context_editors=["*"])
    assert_refused(session_for(open_cfg, "", monkeypatch), "signed-in user")
    assert "needs authentication" in context_notes(open_cfg)


def test_star_allows_every_signed_in_user(monkeypatch):
    cfg = ServerConfig(auth="oauth", context_editors=["*"])
    for user in ("alice", "carol@example.org"):
        assert session_for(cfg, user, monkeypatch).can_edit_context
    assert_refused(session_for(cfg, "", monkeypatch), "signed-in user")
    assert "every signed-in user" in context_notes(cfg)


def test_read_only_always_refuses(monkeypatch):
    for cfg in (ServerConfig(read_only=True),
                ServerConfig(read_only=True, auth="header", user_header="X-Remote-User", context_editors=["*"])):
        assert_refused(session_for(cfg, "alice", monkeypatch), "--read-only")
        assert "context file: read-only" in context_notes(cfg)
    # A session made by hand has no right to the context unless given explicitly.
    assert_refused(SessionState(can_write=True), "not allowed")


def test_editor_page_refuses_a_save_on_the_server(tmp_path, monkeypatch):
    """Even if the browser sends the click, a session without the right writes nothing."""
    from app.pages.context_editor import ContextEditor

    db = make_database(tmp_path / "db", n_runs=2, n_vars=2)
    (db / "context.py").write_text(CONTEXT)
    source = ProposalSource(db, broker="none", start=False)
    try:
        cfg = ServerConfig(auth="header", user_header="X-Remote-User", context_editors=["alice"])
        editor = ContextEditor(session_for(cfg, "mallory", monkeypatch, source))
        assert editor.editor.readonly and editor.save_btn.disabled and editor.validate_btn.disabled
        editor.editor.value = "x = 1  # forged\n"
        asyncio.run(editor.on_save())
        asyncio.run(editor.on_overwrite())
        asyncio.run(editor.on_validate())
        assert (db / "context.py").read_text() == CONTEXT
        assert not (db / HISTORY_DIR).exists()
        assert editor.status.object.startswith("Not allowed: mallory may not edit")
    finally:
        source.stop()


# ---------------------------------------------------------------- kept versions

def test_every_save_keeps_the_replaced_version(tmp_path):
    path = tmp_path / "context.py"
    assert keep_previous_version(path, "alice") is None  # nothing to keep yet
    path.write_text("a = 1\n")
    path.chmod(0o666)
    fp = save_context(path, "a = 2\n", file_fingerprint(path), user="alice")
    save_context(path, "a = 3\n", fp, user="bob/../evil")  # same second: a second file, not an overwrite
    save_context(path, "a = 4\n", None, force=True, user="")
    folder = tmp_path / HISTORY_DIR
    kept = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert [p.read_text() for p in kept] == ["a = 1\n", "a = 2\n", "a = 3\n"]
    assert re.fullmatch(r"context-\d{8}T\d{6}Z-alice\.py", kept[0].name)
    assert kept[1].name.endswith("-bob_.._evil.py") and kept[2].name.endswith("-local.py")
    assert all(p.parent == folder for p in kept)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in kept} == {0o600}
    assert path.read_text() == "a = 4\n" and stat.S_IMODE(path.stat().st_mode) == 0o666
    # Without a user (not from the editor) nothing is kept, as before.
    save_context(path, "a = 5\n", file_fingerprint(path))
    assert len(list(folder.iterdir())) == 3


# ---------------------------------------------------------------- a real browser

FIND_VIEWS = ALL_BOKEH_VIEWS_JS
# What a hand-made request would do: put code into the editor's model and fire the Save button's click
# event directly (a disabled button in the page is no guard).
FORGE_CODE = "(args) => { const views = eval(args[0])(); " \
             "views.find(v => (v.model.css_classes || []).includes('damnit-context-editor')).model.code = args[1]; }"
FORGE_CLICK = "(find) => { eval(find)().find(v => (v.model.css_classes || []).includes('damnit-save')).click(); }"


def test_browser_save_refused_for_a_header_user_not_in_context_editors(tmp_path, chromium_browser):
    from app.server.launcher import DashboardServer

    db = make_database(tmp_path / "db", n_runs=3, n_vars=2)
    ctx = db / "context.py"
    ctx.write_text(CONTEXT)
    from tests.app.membership_rule import SIGNED_IN

    srv = DashboardServer([db], "--user-header", "X-Remote-User", "--context-editors", "alice",
                          env={"AMORE_BROKER": "none", **SIGNED_IN}, log_path=tmp_path / "server.log")
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        assert "context file: editable by alice" in srv.log()

        def forge_save(user: str, code: str):
            pg = chromium_browser.new_context(extra_http_headers={"X-Remote-User": user}).new_page()
            pg.set_default_timeout(30_000)
            pg.goto(srv.url + "?page=context_editor")
            pg.locator(".damnit-context-editor .ace_content").wait_for()
            pg.get_by_text("Answer").first.wait_for()  # the file is loaded into the editor
            pg.evaluate(FORGE_CODE, [FIND_VIEWS, code])
            time.sleep(0.3)  # the model change goes out before the click
            pg.evaluate(FORGE_CLICK, FIND_VIEWS)
            return pg

        mallory = forge_save("mallory", CONTEXT + "\nimport os  # forged by mallory\n")
        mallory.get_by_text("Read-only: mallory may not edit the context file (not in --context-editors)").wait_for()
        mallory.locator(".damnit-context-status").get_by_text(
            re.compile("Not allowed: mallory may not edit")).wait_for()
        assert ctx.read_text() == CONTEXT
        assert not (db / HISTORY_DIR).exists()
        assert "Refused to save" in srv.log() and "for mallory" in srv.log()

        # The same forged request from an editor goes through: the refusal above was the server's doing.
        new = CONTEXT.replace("return 42", "return 43")
        alice = forge_save("alice", new)
        alice.locator(".damnit-context-status").get_by_text(re.compile("^Saved")).wait_for(timeout=60_000)
        assert ctx.read_text() == new
        [kept] = (db / HISTORY_DIR).iterdir()
        assert kept.name.endswith("-alice.py") and kept.read_text() == CONTEXT
        assert "saved by alice" in srv.log()
    finally:
        srv.stop()
