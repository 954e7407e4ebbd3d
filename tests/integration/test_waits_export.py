"""One rule for waits and failures, on the offline paths (issue 22, items 1 and 10): an export or import that
waits says what for and who holds it, work someone else keeps blocked fails after `stall_seconds` naming
them, a failure always has words a person can act on (never `TimeoutError: ` or a traceback), the step
that failed is saved failed, and the progress numbers mean what they say."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import asyncpg
import pytest

from handlers.migration_messages import database_line
from migration_core.engine.api import Engine, MigrationRequest
from migration_core.observe import waits
from migration_core.observe.progress import MigrationProgress
from migration_core.preflight.checks import PreflightRequest, run_preflight
from migration_core.state.failures import failure_reason
from migration_core.state.models import Migration, State
from migration_core.transfer.limits import DataLimits
from tests.integration import factories
from tests.integration.clusters import config_toml, server, shell_env
from tests.integration.sample_data import RecordingEvents
from tests.integration.waiting import wait_state, wait_until

DATABASES = ("alike", "locked", "slow_rows")
QUERY_TIMEOUT = 1.0  # seconds: a control query waiting for the lock would fail at 1 s


@pytest.fixture(scope="module", autouse=True)
def leave_nothing(source_cluster, target_cluster):
    """The clusters are shared by the whole session: the databases made here go when the module ends."""
    yield
    for cluster in (source_cluster, target_cluster):
        for db in DATABASES:
            cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def fresh(cluster, db: str, sql: str = "") -> None:
    cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    cluster.psql(f'CREATE DATABASE "{db}"')
    if sql:
        cluster.psql(sql, database=db)


BIG = "CREATE TABLE big (id int PRIMARY KEY, body text); INSERT INTO big SELECT g, 'x' FROM generate_series(1, 500) g;"


class SeenEvents(RecordingEvents):
    """The channel as a person reads it: every database line of the live message, as rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    async def progress(self, migration: Migration, progress: MigrationProgress) -> None:
        await super().progress(migration, progress)
        self.lines += [database_line(p, time.time()) for p in progress.databases.values()]


async def migrate(engine: Engine, db: str, method: str, pause: bool = False) -> str:
    m = await engine.create(
        MigrationRequest(
            source="onprem",
            target="azure",
            mode="offline",
            requested_by="U0ALICE",
            databases=[db],
            method=method,
            overwrite=True,
            parallel=2,
            pause_after_export=pause,
        )
    )
    assert not (await engine.preflight(m)).blocking
    engine.start(m.id)
    return m.id


async def lock(cluster, db: str, table: str) -> asyncpg.Connection:
    """A DBA's session holding ACCESS EXCLUSIVE on a table, idle in its transaction."""
    holder = await asyncpg.connect(cluster.dsn(db), server_settings={"application_name": "dba-shell"})
    await holder.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return holder


async def test_a_locked_table_in_the_shell_is_a_named_wait_then_a_worded_failure(
    tmp_path, source_cluster, target_cluster
):
    """The on-call engineer's view: the dump method's live message names the lock and its holder, the
    failure after `stall_seconds` says what to do, no traceback and no bare `TimeoutError`, and `status`
    shows the export step failed, not running."""
    fresh(source_cluster, "locked", BIG)
    config = tmp_path / "pgmig.toml"
    toml = config_toml(
        {"src": source_cluster, "tgt": target_cluster},
        extra="[migration]\nprogress_interval_seconds = 0.5\nstall_seconds = 4\n",
    )
    config.write_text(toml.replace("connect_timeout = 5\n", "connect_timeout = 5\nquery_timeout = 2\n"))
    holder = await lock(source_cluster, "locked", "big")
    try:
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot.cli", "shell", "--user", "erin"],
            input="migrate src tgt --mode offline --method dump --db locked --overwrite\n"
            "wait 6\nstatus mig-1\nwait 8\nstatus mig-1\n",
            capture_output=True,
            text=True,
            env={**os.environ, **shell_env(tmp_path, config)},
            timeout=120,
        )
    finally:
        await holder.close()
    text = out.stdout + out.stderr
    assert out.returncode == 0, out.stderr
    waiting, failed = out.stdout.split("pgmig> status mig-1")[1:]
    line = "".join(x for x in waiting.splitlines() if x.startswith("`locked` exporting"))
    assert "⏳ exporting: waiting for Lock/relation held by pid" in line
    assert "app 'dba-shell'" in line and "idle in transaction" in line
    assert "⏳ `export:locked`" in waiting
    said = "locked: exporting stalled — blocked for more than 4 s, waiting for Lock/relation held by pid"
    assert said in failed and "end that session (or let it finish), then retry the migration" in failed
    assert failed.count("held by pid") == 2  # in the error and its step: two pg_dumps waiting alike, said once
    assert "❌ `export:locked`" in failed and "⏳ `export:locked`" not in failed
    assert "Traceback" not in text and "TimeoutError" not in text


