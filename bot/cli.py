"""`pgmig serve | shell | sandbox | run | init`: the entry point for every way of running pgmig."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import signal
import sys
from pathlib import Path

from bot import manifest
from bot.init_config import write_config
from bot.runtime import build_services, close_services
from bot.sandbox import Sandbox, SandboxBusy
from bot.settings import DEFAULT_CONFIG, Settings, SettingsError, load_settings, pgmig_command, require_slack
from bot.shell import Shell, ShellPoster
from bot.tasks import TaskTracker
from handlers.authz import StaticDirectory
from migration_core.pg.secrets import RedactingFilter

log = logging.getLogger("pgmig")


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # job added/removed on every migration
    logging.getLogger("azure").setLevel(logging.WARNING)  # every ARM request's headers, at INFO


async def serve(settings: Settings, socket_mode: bool) -> None:
    """Run until SIGINT/SIGTERM, then let running commands finish (up to 25 s)."""
    # Slack's side (bolt, the web server) is loaded here only: the shell, sandbox and init never need it
    from aiohttp import web

    from bot.app import build_bolt_app, build_web_app, web_client
    from bot.slack_directory import SlackDirectory
    from bot.slack_poster import SlackPoster

    require_slack(settings, socket_mode)
    client = web_client(settings)
    services = await build_services(settings, SlackPoster(client), SlackDirectory(client))
    tasks = TaskTracker()
    app = build_bolt_app(settings, services, tasks, client)
    runner = web.AppRunner(build_web_app(app, services))
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    socket_handler = None
    if socket_mode:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        socket_handler = AsyncSocketModeHandler(app, settings.slack_app_token)
        await socket_handler.connect_async()
        log.info("connected to Slack in Socket Mode; /healthz on port %s", settings.port)
    else:
        log.info("listening on port %s: POST /slack/events, GET /healthz", settings.port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: waiting for %d running command(s)", tasks.running)
    if socket_handler:
        await socket_handler.close_async()
    await runner.cleanup()
    await tasks.drain(timeout=25)
    await close_services(services)


async def shell(settings: Settings, user: str, sandbox: bool = False) -> None:
    """The shell adapter; `sandbox`: on the local sandbox, whose clusters stop when the shell ends."""
    charts = Path(settings.migration.workdir).absolute() / "charts"  # beside the export files, this user's
    services = await build_services(settings, ShellPoster(charts=charts), StaticDirectory())
    try:
        await Shell(services, user, servers_stop_on_exit=sandbox).run()
    finally:
        await close_services(services)


def run_default(user: str) -> None:
    """`make run`: Slack when credentials exist, otherwise the shell on the local sandbox."""
    if os.environ.get("SLACK_BOT_TOKEN"):
        config = os.environ.get("PGMIG_CONFIG") or DEFAULT_CONFIG
        if not os.path.exists(config):
            raise SettingsError(
                f"SLACK_BOT_TOKEN is set, so `make run` serves Slack, which needs a config naming your servers, "
                f"notify channel and approvers; {config} does not exist. `{pgmig_command()} init` writes a "
                "commented one (the sandbox's servers included while it runs); then edit it and `make run` again "
                "(README: Slack app setup). To try pgmig without Slack: `env -u SLACK_BOT_TOKEN make run`"
            )
        asyncio.run(serve(load_settings(), socket_mode=bool(os.environ.get("SLACK_APP_TOKEN"))))
        return
    if os.environ.get("PGMIG_CONFIG"):
        print("No SLACK_BOT_TOKEN: starting the shell adapter on PGMIG_CONFIG.")
        asyncio.run(shell(load_settings(), user))
        return
    sandbox = Sandbox.default()
    os.environ["PGMIG_CONFIG"] = str(sandbox.up())
    print("No SLACK_BOT_TOKEN: starting the shell adapter on the local sandbox (see README to connect Slack).")
    try:
        settings = load_settings()
        sandbox.remember_state(settings.state_url)  # `make sandbox-down` reads the sandbox's migrations there
        asyncio.run(shell(settings, user, sandbox=True))
    finally:
        sandbox.stop()  # the data stays: the next `make run` starts in a second; `make sandbox-down` removes it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgmig", description="Chat-ops PostgreSQL migrations to Azure.")
    p.add_argument("--log-level", default=os.environ.get("PGMIG_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("serve", help="serve Slack: HTTP (POST /slack/events) or --socket-mode")
    s.add_argument("--socket-mode", action="store_true", help="connect with SLACK_APP_TOKEN (xapp-…)")
    sh = sub.add_parser("shell", help="type /pgmig commands in a terminal (no Slack needed)")
    sh.add_argument("--user", default=getpass.getuser(), help="who you are in pgmig (default: OS user)")
    sb = sub.add_parser("sandbox", help="local throwaway source and target clusters")
    sb.add_argument("action", choices=["up", "down", "stop", "status", "reset"])
    sb.add_argument(
        "--force", action="store_true", help="down/reset: cancel the sandbox's active migrations first (else refused)"
    )
    i = sub.add_parser("init", help="write a commented pgmig.toml to start from (never overwrites one)")
    i.add_argument("--path", help="where to write it (default: PGMIG_CONFIG, else ./pgmig.toml)")
    mf = sub.add_parser("manifest", help="print the Slack app manifest, ready to paste, for HTTP or Socket Mode")
    how = mf.add_mutually_exclusive_group(required=True)
    how.add_argument("--url", help="the public https:// address `pgmig serve` answers on (HTTP mode)")
    how.add_argument("--socket-mode", action="store_true", help="Socket Mode: no public URL needed")
    r = sub.add_parser("run", help="what `make run` does: serve Slack if configured, else sandbox + shell")
    r.add_argument("--user", default=getpass.getuser())
    return p


def main(argv: list[str] | None = None) -> int:
    gc.freeze()  # the modules loaded by now live as long as the process: the collector need not walk them again
    args = parser().parse_args(argv)
    setup_logging(args.log_level.upper())
    try:
        if args.command == "serve":
            asyncio.run(serve(load_settings(), args.socket_mode))
        elif args.command == "shell":
            asyncio.run(shell(load_settings(), args.user))
        elif args.command == "run":
            run_default(args.user)
        elif args.command == "manifest":
            print(manifest.render(args.url, args.socket_mode), end="")
        elif args.command == "init":
            print(write_config(args.path or os.environ.get("PGMIG_CONFIG") or DEFAULT_CONFIG, Sandbox.default()))
        elif args.command == "sandbox":
            sandbox = Sandbox.default()
            if args.action == "up":
                print(f"config written to {sandbox.up()}; use it with PGMIG_CONFIG={sandbox.config_file}")
            elif args.action == "down":
                sandbox.down(force=args.force)
            elif args.action == "stop":
                sandbox.stop()
            elif args.action == "reset":
                sandbox.reset(force=args.force)
            else:
                print(sandbox.status())
    except SettingsError as exc:
        print(f"pgmig: {exc}", file=sys.stderr)
        return 2
    except SandboxBusy as exc:
        print(f"pgmig: refused: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a last line of defence: one readable line, the traceback only in debug
        log.debug("fatal", exc_info=True)
        print(f"pgmig: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
