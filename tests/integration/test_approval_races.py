"""The approval gate under races and replays, with real signed payloads through the HTTP app: whatever
the interleaving, at most one cutover starts, and the final state is the one the audit tells."""

from __future__ import annotations

import asyncio
import time

import pytest

from handlers.actions import Action
from migration_core.state.models import State
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import text_of
from tests.integration.sample_data import online_pair
from tests.integration.slack_harness import Running, running

APPROVE, REJECT = Action.APPROVE_CUTOVER.value, Action.REJECT_CUTOVER.value


def team_config(src, tgt, required: int) -> str:
    return config_toml(
        {"onprem": src, "azure": tgt},
        extra=f'[slack]\nnotify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1", "U0APPROVER3", "S0DBAS"]\n'
        f"required_approvals = {required}\n[migration]\nprogress_interval_seconds = 0.1\n"
        "[online]\nfence_grace_seconds = 0.1\n",
    )


@pytest.fixture
def pair(cluster_root, request):
    src, tgt = online_pair(cluster_root, request.node.name[-24:])
    yield src, tgt
    src.destroy()
    tgt.destroy()


async def ready_with_card(slack: Running) -> None:
    await slack.command("migrate onprem azure --mode online --db app", user="U0ALICE", key="m")
    await slack.reply("m")
    await slack.fake.wait_for(
        "calls", lambda c: c.params.get("thread_ts") and "ready_for_cutover" in text_of(c.params), timeout=60
    )
    await slack.command("cutover mig-1", user="U0ALICE", key="c")
    assert "approval card" in text_of(await slack.reply("c"))


async def state(slack: Running) -> State:
    return (await slack.services.engine.store.get_migration("mig-1")).state


async def settled(slack: Running) -> State:
    """Wait until the clicks were handled (an ack returns before its work) and no cutover is in flight;
    the state then."""
    await slack.tasks.drain(30)
    for _ in range(300):
        now = await state(slack)
        if now not in (State.CUTTING_OVER, State.RELEASED):
            return now
        await asyncio.sleep(0.1)
    raise AssertionError(f"mig-1 still {now.value}")


async def actions(slack: Running) -> list[str]:
    return [e.action for e in await slack.services.engine.store.audit_log("mig-1")]


async def assert_consistent(slack: Running) -> State:
    """At most one cutover, and the audit's last state change is the migration's state."""
    final = await settled(slack)
    log = await slack.services.engine.store.audit_log("mig-1")
    assert [e.action for e in log].count("cutover.started") <= 1
    states = [
        e.detail.split(":", 1)[0]
        for e in log
        if e.action in ("state", "cutover.approved", "cutover.rejected", "cutover.expired", "cutover.requested")
    ]
    assert states[-1] == final.value, states
    return final


async def test_a_reject_beats_an_approval_still_resolving_its_group(tmp_path, pair):
    src, tgt = pair
    async with running(tmp_path, team_config(src, tgt, 1), usergroups={"S0DBAS": ["U0APPROVER2"]}) as slack:
        await ready_with_card(slack)
        slack.fake.slow["usergroups.users.list"] = 1.5  # U0APPROVER2 is an approver only through the group
        approving = asyncio.create_task(slack.press(APPROVE, user="U0APPROVER2", key="approve"))
        await asyncio.sleep(0.3)
        await slack.reject("not now", user="U0APPROVER1", key="reject")
        await approving
        late = text_of(await slack.reply("approve"))
        assert "no longer open" in late or "decided meanwhile" in late, late
        assert await assert_consistent(slack) is State.READY_FOR_CUTOVER
        assert "cutover.started" not in await actions(slack)
        assert src.psql("SHOW default_transaction_read_only", database="app") == "off"
        # the core recorded the verdict it made, with the one who made it (not an inference afterwards)
        decided = (await slack.services.engine.store.step("mig-1", "approval")).data
        assert (decided["decision"], decided["decided_by"], decided["open"]) == ("rejected", ["U0APPROVER1"], False)


async def test_two_approvals_at_the_same_moment_start_one_cutover(tmp_path, pair):
    src, tgt = pair
    async with running(tmp_path, team_config(src, tgt, 1)) as slack:
        await ready_with_card(slack)
        await asyncio.gather(
            slack.press(APPROVE, user="U0APPROVER1", key="a1"), slack.press(APPROVE, user="U0APPROVER3", key="a3")
        )
        assert await assert_consistent(slack) is State.COMPLETED
        assert (await actions(slack)).count("cutover.started") == 1
        refused = [r for r in slack.fake.responses if r["key"] in ("a1", "a3")]
        assert len(refused) <= 1 and all("decided" in text_of(r) or "no longer open" in text_of(r) for r in refused)


async def test_an_approval_racing_the_expiry(tmp_path, pair):
    src, tgt = pair
    async with running(tmp_path, team_config(src, tgt, 1)) as slack:
        await ready_with_card(slack)
        step = await slack.services.engine.store.step("mig-1", "approval")
        from datetime import timedelta

        from migration_core.state.models import utcnow

        step.data["expires_at"] = (utcnow() + timedelta(seconds=0.3)).isoformat()
        await slack.services.engine.store.save_step(step)
        await asyncio.sleep(0.25)
        await slack.press(APPROVE, user="U0APPROVER1", key="a")
        final = await assert_consistent(slack)
        assert final in (State.COMPLETED, State.READY_FOR_CUTOVER)
        assert ((await actions(slack)).count("cutover.started") == 1) == (final is State.COMPLETED)
        decided = (await slack.services.engine.store.step("mig-1", "approval")).data
        assert decided["decision"] == ("approved" if final is State.COMPLETED else "expired")


