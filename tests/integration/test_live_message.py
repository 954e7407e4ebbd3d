"""The live message and the replies around it tell the truth at every state (issue 16), read as a person
reads them in Slack: the last chat.update of the live card, the thread posts, status, audit and verify.
Real slack-bolt over signed HTTP against the fake Slack, real clusters."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from handlers.actions import Action
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import FakeSlack, text_of
from tests.integration.sample_data import online_pair
from tests.integration.slack_harness import running

ONLINE = (
    '[slack]\nnotify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1"]\nrequired_approvals = 1\n'
    "[migration]\nprogress_interval_seconds = 0.1\n[online]\nfence_grace_seconds = 0.2\n"
)


def readable(params: dict) -> str:
    """A message as a person reads it: the text of its blocks, one line per line; buttons as `"actions"`."""
    blocks = params.get("blocks") or "[]"
    lines = []
    for block in json.loads(blocks) if isinstance(blocks, str) else blocks:
        if block.get("type") == "actions":
            lines.append('"actions"')
        if isinstance(block.get("text"), dict):
            lines.append(block["text"]["text"])
        lines += [e["text"] for e in block.get("elements", []) if isinstance(e.get("text"), str)]
    return "\n".join(lines) or params.get("text", "")


def card_updates(fake: FakeSlack, ts: str) -> list[str]:
    return [readable(c.params) for c in fake.calls if c.method == "chat.update" and c.params["ts"] == ts]


def thread_posts(fake: FakeSlack) -> list[str]:
    return [readable(c.params) for c in fake.calls if c.method == "chat.postMessage" and c.params.get("thread_ts")]


def everything(fake: FakeSlack) -> str:
    """Every message and reply the fake Slack saw, as text."""
    posted = [readable(c.params) for c in fake.calls if c.method in ("chat.postMessage", "chat.update")]
    return "\n".join(posted + [readable(r) for r in fake.responses])


async def ask(slack, text: str, user: str = "U0ALICE") -> str:
    """A command, and its answer as the user reads it."""
    slack.asked += 1
    key = f"live-{slack.asked}"
    await slack.command(text, user=user, key=key)
    return readable(await slack.reply(key))


async def live_card_ts(slack) -> str:
    m = await slack.services.engine.store.get_migration("mig-1")
    return m.message_ts


def window_parts(text: str) -> tuple[str, str]:
    """What a 'writes unavailable' breakdown lists inside the freeze, and what after release."""
    found = re.search(r"writes unavailable [\d.]+ s \(([^)]*)\)( · after release: ([^·\n\"]*))?", text)
    assert found, text
    return found.group(1), found.group(3) or ""


async def until_notice(slack, word: str, timeout: float = 60) -> str:
    call = await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and word in text_of(c.params),
        timeout=timeout,
    )
    return readable(call.params)


@pytest.fixture
async def online(tmp_path, cluster_root):
    src, tgt = online_pair(cluster_root, "live")
    try:
        async with running(tmp_path, config_toml({"onprem": src, "azure": tgt}, extra=ONLINE)) as app:
            yield app, src
    finally:
        src.destroy()
        tgt.destroy()


async def test_a_cutover_ends_with_its_outcome_who_decided_and_the_write_freeze(online):
    slack, _ = online
    await slack.command("migrate onprem azure --mode online --db app --parallel 1", user="U0ALICE", key="m")
    assert "(1 job)" in readable(await slack.reply("m"))
    await until_notice(slack, "ready_for_cutover")
    ts = await live_card_ts(slack)

    # while it streams, the card's clock runs (it was frozen at the full load's 0:00)
    def clock(text: str) -> int:
        found = re.search(r"(\d+):(\d\d) so far", text)
        return int(found.group(1)) * 60 + int(found.group(2)) if found else -1

    await slack.fake.wait_for(
        "calls", lambda c: c.method == "chat.update" and c.params["ts"] == ts and clock(text_of(c.params)) >= 2, 15
    )
    streaming = [u for u in card_updates(slack.fake, ts) if "streaming" in u]
    assert streaming and all("0:00 elapsed" not in u for u in streaming)
    clocks = [clock(u) for u in card_updates(slack.fake, ts)]
    assert clocks == sorted(clocks) and clocks[-1] > clocks[0]

    await slack.command("cutover mig-1", user="U0ALICE", key="c")
    assert "(1 approval needed)" in readable(await slack.reply("c"))
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="a")
    done = await until_notice(slack, "completed")
    assert "writes unavailable" in done

    # the live card: the outcome, how long, rows moved, the window split at release; no streaming, no cancel
    final = card_updates(slack.fake, ts)[-1]
    assert "*completed* in " in final and "3 rows moved" in final
    inside, after = window_parts(final)
    assert {p.split()[0] for p in inside.split(", ")} == {"fence", "catch-up", "sequences", "constraints", "counts"}
    assert "validate" in after and "verify" in after and "validate" not in inside and "verify" not in inside
    for stale in ("streaming", "lag ", "ETA", "so far", "/pgmig cancel", "slot holds"):
        assert stale not in final, stale
    assert "/pgmig status mig-1" in final

    # the approval card closes naming who approved, as a person
    request = (await slack.services.engine.store.step("mig-1", "approval")).data
    closed = card_updates(slack.fake, request["ts"])[-1]
    assert "Approved* by <@U0APPROVER1>" in closed and '"actions"' not in closed
    assert "approved by U0APPROVER1" not in closed

    status = await ask(slack, "status mig-1")
    assert "`approval` — requested by <@U0ALICE>; approved by <@U0APPROVER1>" in status
    assert "⏸️" not in status and "(1 job)" in status
    cutover_line = next(line for line in status.split("\n") if "`cutover:app`" in line)
    inside, after = window_parts(cutover_line)
    assert "validate" in after and "validate" not in inside and "verify" not in inside

    audit = await ask(slack, "audit mig-1")
    approved = next(line for line in audit.split("\n") if "*cutover.approved*" in line)
    assert approved.split("`")[2].strip().startswith("<@U0APPROVER1>") and "approved by <@U0APPROVER1>" in approved
    assert "requested by <@U0ALICE>" in audit and "<@approved" not in audit and "<@cutover" not in audit

    assert "1 jobs" not in everything(slack.fake) and "(s)" not in final


async def test_rejected_expired_and_cancelled_requests_say_so(online):
    slack, _ = online
    await slack.command("migrate onprem azure --mode online --db app", user="U0ALICE", key="m")
    await slack.reply("m")
    await until_notice(slack, "ready_for_cutover")
    ts = await live_card_ts(slack)

    await slack.command("cutover mig-1", user="U0ALICE", key="c1")
    await slack.reply("c1")
    await slack.reject("not tonight", user="U0APPROVER1", key="r")
    notice = await until_notice(slack, "rejected")
    assert "rejected* by <@U0APPROVER1>" in notice and "rejected by U0APPROVER1" not in notice
    first = (await slack.services.engine.store.step("mig-1", "approval")).data
    assert "Cutover rejected* by <@U0APPROVER1>" in card_updates(slack.fake, first["ts"])[-1]
    assert "`approval` — requested by <@U0ALICE>; rejected by <@U0APPROVER1>" in await ask(slack, "status mig-1")

    await slack.command("cutover mig-1", user="U0ALICE", key="c2")
    await slack.reply("c2")
    step = await slack.services.engine.store.step("mig-1", "approval")
    step.data["expires_at"] = "2000-01-01T00:00:00+00:00"  # as if the hour went by
    await slack.services.engine.store.save_step(step)
    await until_notice(slack, "expired", timeout=30)
    assert "expired* without enough approvals" in card_updates(slack.fake, step.data["ts"])[-1]
    status = await ask(slack, "status mig-1")
    assert "`approval` — requested by <@U0ALICE>; expired without enough approvals" in status
    assert "⏸️ `approval`" not in status

    await slack.command("cancel mig-1", user="U0ALICE", key="x")
    await slack.reply("x")
    await until_notice(slack, "cancelled")
    final = card_updates(slack.fake, ts)[-1]
    assert "*cancelled* after " in final and "/pgmig audit mig-1" in final
    for stale in ("streaming", "lag ", "ETA", "so far", "/pgmig cancel", "slot holds"):
        assert stale not in final, stale


@pytest.fixture
async def offline(tmp_path, source_cluster, target_cluster):
    config = config_toml(
        {"onprem": source_cluster, "azure": target_cluster},
        extra='[slack]\nnotify_channel = "C0NOTIFY"\n[migration]\nprogress_interval_seconds = 0.05\n',
    )
    async with running(tmp_path, config) as app:
        yield app


async def test_verify_repeats_the_expected_note_for_edited_exports_after_the_files_are_gone(offline):
    slack = offline
    await slack.command(
        "migrate onprem azure --mode offline --db shop --overwrite --method dump --pause-after-export --parallel 1",
        key="m",
    )
    await slack.reply("m")
    await until_notice(slack, "paused")
    export = await slack.services.engine.store.step("mig-1", "export:shop")
    data_file = next(f for f in export.data["files"] if f.endswith("db_data.sql"))
    text = Path(data_file).read_text()
    # the team leaves one product behind: its row goes from the data file
    text = re.sub(r"(COPY public\.product \([^)]*\) FROM stdin;\n)[^\n]*\n", r"\1", text, count=1)
    Path(data_file).write_text(text)
    await slack.command("resume mig-1", key="r")
    await slack.reply("r")
    done = await until_notice(slack, "completed")
    assert "expected because export files were edited" in done
    for _ in range(100):  # removed once completed (the tidy follows the notice): the note must come from the steps
        if not Path(data_file).exists():
            break
        await asyncio.sleep(0.1)
    assert not Path(data_file).exists()

    verify = await ask(slack, "verify mig-1")
    assert "expected: its export files were edited before the import" in verify and "db_data.sql" in verify
    assert "public.product" in verify and "❌" not in verify and "pass" not in verify.split("\n")[0]
    assert "differences expected" in verify

    final = card_updates(slack.fake, await live_card_ts(slack))[-1]
    assert "*completed* in " in final and " rows moved" in final and "1 job)" in final
    for stale in ("ETA", "so far", "/pgmig cancel", "▓"):
        assert stale not in final, stale


async def test_verify_of_a_migration_that_never_copied_anything_says_so(offline):
    slack = offline
    await slack.command("migrate onprem azure --mode offline --db shop --overwrite", key="m1")
    await slack.reply("m1")
    await until_notice(slack, "completed")
    # the target now holds an equal shop: a second migration without --overwrite is refused in pre-flight
    await slack.command("migrate onprem azure --mode offline --db shop", key="m2")
    assert "mig-2 stopped at pre-flight" in readable(await slack.reply("m2"))
    verify = await ask(slack, "verify mig-2")
    assert "nothing to verify yet" in verify and "*failed* at *preflight*" in verify
    assert "✅" not in verify and "pass" not in verify

    card = card_updates(slack.fake, (await slack.services.engine.store.get_migration("mig-2")).message_ts)
    final = card[-1] if card else ""
    assert "*failed* at *preflight* after " in final and "`shop` · nothing copied" in final
    assert "/pgmig retry mig-2" in final and "so far" not in final and "ETA" not in final
