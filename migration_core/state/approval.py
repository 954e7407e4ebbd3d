"""The approval rules a team decision follows — a cutover or a provisioning request alike.

A request is one round: it has an id, a requester, an expiry, and the card that shows it. A click is
refused when the round is closed or expired, when the requester approves their own request (or, for
a cutover, whoever started the migration approves it: four eyes), or when the person is not an approver
(a requester may still withdraw their own request by rejecting it). Each person counts once per round;
`required` distinct approvals decide it. Every click, accepted or refused, is audited as
`<kind>.<approve|reject>[.refused|.repeated]`.

Whether someone is an approver (users, Slack user groups) is the handlers' policy; this module gets
the answer and applies the rules.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from migration_core.state.models import Approval, AuditEntry, Step, StepKind, StepState, utcnow
from migration_core.store import Store


@dataclass
class UnappliedChange:
    """A schema change captured on a streaming migration's source that its target does not have (yet) when the
    cutover is asked for (observe/ddl.py): the approvers see what the target will lack."""

    database: str
    id: int
    tag: str
    statement: str  # shortened, on one line
    state: str  # pending, skipped by …: why, failed on the target: …, apply decided …
    blocks_replication: bool  # pending: the stream waits at it until it is decided


@dataclass
class ApprovalRequest:
    """One round of asking the team."""

    subject: str  # mig-N or prov-N
    requested_by: str
    expires_at: datetime
    round: str = field(default_factory=lambda: secrets.token_hex(8))
    channel: str = ""  # where the card is
    ts: str = ""  # the card's message
    open: bool = True
    verification: str = ""  # what was checked when it was asked for (a cutover's tables)
    forecast: str = ""  # a cutover's predicted write freeze when it was asked for (observe/forecast.py)
    schema_changes: list[UnappliedChange] | None = None  # a cutover's, when asked for; None: schema not watched

    @classmethod
    def new(
        cls, subject: str, requested_by: str, minutes: int, channel: str, verification: str = ""
    ) -> "ApprovalRequest":
        return cls(
            subject, requested_by, utcnow() + timedelta(minutes=minutes), channel=channel, verification=verification
        )

    @property
    def expired(self) -> bool:
        return self.expires_at < utcnow()

    def as_dict(self) -> dict:
        return {**asdict(self), "expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_dict(cls, data: dict) -> "ApprovalRequest":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("schema_changes") is not None:
            known["schema_changes"] = [UnappliedChange(**c) for c in known["schema_changes"]]
        return cls(**{**known, "expires_at": datetime.fromisoformat(data["expires_at"])})


class Verdict(StrEnum):
    REFUSED = "refused"  # the click changes nothing (reason says why)
    RECORDED = "recorded"  # an approval, not yet enough
    APPROVED = "approved"  # this approval completed the quorum
    REJECTED = "rejected"


@dataclass
class Decision:
    verdict: Verdict
    reason: str = ""
    approvers: list[str] = field(default_factory=list)  # the round's approvals so far


@dataclass
class Closed:
    """How an open cutover request ended: `verdict` approved, rejected, expired, or closed (the
    migration moved on some other way: cancelled, failed), and who decided."""

    request: ApprovalRequest
    verdict: str
    by: list[str]


async def close_cutover_request(
    store: Store, migration_id: str, verdict: str = "closed", by: list[str] | None = None
) -> Closed | None:
    """Record in the approval step how its open request ended (`/pgmig status` and the card show it);
    None when no request was open. Called by the move that ends it, before that move is announced."""
    step = await store.step(migration_id, StepKind.APPROVAL)
    if step is None:
        return None
    request = ApprovalRequest.from_dict(step.data)
    if not request.open:
        return None
    request.open = False
    closed = Closed(request, verdict, list(by or []))
    data = {**step.data, **request.as_dict(), "decision": verdict, "decided_by": closed.by}
    await store.save_step(Step(migration_id, step.name, StepState.DONE, step.detail, step.started_at, utcnow(), data))
    return closed


async def started_by(store: Store, request: ApprovalRequest) -> str:
    """Who started the migration a cutover request is about: four eyes means the starter may not approve
    its cutover either, whoever typed `/pgmig cutover`. Read from the migration itself, so a request
    opened before this rule existed follows it too."""
    m = await store.get_migration(request.subject)
    return m.requested_by if m else ""


async def approvers(store: Store, request: ApprovalRequest) -> list[str]:
    return [a.approver for a in await store.approvals(request.subject, request.round) if a.decision == "approve"]


async def decide(
    store: Store,
    kind: str,
    request: ApprovalRequest,
    user: str,
    verb: str,
    *,
    is_approver: bool,
    required: int,
    channel: str = "",
) -> Decision:
    """Apply the rules to one click; the caller acts on the verdict (start, close, update the card)."""

    async def refused(reason: str, why: str, suffix: str = "refused") -> Decision:
        await store.audit(AuditEntry(user, f"{kind}.{verb}.{suffix}", why, request.subject, channel))
        return Decision(Verdict.REFUSED, reason, await approvers(store, request))

    if not request.open:
        return await refused(f"this {kind} request is no longer open", "no open request")
    if request.expired:
        return await refused(f"this {kind} request has expired", "request expired")
    if verb == "approve" and user == request.requested_by:
        return await refused(
            "you asked for this: someone else must approve it", f"the requester may not approve their own {kind}"
        )
    if verb == "approve" and kind == "cutover" and user == await started_by(store, request):
        return await refused(
            f"you started {request.subject}: another approver must approve",
            "the migration's starter may not approve its cutover",
        )
    if not is_approver and not (verb == "reject" and user == request.requested_by):
        return await refused(f"only approvers may {verb} ([slack] approvers)", "not an approver")
    if not await store.add_approval(Approval(request.subject, user, verb, round=request.round)):
        if any(a.approver == user for a in await store.approvals(request.subject, request.round)):
            return await refused(
                f"your decision on {request.subject} is already recorded", "already recorded", "repeated"
            )
        return await refused(f"this {kind} request was decided or closed meanwhile", "round closed")
    await store.audit(AuditEntry(user, f"{kind}.{verb}", "", request.subject, channel))
    found = await approvers(store, request)
    if verb == "reject":
        return Decision(Verdict.REJECTED, f"rejected by {user}", found)
    return Decision(Verdict.APPROVED if len(found) >= required else Verdict.RECORDED, "", found)
