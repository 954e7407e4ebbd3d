"""Ownership by identity, through Slack: pgmig undoes or replaces only the very database a migration made
(its OID on that server), never one that merely has the name — a newer migration's, a DBA's re-created
one, or a target a cutover released to the applications — and a cancel takes the export files with it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bot.localpg import LocalCluster
from migration_core.changes.databases import CONTENTS
from migration_core.pg.failpoints import ENV as KILL
from migration_core.state.models import State
from tests.integration.clusters import config_toml, shell_env
from tests.integration.fake_slack import text_of
from tests.integration.slack_harness import Running, running
from tests.integration.test_shell import pgmig
from tests.integration.waiting import wait_state


@pytest.fixture
async def slack(tmp_path, source_cluster, target_cluster):
    for c in (source_cluster, target_cluster):
        c.psql('DROP DATABASE IF EXISTS "adva" WITH (FORCE)')
        c.psql('DROP DATABASE IF EXISTS "owned" WITH (FORCE)')
    source_cluster.psql("CREATE DATABASE adva")
    source_cluster.psql("DROP ROLE IF EXISTS adva_owner; CREATE ROLE adva_owner")
    source_cluster.psql(
        "CREATE TABLE account (id int PRIMARY KEY, name text); INSERT INTO account SELECT g, 'a' || g "
        "FROM generate_series(1, 50) g; ALTER TABLE account OWNER TO adva_owner",
        database="adva",
    )
    async with running(
        tmp_path,
        config_toml(
            {"onprem": source_cluster, "azure": target_cluster},
            extra="[migration]\nprogress_interval_seconds = 0.1\n[online]\nfence_grace_seconds = 0.1\n",
        ),
    ) as app:
        yield app
    for c in (source_cluster, target_cluster):
        c.psql('DROP DATABASE IF EXISTS "adva" WITH (FORCE)')
        c.psql('DROP DATABASE IF EXISTS "owned" WITH (FORCE)')
        c.psql("DROP ROLE IF EXISTS adva_owner")


async def say(slack: Running, text: str, key: str) -> str:
    await slack.command(text, user="U0ALICE", key=key)
    return text_of(await slack.reply(key, timeout=60))


def oid(cluster: LocalCluster, db: str) -> str:
    return cluster.psql(f"SELECT oid FROM pg_database WHERE datname = '{db}'")


async def fail_after_creating_the_target(slack: Running, target: LocalCluster) -> Path:
    """mig-1 exports, pauses, and its import breaks on an edited file after the target database was made."""
    assert "mig-1" in await say(
        slack, "migrate onprem azure --mode offline --db adva --method dump --pause-after-export", "m1"
    )
    await wait_state(slack.services.engine.store, "mig-1", State.PAUSED)
    folder = slack.services.engine.config.workdir / "mig-1"
    data = next(p for p in folder.rglob("*.sql") if "data" in p.name)
    data.write_text(data.read_text() + "\nSELECT pgmig_test_no_such_function();\n")
    await say(slack, "resume mig-1", "r1")
    await wait_state(slack.services.engine.store, "mig-1", State.FAILED, fail_fast=False)
    assert oid(target, "adva"), "mig-1 failed before it created its target database"
    return folder


async def test_a_failed_migrations_database_is_its_own_and_nobody_elses(slack, target_cluster):
    store = slack.services.engine.store
    folder = await fail_after_creating_the_target(slack, target_cluster)
    mig1_oid = oid(target_cluster, "adva")

    # a second migration is told whose database that is, even with --overwrite, and touches nothing
    refused = await say(slack, "migrate onprem azure --mode offline --db adva --overwrite", "m2")
    assert "half-made target database of mig-1" in refused and "/pgmig cancel mig-1" in refused, refused
    assert (await store.get_migration("mig-2")).state is State.FAILED
    assert oid(target_cluster, "adva") == mig1_oid

    # a DBA re-creates the name with their own data: mig-1's retry refuses it instead of dropping it
    target_cluster.psql('DROP DATABASE "adva" WITH (FORCE)')
    target_cluster.psql("CREATE DATABASE adva")
    target_cluster.psql("CREATE TABLE dba_table (id int); INSERT INTO dba_table VALUES (7)", database="adva")
    dba_oid = oid(target_cluster, "adva")
    await say(slack, "retry mig-1", "r2")
    await wait_state(store, "mig-1", State.FAILED, fail_fast=False)
    assert "was not created by this migration" in (await store.get_migration("mig-1")).error
    assert target_cluster.psql("SELECT id FROM dba_table", database="adva") == "7"

    # a newer migration replaces it on purpose and completes; the applications write to it
    await say(slack, "migrate onprem azure --mode offline --db adva --overwrite", "m3")
    await wait_state(store, "mig-3", State.COMPLETED)
    newer = oid(target_cluster, "adva")
    assert newer not in (mig1_oid, dba_oid)
    target_cluster.psql("INSERT INTO account VALUES (1000, 'written by the applications')", database="adva")

    # cancelling the old failed migration (the README's advice) leaves the newer database alone
    cancelled = await say(slack, "cancel mig-1", "c1")
    assert "no longer the database mig-1 created: left in place" in cancelled, cancelled
    assert (await store.get_migration("mig-1")).state is State.CANCELLED
    assert oid(target_cluster, "adva") == newer
    assert target_cluster.psql("SELECT count(*) FROM account", database="adva") == "51"
    assert not folder.exists(), "the export files (every row) stayed after the cancel"


async def test_a_cancel_drops_the_database_it_made_and_its_export_files(slack, target_cluster):
    folder = await fail_after_creating_the_target(slack, target_cluster)
    cancelled = await say(slack, "cancel mig-1", "c1")
    assert "dropped target database adva" in cancelled and "dropped role(s) adva_owner" in cancelled, cancelled
    assert oid(target_cluster, "adva") == ""
    assert not folder.exists()


async def test_a_cancel_empties_a_dbas_empty_database_it_filled(slack, target_cluster):
    """A DBA prepared an empty `adva` (with a grant on public); pgmig used it as it is. A cancel takes out
    what pgmig put in — and only that — and leaves the database as the DBA made it."""
    target_cluster.psql("CREATE DATABASE adva")
    target_cluster.psql("GRANT CREATE ON SCHEMA public TO PUBLIC", database="adva")
    theirs = oid(target_cluster, "adva")
    before = target_cluster.psql("SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'", database="adva")
    await fail_after_creating_the_target(slack, target_cluster)
    assert target_cluster.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'account'", database="adva") == "1"
    cancelled = await say(slack, "cancel mig-1", "c1")
    assert "adva emptied again, as it was before pgmig filled it" in cancelled, cancelled
    assert oid(target_cluster, "adva") == theirs
    assert (
        target_cluster.psql("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace", "adva") == "0"
    )
    after = target_cluster.psql("SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'", database="adva")
    assert after == before


def extensions(cluster: LocalCluster, db: str) -> str:
    return cluster.psql("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension", database=db)


async def test_a_cancel_drops_the_extensions_it_created_in_a_dbas_database_and_keeps_theirs(
    slack, source_cluster, target_cluster
):
    """A DBA prepared `adva` empty but for citext they enabled; pgmig created hstore (the source uses it) and
    filled it. A cancel takes out hstore with what pgmig put in; citext, and `public` where it lives, stay."""
    source_cluster.psql("CREATE EXTENSION hstore; CREATE EXTENSION citext", database="adva")
    source_cluster.psql(
        "ALTER TABLE account ADD tags hstore, ADD email citext; CREATE DOMAIN positive AS int CHECK (VALUE > 0); "
        "CREATE TYPE mood AS ENUM ('ok'); CREATE FUNCTION one() RETURNS positive LANGUAGE sql AS 'SELECT 1'; "
        "CREATE VIEW named AS SELECT id, name FROM account; CREATE MATERIALIZED VIEW ids AS SELECT id FROM account",
        database="adva",
    )
    target_cluster.psql("CREATE DATABASE adva")
    target_cluster.psql("CREATE EXTENSION citext; GRANT CREATE ON SCHEMA public TO PUBLIC", database="adva")
    theirs = oid(target_cluster, "adva")
    before = target_cluster.psql("SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'", database="adva")
    await fail_after_creating_the_target(slack, target_cluster)
    assert extensions(target_cluster, "adva") == "citext,hstore,plpgsql"
    cancelled = await say(slack, "cancel mig-1", "c1")
    assert "adva emptied again" in cancelled and "dropped extension(s) hstore in adva" in cancelled, cancelled
    assert oid(target_cluster, "adva") == theirs
    assert extensions(target_cluster, "adva") == "citext,plpgsql"
    assert target_cluster.psql("SELECT 'A'::citext = 'a'", database="adva") == "t"
    assert target_cluster.psql(CONTENTS, database="adva") == "0|0|0|0|0|1"  # nothing but citext
    after = target_cluster.psql("SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'", database="adva")
    assert after == before


async def test_a_role_of_the_same_name_made_since_is_not_dropped(slack, target_cluster):
    await fail_after_creating_the_target(slack, target_cluster)
    made = target_cluster.psql("SELECT oid FROM pg_roles WHERE rolname = 'adva_owner'")
    assert made, "mig-1 did not create the role its tables need"
    target_cluster.psql('DROP DATABASE "adva" WITH (FORCE)')  # a DBA cleans up by hand, then makes their own
    target_cluster.psql("DROP ROLE adva_owner; CREATE ROLE adva_owner")
    theirs = target_cluster.psql("SELECT oid FROM pg_roles WHERE rolname = 'adva_owner'")
    cancelled = await say(slack, "cancel mig-1", "c1")
    assert "left role(s) adva_owner: no longer the one(s) pgmig created" in cancelled, cancelled
    assert target_cluster.psql("SELECT oid FROM pg_roles WHERE rolname = 'adva_owner'") == theirs != made


async def test_a_released_target_is_never_replaced(slack, source_cluster, target_cluster):
    store, engine = slack.services.engine.store, slack.services.engine
    source_cluster.psql("CREATE DATABASE owned")
    source_cluster.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)", database="owned")
    await say(slack, "migrate onprem azure --mode online --db owned", "m1")
    await wait_state(store, "mig-1", State.READY_FOR_CUTOVER)
    assert await engine.cutover("mig-1", "U0BOB"), (await store.get_migration("mig-1")).error
    target_cluster.psql("INSERT INTO t VALUES (3)", database="owned")  # the applications moved
    released = oid(target_cluster, "owned")

    check = await say(slack, "check onprem azure --db owned --mode online", "k")
    assert "owned on onprem is fenced by mig-1's cutover" in check, check
    assert "the target mig-1's cutover released to the applications" in check, check

    refused = await say(slack, "migrate onprem azure --mode online --db owned --overwrite", "m2")
    assert "released to the applications" in refused and "never replaces or drops a released target" in refused
    assert (await store.get_migration("mig-2")).state is State.FAILED
    cancelled = await say(slack, "cancel mig-2", "c2")
    assert "cancelled" in cancelled, cancelled
    assert oid(target_cluster, "owned") == released
    assert target_cluster.psql("SELECT count(*) FROM t", database="owned") == "3"


async def test_cleanup_marks_what_it_removed_in_the_journal(slack, source_cluster, target_cluster):
    """`cleanup --yes` of a failed migration's replication objects: status stops listing them as left on
    the servers (the journal says they are gone), and nothing else is touched."""
    store = slack.services.engine.store
    source_cluster.psql("CREATE DATABASE owned")
    source_cluster.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)", database="owned")
    await say(slack, "migrate onprem azure --mode online --db owned", "m1")
    await wait_state(store, "mig-1", State.READY_FOR_CUTOVER)
    slack.services.engine.scheduler.unwatch("mig-1")
    await store.transition("mig-1", State.FAILED, error="failed in a test")  # say it failed while streaming
    before = await say(slack, "status mig-1", "s1")
    assert "slot pgmig_" in before, before
    for server in ("azure", "onprem"):  # subscriptions first: a slot in use cannot be dropped
        removed = await say(slack, f"cleanup {server} --yes", f"c-{server}")
        assert "removed" in removed.lower(), removed
    after = await say(slack, "status mig-1", "s2")
    assert "slot pgmig_" not in after and "subscription pgmig_" not in after, after
    assert source_cluster.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgmig%'") == "0"


@pytest.mark.parametrize("then", ["restart", "cancel"])
def test_killed_right_after_journaling_a_dbas_empty_database_it_finishes_or_empties_it(
    tmp_path, source_cluster, target_cluster, then
):
    """pgmig SIGKILLed the moment it journaled that it will fill a DBA's empty database (Change.CONTENTS):
    restarted, it carries the migration to completed; cancelled instead, it empties that very database."""
    db = f"filled_{then}"
    for c in (source_cluster, target_cluster):
        c.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    source_cluster.psql(f"CREATE DATABASE {db}")
    source_cluster.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)", db)
    target_cluster.psql(f"CREATE DATABASE {db}")
    theirs = oid(target_cluster, db)
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": source_cluster, "tgt": target_cluster}))
    env = shell_env(tmp_path, config)
    try:
        killed = pgmig(
            "shell", env={**env, KILL: f"contents:{db}"}, stdin=f"migrate src tgt --mode offline --db {db}\n"
        )
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        script = "wait mig-1 completed 120\nstatus mig-1\n" if then == "restart" else "cancel mig-1\n"
        again = pgmig("shell", env=env, stdin=script)
        assert again.returncode == 0 and "Traceback" not in again.stdout + again.stderr, again.stderr
        assert oid(target_cluster, db) == theirs  # the DBA's very database, never dropped
        if then == "restart":
            assert "completed" in again.stdout, again.stdout
            assert target_cluster.psql("SELECT count(*) FROM t", database=db) == "100"
        else:
            assert f"{db} emptied again, as it was before pgmig filled it" in again.stdout, again.stdout
            tables = target_cluster.psql(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace", db
            )
            assert tables == "0"
    finally:
        for c in (source_cluster, target_cluster):
            c.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.mark.parametrize("point", ["plan-extensions", "create-extension"])
def test_killed_around_creating_extensions_a_cancel_drops_only_those_it_made(
    tmp_path, source_cluster, target_cluster, point
):
    """pgmig SIGKILLed right after journaling the extensions it will create in a DBA's database (before the
    first CREATE EXTENSION), or right after that CREATE (before noting it); restarted, it carries on with
    the same entry and is killed again once it created the rest; cancelled then, it drops every extension
    it made, and the DBA's extension and database stay."""
    db = f"ext_{point.replace('-', '_')}"
    for c in (source_cluster, target_cluster):
        c.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    source_cluster.psql(f"CREATE DATABASE {db}")
    source_cluster.psql(
        "CREATE EXTENSION hstore; CREATE EXTENSION pg_trgm; CREATE EXTENSION citext; "
        "CREATE TABLE t (id int PRIMARY KEY, h hstore, e citext); INSERT INTO t SELECT generate_series(1, 100)",
        db,
    )
    target_cluster.psql(f"CREATE DATABASE {db}")
    target_cluster.psql("CREATE EXTENSION citext", db)
    theirs = oid(target_cluster, db)
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": source_cluster, "tgt": target_cluster}))
    env = shell_env(tmp_path, config)
    try:
        killed = pgmig("shell", env={**env, KILL: f"{point}:{db}"}, stdin=f"migrate src tgt --mode offline --db {db}\n")
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        made = "citext,hstore,plpgsql" if point == "create-extension" else "citext,plpgsql"
        assert extensions(target_cluster, db) == made
        restarted = pgmig("shell", env={**env, KILL: f"extensions:{db}"}, stdin="wait 30\n")
        assert restarted.returncode == -signal.SIGKILL, restarted.stdout + restarted.stderr
        assert extensions(target_cluster, db) == "citext,hstore,pg_trgm,plpgsql"
        again = pgmig("shell", env=env, stdin="cancel mig-1\n")
        assert again.returncode == 0 and "Traceback" not in again.stdout + again.stderr, again.stderr
        assert "cancelled" in again.stdout, again.stdout
        assert oid(target_cluster, db) == theirs
        assert extensions(target_cluster, db) == "citext,plpgsql"
        assert target_cluster.psql(CONTENTS, database=db) == "0|0|0|0|0|1"
    finally:
        for c in (source_cluster, target_cluster):
            c.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
