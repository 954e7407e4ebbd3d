"""slack-bolt AsyncApp wiring: `/pgmig` commands, button clicks, the migrate modal and the App Home tab →
handlers, over HTTP or Socket Mode.

Every listener acks first (Slack's 3-second rule) and runs the handler as a tracked task; the answer
goes back through the request's response_url, so even a minute-long check answers in the same place.
The one exception is `/pgmig migrate` alone: its modal is opened before the ack, since the command's
trigger_id is good for 3 s only (the form needs no round trip; the source's databases follow by
views.update). A cutover's Reject, and a schema change's Skip, open a small form asking why (views.open right
after the ack); its submission is decided as the click would have been, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.tasks import TaskTracker
from handlers import approvals, ddl, home, modal, router
from handlers.actions import Action
from handlers.context import Invocation, Reply, Services
from handlers.messages import error_message, outgoing

log = logging.getLogger(__name__)
COMMAND = "/pgmig"
FAILED = error_message("pgmig could not handle that; nothing was changed and the details are in pgmig's log")
OPEN_TIMEOUT = 2.5  # seconds views.open may take: a trigger_id is only good for 3 s after the click or command


def safe_view(view: dict) -> dict:
    """A view through the same outgoing pass as every message (secrets masked)."""
    return {**view, "blocks": outgoing(Reply("", view.get("blocks") or [])).blocks}


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

    async def deliver(reply: Reply, user: str, channel: str, response_url: str = "") -> None:
        """An answer without a request to answer (a modal's submission, a Home tab click): through the
        command's response_url when there is one, else in the channel (ephemeral unless it is for
        everyone), else in the app's direct messages with the user."""
        if response_url:
            try:
                await send(AsyncRespond(response_url=response_url, proxy=client.proxy, ssl=client.ssl), reply)
                return
            except Exception as exc:  # expired (30 min) or used up: the channel, then the DM
                log.warning("cannot answer through the response_url: %s", exc)
        safe = outgoing(reply)
        if channel:
            try:
                if safe.ephemeral:
                    await client.chat_postEphemeral(channel=channel, user=user, text=safe.text, blocks=safe.blocks)
                else:
                    await client.chat_postMessage(channel=channel, text=safe.text, blocks=safe.blocks)
                return
            except SlackApiError as exc:
                log.warning("cannot answer in %s: %s; answering in a direct message", channel, exc.response["error"])
        try:
            await client.chat_postMessage(channel=user, text=safe.text, blocks=safe.blocks)
        except SlackApiError as exc:
            log.warning("cannot answer %s in a direct message: %s", user, exc.response.get("error"))

    async def publish_home(user: str) -> None:
        try:
            view = await home.home_view(user, services)
            await client.views_publish(user_id=user, view=safe_view(view))
        except SlackApiError as exc:
            log.warning("cannot publish the Home tab of %s: %s", user, exc.response.get("error"))
        except Exception:
            log.exception("the Home tab of %s could not be built", user)

    async def open_form(trigger_id: str, user: str, channel: str, response_url: str) -> Reply | None:
        """views.open with the form, right after the ack; the reason when it cannot be opened."""
        view = modal.open_form(services.servers, channel=channel, response_url=response_url)
        if isinstance(view, Reply):
            return view
        try:
            await asyncio.wait_for(client.views_open(trigger_id=trigger_id, view=safe_view(view)), OPEN_TIMEOUT)
        except Exception as exc:  # whatever went wrong, the command's ack must still go out
            why = exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("cannot open the migrate form for %s: %s", user, why)
            return error_message(
                f"the migrate form could not be opened ({why}); type "
                "`/pgmig migrate SOURCE TARGET --mode online|offline …` instead (`/pgmig help migrate`)"
            )
        tasks.spawn(modal.opened(Invocation(user=user, channel=channel), services), name="form: audit")
        return None

    @app.command(COMMAND)
    async def on_command(ack: Any, command: dict, respond: Any) -> None:
        text = str(command.get("text") or "").strip()
        if modal.wants_form(text):
            await ack()  # first, whatever views.open does: a slow one must not push the ack past Slack's 3 s

            async def show_form() -> None:
                problem = await open_form(
                    str(command.get("trigger_id") or ""),
                    command["user_id"],
                    command.get("channel_id", ""),
                    str(command.get("response_url") or ""),
                )
                if problem is not None:
                    await send(respond, problem)

            tasks.spawn(show_form(), name="migrate form")
            return
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

    @app.action(modal.OPEN)
    async def on_open_form(ack: Any, body: dict) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        problem = await open_form(str(body.get("trigger_id") or ""), user, channel, "")
        if problem is not None:
            tasks.spawn(deliver(problem, user, channel), name="migrate form refused")

    latest: dict[str, object] = {}  # view id → the newest source choice being listed

    @app.action(modal.SOURCE_ACTION)
    async def on_source(ack: Any, body: dict, action: dict) -> None:
        """A source was chosen in the form: list its databases and show them (views.update). Of several
        quick choices only the newest is shown."""
        await ack()
        view = body.get("view") or {}
        view_id = str(view.get("id") or "")
        source = str((action.get("selected_option") or {}).get("value") or "")
        inv = Invocation(user=str((body.get("user") or {}).get("id") or ""))
        mine = object()
        latest[view_id] = mine

        async def run() -> None:
            try:
                updated = await modal.source_chosen(services, view, source, inv)
                if latest.get(view_id) is mine:
                    await client.views_update(view_id=view_id, view=safe_view(updated))
            except SlackApiError as exc:
                log.warning("cannot update the migrate form: %s", exc.response.get("error"))
            except Exception:
                log.exception("the databases of %r could not be listed for the form", source[:100])
            finally:
                if latest.get(view_id) is mine:
                    del latest[view_id]

        tasks.spawn(run(), name=f"form: databases of {source[:40]}")

    @app.view(modal.FORM)
    async def on_submit(ack: Any, body: dict, view: dict) -> None:
        """The form sent: field errors in the ack (the modal stays open), else the modal closes and the
        migration is checked and started as the typed command would be; its answer goes where the
        command's would have."""
        user = body["user"]["id"]
        form = modal.read(view)
        delivery = f"{modal.FORM}:{form.view_id}" if form.view_id else ""
        inv = Invocation(user=user, channel=form.channel, delivery=delivery)
        try:
            errors = await modal.field_errors(form, inv, services)
        except Exception:
            log.exception("the migrate form could not be checked")
            errors = {modal.SOURCE: "pgmig could not check the form; nothing was started (see pgmig's log)"}
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await ack()

        async def run() -> None:
            await deliver(Reply(f"⏳ {modal.working()}"), user, form.channel, form.response_url)
            try:
                reply = await modal.submit(form, inv, services)
            except Exception:
                log.exception("the migrate form could not be run")
                reply = FAILED
            if reply is not None:
                await deliver(reply, user, form.channel, form.response_url)

        tasks.spawn(run(), name="form: migrate")

    @app.action(home.REFRESH)
    async def on_refresh(ack: Any, body: dict) -> None:
        await ack()
        tasks.spawn(publish_home(body["user"]["id"]), name="home: refresh")

    @app.event("app_home_opened")
    async def on_home_opened(event: dict) -> None:
        if event.get("tab", "home") != "home" or not event.get("user"):
            return  # the Messages tab opened
        tasks.spawn(publish_home(str(event["user"])), name="home: publish")

    async def ask_why(body: dict, make: Callable[[], Awaitable[dict | Reply]], what: str, again: str) -> None:
        """A form asking why, opened with the click's trigger_id (views.open, good for 3 s); a refusal `make`
        returns instead is delivered, and a form that cannot be opened is said, with `again`: nothing was
        decided."""
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        try:
            form = await make()
            if isinstance(form, Reply):
                tasks.spawn(deliver(form, user, channel), name=f"{what} form refused")
                return
            await asyncio.wait_for(
                client.views_open(trigger_id=str(body.get("trigger_id") or ""), view=safe_view(form)), OPEN_TIMEOUT
            )
        except Exception as exc:  # the click was acked; say why nothing opened
            why = exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("cannot open the %s form for %s: %s", what, user, why)
            problem = error_message(f"the {what} form could not be opened ({why}); nothing was decided: {again}")
            tasks.spawn(deliver(problem, user, channel), name=f"{what} form refused")

    @app.action(Action.REJECT_CUTOVER.value)
    async def on_reject(ack: Any, body: dict, action: dict) -> None:
        """Reject asks why first: a small form; its submission decides as the click would have, with the
        reason (`on_reject_submit`)."""
        await ack()
        channel = (body.get("channel") or {}).get("id", "")
        on_home = (body.get("view") or {}).get("type") == "home"

        async def form() -> dict | Reply:
            return await approvals.reject_form(str(action.get("value") or ""), channel, on_home, services)

        await ask_why(body, form, "reject", "press Reject again")

    def decide_from_form(
        body: dict, view: dict, form_id: str, action: Action, value: str, channel: str, on_home: bool
    ) -> None:
        """A form that asks why (reject a cutover, skip a schema change), submitted: decided like the click it
        stands for, in the background (refusals answered in the channel, or a direct message from Home)."""
        user = body["user"]["id"]
        delivery = f"{form_id}:{view.get('id', '')}" if view.get("id") else ""
        inv = Invocation(user=user, channel=channel, delivery=delivery)

        async def run() -> None:
            try:
                reply = await router.handle_action(action.value, value, inv, services)
            except Exception:
                log.exception("the %s form could not be run", form_id)
                reply = FAILED
            if reply is not None:
                await deliver(reply, user, channel)
            if on_home:
                await publish_home(user)

        tasks.spawn(run(), name=f"{form_id}: decide")

    @app.view(approvals.REJECT_FORM)
    async def on_reject_submit(ack: Any, body: dict, view: dict) -> None:
        """The reason given: the modal closes and the rejection is decided like a click (refusals answered in
        the channel, or a direct message when the form came from the Home tab)."""
        await ack()
        form = approvals.read_reject(view)
        decide_from_form(
            body, view, approvals.REJECT_FORM, Action.REJECT_CUTOVER, form.value, form.channel, form.on_home
        )

    @app.action(Action.DDL_SKIP.value)
    async def on_skip(ack: Any, body: dict, action: dict) -> None:
        """A schema change's Skip asks why first; the submission skips it as the click would have, with the
        reason (`on_skip_submit`)."""
        await ack()
        channel = (body.get("channel") or {}).get("id", "")
        on_home = (body.get("view") or {}).get("type") == "home"

        async def form() -> dict | Reply:
            return ddl.skip_form(str(action.get("value") or ""), channel, on_home)

        again = f"press Skip again, or type `/pgmig {action.get('value') or 'ddl'} REASON`"
        await ask_why(body, form, "skip", again)

    @app.view(ddl.SKIP_FORM)
    async def on_skip_submit(ack: Any, body: dict, view: dict) -> None:
        """The reason given: the modal closes and the change is skipped like a click (answered in the channel,
        or a direct message when the form came from the Home tab)."""
        await ack()
        form = ddl.read_skip(view)
        decide_from_form(body, view, ddl.SKIP_FORM, Action.DDL_SKIP, form.command, form.channel, form.on_home)

    @app.action(re.compile(r"^pgmig\."))
    async def on_action(ack: Any, body: dict, action: dict, respond: Any) -> None:
        await ack()
        user = body["user"]["id"]
        delivery = f"{action.get('action_id', '')}:{action.get('action_ts', '')}:{user}"
        channel = (body.get("channel") or {}).get("id", "")
        inv = Invocation(user=user, channel=channel, delivery=delivery)
        on_home = (body.get("view") or {}).get("type") == "home"

        async def run() -> None:
            try:
                reply = await router.handle_action(
                    action.get("action_id", ""), action.get("value") or "", inv, services
                )  # never raises; this is a last guard
            except Exception:
                log.exception("click %r could not be handled", str(action.get("action_id", ""))[:100])
                reply = FAILED
            if reply is not None:
                if body.get("response_url"):
                    await send(respond, reply)
                else:  # a click in a view (the Home tab) has no response_url
                    await deliver(reply, user, channel)
            if on_home:
                await publish_home(user)

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
            ok = await services.engine.ping()
        except Exception as exc:
            log.warning("health check: state store unreachable: %s", exc)
            ok = False
        return web.json_response({"ok": ok, "state_store": "ok" if ok else "unreachable"}, status=200 if ok else 503)

    web_app = web.Application()
    web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", healthz)
    return web_app
