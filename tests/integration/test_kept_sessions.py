"""The sessions a streaming migration's looks keep (pg/kept.py), on real clusters: a look asks on a session
kept from the look before instead of opening about ten new ones, one a DBA ends is replaced without a failed
look, and nothing of them is left once the migration is cancelled, nor kept for a migration not watched here."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.localpg import LocalCluster
from migration_core.changes import watermarks
from migration_core.pg import kept
from migration_core.state.models import State
from tests.integration import factories
from tests.integration.waiting import wait_state, wait_until

LOOKS = (  # pgmig's own client sessions in the database: not its walsender, not the apply worker
    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'kept' AND application_name = 'pgmig' "
    "AND backend_type = 'client backend'"
)
END_LOOKS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'kept' "
    "AND application_name = 'pgmig' AND backend_type = 'client backend' AND state = 'idle'"
)


def sessions_started(cluster: LocalCluster) -> int:
    """Sessions ever established in the database (PostgreSQL 14+ counts them)."""
    return int(cluster.psql("SELECT sessions FROM pg_stat_database WHERE datname = 'kept'"))


@pytest.fixture
def kept_db(source_cluster, target_cluster):
    for c in (source_cluster, target_cluster):
        c.psql('DROP DATABASE IF EXISTS "kept" WITH (FORCE)')
    source_cluster.psql("CREATE DATABASE kept")
    source_cluster.psql(
        "CREATE TABLE item (id int PRIMARY KEY, name text); "
        "INSERT INTO item SELECT g, 'i' || g FROM generate_series(1, 500) g",
        database="kept",
    )
    yield
    for c in (source_cluster, target_cluster):
        c.psql('DROP DATABASE IF EXISTS "kept" WITH (FORCE)')


async def test_looks_ask_on_kept_sessions_replace_one_a_dba_ended_and_leave_none(
    tmp_path, store, source_cluster, target_cluster, kept_db, caplog
):
    engine = factories.engine(store, source_cluster, target_cluster, tmp_path, progress_interval=0.5)
    try:
        mid = await factories.start_online(engine, ["kept"])
        await wait_state(store, mid, State.READY_FOR_CUTOVER)
        events = engine.events

        async def looks_after(n: int) -> None:  # n more looks ended (each one tells the live message)
            until = events.ticks + n  # type: ignore[attr-defined]
            await wait_until(lambda: events.ticks >= until, 30, f"{n} looks")  # type: ignore[attr-defined]

        await looks_after(2)
        both = {"source": source_cluster, "target": target_cluster}
        before = {side: sessions_started(c) for side, c in both.items()}
        await looks_after(6)
        opened = {side: sessions_started(c) - before[side] for side, c in both.items()}
        # each look opened about ten sessions per database before: six looks, some sixty
        assert all(n <= 2 for n in opened.values()), opened

        caplog.set_level(logging.WARNING, logger="migration_core")
        await looks_after(1)  # between two looks: every kept session idle (one in use would fail its look)
        ended = int(source_cluster.psql(END_LOOKS, database="kept")) + int(target_cluster.psql(END_LOOKS, "kept"))
        assert ended >= 2, "no kept session to end: the test proves nothing"
        await looks_after(5)
        assert not [r for r in caplog.records if "watching" in r.getMessage()], caplog.text
        assert not [t for _, t in engine.events.alerts if "unreachable" in t]  # type: ignore[attr-defined]
        assert (await store.get_migration(mid)).state is State.READY_FOR_CUTOVER

        m = await store.get_migration(mid)
        assert engine.context(m).sessions is not None  # watched here: its looks keep sessions
        outcome = await engine.cancel(mid, "U0ALICE")
        assert outcome.state is State.CANCELLED
        assert source_cluster.psql(LOOKS, database="kept") == "0"
        # no longer watched: a question about it (a listing of its schema changes) keeps nothing
        m = await store.get_migration(mid)
        assert engine.context(m).sessions is None
        await engine.schema_changes(mid)
        assert source_cluster.psql(LOOKS, database="kept") == "0"
    finally:
        for m in await store.list_migrations():
            if not m.state.finished:  # a failed assertion above: nothing of it stays on the clusters
                await engine.cancel(m.id, "U0ALICE")
        await engine.close()


async def test_a_session_ended_while_a_look_has_it_is_replaced_by_looking_again(
    tmp_path, store, source_cluster, target_cluster, kept_db, caplog, monkeypatch
):
    """A DBA ends a kept session just after the look borrowed it (its ping answered): the look's next
    statement finds it gone — asyncpg may even call that an internal error (issue #1069) — and the look runs
    again at once on new sessions. No failed look is logged, no unreachable alert, no "a bug"."""
    engine = factories.engine(store, source_cluster, target_cluster, tmp_path, progress_interval=0.5)
    try:
        mid = await factories.start_online(engine, ["kept"])
        await wait_state(store, mid, State.READY_FOR_CUTOVER)
        caplog.set_level(logging.DEBUG, logger="migration_core")
        ended: list[int] = []
        events, later = engine.events, [0]
        ping = kept._answers

        async def answers_then_ends(conn, within):
            answered = await ping(conn, within)
            if answered and len(ended) < 3 and events.ticks >= later[0]:  # a few looks, one session ended in each
                later[0] = events.ticks + 2
                ended.append(conn.get_server_pid())
                for cluster in (source_cluster, target_cluster):  # the one it is on ends it
                    await asyncio.to_thread(cluster.psql, f"SELECT pg_terminate_backend({ended[-1]})")
                await asyncio.sleep(0.2)  # the server's goodbye reaches pgmig while the look has the session
            return answered

        monkeypatch.setattr(kept, "_answers", answers_then_ends)
        ticks = engine.events.ticks  # type: ignore[attr-defined]
        await wait_until(lambda: len(ended) >= 3 and engine.events.ticks > ticks + 4, 60, "looks on ended sessions")  # type: ignore[attr-defined]
        failed = [r.getMessage() for r in caplog.records if "watching" in r.getMessage()]
        assert not failed, failed
        again = [r for r in caplog.records if "a session was ended under the look" in r.getMessage()]
        assert again, "no look found its session ended: the test proves nothing"
        assert not [t for _, t in engine.events.alerts if "unreachable" in t]  # type: ignore[attr-defined]
        assert (await store.get_migration(mid)).state is State.READY_FOR_CUTOVER
    finally:
        await engine.cancel(mid, "U0ALICE")
        await engine.close()


async def test_a_session_of_its_own_ended_while_a_look_has_it_is_looked_at_again(
    tmp_path, store, source_cluster, target_cluster, kept_db, caplog, monkeypatch
):
    """Not only kept sessions: the first look makes pgmig's verification objects on a session of its own, and
    a DBA ends that one while the look has it (seen in a full run: "connection is closed … a bug"). The look
    runs again at once and makes them; no failed look is logged."""
    make, ended = watermarks._make_source, []

    async def ended_first(conn, schema, publication):
        if not ended:
            ended.append(conn.get_server_pid())
            await asyncio.to_thread(source_cluster.psql, f"SELECT pg_terminate_backend({ended[0]})")
            await asyncio.sleep(0.2)  # the server's goodbye reaches pgmig while the look has the session
        return await make(conn, schema, publication)

    monkeypatch.setattr(watermarks, "_make_source", ended_first)
    caplog.set_level(logging.DEBUG, logger="migration_core")
    engine = factories.engine(store, source_cluster, target_cluster, tmp_path, progress_interval=0.5)
    try:
        mid = await factories.start_online(engine, ["kept"])
        await wait_state(store, mid, State.READY_FOR_CUTOVER)
        await wait_until(lambda: "verified 100 %" in engine.progress(mid).of("kept").verified, 60, "verification")
        assert ended, "the session was never ended: the test proves nothing"
        failed = [r.getMessage() for r in caplog.records if "watching" in r.getMessage()]
        assert not failed, failed
    finally:
        await engine.cancel(mid, "U0ALICE")
        await engine.close()
