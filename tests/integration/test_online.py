"""Online migrations on real clusters: PostgreSQL 15 source → 16 target over native logical replication."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from bot.localpg import LocalCluster, free_port
from bot.sandbox import load_pagila
from migration_core.changes import cleanup, watermarks
from migration_core.changes.replication import object_name
from migration_core.engine.api import Engine, MigrationRequest
from migration_core.flows.steps import cutover
from migration_core.state.approval import Verdict
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, Change, Journal
from migration_core.state.models import State
from migration_core.store import Store
from migration_core.verify.tables import verify_database
from tests.integration import factories
from tests.integration.clusters import PASSWORD, TARGET, server
from tests.integration.sample_data import RICH, ROLES, pagila_available, pg16_bindir
from tests.integration.waiting import wait_phase, wait_state, wait_until

LOGICAL = {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}


@pytest.fixture(scope="module")
def src(cluster_root):
    c = LocalCluster(cluster_root / "online-source", password=PASSWORD, settings=LOGICAL).init().start()
    c.psql(ROLES)
    c.psql("CREATE DATABASE rich")
    c.psql(RICH, database="rich")
    if pagila_available():
        load_pagila(c)
    c.psql("CREATE DATABASE nopk")
    c.psql(
        "CREATE TABLE events (at int, what text); INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 50) g",
        database="nopk",
    )
    c.psql("CREATE DATABASE busy")
    c.psql(
        "CREATE TABLE ticket (id bigint PRIMARY KEY, body text); "
        "INSERT INTO ticket SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g",
        database="busy",
    )
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def tgt(cluster_root):
    c = LocalCluster(cluster_root / "online-target", password=PASSWORD, bindir=pg16_bindir(), settings=TARGET)
    c.init().start()
    yield c
    c.destroy()


async def start_online(engine: Engine, dbs: list[str], **kw) -> str:
    m = await engine.create(
        MigrationRequest(
            source="onprem",
            target="azure",
            mode="online",
            requested_by="U0ALICE",
            channel="C0OPS",
            databases=dbs,
            overwrite=True,
            parallel=2,
            **kw,
        )
    )
    if not (await engine.preflight(m)).blocking:
        engine.start(m.id)
    return m.id


async def wait_equal(src: LocalCluster, tgt: LocalCluster, db: str, timeout: float = 60) -> None:
    s, t = server("s", src), server("t", tgt)
    deadline = time.monotonic() + timeout
    while True:
        result = await verify_database(s, t, db, replicated_only=True)
        if result.ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(result.mismatches)
        await asyncio.sleep(0.2)  # between looks: each one is a whole verify of the database


def prefix(store: Store, mid: str) -> str:
    """How this state store's replication objects of one migration begin."""
    return f"pgmig_{store.deployment}_m{mid.split('-')[1]}_"


def slots(cluster: LocalCluster) -> list[str]:
    out = cluster.psql("SELECT slot_name FROM pg_replication_slots ORDER BY 1")
    return out.split() if out else []


