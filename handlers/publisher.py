"""Turns the core's migration events into one live message per migration, edited in place, plus
thread replies when a migration completes, fails, pauses or is cancelled."""
from __future__ import annotations

import asyncio
import logging

from handlers import migration_messages as mm
from handlers.authz import Policy
from handlers.context import Poster
from migration_core.models import Migration, State
from migration_core.progress import MigrationProgress
from migration_core.store import Store

log = logging.getLogger(__name__)
NOTICE_STATES = (State.COMPLETED, State.FAILED, State.PAUSED, State.CANCELLED, State.READY_FOR_CUTOVER)


class ChannelPublisher:
    def __init__(self, poster: Poster, store: Store, policy: Policy) -> None:
        self.poster, self.store, self.policy = poster, store, policy
        self._locks: dict[str, asyncio.Lock] = {}

    def channel_for(self, m: Migration) -> str:
        return self.policy.notify_channel or m.channel

    async def progress(self, migration: Migration, progress: MigrationProgress) -> None:
        await self._card(migration, progress)

    async def state_changed(self, migration: Migration, progress: MigrationProgress, detail: str) -> None:
        channel, ts = await self._card(migration, progress)
        if migration.state is not State.AWAITING_APPROVAL:
            await self._close_approval_card(migration, progress, detail)
        if migration.state in NOTICE_STATES and ts:
            await self.poster.post(channel, mm.state_notice(migration, detail), thread_ts=ts)

    async def _close_approval_card(self, m: Migration, progress: MigrationProgress, detail: str) -> None:
        """Slack has no disabled buttons: once decided, the card is rewritten without them."""
        step = await self.store.step(m.id, "approval")
        if step is None or not step.data.get("open") or not step.data.get("ts"):
            return
        step.data["open"] = False
        await self.store.save_step(step)
        approvers = [a.approver for a in await self.store.approvals(m.id, step.data["round"])
                     if a.decision == "approve"]
        closed = f"{m.state.value.replace('_', ' ')}: {detail}"
        await self.poster.update(step.data["channel"], step.data["ts"], mm.approval_card(
            m, progress, step.data["requested_by"], approvers, self.policy.required_approvals,
            step.data["expires_at"], step.data["verification"], closed[:2900]))

    async def alert(self, migration: Migration, progress: MigrationProgress, text: str) -> None:
        channel, ts = await self._card(migration, progress)
        await self.poster.post(channel, mm.alert_notice(migration, text), thread_ts=ts or None)

    async def digest(self, migrations: list[Migration], progress: dict[str, MigrationProgress]) -> None:
        channel = self.policy.notify_channel or (migrations[0].channel if migrations else "")
        if channel:
            await self.poster.post(channel, mm.digest(migrations, progress))

    async def _card(self, m: Migration, progress: MigrationProgress) -> tuple[str, str]:
        """Post the card the first time, edit it afterwards; the reference is kept in the store."""
        async with self._locks.setdefault(m.id, asyncio.Lock()):
            fresh = await self.store.get_migration(m.id) or m
            reply = mm.migration_card(m, progress)
            if fresh.message_ts:
                await self.poster.update(fresh.message_channel, fresh.message_ts, reply)
                return fresh.message_channel, fresh.message_ts
            channel = self.channel_for(m)
            ts = await self.poster.post(channel, reply)
            if ts:
                await self.store.set_message(m.id, channel, ts)
            return channel, ts
