"""Live cards within Slack's rate limits: a dozen migrations at once against a fake Slack that answers 429
beyond its published tiers. Every card ends showing its final state, few calls are refused, and an edit
that changes nothing is never sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from migration_core.state.models import State
from tests.integration.clusters import config_toml
from tests.integration.fake_slack import text_of
from tests.integration.slack_harness import running
from tests.integration.waiting import wait_state

COUNT = 12


@pytest.fixture
async def slack(tmp_path, source_cluster, target_cluster):
    names = [f"rl_{i}" for i in range(1, COUNT + 1)]
    for name in names:
        for c in (source_cluster, target_cluster):
            c.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        source_cluster.psql(f"CREATE DATABASE {name}")
        source_cluster.psql(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)", database=name
        )
    async with running(
        tmp_path,
        config_toml(
            {"onprem": source_cluster, "azure": target_cluster},
            extra='[slack]\nnotify_channel = "C0NOTIFY"\n[migration]\nprogress_interval_seconds = 0.2\n',
        ),
    ) as app:
        app.fake.rate_limits = True
        yield app, names
    for name in names:
        for c in (source_cluster, target_cluster):
            c.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_a_dozen_live_cards_end_in_their_final_state_within_the_tiers(slack):
    app, names = slack
    for i, name in enumerate(names, 1):
        await app.command(f"migrate onprem azure --mode offline --db {name}", user="U0ALICE", key=f"m{i}")
    for i in range(1, COUNT + 1):
        await wait_state(app.services.engine.store, f"mig-{i}", State.COMPLETED, timeout=240)

    async def last_shown(mid: str) -> str:
        m = await app.services.engine.store.get_migration(mid)
        assert m is not None and m.message_ts, f"{mid} has no card"
        edits = [c for c in app.fake.calls if c.method == "chat.update" and c.params.get("ts") == m.message_ts]
        return text_of(edits[-1].params) if edits else ""

    deadline = time.monotonic() + 120
    while True:
        shown = {f"mig-{i}": await last_shown(f"mig-{i}") for i in range(1, COUNT + 1)}
        stale = [mid for mid, text in shown.items() if "completed* in" not in text]
        if not stale or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert not stale, f"cards not showing their final state: {stale}"
    updates = [c for c in app.fake.calls if c.method == "chat.update"]
    assert len(app.fake.refused) <= 2, [c.method for c in app.fake.refused]
    assert len(updates) <= 50 + COUNT, len(updates)  # within the tier, plus the final states of the last minute
    per_card = {}
    for c in updates:
        per_card.setdefault(c.params["ts"], []).append(text_of(c.params))
    for texts in per_card.values():  # an edit that changes nothing is not sent
        assert all(a != b for a, b in zip(texts, texts[1:], strict=False))


async def test_a_notify_channel_given_by_name_gets_its_card_edited_by_id(tmp_path, source_cluster, target_cluster):
    """`notify_channel = "#db-migrations"`: Slack answers the post with the channel's id, and chat.update
    takes only that; the card is stored with the id, so every edit lands."""
    async with running(
        tmp_path,
        config_toml(
            {"onprem": source_cluster, "azure": target_cluster},
            extra='[slack]\nnotify_channel = "#db-migrations"\n[migration]\nprogress_interval_seconds = 0.1\n',
        ),
    ) as app:
        await app.command("migrate onprem azure --mode offline --db shop --overwrite", key="m")
        await wait_state(app.services.engine.store, "mig-1", State.COMPLETED, timeout=120)
        m = await app.services.engine.store.get_migration("mig-1")
        assert m is not None and m.message_channel == app.fake.channels["db-migrations"]
        final = await app.fake.wait_for(
            "calls", lambda c: c.method == "chat.update" and "completed* in" in text_of(c.params), timeout=30
        )
        assert final.params["channel"] == m.message_channel
