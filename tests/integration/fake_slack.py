"""A local fake of Slack: the Web API (as slack-sdk calls it), response_url endpoints, file uploads and Socket
Mode.

It runs on 127.0.0.1 only, records every call, and answers the way Slack does, so the real slack-bolt and
slack-sdk code paths run unchanged (the approach of bolt-python's own test suite).

File uploads follow Slack's external upload flow as its method pages describe it (docs.slack.dev, as of
2026-12), which slack-sdk 3.48's `files_upload_v2` drives: files.getUploadURLExternal (`filename` and `length`
required, `length` 0 is `missing_argument`, `alt_txt` at most 1000 characters) answers an `upload_url` and a
`file_id`; the bytes are POSTed to that URL (raw or multipart, HTTP 200 when taken); files.completeUploadExternal
(`files`: a JSON array of `{id, title}`, required; `channel_id` an id; `thread_ts` the parent's ts) shares them,
once per file, answering `files: [{id, title}]`. Shared files are kept in `files`, bytes and all.
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
    "files.getUploadURLExternal": (100, 60.0, False),  # Tier 4: "100+ per minute"
    "files.completeUploadExternal": (100, 60.0, False),
}
ALT_TXT_LIMIT = 1000
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")  # public, private and direct-message channel ids
SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"


@dataclass
class Call:
    method: str
    params: dict[str, Any]


@dataclass
class Upload:
    """A file as files.getUploadURLExternal announced it, its bytes once POSTed, and where it was shared."""

    file_id: str
    filename: str
    length: int
    alt_txt: str = ""
    data: bytes | None = None
    title: str = ""
    channel_id: str = ""
    thread_ts: str = ""
    shared: bool = False


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
    uploads: dict[str, Upload] = field(default_factory=dict)  # file id → the upload, from getUploadURLExternal on
    files: list[Upload] = field(default_factory=list)  # uploads files.completeUploadExternal shared, in order

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
        app.router.add_post("/upload/v1/{file_id}", self._upload)
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
        if method == "files.completeUploadExternal":
            return web.json_response(await self._complete_upload(params))
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
        if method == "files.getUploadURLExternal":
            return self._upload_url(params)
        return {"ok": True}

    def _upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        """A file id and the URL its bytes go to (on this fake's loopback address)."""
        length = str(params.get("length") or "0")
        if not params.get("filename"):
            return {"ok": False, "error": "invalid_arguments"}
        if not length.isdigit() or int(length) == 0:
            return {"ok": False, "error": "missing_argument"}
        if len(str(params.get("alt_txt") or "")) > ALT_TXT_LIMIT:
            return {"ok": False, "error": "alt_txt_too_large"}
        file_id = f"F0{len(self.uploads) + 1:08d}"
        self.uploads[file_id] = Upload(file_id, str(params["filename"]), int(length), str(params.get("alt_txt") or ""))
        return {"ok": True, "upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL: the file's bytes, raw or as a multipart form's file."""
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None or upload.shared:
            return web.Response(status=404, text="not found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = next((v for v in form.values() if isinstance(v, web.FileField)), None)
            data = part.file.read() if part is not None else b""
        else:
            data = await request.read()
        upload.data = data
        return web.Response(text=f"OK - {len(data)}")

    async def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        """Shares uploaded files, each once; a file whose bytes never arrived is not found."""
        try:
            files = json.loads(params["files"]) if isinstance(params.get("files"), str) else params.get("files")
        except ValueError:
            files = None
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("id") for f in files):
            return {"ok": False, "error": "invalid_arguments"}
        channel = str(params.get("channel_id") or "")
        if channel and not CHANNEL_ID.fullmatch(channel):  # an id, as chat.update takes
            return {"ok": False, "error": "channel_not_found"}
        found = [self.uploads.get(f["id"]) for f in files]
        if any(u is None or u.shared or u.data is None for u in found):
            return {"ok": False, "error": "file_not_found"}
        shared = []
        for u, f in zip(found, files, strict=True):
            assert u is not None
            u.title = str(f.get("title") or u.filename)
            u.channel_id, u.thread_ts, u.shared = channel, str(params.get("thread_ts") or ""), True
            await self._record(self.files, u)
            shared.append({"id": u.file_id, "title": u.title})
        return {"ok": True, "files": shared}

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
