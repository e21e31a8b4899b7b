"""``panel_serve.sh``: start the dashboard with safe defaults.

Parses the command line, resolves the databases (only those can be opened from a browser), builds the
demo proposal when asked, says at start-up who may write and who may edit the context file, then runs
``panel serve`` on ``app/server/main.py``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from app.config import ENV_VAR, LOOPBACK, ServerConfig, resolve_database, zone, zone_label
from app.server.demo import KEEP_RUNS, Demo
from backend.base.messages import quiet_client_connection_logs

SERVER_DIR = Path(__file__).resolve().parent
REPO = SERVER_DIR.parents[1]
TEMPLATES = SERVER_DIR / "templates"
AUTH_FLAGS = ("--oauth-", "--basic-auth", "--cookie-secret", "--basic-login-template", "--logout-template",
              "--login-endpoint", "--logout-endpoint", "--auth-template")
AUTH_SWITCHES = ("--oauth-optional", "--oauth-refresh-tokens")  # `panel serve` flags without a value
AUTH_LISTS = ("--oauth-guest-endpoints",)                       # ... and with any number of values


def split_auth_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(ours, auth): the `panel serve` authentication options, with their values, passed on unchanged.

    Separated before parsing ours, so ``--basic-auth PASSWORD`` is not taken for a database folder."""
    ours: list[str] = []
    auth: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        flag = arg.split("=", 1)[0]
        if not flag.startswith(AUTH_FLAGS):
            ours.append(arg)
            continue
        auth.append(arg)
        if "=" in arg or flag in AUTH_SWITCHES:
            continue
        while i < len(argv) and not argv[i].startswith("--"):
            auth.append(argv[i])
            i += 1
            if flag not in AUTH_LISTS:
                break
    return ours, auth


def own_auth_pages(auth: list[str]) -> list[str]:
    """``panel serve`` options giving our sign-in, signed-out and sign-in error pages, for those the user
    did not choose: Panel's own fetch a logo, an icon and fonts from the internet."""
    given = {a.split("=", 1)[0] for a in auth}
    if not auth:
        return []
    pages = [("--logout-template", "logout.html"), ("--auth-template", "error.html")]
    if "--basic-auth" in given:
        pages.append(("--basic-login-template", "login.html"))
    return [arg for flag, name in pages if flag not in given for arg in (flag, str(TEMPLATES / name))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="panel_serve.sh",
        description="Serve the DAMNIT run table (Panel) for one or more proposals.",
        epilog="Any --oauth-*/--basic-auth/--cookie-secret option is passed to `panel serve` and makes edits "
               "require a signed-in user. Behind a reverse proxy that authenticates users, pass "
               "--user-header NAME (e.g. X-Forwarded-User) and make sure only the proxy can reach this port.")
    p.add_argument("databases", nargs="*", metavar="PROPOSAL_OR_DB_DIR",
                   help="DAMNIT folders (with runs.sqlite) or proposal numbers; none = pick by proposal number")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--prefix", default="", help="URL prefix, e.g. /damnit when behind a reverse proxy")
    p.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="extra origin allowed to connect (repeatable; needed behind a proxy)")
    p.add_argument("--read-only", action="store_true", help="no edit controls; the server refuses all writes")
    p.add_argument("--user-header", default="",
                   help="trusted reverse-proxy header holding the authenticated user name")
    p.add_argument("--context-editors", default="", metavar="USERS",
                   help="comma-separated signed-in users who may save the context file (code the backend runs), "
                        "or '*' for every signed-in user; needed whenever auth is configured or the address is "
                        "not loopback (default: nobody then)")
    p.add_argument("--demo", action="store_true",
                   help="build a demo proposal from mock runs and keep adding runs (first-time tour)")
    p.add_argument("--demo-dir", default=None, help="where the demo lives (default ~/.cache/damnit-demo)")
    p.add_argument("--demo-interval", type=float, default=8.0, help="seconds between demo runs (default 8)")
    p.add_argument("--demo-keep-runs", type=int, default=KEEP_RUNS, metavar="N",
                   help=f"keep the data files of the newest N demo runs only, about 2.5 MB each (default {KEEP_RUNS}; "
                        "0 = keep all); older runs stay in the table")
    p.add_argument("--timezone", default="", metavar="ZONE",
                   help="time zone of every time shown or exported, e.g. Europe/Berlin or UTC "
                        "(default: this machine's zone)")
    p.add_argument("--num-threads", type=int, default=None, help="Panel worker threads (default: none)")
    p.add_argument("--num-procs", type=int, default=1, metavar="N",
                   help="server processes sharing the port (each with its own copy of the open proposals and "
                        "its own Kafka subscription; a crashed process is restarted); default 1")
    p.add_argument("--unload-after", type=float, default=600.0, metavar="SECONDS",
                   help="close a proposal no session has used for this long (its memory and Kafka subscription "
                        "are freed; it reopens on the next visit); default 600, 0 = never")
    p.add_argument("--show", action="store_true", help="open a browser")
    return p


