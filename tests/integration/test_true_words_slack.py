"""Issue 22, in Slack: what an on-call engineer reads while a migration streams and when a cutover is
rejected must be true. Rows still in flight are not ❌ mismatches (on `verify` and on the approval card);
Reject asks why (a modal), and the decided card shows the decision and the reason, not a countdown.
Real slack-bolt over signed HTTP against the fake Slack, real clusters."""

from __future__ import annotations

import asyncpg

from handlers import approvals
from handlers import migration_messages as mm
from handlers.actions import Action
from tests.conftest import PASSWORD
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import text_of
from tests.integration.sample_data import online_pair
from tests.integration.slack_harness import Running, running
from tests.integration.test_live_message import readable, until_notice

TEAM = (
    '[slack]\nnotify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1"]\nrequired_approvals = 1\n'
    "[migration]\nprogress_interval_seconds = 0.2\n[online]\nfence_grace_seconds = 0.2\n"
    "require_verified_share = 0\n"  # the card is asked for while the target's apply waits behind a lock
)


async def test_rows_in_flight_are_expected_on_verify_and_on_the_card_and_a_rejection_says_why(tmp_path, cluster_root):
    src, tgt = online_pair(cluster_root, "truth")
    try:
        async with running(tmp_path, config_toml({"onprem": src, "azure": tgt}, extra=TEAM)) as slack:
            await slack.command("migrate onprem azure --mode online --db app --parallel 1", key="m")
            await slack.reply("m")
            await until_notice(slack, "ready_for_cutover")

            # writes in flight: the target's apply of `child` waits behind a SHARE lock (reads go on)
            hold = await asyncpg.connect(
                host="127.0.0.1", port=tgt.port, user="postgres", password=PASSWORD, database="app"
            )
            held = hold.transaction()
            await held.start()
            await hold.execute("LOCK TABLE child IN SHARE MODE")
            try:
                src.psql("INSERT INTO child (parent_id) SELECT 1 FROM generate_series(1, 50)", database="app")
                verified = readable(await reply_to(slack, "verify mig-1"))
                assert "≈ `app`: 1 of 2 tables differ by rows still in flight (lag " in verified, verified
                assert "the cutover compares them exactly, with writes frozen" in verified
                assert "❌" not in verified and "mismatches" not in verified, verified
                assert "rows in flight, as expected while streaming" in verified

                await slack.command("cutover mig-1", key="c")
                assert "approval card is in <#C0NOTIFY>" in text_of(await slack.reply("c"))
            finally:
                await held.rollback()
                await hold.close()
            card = [
                c
                for c in slack.fake.calls
                if c.method == "chat.postMessage" and "Approve cutover of mig-1" in text_of(c.params)
            ][-1]
            shown = readable(card.params)
            assert "app ≈ 1 of 2 tables differ by rows still in flight (lag " in shown, shown
            assert "the cutover compares them exactly, with writes frozen" in shown
            assert "mismatch" not in shown

            # Reject asks why: a form opens, and nothing is decided until it is sent
            before = len(slack.fake.calls)
            await slack.press(Action.REJECT_CUTOVER.value, user="U0APPROVER1", key="r")
            await slack.fake.wait_for(
                "calls", lambda c: c.method == "views.open" and any(c is x for x in slack.fake.calls[before:])
            )
            assert (await slack.services.engine.store.get_migration("mig-1")).state.value == "awaiting_approval"
            form = [v for v in slack.fake.views.values() if v.get("callback_id") == approvals.REJECT_FORM][-1]
            assert "Reject the cutover of *mig-1*" in str(form) and "Why?" in str(form)
            values = {mm.REASON: {mm.REASON: {"type": "plain_text_input", "value": "the nightly batch still runs"}}}
            assert (await slack.submit(form, values, user="U0APPROVER1", key="rf")).status == 200

            notice = await until_notice(slack, "rejected")
            assert "Cutover rejected* by <@U0APPROVER1>: “the nightly batch still runs”; replication keeps" in notice
            store = slack.services.engine.store
            assert (await store.get_migration("mig-1")).state.value == "ready_for_cutover"
            approval_ts = (await store.step("mig-1", "approval")).data["ts"]
            decided = [
                readable(c.params)
                for c in slack.fake.calls
                if c.method == "chat.update" and c.params["ts"] == approval_ts
            ][-1]
            assert "the nightly batch still runs" in decided and "Cutover request for mig-1: decided" in decided
            assert "expires" not in decided and "0 of 1" not in decided, decided  # the decision, not a countdown
            audit = readable(await reply_to(slack, "audit mig-1"))
            assert "cutover rejected by <@U0APPROVER1>: the nightly batch still runs" in audit, audit
            await slack.command("cancel mig-1", key="z")
            await slack.reply("z")
    finally:
        src.destroy()
        tgt.destroy()


async def reply_to(slack: Running, text: str) -> dict:
    slack.asked += 1
    key = f"truth-{slack.asked}"
    await slack.command(text, key=key)
    return await slack.reply(key)
