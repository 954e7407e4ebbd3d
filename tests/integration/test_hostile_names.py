"""Names are data: databases named like connection strings, options, paths, with quotes, spaces,
newlines, unicode and 63 bytes migrate offline and online, nothing connects anywhere it should not,
and every file stays in its migration's folder, readable by pgmig's user only, gone once done."""

from __future__ import annotations

import asyncio
import os
import stat

import asyncpg
import pytest

from bot.localpg import LocalCluster, free_port
from migration_core.engine.api import Engine, MigrationRequest
from migration_core.state.models import Migration, State
from tests.integration import factories
from tests.integration.clusters import PASSWORD, TARGET
from tests.integration.sample_data import pg16_bindir
from tests.integration.waiting import wait_until

TRAP_PORT = free_port()
NAMES = [
    f"dbname=x host=127.0.0.2 port={TRAP_PORT}",
    "-h",
    "my db",
    "a'b\\c",
    "../x",
    "Δ",
    "line\nbreak",
    "é" * 31 + "x",
]  # the last is 63 bytes, PostgreSQL's longest
assert len(NAMES[-1].encode()) == 63


class Trap:
    """A listener on 127.0.0.2 that records whatever reaches it (a leaked password would)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def __aenter__(self) -> "Trap":
        async def got(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.received.append(await reader.read(4096) or b"(connected)")
            writer.close()

        self.server = await asyncio.start_server(got, "127.0.0.2", TRAP_PORT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def run_sql(cluster: LocalCluster, db: str, sql: str) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=cluster.port,
        user="postgres",
        password=PASSWORD,
        database=db,
        server_settings={"default_transaction_read_only": "off"},
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetchval(cluster: LocalCluster, db: str, sql: str):
    conn = await asyncpg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=PASSWORD, database=db)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture(scope="module")
def clusters(cluster_root):
    src = LocalCluster(
        cluster_root / "names-src",
        password=PASSWORD,
        settings={"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20"},
    )
    src.init().start()
    tgt = (
        LocalCluster(
            cluster_root / "names-tgt",
            password=PASSWORD,
            bindir=pg16_bindir(),
            settings={"max_logical_replication_workers": "12", "max_worker_processes": "20", **TARGET},
        )
        .init()
        .start()
    )

    async def databases() -> None:  # asyncpg, not psql: psql would read the first name as a connection string
        for i, name in enumerate(NAMES):
            await run_sql(src, "postgres", f"CREATE DATABASE {quoted(name)}")
            await run_sql(
                src,
                name,
                f"CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SEQUENCE s START "
                f"{100 + i}; INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {10 + i}) g",
            )

    asyncio.run(databases())
    yield src, tgt
    src.destroy()
    tgt.destroy()


async def reset_targets(tgt: LocalCluster) -> None:
    for name in NAMES:
        await run_sql(tgt, "postgres", f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")


def files_under(root) -> list[tuple[str, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [(os.path.join(dirpath, n), os.stat(os.path.join(dirpath, n)).st_mode) for n in dirnames + filenames]
    return out


@pytest.fixture
async def engine(tmp_path, store, clusters):
    eng = factories.engine(store, *clusters, tmp_path)
    yield eng
    await eng.close()


async def migrate(engine: Engine, mode: str, **kw) -> str:
    m = await engine.create(
        MigrationRequest(
            source="onprem", target="azure", mode=mode, requested_by="U0ALICE", databases=list(NAMES), parallel=2, **kw
        )
    )
    report = await engine.preflight(m)
    assert not report.blocking, [f.detail for f in report.blocking]
    engine.start(m.id)
    return m.id


async def assert_copied(src: LocalCluster, tgt: LocalCluster) -> None:
    for i, name in enumerate(NAMES):
        assert await fetchval(tgt, name, "SELECT count(*) FROM t") == 10 + i, name
        assert await fetchval(tgt, name, "SELECT start_value FROM pg_sequences WHERE sequencename = 's'") == 100 + i


@pytest.mark.parametrize("method", ["restore", "dump"])
async def test_offline_migrates_every_hostile_name_and_keeps_files_private(tmp_path, engine, clusters, method):
    src, tgt = clusters
    await reset_targets(tgt)
    async with Trap() as trap:
        mid = await migrate(engine, "offline", method=method, pause_after_export=method == "dump")
        await engine.wait(mid)
        if method == "dump":  # paused: the files are there to be reviewed, by pgmig's user only
            assert (await engine.store.get_migration(mid)).state is State.PAUSED
            found = files_under(tmp_path / "work")
            assert len(found) >= 3 * len(NAMES)
            base = str(tmp_path / "work" / mid) + os.sep
            for path, mode in found:
                assert os.path.realpath(path).startswith(base) or path == base.rstrip(os.sep), path
                assert stat.S_IMODE(mode) == (0o700 if stat.S_ISDIR(mode) else 0o600), (path, oct(mode))
            assert stat.S_IMODE(os.stat(tmp_path / "work").st_mode) == 0o700
            assert await engine.resume(mid)
            await engine.wait(mid)
        m = await engine.store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
    assert trap.received == []
    await assert_copied(src, tgt)
    assert not (tmp_path / "work" / mid).exists()  # removed once completed ([migration] keep_exports = false)


async def test_online_migrates_and_cuts_over_every_hostile_name(tmp_path, engine, clusters):
    src, tgt = clusters
    await reset_targets(tgt)
    async with Trap() as trap:
        mid = await migrate(engine, "online")

        async def settled() -> Migration | None:
            m = await engine.store.get_migration(mid)
            return m if m.state is State.READY_FOR_CUTOVER or m.state.finished else None

        m = await wait_until(settled, 90, "neither ready for cutover nor finished")
        assert m.state is State.READY_FOR_CUTOVER, m.error or {
            db: p.phase for db, p in engine.progress(mid).databases.items() if p.phase != "streaming"
        }
        await run_sql(src, "-h", "INSERT INTO t VALUES (1000, 'streamed')")
        assert await engine.cutover(mid, "U0BOB")
        m = await engine.store.get_migration(mid)
        assert m.state is State.COMPLETED, m.error
    assert trap.received == []
    assert await fetchval(tgt, "-h", "SELECT v FROM t WHERE id = 1000") == "streamed"
    for name in NAMES:
        await run_sql(
            src,
            name,
            f"ALTER DATABASE {quoted(name)} RESET default_transaction_read_only; "
            f"GRANT CONNECT ON DATABASE {quoted(name)} TO PUBLIC",
        )
    await run_sql(src, "-h", "DELETE FROM t WHERE id = 1000")
    assert not await fetchval(src, "postgres", "SELECT count(*) FROM pg_replication_slots")
    assert not await fetchval(src, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgmig%'")
    assert not (tmp_path / "work" / mid).exists()
