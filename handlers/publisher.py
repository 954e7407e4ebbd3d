"""Turns the core's events into channel messages: one live message per migration, edited in place, plus
thread replies when a migration completes, fails, pauses or is cancelled, and its chart at milestones; and a
provisioning request's approval card and progress line."""

from __future__ import annotations

import asyncio
import logging

from handlers import azure_messages as am
from handlers import ddl_messages as dm
from handlers import migration_messages as mm
from handlers.authz import Policy
from handlers.context import Poster, Reply
from migration_core.azure.provision import ProvisionResult
from migration_core.azure.provisioning import ProvisionRecord
from migration_core.engine.api import Engine
from migration_core.observe.ddl import SchemaCard
from migration_core.observe.progress import MigrationProgress
from migration_core.state.approval import ApprovalRequest, Closed
from migration_core.state.models import Migration, State

log = logging.getLogger(__name__)
NOTICE_STATES = (State.COMPLETED, State.FAILED, State.PAUSED, State.CANCELLED, State.READY_FOR_CUTOVER)


class ChannelPublisher:
    """The engine's events, as channel messages. `engine` is set once the engine exists (it is built with
    this publisher as its events): cards are drawn from what the engine says of a migration."""

    engine: Engine

    def __init__(self, poster: Poster, policy: Policy) -> None:
        self.poster, self.policy = poster, policy
        self._locks: dict[str, asyncio.Lock] = {}

    def channel_for(self, m: Migration) -> str:
        return self.policy.notify_channel or m.channel

    async def progress(self, migration: Migration, progress: MigrationProgress) -> None:
        await self._card(migration, progress)

    async def state_changed(
        self, migration: Migration, progress: MigrationProgress, detail: str, closed: Closed | None = None
    ) -> None:
        channel, ts = await self._card(migration, progress)
        decided = await self._close_approval_card(migration, progress, closed) if closed else ""
        if migration.state in NOTICE_STATES and ts:
            # a rejected or expired request is told naming who decided, not in the core's sentence
            told = decided if closed and closed.verdict in ("rejected", "expired") else ""
            await self.poster.post(channel, mm.state_notice(migration, detail, told), thread_ts=ts)

    async def _close_approval_card(self, m: Migration, progress: MigrationProgress, closed: Closed) -> str:
        """The core ended the open cutover request (and recorded how): Slack has no disabled buttons, so
        the card is rewritten without its buttons, saying who decided. Returns those words."""
        request = closed.request
        decided = mm.approval_decided(m, closed.verdict, closed.by)
        if request.ts:
            await self.poster.update(
                request.channel,
                request.ts,
                mm.approval_card(
                    m,
                    progress,
                    request,
                    await self.engine.cutover_approvers(request),
                    self.policy.required_approvals,
                    decided=decided,
                ),
            )
        return decided

    async def request_changed(
        self, migration: Migration, progress: MigrationProgress, request: ApprovalRequest
    ) -> None:
        if request.ts:
            approvers = await self.engine.cutover_approvers(request)
            card = mm.approval_card(migration, progress, request, approvers, self.policy.required_approvals)
            await self.poster.update(request.channel, request.ts, card)

    async def alert(
        self, migration: Migration, progress: MigrationProgress, text: str, offer_cancel: bool = False
    ) -> None:
        channel, ts = await self._card(migration, progress)
        await self.poster.post(channel, mm.alert_notice(migration, text, offer_cancel), thread_ts=ts or None)

    async def chart(self, migration: Migration, progress: MigrationProgress, moment: str) -> None:
        """The migration's chart at a milestone, in its thread; nothing while there is nothing to draw."""
        drawn = await self.engine.chart(migration.id, moment)
        if drawn is not None:
            channel, ts = await self._card(migration, progress)
            await self.poster.upload(channel, drawn, thread_ts=ts or None)

    async def schema_change(
        self, migration: Migration, progress: MigrationProgress, card: SchemaCard
    ) -> tuple[str, str]:
        """A schema change's card (handlers/ddl_messages.py): in the migration's thread the first time, then
        updated where it is."""
        reply = dm.card(migration.id, card, dm.required_approvals(self.policy))
        if card.ts:
            await self.poster.update(card.channel, card.ts, reply)
            return card.channel, card.ts
        channel, ts = await self._card(migration, progress)
        posted = await self.poster.post(channel, reply, thread_ts=ts or None)
        return posted.channel, posted.ts

    async def digest(self, migrations: list[Migration], progress: dict[str, MigrationProgress]) -> None:
        channel = self.policy.notify_channel or (migrations[0].channel if migrations else "")
        if channel:
            await self.poster.post(channel, mm.digest(migrations, progress))

    async def _card(self, m: Migration, progress: MigrationProgress) -> tuple[str, str]:
        """Post the card the first time, edit it afterwards; the reference is kept in the store. An edit the
        next progress tick will redo anyway may be skipped under Slack's rate limits; the card's last word (a
        finished or paused migration, which no tick follows) may not."""
        async with self._locks.setdefault(m.id, asyncio.Lock()):
            # drawn from the store's migration, read under the lock: a tick that read the migration before a
            # state change must not put the earlier state back on the card after that change was shown
            fresh = await self.engine.find(m.id) or m
            steps = await self.engine.steps(m.id) if fresh.state.finished else []
            reply = mm.migration_card(fresh, progress, steps, await self.engine.plan_review(m.id))
            if fresh.message_ts:
                final = fresh.state.finished or fresh.state is State.PAUSED
                await self.poster.update(fresh.message_channel, fresh.message_ts, reply, final=final)
                return fresh.message_channel, fresh.message_ts
            posted = await self.poster.post(self.channel_for(m), reply)
            if posted.ts:  # kept as Slack's channel id: a configured channel name is no good to chat.update
                await self.engine.set_message(m.id, posted.channel, posted.ts)
            return posted.channel, posted.ts


class ProvisioningPublisher:
    """What the channel sees of a provisioning request (migration_core.azure.provisioning.ProvisioningEvents)."""

    def __init__(self, poster: Poster, policy: Policy) -> None:
        self.poster, self.policy = poster, policy

    async def card(self, record: ProvisionRecord, approvers: list[str], closed: str = "") -> str:
        reply = am.provision_card(record, approvers, self.policy.required_approvals, closed)
        if not record.approval.ts:
            return (await self.poster.post(record.channel, reply)).ts
        await self.poster.update(record.channel, record.approval.ts, reply)
        return record.approval.ts

    async def progress(self, record: ProvisionRecord, note: str) -> str:
        reply = am.provisioning(record.id, record.request, note)
        if not record.progress_ts:
            return (await self.poster.post(record.channel, reply)).ts
        await self.poster.update(record.channel, record.progress_ts, reply, final=False)
        return record.progress_ts

    async def finished(
        self, record: ProvisionRecord, result: ProvisionResult, registered: bool, notes: list[str]
    ) -> None:
        await self._show(record, am.provisioned(record.id, record.request, result, registered, notes))

    async def failed(self, record: ProvisionRecord, reason: str) -> None:
        await self._show(record, am.provision_failed(record.id, record.request, reason))

    async def _show(self, record: ProvisionRecord, reply: Reply) -> None:
        if record.progress_ts:
            await self.poster.update(record.channel, record.progress_ts, reply)
        else:
            await self.poster.post(record.channel, reply)
