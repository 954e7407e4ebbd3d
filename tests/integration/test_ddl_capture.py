"""Schema changes during an online migration (changes/ddl.py, observe/ddl.py): captured on the source by an event
trigger, gated on the target at their place in the stream, applied or skipped as an operator decides; the
cutover refused while one is pending; nothing of it left on either server after a cutover or a cancel, even
after pgmig was killed while making it; drift reported where no event trigger may be made."""

from __future__ import annotations

import asyncio
import signal

import pytest

from bot.localpg import LocalCluster
from migration_core.engine.api import Engine
from migration_core.observe.ddl import SchemaWatch
from migration_core.pg.failpoints import ENV as KILL
from migration_core.state.errors import MigrationError
from migration_core.state.models import Change, State
from tests.integration import factories
from tests.integration.clusters import PASSWORD, config_toml, shell_env
from tests.integration.test_shell import pgmig
from tests.integration.waiting import wait_state, wait_until

LOGICAL = {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}
SCHEMA = (
    "CREATE TABLE customer (id int PRIMARY KEY, name text); "
    "INSERT INTO customer SELECT g, 'c' || g FROM generate_series(1, 50) g"
)
# pgmig's objects on a server: its schemas, its event triggers (a database's own, outside any schema)
LEFT_BEHIND = (
    "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgmig%') + "
    "(SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgmig%')"
)
TRIGGERS = "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgmig%'"


@pytest.fixture(scope="module")
def pair(cluster_root):
    src = LocalCluster(cluster_root / "dd-src", password=PASSWORD, settings=LOGICAL).init().start()
    # the apply worker retries a change that waits for a decision every second, not every five
    tgt = LocalCluster(cluster_root / "dd-tgt", password=PASSWORD, settings={"wal_retrieve_retry_interval": "1s"})
    tgt.init().start()
    yield src, tgt
    tgt.destroy()
    src.destroy()


def fresh(src: LocalCluster, tgt: LocalCluster, name: str) -> None:
    src.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    tgt.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    src.psql(f'CREATE DATABASE "{name}"')
    src.psql(SCHEMA, database=name)


async def states(engine: Engine, mid: str, db: str) -> list[str]:
    return [c.state for c in (await engine.schema_changes(mid))[db]]


async def test_a_captured_change_waits_for_its_decision_and_applies_in_stream_order(tmp_path, store, pair):
    src, tgt = pair
    fresh(src, tgt, "dd")
    engine = factories.engine(store, src, tgt, tmp_path, capture_ddl=True, verify_chunk_rows=0, progress_interval=0.2)
    mid = await factories.start_online(engine, ["dd"])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    await wait_until(lambda: src.psql(TRIGGERS, database="dd") == "2", 30, "the capture's event triggers")
    src.psql("CREATE TEMP TABLE scratch (x int); SELECT 1", database="dd")  # temporary: not the schema
    src.psql("ALTER TABLE customer ADD COLUMN phone text", database="dd")
    src.psql("INSERT INTO customer VALUES (100, 'after', '555')", database="dd")
    assert await wait_until(lambda: states(engine, mid, "dd"), 30, "the change to be captured") == ["pending"]
    change = (await engine.schema_changes(mid))["dd"][0]
    assert change.tag == "ALTER TABLE" and change.objects == ["table public.customer"], change
    assert "ADD COLUMN phone" in change.statement and not change.destructive
    posted = await wait_until(
        lambda: [t for _, t in engine.events.alerts if "schema change on the source" in t],  # type: ignore[attr-defined]
        10,
        "the thread post",
    )
    assert f"/pgmig ddl {mid} apply {change.id}" in posted[0]
    # replication waits exactly there: the row written after it does not arrive, and status says why
    await wait_until(lambda: "waits for a decision" in engine.progress(mid).of("dd").blocked, 20, "blocked said")
    await asyncio.sleep(2)
    assert tgt.psql("SELECT count(*) FROM customer WHERE id = 100", database="dd") == "0"
    with pytest.raises(MigrationError, match=r"await a decision .*#1 ALTER TABLE"):
        await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    # an operator applies it: the column exists on the target, and the rows after it arrive
    await engine.decide_schema_change(mid, str(change.id), "apply", "U0BOB")
    with pytest.raises(MigrationError, match="decided already"):
        await engine.decide_schema_change(mid, str(change.id), "skip", "U0EVE")
    await wait_until(
        lambda: tgt.psql("SELECT count(*) FROM customer WHERE id = 100", database="dd") == "1", 30, "the row"
    )
    assert tgt.psql("SELECT phone FROM customer WHERE id = 100", database="dd") == "555"
    assert await states(engine, mid, "dd") == ["applied"]
    # a skipped one: the target never has it, and replication goes on past it
    src.psql("CREATE INDEX customer_name ON customer (name)", database="dd")
    await wait_until(
        lambda: _has_all(engine, mid, "dd", ["applied", "pending"]), 30, "the index statement to be captured"
    )
    await engine.decide_schema_change(mid, "dd:2", "skip", "U0BOB", "the target gets its own index")
    src.psql("INSERT INTO customer VALUES (101, 'later', '556')", database="dd")
    await wait_until(
        lambda: tgt.psql("SELECT count(*) FROM customer WHERE id = 101", database="dd") == "1", 30, "row 101"
    )
    assert await states(engine, mid, "dd") == ["applied", "skipped"]
    assert tgt.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'customer_name'", database="dd") == "0"
    # nothing pending: the cutover may be asked for (the gate passes)
    await wait_until(lambda: not engine.progress(mid).of("dd").blocked, 20, "no longer blocked")
    await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    # the cutover's teardown takes capture away with the replication: nothing of pgmig's on either side
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    assert src.psql(LEFT_BEHIND, database="dd") == "0"
    assert tgt.psql(LEFT_BEHIND, database="dd") == "0"
    assert tgt.psql("SELECT phone FROM customer WHERE id = 101", database="dd") == "556"
    await engine.close()


