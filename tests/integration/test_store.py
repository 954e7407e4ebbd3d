"""The state store on both backends: SQLite (embedded) and PostgreSQL (a real cluster)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from migration_core.state.models import Approval, AuditEntry, Migration, MigrationOptions, State, Step, utcnow
from migration_core.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, target_cluster):
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    db = f"state_{abs(hash(tmp_path)) % 10**8}"
    target_cluster.psql(f'CREATE DATABASE "{db}"')
    return target_cluster.dsn(db)


def migration(mid: str) -> Migration:
    return Migration(
        id=mid,
        source="onprem",
        target="azure",
        databases=["sales", "billing"],
        mode="online",
        state=State.CREATED,
        requested_by="U1",
        channel="C1",
        options=MigrationOptions(parallel=4),
    )


async def test_migrations_steps_approvals_and_audit_survive_a_restart(store_url):
    store = await Store.open(store_url)
    mid = await store.next_migration_id()
    await store.create_migration(migration(mid))
    await store.save_step(Step(mid, "schema", "done", "42 objects", utcnow(), utcnow()))
    assert await store.transition(mid, State.AWAITING_APPROVAL, round="r1")
    assert await store.add_approval(Approval(mid, "U2", "approve", round="r1"))
    assert await store.transition(mid, State.CREATED)
    await store.audit(AuditEntry("U1", "command", "/pgmig migrate onprem azure", mid, "C1"))
    await store.close()

    reopened = await Store.open(store_url)
    m = await reopened.get_migration(mid)
    assert m is not None and m.databases == ["sales", "billing"] and m.options.parallel == 4
    assert m.state is State.CREATED and m.requested_by == "U1"
    assert [(s.name, s.state, s.detail) for s in await reopened.steps(mid)] == [("schema", "done", "42 objects")]
    assert [(a.approver, a.decision) for a in await reopened.approvals(mid)] == [("U2", "approve")]
    assert [(e.actor, e.action, e.detail) for e in await reopened.audit_log(mid)] == [
        ("U1", "command", "/pgmig migrate onprem azure")
    ]
    assert await reopened.next_migration_id() == f"mig-{int(mid.split('-')[1]) + 1}"
    await reopened.close()


async def test_conditional_transition_and_idempotent_approval(store_url):
    store = await Store.open(store_url)
    mid = await store.next_migration_id()
    await store.create_migration(migration(mid))
    results = await asyncio.gather(*(store.transition(mid, State.PREFLIGHT, expect=(State.CREATED,)) for _ in range(5)))
    assert results.count(True) == 1
    assert not await store.transition(mid, State.COMPLETED, expect=(State.CREATED,))
    assert await store.transition(mid, State.FAILED, error="schema: boom")
    m = await store.get_migration(mid)
    assert m.state is State.FAILED and m.error == "schema: boom"
    assert not await store.add_approval(Approval(mid, "U2", "approve", round="r1"))  # no open round
    assert await store.transition(mid, State.AWAITING_APPROVAL, round="r1")
    results = await asyncio.gather(*(store.add_approval(Approval(mid, "U2", "approve", round="r1")) for _ in range(5)))
    assert results.count(True) == 1
    assert not await store.add_approval(Approval(mid, "U3", "approve", round="r0"))  # an earlier round's click
    assert await store.transition(mid, State.FAILED)
    assert not await store.add_approval(Approval(mid, "U4", "approve", round="r1"))  # decided: closed
    assert len(await store.approvals(mid)) == 1
    assert [x.id for x in await store.list_migrations(active_only=True)] == []
    await store.close()


async def test_leases_go_stale_on_the_stores_clock_and_commands_wait_for_the_holder(store_url):
    store = await Store.open(store_url)
    mid = await store.next_migration_id()
    await store.create_migration(migration(mid), owner="r1/a")
    assert await store.lease_alive(mid, 60) == "r1/a"
    assert not await store.claim(mid, "r2/b", 60)  # the lease is fresh
    assert await store.claim(mid, "r1/c", 60, previous_life="r1/")  # the same replica, restarted
    await asyncio.sleep(1.1)
    assert await store.lease_alive(mid, 1) == ""  # nobody renewed it for a second
    assert await store.claim(mid, "r2/b", 1)
    await store.enqueue("c1", mid, "cancel", "U1", {})
    assert [c["id"] for c in await store.commands_for("r1/c")] == []
    assert [c["id"] for c in await store.commands_for("r2/b")] == ["c1"]
    assert (await asyncio.gather(store.take_command("c1"), store.take_command("c1"))).count(True) == 1
    await store.finish_command("c1", {"ok": True})
    assert (await store.command("c1"))["result"] == {"ok": True}
    assert await store.first_delivery("pgmig.approve:1.5:U1") and not await store.first_delivery("pgmig.approve:1.5:U1")
    await store.close()


async def test_ids_are_unique_across_concurrent_allocations(store_url):
    store = await Store.open(store_url)
    ids = await asyncio.gather(*(store.next_migration_id() for _ in range(20)))
    assert len(set(ids)) == 20
    await store.close()


async def test_the_audit_pages_decisions_and_counts_read_only_commands(store_url):
    store = await Store.open(store_url)
    mid = await store.next_migration_id()
    await store.create_migration(migration(mid))
    start = utcnow()
    for n in range(7):
        at = start + timedelta(seconds=n)
        await store.audit(AuditEntry("U1", "query" if n % 2 else "command", f"#{n}", mid, "C1", at))
    await store.audit(AuditEntry("U1", "command", "another migration's", "mig-999999", "C1", start))
    newest = await store.audit_page(mid, 1, size=2)
    assert [e.detail for e in newest.entries] == ["#4", "#6"] and (newest.pages, newest.read_only) == (2, 3)
    oldest = await store.audit_page(mid, 2, size=2)
    assert [e.detail for e in oldest.entries] == ["#0", "#2"]
    everything = await store.audit_page(mid, 3, size=2, everything=True)
    assert [e.detail for e in everything.entries] == ["#1", "#2"] and (everything.pages, everything.read_only) == (4, 0)
    assert (await store.audit_page(mid, 9, size=2)).entries == []
    await store.close()
