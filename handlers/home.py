"""The App Home tab: the cutovers and the destructive schema changes waiting for this person's approval, and the
active migrations with their state, lag and next step. Read-only: built from what `/pgmig status`, `/pgmig ddl`
and the cards read; its buttons are the cards' own (same action ids and values, so a click from the Home tab is
the same decision as one on the card)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from slack_sdk.models.blocks import ActionsBlock, ButtonElement
from slack_sdk.models.views import View

from handlers import ddl_messages as dm
from handlers import migration_messages as mm
from handlers.approvals import card_for
from handlers.authz import may_approve, refusal
from handlers.context import Services
from handlers.grammar import COMMANDS
from handlers.messages import context, header, section, sections
from handlers.modal import OPEN
from migration_core.engine.api import MONITORED
from migration_core.observe.ddl import Captured
from migration_core.state.approval import ApprovalRequest
from migration_core.state.models import Migration, State

log = logging.getLogger(__name__)
DDL = COMMANDS["ddl"]  # who may decide a schema change is the command's rule

REFRESH = "pgmig-home.refresh"
MAX_BLOCKS = 100  # Slack's limit for a view
SHOWN_APPROVALS = 10
SHOWN_MIGRATIONS = 25


@dataclass
class Pending:
    migration: Migration
    request: ApprovalRequest
    approvers: list[str]


@dataclass
class SchemaApprovals:
    """Destructive schema changes waiting for an approval the reader may give, and the migrations whose changes
    could not be read now (their servers did not answer)."""

    changes: list[tuple[Migration, Captured]]
    unread: list[str]


def next_step(m: Migration) -> str:
    """What someone would do next, as the command to type."""
    if m.state is State.READY_FOR_CUTOVER:
        return f"caught up: `/pgmig cutover {m.id}` asks the team to approve the switch"
    if m.state is State.AWAITING_APPROVAL:
        return "waiting for the team's approval (the card is in the notify channel)"
    if m.state is State.PAUSED:
        return f"paused after export: review the files, then `/pgmig resume {m.id}`"
    if m.state in (State.CUTTING_OVER, State.RELEASED):
        return f"cutting over: `/pgmig status {m.id}`"
    return f"`/pgmig status {m.id}` · `/pgmig cancel {m.id}`"


async def pending_approvals(user: str, svc: Services, migrations: list[Migration]) -> list[Pending]:
    """Open cutover requests `user` may approve and has not yet: neither asked for nor started by them (four
    eyes, approval.py), not expired."""
    waiting = [m for m in migrations if m.state is State.AWAITING_APPROVAL]
    if not waiting or not await may_approve(user, svc.policy, svc.directory):
        return []
    found = []
    for m in waiting:
        request = await svc.engine.cutover_request(m.id)
        if request is None or not request.open or request.expired or user in (request.requested_by, m.requested_by):
            continue
        approvers = await svc.engine.cutover_approvers(request)
        if user not in approvers:
            found.append(Pending(m, request, approvers))
    return found


async def pending_schema_changes(user: str, svc: Services, migrations: list[Migration]) -> SchemaApprovals:
    """Destructive changes captured on streaming migrations' sources, not decided yet, that `user` may approve
    applying (an operator, and an approver where approvers are set) and has not approved yet. Read from the
    servers, as `/pgmig ddl` reads them."""
    found = SchemaApprovals([], [])
    streaming = [m for m in migrations if m.state in MONITORED]
    if not streaming or await refusal(DDL.who, DDL.action, user, svc.policy, svc.directory) is not None:
        return found
    if svc.policy.approvers and not await may_approve(user, svc.policy, svc.directory):
        return found
    for m in streaming:
        try:
            listed = await svc.engine.schema_changes(m.id)
        except Exception:  # a server that does not answer must not take the Home tab away
            log.warning("the schema changes of %s could not be read for the Home tab", m.id, exc_info=True)
            found.unread.append(m.id)
            continue
        found.changes += [
            (m, c)
            for changes in listed.values()
            for c in changes
            if c.pending and c.destructive and user not in c.approvals
        ]
    return found


def _schema_blocks(found: SchemaApprovals, required: int) -> list[dict]:
    blocks: list[dict] = []
    if found.changes:
        blocks.append(header(f"Schema changes waiting for your approval: {len(found.changes)}"))
        for m, c in found.changes[:SHOWN_APPROVALS]:
            blocks += dm.awaiting_you(m.id, c, required)
        if len(found.changes) > SHOWN_APPROVALS:
            more = len(found.changes) - SHOWN_APPROVALS
            blocks.append(context(f"… and {more} more: `/pgmig ddl mig-N` lists each migration's"))
    if found.unread:
        blocks.append(
            context(
                f"the schema changes of {', '.join(found.unread)} could not be read now (a server did not answer): "
                "*Refresh* later, or `/pgmig ddl mig-N`"
            )
        )
    return blocks


def _migration_blocks(m: Migration, svc: Services, now: float) -> list[dict]:
    progress = svc.engine.progress(m.id)
    lines = [f"{mm.icon(m.state)} *{m.id}* {m.state.value} · {mm.describe(m)} · by {mm.mention(m.requested_by)}"]
    lines += [f"      {mm.database_line(progress.of(db), now)}" for db in m.databases]
    return [*sections(lines), context("Next: " + next_step(m))]


async def home_view(user: str, svc: Services) -> dict:
    """The Home tab for `user`, as `views.publish` takes it."""
    active = await svc.engine.migrations(active_only=True)
    pending = await pending_approvals(user, svc, active)
    blocks: list[dict] = [
        header("pgmig"),
        ActionsBlock(
            elements=[
                ButtonElement(text="New migration…", action_id=OPEN, style="primary"),
                ButtonElement(text="Refresh", action_id=REFRESH),
            ]
        ).to_dict(),
    ]
    if pending:
        blocks.append(header(f"Waiting for your approval: {len(pending)}"))
        for p in pending[:SHOWN_APPROVALS]:
            card = await card_for(svc, p.request, p.approvers)
            blocks += card.blocks
        if len(pending) > SHOWN_APPROVALS:
            blocks.append(context(f"… and {len(pending) - SHOWN_APPROVALS} more: see the notify channel"))
    blocks += _schema_blocks(await pending_schema_changes(user, svc, active), dm.required_approvals(svc.policy))
    now = time.time()
    blocks.append(header(f"Active migrations: {len(active)}"))
    if not active:
        blocks.append(section("None. Start one with *New migration…* or `/pgmig migrate`."))
    for m in active[-SHOWN_MIGRATIONS:]:
        blocks += _migration_blocks(m, svc, now)
    if len(active) > SHOWN_MIGRATIONS:
        blocks.append(context(f"{len(active) - SHOWN_MIGRATIONS} older active migration(s): `/pgmig status`"))
    blocks.append(context(f"Updated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now))} · `/pgmig list`"))
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1] + [context("… more than a Home tab can show: `/pgmig status`")]
    return View(type="home", callback_id="pgmig.home", blocks=blocks).to_dict()