async def test_auto_applied_kinds_new_tables_published_and_destructive_changes_need_approvals(tmp_path, store, pair):
    """`--capture-ddl` where [online] capture_ddl is off; ADD COLUMN and CREATE TABLE applied by pgmig itself
    ([online] ddl_auto_apply); the new table's rows written before it was published copied, the later ones
    streamed; a DROP TABLE applied only once two approvers approved; the cutover's verification agrees."""
    src, tgt = pair
    fresh(src, tgt, "dda")
    src.psql("CREATE TABLE old_log (id int PRIMARY KEY); INSERT INTO old_log VALUES (1), (2)", database="dda")
    engine = factories.engine(
        store,
        src,
        tgt,
        tmp_path,
        ddl_auto_apply=("add_column", "create_table"),
        verify_chunk_rows=0,
        progress_interval=0.2,
    )
    mid = await factories.start_online(engine, ["dda"], capture_ddl=True)
    assert (await store.get_migration(mid)).options.capture_ddl
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    await wait_until(lambda: src.psql(TRIGGERS, database="dda") == "2", 30, "the capture's event triggers")
    src.psql("ALTER TABLE customer ADD COLUMN phone text DEFAULT 'none'", database="dda")
    src.psql("INSERT INTO customer VALUES (100, 'after', '555')", database="dda")
    src.psql("CREATE TABLE invoice (id int PRIMARY KEY, total numeric)", database="dda")
    src.psql("INSERT INTO invoice SELECT g, g * 1.5 FROM generate_series(1, 20) g", database="dda")
    # nobody decides: pgmig applies both, the row using the new column arrives, the new table's rows are copied
    await wait_until(lambda: _has_all(engine, mid, "dda", ["applied", "applied"]), 30, "both applied by pgmig")
    assert {c.decided_by for c in (await engine.schema_changes(mid))["dda"]} == {"pgmig"}
    await wait_until(lambda: _count(tgt, "invoice", "dda") == "20", 30, "the new table's rows copied")
    assert tgt.psql("SELECT phone FROM customer WHERE id = 100", database="dda") == "555"
    src.psql("INSERT INTO invoice SELECT g, g FROM generate_series(21, 30) g", database="dda")
    await wait_until(lambda: _count(tgt, "invoice", "dda") == "30", 30, "the new table's later rows streamed")
    alerts = [t for _, t in engine.events.alerts]  # type: ignore[attr-defined]
    assert not [t for t in alerts if "replication blocked" in t], alerts  # decided: the stream brings the column
    assert any("applied to the target by pgmig" in t and "create_table" in t for t in alerts), alerts
    assert any("new table public.invoice (dda) published" in t for t in alerts), alerts
    # a destructive change: one approval is not enough, the same approver twice counts once
    src.psql("DROP TABLE old_log", database="dda")
    await wait_until(lambda: _has_all(engine, mid, "dda", ["applied", "applied", "pending"]), 30, "the drop captured")
    drop = (await engine.schema_changes(mid))["dda"][2]
    assert drop.destructive and drop.tag == "DROP TABLE", drop
    first = await engine.decide_schema_change(mid, str(drop.id), "apply", "U0BOB", required=2)
    assert first.pending and first.approvals == ["U0BOB"]
    listed = (await engine.schema_changes(mid))["dda"][2]
    assert "1 of 2 approvals (U0BOB)" in listed.words(2), listed.words(2)
    with pytest.raises(MigrationError, match="already recorded"):
        await engine.decide_schema_change(mid, str(drop.id), "apply", "U0BOB", required=2)
    with pytest.raises(MigrationError, match="only approvers"):
        await engine.decide_schema_change(mid, str(drop.id), "apply", "U0EVE", is_approver=False, required=2)
    second = await engine.decide_schema_change(mid, str(drop.id), "apply", "U0CAROL", required=2)
    assert second.decision == "apply" and second.decided_by == "U0BOB, U0CAROL", second
    await wait_until(lambda: _has_all(engine, mid, "dda", ["applied"] * 3), 30, "the drop applied")
    assert tgt.psql("SELECT to_regclass('old_log') IS NULL", database="dda") == "t"
    await wait_until(lambda: not engine.progress(mid).of("dda").blocked, 20, "no longer blocked")
    await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    checked = await engine.verify(mid)
    assert checked and all(r.ok for r in checked) and checked[0].tables == 2, checked
    assert _count(tgt, "invoice", "dda") == _count(src, "invoice", "dda") == "30"
    assert src.psql(LEFT_BEHIND, database="dda") == "0" and tgt.psql(LEFT_BEHIND, database="dda") == "0"
    # the subscription's login is dropped too: its grant on the new table was revoked first
    assert not [e for e in await engine.leftovers(mid) if e.kind is Change.REPLICATION_ROLE]
    await engine.close()


