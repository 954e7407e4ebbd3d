"""No size limit: work on data runs as long as it moves, whatever the control-query timeout; large tables
are copied and checked as ranges under one snapshot; a stream that stops moving is failed, saying why."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from bot.localpg import LocalCluster
from migration_core.changes.constraints import ForeignKey, Parked
from migration_core.changes.fence import Fence
from migration_core.engine.api import Engine, MigrationRequest
from migration_core.flows.steps import cutover
from migration_core.flows.steps.cutover import DatabaseCutover
from migration_core.observe import waits
from migration_core.observe.progress import DatabaseProgress
from migration_core.state.errors import MigrationError
from migration_core.state.failures import failure_reason
from migration_core.state.models import State
from migration_core.transfer import copy
from migration_core.transfer.limits import DataLimits
from migration_core.verify.tables import verify_database
from tests.integration import factories
from tests.integration.clusters import server
from tests.integration.waiting import wait_state, wait_until

QUERY_TIMEOUT = 1.0  # seconds: every copy and VALIDATE below takes longer
DATABASES = ("slow_offline", "slow_online", "validating", "split_me", "stalls", "indexing")


@pytest.fixture(scope="module", autouse=True)
def leave_nothing(source_cluster, target_cluster):
    """The clusters are shared by the whole session: the databases made here go when the module ends."""
    yield
    for cluster in (source_cluster, target_cluster):
        for db in DATABASES:
            cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def fresh(cluster: LocalCluster, db: str, sql: str = "") -> None:
    cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    cluster.psql(f'CREATE DATABASE "{db}"')
    if sql:
        cluster.psql(sql, database=db)


def slow_schema(target_port: int, rows: int = 250) -> str:
    """A table whose rows each take 10 ms to insert on the target only (a generated column calls a
    function that sleeps there), so its copy lasts seconds without the table being big."""
    return f"""
        CREATE FUNCTION slow_on_target(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
        BEGIN IF inet_server_port() = {target_port} THEN PERFORM pg_sleep(0.01); END IF; RETURN x; END $$;
        CREATE TABLE parent (id int PRIMARY KEY);
        INSERT INTO parent VALUES (1), (2);
        CREATE TABLE slow (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent,
                           v int GENERATED ALWAYS AS (slow_on_target(id)) STORED);
        INSERT INTO slow SELECT g, 1 + g % 2 FROM generate_series(1, {rows}) g;
    """


async def migrate(engine: Engine, mode: str, db: str) -> str:
    m = await engine.create(
        MigrationRequest(
            source="onprem",
            target="azure",
            mode=mode,
            requested_by="U0ALICE",
            channel="C0OPS",
            databases=[db],
            overwrite=True,
            parallel=2,
        )
    )
    report = await engine.preflight(m)
    assert not report.blocking, report
    engine.start(m.id)
    return m.id


def same_rows(src: LocalCluster, tgt: LocalCluster, db: str, table: str) -> str:
    sql = f"SELECT count(*) || ':' || coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {table} t"
    on_source = src.psql(sql, database=db)
    assert tgt.psql(sql, database=db) == on_source
    return on_source


async def test_an_offline_copy_longer_than_the_query_timeout_completes(tmp_path, store, source_cluster, target_cluster):
    fresh(source_cluster, "slow_offline", slow_schema(target_cluster.port))
    target_cluster.psql('DROP DATABASE IF EXISTS "slow_offline" WITH (FORCE)')
    engine = factories.engine(store, source_cluster, target_cluster, tmp_path, query_timeout=QUERY_TIMEOUT)
    started = time.monotonic()
    mid = await migrate(engine, "offline", "slow_offline")
    await wait_state(engine.store, mid, State.COMPLETED)
    assert time.monotonic() - started > 2.5 > QUERY_TIMEOUT  # the copy alone took 250 × 10 ms
    assert same_rows(source_cluster, target_cluster, "slow_offline", "slow").startswith("250:")
    await engine.close()


async def test_an_online_load_and_cutover_longer_than_the_query_timeout_complete(
    tmp_path, store, source_cluster, target_cluster
):
    fresh(source_cluster, "slow_online", slow_schema(target_cluster.port))
    target_cluster.psql('DROP DATABASE IF EXISTS "slow_online" WITH (FORCE)')
    engine = factories.engine(store, source_cluster, target_cluster, tmp_path, query_timeout=QUERY_TIMEOUT)
    mid = await migrate(engine, "online", "slow_online")
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    source_cluster.psql("INSERT INTO slow (id, parent_id) VALUES (1000, 2)", database="slow_online")
    assert await engine.cutover(mid, "U0BOB")
    m = await store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    assert same_rows(source_cluster, target_cluster, "slow_online", "slow").startswith("251:")
    assert (
        target_cluster.psql(
            "SELECT bool_and(convalidated) FROM pg_constraint WHERE contype = 'f'", database="slow_online"
        )
        == "t"
    )
    await engine.close()


async def test_validate_waits_for_a_lock_beyond_the_query_timeout_and_says_who_holds_it(
    monkeypatch, source_cluster, target_cluster
):
    monkeypatch.setattr(waits, "WATCH_SECONDS", 0.2)
    schema = "CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, parent_id int);"
    for cluster in (source_cluster, target_cluster):
        fresh(cluster, "validating", schema + " INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1);")
    target_cluster.psql(
        "ALTER TABLE child ADD CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent NOT VALID",
        database="validating",
    )
    source, target = (
        server(n, c, query_timeout=QUERY_TIMEOUT) for n, c in (("s", source_cluster), ("t", target_cluster))
    )
    holder = await asyncpg.connect(target_cluster.dsn("validating"), server_settings={"application_name": "dba-shell"})
    await holder.execute("BEGIN; LOCK TABLE child IN SHARE UPDATE EXCLUSIVE MODE")
    progress = DatabaseProgress("validating")
    seen: list[str] = []

    async def release_later() -> None:
        seen.append(await wait_until(lambda: progress.waiting, 10, "the VALIDATE never said it waits", 0.05))
        await asyncio.sleep(QUERY_TIMEOUT + 0.5)  # the lock is held past the query timeout: the point of the test
        await holder.execute("COMMIT")

    result = DatabaseCutover("validating", Fence("validating"))
    parked = Parked(
        [ForeignKey('"public"."child"', "child_parent", "FOREIGN KEY (parent_id) REFERENCES parent(id)")], []
    )
    started = time.monotonic()
    problems, _ = await asyncio.gather(cutover.check(source, target, result, parked, 2, progress), release_later())
    await holder.close()
    assert problems == []
    assert time.monotonic() - started > QUERY_TIMEOUT + 0.5
    assert (
        target_cluster.psql(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'child_parent'", database="validating"
        )
        == "t"
    )
    assert "validating foreign keys: waiting for Lock/relation held by pid" in seen[0]
    assert "app 'dba-shell'" in seen[0] and "idle in transaction" in seen[0]
    assert progress.waiting == ""


async def test_index_builds_and_analyze_say_how_far_they_are(
    monkeypatch, tmp_path, store, source_cluster, target_cluster
):
    """pg_restore's index builds and ANALYZE have no stream to count: while they run, the live message
    says which table, which phase and how much is done, as the target reports it."""
    monkeypatch.setattr(waits, "WATCH_SECONDS", 0.2)
    port = target_cluster.port
    fresh(
        source_cluster,
        "indexing",
        f"""CREATE FUNCTION slow_on_target(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
            BEGIN IF inet_server_port() = {port} THEN PERFORM pg_sleep(0.01); END IF; RETURN x; END $$;
            CREATE TABLE indexed (id int PRIMARY KEY);
            INSERT INTO indexed SELECT generate_series(1, 200);
            CREATE INDEX indexed_slowly ON indexed ((slow_on_target(id)));""",
    )
    target_cluster.psql('DROP DATABASE IF EXISTS "indexing" WITH (FORCE)')
    engine = factories.engine(store, source_cluster, target_cluster, tmp_path, query_timeout=QUERY_TIMEOUT)
    mid = await migrate(engine, "offline", "indexing")
    seen: set[str] = set()
    while not (await store.get_migration(mid)).state.finished:
        seen.add(engine.progress(mid).of("indexing").working)
        await asyncio.sleep(0.05)  # a sample of the live text every 50 ms, as a person watching would see it
    m = await store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    building = [w for w in seen if w.startswith("index on indexed: building index")]
    assert building, seen
    assert any(w.startswith("ANALYZE of indexed: ") for w in seen), seen
    assert engine.progress(mid).of("indexing").working == ""
    await engine.close()


SPLIT = """
    CREATE TABLE keyed (id bigint PRIMARY KEY, body text);
    INSERT INTO keyed SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g;
    CREATE TABLE heap (at int, what text);
    INSERT INTO heap SELECT g % 977, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g;
    CREATE TABLE small (id int PRIMARY KEY);
    INSERT INTO small SELECT generate_series(1, 10);
"""


async def test_large_tables_are_copied_and_checked_in_ranges_while_writes_go_on(
    tmp_path, store, source_cluster, target_cluster
):
    """An integer key split by key ranges, a table with no key by page ranges, under the slot's snapshot
    while an application keeps writing: both arrive complete, and verify checks them in ranges too."""
    fresh(source_cluster, "split_me", SPLIT + " ALTER TABLE heap REPLICA IDENTITY FULL;")
    target_cluster.psql('DROP DATABASE IF EXISTS "split_me" WITH (FORCE)')
    limits = DataLimits(split_table_bytes=256 << 10)  # keyed and heap are ~6 MB each: 24+ ranges
    engine = factories.engine(
        store, source_cluster, target_cluster, tmp_path, query_timeout=QUERY_TIMEOUT, limits=limits
    )
    writes = 0

    async def application() -> None:
        nonlocal writes
        conn = await asyncpg.connect(source_cluster.dsn("split_me"))
        try:
            while not stop.is_set():
                async with conn.transaction():
                    await conn.execute("INSERT INTO keyed VALUES ($1, 'new')", 100000 + writes)
                    await conn.execute("UPDATE heap SET what = 'changed' WHERE at = $1", writes % 977)
                    await conn.execute("DELETE FROM keyed WHERE id = $1", 1 + writes * 7)
                writes += 1
                await asyncio.sleep(0.002)  # an application's pace between transactions
        finally:
            await conn.close()

    stop = asyncio.Event()
    app = asyncio.create_task(application())
    mid = await migrate(engine, "online", "split_me")
    # Writes go on through the whole copy; once it is done they stop, so that the target (which applies
    # each update of the key-less table with a scan of it) can catch up on a busy test machine.
    await wait_state(engine.store, mid, State.CATCHING_UP, State.READY_FOR_CUTOVER)
    stop.set()
    await app
    assert writes > 50
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    progress = engine.progress(mid).of("split_me")
    assert progress.ranges_total >= 2 * 24 and progress.ranges_done == progress.ranges_total
    assert progress.rows_done >= 40000
    assert await engine.cutover(mid, "U0BOB")
    m = await store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    for table in ("keyed", "heap", "small"):
        same_rows(source_cluster, target_cluster, "split_me", table)
    await engine.close()

    # verification in ranges finds a difference in the middle of a split table
    target_cluster.psql("UPDATE keyed SET body = 'tampered' WHERE id = 10000", database="split_me")
    s, t = server("s", source_cluster), server("t", target_cluster)
    result = await verify_database(s, t, "split_me", limits=limits)
    assert [x.name for x in result.mismatches] == ["public.keyed"] and ", sum " in result.mismatches[0].source
    whole = await verify_database(s, t, "split_me")
    assert [(x.source, x.target) for x in whole.mismatches] == [(x.source, x.target) for x in result.mismatches]


async def test_split_tables_are_verified_offline_from_their_streams_while_they_copy(
    tmp_path, store, source_cluster, target_cluster
):
    """Offline, a split table's ranges land interleaved on the target: each range's rows are digested as
    they stream, in any order, and the table read back once matches their sum; the verify step then
    reads neither side again."""
    fresh(source_cluster, "split_me", SPLIT)
    target_cluster.psql('DROP DATABASE IF EXISTS "split_me" WITH (FORCE)')
    limits = DataLimits(split_table_bytes=256 << 10)
    engine = factories.engine(
        store, source_cluster, target_cluster, tmp_path, query_timeout=QUERY_TIMEOUT, limits=limits
    )
    mid = await migrate(engine, "offline", "split_me")
    await wait_state(store, mid, State.COMPLETED, State.FAILED)
    m = await store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    checked = {row[1]: row for row in (await store.step(mid, "import:split_me")).data["checked"]}
    assert set(checked) == {"keyed", "heap", "small"}
    for table, (_, _, rows, sent, back_rows, back) in checked.items():
        assert rows == back_rows == 20000 if table != "small" else rows == 10
        assert sent == back and sent[0] == ("u" if table != "small" else "o")  # ranges: unordered sums
        same_rows(source_cluster, target_cluster, "split_me", table)
    await engine.close()


async def test_a_stream_that_stops_moving_fails_and_says_what_it_waits_for(source_cluster, target_cluster):
    for cluster in (source_cluster, target_cluster):
        fresh(cluster, "stalls", "CREATE TABLE t (id int PRIMARY KEY, body text)")
    source_cluster.psql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g", database="stalls")
    holder = await asyncpg.connect(
        target_cluster.dsn("stalls"), server_settings={"application_name": "migration-blocker"}
    )
    await holder.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    s, t = server("s", source_cluster), server("t", target_cluster)
    started = time.monotonic()
    try:
        with pytest.raises(ExceptionGroup) as failure:  # the worker's error, as the engine sees it
            await copy.copy_tables(s, t, "stalls", 2, DatabaseProgress("stalls"), limits=DataLimits(stall_seconds=1.5))
    finally:
        await holder.close()
    assert 1.5 <= time.monotonic() - started < 10
    assert isinstance(failure.value.exceptions[0], MigrationError)
    text = failure_reason(failure.value, "mig-1")
    assert "copying public.t of stalls stalled: no data moved for 1.5 s" in text
    assert "the target session waiting for Lock/relation held by pid" in text and "migration-blocker" in text
    assert target_cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgmig'") == "0"
