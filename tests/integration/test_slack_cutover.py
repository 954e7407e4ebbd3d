"""The cutover as a team decision in Slack: approval card, signed clicks, policy, idempotency, audit."""

from __future__ import annotations

import json

import pytest

from handlers.actions import Action
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import FakeSlack, text_of
from tests.integration.sample_data import online_pair
from tests.integration.slack_harness import running


@pytest.fixture
async def team(tmp_path, cluster_root, request):
    """A running app and its clusters; approvals required: 2, or the test's indirect parameter."""
    src, tgt = online_pair(cluster_root, "cut")
    required = getattr(request, "param", 2)
    config = config_toml(
        {"onprem": src, "azure": tgt},
        extra='[slack]\nnotify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1", "S0DBAS"]\n'
        f"required_approvals = {required}\n"
        "[migration]\nprogress_interval_seconds = 0.1\n[online]\nfence_grace_seconds = 0.2\n",
    )
    try:
        async with running(tmp_path, config, usergroups={"S0DBAS": ["U0APPROVER2"]}) as app:
            yield app, src, tgt
    finally:
        src.destroy()
        tgt.destroy()


async def ready(slack, starter: str = "U0ALICE") -> None:
    await slack.command("migrate onprem azure --mode online --db app", user=starter, key="m")
    await slack.reply("m")
    await slack.fake.wait_for(
        "calls",
        lambda c: (
            c.method == "chat.postMessage" and c.params.get("thread_ts") and "ready_for_cutover" in text_of(c.params)
        ),
        timeout=60,
    )


def card_posts(fake: FakeSlack) -> list:
    return [c for c in fake.calls if c.method == "chat.postMessage" and "Approve cutover of" in text_of(c.params)]


async def test_two_approvals_run_the_cutover_and_everything_is_audited(team):
    slack, src, tgt = team
    await ready(slack)
    await slack.command("cutover mig-1", user="U0ALICE", key="c")
    assert "approval card is in <#C0NOTIFY>" in text_of(await slack.reply("c"))
    [card] = card_posts(slack.fake)
    blocks = json.loads(card.params["blocks"]) if isinstance(card.params["blocks"], str) else card.params["blocks"]
    buttons = blocks[-1]["elements"]
    assert [b["action_id"] for b in buttons] == [Action.APPROVE_CUTOVER.value, Action.REJECT_CUTOVER.value]
    assert buttons[0]["style"] == "primary" and buttons[1]["style"] == "danger" and buttons[0]["confirm"]
    assert "0 of 2" in text_of(card.params)

    await slack.press(Action.APPROVE_CUTOVER.value, user="U0ALICE", key="own")
    assert "someone else must approve" in text_of(await slack.reply("own"))
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0MALLORY", key="stranger")
    assert "only approvers may approve" in text_of(await slack.reply("stranger"))
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="a1")
    update = await slack.fake.wait_for("calls", lambda c: c.method == "chat.update" and "1 of 2" in text_of(c.params))
    assert update.params["ts"] == (await slack.services.engine.store.step("mig-1", "approval")).data["ts"]
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="a1again")
    assert "already recorded" in text_of(await slack.reply("a1again"))
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER2", key="a2")  # via user group
    done = await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and "completed" in text_of(c.params),
        timeout=60,
    )
    assert "writes unavailable" in text_of(done.params) and "<@U0ALICE>" in text_of(done.params)
    closed = [c for c in slack.fake.calls if c.method == "chat.update" and c.params["ts"] == update.params["ts"]][-1]
    assert '"actions"' not in text_of(closed.params)  # decided: no buttons left
    assert src.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    assert tgt.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated", database="app") == "1"
    assert src.psql("SHOW default_transaction_read_only", database="app") == "on"

    for n in range(55):  # a script polling status: more than a page of read-only commands
        await slack.command("status mig-1", user="U0SCRIPT", key=f"poll{n}")
    await slack.command("audit mig-1", key="audit")
    audit = text_of(await slack.reply("audit"))
    assert "/pgmig status" not in audit and "56 read-only commands" in audit  # and this audit and "--all" in audit
    for expected in (
        "cutover.requested",
        "cutover.approve.refused",
        "cutover.approve.repeated",
        "cutover.approve",
        "cutover.started",
        "cutover.completed",
        "ready_for_cutover",
        "&lt;@U0MALLORY&gt;",
    ):
        assert expected in audit or expected.replace("&lt;", "<").replace("&gt;", ">") in audit, expected
    await slack.command("audit mig-1 --all", key="all")
    newest = text_of(await slack.reply("all"))
    assert (
        newest.count("/pgmig status mig-1") == 48
        and "/pgmig audit mig-1 --all" in newest
        and "page 1 of 2" in newest
        and "--page 2 --all" in newest
    )
    await slack.command("audit mig-1 --all --page 2", key="older")
    older = text_of(await slack.reply("older"))
    assert (
        "page 2 of 2" in older and "cutover.requested" in older and older.count("/pgmig status mig-1") == 55 - 47
    )  # three audits on page 1 now


