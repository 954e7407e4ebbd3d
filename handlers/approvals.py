"""`/pgmig cutover` and `/pgmig audit`, and the Approve / Reject buttons of the approval card: parse,
authorize, call the engine (whose rules are migration_core/approval.py), render. In Slack, Reject first opens
a form asking why (`reject_form`; bot/app.py opens it and hands its submission back as the click, with the
reason after the button's value); the shell's `press Reject` rejects without one."""

from __future__ import annotations

import json
from dataclasses import dataclass

from handlers import messages
from handlers import migration_messages as mm
from handlers.args import AuditArgs, MigrationArgs
from handlers.authz import may_approve
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from migration_core.state.approval import ApprovalRequest, Verdict

REJECT_FORM = mm.REJECT_FORM


async def card_for(svc: Services, request: ApprovalRequest, approvers: list[str], closed: str = "") -> Reply:
    m = await svc.engine.find(request.subject)
    assert m is not None
    return mm.approval_card(m, svc.engine.progress(m.id), request, approvers, svc.policy.required_approvals, closed)


async def cutover_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    mid = cmd.of(MigrationArgs).migration
    if await svc.engine.find(mid) is None:
        return messages.error_message(f"there is no {mid}")
    if not svc.policy.approvers:
        return messages.error_message(
            "no approvers are configured ([slack] approvers): a cutover needs the team's approval"
        )
    channel = svc.policy.notify_channel or inv.channel
    request = await svc.engine.prepare_cutover(mid, inv.user, channel, svc.policy.approval_timeout_minutes)
    posted = await svc.poster.post(channel, await card_for(svc, request, []))
    request.channel, request.ts = posted.channel or channel, posted.ts  # Slack's id: chat.update needs it
    if not await svc.engine.open_cutover(request):
        await svc.poster.update(
            request.channel,
            request.ts,
            await card_for(svc, request, [], "the migration moved on before the request was open"),
        )
        return messages.error_message(f"{mid} changed state meanwhile; try again")
    return mm.cutover_requested(request, svc.policy.required_approvals)


async def decide(action: str, value: str, inv: Invocation, svc: Services) -> Reply | None:
    """An Approve or Reject click (its value: `mig-N:round`). Returns an ephemeral explanation for
    refused clicks, None otherwise."""
    verb = "approve" if action == "approve" else "reject"
    migration_id, _, rest = value.partition(":")
    round, _, reason = rest.partition(":")  # a reason follows when the Reject form sent it
    decision, request = await svc.engine.decide_cutover(
        migration_id,
        round,
        inv.user,
        verb,
        is_approver=await may_approve(inv.user, svc.policy, svc.directory),
        required=svc.policy.required_approvals,
        channel=inv.channel,
        reason=reason if verb == "reject" else "",
    )
    if decision.verdict is Verdict.REFUSED:
        return messages.error_message(
            decision.reason
            + ("; request it again with `/pgmig cutover`" if request is not None and request.expired else "")
        )
    if decision.verdict is Verdict.RECORDED and request is not None:
        await svc.poster.update(request.channel, request.ts, await card_for(svc, request, decision.approvers))
    return None


async def audit_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(AuditArgs)
    found = await svc.engine.audit_log(a.migration, a.page, a.all)
    if found is None:
        return messages.error_message(f"there is no {a.migration}")
    return mm.audit_log(a.migration, found, a.all)


@dataclass
class RejectForm:
    """A submitted Reject form: the click it stands for (with the reason after the button's value, as
    `decide` reads it) and where its answer goes."""

    value: str
    channel: str
    on_home: bool


async def reject_form(value: str, channel: str, on_home: bool, svc: Services) -> dict | Reply:
    """What Reject opens: a modal asking why (a confirm dialog cannot take text). A card whose migration is
    gone is answered at once instead."""
    m = await svc.engine.find(value.partition(":")[0])
    if m is None:
        return messages.error_message("this cutover request is no longer open")
    metadata = json.dumps({"value": value[:200], "channel": channel, "home": on_home})
    return mm.reject_form(m, metadata)


def read_reject(view: dict) -> RejectForm:
    """The submitted Reject form; its value carries the reason (`mig-N:round:REASON`) for the router."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        meta = {}
    values = (view.get("state") or {}).get("values") or {}
    reason = str(((values.get(mm.REASON) or {}).get(mm.REASON) or {}).get("value") or "")
    value = str(meta.get("value") or "")
    return RejectForm(f"{value}:{' '.join(reason.split())}", str(meta.get("channel") or ""), bool(meta.get("home")))
