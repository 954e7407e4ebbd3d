"""The subscription never carries the operator's password: it logs in to the source as a role made for
it alone, with a random password, dropped at cutover and at cancel. A target whose role is not a
superuser (as Azure's admin is not) logs every statement here, and still never sees that password."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.localpg import LocalCluster, free_port
from migration_core.engine.api import Engine, MigrationRequest
from migration_core.state.models import State
from tests.integration import factories
from tests.integration.clusters import PASSWORD
from tests.integration.sample_data import PARENT_CHILD, pg16_bindir
from tests.integration.waiting import wait_state

SOURCE_PASSWORD = "Operator-Source-Pw-7351"
MIGRATOR_PASSWORD = "Migrator-Target-Pw-1"


@pytest.fixture(scope="module")
def source(cluster_root):
    c = (
        LocalCluster(
            cluster_root / "secret-src",
            password=SOURCE_PASSWORD,
            settings={"wal_level": "logical", "max_replication_slots": "10"},
        )
        .init()
        .start()
    )
    c.psql("CREATE DATABASE app")
    c.psql(PARENT_CHILD, database="app")
    yield c
    c.destroy()


def log_everything(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A target whose DBA logs every statement and every failing one (both are common)."""
    return {"log_statement": "'all'", "log_min_error_statement": "error", **(extra or {})}


def rep_roles(c: LocalCluster) -> list[str]:
    out = c.psql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgmig%'")
    return out.split() if out else []


async def online(
    tmp_path: Path, source: LocalCluster, target: LocalCluster, replication_port: int | None = None, **target_login
) -> tuple[Engine, str]:
    """An online migration of `app` started, its store in `tmp_path`: the source reached with the operator's
    password (and by the target at `replication_port`), the target as `target_login` says."""
    as_operator = {"password_env": "PGMIG_SOURCE_PASSWORD", "replication_port": replication_port}
    store = await factories.store(tmp_path)
    engine = factories.engine(store, source, target, tmp_path, source_server=as_operator, target_server=target_login)
    m = await engine.create(
        MigrationRequest(
            source="onprem", target="azure", mode="online", requested_by="U1", databases=["app"], overwrite=True
        )
    )
    assert not (await engine.preflight(m)).blocking
    engine.start(m.id)
    return engine, m.id


@pytest.fixture(autouse=True)
def _source_password(monkeypatch):
    monkeypatch.setenv("PGMIG_SOURCE_PASSWORD", SOURCE_PASSWORD)
    monkeypatch.setenv("PGMIG_MIGRATOR_PASSWORD", MIGRATOR_PASSWORD)


async def test_a_non_superuser_target_never_sees_the_operators_password(tmp_path, cluster_root, source):
    target = (
        LocalCluster(cluster_root / "secret-tgt16", password=PASSWORD, bindir=pg16_bindir(), settings=log_everything())
        .init()
        .start()
    )
    try:
        target.psql(
            f"CREATE ROLE migrator LOGIN CREATEDB PASSWORD '{MIGRATOR_PASSWORD}'; "
            "GRANT pg_create_subscription TO migrator"
        )
        as_migrator = {"user": "migrator", "password_env": "PGMIG_MIGRATOR_PASSWORD"}

        # the target cannot reach the source: CREATE SUBSCRIPTION fails, and the server logs the statement
        engine, mid = await online(tmp_path / "failing", source, target, replication_port=free_port(), **as_migrator)
        await wait_state(engine.store, mid, State.FAILED, fail_fast=False)
        m = await engine.store.get_migration(mid)
        assert "subscribing app to the source failed" in m.error and SOURCE_PASSWORD not in m.error
        assert "CREATE SUBSCRIPTION" in target.logfile.read_text()  # logged, as this DBA wants…
        assert SOURCE_PASSWORD not in target.logfile.read_text()  # …but never with the operator's password
        assert rep_roles(source)  # the failed migration's role, journaled
        assert (await engine.cancel(mid, "U1")).state is State.CANCELLED
        assert rep_roles(source) == []
        await engine.close()

        # a migration that streams and cuts over
        target.psql("DROP DATABASE IF EXISTS app WITH (FORCE)")
        engine, mid = await online(tmp_path / "working", source, target, **as_migrator)
        await wait_state(engine.store, mid, State.READY_FOR_CUTOVER, fail_fast=False)
        [role] = rep_roles(source)
        assert (
            source.psql(f"SELECT rolsuper, rolreplication, rolcreaterole FROM pg_roles WHERE rolname = '{role}'")
            == "f|t|f"
        )
        assert source.psql("SELECT usename FROM pg_stat_replication") == role  # the subscription logs in as it
        assert await engine.cutover(mid, "U1")
        assert (await engine.store.get_migration(mid)).state is State.COMPLETED
        assert rep_roles(source) == []  # dropped at cutover: what the target saw is dead
        assert SOURCE_PASSWORD not in target.logfile.read_text()
        assert target.psql("SELECT count(*) FROM pg_subscription") == "0"
        await engine.close()
    finally:
        source.psql("ALTER DATABASE app RESET default_transaction_read_only; GRANT CONNECT ON DATABASE app TO PUBLIC")
        target.destroy()


def has_pg_stat_statements(bindir: Path | None) -> bool:
    from migration_core.pg.pgbin import find_bindir

    root = (bindir or find_bindir("postgres")).parent
    return any(root.glob("lib/**/pg_stat_statements.so"))


async def test_a_superuser_target_keeps_the_statement_out_of_its_log_and_pg_stat_statements(
    tmp_path, cluster_root, source
):
    if not has_pg_stat_statements(None):
        pytest.skip("pg_stat_statements is not installed (postgresql-contrib)")
    target = (
        LocalCluster(
            cluster_root / "secret-tgt15",
            password=PASSWORD,
            settings=log_everything(
                {"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track_utility": "on"}
            ),
        )
        .init()
        .start()
    )
    try:
        target.psql("CREATE EXTENSION pg_stat_statements")
        engine, mid = await online(tmp_path, source, target)
        await wait_state(engine.store, mid, State.READY_FOR_CUTOVER, fail_fast=False)
        statements = target.psql("SELECT string_agg(query, E'\\n') FROM pg_stat_statements")
        assert "CREATE SUBSCRIPTION" not in statements and "CREATE SUBSCRIPTION" not in target.logfile.read_text()
        assert "CREATE DATABASE" in target.logfile.read_text()  # the log works: only that one statement is hushed
        assert SOURCE_PASSWORD not in statements + target.logfile.read_text()
        await engine.cancel(mid, "U1")
        assert rep_roles(source) == []
        await engine.close()
    finally:
        target.destroy()
