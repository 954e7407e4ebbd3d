"""The provisioning lifecycle's table, walked, and its one guarded move against a real store."""

from __future__ import annotations

import pytest

from migration_core.azure.provisioning import STARTS, TRANSITIONS, ProvisionState, predecessors
from migration_core.state.lifecycle import IllegalTransition
from migration_core.store import Store

P = ProvisionState


def test_every_state_is_in_the_table_reachable_and_finished_ones_end_it():
    assert set(TRANSITIONS) == set(ProvisionState)
    seen, todo = set(STARTS), list(STARTS)
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(ProvisionState)
    for state in ProvisionState:
        assert (TRANSITIONS[state] == frozenset()) == state.finished, state


def test_only_a_waiting_request_is_decided_and_only_an_approved_one_runs():
    assert predecessors(P.APPROVED) == predecessors(P.REJECTED) == predecessors(P.EXPIRED) == (P.WAITING,)
    assert set(predecessors(P.RUNNING)) == {P.APPROVED, P.RUNNING}
    assert predecessors(P.DONE) == predecessors(P.FAILED) == (P.RUNNING,)
    with pytest.raises(IllegalTransition, match="BUG: provisioning has no transition done → running"):
        predecessors(P.RUNNING, expect=(P.DONE,))


async def test_the_guarded_save_lets_one_of_two_racing_decisions_win(tmp_path):
    store = await Store.open(str(tmp_path / "state.sqlite"))
    try:
        await store.save_provision("prov-1", P.WAITING.value, {"id": "prov-1"})
        first = await store.save_provision("prov-1", P.APPROVED.value, {}, expect=predecessors(P.APPROVED))
        second = await store.save_provision("prov-1", P.REJECTED.value, {}, expect=predecessors(P.REJECTED))
        assert (first, second) == (True, False)
        assert not await store.save_provision("prov-1", P.DONE.value, {}, expect=predecessors(P.DONE))  # not running
    finally:
        await store.close()
