"""The customer's session limits are for the customer's sessions: a database's or a role's statement_timeout,
lock_timeout and idle timeouts must not cancel pgmig's COPY or end the session holding its snapshot."""

from __future__ import annotations

import asyncio

import pytest

from bot.localpg import LocalCluster
from migration_core.pg import servers
from migration_core.pg.pgbin import find_bindir
from migration_core.pg.tools import Tool, connection_env, conninfo, with_options
from migration_core.state.models import State
from tests.integration import factories
from tests.integration.clusters import server
from tests.integration.sample_data import facts
from tests.integration.test_offline import reset_target, run
from tests.integration.test_online import start_online
from tests.integration.waiting import wait_state

DB = "strict"
# What a careful DBA sets for applications, each far shorter than copying DB takes: per database, and
# per role for the login pgmig uses (on both servers).
DATABASE_LIMITS = ("statement_timeout = '300ms'", "idle_in_transaction_session_timeout = '1s'")
ROLE_LIMITS = ("statement_timeout = '300ms'", "lock_timeout = '200ms'", "idle_session_timeout = '1s'")


@pytest.fixture
def strict(source_cluster: LocalCluster, target_cluster: LocalCluster):
    """Database `strict` on the shared source, big enough that no copy of it fits in the limits, with the
    limits set; the limits and both sides' copies of `strict` removed afterwards."""
    reset_target(source_cluster, DB)
    source_cluster.psql(f"CREATE DATABASE {DB}")
    source_cluster.psql(
        "CREATE TABLE ticket (id bigint PRIMARY KEY, body text); "
        "INSERT INTO ticket SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g; "
        "CREATE TABLE note (id int PRIMARY KEY, ticket_id bigint REFERENCES ticket); "
        "INSERT INTO note SELECT g, g FROM generate_series(1, 1000) g",
        database=DB,
    )
    reset_target(target_cluster, DB)
    try:
        for limit in DATABASE_LIMITS:
            source_cluster.psql(f"ALTER DATABASE {DB} SET {limit}")
        for cluster in (source_cluster, target_cluster):
            for limit in ROLE_LIMITS:
                cluster.psql(f"ALTER ROLE postgres SET {limit}")
        yield source_cluster, target_cluster
    finally:
        for cluster in (source_cluster, target_cluster):
            for limit in ROLE_LIMITS:
                cluster.psql(f"ALTER ROLE postgres RESET {limit.split(' = ')[0]}")
            reset_target(cluster, DB)


async def same_rows(source: LocalCluster, target: LocalCluster, notes: int) -> None:
    src, tgt = (await facts(source.dsn(DB)))["counts"], (await facts(target.dsn(DB)))["counts"]
    assert src == tgt == {"public.note": notes, "public.ticket": 400000}


SHOW = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), " + ", ".join(
    f"current_setting('{name}')" for name in ("idle_in_transaction_session_timeout", "idle_session_timeout")
)
LIFTED = ("0", "0", "0", "0")


async def test_every_kind_of_session_lifts_the_limits_and_pgmigs_own_set_still_wins(strict, monkeypatch):
    source, _ = strict
    src = server("onprem", source)
    monkeypatch.setattr(servers, "_versions", {})  # a first login: the version is learnt from it
    async with src.connection(DB) as conn:
        assert tuple(await conn.fetchrow(SHOW)) == LIFTED
        await conn.execute("SET lock_timeout = '5s'")  # the cutover's own limit outranks the login's
        assert await conn.fetchval("SHOW lock_timeout") == "5s"
    async with src.connection(DB, data=True) as conn:  # a later login names them all at once
        assert tuple(await conn.fetchrow(SHOW)) == LIFTED
    pool = await src.pool(DB, 1)
    try:
        for _ in range(2):  # and a pooled session keeps them after its release's RESET ALL
            async with pool.acquire() as conn:
                assert tuple(await conn.fetchrow(SHOW)) == LIFTED
                await conn.execute("SET statement_timeout = '1s'")
    finally:
        await pool.close()
    # a client program's session too, with what pgmig adds for one import (the dump method's quiet triggers)
    env = with_options(connection_env(src, DB), {"session_replication_role": "replica"})
    psql = await asyncio.create_subprocess_exec(
        Tool(find_bindir("psql"), "psql").path,
        *("-XAt", "-c", SHOW + ", current_setting('session_replication_role')"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await psql.communicate()
    assert stdout.decode().strip() == "|".join((*LIFTED, "replica"))
    # and the walsender session replication.create_slot keeps open, holding the slot's snapshot
    walsender = await asyncio.create_subprocess_exec(
        Tool(find_bindir("psql"), "psql").path,
        *("-XAt", "-c", "SHOW idle_in_transaction_session_timeout", conninfo(dbname=DB, replication="database")),
        env=connection_env(src, DB),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await walsender.communicate()
    assert stdout.decode().strip() == "0"


@pytest.mark.parametrize("method", ["restore", "dump"])
async def test_an_offline_migration_ignores_the_customers_timeouts(tmp_path, strict, method, store):
    source, target = strict
    engine = factories.engine(store, source, target, tmp_path)
    try:
        mid = await run(engine, databases=[DB], method=method, parallel=2)
        await engine.wait(mid)
        m = await store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
        await same_rows(source, target, 1000)
    finally:
        await engine.close()


async def test_an_online_migration_ignores_the_customers_timeouts(tmp_path, strict, store):
    source, target = strict
    engine = factories.engine(store, source, target, tmp_path)
    try:
        mid = await start_online(engine, [DB])
        await wait_state(store, mid, State.READY_FOR_CUTOVER)
        source.psql("INSERT INTO note SELECT g, g FROM generate_series(1001, 1010) g", database=DB)  # streamed
        assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
        m = await store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
        await same_rows(source, target, 1010)
    finally:
        await engine.close()