def startup_notes(cfg: ServerConfig, port: int) -> list[str]:
    host = f"[{cfg.address}]" if ":" in cfg.address else cfg.address
    url = f"http://{'localhost' if cfg.address in LOOPBACK else host}:{port}{cfg.prefix or ''}/"
    notes = [f"DAMNIT dashboard at {url}"]
    for d in cfg.databases:
        notes.append(f"  serving {d}")
    if not cfg.databases:
        notes.append("  no database given: open proposals by number (official DAMNIT folders only)")
    if cfg.read_only:
        notes.append("  read-only: no edit controls, all writes refused")
    elif cfg.auth == "oauth":
        notes.append("  edits need a signed-in user (Panel authentication is configured)")
    elif cfg.auth == "header":
        notes.append(f"  edits need a user name in the {cfg.user_header!r} header from your reverse proxy; "
                     "anyone who can reach this port directly could forge it")
    elif not cfg.loopback:
        notes.append(f"  WARNING: listening on {cfg.address} (reachable from other machines) without --read-only "
                     "and without authentication: the dashboard is VIEW-ONLY for everybody. Configure "
                     "--oauth-provider ... or --user-header to allow edits, or pass --read-only to silence this.")
    else:
        notes.append("  edits allowed for anyone on this machine (loopback only)")
    notes.append("  context file: " + context_editors_note(cfg))
    notes.append(f"  times shown in {zone_label(cfg.tz)}" + ("" if cfg.timezone else " (this machine's zone; "
                                                                "--timezone ZONE to choose)"))
    return notes


def context_editors_note(cfg: ServerConfig) -> str:
    """Who may save the context file, for the start-up notes."""
    if cfg.read_only:
        return "read-only"
    if not cfg.writes_need_user:
        return "editable by anyone on this machine (loopback, no authentication)"
    if cfg.auth == "none":
        return ("nobody may edit it: that needs authentication (--oauth-*/--basic-auth or --user-header) "
                "and --context-editors")
    if not cfg.context_editors:
        return ("nobody may edit it in the browser (it is code the backend runs); "
                "allow users with --context-editors USER,... or '*'")
    if "*" in cfg.context_editors:
        return "editable by every signed-in user (--context-editors '*')"
    return "editable by " + ", ".join(cfg.context_editors) + " (when signed in)"


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    ours, extra = split_auth_args(list(sys.argv[1:] if argv is None else argv))
    args, unknown = parser.parse_known_args(ours)
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    if args.demo_keep_runs < 0:
        parser.error(f"--demo-keep-runs must be 0 (keep all) or more, got {args.demo_keep_runs}")
    if args.prefix and not args.prefix.startswith("/"):
        parser.error(f"--prefix must start with '/', got {args.prefix!r}")
    if args.timezone:
        try:
            zone(args.timezone)
        except ValueError as e:
            parser.error(f"--timezone: {e}")

    demo = None
    databases: list[str] = []
    if args.demo:
        demo = Demo(args.demo_dir, interval=args.demo_interval, keep_runs=args.demo_keep_runs)
        # Ctrl-C reaches the demo's broker too: its clients would log every retry until they stop.
        quiet_client_connection_logs()
        databases.append(str(demo.prepare()))
    for d in args.databases:
        try:
            databases.append(str(resolve_database(d)))
        except ValueError as e:
            parser.error(str(e))

    auth = "none"
    if any(a.startswith(AUTH_FLAGS[:2]) for a in extra):
        auth = "oauth"
    elif args.user_header:
        auth = "header"
    cfg = ServerConfig(databases=list(dict.fromkeys(databases)), read_only=args.read_only, address=args.address,
                       prefix=args.prefix.rstrip("/"), auth=auth, user_header=args.user_header,
                       allow_lookup=not databases, demo=args.demo,
                       context_editors=[u.strip() for u in args.context_editors.split(",") if u.strip()],
                       unload_after=max(0.0, args.unload_after), timezone=args.timezone)

    # `panel serve`, through app/server/process.py: it opens the databases while Panel is imported.
    cmd = [sys.executable, "-m", "app.server.process", "serve", str(SERVER_DIR / "main.py"),
           "--port", str(args.port), "--address", args.address,
           "--setup", str(SERVER_DIR / "setup.py"), "--plugins", "app.server.routes",
           "--check-unused-sessions", "5000", "--unused-session-lifetime", "15000"]
    if cfg.prefix:
        cmd += ["--prefix", cfg.prefix]
    origins = list(args.allow_websocket_origin)
    if cfg.address in LOOPBACK:
        origins += [f"localhost:{args.port}", f"127.0.0.1:{args.port}"]
    else:
        origins += [f"{cfg.address}:{args.port}"] if cfg.address not in ("0.0.0.0", "::") else ["*"]
    for o in dict.fromkeys(origins):
        cmd += ["--allow-websocket-origin", o]
    if args.num_threads:
        cmd += ["--num-threads", str(args.num_threads)]
    if args.num_procs > 1:
        cmd += ["--num-procs", str(args.num_procs)]
    if args.show:
        cmd.append("--show")
    if cfg.prefix or args.user_header:
        cmd.append("--use-xheaders")
    cmd += extra + own_auth_pages(extra)

    env = dict(os.environ, **{ENV_VAR: cfg.to_env()})
    # Every script, stylesheet and font comes from this server, never from a CDN: facility networks have
    # no internet. Bokeh and Panel would take a CDN from the environment (BOKEH_RESOURCES, PANEL_AE5_CDN).
    env["BOKEH_RESOURCES"] = "server"
    env.pop("PANEL_AE5_CDN", None)
    if demo is not None:
        env.update(demo.env())
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for line in startup_notes(cfg, args.port):
        print(line, flush=True)

    proc = subprocess.Popen(cmd, env=env)
    if demo is not None:
        demo.start()

    def forward(signum, frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        return proc.wait()
    finally:
        if demo is not None:
            demo.stop()


if __name__ == "__main__":
    sys.exit(main())
