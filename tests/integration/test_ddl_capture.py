"""Schema changes during an online migration (changes/ddl.py, observe/ddl.py): captured on the source by an event
trigger, gated on the target at their place in the stream, applied or skipped as an operator decides; the
cutover refused while one is pending; nothing of it left on either server after a cutover or a cancel, even
after pgmig was killed while making it; drift reported where no event trigger may be made."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import pytest

from bot.localpg import LocalCluster
from handlers import ddl_messages
from handlers.actions import Action
from migration_core.changes import ddl, watermarks
from migration_core.changes.replication import object_name
from migration_core.engine.api import Engine
from migration_core.observe.ddl import SchemaCard, SchemaWatch
from migration_core.pg.failpoints import ENV as KILL
from migration_core.state.approval import ApprovalRequest, UnappliedChange
from migration_core.state.errors import MigrationError
from migration_core.state.models import Change, DdlCapture, State
from tests.integration import factories
from tests.integration.clusters import PASSWORD, config_toml, server, shell_env
from tests.integration.fake_slack import text_of
from tests.integration.slack_harness import running
from tests.integration.test_crash_recovery import Pgmig
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


async def capturing(tmp_path, store, pair, db: str) -> tuple[Engine, str]:
    """A fresh database migrated online with capture on: streaming, its event triggers made."""
    src, tgt = pair
    fresh(src, tgt, db)
    engine = factories.engine(store, src, tgt, tmp_path, capture_ddl=True, verify_chunk_rows=0, progress_interval=0.2)
    mid = await factories.start_online(engine, [db])
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    await wait_until(lambda: src.psql(TRIGGERS, database=db) == "2", 30, "the capture's event triggers")
    return engine, mid


async def test_a_captured_change_waits_for_its_decision_and_applies_in_stream_order(tmp_path, store, pair):
    src, tgt = pair
    engine, mid = await capturing(tmp_path, store, pair, "dd")
    src.psql("CREATE TEMP TABLE scratch (x int); SELECT 1", database="dd")  # temporary: not the schema
    src.psql("ALTER TABLE customer ADD COLUMN phone text", database="dd")
    src.psql("INSERT INTO customer VALUES (100, 'after', '555')", database="dd")
    assert await wait_until(lambda: states(engine, mid, "dd"), 30, "the change to be captured") == ["pending"]
    change = (await engine.schema_changes(mid))["dd"][0]
    assert change.tag == "ALTER TABLE" and change.objects == ["table public.customer"], change
    assert "ADD COLUMN phone" in change.statement and not change.destructive
    posted = await wait_until(lambda: cards(engine, "dd", "1"), 10, "the change's card")
    assert posted[0].waits_now and posted[0].change.pending and posted[0].ts  # the stream waits at it now
    # replication waits exactly there: the row written after it does not arrive, and status says why
    await wait_until(lambda: "waits for a decision" in engine.progress(mid).of("dd").blocked, 20, "blocked said")
    await asyncio.sleep(2)
    assert tgt.psql("SELECT count(*) FROM customer WHERE id = 100", database="dd") == "0"
    with pytest.raises(MigrationError, match=r"await a decision .*#1 ALTER TABLE"):
        await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    # an operator applies it: the column exists on the target, and the rows after it arrive
    await engine.decide_schema_change(mid, str(change.id), "apply", "U0BOB")
    updated = cards(engine, "dd", "1")[-1]  # updated at once, where it was posted
    assert updated.ts == posted[0].ts and updated.change.decided_by == "U0BOB" and not updated.waits_now
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
    # DDL and DML in one transaction (a rename, and a row written under the new name): the row waits with it
    app = await asyncpg.connect(src.dsn("dd"))  # an application's statements, one by one, in one transaction
    async with app.transaction():
        await app.execute("ALTER TABLE customer RENAME COLUMN phone TO tel")
        await app.execute("INSERT INTO customer (id, name, tel) VALUES (102, 'renamed', '557')")
    await app.close()
    await wait_until(
        lambda: _has_all(engine, mid, "dd", ["applied", "skipped", "pending"]), 30, "the rename to be captured"
    )
    assert tgt.psql("SELECT count(*) FROM customer WHERE id = 102", database="dd") == "0"
    await engine.decide_schema_change(mid, "dd:3", "apply", "U0BOB")
    await wait_until(
        lambda: tgt.psql("SELECT count(*) FROM customer WHERE id = 102", database="dd") == "1", 30, "row 102"
    )
    assert tgt.psql("SELECT tel FROM customer WHERE id = 102", database="dd") == "557"  # renamed before it
    # CREATE INDEX CONCURRENTLY (outside any transaction on the source): captured and applied as well
    src.psql("CREATE INDEX CONCURRENTLY customer_tel ON customer (tel)", database="dd")
    await wait_until(lambda: _has_all(engine, mid, "dd", ["applied", "skipped", "applied", "pending"]), 30, "the index")
    await engine.decide_schema_change(mid, "dd:4", "apply", "U0BOB")
    await wait_until(
        lambda: tgt.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'customer_tel'", database="dd") == "1",
        30,
        "the concurrent index on the target",
    )
    # the running watch updates each card with the target's outcome: posted once each, never again
    await wait_until(lambda: [c.change.outcome for c in cards(engine, "dd", "2")][-1:] == ["skipped"], 20, "card")
    await wait_until(lambda: [c.change.outcome for c in cards(engine, "dd", "4")][-1:] == ["applied"], 20, "card 4")
    posted = {c.ts: (c.key, c.drift) for _, c in engine.events.cards}  # type: ignore[attr-defined]
    assert len(posted) == 4, posted
    # nothing pending, but the cutover is paused (a card's Pause cutover): the gate holds until it is resumed
    await wait_until(lambda: not engine.progress(mid).of("dd").blocked, 20, "no longer blocked")
    await engine.pause_cutover(mid, "U0EVE", "schema change dd #2 (CREATE INDEX)")
    with pytest.raises(MigrationError, match="paused by U0EVE .*: schema change dd #2"):
        await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    with pytest.raises(MigrationError, match="paused by U0EVE"):
        await engine.pause_cutover(mid, "U0BOB", "again")
    assert (await store.step(mid, "cutover_hold")).state == "waiting"
    await engine.pause_cutover(mid, "U0BOB", resume=True)
    # the approval card lists what the target does not have: the skipped index, which holds no replication
    request = await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    assert request.schema_changes == [
        UnappliedChange(
            "dd",
            2,
            "CREATE INDEX",
            "CREATE INDEX customer_name ON customer (name)",
            "skipped by U0BOB: the target gets its own index",
            False,
        )
    ], request.schema_changes
    kept = ApprovalRequest.from_dict(request.as_dict())  # as the approval step keeps it
    assert kept.schema_changes == request.schema_changes
    audit = [e.action for e in (await store.audit_page(mid, 1, size=500, everything=True)).entries]
    assert {"ddl.captured", "ddl.apply", "ddl.skip", "ddl.pause", "ddl.resume"} <= set(audit), audit
    # the cutover's teardown takes capture away with the replication: nothing of pgmig's on either side
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    # the summary says which changes the target got and which it did not, and why
    told = engine.events.states  # type: ignore[attr-defined]
    summary = [detail for m, state, detail in told if m == mid and state == "completed"][-1]
    assert "schema changes applied on the target: dd #1 ALTER TABLE (table public.customer) by U0BOB" in summary
    assert "schema changes skipped (the target does not have them): dd #2 CREATE INDEX" in summary, summary
    assert "by U0BOB: the target gets its own index" in summary
    assert src.psql(LEFT_BEHIND, database="dd") == "0"
    assert tgt.psql(LEFT_BEHIND, database="dd") == "0"
    assert tgt.psql("SELECT tel FROM customer WHERE id = 101", database="dd") == "556"
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
        capture_ddl=False,
        ddl_auto_apply=("add_column", "create_table"),
        verify_chunk_rows=0,
        progress_interval=0.2,
    )
    mid = await factories.start_online(engine, ["dda"], capture_ddl=DdlCapture.ON)
    assert (await store.get_migration(mid)).options.capture_ddl is DdlCapture.ON
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
    # the notice comes once the copy of the rows written before publishing is done: after they are visible
    await wait_until(
        lambda: any("new table public.invoice (dda) published" in t for _, t in engine.events.alerts),  # type: ignore[attr-defined]
        30,
        "the new table's publishing announced",
    )
    alerts = [t for _, t in engine.events.alerts]  # type: ignore[attr-defined]
    assert not [t for t in alerts if "replication blocked" in t], alerts  # decided: the stream brings the column
    invoice = cards(engine, "dda", "2")[-1].change
    assert invoice.decided_by == "pgmig" and invoice.reason == "[online] ddl_auto_apply: create_table", invoice
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
    # one query string holding a schema change and data (`psql -c "BEGIN; …; COMMIT"`): only its ALTER is applied
    # (by pgmig: an ADD COLUMN) and the row arrives once, by the stream (the whole string would insert it twice)
    src.psql(
        "BEGIN; ALTER TABLE customer ADD COLUMN note text; "
        "INSERT INTO customer VALUES (103, 'multi', 'x', 'n'); COMMIT",
        database="dda",
    )
    await wait_until(lambda: _has_all(engine, mid, "dda", ["applied"] * 4), 30, "the string's ALTER applied")
    await wait_until(lambda: tgt.psql("SELECT note FROM customer WHERE id = 103", database="dda") == "n", 30, "103")
    told = ddl_messages.card(mid, cards(engine, "dda", "4")[-1], 1)
    assert "Apply runs only its schema statements" in str(told.blocks) and "INSERT" not in told.text
    # a change made by code: applying it would run the code's other work again, so pgmig refuses; the operator
    # makes it on the target and skips it
    src.psql(
        "DO $$ BEGIN CREATE INDEX customer_note ON customer (note); "
        "INSERT INTO customer VALUES (104, 'do', 'y', 'm'); END $$",
        database="dda",
    )
    await wait_until(lambda: _has_all(engine, mid, "dda", ["applied"] * 4 + ["pending"]), 30, "the DO captured")
    with pytest.raises(MigrationError, match="cannot be applied by pgmig: it was made by code"):
        await engine.decide_schema_change(mid, "5", "apply", "U0BOB")
    card = ddl_messages.card(mid, (await wait_until(lambda: cards(engine, "dda", "5"), 10, "card 5"))[-1], 1)
    assert "pgmig cannot apply this change" in str(card.blocks) and "Apply to target" not in str(card.blocks)
    tgt.psql("CREATE INDEX customer_note ON customer (note)", database="dda")
    await engine.decide_schema_change(mid, "5", "skip", "U0BOB", "applied by hand")
    await wait_until(lambda: _count(tgt, "customer", "dda") == "53", 30, "row 104, once")
    await wait_until(lambda: not engine.progress(mid).of("dda").blocked, 20, "no longer blocked")
    unapplied = (await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)).schema_changes
    assert [(c.id, c.state) for c in unapplied or []] == [(5, "skipped by U0BOB: applied by hand")], unapplied
    # while the request waits, its card follows the schema: a change captured since, then its decision
    request = await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    request.channel, request.ts = "C0OPS", "9.0"
    assert await engine.open_cutover(request)
    src.psql("CREATE INDEX customer_name ON customer (name)", database="dda")

    def redrawn(state: str) -> list[UnappliedChange]:
        shown = [r.schema_changes or [] for m, r in engine.events.requests if m == mid]  # type: ignore[attr-defined]
        return shown[-1] if shown and [(c.id, c.state) for c in shown[-1]][-1:] == [(6, state)] else []

    late = await wait_until(lambda: redrawn("pending"), 30, "the request's card to list the new change")
    assert [c.id for c in late] == [5, 6] and late[-1].blocks_replication
    kept = await engine.cutover_request(mid)
    assert kept is not None and kept.round == request.round and kept.schema_changes == late  # saved with it
    await engine.decide_schema_change(mid, "6", "skip", "U0BOB", "not needed there")
    await wait_until(lambda: redrawn("skipped by U0BOB: not needed there"), 30, "the card to show the skip")
    assert await engine.reject_cutover(mid, "U0BOB", "ask again with the schema settled")
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    checked = await engine.verify(mid)
    assert checked and all(r.ok for r in checked) and checked[0].tables == 2, checked
    assert _count(tgt, "invoice", "dda") == _count(src, "invoice", "dda") == "30"
    assert src.psql(LEFT_BEHIND, database="dda") == "0" and tgt.psql(LEFT_BEHIND, database="dda") == "0"
    # the subscription's login is dropped too: its grant on the new table was revoked first
    assert not [e for e in await engine.leftovers(mid) if e.kind is Change.REPLICATION_ROLE]
    await engine.close()


async def test_a_skipped_change_is_an_expected_difference_the_cutover_and_verification_name(tmp_path, store, pair):
    """A table created on the source that the team keeps off the target: the cutover request is refused while the
    change waits for a decision; skipped with a reason, verification (while streaming, in the window, after the
    release, and after completion) reports the table as an expected difference, naming the change and why."""
    src, tgt = pair
    engine, mid = await capturing(tmp_path, store, pair, "ddx")
    src.psql("CREATE TABLE scratchpad (id int PRIMARY KEY)", database="ddx")
    src.psql("INSERT INTO scratchpad VALUES (1)", database="ddx")
    await wait_until(lambda: _has_all(engine, mid, "ddx", ["pending"]), 30, "the CREATE TABLE captured")
    with pytest.raises(MigrationError, match="await a decision"):
        await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    await wait_until(lambda: "waits for a decision" in engine.progress(mid).of("ddx").blocked, 20, "blocked said")
    engine.scheduler.unwatch(mid)  # no look from here on: the request below must not rest on the last one
    await engine.decide_schema_change(mid, "1", "skip", "U0BOB", "a scratch table, not migrated")
    await wait_until(lambda: _has_all(engine, mid, "ddx", ["skipped"]), 30, "the skip to reach the target")
    why = "schema change #1 CREATE TABLE skipped by U0BOB: a scratch table, not migrated"
    [streaming] = await engine.verify(mid)
    assert streaming.ok and [(m.name, m.because) for m in streaming.expected] == [("public.scratchpad", why)]
    request = await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)
    assert f"public.scratchpad missing on the target, as expected ({why})" in request.verification, request
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    told = engine.events.states  # type: ignore[attr-defined]
    summary = [detail for m, state, detail in told if m == mid and state == "completed"][-1]
    assert f"public.scratchpad missing on the target, as expected ({why})" in summary, summary
    assert await store.step(mid, "incident") is None
    [after] = await engine.verify(mid)  # capture is gone now: the cutover kept what it let differ
    assert after.ok and [m.name for m in after.expected] == ["public.scratchpad"], after
    await engine.close()


async def test_a_change_made_while_the_copy_ran_before_capture_began_gets_its_card_once(
    tmp_path, store, pair, monkeypatch
):
    """Capture is made at the first streaming look: a column added on the source before then (while the copy ran)
    was recorded by no trigger. The first look compares both sides' schemas and posts what the target lacks,
    once — not the foreign key pgmig parked on the target until the cutover."""
    src, tgt = pair
    fresh(src, tgt, "ddg")
    src.psql(
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customer (id)); "
        "INSERT INTO orders VALUES (1, 1)",
        database="ddg",
    )
    made, real = [], ddl.ensure

    async def after_a_change_during_the_copy(source, target, database, journal):
        if not made:  # the copy is done, capture not made yet: a change now is nobody's record
            made.append(src.psql("ALTER TABLE customer ADD COLUMN during_copy text", database="ddg"))
        return await real(source, target, database, journal)

    monkeypatch.setattr(ddl, "ensure", after_a_change_during_the_copy)
    engine = factories.engine(store, src, tgt, tmp_path, capture_ddl=True, verify_chunk_rows=0, progress_interval=0.2)
    mid = await factories.start_online(engine, ["ddg"])
    posted = await wait_until(lambda: cards(engine, "ddg", "drift-1"), 30, "the card of what changed before capture")
    assert posted[0].before_capture and posted[0].drift == ["new column customer.during_copy (text)"], posted[0]
    told = ddl_messages.card(mid, posted[0], 1)
    assert "changed on the source* before capture began" in str(told.blocks), told.blocks
    ticks = engine.events.ticks  # type: ignore[attr-defined]
    await wait_until(lambda: engine.events.ticks >= ticks + 3, 20, "three more looks")  # type: ignore[attr-defined]
    assert len(cards(engine, "ddg", "drift-1")) == 1 and not cards(engine, "ddg", "drift-2")
    audit = [e.detail for e in (await store.audit_page(mid, 1, size=500, everything=True)).entries]
    assert any("ddg before capture: new column customer.during_copy" in d for d in audit), audit
    assert (await engine.cancel(mid, "U0BOB")).state is State.CANCELLED
    await engine.close()


async def test_a_migration_started_with_no_capture_ddl_captures_nothing_where_the_config_captures(
    tmp_path, store, pair
):
    """`--no-capture-ddl` where [online] capture_ddl is on: no event trigger, no card, nothing holds replication
    at a schema change (the blocked alert names what the target lacks, as without capture), no cutover hold to
    pause, and the approval card has no schema changes to list."""
    src, tgt = pair
    fresh(src, tgt, "ddn")
    engine = factories.engine(store, src, tgt, tmp_path, capture_ddl=True, verify_chunk_rows=0, progress_interval=0.2)
    mid = await factories.start_online(engine, ["ddn"], capture_ddl=DdlCapture.OFF)
    assert (await store.get_migration(mid)).options.capture_ddl is DdlCapture.OFF
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    events = engine.events
    ticked = events.ticks  # type: ignore[attr-defined]
    await wait_until(lambda: events.ticks >= ticked + 3, 20, "three streaming ticks")  # type: ignore[attr-defined]
    assert src.psql(LEFT_BEHIND, database="ddn") == "0" and engine.progress(mid).of("ddn").schema_changes is None
    src.psql("ALTER TABLE customer ADD COLUMN phone text", database="ddn")
    src.psql("INSERT INTO customer VALUES (100, 'after', '555')", database="ddn")
    said = "public.customer has column phone (text) on the source, not on the target"
    await wait_until(lambda: said in engine.progress(mid).of("ddn").blocked, 30, "the missing column said")
    assert not [c for m, c in events.cards if m == mid]  # type: ignore[attr-defined]
    assert await engine.schema_changes(mid) == {"ddn": []}
    with pytest.raises(MigrationError, match="started with --no-capture-ddl"):
        await engine.pause_cutover(mid, "U0BOB", "hold it")
    tgt.psql("ALTER TABLE customer ADD COLUMN phone text", database="ddn")  # the fix the alert gives
    await wait_until(
        lambda: tgt.psql("SELECT phone FROM customer WHERE id = 100", database="ddn") == "555", 30, "the row"
    )
    await wait_until(lambda: not engine.progress(mid).of("ddn").blocked, 20, "no longer blocked")
    assert (await engine.prepare_cutover(mid, "U0BOB", "C0OPS", 30)).schema_changes is None
    outcome = await engine.cancel(mid, "U0ALICE")
    assert outcome.state is State.CANCELLED and not outcome.failed, outcome
    await engine.close()


def cards(engine: Engine, db: str, key: str) -> list[SchemaCard]:
    """The cards of one change (or drift) as posted, then each update, in order."""
    return [c for _, c in engine.events.cards if c.database == db and c.key == key]  # type: ignore[attr-defined]


async def _has_all(engine: Engine, mid: str, db: str, wanted: list[str]) -> bool:
    return await states(engine, mid, db) == wanted


def _count(cluster: LocalCluster, table: str, db: str) -> str:
    return cluster.psql(f"SELECT count(*) FROM {table}", database=db)


async def test_without_event_trigger_rights_drift_is_reported_against_the_baseline_taken_at_the_start(
    tmp_path, store, pair
):
    """The fallback (as when pgmig's login is no superuser): each tick compares the schema's fingerprint with
    the baseline taken at the first look, which the state store keeps: a change made while pgmig was down is
    reported by the next pgmig, and what was reported before is not reported again."""
    src, tgt = pair
    fresh(src, tgt, "ddd")
    settings = {"capture_ddl": True, "verify_chunk_rows": 0, "progress_interval": 0.2}
    engine = factories.engine(store, src, tgt, tmp_path, **settings)
    mid = await factories.start_online(engine, ["ddd"])
    watch = engine.progress(mid).of("ddd").schema_changes = SchemaWatch(capture=False)
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    await wait_until(lambda: watch.record is not None and watch.record.baseline, 20, "the first fingerprint")
    src.psql("CREATE INDEX customer_name ON customer (name)", database="ddd")
    drift = await wait_until(lambda: cards(engine, "ddd", "drift-1"), 10, "the drift card")
    assert len(drift[0].drift) == 1 and "new index customer_name (CREATE INDEX" in drift[0].drift[0], drift

    async def saved() -> dict:  # the card is posted, then the watch's record saved: wait for both
        step = await store.step(mid, "schema_watch:ddd")
        return step.data if step is not None and "drift-1" in step.data.get("posted", {}) else {}

    kept = await wait_until(saved, 10, "the drift's record in the state store")
    assert kept["baseline"] and kept["posted"]["drift-1"] and kept["drift"] == drift[0].drift
    await engine.close()  # pgmig stops; the schema changes while it is down
    src.psql("ALTER TABLE customer ADD COLUMN email varchar(80) NOT NULL DEFAULT ''", database="ddd")
    again = factories.engine(store, src, tgt, tmp_path, **settings)
    watch = again.progress(mid).of("ddd").schema_changes = SchemaWatch(capture=False)
    assert await again.recover() == [mid]
    posted = await wait_until(lambda: cards(again, "ddd", "drift-2"), 20, "the change made while pgmig was down")
    assert posted[0].drift == ["new column customer.email (character varying(80) NOT NULL)"], posted
    assert not cards(again, "ddd", "drift-1") and "email" in watch.summary() and "customer_name" in watch.summary()
    assert src.psql(TRIGGERS, database="ddd") == "0"
    outcome = await again.cancel(mid, "U0ALICE")
    assert outcome.state is State.CANCELLED and not outcome.failed, outcome
    await again.close()


async def test_cleanup_removes_the_capture_of_a_migration_that_is_gone_and_nothing_else(tmp_path, store, pair):
    """Event triggers and pgmig's schema left on a source by a migration the state store no longer knows (mig-98
    of this deployment): `/pgmig cleanup` finds them by pgmig's mark and the deployment id and removes them; a
    look-alike schema without the mark, an event trigger whose function is not in pgmig's schema, and another
    deployment's capture stay."""
    src, tgt = pair
    fresh(src, tgt, "ddc")
    mine, theirs = object_name(store.deployment, "mig-98", "ddc"), object_name("f00f00", "mig-98", "ddc")
    source = server(factories.SOURCE, src)
    for schema in (mine, theirs):  # made by pgmig's own code, as a capture makes them
        src.psql(f"CREATE PUBLICATION {schema}", database="ddc")
        async with source.connection("ddc") as conn:
            await watermarks._make_source(conn, schema, schema)
            await ddl._publish_table(conn, schema, schema)
            await ddl._make_triggers(conn, schema, ddl.trigger_names(schema))
    alike = object_name(store.deployment, "mig-97", "ddc")
    src.psql(
        f"CREATE SCHEMA {alike}; CREATE FUNCTION {alike}.f() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END'; "
        f"CREATE EVENT TRIGGER {alike}_x ON ddl_command_end EXECUTE FUNCTION {alike}.f()",
        database="ddc",
    )
    engine = factories.engine(store, src, tgt, tmp_path)
    listed = await engine.cleanup(factories.SOURCE, remove=False)
    assert {(x.kind, x.name, x.migration_id) for x in listed.loose if x.database == "ddc"} == {
        ("publication", mine, "mig-98"),
        *(("event trigger", t, "mig-98") for t in ddl.trigger_names(mine)),
        ("schema", mine, "mig-98"),
    }
    assert not listed.kept
    removed = await engine.cleanup(factories.SOURCE, remove=True)
    assert len(removed.removed or []) == 4, removed
    ours = (
        f"SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = '{mine}') "
        f"+ (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE '{mine[:50]}%')"
    )
    assert src.psql(ours, database="ddc") == "0"
    assert src.psql(f"SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE '{theirs[:50]}%'", database="ddc") == "2"
    assert src.psql(f"SELECT count(*) FROM pg_event_trigger WHERE evtname = '{alike}_x'", database="ddc") == "1"
    assert (
        src.psql(f"SELECT count(*) FROM pg_namespace WHERE nspname IN ('{theirs}', '{alike}')", database="ddc") == "2"
    )
    src.psql('DROP DATABASE "ddc" WITH (FORCE)')  # another deployment's capture goes with it
    await engine.close()


