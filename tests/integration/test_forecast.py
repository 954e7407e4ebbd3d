"""The predicted write freeze on real clusters: the card and status show it, the summary sets it beside the
measured window (within a factor the test asserts), and `max_window_seconds` holds Approve back."""

from __future__ import annotations

import pytest

from bot.localpg import LocalCluster
from handlers.migration_messages import approval_card, database_line
from migration_core.flows.steps.cutover import WINDOW_STEPS
from migration_core.state.approval import Verdict
from migration_core.state.models import State
from tests.integration import factories
from tests.integration.clusters import PASSWORD, TARGET
from tests.integration.sample_data import pg16_bindir
from tests.integration.test_online import LOGICAL, fresh_db, start_online
from tests.integration.waiting import wait_state, wait_until


@pytest.fixture(scope="module")
def src(cluster_root):
    c = LocalCluster(cluster_root / "forecast-source", password=PASSWORD, settings=LOGICAL).init().start()
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def tgt(cluster_root):
    c = LocalCluster(cluster_root / "forecast-target", password=PASSWORD, bindir=pg16_bindir(), settings=TARGET)
    c.init().start()
    yield c
    c.destroy()


async def test_predicted_window_on_card_status_and_summary(tmp_path, store, src, tgt):
    fresh_db(src, "fc")
    engine = factories.engine(store, src, tgt, tmp_path, fence_grace_seconds=0.0)
    mid = await start_online(engine, ["fc"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    p = engine.progress(mid).of("fc")
    await wait_until(
        lambda: p.apply_rate is not None and p.forecast is not None and p.forecast.window, 30, "no forecast"
    )
    line = database_line(p, 0.0)
    assert "applying" in line and "/min of the source's WAL" in line and "predicted write freeze" in line, line
    request = await engine.prepare_cutover(mid, "U0ALICE", "C1", 10)
    assert "fc: expected catch-up" in request.forecast and "expected window" in request.forecast
    assert "sequences" in request.forecast and "counts-only comparison" in request.forecast
    m = await store.get_migration(mid)
    card = str(approval_card(m, engine.progress(mid), request, [], 1).blocks)
    assert "Predicted write freeze" in card and "expected window" in card
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    step = await store.step(mid, "cutover:fc")
    predicted = step.data["predicted"]
    measured = sum(v for k, v in step.data["timings"].items() if k in WINDOW_STEPS)
    print(
        f"predicted {predicted:.3f} s, measured {measured:.3f} s, ratio {predicted / measured:.2f}",
    )
    assert measured / 3 - 0.5 <= predicted <= 3 * measured + 0.5
    summary = engine.events.states[-1][2]
    assert f"writes unavailable {measured:.2f} s, predicted {predicted:.2f} s" in summary, summary
    await engine.close()


async def test_approve_is_held_while_the_window_is_over_the_limit(tmp_path, store, src, tgt):
    fresh_db(src, "held")
    engine = factories.engine(store, src, tgt, tmp_path, max_window_seconds=0.001)
    mid = await start_online(engine, ["held"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    request = await engine.prepare_cutover(mid, "U0ALICE", "C1", 10)
    assert "Approve is held: held: predicted write freeze" in request.forecast
    assert "over max_window_seconds 0.001 s" in request.forecast and "expected to fit" in request.forecast
    assert await engine.open_cutover(request)
    decision, _ = await engine.decide_cutover(mid, request.round, "U0BOB", "approve", is_approver=True, required=1)
    assert decision.verdict is Verdict.REFUSED and "max_window_seconds" in decision.reason, decision
    assert (await store.get_migration(mid)).state is State.AWAITING_APPROVAL  # still open, nothing fenced
    engine.config.max_window_seconds = 60.0  # the limit raised: the same card's Approve now goes through
    decision, _ = await engine.decide_cutover(mid, request.round, "U0BOB", "approve", is_approver=True, required=1)
    assert decision.verdict is Verdict.APPROVED, decision
    await wait_state(engine.store, mid, State.COMPLETED)
    await engine.close()
