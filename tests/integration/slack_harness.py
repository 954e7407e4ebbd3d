"""Runs the real pgmig aiohttp + slack-bolt app on loopback, wired to the fake Slack."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from azure.core.credentials_async import AsyncTokenCredential

from bot.app import build_bolt_app, build_web_app, web_client
from bot.localpg import LocalCluster
from bot.runtime import build_services, close_services
from bot.settings import Settings, load_settings
from bot.slack_directory import SlackDirectory
from bot.slack_poster import SlackPoster
from bot.tasks import TaskTracker
from handlers import approvals
from handlers import migration_messages as mm
from handlers.actions import Action
from handlers.context import Services
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers, text_of
from tests.integration.sample_data import online_pair


def command_body(text: str, user: str, response_url: str, key: str) -> str:
    """A `/pgmig` slash command as Slack posts it (form-encoded; sign it with `signed_headers`)."""
    return urlencode(
        {
            "token": "legacy",
            "team_id": "T0TEST",
            "team_domain": "pgmig",
            "channel_id": "C0OPS",
            "channel_name": "db-ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/pgmig",
            "text": text,
            "api_app_id": "A0PGMIG",
            "response_url": response_url,
            "trigger_id": f"trig.{key}",
        }
    )


def click_body(action_id: str, value: str, user: str, response_url: str, key: str) -> str:
    """A button click as Slack posts it (a block_actions payload with its own action_ts)."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T0TEST"},
        "user": {"id": user},
        "api_app_id": "A0PGMIG",
        "channel": {"id": "C0OPS"},
        "trigger_id": f"trig.{key}",
        "response_url": response_url,
        "container": {"type": "message"},
        "actions": [
            {"type": "button", "action_id": action_id, "block_id": "b1", "value": value, "action_ts": str(time.time())}
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def view_submission_body(view: dict, values: dict, user: str, key: str) -> str:
    """A modal's submission as Slack posts it: the view as Slack keeps it, with the fields' state."""
    payload = {
        "type": "view_submission",
        "team": {"id": "T0TEST"},
        "user": {"id": user},
        "api_app_id": "A0PGMIG",
        "trigger_id": f"trig.{key}",
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
    }
    return urlencode({"payload": json.dumps(payload)})


def view_action_body(
    view: dict, values: dict, block_id: str, action: dict, user: str, key: str, channel: str | None = None
) -> str:
    """A block_actions from inside a view (a modal's dispatched select, a Home tab button): no
    response_url, the view with its current state; a Home tab has no channel either."""
    payload: dict = {
        "type": "block_actions",
        "team": {"id": "T0TEST"},
        "user": {"id": user},
        "api_app_id": "A0PGMIG",
        "trigger_id": f"trig.{key}",
        "container": {"type": "view", "view_id": view.get("id", "")},
        "view": {**view, "state": {"values": values}},
        "actions": [{**action, "block_id": block_id, "action_ts": str(time.time())}],
    }
    if channel:
        payload["channel"] = {"id": channel}
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict, event_id: str) -> str:
    """An Events API delivery (JSON): what Slack posts for app_home_opened."""
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T0TEST",
            "api_app_id": "A0PGMIG",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
        }
    )


@dataclass
class Answer:
    """What Slack would see as the HTTP response to its request (the ack)."""

    status: int
    body: str