async def test_killed_right_after_publishing_a_new_table_a_restart_copies_its_rows(tmp_path, pair):
    """CREATE TABLE captured and applied by pgmig itself, the table added to the publication, and pgmig killed
    before the subscription is refreshed: the next pgmig refreshes it (publishing is idempotent, and only a
    finished publish is recorded), the rows written before are copied and the later ones stream."""
    src, tgt = pair
    fresh(src, tgt, "ddp")
    config = tmp_path / "pgmig.toml"
    extra = (
        "[migration]\nprogress_interval_seconds = 0.2\n"
        '[online]\nverify_chunk_rows = 0\nddl_auto_apply = ["create_table"]\n'
    )  # capture is on by default
    config.write_text(config_toml({"src": src, "tgt": tgt}, extra=extra))
    home = tmp_path / "home"
    first = await Pgmig(home, config, 1, "ddl-published:ddp").start()
    await first.type("migrate src tgt --mode online --db ddp", "wait 120")
    await wait_until(lambda: src.psql(TRIGGERS, database="ddp") == "2", 90, "the capture's event triggers")
    src.psql("CREATE TABLE invoice (id int PRIMARY KEY, total numeric)", database="ddp")
    src.psql("INSERT INTO invoice SELECT g, g * 1.5 FROM generate_series(1, 20) g", database="ddp")
    await first.killed()
    published = "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'invoice'"
    assert src.psql(published, database="ddp") == "1"
    subscribed = "SELECT count(*) FROM pg_subscription_rel WHERE srrelid = to_regclass('invoice')"
    assert tgt.psql(subscribed, database="ddp") == "0"  # killed before the refresh
    second = await Pgmig(home, config, 2, None).start()
    await second.type("wait 600")
    try:
        await wait_until(lambda: _count(tgt, "invoice", "ddp") == "20", 90, "the new table's rows copied")
        src.psql("INSERT INTO invoice VALUES (21, 1)", database="ddp")
        await wait_until(lambda: _count(tgt, "invoice", "ddp") == "21", 30, "the later rows streamed")
    finally:
        assert second.proc is not None
        second.proc.kill()
        await second.proc.wait()
    assert "📦 new table public.invoice (ddp) published" in second.log(), second.log()[-3000:]
    third = pgmig("shell", env=shell_env(tmp_path, config), stdin="ddl mig-1\ncancel mig-1\n")
    assert "#1 CREATE TABLE (table public.invoice" in third.stdout and "— applied by pgmig" in third.stdout
    assert "cancelled" in third.stdout, third.stdout
    assert src.psql(LEFT_BEHIND, database="ddp") == "0" and src.psql(published, database="ddp") == "0"