async def test_an_approval_racing_a_cancel(tmp_path, pair):
    src, tgt = pair
    async with running(tmp_path, team_config(src, tgt, 1)) as slack:
        await ready_with_card(slack)
        await asyncio.gather(
            slack.press(APPROVE, user="U0APPROVER1", key="a"), slack.command("cancel mig-1", user="U0ALICE", key="x")
        )
        await slack.reply("x")
        final = await assert_consistent(slack)
        assert final in (State.COMPLETED, State.CANCELLED), final
        if final is State.CANCELLED:  # the cancel won, or interrupted the cutover before release: all undone
            assert src.psql("SHOW default_transaction_read_only", database="app") == "off"
            assert src.psql("SELECT count(*) FROM pg_replication_slots") == "0"
        else:
            assert "released" in text_of(await slack.reply("x")) or "already completed" in text_of(
                await slack.reply("x")
            )


async def test_replays_and_duplicate_deliveries_count_once_and_only_in_their_round(tmp_path, pair):
    src, tgt = pair
    async with running(tmp_path, team_config(src, tgt, 2)) as slack:
        await ready_with_card(slack)
        round_one = slack.button(APPROVE)
        body, headers = slack.signed_click(APPROVE, round_one, user="U0APPROVER1", key="first")
        assert (await slack.post(body, headers)).status == 200
        assert (await slack.post(body, headers)).status == 200  # Slack delivers it again, byte for byte
        await slack.fake.wait_for("calls", lambda c: c.method == "chat.update" and "1 of 2" in text_of(c.params))
        for _ in range(50):
            if "action.duplicate" in await actions(slack):
                break
            await asyncio.sleep(0.1)
        assert (await actions(slack)).count("cutover.approve") == 1 and "action.duplicate" in await actions(slack)
        await slack.reject("no", user="U0APPROVER3", key="no")
        await slack.fake.wait_for(
            "calls", lambda c: c.params.get("thread_ts") and "rejected* by <@U0APPROVER3>" in text_of(c.params)
        )
        await slack.command("cutover mig-1", user="U0ALICE", key="again")
        await slack.reply("again")
        assert slack.button(APPROVE) != round_one  # a new round
        assert (await slack.post(body, headers)).status == 200  # the old click, replayed in the new round
        await slack.click(APPROVE, round_one, user="U0APPROVER1", key="stale")  # or clicked anew on the old card
        assert "earlier cutover request" in text_of(await slack.reply("stale"))
        request = await slack.services.engine.cutover_request("mig-1")
        assert await slack.services.engine.store.approvals("mig-1", request.round) == []
        assert await state(slack) is State.AWAITING_APPROVAL


async def test_a_cutover_request_whose_checks_fail_leaves_the_migration_ready(tmp_path, pair):
    src, tgt = pair
    async with running(tmp_path, team_config(src, tgt, 1)) as slack:
        await slack.command("migrate onprem azure --mode online --db app", user="U0ALICE", key="m")
        await slack.reply("m")
        await slack.fake.wait_for(
            "calls", lambda c: c.params.get("thread_ts") and "ready_for_cutover" in text_of(c.params), timeout=60
        )
        src.stop()  # the source is unreachable when the cutover is asked for
        try:
            await slack.command("cutover mig-1", user="U0ALICE", key="c")
            assert "connection refused" in text_of(await slack.reply("c"))
            assert await state(slack) is State.READY_FOR_CUTOVER
            assert not [c for c in slack.fake.calls if "Approve cutover of" in text_of(c.params)]
        finally:
            src.start()
        deadline = time.monotonic() + 30  # the target's apply worker reconnects on its own schedule
        while src.psql("SELECT bool_and(active) FROM pg_replication_slots WHERE slot_name LIKE 'pgmig%'") != "t":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await slack.command("cutover mig-1", user="U0ALICE", key="c2")  # once it streams again, the request works
        assert "approval card" in text_of(await slack.reply("c2"))


async def test_an_approval_while_a_recovery_is_still_telling_the_channel_starts_the_cutover(tmp_path, pair):
    """The team decides while the task that fell back an interrupted cutover at start-up is still posting
    (Slack slow): the decided cutover waits for that task and runs — it was refused once, and the migration
    sat in cutting_over until the next restart fell it back (seen in the crash test under load)."""
    src, tgt = pair
    async with running(tmp_path, team_config(src, tgt, 1)) as slack:
        await ready_with_card(slack)
        engine = slack.services.engine
        still_posting = asyncio.Event()
        engine.runner.track("mig-1", still_posting.wait(), "recover cutover mig-1")  # as _take_over tracks one
        await slack.press(APPROVE, user="U0APPROVER1", key="a1")
        await asyncio.sleep(0.5)
        assert await state(slack) is State.CUTTING_OVER  # decided, waiting for the recovery's task to end
        still_posting.set()
        assert await assert_consistent(slack) is State.COMPLETED
