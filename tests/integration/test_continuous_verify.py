"""Continuous verification while streaming (verify/continuous.py, changes/watermarks.py): ranges compared at one
point of the stream under a live write load without a false difference, a row changed on the target behind
pgmig's back named by table and key range, and nothing of it left on either server after a cutover or a cancel."""

from __future__ import annotations

import asyncio
import logging
import re
import signal

import asyncpg
import pytest

from bot.localpg import LocalCluster
from migration_core.changes import watermarks
from migration_core.engine.api import Engine
from migration_core.pg import failpoints
from migration_core.pg.failpoints import ENV as KILL
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, Change, Journal
from migration_core.state.models import State
from migration_core.verify import continuous
from tests.integration import factories
from tests.integration.clusters import PASSWORD, TARGET, config_toml, shell_env
from tests.integration.test_crash_recovery import Pgmig
from tests.integration.test_shell import pgmig
from tests.integration.waiting import wait_state, wait_until

LOGICAL = {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}
SCHEMA = """
CREATE TABLE account (id bigint PRIMARY KEY, owner text, balance numeric, seen timestamptz DEFAULT now());
INSERT INTO account SELECT g, 'o' || g, g * 1.5 FROM generate_series(1, 2500) g;
CREATE TABLE note (code text PRIMARY KEY, body text);
INSERT INTO note SELECT 'k' || lpad(g::text, 5, '0'), repeat('n', g % 50) FROM generate_series(1, 700) g;
CREATE TABLE log (at int, what text);
INSERT INTO log SELECT g, 'e' || g FROM generate_series(1, 300) g;
ALTER TABLE log REPLICA IDENTITY FULL;
"""
LEFT_BEHIND = "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgmig%'"


@pytest.fixture(scope="module")
def pair(cluster_root):
    src = LocalCluster(cluster_root / "cv-src", password=PASSWORD, settings=LOGICAL).init().start()
    tgt = LocalCluster(cluster_root / "cv-tgt", password=PASSWORD, settings=TARGET).init().start()
    yield src, tgt
    tgt.destroy()
    src.destroy()


def fresh(src: LocalCluster, name: str) -> None:
    src.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    src.psql(f'CREATE DATABASE "{name}"')
    src.psql(SCHEMA, database=name)


def line(engine: Engine, mid: str, db: str) -> str:
    return engine.progress(mid).of(db).verified


async def writes(src: LocalCluster, db: str, stop: asyncio.Event) -> int:
    """An application updating and inserting accounts (never note or log) until told to stop. It never
    updates account 1000, which a test changes on the target behind pgmig's back: an update replicated there
    would overwrite the whole row, mending it before pgmig reports it (the test then raced that update)."""
    conn = await asyncpg.connect(src.dsn(db))
    n = 0
    try:
        while not stop.is_set():
            account = 1 + n * 37 % 2500
            await conn.execute(
                "UPDATE account SET balance = balance + 1, seen = now() WHERE id = $1",
                1001 if account == 1000 else account,
            )
            await conn.execute("INSERT INTO account (id, owner, balance) VALUES ($1, 'new', 0)", 10_000 + n)
            n += 1
            await asyncio.sleep(0.005)  # an application's pace, not a wait for anything
    finally:
        await conn.close()
    return n