async def test_online_copies_then_streams_every_change(tmp_path, store, src, tgt):
    engine = factories.engine(store, src, tgt, tmp_path)
    dbs = ["rich"] + (["pagila"] if pagila_available() else [])
    writer_stop = asyncio.Event()
    written = 0

    async def writer() -> None:
        """Writes during the snapshot copy and after it: none of it may be lost or doubled."""
        nonlocal written
        conn = await asyncpg.connect(src.dsn("rich"))
        try:
            while not writer_stop.is_set():
                written += 1
                n = written
                await conn.execute(
                    "INSERT INTO inventory.item (warehouse_id, qty, note) VALUES (1 + $1 % 3, 1, 'live')", n
                )
                await conn.execute("UPDATE inventory.item SET qty = qty + 1 WHERE id = $1", 1 + n % 3000)
                await conn.execute("DELETE FROM inventory.movement WHERE id = $1", n)
                await asyncio.sleep(0.002)  # an application's pace: the copy shares the machine with it
        finally:
            await conn.close()

    write_task = asyncio.create_task(writer())
    mid = await start_online(engine, dbs)
    try:
        await wait_state(engine.store, mid, State.CATCHING_UP, State.READY_FOR_CUTOVER)
        copied_at = written
        await wait_until(lambda: written >= copied_at + 20, what="no writes after the copy")
    finally:
        writer_stop.set()
        await write_task
    src.psql(
        "UPDATE inventory.warehouse SET mood = 'sad' WHERE name = 'north'; "
        "INSERT INTO inventory.movement (at, item_id, delta) VALUES ('2026-03-01', 1, 9); "
        "DELETE FROM public.scratch WHERE id <= 10",
        database="rich",
    )
    if pagila_available():
        src.psql(
            "UPDATE customer SET email = 'moved@example.com' WHERE customer_id = 1; "
            "INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) "
            "VALUES (1, 1, 1, 9.99, '2022-02-15 10:00+00')",
            database="pagila",
        )
    assert await wait_state(engine.store, mid, State.READY_FOR_CUTOVER) is State.READY_FOR_CUTOVER
    for db in dbs:
        await wait_equal(src, tgt, db)
    assert tgt.psql("SELECT mood FROM inventory.warehouse WHERE name = 'north'", database="rich") == "sad"
    assert tgt.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", database="rich") == "0"
    # analyzed after the load, the partitioned table too (autovacuum never does that one): the applications'
    # first queries on the target get real plans. The materialized view is only refreshed at cutover.
    never = (  # pgmig's own verification tables are not the applications'
        "SELECT string_agg(relname, ',') FROM pg_stat_user_tables WHERE last_analyze IS NULL "
        "AND schemaname NOT LIKE 'pgmig%'"
    )
    assert tgt.psql(never, database="rich") == "stock_mv"
    assert (
        tgt.psql(
            "SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger "
            "WHERE NOT tgisinternal AND tgname NOT IN ('pgmig_take_digest', 'pgmig_gate_ddl')",  # pgmig's own
            database="rich",
        )
        == "item_sleeping:D,item_touch:D"
    )
    load = await store.step(mid, "load:rich")
    assert {fk["name"] for fk in load.data["parked"]["foreign_keys"]} >= {"item_warehouse_id_fkey"}
    assert {(t["name"], t["enabled"]) for t in load.data["parked"]["triggers"]} == {
        ("item_sleeping", "D"),
        ("item_touch", "O"),
    }
    assert len([s for s in slots(src) if s.startswith(prefix(store, mid))]) == len(dbs)
    states = engine.events.of(mid)
    assert states[:4] == ["preflight", "schema", "full_load", "catching_up"] and states[-1] == "ready_for_cutover"
    assert "ready for cutover" in engine.events.states[-1][2]
    await engine.cancel(mid, "U0TEST")
    assert not [s for s in slots(src) if s.startswith("pgmig_")]
    assert src.psql("SELECT count(*) FROM pg_publication", database="rich") == "0"
    assert tgt.psql("SELECT count(*) FROM pg_subscription") == "0"
    await engine.close()


async def test_table_without_primary_key_refused_then_replicated_with_the_flag(tmp_path, store, src, tgt):
    engine = factories.engine(store, src, tgt, tmp_path)
    mid = await start_online(engine, ["nopk"])
    m = await store.get_migration(mid)
    assert m.state is State.FAILED and "public.events" in m.error and "--replica-identity-full" in m.error
    mid = await start_online(engine, ["nopk"], replica_identity_full=True)
    await wait_state(engine.store, mid, State.CATCHING_UP, State.READY_FOR_CUTOVER)
    assert src.psql("SELECT relreplident FROM pg_class WHERE relname = 'events'", database="nopk") == "f"
    src.psql("UPDATE events SET what = 'changed' WHERE at = 7; DELETE FROM events WHERE at > 40", database="nopk")
    await wait_equal(src, tgt, "nopk")
    assert tgt.psql("SELECT what FROM events WHERE at = 7", database="nopk") == "changed"
    assert tgt.psql("SELECT count(*) FROM events", database="nopk") == "40"
    assert (
        "REPLICA IDENTITY FULL set on the source for nopk: public.events" in (await store.step(mid, "identity")).detail
    )
    await engine.cancel(mid, "U0TEST")
    assert src.psql("SELECT relreplident FROM pg_class WHERE relname = 'events'", database="nopk") == "d"
    assert not [s for s in slots(src) if s.startswith("pgmig_")]
    await engine.close()