async def test_a_restore_export_waits_beyond_the_query_timeout_then_goes_on(
    monkeypatch, tmp_path, store, source_cluster, target_cluster
):
    """The restore method's pg_dump waits for the lock with no time limit but the stall rule's, saying who
    holds it; once the holder commits, the export goes on and the migration completes."""
    monkeypatch.setattr(waits, "WATCH_SECONDS", 0.2)
    fresh(source_cluster, "locked", BIG)
    engine = factories.engine(
        store, source_cluster, target_cluster, tmp_path, events=SeenEvents(), query_timeout=QUERY_TIMEOUT
    )
    holder = await lock(source_cluster, "locked", "big")
    mid = await migrate(engine, "locked", "restore")
    await wait_until(
        lambda: "waiting for Lock/relation" in engine.progress(mid).of("locked").waiting,
        20,
        lambda: str(engine.progress(mid).of("locked")),
    )
    await asyncio.sleep(QUERY_TIMEOUT + 0.5)  # waiting beyond the query timeout is the point
    waiting = engine.progress(mid).of("locked").waiting
    await holder.execute("COMMIT")
    await holder.close()
    await wait_state(store, mid, State.COMPLETED, timeout=60)
    assert waiting.startswith("exporting: waiting for Lock/relation held by pid") and "app 'dba-shell'" in waiting
    assert any(
        "`locked` exporting the schema" in line and "⏳ exporting: waiting for Lock" in line
        for line in engine.events.lines
    )
    await engine.close()


async def test_a_stalled_export_fails_saved_failed_and_a_retry_counts_from_itself(
    monkeypatch, tmp_path, store, source_cluster, target_cluster
):
    """The restore method's pg_dump, kept blocked past `stall_seconds`, fails naming the holder; the export
    step is saved failed with that cause; after the holder is gone a retry completes, and its progress
    counts from the retry."""
    monkeypatch.setattr(waits, "WATCH_SECONDS", 0.2)
    fresh(source_cluster, "locked", BIG)
    engine = factories.engine(
        store,
        source_cluster,
        target_cluster,
        tmp_path,
        events=SeenEvents(),
        query_timeout=QUERY_TIMEOUT,
        limits=DataLimits(stall_seconds=1.5),
    )
    holder = await lock(source_cluster, "locked", "big")
    mid = await migrate(engine, "locked", "restore")
    await wait_state(store, mid, State.FAILED, timeout=30, fail_fast=False)
    await holder.close()
    m = await store.get_migration(mid)
    assert m.error.startswith("exporting: locked: exporting stalled — blocked for more than 1.5 s, waiting for Lock")
    assert "app 'dba-shell'" in m.error and "TimeoutError" not in m.error
    step = await store.step(mid, "export:locked")
    assert step.state == "failed" and "dba-shell" in step.detail
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgmig'"
    # pg_dump was terminated: its session goes, and nothing of pgmig's waits on
    await wait_until(lambda: source_cluster.psql(sessions) == "0", 10, "pgmig's sessions stayed")
    await engine.wait(mid)  # the failed run has ended: a retry would be told to wait for it
    retried = time.time()
    assert await engine.retry(mid, "U0ALICE")
    await wait_state(store, mid, State.COMPLETED, timeout=60)
    assert retried <= engine.progress(mid).retried_at <= time.time()
    assert (await store.step(mid, "export:locked")).state == "done"
    await engine.close()


