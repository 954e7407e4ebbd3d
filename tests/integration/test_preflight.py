"""Pre-flight checks against real clusters: the findings a person would act on."""

from __future__ import annotations

import pytest

from bot.localpg import free_port
from migration_core.preflight.checks import (
    Finding,
    Mode,
    PreflightReport,
    PreflightRequest,
    Status,
    _extension_finding,
    _TargetFacts,
    run_preflight,
)
from tests.integration.clusters import PASSWORD, server


def by_title(report: PreflightReport, title: str, scope: str | None = None) -> Finding:
    matches = [f for f in report.findings if f.title.startswith(title) and (scope is None or f.scope == scope)]
    assert matches, f"no finding {title!r} in {[f.title for f in report.findings]}"
    return matches[0]


@pytest.fixture(autouse=True)
def no_shop_on_the_target(target_cluster):
    """Other modules migrate shop into the shared target; these checks start from a target without it."""
    target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')


async def test_good_source_passes_every_check(source_cluster, target_cluster):
    req = PreflightRequest(server("src", source_cluster), server("tgt", target_cluster), databases=["shop"])
    report = await run_preflight(req)
    assert report.databases == ["shop"]
    assert report.blocking == [], report.blocking
    assert by_title(report, "wal_level").status is Status.OK
    assert by_title(report, "free replication slots").status is Status.OK
    assert by_title(report, "role can replicate").detail == "'postgres' has superuser"
    assert by_title(report, "target version").status is Status.OK
    assert by_title(report, "size", "db shop").detail.endswith("4 table(s)")


async def test_replica_wal_level_blocks_online_with_restart_fix(replica_level_cluster, target_cluster):
    report = await run_preflight(PreflightRequest(server("old", replica_level_cluster), server("tgt", target_cluster)))
    wal = by_title(report, "wal_level")
    assert wal.status is Status.FAIL and "'replica'" in wal.detail
    assert "wal_level = logical" in wal.fix and "restart" in wal.fix
    slots = by_title(report, "max_replication_slots")
    assert slots.status is Status.FAIL and "max_replication_slots = 5" in slots.fix
    assert by_title(report, "max_wal_senders").status is Status.FAIL


async def test_offline_mode_does_not_require_logical_replication(replica_level_cluster, target_cluster):
    report = await run_preflight(
        PreflightRequest(server("old", replica_level_cluster), server("tgt", target_cluster), mode=Mode.OFFLINE)
    )
    assert report.blocking == []
    assert not [f for f in report.findings if f.title.startswith("wal_level")]


@pytest.fixture(scope="module")
def nopk_db(source_cluster):
    source_cluster.psql("CREATE DATABASE nopk")
    source_cluster.psql(
        "CREATE TABLE public.events (at timestamptz, what text); "
        "CREATE TABLE public.ok (id int PRIMARY KEY); "
        "CREATE UNLOGGED TABLE public.scratch (id int PRIMARY KEY); "
        "SELECT lo_create(0);",
        database="nopk",
    )
    yield "nopk"
    source_cluster.psql("DROP DATABASE nopk")


async def test_table_without_primary_key_blocks_online_and_is_named(source_cluster, target_cluster, nopk_db):
    req = PreflightRequest(server("src", source_cluster), server("tgt", target_cluster), databases=[nopk_db])
    report = await run_preflight(req)
    pk = by_title(report, "every table has a primary key")
    assert pk.status is Status.FAIL
    assert "public.events" in pk.detail and "public.ok" not in pk.detail
    assert "--replica-identity-full" in pk.fix
    assert by_title(report, "large objects").status is Status.WARN
    unlogged = by_title(report, "unlogged tables")
    assert unlogged.status is Status.WARN and "public.scratch" in unlogged.detail

    req.replica_identity_full = True
    assert by_title(await run_preflight(req), "every table has a primary key").status is Status.WARN
    req.mode = Mode.OFFLINE
    assert (await run_preflight(req)).blocking == []


async def test_unknown_database_lists_the_available_ones(source_cluster, target_cluster):
    report = await run_preflight(
        PreflightRequest(server("src", source_cluster), server("tgt", target_cluster), databases=["shop", "nosuchdb"])
    )
    missing = by_title(report, "databases exist")
    assert missing.status is Status.FAIL and "nosuchdb" in missing.detail and "shop" in missing.fix
    assert report.databases == ["shop"]


async def test_unreachable_target_is_one_readable_line(source_cluster):
    report = await run_preflight(
        PreflightRequest(server("src", source_cluster), server("gone", source_cluster, port=free_port()))
    )
    line = by_title(report, "cannot connect to gone")
    assert line.status is Status.FAIL
    assert "connection refused" in line.detail and "listen_addresses" in line.fix
    assert by_title(report, "wal_level").status is Status.OK  # the reachable side is still checked


async def test_unresolvable_host(source_cluster):
    report = await run_preflight(
        PreflightRequest(server("src", source_cluster), server("typo", source_cluster, host="no-such-host.invalid"))
    )
    assert "DNS" in by_title(report, "cannot connect to typo").detail


async def test_wrong_password_names_the_env_var_and_never_the_secret(source_cluster, target_cluster):
    bad = server("src", source_cluster, password_env="PGMIG_WRONG_PASSWORD")
    report = await run_preflight(PreflightRequest(bad, server("tgt", target_cluster)))
    line = by_title(report, "cannot connect to src")
    assert "password authentication failed for user 'postgres'" in line.detail
    assert "PGMIG_WRONG_PASSWORD" in line.fix
    everything = repr(report)
    assert "not-the-Right-one" not in everything and PASSWORD not in everything


