"""Migrations driven from Slack: one live message edited in place, thread replies, status, list, verify."""

from __future__ import annotations

import pytest

from handlers.authz import Policy
from migration_core.state.models import State
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import text_of
from tests.integration.sample_data import online_pair
from tests.integration.slack_harness import on_pair, running


@pytest.fixture
async def slack(tmp_path, source_cluster, target_cluster):
    async with on_pair(tmp_path, source_cluster, target_cluster) as app:
        yield app


async def test_migrate_posts_one_live_message_updates_it_and_replies_in_thread(slack):
    ack = await slack.command("migrate onprem azure --mode offline --db shop --overwrite", user="U0ALICE", key="m")
    assert "Running pre-flight checks before starting" in ack.body
    started = await slack.reply("m")
    assert started["response_type"] == "in_channel" and "mig-1" in text_of(started) and "started by" in text_of(started)
    notice = await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and "completed" in text_of(c.params),
        timeout=60,
    )
    assert "<@U0ALICE>" in text_of(notice.params) and "verified equal" in text_of(notice.params)
    cards = [c for c in slack.fake.calls if c.method == "chat.postMessage" and not c.params.get("thread_ts")]
    assert len(cards) == 1 and cards[0].params["channel"] == "C0NOTIFY"
    updates = [c for c in slack.fake.calls if c.method == "chat.update"]
    assert updates and {u.params["ts"] for u in updates} == {notice.params["thread_ts"]}
    assert any("▓" in text_of(u.params) for u in updates)  # progress while it ran
    final = text_of(updates[-1].params)  # once over: its outcome, not a progress bar
    assert "completed* in" in final and "rows moved" in final and "▓" not in final

    await slack.command("status mig-1", key="s")
    status = text_of(await slack.reply("s"))
    assert "verify:shop" in status and "4 tables" in status and "✅" in status
    await slack.command("list", key="l")
    assert "mig-1" in text_of(await slack.reply("l"))
    await slack.command("verify 1", key="v")
    assert "✅ `shop`: 4 tables" in text_of(await slack.reply("v"))
    await slack.command("retry mig-1", key="r")
    assert "only a failed migration can be retried" in text_of(await slack.reply("r"))
    audit = await slack.services.engine.store.audit_log("mig-1")
    actions = [(e.actor, e.action) for e in audit]
    assert ("U0ALICE", "migration.created") in actions and ("pgmig", "state") in actions


async def test_only_operators_may_start_or_cancel(slack):
    slack.services.policy = Policy(operators=("U0OPS",))
    await slack.command("migrate onprem azure --mode offline --db shop", user="U0MALLORY", key="x")
    assert "only operators may start migrations" in text_of(await slack.reply("x"))
    await slack.command("cancel mig-1", user="U0MALLORY", key="y")
    assert "only operators may cancel" in text_of(await slack.reply("y"))
    assert await slack.services.engine.store.list_migrations() == []


async def test_refused_migration_shows_the_blocking_problems(slack):
    await slack.command("migrate onprem azure --mode offline --db nosuchdb", key="n")
    reply = text_of(await slack.reply("n"))
    assert "mig-1 stopped at pre-flight" in reply and "nosuchdb" in reply
    await slack.command("status mig-1", key="s")
    assert "failed" in text_of(await slack.reply("s"))
    await slack.command("status mig-99", key="t")
    assert "there is no mig-99" in text_of(await slack.reply("t"))


@pytest.fixture
async def online_slack(tmp_path, cluster_root):
    src, tgt = online_pair(cluster_root, "slack-online")
    try:
        async with running(
            tmp_path,
            config_toml(
                {"onprem": src, "azure": tgt},
                extra='[slack]\nnotify_channel = "C0NOTIFY"\n[migration]\nprogress_interval_seconds = 0.1\n',
            ),
        ) as app:
            yield app, src
    finally:
        src.destroy()
        tgt.destroy()