async def test_restart_mid_load_and_mid_stream_resumes_with_one_slot(tmp_path, store, src, tgt):
    first = factories.engine(store, src, tgt, tmp_path)
    mid = await start_online(first, ["busy"])
    await wait_phase(first, mid, "busy", "copying data")
    await first.close()  # the process dies mid full load
    assert (await store.get_migration(mid)).state is State.FULL_LOAD
    second = factories.engine(store, src, tgt, tmp_path)
    assert await second.recover() == [mid]
    await wait_state(second.store, mid, State.CATCHING_UP, State.READY_FOR_CUTOVER)
    src.psql("INSERT INTO ticket VALUES (400001, 'after restart')", database="busy")
    await wait_equal(src, tgt, "busy")
    assert tgt.psql("SELECT count(*), count(DISTINCT id) FROM ticket", database="busy") == "400001|400001"
    await second.close()  # and dies again while streaming
    third = factories.engine(store, src, tgt, tmp_path)
    assert await third.recover() == [mid]
    src.psql("DELETE FROM ticket WHERE id = 400001", database="busy")
    await wait_state(third.store, mid, State.READY_FOR_CUTOVER)
    await wait_equal(src, tgt, "busy")
    assert len([s for s in slots(src) if s.startswith("pgmig_")]) == 1 and slots(src)[0].startswith(prefix(store, mid))
    await third.cancel(mid, "U0TEST")
    await third.close()


async def test_lag_and_wal_retention_alerts(tmp_path, store, src, tgt):
    engine = factories.engine(store, src, tgt, tmp_path, wal_retention_alert_bytes=0, lag_alert_bytes=16 << 10)
    mid = await start_online(engine, ["nopk"], replica_identity_full=True)
    await wait_state(engine.store, mid, State.CATCHING_UP, State.READY_FOR_CUTOVER)
    name = (await store.step(mid, "load:nopk")).data["slot"]
    tgt.psql(f"ALTER SUBSCRIPTION {name} DISABLE", database="nopk")
    src.psql("INSERT INTO events SELECT g, repeat('y', 500) FROM generate_series(1000, 3000) g", database="nopk")
    await wait_until(
        lambda: all(any(w in t for _, t in engine.events.alerts) for w in ("lag", "not streaming")),
        30,
        "no lag or not-streaming alert",
    )
    texts = [t for m, t in engine.events.alerts if m == mid]
    assert any("hold WAL on the source" in t for t in texts)
    assert any("replication lag above the alert threshold" in t for t in texts)
    assert any("not streaming: nopk" in t for t in texts)
    tgt.psql(f"ALTER SUBSCRIPTION {name} ENABLE", database="nopk")
    await wait_equal(src, tgt, "nopk")
    await wait_until(
        lambda: any("back to normal: stream" in t for _, t in engine.events.alerts),
        30,
        "the stream alert never cleared",
    )
    await engine.cancel(mid, "U0TEST")
    src.psql("DELETE FROM events WHERE at >= 1000", database="nopk")
    await engine.close()


async def test_cleanup_finds_and_removes_only_this_deployments_leftovers(src):
    mine, theirs = object_name("abc123", "mig-99", "rich"), object_name("def456", "mig-99", "rich")
    for name in (mine, theirs):
        src.psql(f"SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')")
        src.psql(f"CREATE PUBLICATION {name} FOR TABLE public.scratch", database="rich")
    source = server("onprem", src)
    try:
        found = await cleanup.find(source, "abc123")
        assert {(x.kind, x.name, x.migration_id) for x in found} == {
            ("slot", mine, "mig-99"),
            ("publication", mine, "mig-99"),
        }
        removed = await cleanup.remove(source, found)
        assert len(removed) == 2
        assert not await cleanup.find(source, "abc123")
        assert {x.name for x in await cleanup.find(source, "def456")} == {theirs}  # another pgmig's: untouched
    finally:
        src.psql(f"SELECT pg_drop_replication_slot('{theirs}')")
        src.psql(f"DROP PUBLICATION {theirs}", database="rich")