async def test_ranges_compare_equal_under_writes_and_a_change_behind_pgmigs_back_is_named(tmp_path, store, pair):
    src, tgt = pair
    fresh(src, "cv")
    engine = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=400, progress_interval=0.1)
    mid = await factories.start_online(engine, ["cv"], overwrite=True)
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    stop = asyncio.Event()
    app = asyncio.create_task(writes(src, "cv", stop))
    try:
        # whole passes (7 + 1 + 2 ranges, a few written to meanwhile and compared again) find nothing
        v = await wait_until(
            lambda: (x := engine.progress(mid).of("cv").verification) and x.passes >= 2 and x,
            90,
            lambda: "two passes: " + line(engine, mid, "cv"),
        )
        assert v.rows_verified >= 3500, v
        # every table covered, written to or not, the keyless log compared whole
        await wait_until(
            lambda: line(engine, mid, "cv").startswith("verified 100 %"),
            60,
            lambda: "coverage: " + line(engine, mid, "cv"),
        )
        await wait_until(lambda: ("public", "log") in v.covered, 60, "the keyless log to be covered")
        assert v.covered == {("public", "account"), ("public", "note"), ("public", "log")}, v.covered
        said = line(engine, mid, "cv")
        assert said.startswith("verified 100 % at ") and ", 0 differences" in said, said
        assert "counted at cutover" not in said, said
        # a row of a table nobody writes to, and one of a table the application writes to all along, changed
        # on the target alone: found and named, by table and key range, and alerted
        tgt.psql("UPDATE note SET body = 'tampered' WHERE code = 'k00500'", database="cv")
        tgt.psql("UPDATE account SET owner = 'tampered' WHERE id = 1000", database="cv")
        await wait_until(
            lambda: "note" in line(engine, mid, "cv") and "account" in line(engine, mid, "cv"),
            90,
            lambda: "both tampered ranges to be found: " + line(engine, mid, "cv"),
        )
        said = line(engine, mid, "cv")
        assert '"public"."note" code from k00401 to the last key: source 300 rows, target 300 rows' in said, said
        assert '"public"."account" id from 801 to 1201 (excluded)' in said, said
        alerts = [text for _, text in engine.events.alerts if "continuous verification found" in text]  # type: ignore[attr-defined]
        assert len(alerts) == 1 and ("note" in alerts[0] or "account" in alerts[0])  # raised once, until all agree
        # a diverged table is no longer covered: a cutover request is refused, saying how far verification is
        with pytest.raises(
            MigrationError, match=r"cv \d+ %, and a request needs 100 % \(\[online\] require_verified_sh"
        ):
            await engine.prepare_cutover(mid, "U0BOB", "C1", 10)
        assert (await store.get_migration(mid)).state is State.READY_FOR_CUTOVER
        # repaired while the application keeps writing: both ranges re-copied, compared again, equal
        with pytest.raises(MigrationError, match="no range of log"):
            await engine.repair(mid, "U0BOB", "log")
        repaired = await engine.repair(mid, "U0BOB")
        assert len(repaired) == 2 and any("note" in r for r in repaired), repaired
        body = "SELECT body FROM note WHERE code = 'k00500'"
        owner = "SELECT owner FROM account WHERE id = 1000"
        await wait_until(
            lambda: (
                tgt.psql(body, database="cv") == src.psql(body, database="cv")
                and tgt.psql(owner, database="cv") == src.psql(owner, database="cv")
            ),
            30,
            "the repairs to arrive on the target",
        )
        passes = v.passes
        await wait_until(lambda: v.passes >= passes + 2, 90, lambda: "two more passes: " + line(engine, mid, "cv"))
        assert ", 0 differences" in line(engine, mid, "cv"), line(engine, mid, "cv")
    finally:
        stop.set()
        await app
    audit = await engine.audit_log(mid, everything=True)
    assert audit is not None and any(e.action == "repair" and "note" in e.detail for e in audit.entries)
    await engine.prepare_cutover(mid, "U0BOB", "C1", 10)  # covered again: the request is allowed
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    # the window counted no table: all were proven by continuous verification (the keyless log compared whole)
    # and the fence's watermark; the checksums after release agree on every table: the repairs lost nothing
    done = [e.detail for e in (await engine.audit_log(mid, everything=True)).entries if e.action == "cutover.completed"]
    assert "in the window 0 table(s) counted, 3 proven by continuous verification" in done[0], done
    assert await store.step(mid, "incident") is None, (await store.step(mid, "incident")).detail
    assert (await store.get_migration(mid)).state is State.COMPLETED
    assert src.psql(LEFT_BEHIND, database="cv") == "0"
    assert tgt.psql(LEFT_BEHIND, database="cv") == "0"
    assert src.psql("SELECT count(*) FROM pg_publication") == "0"
    await engine.close()


