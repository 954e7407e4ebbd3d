"""The migration state machine: which state may follow which, and the one guarded move every state
change goes through.

A move is a conditional UPDATE (the migration must be in a state the table allows to precede the new
one, narrowed by the caller's `expect`), then an audit entry, then the event the channel hears. Two
replicas, two clicks or a cancel racing a pipeline: exactly one move wins, and the loser learns it
(`False`, or `Superseded` from `advance`) instead of overwriting the winner's state.

Running states may follow themselves: a pipeline restarted after a crash re-enters the step it was in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from migration_core.pg import failpoints
from migration_core.state.models import AuditEntry, RetryChanges, State
from migration_core.store import LeaseLost, Store

S = State
_ANY_RUNNING_END = {S.FAILED, S.CANCELLED}

TRANSITIONS: dict[State, frozenset[State]] = {
    k: frozenset(v)
    for k, v in {
        # a new migration, or a retried one (failed → created), goes wherever its first unfinished step is
        S.CREATED: {
            S.CREATED,
            S.PREFLIGHT,
            S.EXPORTING,
            S.IMPORTING,
            S.VERIFYING,
            S.SCHEMA,
            S.FULL_LOAD,
            S.CATCHING_UP,
            *_ANY_RUNNING_END,
        },
        S.PREFLIGHT: {
            S.PREFLIGHT,
            S.EXPORTING,
            S.IMPORTING,
            S.VERIFYING,
            S.SCHEMA,
            S.FULL_LOAD,
            S.CATCHING_UP,
            *_ANY_RUNNING_END,
        },
        # offline
        S.EXPORTING: {S.EXPORTING, S.PAUSED, S.IMPORTING, *_ANY_RUNNING_END},
        S.PAUSED: {S.IMPORTING, *_ANY_RUNNING_END},
        S.IMPORTING: {S.IMPORTING, S.VERIFYING, *_ANY_RUNNING_END},
        S.VERIFYING: {S.VERIFYING, S.COMPLETED, *_ANY_RUNNING_END},
        # online (and managed backends: the service's copy is full_load; offline flex verifies after it)
        S.SCHEMA: {S.SCHEMA, S.FULL_LOAD, *_ANY_RUNNING_END},
        S.FULL_LOAD: {S.FULL_LOAD, S.CATCHING_UP, S.VERIFYING, *_ANY_RUNNING_END},
        S.CATCHING_UP: {S.READY_FOR_CUTOVER, *_ANY_RUNNING_END},
        S.READY_FOR_CUTOVER: {S.AWAITING_APPROVAL, S.CUTTING_OVER, *_ANY_RUNNING_END},
        S.AWAITING_APPROVAL: {S.CUTTING_OVER, S.READY_FOR_CUTOVER, *_ANY_RUNNING_END},
        # before release a cutover falls back (to ready_for_cutover; to failed once a managed service ended its
        # replication; to cancelled when cancelled). Released is the point of no return: it can only complete.
        S.CUTTING_OVER: {S.RELEASED, S.READY_FOR_CUTOVER, S.FAILED, S.CANCELLED},
        S.RELEASED: {S.COMPLETED},
        # retry starts over from the failed step; cancel tears down what a failed migration left (and a cancel
        # that could not finish leaves it failed, saying what is left)
        S.FAILED: {S.CREATED, S.CANCELLED, S.FAILED},
        S.COMPLETED: set(),
        S.CANCELLED: set(),
    }.items()
}


class IllegalTransition(Exception):
    """A bug: code asked for a move the table does not allow."""


class Superseded(Exception):
    """The migration moved on without this flow (cancelled, taken over, decided by someone else): stop quietly."""

    def __init__(self, migration_id: str, wanted: State) -> None:
        super().__init__(f"{migration_id} did not move to {wanted.value}: its state changed meanwhile")
        self.migration_id, self.wanted = migration_id, wanted


def predecessors(to: State) -> frozenset[State]:
    """Every state the table allows to be followed by `to`."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if to in nexts)


def allowed(frm: State, to: State) -> bool:
    return to in TRANSITIONS[frm]


def guard(to: State, expect: Iterable[State] | None = None) -> tuple[State, ...]:
    """The states a move to `to` may start from: the table's, narrowed to `expect` (which must fit it)."""
    legal = predecessors(to)
    if expect is None:
        return tuple(sorted(legal, key=lambda s: s.value))
    wanted = frozenset(expect)
    if not wanted <= legal:
        bad = ", ".join(sorted(f"{s.value} → {to.value}" for s in wanted - legal))
        raise IllegalTransition(f"BUG: the state machine has no transition {bad}")
    return tuple(sorted(wanted, key=lambda s: s.value))


async def move(
    store: Store,
    migration_id: str,
    to: State,
    detail: str,
    *,
    emit: Callable[[str, str], Awaitable[None]],
    expect: Iterable[State] | None = None,
    error: str = "",
    actor: str = "pgmig",
    action: str = "state",
    round: str = "",
    retry_with: RetryChanges | None = None,
    token: int | None = None,
) -> bool:
    """The guarded move: conditional update, audit entry, event. False when another move won; `LeaseLost`
    when `token` (the mover's fencing token) is no longer the migration's.

    The update is shielded: a cancel or shutdown arriving meanwhile waits for it to be committed (or refused),
    then goes on — so a caller never believes a move did not happen that did (the release above all: once
    committed, the fallback must not run). Whoever is told comes after, and their failure undoes nothing."""
    update = asyncio.ensure_future(
        store.transition(
            migration_id, to, expect=guard(to, expect), error=error, round=round, retry_with=retry_with, token=token
        )
    )
    try:
        moved = await asyncio.shield(update)
    except asyncio.CancelledError:
        await update
        raise
    if not moved and token is not None and not await store.holds(migration_id, token):
        raise LeaseLost(migration_id)
    if not moved:
        return False
    failpoints.reached(f"state:{to.value}")
    await store.audit(AuditEntry(actor, action, f"{to.value}: {detail}"[:2000], migration_id))
    await emit(migration_id, detail)
    return True