async def test_a_control_query_that_gets_no_answer_names_the_server_and_the_likely_lock(source_cluster):
    """asyncpg's `TimeoutError()` says nothing: the failure names the server, the limit and what to look for."""
    fresh(source_cluster, "locked", BIG)
    holder = await lock(source_cluster, "locked", "big")
    onprem = server("onprem", source_cluster, query_timeout=0.5)
    try:
        async with onprem.connection("locked") as conn:
            with pytest.raises(TimeoutError) as timed_out:
                await conn.fetchval("SELECT pg_relation_size('big')")
    finally:
        await holder.close()
    said = failure_reason(timed_out.value, "mig-9", {"source": onprem})
    assert said.startswith("no answer from onprem (the source) within 0.5 s, database locked: ")
    assert "a lock another session holds" in said and "pg_blocking_pids" in said


SLOW = """
    CREATE FUNCTION slow_on_target(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
    BEGIN IF inet_server_port() = {port} THEN PERFORM pg_sleep(0.01); END IF; RETURN x; END $$;
    CREATE TABLE slow (id int PRIMARY KEY, v int GENERATED ALWAYS AS (slow_on_target(id)) STORED);
    INSERT INTO slow SELECT g FROM generate_series(1, 400) g;
"""


async def test_rows_count_the_table_in_progress_as_the_bytes_do(
    monkeypatch, tmp_path, store, source_cluster, target_cluster
):
    """ "0/1 tables · 0 rows · 40 kB of 40 kB" mid-copy read as if nothing moved: rows now count the COPY
    under way too (the target's pg_stat_progress_copy), so they move with the bytes."""
    monkeypatch.setattr(waits, "WATCH_SECONDS", 0.2)
    fresh(source_cluster, "slow_rows", SLOW.format(port=target_cluster.port))
    target_cluster.psql('DROP DATABASE IF EXISTS "slow_rows" WITH (FORCE)')
    engine = factories.engine(
        store, source_cluster, target_cluster, tmp_path, events=SeenEvents(), query_timeout=QUERY_TIMEOUT
    )
    mid = await migrate(engine, "slow_rows", "restore")
    await wait_state(store, mid, State.COMPLETED, timeout=60)
    copying = [line for line in engine.events.lines if "`slow_rows` copying data" in line and "0/1 table" in line]
    assert any(" rows · " in line for line in copying), copying
    await engine.close()


async def test_check_and_the_live_message_name_their_different_sizes(source_cluster, target_cluster):
    """`check` said 11.7 MB where the live message said 2.3 MB: one is the database on disk, the other the
    tables' data the copy moves. `check` now says which it measures."""
    fresh(source_cluster, "slow_rows", BIG)
    req = PreflightRequest(server("src", source_cluster), server("tgt", target_cluster), databases=["slow_rows"])
    [size] = [f for f in (await run_preflight(req)).findings if f.title == "size" and f.scope == "db slow_rows"]
    assert re.fullmatch(r"database [\d.]+ [kM]B on disk \(tables, indexes, TOAST\), 1 table\(s\)", size.detail)


async def test_sessions_waiting_alike_are_said_once_however_long_the_look_takes(monkeypatch, source_cluster):
    """Two sessions waiting behind one DBA's lock read alike, even when looking at them takes over a second
    (a loaded server): the holder's transaction age is read at one moment for both. Before, the second look
    read it a second later, and the stall's error named the same holder twice (seen in a full run)."""
    fresh(source_cluster, "alike", BIG)
    holder = await lock(source_cluster, "alike", "big")
    waiting = [await asyncpg.connect(source_cluster.dsn("alike")) for _ in range(2)]
    reads = [asyncio.create_task(conn.fetchval("SELECT count(*) FROM big")) for conn in waiting]
    look = waits.look_at

    async def slowly(conn: asyncpg.Connection, pid: int) -> waits.Wait:
        await asyncio.sleep(1.1)  # a second boundary between the two looks, every time
        return await look(conn, pid)

    monkeypatch.setattr(waits, "look_at", slowly)
    monkeypatch.setattr(waits, "WATCH_SECONDS", 0.1)
    pids = [conn.get_server_pid() for conn in waiting]

    async def finder(conn: asyncpg.Connection) -> list[int]:
        return pids

    progress = MigrationProgress().of("alike")
    try:
        async with waits.watched(server("onprem", source_cluster), "alike", finder, progress, "reading"):
            said = await wait_until(lambda: progress.waiting, 20, "the waits to be said")
    finally:
        await holder.close()
        await asyncio.gather(*reads, return_exceptions=True)
        for conn in waiting:
            await conn.close()
    assert said.count("held by pid") == 1, said