async def test_a_cancel_removes_the_verification_objects_and_nothing_else(tmp_path, store, pair):
    src, tgt = pair
    fresh(src, "cvc")
    src.psql("CREATE SCHEMA pgmig_notes; CREATE TABLE pgmig_notes.mine (x int PRIMARY KEY)", database="cvc")  # a DBA's
    engine = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=500, progress_interval=0.1)
    mid = await factories.start_online(engine, ["cvc"], overwrite=True)
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    await wait_until(lambda: "ranges pending" in line(engine, mid, "cvc"), 60, "verification to start")
    assert src.psql(LEFT_BEHIND, database="cvc") == "2"  # the DBA's and pgmig's
    outcome = await engine.cancel(mid, "U0ALICE")
    assert outcome.state is State.CANCELLED and not outcome.failed, outcome
    assert src.psql(
        "SELECT string_agg(nspname, ',') FROM pg_namespace WHERE nspname LIKE 'pgmig%'", database="cvc"
    ) == ("pgmig_notes")
    await engine.close()


async def test_a_restart_walks_on_from_the_range_the_walk_was_on(tmp_path, store, pair, monkeypatch):
    """Where the walk is — its table, and the low key of the first range of it not yet compared equal in this
    pass — is journaled as the walk moves: pgmig stopped there walks on from that range when it starts again
    (the covered tables kept), not from the first table nor from the start of its own, and still covers the
    table once the rest of it compares equal."""
    src, tgt = pair
    fresh(src, "cvw")  # account (2,500 rows: 25 ranges of 100), then log and note
    monkeypatch.setattr(continuous, "RESUME_EVERY", 0.0)  # the key journaled as often as it moves
    first = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=100, progress_interval=0.1)
    mid = await factories.start_online(first, ["cvw"], overwrite=True)

    def inside_a_table() -> bool:  # the walk, as journaled, is past the first range of a table
        v = first.progress(mid).of("cvw").verification
        return v is not None and v.journaled[2] is not None and v.journaled_key[0] is not None

    await wait_until(inside_a_table, 60, "the walk to be inside a table")
    await first.close()  # pgmig stops here
    [entry] = [e for e in await Journal(store, mid).entries(Change.VERIFIER, "cvw") if e.server == SOURCE]
    made = watermarks.VerifierObjects.of(entry)
    assert len(made.walking) == 3, made
    walked: list[tuple[str, str | None]] = []
    real = continuous._next

    async def noted(src_conn, v, chunk_rows):
        r = await real(src_conn, v, chunk_rows)
        if r is not None:
            walked.append((r.table.name, r.lo))
        return r

    monkeypatch.setattr(continuous, "_next", noted)
    second = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=100, progress_interval=0.1)
    assert await second.recover() == [mid]
    await wait_until(lambda: walked, 60, "the walk to go on")
    assert walked[0] == (made.walking[1], made.walking[2]), (walked[:5], made.walking)  # that range, no earlier
    kept = second.progress(mid).of("cvw").verification
    assert kept is not None and {(c[0], c[1]) for c in made.covered} <= kept.covered  # what was covered stays
    table = (made.walking[0], made.walking[1])
    await wait_until(lambda: table in kept.covered, 60, lambda: f"{table} covered: {kept.summary()}")
    await second.cancel(mid, "U0ALICE")
    await second.close()


