"""Waiting, in tests, for a migration to reach a state: polled from the store, as a person refreshing
`/pgmig status` would see it."""

from __future__ import annotations

import asyncio
import time

from migration_core.state.models import State
from migration_core.state.store import Store

GAVE_UP = (State.FAILED, State.CANCELLED)


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
