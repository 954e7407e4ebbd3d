"""Socket Mode: the same handlers behind slack-sdk's Socket Mode client, against a fake Slack websocket."""

from __future__ import annotations

import asyncio
import json

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.app import build_bolt_app, web_client
from bot.runtime import build_services, close_services
from bot.settings import load_settings
from bot.slack_directory import SlackDirectory
from bot.slack_poster import SlackPoster
from bot.tasks import TaskTracker
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack


async def test_slash_command_over_socket_mode(tmp_path, source_cluster, target_cluster):
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"onprem": source_cluster, "azure": target_cluster}))
    fake = await FakeSlack().start()
    settings = load_settings(
        {
            "PGMIG_CONFIG": str(config),
            "PGMIG_STATE": str(tmp_path / "s.sqlite"),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": APP_TOKEN,
            "SLACK_API_URL": fake.api_url,
        }
    )
    client = web_client(settings)
    services = await build_services(settings, SlackPoster(client), SlackDirectory(client))
    tasks = TaskTracker()
    app = build_bolt_app(settings, services, tasks, client)
    handler = AsyncSocketModeHandler(app, settings.slack_app_token)
    try:
        await handler.connect_async()
        await fake.send_envelope(
            "slash_commands",
            {
                "command": "/pgmig",
                "text": "check onprem azure --db shop",
                "user_id": "U0ALICE",
                "channel_id": "C0OPS",
                "team_id": "T0TEST",
                "api_app_id": "A0PGMIG",
                "response_url": fake.response_url("sock"),
            },
            envelope_id="env-1",
        )
        ack = await fake.wait_for("socket_acks", lambda a: a.get("envelope_id") == "env-1", 10)
        assert "Running pre-flight checks" in json.dumps(ack.get("payload", {}))
        reply = await fake.wait_for("responses", lambda r: r["key"] == "sock", 30)
        assert "Pre-flight: onprem → azure (online)" in json.dumps(reply["blocks"], ensure_ascii=False)
        assert any(c.method == "apps.connections.open" for c in fake.calls)
    finally:
        await tasks.drain(10)
        await handler.close_async()
        await close_services(services)
        await fake.stop()
        await asyncio.sleep(0)
