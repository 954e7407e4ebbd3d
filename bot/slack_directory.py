"""User-group membership from Slack (usergroups.users.list), cached so clicks stay fast."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class SlackDirectory:
    def __init__(self, client: AsyncWebClient, ttl_seconds: float = 300.0) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, set[str]]] = {}

    async def members(self, group_id: str) -> set[str]:
        cached = self._cache.get(group_id)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            resp = await self._client.usergroups_users_list(usergroup=group_id)
        except SlackApiError as exc:
            log.warning("cannot resolve user group %s: %s", group_id, exc.response.get("error"))
            return set()
        users: set[str] = set(resp.get("users", []))
        self._cache[group_id] = (time.monotonic(), users)
        return users