CUTOVER_DB = """
CREATE TABLE parent (id serial PRIMARY KEY, name text);
CREATE TABLE child (id bigserial PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, note text);
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := upper(NEW.note); RETURN NEW; END $$;
CREATE TRIGGER child_shout BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION shout();
CREATE TRIGGER child_quiet BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION shout();
ALTER TABLE child DISABLE TRIGGER child_quiet;
INSERT INTO parent (name) SELECT 'p' || g FROM generate_series(1, 10) g;
INSERT INTO child (parent_id, note) SELECT 1 + g % 10, 'n' || g FROM generate_series(1, 1000) g;
"""


def fresh_db(cluster: LocalCluster, name: str) -> None:
    cluster.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    cluster.psql(f'CREATE DATABASE "{name}"')
    cluster.psql(CUTOVER_DB, database=name)


async def test_cutover_with_writes_up_to_the_fence_loses_nothing(tmp_path, store, src, tgt):
    fresh_db(src, "cut")
    engine = factories.engine(store, src, tgt, tmp_path)
    mid = await start_online(engine, ["cut"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    committed: list[int] = []

    async def application() -> None:
        conn = await asyncpg.connect(src.dsn("cut"))
        try:
            while True:
                committed.append(
                    await conn.fetchval("INSERT INTO child (parent_id, note) VALUES (1, 'live') RETURNING id")
                )
                await asyncio.sleep(0.001)  # an application's pace between commits
        except Exception:  # fenced: the session was ended mid-statement, or new writes were refused
            return

    app = asyncio.create_task(application())
    await wait_until(lambda: len(committed) > 50, what="the application never got going")
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    await asyncio.wait_for(app, 10)
    m = await store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    on_target = await asyncpg.connect(tgt.dsn("cut"))
    try:
        assert await on_target.fetchval("SELECT count(*) FROM child WHERE id = ANY($1::bigint[])", committed) == len(
            committed
        )
        source_seq = int(src.psql("SELECT last_value FROM child_id_seq", database="cut"))
        assert await on_target.fetchval("SELECT last_value FROM child_id_seq") == source_seq >= max(committed)
        assert await on_target.fetchval(
            "SELECT bool_and(convalidated) AND count(*) = 1 FROM pg_constraint WHERE contype = 'f'"
        )
        assert (
            await on_target.fetchval(
                "SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) "
                "FROM pg_trigger WHERE NOT tgisinternal"
            )
            == "child_quiet:D,child_shout:O"
        )
        await on_target.execute("INSERT INTO child (parent_id, note) VALUES (2, 'on azure')")  # target writable
    finally:
        await on_target.close()
    assert src.psql("SHOW default_transaction_read_only", database="cut") == "on"
    assert not [s for s in slots(src) if s.startswith("pgmig_")]
    assert tgt.psql("SELECT count(*) FROM pg_subscription") == "0"
    step = await store.step(mid, "cutover:cut")
    assert set(step.data["timings"]) == {
        "fence",
        "catch_up",
        "sequences",
        "constraints",
        "counts",
        "validate",
        "verify",
    }
    assert any("target released" in t for _, t in engine.events.alerts)
    assert "writes unavailable" in engine.events.states[-1][2]
    await engine.close()


def fenced(cluster: LocalCluster, db: str) -> bool:
    """What an application sees: new sessions read-only, or CONNECT refused to non-superusers."""
    read_only = cluster.psql(
        f"SELECT coalesce((SELECT split_part(c, '=', 2) FROM pg_db_role_setting s, "
        f"unnest(s.setconfig) c WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE "
        f"datname = '{db}') AND c LIKE 'default_transaction_read_only=%'), 'off')"
    )
    connect = cluster.psql(f"SELECT has_database_privilege('app_user', '{db}', 'CONNECT')")
    return read_only == "on" or connect == "f"


@pytest.fixture(scope="module")
def app_user(src):
    src.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_user') THEN "
        "CREATE ROLE app_user LOGIN PASSWORD 'App-user-pw-1'; END IF; END $$"
    )
    return "app_user"


async def test_a_failure_before_release_falls_back_on_every_database(tmp_path, store, src, tgt, app_user):
    fresh_db(src, "fb1")
    fresh_db(src, "fb2")
    engine = factories.engine(store, src, tgt, tmp_path, catch_up_timeout_seconds=1.0)
    mid = await start_online(engine, ["fb1", "fb2"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    locker = await asyncpg.connect(tgt.dsn("fb2"))  # fb2's foreign key can never be put back
    await locker.execute("BEGIN; LOCK TABLE child IN ACCESS EXCLUSIVE MODE")
    try:
        assert not await engine.cutover(mid, "U0BOB")
    finally:
        await locker.close()
    m = await store.get_migration(mid)
    assert m.state is State.READY_FOR_CUTOVER and "lock timeout" in m.error, m.error
    assert "; replication keeps running" in engine.events.states[-1][2]  # measured, fb1 and fb2 both streaming
    for db in ("fb1", "fb2"):  # fb1 was fenced and its constraints put back: all of it undone
        assert not fenced(src, db), db
        assert tgt.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", database=db) == "0"
    assert not [e for e in await engine.leftovers(mid) if e.kind.value == "fence"]
    src.psql("INSERT INTO parent (name) VALUES ('after fallback')", database="fb1")  # writable, and still streamed
    await wait_equal(src, tgt, "fb1")
    assert any("cutover fell back" in t for _, t in engine.events.alerts)
    assert "writable again" in engine.events.states[-1][2]
    await engine.cancel(mid, "U0TEST")
    await engine.close()


async def test_no_cutover_over_a_subscription_that_does_not_stream(tmp_path, store, src, tgt, app_user):
    """Asked, or approved and started, while a subscription is broken: refused with the replication state
    as it is, nothing fenced, and no claim that replication keeps running."""
    fresh_db(src, "broken")
    engine = factories.engine(store, src, tgt, tmp_path)
    mid = await start_online(engine, ["broken"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    name = (await store.step(mid, "load:broken")).data["slot"]
    tgt.psql(f"ALTER SUBSCRIPTION {name} DISABLE", database="broken")
    active = f"SELECT active FROM pg_replication_slots WHERE slot_name = '{name}'"
    await wait_until(lambda: src.psql(active) == "f", 20, f"slot {name} still streams")
    with pytest.raises(MigrationError) as refused:
        await engine.prepare_cutover(mid, "U0ALICE", "C0OPS", 30)
    assert "cannot be cut over now: replication is not caught up — broken not streaming" in str(refused.value)
    assert "pg_stat_subscription" in str(refused.value)
    assert not await engine.cutover(mid, "U0BOB")  # a decided cutover checks again before fencing
    m = await store.get_migration(mid)
    assert m.state is State.READY_FOR_CUTOVER and "nothing was fenced" in m.error
    assert not fenced(src, "broken")
    last = engine.events.states[-1][2]
    assert "replication is NOT running: broken not streaming" in last and "keeps running" not in last
    tgt.psql(f"ALTER SUBSCRIPTION {name} ENABLE", database="broken")
    await engine.cancel(mid, "U0TEST")
    await engine.close()


async def test_a_cancel_during_the_grace_period_lifts_the_fence(tmp_path, store, src, tgt, app_user):
    fresh_db(src, "grace")
    engine = factories.engine(store, src, tgt, tmp_path, fence_grace_seconds=5.0)
    mid = await start_online(engine, ["grace"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    request = await engine.prepare_cutover(mid, "U0ALICE", "C1", 10)
    assert await engine.open_cutover(request)
    decision, _ = await engine.decide_cutover(mid, request.round, "U0BOB", "approve", is_approver=True, required=1)
    assert decision.verdict is Verdict.APPROVED  # the approved cutover now runs as a task
    await wait_until(lambda: fenced(src, "grace"), 10, "the fence never went up")
    outcome = await engine.cancel(mid, "U0BOB")  # the grace period (5 s) is still running
    assert outcome.state is State.CANCELLED, outcome.failed
    assert not fenced(src, "grace")
    assert not [s for s in slots(src) if s.startswith(prefix(store, mid))]
    assert "grace" not in tgt.psql("SELECT datname FROM pg_database")  # pgmig created it: dropped on cancel
    await engine.close()


async def test_problems_after_release_never_reopen_the_source(tmp_path, store, src, tgt, app_user):
    fresh_db(src, "sum")
    engine = factories.engine(store, src, tgt, tmp_path)
    mid = await start_online(engine, ["sum"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    tgt.psql(
        "UPDATE parent SET name = 'tampered' WHERE id = 3; "  # counts equal, content not
        "UPDATE child SET parent_id = 999 WHERE id = 5",
        database="sum",
    )  # and a foreign key that cannot hold
    assert await engine.cutover(mid, "U0BOB")
    m = await store.get_migration(mid)
    assert m.state is State.COMPLETED and "problem(s) found after release" in engine.events.states[-1][2]
    assert fenced(src, "sum")  # applications may already write to the target: the source stays fenced
    incident = await store.step(mid, "incident")
    assert any("checksums of sum differ" in p and "public.parent" in p for p in incident.data["problems"])
    assert any("child_parent_id_fkey" in p for p in incident.data["problems"])
    assert any(t.startswith("🚨") and "source stays fenced" in t for _, t in engine.events.alerts)
    assert "ready_for_cutover" not in engine.events.of(mid)[-3:]
    assert not [s for s in slots(src) if s.startswith(prefix(store, mid))]  # torn down as usual
    await engine.close()


async def test_a_stale_materialized_view_does_not_stop_the_cutover(tmp_path, store, src, tgt, app_user):
    fresh_db(src, "mv")
    src.psql(
        "CREATE MATERIALIZED VIEW child_count AS SELECT count(*) AS n FROM child; "
        "CREATE SEQUENCE invoice_no START 671 MINVALUE 671; CREATE SEQUENCE used_no START 500 MINVALUE 500; "
        "SELECT nextval('used_no')",
        database="mv",
    )
    src.psql(
        "SELECT lo_from_bytea(4711, 'contract'); COMMENT ON LARGE OBJECT 4711 IS 'signed copy'; "
        "ALTER LARGE OBJECT 4711 OWNER TO app_user; GRANT SELECT ON LARGE OBJECT 4711 TO PUBLIC",
        database="mv",
    )
    engine = factories.engine(store, src, tgt, tmp_path)
    mid = await start_online(engine, ["mv"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    src.psql("INSERT INTO child (parent_id, note) VALUES (1, 'after the view was refreshed')", database="mv")
    assert await engine.cutover(mid, "U0BOB")
    m = await store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    assert tgt.psql("SELECT n FROM child_count", database="mv") == "1001"  # refreshed on the target only
    analyzed = "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'child_count'"
    assert tgt.psql(analyzed, database="mv") == "t"  # and analyzed after the release, for the planner
    assert src.psql("SELECT n FROM child_count", database="mv") == "1000"  # the source's is never refreshed
    assert tgt.psql("SELECT nextval('invoice_no'), nextval('used_no')", database="mv") == "671|501"
    assert (
        tgt.psql(
            "SELECT obj_description(4711, 'pg_largeobject') || '|' || pg_get_userbyid(lomowner) || '|' || "
            "lomacl::text FROM pg_largeobject_metadata WHERE oid = 4711",
            database="mv",
        )
        == "signed copy|app_user|{app_user=rw/app_user,=r/app_user}"
    )
    assert "materialized view public.child_count: source 1 rows, target 1 rows" not in engine.events.states[-1][2]
    assert "materialized view public.child_count: source 1 rows, sum" in engine.events.states[-1][2]  # a warning
    await engine.close()


async def test_a_second_replica_leaves_a_live_ones_migration_alone_until_its_lease_expires(tmp_path, store, src, tgt):
    first = factories.engine(store, src, tgt, tmp_path, lease_seconds=1.0)
    mid = await start_online(first, ["nopk"], replica_identity_full=True)
    await wait_state(first.store, mid, State.CATCHING_UP, State.READY_FOR_CUTOVER)
    second = factories.engine(store, src, tgt, tmp_path, lease_seconds=1.0)
    beat = (await store.owner(mid))[1]

    async def owner_is(instance: str) -> bool:
        return (await store.owner(mid))[0] == instance

    async def renewed() -> bool:
        return (await store.owner(mid))[1] != beat

    await wait_until(renewed, 5, "the lease is not being renewed")
    await asyncio.sleep(1.2)  # longer than the lease: only renewal keeps it
    assert await second.recover() == []  # the first replica is alive: its migration is left alone
    assert await owner_is(first.instance)
    first.scheduler.shutdown()  # the first replica dies without a word: its lease goes stale
    # the second notices on its own lease ticks
    await wait_until(lambda: owner_is(second.instance), 5, "the second replica never took it over")
    await wait_state(second.store, mid, State.READY_FOR_CUTOVER)
    assert len([s for s in slots(src) if s.startswith(prefix(store, mid))]) == 1
    await second.cancel(mid, "U0TEST")
    await second.close()
    await first.close()


async def test_a_failed_migration_keeps_nothing_unwatched_and_cancel_removes_it(tmp_path, store, src, tgt):
    engine = factories.engine(store, src, tgt, tmp_path, leftover_check_seconds=0.2)
    mid = await start_online(engine, ["busy"])
    await wait_phase(engine, mid, "busy", "copying data")
    tgt.psql(
        "CREATE FUNCTION no_indexes() RETURNS event_trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'index builds are frozen'; END $$; CREATE EVENT TRIGGER frozen ON "
        "ddl_command_start WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX') EXECUTE FUNCTION no_indexes()",
        database="busy",
    )
    await engine.wait(mid)
    m = await store.get_migration(mid)
    assert m.state is State.FAILED and "index builds are frozen" in m.error
    left = {(e.kind.value, e.server) for e in await engine.leftovers(mid)}
    assert {("slot", "source"), ("publication", "source"), ("database", "target")} <= left
    # nobody runs a failed migration, but its slot holds WAL: the channel hears of it
    await wait_until(lambda: any("still hold WAL" in t for m_, t in engine.events.alerts if m_ == mid), 10, "no alert")
    assert any("still hold WAL on onprem" in t and f"/pgmig cancel {mid}" in t for _, t in engine.events.alerts)

    unreachable = factories.engine(store, src, tgt, tmp_path, source_server={"port": free_port()})
    outcome = await unreachable.cancel(mid, "U0BOB")  # the source is down: what is on it cannot be removed
    assert outcome.state is State.FAILED and any("connection refused" in f for f in outcome.failed)
    assert not [d for d in outcome.done if "slot" in d]
    m = await store.get_migration(mid)
    assert m.state is State.FAILED and m.error.startswith("cancel:")
    assert [s for s in slots(src) if s.startswith(prefix(store, mid))]  # still there, still known
    assert ("slot", "source") in {(e.kind.value, e.server) for e in await engine.leftovers(mid)}
    await unreachable.close()

    outcome = await engine.cancel(mid, "U0BOB")  # reachable again: cancel finishes the job
    assert outcome.state is State.CANCELLED, outcome.failed
    assert not [s for s in slots(src) if s.startswith(prefix(store, mid))]
    assert src.psql("SELECT count(*) FROM pg_publication", database="busy") == "0"
    assert "busy" not in tgt.psql("SELECT datname FROM pg_database")
    assert not await engine.leftovers(mid)
    await wait_until(
        lambda: any("back to normal: leftover-slot" in t for _, t in engine.events.alerts), 5, "the alert never cleared"
    )
    await engine.close()


async def test_a_transaction_committed_asynchronously_just_before_the_fence_is_not_left_behind(
    tmp_path, store, cluster_root
):
    """synchronous_commit = off and a lazy WAL writer: the commit sits unwritten in WAL buffers when the fence
    comes. The catch-up must still wait for it, or the target is released with the old row."""
    lazy = LocalCluster(
        cluster_root / "lazy-src",
        password=PASSWORD,
        settings={**LOGICAL, "wal_writer_delay": "10s", "synchronous_commit": "off"},
    )
    lazy.init().start()
    target = LocalCluster(cluster_root / "lazy-tgt", password=PASSWORD, settings=TARGET).init().start()
    try:
        fresh_db(lazy, "lazy")
        engine = factories.engine(store, lazy, target, tmp_path)
        mid = await start_online(engine, ["lazy"])
        await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
        lazy.psql("UPDATE parent SET name = 'committed just before the fence' WHERE id = 1", database="lazy")
        assert await engine.cutover(mid, "U0BOB")
        assert await store.step(mid, "incident") is None, (await store.step(mid, "incident")).detail
        assert target.psql("SELECT name FROM parent WHERE id = 1", database="lazy") == "committed just before the fence"
        await engine.close()
    finally:
        lazy.destroy()
        target.destroy()


async def test_a_session_that_slips_in_past_the_fence_is_ended_and_counted(tmp_path, store, src, tgt, monkeypatch):
    """A superuser keeps CONNECT through the fence (it is only softly fenced): a session that connects
    after the fence ended every other one is ended after the catch-up too, which is then redone, and
    the fence's journal entry counts it with the others."""
    fresh_db(src, "late")
    engine = factories.engine(store, src, tgt, tmp_path)
    mid = await start_online(engine, ["late"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    slipped_in: list[asyncpg.Connection] = []
    catch_ups = 0
    real_wait, real_mark = cutover.wait_caught_up, watermarks.fence_mark

    async def slip_in() -> None:
        nonlocal catch_ups
        catch_ups += 1
        if not slipped_in:  # the fence is up: this session passes it as a superuser's would
            slipped_in.append(await asyncpg.connect(src.dsn("late")))

    async def connect_then_wait(*args, **kwargs) -> None:  # the catch-up by the slot's confirmed position
        await slip_in()
        await real_wait(*args, **kwargs)

    async def connect_then_mark(*args, **kwargs) -> None:  # the catch-up by the fence's watermark
        await slip_in()
        await real_mark(*args, **kwargs)

    # the catch-up by watermark runs once a look made verification's objects (else the slot's): wait for them
    verification = lambda: engine.progress(mid).of("late").verification  # noqa: E731
    await wait_until(lambda: verification() is not None and verification().schema, 30, "verification's objects")
    monkeypatch.setattr(cutover, "wait_caught_up", connect_then_wait)
    monkeypatch.setattr(watermarks, "fence_mark", connect_then_mark)
    try:
        assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await slipped_in[0].fetchval("SELECT 1")  # ended by pgmig
    finally:
        await asyncio.gather(*(c.close() for c in slipped_in), return_exceptions=True)
    assert catch_ups == 2  # caught up again after ending it
    assert (await store.get_migration(mid)).state is State.COMPLETED
    fence = await Journal(store, mid).find(Change.FENCE, SOURCE, "late")
    assert fence is not None and fence.data["ended_sessions"] >= 1
    step = await store.step(mid, "release")
    assert step.data["fences"]["late"]["ended_sessions"] == fence.data["ended_sessions"]
    await engine.close()


async def test_the_window_compares_counts_again_while_rows_the_slot_confirmed_are_still_arriving(
    tmp_path, store, src, tgt, monkeypatch
):
    """The slot's confirmed position was seen ahead of what the target showed (the crash test: one cutover
    in four under load fell back, rows committed before the catch-up's own transaction arriving a moment
    later). Here the catch-up believes the slot while the subscription's apply worker is stopped: the
    window compares the counts again until the rows arrive, instead of falling back. (Without continuous
    verification: with it, the catch-up is the fence's watermark, which never believes the slot.)"""
    fresh_db(src, "early")
    engine = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=0)
    mid = await start_online(engine, ["early"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    subscription = tgt.psql(
        "SELECT quote_ident(subname) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
        "WHERE d.datname = 'early'"
    )
    enabled: list[asyncio.Task] = []

    async def enable_later() -> None:
        await asyncio.sleep(1.0)  # the rows must arrive after the window's first count: it has to count again
        await asyncio.to_thread(tgt.psql, f"ALTER SUBSCRIPTION {subscription} ENABLE", database="early")

    async def confirmed_too_early(*args, **kwargs) -> None:
        """Rows the target does not show yet when the catch-up says it is done (a superuser writes them
        through the soft fence, before the catch-up's point, while the apply worker is stopped)."""
        if enabled:
            return
        await asyncio.to_thread(tgt.psql, f"ALTER SUBSCRIPTION {subscription} DISABLE", database="early")
        insert = "BEGIN READ WRITE; INSERT INTO child (parent_id, note) SELECT 1, 'late' FROM generate_series(1, 40)"
        await asyncio.to_thread(src.psql, insert + "; COMMIT", database="early")
        enabled.append(asyncio.create_task(enable_later()))

    monkeypatch.setattr(cutover, "wait_caught_up", confirmed_too_early)
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    await asyncio.gather(*enabled)
    count = "SELECT count(*) FROM child WHERE note = 'late'"
    assert tgt.psql(count, database="early") == src.psql(count, database="early") == "40"
    assert (await store.get_migration(mid)).state is State.COMPLETED
    await engine.close()
