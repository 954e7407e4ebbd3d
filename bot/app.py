"""slack-bolt AsyncApp wiring: `/pgmig` commands and button clicks → handlers, over HTTP or Socket Mode.

Every listener acks first (Slack's 3-second rule) and runs the handler as a tracked task; the answer
goes back through the request's response_url, so even a minute-long check answers in the same place.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.tasks import TaskTracker
from handlers import router
from handlers.context import Invocation, Reply, Services
from handlers.messages import error_message, outgoing

log = logging.getLogger(__name__)
COMMAND = "/pgmig"
FAILED = error_message("pgmig could not handle that; nothing was changed and the details are in pgmig's log")


def web_client(settings: Settings) -> AsyncWebClient:
    base = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(token=settings.slack_bot_token, base_url=base)


def build_bolt_app(settings: Settings, services: Services, tasks: TaskTracker, client: AsyncWebClient) -> AsyncApp:
    app = AsyncApp(signing_secret=settings.slack_signing_secret or None, client=client, process_before_response=False)

    async def send(respond: Any, reply: Reply) -> None:
        reply = outgoing(reply)
        await respond(
            text=reply.text,
            blocks=reply.blocks or None,
            response_type="ephemeral" if reply.ephemeral else "in_channel",
            replace_original=False,
        )

    @app.command(COMMAND)
    async def on_command(ack: Any, command: dict, respond: Any) -> None:
        text = str(command.get("text") or "").strip()
        working = router.ack_text(text)  # cannot raise: the ack always goes out, parsing errors are answered after
        if working:
            await ack(text=f"⏳ {working}")
        else:
            await ack()
        inv = Invocation(user=command["user_id"], channel=command.get("channel_id", ""))

        async def run() -> None:
            try:
                reply = await router.handle_command(text, inv, services)  # never raises; this is a last guard
            except Exception:
                log.exception("command %r could not be handled", text[:100])
                reply = FAILED
            await send(respond, reply)

        tasks.spawn(run(), name=f"command {text.split(' ', 1)[0][:40] or 'help'}")

    @app.action(re.compile(r"^pgmig\."))
    async def on_action(ack: Any, body: dict, action: dict, respond: Any) -> None:
        await ack()
        user = body["user"]["id"]
        delivery = f"{action.get('action_id', '')}:{action.get('action_ts', '')}:{user}"
        inv = Invocation(user=user, channel=(body.get("channel") or {}).get("id", ""), delivery=delivery)

        async def run() -> None:
            try:
                reply = await router.handle_action(
                    action.get("action_id", ""), action.get("value") or "", inv, services
                )  # never raises; this is a last guard
            except Exception:
                log.exception("click %r could not be handled", str(action.get("action_id", ""))[:100])
                reply = FAILED
            if reply is not None:
                await send(respond, reply)

        tasks.spawn(run(), name=f"action {str(action.get('action_id', ''))[:60]}")

    @app.error
    async def on_error(error: Exception, body: dict) -> None:
        log.error("unhandled error in a Slack listener: %s", error, exc_info=error)

    return app


def build_web_app(app: AsyncApp, services: Services) -> web.Application:
    """`POST /slack/events` for commands and interactivity, `GET /healthz` for load balancers."""

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def healthz(request: web.Request) -> web.Response:
        try:
            ok = await services.store.ping()
        except Exception as exc:
            log.warning("health check: state store unreachable: %s", exc)
            ok = False
        return web.json_response({"ok": ok, "state_store": "ok" if ok else "unreachable"}, status=200 if ok else 503)

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", healthz)
    return web_app
