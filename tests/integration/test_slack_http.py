"""Slack over HTTP, end to end: signed slash commands and clicks in, Block Kit replies out via response_url."""

from __future__ import annotations

import json
import time

import pytest

from bot.localpg import free_port
from handlers.actions import Action
from migration_core.store import Store
from tests.integration.clusters import PASSWORD, config_toml
from tests.integration.slack_harness import running


def all_text(reply: dict) -> str:
    return json.dumps(reply.get("blocks", []), ensure_ascii=False) + reply.get("text", "")


@pytest.fixture
async def slack(tmp_path, source_cluster, target_cluster, replica_level_cluster, monkeypatch):
    config = config_toml(
        {
            "onprem": source_cluster,
            "azure": target_cluster,
            "legacy": replica_level_cluster,
            "offline-box": free_port(),
        },
        extra='[slack]\nnotify_channel = "C0OPS"\napprovers = ["U0APPROVER", "S0DBAS"]\n',
    )
    config += (
        '\n[servers.badpw]\nhost = "127.0.0.1"\n'
        f'port = {source_cluster.port}\nuser = "postgres"\npassword_env = "PGMIG_WRONG_PASSWORD"\n'
        'sslmode = "disable"\n'
    )
    async with running(tmp_path, config) as app:
        yield app


async def test_help_lists_every_command_with_an_example(slack):
    resp = await slack.command("help")
    assert resp.status == 200 and resp.body == ""  # empty ack; the answer follows on response_url
    reply = await slack.reply("1")
    assert reply["response_type"] == "ephemeral"
    for name in ("help", "servers", "check"):
        assert f"/pgmig {name}" in all_text(reply)
    assert "e.g." in all_text(reply)


async def test_servers_shows_hosts_but_never_passwords(slack):
    await slack.command("servers")
    text = all_text(await slack.reply("1"))
    assert "onprem" in text and "azure" in text and "127.0.0.1" in text
    assert PASSWORD not in text and "PGMIG_TEST_PASSWORD" not in text


async def test_check_acks_at_once_then_posts_the_report(slack, target_cluster):
    target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')  # a target that holds shop is not ready
    resp = await slack.command("check onprem azure --db shop")
    assert resp.status == 200 and "Running pre-flight checks" in resp.body  # the ack itself says it is working
    reply = await slack.reply("1")
    text = all_text(reply)
    assert "Pre-flight: onprem → azure (online)" in text
    # ready; its warnings: these clusters' pg_hba would let the subscription's login take a base backup,
    # and the source's max_slot_wal_keep_size is unlimited
    assert "⚠️ Ready, with warnings — 0 blocking, 2 warning(s)" in text and "wal_level = logical" in text
    assert "db shop" in text and "pg_hba.conf" in text
    assert "❌" not in text
    blocks = reply["blocks"]
    assert blocks[-1]["elements"][0]["action_id"] == Action.RERUN_CHECK.value
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks) and len(blocks) <= 50


async def test_check_on_a_replica_level_source_shows_the_fix(slack):
    await slack.command("check legacy azure")
    text = all_text(await slack.reply("1"))
    assert "❌ Blocked" in text
    assert "wal_level is 'replica'" in text and "restart PostgreSQL" in text


async def test_check_unreachable_and_wrong_password_are_readable(slack):
    await slack.command("check offline-box azure", key="a")
    await slack.command("check badpw azure", key="b")
    unreachable = all_text(await slack.reply("a"))
    assert "connection refused" in unreachable and "Traceback" not in unreachable
    bad = all_text(await slack.reply("b"))
    assert "password authentication failed" in bad and "not-the-Right-one" not in bad


async def test_malformed_and_unknown_commands_get_usage(slack):
    await slack.command("check onprem", key="a")
    await slack.command("migrate-everything now", key="b")
    await slack.command("check nowhere azure", key="c")
    assert "Usage: `/pgmig check SOURCE TARGET" in all_text(await slack.reply("a"))
    assert "unknown command `migrate-everything`" in all_text(await slack.reply("b"))
    assert "unknown server nowhere; configured servers: azure, badpw, legacy, offline-box, onprem" in all_text(
        await slack.reply("c")
    )