@pytest.mark.parametrize("team", [1], indirect=True)
async def test_whoever_started_the_migration_cannot_approve_its_cutover(team):
    """Four eyes with one approval required: an approver who started mig-1 cannot approve its cutover once
    someone else asked for it."""
    slack, src, _ = team
    await ready(slack, starter="U0APPROVER1")
    await slack.command("cutover mig-1", user="U0ALICE", key="c")
    assert "approval card is in <#C0NOTIFY>" in text_of(await slack.reply("c"))
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="starter")
    assert "you started mig-1: another approver must approve" in text_of(await slack.reply("starter"))
    store = slack.services.engine.store
    assert (await store.get_migration("mig-1")).state.value == "awaiting_approval"
    assert not await store.approvals("mig-1")
    assert src.psql("SHOW default_transaction_read_only", database="app") == "off"  # never fenced
    await slack.command("audit mig-1", key="audit")
    assert "cutover.approve.refused" in text_of(await slack.reply("audit"))
    mark = len(slack.fake.calls)  # nor does the starter's Home tab offer it to them
    await slack.event({"type": "app_home_opened", "user": "U0APPROVER1", "tab": "home"})
    home = await slack.fake.wait_for("calls", lambda c: c.method == "views.publish" and c in slack.fake.calls[mark:])
    shown = text_of(home.params["view"])
    assert "awaiting_approval" in shown and "Waiting for your approval" not in shown
    await slack.command("cancel mig-1", key="z")
    await slack.reply("z")


async def test_reject_and_expiry_go_back_to_ready(team):
    slack, src, tgt = team
    await ready(slack)
    await slack.command("cutover mig-1", user="U0ALICE", key="c1")
    await slack.reply("c1")
    await slack.reject("not tonight", user="U0APPROVER1", key="r")
    notice = await slack.fake.wait_for(
        "calls",
        lambda c: (
            c.method == "chat.postMessage"
            and c.params.get("thread_ts")
            and "rejected* by <@U0APPROVER1>" in text_of(c.params)  # a person, not an id in a sentence
        ),
    )
    assert notice
    assert (await slack.services.engine.store.get_migration("mig-1")).state.value == "ready_for_cutover"
    await slack.command("cutover mig-1", user="U0ALICE", key="c2")
    await slack.reply("c2")
    step = await slack.services.engine.store.step("mig-1", "approval")
    step.data["expires_at"] = "2000-01-01T00:00:00+00:00"  # as if an hour went by
    await slack.services.engine.store.save_step(step)
    await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and "expired" in text_of(c.params),
        timeout=30,
    )
    assert (await slack.services.engine.store.get_migration("mig-1")).state.value == "ready_for_cutover"
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="late")
    assert "no longer open" in text_of(await slack.reply("late"))
    assert src.psql("SHOW default_transaction_read_only", database="app") == "off"  # never fenced
    await slack.command("cutover mig-7", key="x")
    assert "there is no mig-7" in text_of(await slack.reply("x"))
    await slack.command("cancel mig-1", key="z")
    await slack.reply("z")