async def test_objects_an_earlier_pgmig_made_are_renewed_and_its_keyless_tables_are_sieved(tmp_path, store, pair):
    """A pgmig upgraded while a migration streams finds the target's verification objects as the earlier one
    made them: a results table without the sieve's `parts` column and that pgmig's trigger function (here one
    that takes no digest at all). At start it gives the table the column and the function its own body, in
    the schema the journal names, and the keyless log is sieved: a row changed there meanwhile is found by its
    part and repaired (without the column, every watermark failed in the apply worker)."""
    src, tgt = pair
    fresh(src, "cvu")
    first = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=500, progress_interval=0.1)
    mid = await factories.start_online(first, ["cvu"], overwrite=True)
    await wait_until(lambda: "ranges pending" in line(first, mid, "cvu"), 60, "verification to start")
    await first.close()
    s = f'"{watermarks.schema_name(Journal(store, mid), "cvu")}"'
    tgt.psql(
        f"ALTER TABLE {s}.{watermarks.DIGESTS} DROP COLUMN parts; "
        f"CREATE OR REPLACE FUNCTION {s}.{watermarks.TRIGGER}() RETURNS trigger LANGUAGE plpgsql "
        "AS 'BEGIN RETURN NULL; END'; "
        "SET session_replication_role = replica; UPDATE log SET what = 'tampered' WHERE at = 7",
        database="cvu",
    )
    second = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=500, progress_interval=0.1)
    assert await second.recover() == [mid]
    await wait_until(
        lambda: 'log" (rows in hash part' in line(second, mid, "cvu"), 60, lambda: "found: " + line(second, mid, "cvu")
    )

    async def repaired() -> bool:
        v = second.progress(mid).of("cvu").verification
        if v is not None and v.divergences:
            await second.repair(mid, "U0BOB", "log")
        return v is not None and ("public", "log") in v.covered and not v.divergences

    await wait_until(repaired, 60, lambda: "repaired and covered: " + line(second, mid, "cvu"))
    assert tgt.psql("SELECT what FROM log WHERE at = 7", database="cvu") == "e7"
    assert (
        tgt.psql(
            f"SELECT count(*) FROM pg_attribute WHERE attrelid = '{s}.{watermarks.DIGESTS}'::regclass "
            "AND attname = 'parts'",
            database="cvu",
        )
        == "1"
    )
    await second.cancel(mid, "U0ALICE")
    await second.close()


async def test_a_cancel_while_a_look_makes_the_verification_objects_leaves_nothing(tmp_path, store, pair, monkeypatch):
    """A scheduled look making pgmig's schema on the source (its entry planned, the schema not made yet) when a
    cancel comes: the cancel ends that look before it tears down. Else the look went on once the teardown had
    undone the planned entry (nothing there yet) and made the schema behind it, while the publication it joins
    was still there (seen in full-suite runs: cleanup then found the schema)."""
    src, tgt = pair
    fresh(src, "cvx")
    entered, release, made = asyncio.Event(), asyncio.Event(), asyncio.Event()
    make, undo = watermarks._make_source, watermarks.drop

    async def held_before_making(conn, schema, publication):
        if entered.is_set():
            return await make(conn, schema, publication)
        entered.set()
        await release.wait()  # the look is here, its entry planned, when the cancel comes
        try:
            return await make(conn, schema, publication)
        finally:
            made.set()

    async def the_look_goes_on_after_the_undo(server, entry, journal):
        said = await undo(server, entry, journal)
        if entry.server == "source":
            release.set()
            await asyncio.wait([asyncio.ensure_future(made.wait())], timeout=2)  # a look still running makes it
        return said

    monkeypatch.setattr(watermarks, "_make_source", held_before_making)
    monkeypatch.setattr(watermarks, "drop", the_look_goes_on_after_the_undo)
    engine = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=500, progress_interval=0.1)
    mid = await factories.start_online(engine, ["cvx"], overwrite=True)
    await asyncio.wait_for(entered.wait(), 60)
    outcome = await asyncio.wait_for(engine.cancel(mid, "U0ALICE"), 60)
    assert outcome.state is State.CANCELLED and not outcome.failed, outcome
    assert src.psql(LEFT_BEHIND, database="cvx") == "0"
    await engine.close()