async def test_rerun_button_runs_the_check_again_for_whoever_clicked(slack):
    resp = await slack.click(Action.RERUN_CHECK.value, "check onprem azure --mode offline", user="U0BOB")
    assert resp.status == 200
    assert "Pre-flight: onprem → azure (offline)" in all_text(await slack.reply("2"))
    log = await slack.services.engine.store.audit_log()
    assert ("U0BOB", "action") in [(e.actor, e.action) for e in log]


async def test_commands_are_audited_in_the_state_store(slack, tmp_path):
    await slack.command("servers", user="U0CAROL")
    await slack.reply("1")
    await slack.tasks.drain(10)
    store = await Store.open(str(tmp_path / "state.sqlite"))
    entries = [(e.actor, e.action, e.detail, e.channel) for e in await store.audit_log()]
    await store.close()
    assert ("U0CAROL", "query", "/pgmig servers", "C0OPS") in entries  # read-only: counted, not listed, by audit


async def test_forged_signature_is_refused(slack):
    resp = await slack.command("help", secret="not-the-signing-secret")
    assert resp.status == 401
    assert slack.fake.responses == []


async def test_stale_timestamp_is_refused(slack):
    resp = await slack.command("help", timestamp=int(time.time()) - 6 * 60)
    assert resp.status == 401


async def test_healthz(slack):
    async with slack.http.get(f"{slack.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True, "state_store": "ok"}


async def test_user_groups_resolve_through_usergroups_users_list(slack):
    from handlers.authz import may_approve, may_operate

    slack.fake.usergroups["S0DBAS"] = ["U0DBA1", "U0DBA2"]
    policy, directory = slack.services.policy, slack.services.directory
    assert await may_approve("U0APPROVER", policy, directory)
    assert await may_approve("U0DBA2", policy, directory)
    assert not await may_approve("U0ALICE", policy, directory)
    assert await may_operate("U0ALICE", policy, directory)  # no operators configured: anyone
    calls = [c for c in slack.fake.calls if c.method == "usergroups.users.list"]
    assert len(calls) == 1 and calls[0].params["usergroup"] == "S0DBAS"  # cached after the first lookup


@pytest.mark.parametrize(
    "text, answer",
    [
        ("migrate onprem azure --mode online --parallel ²", "needs a whole number from 1 to 64"),
        ("migrate a b --parallel ²", "needs a whole number from 1 to 64"),
        ("status mig-" + "9" * 5000, "is not a migration id"),
        ("status prov-" + "1" * 5000, "is not a migration id"),
    ],
)
async def test_input_that_once_crashed_the_parser_is_acked_answered_and_audited(slack, text, answer):
    resp = await slack.command(text, key="odd")
    assert resp.status == 200
    reply = all_text(await slack.reply("odd"))
    assert answer in reply and "Traceback" not in reply and len(reply) < 6000
    log = await slack.services.engine.store.audit_log()
    assert log[-1].action == "command.rejected" and answer.split()[0] in log[-1].detail


@pytest.mark.parametrize(
    "action_id, value, answer, audited",
    [
        ("pgmig.no-such-button", "ü\u2028" * 2000, "no longer handled by this version", "action.unknown"),
        (Action.RERUN_CHECK.value, "status mig-" + "9" * 5000, "is not a migration id", "command.rejected"),
        (Action.RERUN_CHECK.value, "migrate a b --parallel ²", "needs a whole number from 1 to 64", "command.rejected"),
    ],
)
async def test_odd_clicks_are_acked_answered_and_audited(slack, action_id, value, answer, audited):
    before = len(await slack.services.engine.store.audit_log(limit=100000))
    resp = await slack.click(action_id, value, key="odd-click")
    assert resp.status == 200
    reply = all_text(await slack.reply("odd-click"))
    assert answer in reply and "Traceback" not in reply and len(reply) < 6000
    await slack.tasks.drain(10)
    assert audited in [e.action for e in (await slack.services.engine.store.audit_log(limit=100000))[before:]]
