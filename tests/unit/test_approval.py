"""The approval rules, cutover and provisioning alike: who may decide, once, within the round's time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from migration_core.state import approval
from migration_core.state.approval import ApprovalRequest, Verdict
from migration_core.state.models import Migration, Mode, State, Step, StepKind, StepState, utcnow
from migration_core.store import Store


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(str(tmp_path / "state.sqlite"))
    yield s
    await s.close()


def request(**kw) -> ApprovalRequest:
    return ApprovalRequest.new("mig-1", "U0ALICE", 60, "C0", **kw)


async def opened(store: Store, req: ApprovalRequest) -> ApprovalRequest:
    """The migration waits for approval in this round (as Engine.open_cutover leaves it)."""
    if await store.get_migration("mig-1") is None:
        await store.create_migration(Migration("mig-1", "a", "b", ["db"], Mode.ONLINE, State.READY_FOR_CUTOVER, "U1"))
    await store.transition("mig-1", State.AWAITING_APPROVAL, round=req.round)
    return req


async def decide(store, req, user, verb="approve", approver=True, required=2):
    return await approval.decide(store, "cutover", req, user, verb, is_approver=approver, required=required)


async def test_a_quorum_of_distinct_approvers_decides(store):
    req = await opened(store, request())
    assert (await decide(store, req, "U0BOB")).verdict is Verdict.RECORDED
    repeated = await decide(store, req, "U0BOB")
    assert repeated.verdict is Verdict.REFUSED and "already recorded" in repeated.reason
    done = await decide(store, req, "U0CAROL")
    assert done.verdict is Verdict.APPROVED and done.approvers == ["U0BOB", "U0CAROL"]
    actions = [e.action for e in await store.audit_log("mig-1")]
    assert actions == ["cutover.approve", "cutover.approve.repeated", "cutover.approve"]


async def test_the_requester_and_strangers_cannot_approve_but_the_requester_may_withdraw(store):
    req = await opened(store, request())
    own = await decide(store, req, "U0ALICE")
    assert own.verdict is Verdict.REFUSED and "someone else must approve" in own.reason
    stranger = await decide(store, req, "U0MALLORY", approver=False)
    assert stranger.verdict is Verdict.REFUSED and "only approvers may approve" in stranger.reason
    assert (await decide(store, req, "U0MALLORY", "reject", approver=False)).verdict is Verdict.REFUSED
    assert (await decide(store, req, "U0ALICE", "reject", approver=False)).verdict is Verdict.REJECTED


async def test_the_migrations_starter_cannot_approve_a_cutover_someone_else_asked_for(store):
    req = await opened(store, request())  # U1 started mig-1, U0ALICE asked for its cutover
    own = await decide(store, req, "U1", required=1)
    assert own.verdict is Verdict.REFUSED and own.reason == "you started mig-1: another approver must approve"
    assert not await store.approvals("mig-1")
    assert [(e.action, e.detail) for e in await store.audit_log("mig-1")] == [
        ("cutover.approve.refused", "the migration's starter may not approve its cutover")
    ]
    assert (await decide(store, req, "U0BOB", required=1)).verdict is Verdict.APPROVED


async def test_expired_and_closed_rounds_refuse_every_click(store):
    late = await opened(store, request())
    late.expires_at = utcnow() - timedelta(seconds=1)
    assert "expired" in (await decide(store, late, "U0BOB")).reason
    closed = request()
    closed.open = False
    assert "no longer open" in (await decide(store, closed, "U0BOB")).reason
    assert not await store.approvals("mig-1")


async def test_an_approval_counts_only_in_its_own_round(store):
    first = await opened(store, request())
    await decide(store, first, "U0BOB")
    second = await opened(store, request())  # a new request: the first round is closed
    assert first.round != second.round
    late = await decide(store, first, "U0CAROL")  # a click on the old card, or its replay
    assert late.verdict is Verdict.REFUSED and "decided or closed" in late.reason
    assert (await decide(store, second, "U0CAROL")).approvers == ["U0CAROL"]


def test_a_request_survives_the_store():
    req = request(verification="app equal")
    again = ApprovalRequest.from_dict(req.as_dict())
    assert again == req


async def test_a_requests_card_data_is_saved_only_while_its_round_is_open(store):
    """What a watch saves into an open request (the schema changes its card lists) never reopens a round a
    decision closed after the watch read it: the write is conditional on the round, in one statement."""
    req = await opened(store, request())
    step = Step("mig-1", StepKind.APPROVAL, StepState.WAITING, "requested", utcnow(), None, req.as_dict())
    assert await store.save_step(step, open_round=req.round)
    await store.transition("mig-1", State.READY_FOR_CUTOVER, expect=(State.AWAITING_APPROVAL,))  # rejected
    await approval.close_cutover_request(store, "mig-1", "rejected", ["U0BOB"])
    assert not await store.save_step(step, open_round=req.round)  # the watch read it open, just before
    saved = await store.step("mig-1", StepKind.APPROVAL)
    assert saved is not None and saved.state == StepState.DONE and not ApprovalRequest.from_dict(saved.data).open
    later = await opened(store, request())  # a new round: an old round's write is still refused
    assert not await store.save_step(step, open_round=req.round)
    assert await store.save_step(step, open_round=later.round)
