"""Waiting, in tests, for what a test needs before it goes on, instead of a sleep that hopes it was long
enough: a migration's state, polled from the store as a person refreshing `/pgmig status` would see it, or
any other condition."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from migration_core.engine.api import Engine
from migration_core.state.models import State
from migration_core.store import Store

GAVE_UP = (State.FAILED, State.CANCELLED)
T = TypeVar("T")


async def wait_state(store: Store, mid: str, *states: State, timeout: float = 90, fail_fast: bool = True) -> State:
    """The first of `states` the migration is found in. `fail_fast`: a migration that failed or was
    cancelled instead (and that is not what was awaited) fails the wait at once, with its error."""
    deadline = time.monotonic() + timeout
    m = None
    while time.monotonic() < deadline:
        m = await store.get_migration(mid)
        if m is not None and m.state in states:
            return m.state
        assert not (fail_fast and m is not None and m.state in GAVE_UP), m.error if m else ""
        await asyncio.sleep(0.05)
    found = f"{m.state.value}: {m.error}" if m else "missing"
    raise AssertionError(f"{mid} is {found}, not {[s.value for s in states]}")


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 30,
    what: str | Callable[[], str] = "",
    every: float = 0.1,
) -> T:
    """The first truthy value `predicate` (plain or async) returns, polled every `every` s. Past `timeout`
    the wait fails saying `what` never happened (a callable is read then: the state as it was at the end)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        found = await value if inspect.isawaitable(value) else value
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}")
        await asyncio.sleep(every)


async def wait_phase(engine: Engine, mid: str, db: str, phase: str, timeout: float = 60) -> None:
    """Until `db` of migration `mid` is in `phase` (e.g. "copying data"), to act in the middle of it."""

    def now() -> str:
        return engine.progress(mid).of(db).phase

    await wait_until(lambda: now() == phase, timeout, lambda: f"{db} never {phase}, but {now()}", 0.02)