async def test_killed_around_making_the_verification_objects_a_restart_finishes_and_a_cancel_removes_them(
    tmp_path, pair
):
    """pgmig SIGKILLed right after journaling the target's verification objects (before making them), then
    again right after making them; restarted, it finishes what the journal planned (the source's side too)
    and verifies; cancelled, nothing of pgmig's is left on either server."""
    src, tgt = pair
    fresh(src, "cvk")
    tgt.psql('DROP DATABASE IF EXISTS "cvk" WITH (FORCE)')
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": src, "tgt": tgt}, extra="[migration]\nprogress_interval_seconds = 0.2\n"))
    env = shell_env(tmp_path, config)
    first = pgmig(
        "shell", env={**env, KILL: "plan-verifier:cvk"}, stdin="migrate src tgt --mode online --db cvk\nwait 90\n"
    )
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    assert src.psql(LEFT_BEHIND, database="cvk") == "0"  # the source's side is planned after the target's
    second = pgmig("shell", env={**env, KILL: "verifier:cvk"}, stdin="wait 60\n")
    assert second.returncode == -signal.SIGKILL, second.stdout + second.stderr
    assert tgt.psql(LEFT_BEHIND, database="cvk") == "1"
    third = await Pgmig(tmp_path / "home", config, 3, None).start()  # the state and home `env` names

    async def verified() -> bool:
        await third.type("status mig-1")
        await asyncio.sleep(0.5)
        return "verified while streaming: verified " in third.log()

    await wait_until(verified, 60, lambda: "the restart to verify:\n" + third.log()[-3000:])
    await third.type("cancel mig-1")
    await third.quit()
    said = third.log()
    assert third.proc is not None and third.proc.returncode == 0 and "Traceback" not in said, said
    assert "cancelled" in said, said
    assert src.psql(LEFT_BEHIND, database="cvk") == "0"
    assert src.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgmig%'") == "0"
    tgt.psql('DROP DATABASE IF EXISTS "cvk" WITH (FORCE)')


async def test_killed_during_a_repair_a_restart_repairs_from_its_record_and_a_cancel_leaves_nothing(tmp_path, pair):
    """pgmig SIGKILLed right after journaling a repair (before the range is sent): the range is still wrong on
    the target, the entry planned. Restarted, it knows the tables it had covered (journaled), finds the range
    again, repairs it under the same entry (done) and the target agrees; cancelled, nothing is left."""
    src, tgt = pair
    fresh(src, "cvr")
    tgt.psql('DROP DATABASE IF EXISTS "cvr" WITH (FORCE)')
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": src, "tgt": tgt}, extra="[migration]\nprogress_interval_seconds = 0.2\n"))
    env = shell_env(tmp_path, config)
    home = tmp_path / "home"  # the state and home `env` names: each life below is pgmig on them
    first = await Pgmig(home, config, 1, None).start()
    await first.type("migrate src tgt --mode online --db cvr")
    await wait_until(lambda: "ready_for_cutover" in first.log(), 90, lambda: first.log()[-3000:])
    await first.quit()
    tgt.psql("UPDATE note SET body = 'tampered' WHERE code = 'k00005'", database="cvr")
    second = await Pgmig(home, config, 2, "plan-repair:cvr").start()

    async def repair_asked(life: Pgmig) -> bool:  # asked again until the range is found and the repair sent
        assert life.proc is not None
        if life.proc.returncode is None:
            try:
                await life.type("repair mig-1")
            except (BrokenPipeError, ConnectionResetError):  # killed meanwhile
                pass
            await asyncio.sleep(1)
        return life.proc.returncode is not None or "re-copied" in life.log()

    await wait_until(lambda: repair_asked(second), 90, lambda: second.log()[-3000:])
    await second.killed()  # the first repair that found the range died with it
    body = "SELECT body FROM note WHERE code = 'k00005'"
    assert tgt.psql(body, database="cvr") == "tampered"  # planned, not sent
    third = await Pgmig(home, config, 3, None).start()
    await wait_until(lambda: repair_asked(third), 90, lambda: third.log()[-3000:])
    await wait_until(lambda: tgt.psql(body, database="cvr") == src.psql(body, database="cvr"), 30, "the repair")
    await third.quit()
    assert "Traceback" not in third.log(), third.log()[-3000:]
    fourth = pgmig("shell", env=env, stdin="cancel mig-1\n")
    assert "cancelled" in fourth.stdout, fourth.stdout[-3000:]
    assert src.psql(LEFT_BEHIND, database="cvr") == "0"
    assert src.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgmig%'") == "0"
    tgt.psql('DROP DATABASE IF EXISTS "cvr" WITH (FORCE)')


