"""`Journal.confirm()`: the check that the writer still holds the migration and the renewal of its lease are one
statement, so that once it returns no other replica can take the migration over for a full lease period."""

from __future__ import annotations

import pytest

from migration_core.state.journal import Journal
from migration_core.state.models import Migration, State
from migration_core.store import LeaseLost, Store

LONG_AGO = "2000-01-01T00:00:00.000000+00:00"  # a heartbeat nobody renewed: any lease has lapsed


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(str(tmp_path / "state.sqlite"))
    await s.create_migration(Migration("mig-1", "a", "b", ["db"], "online", State.CATCHING_UP, "U1"))
    yield s
    await s.close()


async def lapse(store: Store) -> None:
    """The holder was frozen for longer than any lease: its heartbeat is as old as it gets."""
    await store._db.execute("UPDATE pgmig_migration SET heartbeat = $2 WHERE id = $1", "mig-1", LONG_AGO)


async def test_confirm_renews_a_lapsed_lease_so_a_competing_claim_fails(store):
    lease = await store.claim("mig-1", "r1/a", 60)
    assert lease is not None
    await lapse(store)
    assert await store.lease_alive("mig-1", 60) == ""  # another replica would take it over now…
    await Journal(store, "mig-1", lambda: lease.token).confirm()
    assert await store.lease_alive("mig-1", 60) == "r1/a"  # …but the confirm renewed it
    assert await store.claim("mig-1", "r2/b", 60) is None
    assert await store.holds("mig-1", lease.token)


async def test_confirm_after_a_takeover_or_a_release_raises_and_renews_nothing(store):
    first = await store.claim("mig-1", "r1/a", 60)
    assert first is not None
    await lapse(store)
    second = await store.claim("mig-1", "r2/b", 60)
    assert second is not None and second.token == first.token + 1
    await lapse(store)
    with pytest.raises(LeaseLost):
        await Journal(store, "mig-1", lambda: first.token).confirm()
    assert await store.lease_alive("mig-1", 60) == ""  # the stale holder's confirm did not renew r2's lease
    await store.release("r2/b")
    with pytest.raises(LeaseLost):  # given back: nobody's confirm may keep others off it
        await Journal(store, "mig-1", lambda: second.token).confirm()
    await Journal(store, "mig-1").confirm()  # unfenced (a script that holds no lease): nothing to check
