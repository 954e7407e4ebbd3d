"""A local fake of Slack: the Web API (as slack-sdk calls it), response_url endpoints and Socket Mode.

It runs on 127.0.0.1 only, records every call, and answers the way Slack does, so the real slack-bolt and
slack-sdk code paths run unchanged (the approach of bolt-python's own test suite).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

# Slack's published Web API rate limits (api.slack.com/apis/rate-limits and each method's page, as of
# 2026-12): method → (calls, per seconds, counted per channel). chat.update is Tier 3 ("50+ per minute",
# per workspace and app); chat.postMessage is "special": about one message per second per channel, short
# bursts allowed (modelled as 5 in any 5 seconds). Beyond them Slack answers HTTP 429 with Retry-After.
RATE_LIMITS: dict[str, tuple[int, float, bool]] = {
    "chat.update": (50, 60.0, False),
    "chat.postMessage": (5, 5.0, True),
}
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")  # public, private and direct-message channel ids
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"


@dataclass
class Call:
    method: str
    params: dict[str, Any]


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # what arrived on response_urls
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)  # Web API method → seconds it takes to answer
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)  # view id → the view as Slack holds it
    homes: dict[str, str] = field(default_factory=dict)  # user → the id of their published Home tab
    url: str = ""
    rate_limits: bool = False  # answer as Slack does beyond its published rate limits (see RATE_LIMITS)
    refused: list[Call] = field(default_factory=list)  # calls answered 429
    channels: dict[str, str] = field(default_factory=dict)  # channel name → the id Slack gave it

    def __post_init__(self) -> None:
        self._windows: dict[str, list[float]] = {}
        self._changed = asyncio.Condition()
        self._ws: web.WebSocketResponse | None = None
        self._ws_ready = asyncio.Event()
        self._ts = 1700000000.000100

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, key: str = "1") -> str:
        return f"{self.url}/response/{key}"

    async def start(self) -> "FakeSlack":
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        await self._runner.cleanup()

    async def _record(self, target: list, item: Any) -> None:
        async with self._changed:
            target.append(item)
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await request.text()
        if request.content_type == "application/json":
            params = json.loads(body or "{}")
        else:
            params = dict(parse_qsl(body))
        params.update(request.query)
        if self.rate_limits and (wait := self._limited(method, params)):
            self.refused.append(Call(method, params))
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(math.ceil(wait))}
            )
        await self._record(self.calls, Call(method, params))
        if method in self.slow:
            await asyncio.sleep(self.slow[method])
        return web.json_response(self._answer(method, params))

    def channel_id(self, channel: str) -> str:
        """A channel's id, as Slack resolves a name to it (stable per name)."""
        if CHANNEL_ID.fullmatch(channel):
            return channel
        if re.fullmatch(r"[UW][A-Z0-9]{2,}", channel):  # a user id: the app's direct-message channel with them
            return "D" + channel[1:]
        name = channel.lstrip("#")
        return self.channels.setdefault(name, f"C0{len(self.channels) + 1:04d}{name[:4].upper()}")

    def _limited(self, method: str, params: dict[str, Any]) -> float:
        """Seconds until `method` may be called again (0: now), by RATE_LIMITS: a sliding window per
        workspace for tiered methods, per channel for chat.postMessage."""
        if method not in RATE_LIMITS:
            return 0.0
        calls, seconds, per_channel = RATE_LIMITS[method]
        key = f"{method}:{params.get('channel', '')}" if per_channel else method
        now = time.monotonic()
        window = [t for t in self._windows.get(key, []) if now - t < seconds]
        self._windows[key] = window
        if len(window) >= calls:
            return seconds - (now - window[0])
        window.append(now)
        return 0.0

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://pgmig-test.slack.com/",
                "team": "pgmig",
                "user": "pgmig",
                "team_id": "T0TEST",
                "user_id": "U0BOT",
                "bot_id": "B0BOT",
            }
        if method in ("chat.postMessage", "chat.postEphemeral"):
            # a channel may be named by id or by name ("#db-ops"); the answer always carries the id
            self._ts += 1
            return {"ok": True, "channel": self.channel_id(str(params.get("channel", ""))), "ts": f"{self._ts:.6f}"}
        if method == "chat.update":
            # chat.update takes the channel's id only: a name is channel_not_found (its method page)
            if not CHANNEL_ID.fullmatch(str(params.get("channel", ""))):
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "channel": params.get("channel"), "ts": params.get("ts")}
        if method == "usergroups.users.list":
            group = params.get("usergroup", "")
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.usergroups[group]}
        if method in ("views.open", "views.update", "views.publish"):
            return self._view(method, params)
        if method == "apps.connections.open":
            return {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket"}
        return {"ok": True}

    def _view(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """views.open needs a trigger_id, views.update a known view_id; each answer is the view as Slack keeps
        it: with an id, a fresh hash and an empty state (what block_actions and view_submission send back)."""
        view = params.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not isinstance(view, dict) or not view.get("type"):
            return {"ok": False, "error": "invalid_arguments"}
        if method == "views.open" and not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        if method == "views.update" and params.get("view_id") not in self.views:
            return {"ok": False, "error": "not_found"}
        if method == "views.publish":
            view_id = self.homes.setdefault(str(params.get("user_id")), f"VH{len(self.views) + 1:04d}")
        else:
            view_id = str(params.get("view_id") or f"V{len(self.views) + 1:04d}")
        kept = {**view, "id": view_id, "hash": f"{time.time():.6f}.{len(self.calls)}", "state": {"values": {}}}
        self.views[view_id] = kept
        return {"ok": True, "view": kept}

    async def _response(self, request: web.Request) -> web.Response:
        await self._record(self.responses, {"key": request.match_info["key"], **await request.json()})
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_json({"type": "hello", "num_connections": 1})
        self._ws_ready.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await self._record(self.socket_acks, json.loads(msg.data))
        return ws

    async def send_envelope(self, envelope_type: str, payload: dict[str, Any], envelope_id: str) -> None:
        await asyncio.wait_for(self._ws_ready.wait(), 10)
        assert self._ws is not None
        await self._ws.send_json(
            {
                "envelope_id": envelope_id,
                "type": envelope_type,
                "payload": payload,
                "accepts_response_payload": envelope_type == "slash_commands",
            }
        )

    async def wait_for(self, what: str, predicate, timeout: float = 30.0) -> Any:
        """Wait until a recorded item of kind `what` (calls, responses, socket_acks) matches."""
        items = getattr(self, what)
        async with self._changed:
            deadline = time.monotonic() + timeout
            while True:
                for item in items:
                    if predicate(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"nothing in {what} matched within {timeout}s; got {items!r}")
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass


def signed_headers(
    body: str,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, str]:
    """Headers exactly as Slack sends them: v0 HMAC-SHA256 over `v0:timestamp:body`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
        "Content-Type": content_type,
    }


def text_of(params: dict[str, Any]) -> str:
    """Everything a person would read in a posted or updated message: its blocks and its text."""
    blocks = params.get("blocks", "[]")
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return json.dumps(blocks, ensure_ascii=False) + params.get("text", "")