async def test_cards_in_slack_are_decided_through_the_routers_authorization_and_updated_where_they_are(tmp_path, pair):
    """The real app against the fake Slack, signed clicks: a destructive change's card takes two approvers'
    Apply (someone who is not an operator is refused, each approval updates the card), Skip asks why in a form,
    Pause cutover holds `/pgmig cutover` until Resume; every decision is audited."""
    src, tgt = pair
    fresh(src, tgt, "dds")
    src.psql("CREATE TABLE old_log (id int PRIMARY KEY)", database="dds")
    config = config_toml(
        {"onprem": src, "azure": tgt},
        extra='[slack]\nnotify_channel = "C0OPS"\napprovers = ["U0APPROVER1", "U0APPROVER2"]\n'
        'required_approvals = 2\noperators = ["U0ALICE", "U0BOB", "U0APPROVER1", "U0APPROVER2"]\n'
        "[migration]\nprogress_interval_seconds = 0.2\n[online]\nverify_chunk_rows = 0\n",
    )
    async with running(tmp_path, config) as slack:
        await slack.command("migrate onprem azure --mode online --db dds", key="m")
        await slack.reply("m", timeout=60)
        await wait_until(lambda: src.psql(TRIGGERS, database="dds") == "2", 90, "the capture's event triggers")
        src.psql("DROP TABLE old_log", database="dds")
        card = await slack.fake.wait_for("calls", lambda c: _card_of(c, "dds #1 DROP TABLE"), timeout=30)
        assert card.params.get("thread_ts") and "Apply to target" in text_of(card.params)
        await slack.press(Action.DDL_APPLY.value, user="U0MALLORY", key="mallory")
        assert "only operators may decide schema changes" in text_of(await slack.reply("mallory"))
        await slack.press(Action.DDL_APPLY.value, user="U0APPROVER1", key="a1")
        assert "1 of 2 approvals" in text_of(await slack.reply("a1"))
        first = await slack.fake.wait_for("calls", lambda c: _update_of(c, "dds #1 DROP TABLE", "(1 of 2 approvals)"))
        kept = (await slack.services.engine.store.step("mig-1", "schema_watch:dds")).data["posted"]
        assert first.params["ts"] == kept["1"][1]  # the card posted, edited where it is
        await slack.press(Action.DDL_APPLY.value, user="U0APPROVER2", key="a2")
        await slack.reply("a2")
        await slack.fake.wait_for("calls", lambda c: _update_of(c, "dds #1", "applied by U0APPROVER1, U0APPROVER2"))
        assert tgt.psql("SELECT to_regclass('old_log') IS NULL", database="dds") == "t"

        src.psql("CREATE INDEX customer_name ON customer (name)", database="dds")
        await slack.fake.wait_for("calls", lambda c: _card_of(c, "dds #2 CREATE INDEX"), timeout=30)
        before = len(slack.fake.calls)
        await slack.press(Action.DDL_SKIP.value, user="U0BOB", key="skip")
        await slack.fake.wait_for("calls", lambda c: c.method == "views.open" and c in slack.fake.calls[before:])
        form = [v for v in slack.fake.views.values() if v.get("callback_id") == ddl_messages.SKIP_FORM][-1]
        values = {ddl_messages.REASON: {ddl_messages.REASON: {"type": "plain_text_input", "value": "own index"}}}
        assert (await slack.submit(form, values, user="U0BOB", key="skip-form")).status == 200
        skipped = await slack.fake.wait_for("calls", lambda c: _update_of(c, "dds #2", "skipped by U0BOB"))
        assert "skipped by <@U0BOB>: own index" in text_of(skipped.params)

        store = slack.services.engine.store
        await wait_state(store, "mig-1", State.READY_FOR_CUTOVER)
        await slack.press(Action.DDL_PAUSE.value, user="U0BOB", key="pause")
        paused = text_of(await slack.reply("pause"))
        assert "paused by U0BOB" in paused and '"value": "ddl mig-1 resume"' in paused, paused
        assert "cutover is paused by U0BOB" in await slack.ask("cutover mig-1")
        await slack.click(Action.DDL_RESUME.value, "ddl mig-1 resume", user="U0ALICE", key="resume")
        assert "may go ahead again" in text_of(await slack.reply("resume"))
        # paused while a cutover request is open: the request is rejected, saying why. Its card lists what the
        # target does not have: the skipped index, not the applied drop
        assert "approval card" in await slack.ask("cutover mig-1")
        asked = await slack.fake.wait_for(
            "calls", lambda c: c.method == "chat.postMessage" and "Approve cutover of mig-1?" in c.params["text"]
        )
        approval = text_of(asked.params)
        assert "Schema changes the target does not have" in approval, approval
        assert "dds #2 CREATE INDEX `CREATE INDEX customer_name ON customer (name)`" in approval, approval
        assert "skipped by U0BOB: own index · replication not held by it" in approval
        assert "#1 DROP TABLE" not in approval
        await slack.command("ddl mig-1 pause the app team ships a column tonight", user="U0BOB", key="pause2")
        await slack.reply("pause2")
        closed = await slack.fake.wait_for(
            "calls", lambda c: c.method == "chat.update" and "Cutover rejected" in text_of(c.params)
        )
        assert "cutover paused: the app team ships a column tonight" in text_of(closed.params)
        await wait_state(store, "mig-1", State.READY_FOR_CUTOVER)
        audit = {e.action for e in (await store.audit_page("mig-1", 1, size=500, everything=True)).entries}
        assert {"ddl.captured", "ddl.approve", "ddl.apply", "ddl.skip", "ddl.pause", "ddl.resume"} <= audit, audit
        assert "cancelled" in await slack.ask("cancel mig-1")
        offline = await slack.ask("migrate onprem azure --mode offline --db dds --no-capture-ddl")
        assert "`--no-capture-ddl` is for online migrations" in offline, offline
    assert src.psql(LEFT_BEHIND, database="dds") == "0"


def _card_of(call, words: str) -> bool:
    return call.method == "chat.postMessage" and words in call.params.get("text", "")


def _update_of(call, card: str, words: str) -> bool:
    """An edit of the card of `card` (`dds #1`) saying `words`."""
    text = call.params.get("text", "")
    return call.method == "chat.update" and f"schema change {card}" in text and words in text_of(call.params)


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
