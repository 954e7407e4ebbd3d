"""The App Home tab over signed HTTP: app_home_opened → views.publish with the active migrations (state,
lag, next step), the cutovers and the destructive schema changes waiting for this person's approval, whose
buttons decide as the cards' do."""

from __future__ import annotations

import pytest

from handlers.actions import Action
from handlers.home import REFRESH
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import text_of
from tests.integration.sample_data import online_pair
from tests.integration.slack_harness import running, team_on_own_pair
from tests.integration.waiting import wait_until

TRIGGERS = "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgmig%'"


@pytest.fixture
async def team(tmp_path, cluster_root):
    async with team_on_own_pair(tmp_path, cluster_root, "home", 'approvers = ["U0APPROVER"]\n') as app:
        yield app


def buttons(view: dict) -> list[dict]:
    return [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"] if e["type"] == "button"]


async def published(slack, user: str, after: int) -> dict:
    """The next Home tab published for `user` after call number `after`."""
    call = await slack.fake.wait_for(
        "calls",
        # by identity: two publishes of the same view compare equal, and index() would find the older one
        lambda c: (
            c.method == "views.publish"
            and c.params["user_id"] == user
            and any(x is c for x in slack.fake.calls[after:])
        ),
    )
    return call.params["view"]


async def test_home_lists_active_migrations_and_the_approvals_waiting_for_you(team):
    slack = team
    mark = len(slack.fake.calls)
    resp = await slack.event({"type": "app_home_opened", "user": "U0APPROVER", "tab": "home"}, "Ev1")
    assert resp.status == 200  # acked at once; the view follows
    empty = await published(slack, "U0APPROVER", mark)
    assert empty["type"] == "home" and "Active migrations: 0" in text_of(empty)
    assert "Waiting for your approval" not in text_of(empty)

    await slack.command("migrate onprem azure --mode online --db app", user="U0ALICE", key="m")
    await slack.reply("m")
    await slack.fake.wait_for(
        "calls",
        lambda c: (
            c.method == "chat.postMessage" and c.params.get("thread_ts") and "ready_for_cutover" in text_of(c.params)
        ),
        timeout=60,
    )
    mark = len(slack.fake.calls)
    await slack.event({"type": "app_home_opened", "user": "U0ALICE", "tab": "home"}, "Ev2")
    ready = text_of(await published(slack, "U0ALICE", mark))
    assert "mig-1" in ready and "ready_for_cutover" in ready and "lag" in ready
    assert "`/pgmig cutover mig-1`" in ready  # the next step, as the command to type

    await slack.command("cutover mig-1", user="U0ALICE", key="c")
    assert "approval card" in text_of(await slack.reply("c"))
    mark = len(slack.fake.calls)
    await slack.event({"type": "app_home_opened", "user": "U0APPROVER", "tab": "home"}, "Ev3")
    home = await published(slack, "U0APPROVER", mark)
    text = text_of(home)
    assert "Waiting for your approval: 1" in text and "Approve cutover of mig-1?" in text
    assert "awaiting_approval" in text and "Active migrations: 1" in text
    approve = next(b for b in buttons(home) if b["action_id"] == Action.APPROVE_CUTOVER.value)
    round = (await slack.services.engine.cutover_request("mig-1")).round
    assert approve["value"] == f"mig-1:{round}" and approve["confirm"]  # the card's own button

    mark = len(slack.fake.calls)
    await slack.event({"type": "app_home_opened", "user": "U0ALICE", "tab": "home"}, "Ev4")
    own = text_of(await published(slack, "U0ALICE", mark))
    assert "mig-1" in own and "Waiting for your approval" not in own  # a requester cannot approve their own
    mark = len(slack.fake.calls)
    await slack.event({"type": "app_home_opened", "user": "U0APPROVER", "tab": "messages"}, "Ev5")
    await slack.tasks.drain(5)
    assert not [c for c in slack.fake.calls[mark:] if c.method == "views.publish"]  # the Messages tab: nothing

    # A stranger's click from their Home tab is refused in a direct message (a view has no response_url).
    view = slack.fake.views[slack.fake.homes["U0APPROVER"]]
    await slack.in_view(view, {}, "b", {"type": "button", **approve}, user="U0MALLORY", key="x")
    refusal = await slack.fake.wait_for(
        "calls", lambda c: c.method == "chat.postMessage" and c.params["channel"] == "U0MALLORY"
    )
    assert "only approvers may approve" in text_of(refusal.params)

    mark = len(slack.fake.calls)
    await slack.in_view(view, {}, "b", {"type": "button", **approve}, user="U0APPROVER", key="ok")
    after = text_of(await published(slack, "U0APPROVER", mark))  # the Home tab again, once decided
    assert "Waiting for your approval" not in after
    await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and "completed" in text_of(c.params),
        timeout=60,
    )
    mark = len(slack.fake.calls)
    await slack.in_view(view, {}, "b", {"type": "button", "action_id": REFRESH}, user="U0APPROVER", key="r")
    assert "Active migrations: 0" in text_of(await published(slack, "U0APPROVER", mark))
    log = [(e.actor, e.action) for e in await slack.services.engine.store.audit_log("mig-1")]
    assert ("U0APPROVER", "cutover.approve") in log and ("U0MALLORY", "cutover.approve.refused") in log


