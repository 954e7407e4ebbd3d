"""Offline migrations end to end on real clusters: PostgreSQL 15 source → PostgreSQL 16 target."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot.localpg import LocalCluster
from bot.sandbox import load_pagila
from migration_core.engine.api import Engine, MigrationRequest
from migration_core.observe.progress import DatabaseProgress
from migration_core.state.models import Migration, State
from migration_core.transfer import copy
from migration_core.transfer.copy import TableCopy
from migration_core.verify.early import EarlyChecks
from tests.integration import factories
from tests.integration.clusters import PASSWORD, server
from tests.integration.sample_data import RICH, ROLES, facts, pagila_available, pg16_bindir
from tests.integration.waiting import wait_phase, wait_state, wait_until


@pytest.fixture(scope="module")
def pg16(cluster_root):
    c = LocalCluster(cluster_root / "pg16", password=PASSWORD, bindir=pg16_bindir()).init().start()
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def rich_source(cluster_root):
    """A source of its own: these tests add and drop databases other tests must not see."""
    c = LocalCluster(cluster_root / "offline-source", password=PASSWORD, settings={"wal_level": "logical"}).init()
    c.start()
    c.psql(ROLES)
    c.psql("CREATE DATABASE rich")
    c.psql(RICH, database="rich")
    if pagila_available():
        load_pagila(c)
    yield c
    c.destroy()


@pytest.fixture
async def engine(tmp_path, store, rich_source, pg16, target_cluster):
    eng = factories.engine(store, rich_source, pg16, tmp_path, extra={"pg15": target_cluster})
    yield eng
    await eng.close()


def reset_target(cluster: LocalCluster, *dbs: str) -> None:
    for db in dbs:
        cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def prepared(engine: Engine, **kw) -> tuple[Migration, bool]:
    """An offline migration as `kw` asks for it, created and through its pre-flight (True: it passed)."""
    req = MigrationRequest(
        source=kw.pop("source", "onprem"),
        target=kw.pop("target", "azure"),
        mode="offline",
        requested_by="U0ALICE",
        channel="C0OPS",
        **kw,
    )
    m = await engine.create(req)
    return m, not (await engine.preflight(m)).blocking


async def run(engine: Engine, **kw) -> str:
    """`prepared`, then run to its end when the pre-flight passed."""
    m, passed = await prepared(engine, **kw)
    if passed:
        await engine.start(m.id)
    return m.id


async def assert_same(source: LocalCluster, target: LocalCluster, db: str) -> dict:
    src, tgt = await asyncio.gather(facts(source.dsn(db)), facts(target.dsn(db)))
    assert tgt["version"] == 16 and src["version"] == 15
    for key in ("counts", "fks", "triggers", "sequences", "owners", "grants", "matview_rows", "large_object"):
        assert tgt[key] == src[key], key
    return src


@pytest.mark.parametrize("method", ["restore", "dump"])
async def test_offline_migration_of_several_databases_is_exact(engine, rich_source, pg16, method):
    dbs = ["rich"] + (["pagila"] if pagila_available() else [])
    reset_target(pg16, *dbs)
    mid = await run(engine, databases=dbs, method=method, parallel=2)
    m = await engine.store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    assert engine.events.of(mid) == ["preflight", "exporting", "importing", "verifying", "completed"]
    for db in dbs:
        src = await assert_same(rich_source, pg16, db)
        assert sum(src["counts"].values()) > 0
    rich = await facts(pg16.dsn("rich"))
    assert ("inventory.item", "item_sleeping", "D") in rich["triggers"]  # disabled on source stays disabled
    assert ("inventory.item", "item_touch", "O") in rich["triggers"]
    assert rich["sequences"]["inventory.unused_seq"] is None and rich["sequences"]["inventory.item_id_seq"] == 3000
    assert rich["large_object"] == "a large object payload" and rich["matview_rows"] == 3
    assert ("inventory.item", "app_owner") in rich["owners"]
    # every table, partitioned table and materialized view analyzed: the first queries plan well
    never = "SELECT string_agg(relname, ',') FROM pg_stat_user_tables WHERE last_analyze IS NULL"
    assert pg16.psql(never, database="rich") == ""
    steps = {s.name: s for s in await engine.store.steps(mid)}
    assert steps["verify:rich"].state == "done" and steps["verify:rich"].data["mismatches"] == []
    checked = steps["import:rich"].data["checked"]  # compared during the copy (restore), not after
    tables = len((await facts(rich_source.dsn("rich")))["counts"])
    assert len(checked) == (tables if method == "restore" else 0), checked
    assert all(row[2:4] == row[4:6] for row in checked)
    assert "app_owner" in steps["roles"].detail and "report_reader" in steps["roles"].detail


async def test_pause_after_export_honours_edited_files(engine, rich_source, pg16):
    reset_target(pg16, "rich")
    mid = await run(engine, databases=["rich"], method="dump", pause_after_export=True)
    assert (await engine.store.get_migration(mid)).state is State.PAUSED
    second = await run(engine, databases=["rich"], overwrite=True)  # into the database mid will write
    refused = await engine.store.get_migration(second)
    assert refused.state is State.FAILED and f"{mid} (paused) is migrating into rich on azure" in refused.error
    steps = {s.name: s for s in await engine.store.steps(mid)}
    files = list(steps["export:rich"].data["files"])
    schema_file = next(f for f in files if f.endswith("db_schema.sql"))
    data_file = next(f for f in files if f.endswith("db_data.sql"))
    assert steps["review"].state == "waiting" and schema_file in steps["review"].detail
    # The team decides public.scratch stays behind: drop it from both files.
    schema = open(schema_file).read()
    schema = re.sub(r"CREATE TABLE public\.scratch \(.*?\);\n", "", schema, flags=re.S)
    schema = re.sub(r"ALTER TABLE ONLY public\.scratch\s+ADD CONSTRAINT scratch_pkey PRIMARY KEY \(id\);\n", "", schema)
    schema = re.sub(r"ALTER TABLE public\.scratch OWNER TO .*?;\n", "", schema)
    open(schema_file, "w").write(schema)
    data = open(data_file).read()
    open(data_file, "w").write(re.sub(r"COPY public\.scratch .*?\n\\\.\n", "", data, flags=re.S))
    assert await engine.resume(mid)
    assert not await engine.resume(mid)  # a second click does nothing
    await engine.wait(mid)
    m = await engine.store.get_migration(mid)
    assert m.state is State.COMPLETED, m.error
    tgt = await facts(pg16.dsn("rich"))
    assert "public.scratch" not in tgt["counts"] and tgt["counts"]["inventory.item"] == 3000
    notice = engine.events.states[-1][2]
    assert "expected because export files were edited" in notice and "public.scratch" in notice


async def test_a_resume_or_a_retry_while_the_last_task_is_still_ending_runs_once_it_ended(
    engine, rich_source, pg16, monkeypatch
):
    """A pause or a failure is visible (and announced) before the task that made it has ended: its last
    bookkeeping is still running. A person who clicks Resume or Retry at once must not be refused, nor leave
    the migration moved with nothing running it (seen: a resume right after the pause left it `importing`
    for good, without an error)."""
    reset_target(pg16, "rich")
    held: list[asyncio.Event] = []  # the last step of the pausing task, then of the failing one
    tidy = engine.runner.tidy

    async def still_ending(mid: str) -> None:
        if len(held) < 2:
            held.append(asyncio.Event())
            await held[-1].wait()
        await tidy(mid)

    monkeypatch.setattr(engine.runner, "tidy", still_ending)
    m, passed = await prepared(engine, databases=["rich"], method="dump", pause_after_export=True)
    assert passed
    engine.start(m.id)
    await wait_until(lambda: len(held) == 1, 60, "the pausing task's last step")
    assert (await engine.store.get_migration(m.id)).state is State.PAUSED
    steps = {s.name: s for s in await engine.store.steps(m.id)}
    data_file = Path(next(f for f in steps["export:rich"].data["files"] if f.endswith("db_data.sql")))
    exported = data_file.read_text()
    data_file.write_text(exported + "\nSELECT pgmig_test_no_such_function();\n")
    assert await engine.resume(m.id, "U0ALICE")
    held[0].set()

    await wait_until(lambda: len(held) == 2, 60, "the failing task's last step")
    failed = await engine.store.get_migration(m.id)
    assert failed.state is State.FAILED and "pgmig_test_no_such_function" in failed.error, failed.error
    data_file.write_text(exported)
    assert await engine.retry(m.id, "U0ALICE")
    held[1].set()
    await wait_state(engine.store, m.id, State.COMPLETED)
    await engine.wait(m.id)
    assert pg16.psql("SELECT count(*) FROM inventory.item", database="rich") == "3000"


async def test_missing_extension_refused_before_any_data_moves_then_retry(engine, rich_source, pg16):
    rich_source.psql("CREATE DATABASE withext")
    rich_source.psql(
        "CREATE EXTENSION hstore; CREATE TABLE t (id int PRIMARY KEY, h hstore); INSERT INTO t VALUES (1, 'a=>1')",
        database="withext",
    )
    reset_target(pg16, "withext")
    try:
        mid = await run(engine, databases=["withext"])
        m = await engine.store.get_migration(mid)
        assert m.state is State.FAILED and m.error.startswith("preflight:")
        assert "not installable on target: hstore" in m.error
        assert "withext" not in pg16.psql("SELECT datname FROM pg_database")  # nothing was created
        rich_source.psql("ALTER TABLE t ALTER h TYPE text USING h::text; DROP EXTENSION hstore", database="withext")
        assert await engine.retry(mid)
        await engine.wait(mid)
        m = await engine.store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
        assert pg16.psql("SELECT h FROM t", database="withext") == '"a"=>"1"'
    finally:
        rich_source.psql("DROP DATABASE withext")


async def test_non_empty_target_refused_then_retry_after_fix(engine, rich_source, pg16):
    reset_target(pg16, "rich")
    pg16.psql("CREATE DATABASE rich")
    pg16.psql("CREATE TABLE precious (id int)", database="rich")
    mid = await run(engine, databases=["rich"])
    m = await engine.store.get_migration(mid)
    assert m.state is State.FAILED and m.error.startswith("preflight:")  # before an hour of export, not after
    assert "target database rich is not empty: it holds 1 tables" in m.error and "--overwrite" in m.error
    assert pg16.psql("SELECT count(*) FROM precious", database="rich") == "0"  # untouched
    pg16.psql("DROP TABLE precious", database="rich")
    assert await engine.retry(mid)
    await engine.wait(mid)
    assert (await engine.store.get_migration(mid)).state is State.COMPLETED
    exported = [e for e in engine.events.states if e[0] == mid]
    assert [s for _, s, _ in exported].count("exporting") == 1  # the retry did not export again


@pytest.fixture(scope="module")
def big(rich_source):
    """A database whose copy takes a few seconds: long enough to act in the middle of it (made once: the tests
    that use it only read it)."""
    rich_source.psql("DROP DATABASE IF EXISTS big")
    rich_source.psql("CREATE DATABASE big")
    rich_source.psql(
        "CREATE TABLE big (id bigint PRIMARY KEY, pad text); "
        "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 1500000) g",
        database="big",
    )
    yield "big"
    rich_source.psql("DROP DATABASE big")


async def test_pg_restore_error_mid_way_is_reported_and_retry_replaces_its_own_database(engine, rich_source, pg16, big):
    reset_target(pg16, "big")
    m = await engine.create(
        MigrationRequest(
            source="onprem", target="azure", mode="offline", requested_by="U0ALICE", databases=["big"], parallel=1
        )
    )
    await engine.preflight(m)
    engine.start(m.id)
    await wait_phase(engine, m.id, "big", "copying data")
    pg16.psql(
        "CREATE FUNCTION no_indexes() RETURNS event_trigger LANGUAGE plpgsql AS "  # in the database pgmig made
        "$$ BEGIN RAISE EXCEPTION 'index builds are frozen on this server'; END $$; "
        "CREATE EVENT TRIGGER no_index_builds ON ddl_command_start WHEN TAG IN ('CREATE INDEX', 'ALTER TABLE') "
        "EXECUTE FUNCTION no_indexes()",
        database="big",
    )
    await engine.wait(m.id)
    m = await engine.store.get_migration(m.id)
    assert m.state is State.FAILED and m.error.startswith("importing:")
    assert "building the primary key big_pkey of public.big failed: index builds are frozen on this server" in m.error
    assert PASSWORD not in m.error
    assert await engine.retry(m.id)  # the journal says pgmig created that database: it may replace it
    await engine.wait(m.id)
    m = await engine.store.get_migration(m.id)
    assert m.state is State.COMPLETED, m.error
    assert pg16.psql("SELECT count(*) FROM big", database="big") == "1500000"


PREPARED = {  # what a DBA might have put in target databases before anyone ran pgmig
    "dba_tables": "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1), (2)",
    "dba_prepared": "CREATE SCHEMA app; CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'SELECT 1'; "
    "GRANT USAGE ON SCHEMA app TO PUBLIC; SELECT lo_from_bytea(7777, 'the DBA''s')",
}


def fingerprint(cluster: LocalCluster, db: str) -> str:
    return cluster.psql(
        "SELECT (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace) || '|' || "
        "(SELECT count(*) FROM pg_proc WHERE pronamespace::regnamespace::text = 'app') || '|' || "
        "(SELECT count(*) FROM pg_largeobject_metadata) || '|' || "
        "coalesce((SELECT string_agg(relname, ',') FROM pg_class WHERE relname = 'keep_me'), '')",
        database=db,
    )


async def test_databases_someone_else_prepared_survive_retry_and_cancel(engine, rich_source, pg16):
    for db, sql in PREPARED.items():
        rich_source.psql(f'DROP DATABASE IF EXISTS "{db}"')
        rich_source.psql(f'CREATE DATABASE "{db}"')
        rich_source.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)", database=db)
        reset_target(pg16, db)
        pg16.psql(f'CREATE DATABASE "{db}"')
        pg16.psql(sql, database=db)
    before = {db: fingerprint(pg16, db) for db in PREPARED}
    try:
        for db in PREPARED:
            mid = await run(engine, databases=[db])
            m = await engine.store.get_migration(mid)
            assert m.state is State.FAILED and f"target database {db} is not empty" in m.error, m.error
            assert "pgmig never drops a database it did not create" in m.error and "--overwrite" in m.error
            assert await engine.retry(mid)
            await engine.wait(mid)
            m = await engine.store.get_migration(mid)
            assert m.state is State.FAILED and "is not empty" in m.error  # the retry refuses just the same
            outcome = await engine.cancel(mid, "U0BOB")
            assert outcome.state is State.CANCELLED and db in outcome.kept
            assert fingerprint(pg16, db) == before[db], db  # untouched
    finally:
        for db in PREPARED:
            rich_source.psql(f'DROP DATABASE IF EXISTS "{db}"')
            reset_target(pg16, db)


async def test_an_empty_database_someone_else_created_is_used_but_never_dropped(engine, rich_source, pg16):
    rich_source.psql('DROP DATABASE IF EXISTS "handmade"')
    rich_source.psql('CREATE DATABASE "handmade"')
    rich_source.psql(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)", database="handmade"
    )
    reset_target(pg16, "handmade")
    pg16.psql('CREATE DATABASE "handmade"')  # as on Azure, where the portal creates it
    try:
        mid = await run(engine, databases=["handmade"])
        m = await engine.store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
        assert "used as it is" in (await engine.store.step(mid, "import:handmade")).detail
        assert not [e for e in await engine.leftovers(mid) if e.kind.value == "database"]
    finally:
        rich_source.psql('DROP DATABASE IF EXISTS "handmade"')
        reset_target(pg16, "handmade")


async def test_cancel_mid_import_drops_the_half_imported_database(engine, rich_source, pg16, big):
    reset_target(pg16, "big")
    m = await engine.create(
        MigrationRequest(
            source="onprem", target="azure", mode="offline", requested_by="U0ALICE", databases=["big"], parallel=1
        )
    )
    await engine.preflight(m)
    engine.start(m.id)
    await wait_phase(engine, m.id, "big", "copying data")
    outcome = await engine.cancel(m.id, "U0BOB")
    assert outcome.state is State.CANCELLED and "dropped target database big" in outcome.done
    m = await engine.store.get_migration(m.id)
    assert m.state is State.CANCELLED
    assert "big" not in pg16.psql("SELECT datname FROM pg_database")
    steps = {s.name: s for s in await engine.store.steps(m.id)}
    assert steps["import:big"].state == "dropped" and "dropped" in steps["import:big"].detail
    assert "cancelled by U0BOB" in engine.events.states[-1][2]
    assert not await engine.leftovers(m.id)


async def test_client_programs_older_than_the_target_are_refused(tmp_path, store, rich_source, pg16):
    eng = factories.engine(store, rich_source, pg16, tmp_path, bindir=rich_source.bindir)
    try:
        reset_target(pg16, "rich")
        mid = await run(eng, databases=["rich"])
        m = await store.get_migration(mid)
        assert m.state is State.FAILED
        assert "pg_dump 15" in m.error and "older than the newest server involved (PostgreSQL 16)" in m.error
    finally:
        await eng.close()


async def test_a_restart_carries_an_interrupted_import_on(tmp_path, store, rich_source, pg16, big):
    reset_target(pg16, "big")
    first = factories.engine(store, rich_source, pg16, tmp_path)
    m = await first.create(
        MigrationRequest(
            source="onprem", target="azure", mode="offline", requested_by="U1", databases=["big"], parallel=1
        )
    )
    await first.preflight(m)
    first.start(m.id)
    await wait_phase(first, m.id, "big", "copying data")
    await first.close()  # pgmig stops while importing
    assert (await store.get_migration(m.id)).state is State.IMPORTING
    second = factories.engine(store, rich_source, pg16, tmp_path)
    try:
        assert await second.recover() == [m.id]
        await second.wait(m.id)
        done = await store.get_migration(m.id)
        assert done.state is State.COMPLETED, done.error
        assert pg16.psql("SELECT count(*) FROM big", database="big") == "1500000"
        assert "carried on" in (await store.step(m.id, "recovery")).detail
    finally:
        await second.close()


async def test_source_changed_after_export_fails_at_verifying_with_the_mismatches(engine, rich_source, pg16):
    reset_target(pg16, "rich")
    mid = await run(engine, databases=["rich"], method="dump", pause_after_export=True)
    rich_source.psql("INSERT INTO inventory.warehouse (name) VALUES ('late arrival')", database="rich")
    try:
        assert await engine.resume(mid)
        await engine.wait(mid)
        m = await engine.store.get_migration(mid)
        assert m.state is State.FAILED and m.error.startswith("verifying:")
        assert "inventory.warehouse: source 4 rows, target 3 rows" in m.error
        assert "inventory.warehouse_id_seq" in m.error  # the identity sequence moved on too
        results = await engine.verify(mid)
        assert {(x.kind, x.name) for x in results[0].mismatches} == {
            ("sequence", "inventory.warehouse_id_seq"),
            ("table", "inventory.warehouse"),
        }
    finally:
        rich_source.psql(
            "DELETE FROM inventory.warehouse WHERE name = 'late arrival'; "
            "SELECT setval('inventory.warehouse_id_seq', 3)",
            database="rich",
        )


async def test_target_role_that_cannot_create_roles_restores_without_owners(
    tmp_path, store, rich_source, pg16, monkeypatch
):
    pg16.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'migrator') THEN "
        "CREATE ROLE migrator LOGIN CREATEDB PASSWORD 'Migrator-pw-1'; END IF; END $$"
    )
    reset_target(pg16, "rich")
    pg16.psql("DROP ROLE IF EXISTS app_owner; DROP ROLE IF EXISTS report_reader")
    monkeypatch.setenv("PGMIG_MIGRATOR_PASSWORD", "Migrator-pw-1")
    as_migrator = {"user": "migrator", "password_env": "PGMIG_MIGRATOR_PASSWORD"}
    eng = factories.engine(store, rich_source, pg16, tmp_path, target_server=as_migrator)
    try:
        for method in ("restore", "dump"):
            reset_target(pg16, "rich")
            mid = await run(eng, databases=["rich"], method=method)
            m = await store.get_migration(mid)
            assert m.state is State.COMPLETED, m.error
            roles = await store.step(mid, "roles")
            assert {"app_owner", "report_reader"} <= set(
                roles.data["missing"]
            ) and "not usable by its role" in roles.detail
            owners = pg16.psql(
                "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'inventory'",
                database="rich",
            )
            assert owners == "migrator"
    finally:
        await eng.close()
        reset_target(pg16, "rich")


@pytest.mark.parametrize(
    "side, change, undo, expected",
    [
        (
            "source",
            "UPDATE public.scratch SET v = 'changed' WHERE id = 7",
            "UPDATE public.scratch SET v = md5('7') WHERE id = 7",
            "public.scratch: source 100 rows, sum ",
        ),
        (
            "source",
            "DELETE FROM public.scratch WHERE id = 7",
            "INSERT INTO public.scratch VALUES (7, md5('7'))",
            "public.scratch: source 99 rows, target 100 rows",
        ),
        (
            "target",
            "UPDATE public.scratch SET v = 'tampered' WHERE id = 7",
            "",
            "public.scratch: source 100 rows, sum ",
        ),
    ],
)
async def test_a_table_that_changes_right_after_its_copy_fails_verification(
    engine, rich_source, pg16, monkeypatch, side, change, undo, expected
):
    """The source side of the early check is the digest of the copy stream and the target side a read of
    the loaded table: a row written on either side the moment the copy committed is still caught (on the
    source by what it holds now, not by what it sent)."""
    reset_target(pg16, "rich")
    cluster = rich_source if side == "source" else pg16
    copied = EarlyChecks.copied

    def change_then_check(self: EarlyChecks, table: TableCopy) -> None:
        if table.table.name == "scratch":
            cluster.psql(change, database="rich")
        copied(self, table)

    monkeypatch.setattr(EarlyChecks, "copied", change_then_check)
    try:
        mid = await run(engine, databases=["rich"])
        await engine.wait(mid)
        m = await engine.store.get_migration(mid)
        assert m.state is State.FAILED and m.error.startswith("verifying:")
        assert expected in m.error and m.error.count(": source ") == 1, m.error
    finally:
        if undo:
            rich_source.psql(undo, database="rich")


async def test_values_the_source_database_renders_its_own_way_arrive_unchanged(engine, rich_source, pg16):
    """A source database that writes dates day-first (and intervals SQL-style) is copied as the values it
    holds: 1 February stays 1 February on a target reading dates month-first."""
    rich_source.psql('DROP DATABASE IF EXISTS "dmy" WITH (FORCE)')
    rich_source.psql('CREATE DATABASE "dmy"')
    rich_source.psql(
        "ALTER DATABASE dmy SET DateStyle = 'SQL, DMY'; ALTER DATABASE dmy SET IntervalStyle = 'sql_standard'"
    )
    rich_source.psql(
        "CREATE TABLE d (id int PRIMARY KEY, day date, at timestamp, span interval, x float8); "
        "INSERT INTO d VALUES (1, '2024-02-01', '2024-03-04 05:06:07', '1 year 2 mons -3 days 04:05:06', 0.1), "
        "(2, '2024-12-11', '2024-11-12 13:14:15', '-1 day', 1e-300)",
        database="dmy",
    )
    reset_target(pg16, "dmy")
    try:
        mid = await run(engine, databases=["dmy"])
        await engine.wait(mid)
        m = await engine.store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
        query = "SET DateStyle = ISO; SET IntervalStyle = postgres; SELECT id, day, at, span, x FROM d ORDER BY id"
        assert pg16.psql(query, database="dmy") == rich_source.psql(query, database="dmy")
        assert "2024-02-01|2024-03-04 05:06:07" in pg16.psql(query, database="dmy")
    finally:
        reset_target(pg16, "dmy")
        rich_source.psql('DROP DATABASE IF EXISTS "dmy" WITH (FORCE)')


async def test_keys_built_before_post_data_are_the_sources_keys(engine, rich_source, pg16):
    """pgmig builds primary keys and unique constraints itself (an index, then the constraint on it) so
    that reads of the table pass: the target gets the same constraints, indexes, deferrability and
    comments, and foreign keys onto them, whatever the names."""
    rich_source.psql('DROP DATABASE IF EXISTS "keys" WITH (FORCE)')
    rich_source.psql('CREATE DATABASE "keys"')
    rich_source.psql(
        '''CREATE SCHEMA "we ""ird""";
        CREATE TABLE "we ""ird"""."odd t" (id int, code text, part int,
            CONSTRAINT "pk ""odd""" PRIMARY KEY (id) WITH (fillfactor = 90),
            CONSTRAINT code_once UNIQUE (code) DEFERRABLE INITIALLY DEFERRED,
            CONSTRAINT pair UNIQUE NULLS NOT DISTINCT (part, code));
        COMMENT ON CONSTRAINT "pk ""odd""" ON "we ""ird"""."odd t" IS 'the key';
        CREATE TABLE child (id int PRIMARY KEY, odd_id int REFERENCES "we ""ird"""."odd t");
        CREATE TABLE parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        INSERT INTO "we ""ird"""."odd t" SELECT g, 'c' || g, g % 3 FROM generate_series(1, 50) g;
        INSERT INTO child SELECT g, g FROM generate_series(1, 50) g;
        INSERT INTO parted VALUES (1, '2025-03-01');''',
        database="keys",
    )
    reset_target(pg16, "keys")
    shape = (
        "SELECT string_agg(format('%s %s %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid), "
        "condeferrable, coalesce(obj_description(oid, 'pg_constraint'), '')), E'\\n' "
        "ORDER BY conrelid::regclass::text, conname) FROM pg_constraint "
        "WHERE connamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema') "
        "UNION ALL SELECT string_agg(pg_get_indexdef(indexrelid), E'\\n' ORDER BY indexrelid::regclass::text) "
        "FROM pg_index WHERE indrelid::regclass::text NOT LIKE 'pg_%'"
    )
    try:
        mid = await run(engine, databases=["keys"])
        await engine.wait(mid)
        m = await engine.store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
        on_target = pg16.psql(shape, database="keys")
        assert on_target == rich_source.psql(shape, database="keys")
        assert (
            "the key" in on_target and "DEFERRABLE INITIALLY DEFERRED" in on_target and "fillfactor='90'" in on_target
        )
        assert pg16.psql("SELECT bool_and(convalidated) FROM pg_constraint WHERE contype = 'f'", database="keys") == "t"
    finally:
        reset_target(pg16, "keys")
        rich_source.psql('DROP DATABASE IF EXISTS "keys" WITH (FORCE)')


# Built-in types in their awkward values: moved as binary COPY, checked as the stream and the read-back.
BINARY_TABLE = r"""CREATE TABLE plain (id int PRIMARY KEY, f float8[], n numeric, ts timestamptz, d date,
    t text, c char(4), b bytea, j jsonb, js json, a text[], u uuid, ip inet, net cidr, bits varbit, tv tsvector,
    r int4range, mr int4multirange, i interval, m money, l pg_lsn, ch "char", o oid);
INSERT INTO plain VALUES
    (1, '{-0,NaN,Infinity,-Infinity,1e-308,0.1}', 'NaN', 'infinity', '-infinity', 'é ü ß ñ', 'ab',
     '\x00ff0a5c', '{"k": [1, "é"]}', '{ "spaced" :1}', '{{"a b",NULL},{"\"q\"","x,y"}}', gen_random_uuid(),
     '::1/128', '10.0.0.0/8', B'10110', 'fat cat:2 rat', '[1,5)', '{[1,3),[7,9)}', '-1 year 2 days 03:04:05.678',
     '12.34', '16/B374D848', 'q', 4294967295),
    (2, NULL, 123456789012345678901234567890.123456789, '2024-02-29 23:59:59.999999+05:30', '0044-03-15 BC',
     E'tab\there\nnewline \\ backslash', NULL, '', 'null', '[]', '{}', NULL, NULL, NULL, NULL, NULL,
     'empty', '{}', NULL, NULL, NULL, NULL, 0)"""
# Types a binary COPY would carry wrongly (OIDs the target numbers otherwise) or not at all: moved as text.
TEXT_TABLE = """CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE TYPE pair AS (x int, y text);
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE odd (id int PRIMARY KEY, m mood, ms mood[], p pair, ps pair[], pos positive, rel regclass, typ regtype);
INSERT INTO odd VALUES (1, 'happy', '{sad,happy}', '(1,"é b")', ARRAY['(2,x)'::pair], 5, 'plain', 'mood[]'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"""


async def test_values_of_every_kind_arrive_exact_whether_sent_as_binary_or_text(engine, rich_source, pg16):
    """Tables of built-in types move as binary COPY (no text to render and parse on either server),
    also from a LATIN1 source database into UTF8 text; enums, composites, domains and OID aliases move as
    text, which is what keeps `regclass` naming the target's own table. Every value arrives as it was."""
    rich_source.psql('DROP DATABASE IF EXISTS "kinds" WITH (FORCE)')
    rich_source.psql("CREATE DATABASE kinds ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    rich_source.psql(BINARY_TABLE + "; " + TEXT_TABLE, database="kinds")
    async with server("onprem", rich_source).connection("kinds") as conn:
        moves = {t.name: t.binary_safe for t in await copy.list_tables(conn)}
    assert moves == {"plain": True, "odd": False}
    reset_target(pg16, "kinds")
    rows = "SET DateStyle = ISO; SET extra_float_digits = 3; SET client_encoding = UTF8; SELECT {} FROM {} ORDER BY id"
    plain = "id, f, n, ts, d, t, c, encode(b, 'hex'), j, js, a, u, ip, net, bits, tv, r, mr, i, m, l, ch, o"
    odd = "id, m, ms, p, ps, pos, rel, typ, rel::oid = 'plain'::regclass::oid"
    try:
        mid = await run(engine, databases=["kinds"])
        await engine.wait(mid)
        m = await engine.store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
        for table, columns in (("plain", plain), ("odd", odd)):
            sql = rows.format(columns, table)
            assert pg16.psql(sql, database="kinds") == rich_source.psql(sql, database="kinds"), table
        assert "é ü ß ñ" in pg16.psql("SELECT t FROM plain WHERE id = 1", database="kinds")
    finally:
        reset_target(pg16, "kinds")
        rich_source.psql('DROP DATABASE IF EXISTS "kinds" WITH (FORCE)')


async def test_a_table_of_other_column_types_on_the_target_is_sent_as_text(rich_source, pg16):
    """Binary COPY needs the very same column types on both sides: a table whose column is wider on
    the target (int there bigint, as a DBA may decide) is sent as text, which the target parses into
    its own type; a table alike on both sides goes binary."""
    schema = "CREATE TABLE same (id int PRIMARY KEY, at timestamptz); CREATE TABLE widened (id {} PRIMARY KEY, n int)"
    for cluster, id_type in ((rich_source, "int"), (pg16, "bigint")):
        cluster.psql('DROP DATABASE IF EXISTS "widened" WITH (FORCE)')
        cluster.psql('CREATE DATABASE "widened"')
        cluster.psql(schema.format(id_type), database="widened")
    rich_source.psql(
        "INSERT INTO same SELECT g, '2025-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 500) g;"
        "INSERT INTO widened SELECT g, g * 7 FROM generate_series(1, 500) g",
        database="widened",
    )
    sent: dict[str, str] = {}
    try:
        await copy.copy_tables(
            server("onprem", rich_source),
            server("azure", pg16),
            "widened",
            2,
            DatabaseProgress("widened"),
            on_copied=lambda c: sent.update({c.table.name: c.format}),
        )
        assert sent == {"same": "binary", "widened": "text"}
        for table in ("same", "widened"):
            rows = f"SELECT * FROM {table} ORDER BY id"
            assert pg16.psql(rows, database="widened") == rich_source.psql(rows, database="widened")
    finally:
        for cluster in (rich_source, pg16):
            cluster.psql('DROP DATABASE IF EXISTS "widened" WITH (FORCE)')
