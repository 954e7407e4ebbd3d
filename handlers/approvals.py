"""`/pgmig cutover` and `/pgmig audit`, and the Approve / Reject buttons of the approval card.

A cutover is a team decision: the request posts a card in the notify channel; approvers (users or
user groups) approve until `required_approvals` distinct people have; the requester cannot approve;
the request expires. Every click, accepted or refused, is audited; repeated clicks change nothing.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from handlers import messages
from handlers import migration_messages as mm
from handlers.authz import may_approve, may_operate
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from migration_core.models import Approval, AuditEntry, Migration, Mode, State, Step, utcnow

STEP = "approval"


async def _audit(svc: Services, inv: Invocation, action: str, detail: str, mid: str) -> None:
    await svc.store.audit(AuditEntry(inv.user, action, detail, mid, inv.channel))


async def card_for(svc: Services, m: Migration, step: Step, closed: str = "") -> Reply:
    approvers = [a.approver for a in await svc.store.approvals(m.id, step.data["round"]) if a.decision == "approve"]
    return mm.approval_card(m, svc.engine.progress(m.id), step.data["requested_by"], approvers,
                            svc.policy.required_approvals, step.data["expires_at"], step.data["verification"], closed)


async def cutover_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    if not await may_operate(inv.user, svc.policy, svc.directory):
        return messages.error_message("only operators may request a cutover ([slack] operators)")
    m = await svc.store.get_migration(cmd.args["migration"])
    if m is None:
        return messages.error_message(f"there is no {cmd.args['migration']}")
    if m.mode is not Mode.ONLINE:
        return messages.error_message(f"{m.id} is an offline migration: it has no cutover")
    if m.state is not State.READY_FOR_CUTOVER:
        lags = [f"{db}: {p.lag_seconds or 0:.1f} s / {p.lag_bytes or 0} bytes behind"
                for db, p in svc.engine.progress(m.id).databases.items() if p.lag_bytes is not None]
        why = "a request is already waiting for approval" if m.state is State.AWAITING_APPROVAL else \
            "it must be ready_for_cutover (caught up)"
        return messages.error_message(f"{m.id} is {m.state.value}: {why}" + (
            f". Current lag: {'; '.join(lags)}" if lags else ""))
    if not svc.policy.approvers:
        return messages.error_message("no approvers are configured ([slack] approvers): a cutover needs the "
                                      "team's approval")
    if not await svc.engine.request_cutover(m.id, inv.user):
        return messages.error_message(f"{m.id} changed state meanwhile; try again")
    results = await svc.engine.verify(m.id)
    verification = "; ".join(f"{r.database} {'equal' if r.ok else f'{len(r.mismatches)} mismatch(es)'} "
                             f"({r.tables} tables, {r.rows} rows)" for r in results)
    now = utcnow()
    expires = now + timedelta(minutes=svc.policy.approval_timeout_minutes)
    channel = svc.policy.notify_channel or inv.channel
    step = Step(m.id, STEP, "waiting", f"requested by {inv.user}", now, None,
                {"round": now.isoformat(), "requested_by": inv.user, "expires_at": expires.isoformat(),
                 "verification": verification, "channel": channel, "ts": "", "open": True})
    m = await svc.store.get_migration(m.id) or m
    step.data["ts"] = await svc.poster.post(channel, await card_for(svc, m, step))
    await svc.store.save_step(step)
    await _audit(svc, inv, "cutover.requested", f"approval card in {channel}", m.id)
    return Reply(f"{m.id}: cutover requested", [messages.section(
        f"🗳️ Cutover of *{m.id}* requested: the approval card is in <#{channel}> "
        f"({svc.policy.required_approvals} approval(s) needed).")], ephemeral=False)


async def decide(action: str, migration_id: str, inv: Invocation, svc: Services) -> Reply | None:
    """An Approve or Reject click. Returns an ephemeral explanation for refused clicks, None otherwise."""
    m = await svc.store.get_migration(migration_id)
    step = await svc.store.step(migration_id, STEP)
    verb = "approve" if action == "approve" else "reject"
    if m is None or step is None or m.state is not State.AWAITING_APPROVAL:
        await _audit(svc, inv, f"cutover.{verb}.refused", "no open request", migration_id)
        return messages.error_message(f"this cutover request is no longer open ({m.state.value if m else 'gone'})")
    if datetime.fromisoformat(step.data["expires_at"]) < utcnow():
        await _audit(svc, inv, f"cutover.{verb}.refused", "request expired", m.id)
        await svc.engine.expire_approval(m.id)
        return messages.error_message("this cutover request has expired; request it again with `/pgmig cutover`")
    requester = step.data["requested_by"]
    allowed = await may_approve(inv.user, svc.policy, svc.directory)
    if verb == "approve" and inv.user == requester:
        await _audit(svc, inv, "cutover.approve.refused", "requester may not approve their own cutover", m.id)
        return messages.error_message("you requested this cutover: someone else must approve it")
    if not allowed and not (verb == "reject" and inv.user == requester):
        await _audit(svc, inv, f"cutover.{verb}.refused", "not an approver", m.id)
        return messages.error_message(f"only approvers may {verb} a cutover ([slack] approvers)")
    if not await svc.store.add_approval(Approval(m.id, inv.user, verb, round=step.data["round"])):
        await _audit(svc, inv, f"cutover.{verb}.repeated", "already recorded", m.id)
        return messages.error_message(f"your decision on {m.id} is already recorded")
    await _audit(svc, inv, f"cutover.{verb}", "", m.id)
    if verb == "reject":
        await svc.engine.reject_cutover(m.id, inv.user)
        return None
    approvals = [a for a in await svc.store.approvals(m.id, step.data["round"]) if a.decision == "approve"]
    if len(approvals) >= svc.policy.required_approvals:
        who = ", ".join(a.approver for a in approvals)
        svc.engine.start_cutover(m.id, f"approved by {who}")
        return None
    await svc.poster.update(step.data["channel"], step.data["ts"], await card_for(svc, m, step))
    return None


async def audit_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    subject = cmd.args["migration"]
    known = await svc.store.step(subject, "provision") if subject.startswith("prov-") else \
        await svc.store.get_migration(subject)
    if known is None:
        return messages.error_message(f"there is no {subject}")
    return mm.audit_log(subject, await svc.store.audit_log(subject))