@pytest.fixture
async def approvers_team(tmp_path, cluster_root):
    """Two approvers, both needed, among the operators; capture is on by default. Yields the app and the source."""
    src, tgt = online_pair(cluster_root, "home-ddl")
    config = config_toml(
        {"onprem": src, "azure": tgt},
        extra='[slack]\nnotify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1", "U0APPROVER2"]\n'
        'required_approvals = 2\noperators = ["U0ALICE", "U0APPROVER1", "U0APPROVER2"]\n'
        "[migration]\nprogress_interval_seconds = 0.2\n[online]\nverify_chunk_rows = 0\n",
    )
    try:
        async with running(tmp_path, config) as app:
            yield app, src, tgt
    finally:
        src.destroy()
        tgt.destroy()


async def home_of(slack, user: str, event_id: str) -> dict:
    mark = len(slack.fake.calls)
    await slack.event({"type": "app_home_opened", "user": user, "tab": "home"}, event_id)
    return await published(slack, user, mark)


async def test_home_lists_destructive_schema_changes_waiting_for_your_approval(approvers_team):
    """A DROP TABLE captured while streaming needs both approvers: each sees it on their Home tab (the migration,
    the statement, the approvals so far) with the card's own Apply button, which approves through the same
    command; once approved by you it leaves your Home tab; operators who may not approve, and people who may not
    decide, do not see it."""
    slack, src, tgt = approvers_team
    await slack.command("migrate onprem azure --mode online --db app", user="U0ALICE", key="m")
    await slack.reply("m", timeout=60)
    await wait_until(lambda: src.psql(TRIGGERS, database="app") == "2", 90, "the capture's event triggers")
    src.psql("DROP TABLE child", database="app")
    await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and "schema change app #1 DROP TABLE" in c.params.get("text", ""),
        timeout=30,
    )
    home = await home_of(slack, "U0APPROVER1", "Ev1")
    text = text_of(home)
    assert "Schema changes waiting for your approval: 1" in text, text
    assert "mig-1" in text and "#1 DROP TABLE" in text and "0 of 2 approvals" in text and "DROP TABLE child" in text
    apply = next(b for b in buttons(home) if b["action_id"] == Action.DDL_APPLY.value)
    assert apply["value"] == "ddl mig-1 apply app:1" and apply["confirm"]  # the card's own button
    assert any(b["action_id"] == Action.DDL_SKIP.value for b in buttons(home))
    for user, event in (("U0ALICE", "Ev2"), ("U0MALLORY", "Ev3")):  # an operator, not an approver; neither
        assert "Schema changes waiting" not in text_of(await home_of(slack, user, event)), user

    view = slack.fake.views[slack.fake.homes["U0APPROVER1"]]
    mark = len(slack.fake.calls)
    await slack.in_view(view, {}, "b", {"type": "button", **apply}, user="U0APPROVER1", key="a1")
    answer = await slack.fake.wait_for(
        "calls", lambda c: c.method == "chat.postMessage" and c.params["channel"] == "U0APPROVER1"
    )
    said = text_of(answer.params)  # a Home tab click has no response_url: the answer is a direct message
    assert "your approval of app #1 DROP TABLE" in said and "1 of 2 approvals" in said, said
    assert "Schema changes waiting" not in text_of(await published(slack, "U0APPROVER1", mark))  # yours is given

    second = await home_of(slack, "U0APPROVER2", "Ev4")
    assert "1 of 2 approvals (<@U0APPROVER1>)" in text_of(second), text_of(second)
    apply = next(b for b in buttons(second) if b["action_id"] == Action.DDL_APPLY.value)
    view = slack.fake.views[slack.fake.homes["U0APPROVER2"]]
    mark = len(slack.fake.calls)
    await slack.in_view(view, {}, "b", {"type": "button", **apply}, user="U0APPROVER2", key="a2")
    assert "Schema changes waiting" not in text_of(await published(slack, "U0APPROVER2", mark))
    await wait_until(
        lambda: tgt.psql("SELECT to_regclass('child') IS NULL", database="app") == "t", 30, "the drop applied"
    )
    log = [(e.actor, e.action) for e in await slack.services.engine.store.audit_log("mig-1")]
    assert {("U0APPROVER1", "ddl.approve"), ("U0APPROVER2", "ddl.approve")} <= set(log), log
    assert ("U0APPROVER1, U0APPROVER2", "ddl.apply") in log, log
    assert "cancelled" in await slack.ask("cancel mig-1")