@dataclass
class Running:
    url: str
    fake: FakeSlack
    settings: Settings
    services: Services
    tasks: TaskTracker
    http: aiohttp.ClientSession
    asked: int = 0

    async def post(self, body: str, headers: dict[str, str]) -> Answer:
        async with self.http.post(f"{self.url}/slack/events", data=body.encode(), headers=headers) as resp:
            return Answer(resp.status, await resp.text())

    async def command(
        self,
        text: str,
        user: str = "U0ALICE",
        key: str = "1",
        timestamp: int | None = None,
        secret: str = SIGNING_SECRET,
    ) -> Answer:
        body = command_body(text, user, self.fake.response_url(key), key)
        return await self.post(body, signed_headers(body, secret, timestamp))

    async def click(self, action_id: str, value: str, user: str = "U0BOB", key: str = "2") -> Answer:
        """A signed click as Slack sends it; `signed_click` gives the body too (to replay it byte for byte)."""
        body, headers = self.signed_click(action_id, value, user, key)
        return await self.post(body, headers)

    def signed_click(self, action_id: str, value: str, user: str = "U0BOB", key: str = "2") -> tuple[str, dict]:
        body = click_body(action_id, value, user, self.fake.response_url(key), key)
        return body, signed_headers(body)

    def button(self, action_id: str) -> str:
        """The value of that button on the newest message that has it (a card carries its round)."""
        for call in reversed(self.fake.calls):
            if call.method not in ("chat.postMessage", "chat.update"):
                continue
            blocks = call.params.get("blocks") or "[]"
            for block in json.loads(blocks) if isinstance(blocks, str) else blocks:
                for element in block.get("elements", []) if block.get("type") == "actions" else []:
                    if element.get("action_id") == action_id:
                        return element["value"]
        raise AssertionError(f"no message has a {action_id} button")

    async def press(self, action_id: str, user: str = "U0BOB", key: str = "2") -> Answer:
        """Click that button on the newest card that shows it, as a person would."""
        return await self.click(action_id, self.button(action_id), user, key)

    async def reject(self, reason: str, user: str = "U0APPROVER1", key: str = "r") -> dict:
        """Reject as a person does: press Reject on the card, give the reason in the form it opens and send
        it (signed, as Slack posts a view_submission). Returns the form as Slack showed it."""
        before = len(self.fake.calls)
        await self.press(Action.REJECT_CUTOVER.value, user=user, key=key)
        await self.fake.wait_for(
            "calls", lambda c: c.method == "views.open" and any(c is x for x in self.fake.calls[before:])
        )
        form = [v for v in self.fake.views.values() if v.get("callback_id") == approvals.REJECT_FORM][-1]
        values = {mm.REASON: {mm.REASON: {"type": "plain_text_input", "value": reason}}}
        assert (await self.submit(form, values, user=user, key=f"{key}-form")).status == 200
        return form

    async def ask(self, text: str, user: str = "U0ALICE") -> str:
        """A command and the text of its answer (what the user reads)."""
        self.asked += 1
        key = f"ask-{self.asked}"
        await self.command(text, user=user, key=key)
        return text_of(await self.reply(key))

    async def submit(self, view: dict, values: dict, user: str = "U0ALICE", key: str = "v") -> Answer:
        """Submit a modal (signed, as Slack does) with these field states."""
        body = view_submission_body(view, values, user, key)
        return await self.post(body, signed_headers(body))

    async def in_view(
        self, view: dict, values: dict, block_id: str, action: dict, user: str = "U0ALICE", key: str = "va"
    ) -> Answer:
        """An element inside a view used (a dispatched select, a Home tab button)."""
        body = view_action_body(view, values, block_id, action, user, key)
        return await self.post(body, signed_headers(body))

    async def event(self, event: dict, event_id: str = "Ev0001") -> Answer:
        body = event_body(event, event_id)
        return await self.post(body, signed_headers(body, content_type="application/json"))

    async def reply(self, key: str, timeout: float = 30.0) -> dict:
        return await self.fake.wait_for("responses", lambda r: r["key"] == key, timeout)


async def start(
    config_path: str,
    state_path: str,
    fake: FakeSlack,
    home: str = ".pgmig",
    env: dict[str, str] | None = None,
    azure_credential: AsyncTokenCredential | None = None,
) -> tuple[Running, web.AppRunner]:
    settings = load_settings(
        {
            "PGMIG_CONFIG": config_path,
            "PGMIG_STATE": state_path,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.api_url,
            "PGMIG_HOME": home,
            **(env or {}),
        }
    )
    client = web_client(settings)
    services = await build_services(settings, SlackPoster(client), SlackDirectory(client), azure_credential)
    tasks = TaskTracker()
    app = build_bolt_app(settings, services, tasks, client)
    runner = web.AppRunner(build_web_app(app, services))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    running = Running(f"http://127.0.0.1:{port}", fake, settings, services, tasks, aiohttp.ClientSession())
    return running, runner


async def stop(running: Running, runner: web.AppRunner) -> None:
    await running.tasks.drain(timeout=30)
    await running.http.close()
    await runner.cleanup()
    await close_services(running.services)


@asynccontextmanager
async def running(
    tmp_path: Path,
    config_text: str,
    usergroups: dict[str, list[str]] | None = None,
    env: dict[str, str] | None = None,
    azure_credential: AsyncTokenCredential | None = None,
) -> AsyncIterator[Running]:
    """The real app on `config_text`, talking to a fresh fake Slack; everything stopped afterwards.
    `env` adds environment (e.g. AZURE_SUBSCRIPTION_ID, PGMIG_ARM_ENDPOINT for the fake ARM)."""
    config = tmp_path / "pgmig.toml"
    config.write_text(config_text)
    fake = await FakeSlack().start()
    fake.usergroups.update(usergroups or {})
    app, runner = await start(
        str(config), str(tmp_path / "state.sqlite"), fake, str(tmp_path / "home"), env, azure_credential
    )
    try:
        yield app
    finally:
        await stop(app, runner)
        await fake.stop()


@asynccontextmanager
async def on_pair(tmp_path: Path, source: LocalCluster, target: LocalCluster) -> AsyncIterator[Running]:
    """The app with `onprem` and `azure` (these clusters), posting to C0NOTIFY, looking every 50 ms."""
    extra = '[slack]\nnotify_channel = "C0NOTIFY"\n[migration]\nprogress_interval_seconds = 0.05\n'
    async with running(tmp_path, config_toml({"onprem": source, "azure": target}, extra=extra)) as app:
        yield app


@asynccontextmanager
async def team_on_own_pair(tmp_path: Path, root: Path, name: str, team: str) -> AsyncIterator[Running]:
    """The app on an online pair of its own (removed afterwards), posting to C0NOTIFY, looking every 0.1 s,
    a 0.2 s fence grace; `team`: the [slack] lines naming the approvers."""
    src, tgt = online_pair(root, name)
    extra = (
        f'[slack]\nnotify_channel = "C0NOTIFY"\n{team}'
        "[migration]\nprogress_interval_seconds = 0.1\n[online]\nfence_grace_seconds = 0.2\n"
    )
    try:
        async with running(tmp_path, config_toml({"onprem": src, "azure": tgt}, extra=extra)) as app:
            yield app
    finally:
        src.destroy()
        tgt.destroy()