KEYLESS = """
CREATE TABLE feed (at int, what text);
INSERT INTO feed SELECT g, 'f' || g FROM generate_series(1, 20000) g;
CREATE TABLE archive (at int, what text);
INSERT INTO archive SELECT g, 'a' || g FROM generate_series(1, 60000) g;
ALTER TABLE feed REPLICA IDENTITY FULL;
ALTER TABLE archive REPLICA IDENTITY FULL;
ANALYZE;
"""


async def feeds(src: LocalCluster, db: str, stop: asyncio.Event) -> int:
    """An application appending to two logs without a key as fast as it can, with pauses of 2 ms: always a
    few rows committed to each while a read of either whole log runs."""
    conn = await asyncpg.connect(src.dsn(db))
    n = 0
    try:
        while not stop.is_set():
            await conn.execute(f"INSERT INTO {('feed', 'archive')[n % 2]} VALUES ($1, 'live')", 100_000 + n)
            n += 1
            await asyncio.sleep(0.002)
    finally:
        await conn.close()
    return n


async def test_keyless_tables_written_all_the_time_or_large_are_covered_and_a_part_behind_pgmigs_back_is_repaired(
    tmp_path, store, pair
):
    """A log without a key that the application appends to all the time never compares whole (rows arrive
    while it is read): it is sieved by its rows' hashes into parts, each compared when at rest. A large one
    (more than KEYLESS_LIMIT chunks), appended to all the time too, is sieved until covered. Both end covered,
    so the window counts neither; a row changed on the target behind pgmig's back is named by its hash part
    and repaired while the appends go on."""
    src, tgt = pair
    src.psql('DROP DATABASE IF EXISTS "cvl" WITH (FORCE)')
    src.psql('CREATE DATABASE "cvl"')
    src.psql(KEYLESS, database="cvl")
    engine = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=5000, progress_interval=0.1)
    stop = asyncio.Event()
    app = asyncio.create_task(feeds(src, "cvl", stop))  # from before the copy: no table is ever at rest
    feed, archive = ("public", "feed"), ("public", "archive")
    try:
        mid = await factories.start_online(engine, ["cvl"], overwrite=True)
        await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
        v = await wait_until(
            lambda: (
                (x := engine.progress(mid).of("cvl").verification)
                and {feed, archive} <= x.covered
                and "counted at cutover" not in line(engine, mid, "cvl")
                and x
            ),
            120,
            lambda: "both keyless tables covered: " + line(engine, mid, "cvl"),
        )
        assert [t.once for t in v.tables] == [True, False], v.tables  # archive, then feed
        tgt.psql("UPDATE feed SET what = 'tampered' WHERE at = 777", database="cvl")
        # the row's old part lacks it, the part its new content hashes to has one too many: each is named
        await wait_until(
            lambda: "❌" in line(engine, mid, "cvl"), 90, lambda: "the tampered row found: " + line(engine, mid, "cvl")
        )
        assert feed not in v.covered and all(r.table.ref == feed for r in v.divergences), v.divergences
        assert 'feed" (rows in hash part' in line(engine, mid, "cvl"), line(engine, mid, "cvl")
        repaired: list[str] = []

        async def repaired_and_covered() -> bool:  # each part repaired once found, while the appends go on; covered
            # again only by a pass begun after the last divergence (that pass finds the other part, if the first
            # pass had compared it before the row was changed)
            if v.divergences:
                repaired.extend(await engine.repair(mid, "U0BOB", "feed"))
            return feed in v.covered and not v.divergences

        await wait_until(repaired_and_covered, 120, lambda: "repaired and covered: " + line(engine, mid, "cvl"))
        assert repaired and all('feed" (rows in hash part' in r for r in repaired), repaired
        assert all(re.search(r"rows; writes to the table waited \d+\.\d\d s\)$", r) for r in repaired), repaired
        assert tgt.psql("SELECT string_agg(what, ',') FROM feed WHERE at = 777", database="cvl") == "f777"
    finally:
        stop.set()
        appended = await app
    assert appended > 0
    await engine.prepare_cutover(mid, "U0BOB", "C1", 10)
    assert await engine.cutover(mid, "U0BOB"), (await store.get_migration(mid)).error
    done = [e.detail for e in (await engine.audit_log(mid, everything=True)).entries if e.action == "cutover.completed"]
    assert "in the window 0 table(s) counted, 2 proven by continuous verification" in done[0], done
    assert await store.step(mid, "incident") is None, (await store.step(mid, "incident")).detail
    count = "SELECT count(*), sum(hashtextextended(f::text, 0)) FROM feed f"
    assert tgt.psql(count, database="cvl") == src.psql(count, database="cvl")
    assert src.psql(LEFT_BEHIND, database="cvl") == "0" and tgt.psql(LEFT_BEHIND, database="cvl") == "0"
    await engine.close()