async def _has_all(engine: Engine, mid: str, db: str, wanted: list[str]) -> bool:
    return await states(engine, mid, db) == wanted


def _count(cluster: LocalCluster, table: str, db: str) -> str:
    return cluster.psql(f"SELECT count(*) FROM {table}", database=db)


async def test_without_event_trigger_rights_drift_is_reported(tmp_path, store, pair):
    """The fallback (as when pgmig's login is no superuser): each tick compares the schema's fingerprint."""
    src, tgt = pair
    fresh(src, tgt, "ddd")
    engine = factories.engine(store, src, tgt, tmp_path, capture_ddl=True, verify_chunk_rows=0, progress_interval=0.2)
    mid = await factories.start_online(engine, ["ddd"])
    watch = engine.progress(mid).of("ddd").schema_changes = SchemaWatch(capture=False)
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    await wait_until(lambda: watch.baseline is not None, 20, "the first fingerprint")
    src.psql("ALTER TABLE customer ADD COLUMN email varchar(80) NOT NULL DEFAULT ''", database="ddd")
    posted = await wait_until(
        lambda: [t for _, t in engine.events.alerts if "schema of ddd changed" in t],  # type: ignore[attr-defined]
        10,
        "the drift post",
    )
    assert "new column" in posted[0] and "customer.email (character varying(80) NOT NULL)" in posted[0], posted
    assert "email" in watch.summary() and src.psql(TRIGGERS, database="ddd") == "0"
    outcome = await engine.cancel(mid, "U0ALICE")
    assert outcome.state is State.CANCELLED and not outcome.failed, outcome
    await engine.close()


def test_killed_around_making_the_capture_a_restart_and_a_cancel_leave_nothing(tmp_path, pair):
    """pgmig SIGKILLed right after journaling the capture (before making it), then right after making the
    target's side; restarted and cancelled, nothing of pgmig's is left on either server."""
    src, tgt = pair
    fresh(src, tgt, "ddk")
    config = tmp_path / "pgmig.toml"
    extra = "[migration]\nprogress_interval_seconds = 0.2\n[online]\ncapture_ddl = true\nverify_chunk_rows = 0\n"
    config.write_text(config_toml({"src": src, "tgt": tgt}, extra=extra))
    env = shell_env(tmp_path, config)
    first = pgmig(
        "shell", env={**env, KILL: "plan-ddl_capture:ddk"}, stdin="migrate src tgt --mode online --db ddk\nwait 90\n"
    )
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    assert src.psql(TRIGGERS, database="ddk") == "0"
    second = pgmig("shell", env={**env, KILL: "ddl_capture:ddk"}, stdin="wait 60\n")
    assert second.returncode == -signal.SIGKILL, second.stdout + second.stderr
    assert (
        tgt.psql(
            "SELECT to_regclass(nspname || '.ddl_decision') IS NOT NULL FROM pg_namespace WHERE nspname LIKE 'pgmig%'",
            database="ddk",
        )
        == "t"
    )
    third = pgmig("shell", env=env, stdin="wait 3\nddl mig-1\ncancel mig-1\n")
    assert third.returncode == 0 and "Traceback" not in third.stdout + third.stderr, third.stderr
    assert "cancelled" in third.stdout and "Schema changes of mig-1" in third.stdout, third.stdout
    assert src.psql(LEFT_BEHIND, database="ddk") == "0"
    if tgt.psql("SELECT count(*) FROM pg_database WHERE datname = 'ddk'") == "1":
        assert tgt.psql(LEFT_BEHIND, database="ddk") == "0"