async def test_missing_password_variable(source_cluster, target_cluster, monkeypatch):
    monkeypatch.delenv("PGMIG_TEST_PASSWORD")
    report = await run_preflight(PreflightRequest(server("src", source_cluster), server("tgt", target_cluster)))
    assert "PGMIG_TEST_PASSWORD is not set" in by_title(report, "cannot connect to src").detail


async def test_role_without_replication_or_read_access(source_cluster, target_cluster, monkeypatch):
    source_cluster.psql(
        "CREATE ROLE app_reader LOGIN PASSWORD 'Reader-pw-1'; "
        "CREATE TABLE IF NOT EXISTS public.secret_stuff (id int PRIMARY KEY); "
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_reader; "
        "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO app_reader; "
        "REVOKE SELECT ON public.secret_stuff FROM app_reader;",
        database="shop",
    )
    try:
        monkeypatch.setenv("PGMIG_READER_PASSWORD", "Reader-pw-1")
        reader = server("src", source_cluster, user="app_reader", password_env="PGMIG_READER_PASSWORD")
        report = await run_preflight(PreflightRequest(reader, server("tgt", target_cluster), databases=["shop"]))
        repl = by_title(report, "role can replicate")
        assert repl.status is Status.FAIL and 'ALTER ROLE "app_reader" WITH REPLICATION' in repl.fix
        read = by_title(report, "role can read every table")
        assert read.status is Status.FAIL and "public.secret_stuff" in read.detail
        assert "public.customer" not in read.detail
    finally:
        source_cluster.psql(
            "DROP TABLE public.secret_stuff; DROP OWNED BY app_reader; DROP ROLE app_reader", database="shop"
        )


async def test_target_older_than_source_blocks():
    from migration_core.preflight.checks import _version_finding

    assert _version_finding(160002, 150004).status is Status.FAIL
    assert "PostgreSQL 16 or newer" in _version_finding(160002, 150004).fix
    assert _version_finding(150004, 160002).status is Status.OK


def facts(available: dict[str, str], allow: set[str] | None) -> _TargetFacts:
    return _TargetFacts(available, allow, {}, ("UTF8", "C", "C"), True)


def test_extension_missing_on_target_and_outside_azure_allow_list():
    used = {"plpgsql": "1.0", "pg_trgm": "1.6", "postgis": "3.4", "hstore": "1.8"}
    f = _extension_finding("db x", used, facts({"pg_trgm": "1.6", "hstore": "1.8"}, {"hstore"}))
    assert f.status is Status.FAIL
    assert "not installable on target: postgis" in f.detail
    assert "allow-list: pg_trgm" in f.detail and "--value hstore,pg_trgm" in f.fix
    assert (
        _extension_finding("db x", used, facts({"pg_trgm": "", "postgis": "", "hstore": ""}, None)).status is Status.OK
    )


async def test_ssl_required_but_server_has_none(source_cluster, target_cluster):
    report = await run_preflight(
        PreflightRequest(server("src", source_cluster, sslmode="require"), server("tgt", target_cluster))
    )
    line = by_title(report, "cannot connect to src")
    assert "SSL" in line.detail and "sslmode" in line.fix and "'require'" in line.fix


async def test_a_server_that_never_answers_times_out(source_cluster):
    """A socket that accepts and then says nothing: what a black-holing firewall or a hung server looks like."""
    import asyncio

    async def silent(reader, writer):
        await asyncio.sleep(30)

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        report = await run_preflight(
            PreflightRequest(
                server("src", source_cluster), server("hung", source_cluster, port=port, connect_timeout=1.0)
            )
        )
        line = by_title(report, "cannot connect to hung")
        assert "no answer from 127.0.0.1:" in line.detail and "within 1 s" in line.detail
    finally:
        srv.close()


async def test_collation_difference_against_an_existing_target_database(source_cluster, target_cluster):
    target_cluster.psql("CREATE DATABASE shop TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        report = await run_preflight(
            PreflightRequest(server("src", source_cluster), server("tgt", target_cluster), databases=["shop"])
        )
        line = by_title(report, "encoding and collation match")
        assert line.status is Status.WARN
        assert "source UTF8/C.UTF-8/C.UTF-8, target database shop SQL_ASCII/C/C" in line.detail
        assert "ENCODING 'UTF8' LC_COLLATE 'C.UTF-8'" in line.fix
    finally:
        target_cluster.psql("DROP DATABASE shop")


async def test_a_non_empty_target_database_blocks_unless_it_is_to_be_replaced(source_cluster, target_cluster):
    target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')
    target_cluster.psql("CREATE DATABASE shop")
    req = PreflightRequest(server("src", source_cluster), server("tgt", target_cluster), databases=["shop"])
    try:
        empty = by_title(await run_preflight(req), "target database is empty", "db shop")
        assert empty.status is Status.OK and "never drops it" in empty.detail
        target_cluster.psql("CREATE TABLE kept (id int); CREATE SCHEMA billing", database="shop")
        found = by_title(await run_preflight(req), "target database is empty", "db shop")
        assert found.status is Status.FAIL and "1 schemas" in found.detail and "--overwrite" in found.fix
        req.overwrite = True
        replaced = by_title(await run_preflight(req), "target database is empty", "db shop")
        assert replaced.status is Status.WARN and "drops and recreates it" in replaced.detail
        req.writers = {"shop": "mig-7 (full_load)"}
        busy = by_title(await run_preflight(req), "no other migration writes", "db shop")
        assert busy.status is Status.FAIL and "mig-7 (full_load) is migrating into shop on tgt" in busy.detail
        assert "cancel it" in busy.fix
    finally:
        target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')