class Died(Exception):
    """pgmig dying at a failpoint, in this process: nothing after it runs."""


@pytest.mark.parametrize("killed", [False, True], ids=["", "killed-after-the-refresh"])
async def test_watermarks_the_target_applies_without_digests_are_found_and_the_walk_goes_on(
    tmp_path, store, pair, monkeypatch, caplog, killed
):
    """The target's subscription loses pgmig's watermark table (its apply worker then skips the table's rows:
    the lag says 0, no digest is ever taken). Ranges whose high watermark the subscriber confirmed without
    results are sent again at once, why is logged, and the subscription is refreshed: the walk goes on
    instead of waiting GIVE_UP_SECONDS with IN_FLIGHT ranges held. Killed right after the refresh, the next
    look finds the table subscribed, says so, and walks on; a cancel leaves nothing either way."""
    src, tgt = pair
    fresh(src, "cvlost")
    monkeypatch.setattr(continuous, "LOST_AFTER", 1.0, raising=False)
    if killed:
        died: list[str] = []

        def reached(point: str) -> None:
            if point.startswith("refreshed:") and not died:
                died.append(point)
                raise Died(point)

        monkeypatch.setattr(failpoints, "reached", reached)
    engine = factories.engine(store, src, tgt, tmp_path, verify_chunk_rows=400, progress_interval=0.1)
    mid = await factories.start_online(engine, ["cvlost"], overwrite=True)
    await wait_state(engine.store, mid, State.READY_FOR_CUTOVER)
    v = await wait_until(lambda: (x := engine.progress(mid).of("cvlost").verification) and x.schema and x, 60)
    name = watermarks.schema_name(Journal(store, mid), "cvlost")
    table = f'"{name}".{watermarks.WATERMARKS}'
    quiet = "SET session_replication_role = replica; "  # as a superuser, unseen by pgmig's schema capture
    src.psql(quiet + f'ALTER PUBLICATION "{name}" DROP TABLE {table}', database="cvlost")
    tgt.psql(f'ALTER SUBSCRIPTION "{name}" REFRESH PUBLICATION WITH (copy_data = false)', database="cvlost")
    src.psql(quiet + f'ALTER PUBLICATION "{name}" ADD TABLE {table}', database="cvlost")  # published, not subscribed
    caplog.set_level(logging.WARNING, logger="migration_core.verify.continuous")
    verified = v.rows_verified
    await wait_until(lambda: v.rows_verified > verified + 3000, 60, lambda: "the walk to go on: " + v.summary())
    said = [r.getMessage() for r in caplog.records if "without digests" in r.getMessage()]
    if killed:  # died before saying it: the next look found the table subscribed, in state ready
        assert died and len(said) == 1 and "is in state r in subscription" in said[0], (died, said)
    else:
        assert len(said) == 1 and "is not in subscription" in said[0] and "was refreshed" in said[0], said
    subscribed = f"SELECT count(*) FROM pg_subscription_rel WHERE srrelid = to_regclass('{table}')"
    assert tgt.psql(subscribed, database="cvlost") == "1"
    assert (await engine.cancel(mid, "U0ALICE")).state is State.CANCELLED
    await engine.close()
    assert src.psql(LEFT_BEHIND, database="cvlost") == "0"
    assert tgt.psql("SELECT count(*) FROM pg_database WHERE datname = 'cvlost'") == "0"  # pgmig's: dropped
    assert src.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgmig%'") == "0"
