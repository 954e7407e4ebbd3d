"""The slot guardian against a real source with a small max_slot_wal_keep_size: a subscriber that applies
nothing while the source writes is warned about (with the time to the limit) and offered a cancel that
drops the slot — to operators only."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.localpg import LocalCluster
from handlers.actions import Action
from migration_core.state.models import State
from tests.conftest import PASSWORD
from tests.integration.clusters import TARGET, config_toml
from tests.integration.fake_slack import text_of
from tests.integration.sample_data import PARENT_CHILD
from tests.integration.slack_harness import Running, running
from tests.integration.waiting import wait_state

ROUND_ROWS = 4000  # ~4.5 MB of WAL a round: eleven rounds stay under the 64 MB limit


@pytest.fixture
async def stalled(tmp_path, cluster_root):
    """A running app, an online migration of `app` ready for cutover, and its subscription disabled."""
    src = (
        LocalCluster(
            cluster_root / "guard-src",
            password=PASSWORD,
            settings={"wal_level": "logical", "max_replication_slots": "10", "max_slot_wal_keep_size": "64MB"},
        )
        .init()
        .start()
    )
    tgt = LocalCluster(cluster_root / "guard-tgt", password=PASSWORD, settings=TARGET).init().start()
    src.psql("CREATE DATABASE app")
    src.psql(PARENT_CHILD + "; CREATE TABLE filler (id int PRIMARY KEY, pad text)", database="app")
    config = config_toml(
        {"onprem": src, "azure": tgt},
        extra='[slack]\noperators = ["U0ALICE"]\n[migration]\nprogress_interval_seconds = 0.2\n',
    )
    try:
        async with running(tmp_path, config) as slack:
            slack.services.engine.config.slot_stall_seconds = 1.0
            await slack.command("migrate onprem azure --mode online --db app", key="m")
            await slack.reply("m")
            await wait_state(slack.services.engine.store, "mig-1", State.READY_FOR_CUTOVER)
            [sub] = tgt.psql("SELECT subname FROM pg_subscription", database="app").split()
            tgt.psql(f'ALTER SUBSCRIPTION "{sub}" DISABLE', database="app")
            yield slack, src
    finally:
        src.destroy()
        tgt.destroy()


def pgmig_slots(src: LocalCluster) -> list[str]:
    return src.psql("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'pgmig%'").split()


async def write_until_warned(slack: Running, src: LocalCluster) -> str:
    """Write on the source, a round at a time, until the slot alert with its (confirmed) button is posted;
    its text."""
    for n in range(11):
        src.psql(
            f"INSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series({n * ROUND_ROWS}, "
            f"{(n + 1) * ROUND_ROWS - 1}) g",
            database="app",
        )
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for call in slack.fake.calls:
                said = str(call.params)
                if call.method == "chat.postMessage" and Action.DROP_SLOT_CANCEL.value in said:
                    assert "Drop slot and cancel" in said and "confirm" in said
                    return text_of(call.params)
            await asyncio.sleep(0.1)
    raise AssertionError("no slot alert with a Drop slot and cancel button")


async def test_stalled_slot_is_warned_and_an_operator_drops_it_by_cancelling(stalled):
    slack, src = stalled
    said = await write_until_warned(slack, src)
    assert "max_slot_wal_keep_size 64.0 MB" in said and "MB/min: the limit in about" in said
    assert "applying nothing" in said
    button = slack.button(Action.DROP_SLOT_CANCEL.value)
    assert button == "cancel mig-1"
    status = await slack.ask("status mig-1")
    assert "growing" in status and "max_slot_wal_keep_size 64.0 MB in about" in status

    await slack.press(Action.DROP_SLOT_CANCEL.value, user="U0MALLORY", key="no")
    assert "only operators may cancel" in text_of(await slack.reply("no"))
    assert pgmig_slots(src) and (await slack.services.engine.store.get_migration("mig-1")).state is not State.CANCELLED

    await slack.press(Action.DROP_SLOT_CANCEL.value, user="U0ALICE", key="yes")
    await slack.reply("yes")
    await wait_state(slack.services.engine.store, "mig-1", State.CANCELLED, fail_fast=False)
    assert pgmig_slots(src) == []
