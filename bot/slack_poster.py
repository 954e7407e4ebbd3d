"""Posts and edits channel messages through Slack's Web API (chat.postMessage / chat.update)."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.context import Reply
from handlers.messages import outgoing

log = logging.getLogger(__name__)


class SlackPoster:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, reply: Reply, thread_ts: str | None = None) -> str:
        reply = outgoing(reply)
        try:
            resp = await self.client.chat_postMessage(
                channel=channel, text=reply.text, blocks=reply.blocks or None, thread_ts=thread_ts, unfurl_links=False
            )
        except SlackApiError as exc:
            log.warning(
                "cannot post to %s: %s (invite the bot or check [slack] notify_channel)",
                channel,
                exc.response.get("error"),
            )
            return ""
        return str(resp["ts"])

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        reply = outgoing(reply)
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=reply.text, blocks=reply.blocks or None)
        except SlackApiError as exc:
            log.warning("cannot update message %s in %s: %s", ts, channel, exc.response.get("error"))