async def test_online_migration_announces_ready_for_cutover_and_cleans_up(online_slack):
    slack, src = online_slack
    await slack.command("migrate onprem azure --mode online --db app", user="U0ALICE", key="m")
    assert "mig-1" in text_of(await slack.reply("m"))
    ready = await slack.fake.wait_for(
        "calls",
        lambda c: (
            c.method == "chat.postMessage" and c.params.get("thread_ts") and "ready_for_cutover" in text_of(c.params)
        ),
        timeout=60,
    )
    assert "<@U0ALICE>" in text_of(ready.params) and "Syncing continues" in text_of(ready.params)
    updates = [c for c in slack.fake.calls if c.method == "chat.update"]
    assert any("lag" in text_of(u.params) and "slot holds" in text_of(u.params) for u in updates)
    await slack.command("status mig-1", key="s")
    status = text_of(await slack.reply("s"))
    assert "foreign keys reinstated at cutover: public.child.child_parent_id_fkey" in status
    await slack.command("cleanup onprem", key="c")
    assert "kept: mig-1 is ready_for_cutover" in text_of(await slack.reply("c"))
    await slack.command("cancel mig-1", key="x")
    assert "cancelled" in text_of(await slack.reply("x"))
    await slack.command("cleanup onprem --yes", key="y")
    assert "Nothing left behind." in text_of(await slack.reply("y"))
    assert src.psql("SELECT count(*) FROM pg_replication_slots") == "0"


async def test_digest_is_scheduled_when_configured_and_lists_active_migrations(slack):
    engine = slack.services.engine
    assert engine.scheduler.trigger("digest") is None  # off by default
    engine.config.digest = "hourly"
    engine.schedule_digest()
    assert "minute='0'" in engine.scheduler.trigger("digest")
    await slack.command(
        "migrate onprem azure --mode offline --db shop --overwrite --method dump --pause-after-export", key="m"
    )
    await slack.reply("m")
    await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and "paused" in text_of(c.params),
    )
    await engine.post_digest()
    digest = await slack.fake.wait_for(
        "calls", lambda c: c.method == "chat.postMessage" and "Active migrations: 1" in text_of(c.params)
    )
    assert "mig-1" in text_of(digest.params) and "paused" in text_of(digest.params)


async def test_verify_of_an_offline_migration_in_progress_says_why_not(slack):
    await slack.command(
        "migrate onprem azure --mode offline --db shop --overwrite --method dump --pause-after-export", key="m"
    )
    await slack.reply("m")
    await slack.services.engine.wait("mig-1")
    await slack.services.engine.store.transition("mig-1", State.IMPORTING)
    await slack.command("verify mig-1", key="v")
    assert "is importing: an offline copy is verified once it is imported" in text_of(await slack.reply("v"))


async def test_a_refusal_names_the_retry_that_fixes_it_and_that_retry_works(slack, target_cluster):
    """A non-empty target is refused before anything moves; the failure shows the exact retry, with the
    option its fix asks for, and typing it carries the same migration on."""
    target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')
    target_cluster.psql("CREATE DATABASE shop")
    target_cluster.psql("CREATE TABLE left_by_someone (id int)", database="shop")
    try:
        await refused_then_retried(slack, target_cluster)
    finally:
        target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')


async def refused_then_retried(slack, target_cluster) -> None:
    await slack.command("migrate onprem azure --mode offline --db shop", user="U0ALICE", key="m")
    refused = text_of(await slack.reply("m"))
    assert "target database shop is not empty" in refused and "`/pgmig retry mig-1 --overwrite`" in refused
    await slack.command("retry mig-1 --paralel 2", user="U0ALICE", key="typo")
    assert "did you mean `--parallel`?" in text_of(await slack.reply("typo"))
    await slack.command("retry mig-1 --overwrite", user="U0ALICE", key="r")
    assert "now with `--overwrite`" in text_of(await slack.reply("r"))
    await slack.fake.wait_for(
        "calls",
        lambda c: c.params.get("thread_ts") and "mig-1 completed" in text_of(c.params),
        timeout=60,
    )
    m = await slack.services.engine.store.get_migration("mig-1")
    assert m.state is State.COMPLETED and m.options.overwrite
    assert target_cluster.psql("SELECT to_regclass('left_by_someone') IS NULL", database="shop") == "t"
    assert [e.detail for e in await slack.services.engine.store.audit_log("mig-1") if "retried by" in e.detail] == [
        "created: retried by U0ALICE with --overwrite"
    ]
