"""The state machine's table, walked: what may follow what, and the one guarded move."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from migration_core.state import lifecycle
from migration_core.state.lifecycle import TRANSITIONS, IllegalTransition, guard, predecessors
from migration_core.state.models import Migration, RetryChanges, State

S = State


def reachable(start: State) -> set[State]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_in_the_table_and_reachable_from_created():
    assert set(TRANSITIONS) == set(State)
    assert reachable(S.CREATED) == set(State)


def test_completed_and_cancelled_are_the_end():
    assert TRANSITIONS[S.COMPLETED] == TRANSITIONS[S.CANCELLED] == frozenset()


def test_every_unfinished_state_can_end():
    for state in State:
        if state not in (S.COMPLETED, S.CANCELLED):
            assert reachable(state) & {S.COMPLETED, S.CANCELLED}, state


def test_release_is_the_point_of_no_return():
    assert TRANSITIONS[S.RELEASED] == {S.COMPLETED}
    assert predecessors(S.RELEASED) == {S.CUTTING_OVER}
    assert not reachable(S.RELEASED) & {S.READY_FOR_CUTOVER, S.CATCHING_UP, S.CANCELLED, S.FAILED}


def test_a_cutover_only_starts_from_ready_or_approved():
    assert predecessors(S.CUTTING_OVER) == {S.READY_FOR_CUTOVER, S.AWAITING_APPROVAL}
    assert predecessors(S.AWAITING_APPROVAL) == {S.READY_FOR_CUTOVER}


def test_retry_only_from_failed_and_nothing_leaves_completed():
    assert {s for s in predecessors(S.CREATED) if s is not S.CREATED} == {S.FAILED}
    assert all(S.COMPLETED not in predecessors(s) for s in State)


def test_running_states_may_be_reentered_after_a_restart():
    for state in (S.PREFLIGHT, S.EXPORTING, S.IMPORTING, S.VERIFYING, S.SCHEMA, S.FULL_LOAD):
        assert state in TRANSITIONS[state]
    for state in (S.CATCHING_UP, S.READY_FOR_CUTOVER, S.CUTTING_OVER, S.RELEASED, S.COMPLETED):
        assert state not in TRANSITIONS[state]


def test_guard_narrows_and_refuses_what_the_table_does_not_allow():
    assert guard(S.CUTTING_OVER, (S.READY_FOR_CUTOVER,)) == (S.READY_FOR_CUTOVER,)
    assert set(guard(S.FAILED)) == predecessors(S.FAILED)
    with pytest.raises(IllegalTransition, match="completed → cutting_over"):
        guard(S.CUTTING_OVER, (S.COMPLETED,))


async def test_a_move_is_conditional_audited_and_announced(store):
    await store.create_migration(Migration("mig-1", "a", "b", ["db"], "online", S.READY_FOR_CUTOVER, "U1"))
    heard: list[tuple[str, str]] = []

    async def emit(mid: str, detail: str) -> None:
        heard.append((mid, detail))

    async def cut(who: str) -> bool:
        return await lifecycle.move(store, "mig-1", S.CUTTING_OVER, f"by {who}", emit=emit, actor=who)

    results = await asyncio.gather(*(cut(f"U{i}") for i in range(5)))
    assert results.count(True) == 1  # of five racing moves exactly one wins
    assert len(heard) == 1
    assert not await lifecycle.move(store, "mig-1", S.CATCHING_UP, "never", emit=emit)  # not in the table
    assert (await store.get_migration("mig-1")).state is S.CUTTING_OVER
    log = await store.audit_log("mig-1")
    assert [e.action for e in log] == ["state"] and log[0].detail.startswith("cutting_over: by U")


async def test_a_failure_keeps_the_retry_its_fix_asks_for_until_the_next_move(store):
    """The retry to type comes from what the core recorded with the failure, not from words in the error:
    an error that only mentions --overwrite asks for nothing."""
    await store.create_migration(Migration("mig-1", "a", "b", ["db"], "offline", S.IMPORTING, "U1"))

    async def emit(mid: str, detail: str) -> None:
        return None

    wanted = RetryChanges(overwrite=True)
    assert await lifecycle.move(store, "mig-1", S.FAILED, "not empty", emit=emit, error="x", retry_with=wanted)
    failed = await store.get_migration("mig-1")
    assert failed.retry_with == wanted and failed.retry_command == "/pgmig retry mig-1 --overwrite"
    assert replace(failed, options=replace(failed.options, overwrite=True)).retry_command == "/pgmig retry mig-1"
    assert await lifecycle.move(store, "mig-1", S.CREATED, "retried", emit=emit)
    assert not (await store.get_migration("mig-1")).retry_with
    assert await lifecycle.move(store, "mig-1", S.FAILED, "x", emit=emit, error="importing: --overwrite is no help")
    assert (await store.get_migration("mig-1")).retry_command == "/pgmig retry mig-1"
