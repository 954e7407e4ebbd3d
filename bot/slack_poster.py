"""Posts and edits channel messages through Slack's Web API (chat.postMessage / chat.update), within
Slack's rate limits, and shares charts (files_upload_v2).

Slack allows chat.update about 50 times a minute per workspace (Tier 3) and answers beyond that with
HTTP 429 and `Retry-After`. Live cards are edited on every progress tick, so with a dozen migrations the
limit is reached in seconds. Three rules keep every card right:
- an edit that changes nothing is not sent (per card);
- every replica takes each edit from one budget kept in the state store (`UPDATES_PER_MINUTE`, below
  Slack's 50); a progress refresh may use only part of it and is skipped when that part is spent (the
  next tick carries newer numbers anyway), while a final state or a decision waits for its turn;
- a 429 holds the budget for every replica for `Retry-After` seconds, and slack-sdk's retry handlers
  retry the call itself (rate limits and connection errors).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from handlers.context import Posted, Reply
from handlers.messages import outgoing
from migration_core.observe.charts import Chart
from migration_core.store import Store

log = logging.getLogger(__name__)

UPDATES_PER_MINUTE = 45  # chat.update calls pgmig allows itself per workspace (Slack's Tier 3: 50 a minute)
PROGRESS_SHARE = 0.7  # of which progress refreshes may take this share; final states and decisions the rest
BUDGET_KEY = "slack:chat.update"
# chat.postMessage: Slack allows about one a second per channel, in short bursts (5 in 5 s). pgmig counts when
# it sends, Slack when the post arrives: a burst held up on a busy host can land in the same 5 s as the next
# one, so pgmig keeps a second of headroom (measured: 4 in 5 s drew six 429s in one loaded suite run)
POSTS_PER_CHANNEL = (4, 6.0)
FINAL_WAIT_SECONDS = 90.0  # how long a final state or a post waits for budget before it is sent anyway


def retry_after(response: Any) -> float:
    """Seconds Slack asked to wait (its Retry-After header), 1 when it did not say."""
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            first = value[0] if isinstance(value, list) else value
            try:
                return max(float(first), 0.0)
            except ValueError:
                break
    return 1.0


class SharedRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's 429 retry, which for chat.update first tells every replica to hold off for as long as
    Slack asked."""

    def __init__(self, poster: "SlackPoster", max_retry_count: int = 2) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.poster = poster

    async def prepare_for_next_attempt_async(self, *, state, request, response=None, error=None) -> None:  # type: ignore[no-untyped-def, override]
        if response is not None and request.url.rstrip("/").endswith("chat.update"):
            await self.poster.hold(retry_after(response))
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response, error=error)


def retry_handlers(poster: "SlackPoster") -> list[AsyncRetryHandler]:
    return [SharedRateLimitHandler(poster), AsyncConnectionErrorRetryHandler(max_retry_count=2)]


class SlackPoster:
    def __init__(self, client: AsyncWebClient, budget: Store | None = None) -> None:
        """`budget`: the state store every replica shares the chat.update budget through (None: no limit)."""
        self.client, self.budget = client, budget
        self._shown: dict[tuple[str, str], str] = {}  # (channel, ts) → what the card shows now
        client.retry_handlers = retry_handlers(self)

    async def post(self, channel: str, reply: Reply, thread_ts: str | None = None) -> Posted:
        """Post (never skipped: it waits for the channel's turn, then Slack's retry applies)."""
        reply = outgoing(reply)
        await self._turn(f"slack:chat.postMessage:{channel}", *POSTS_PER_CHANNEL)
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
            return Posted()
        return Posted(str(resp.get("channel") or channel), str(resp["ts"]))

    async def update(self, channel: str, ts: str, reply: Reply, *, final: bool = True) -> None:
        """Edit a posted message. `final=False` (a progress refresh) may be skipped when the budget is spent;
        a final state or a decision waits for budget and is retried once after a refusal."""
        reply = outgoing(reply)
        shown = json.dumps([reply.text, reply.blocks], sort_keys=True)
        if self._shown.get((channel, ts)) == shown:
            return  # nothing changed: no call
        limit = UPDATES_PER_MINUTE if final else int(UPDATES_PER_MINUTE * PROGRESS_SHARE)
        if not await self._turn(BUDGET_KEY, limit, 60.0, wait=final):
            log.debug("progress refresh of %s skipped: the chat.update budget is spent", ts)
            return
        for attempt in (1, 2):
            try:
                await self.client.chat_update(channel=channel, ts=ts, text=reply.text, blocks=reply.blocks or None)
            except SlackApiError as exc:
                if exc.response.status_code == 429 and final and attempt == 1:
                    await asyncio.sleep(retry_after(exc.response))
                    continue
                log.warning("cannot update message %s in %s: %s", ts, channel, exc.response.get("error"))
                return
            self._shown[(channel, ts)] = shown
            return

    async def upload(self, channel: str, chart: Chart, thread_ts: str | None = None) -> None:
        """slack-sdk's files_upload_v2: files.getUploadURLExternal, the PNG POSTed to the URL it returns, then
        files.completeUploadExternal sharing it in the channel (by id, as the card's) and the thread. Tier 4
        methods: no budget of pgmig's own, slack-sdk's retry handlers cover a 429."""
        try:
            await self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                content=chart.png,
                filename=chart.filename,
                title=chart.title,
                alt_txt=chart.alt,
            )
        except SlackApiError as exc:
            log.warning(
                "cannot share the chart of %s in %s: %s (the app needs the files:write scope)",
                chart.migration_id,
                channel,
                exc.response.get("error"),
            )
        except SlackRequestError as exc:  # the upload URL refused the bytes
            log.warning("cannot share the chart of %s in %s: %s", chart.migration_id, channel, exc)

    async def hold(self, seconds: float) -> None:
        """Slack said 429: every replica holds its chat.update calls for that long."""
        if self.budget is not None:
            await self.budget.hold_budget(BUDGET_KEY, seconds)

    async def _turn(self, key: str, limit: int, window: float, wait: bool = True) -> bool:
        """Take one call from a budget every replica shares: at once, or (`wait`) once one is free, for at
        most FINAL_WAIT_SECONDS, after which the call goes anyway (Slack's own 429 retry still applies)."""
        if self.budget is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (FINAL_WAIT_SECONDS if wait else 0)
        while not await self.budget.take_budget(key, limit, window):
            if loop.time() >= deadline:
                return wait
            await asyncio.sleep(0.5)
        return True
