"""Replication lag of a pgmig online migration, end to end, while pgbench writes to the source.

Lag is measured with a heartbeat: every 10 ms a row stamped `sent = clock_timestamp()` is inserted on
the source; on the target an ALWAYS trigger stamps `applied` when the apply worker writes it, so
`applied - sent` is the real delay a committed change waits before it is visible on the target (not
the keepalive-driven times of pg_stat_subscription). Runs at `-R RATE` and unthrottled, then measures
catch-up: from pgbench's end until a final heartbeat is applied. pgmig's monitoring job runs at its
default interval throughout, as it would in service.

    python -m bench.lag [--scale 10] [--rate 500] [--clients 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from bot.localpg import LocalCluster
from migration_core.engine.api import Engine, EngineConfig, MigrationRequest
from migration_core.pg.servers import ServerConfig
from migration_core.state.events import NoEvents
from migration_core.state.models import State
from migration_core.store import Store

PASSWORD_ENV = "PGMIG_LAG_BENCH_PASSWORD"
DB = "lagbench"
HEARTBEAT = "CREATE TABLE heartbeat (id bigserial PRIMARY KEY, sent timestamptz NOT NULL DEFAULT clock_timestamp())"
STAMP = """
ALTER TABLE heartbeat ADD COLUMN applied timestamptz;
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.applied := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER stamp BEFORE INSERT ON heartbeat FOR EACH ROW EXECUTE FUNCTION stamp();
ALTER TABLE heartbeat ENABLE ALWAYS TRIGGER stamp;
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--rate", type=int, default=500, help="pgbench -R for the throttled run")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=int, default=20)
    return p.parse_args(argv)


def pgbench(cluster: LocalCluster, *args: str) -> str:
    env = {**os.environ, **cluster.env, "PGPASSWORD": cluster.password}
    proc = subprocess.run(
        [str(cluster.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", *args, DB],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    return proc.stdout


async def heartbeats(dsn: str, stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            await conn.execute("INSERT INTO heartbeat DEFAULT VALUES")
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def lag_ms(target_dsn: str, after_id: int) -> list[float]:
    conn = await asyncpg.connect(target_dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM applied - sent) * 1000 AS ms FROM heartbeat WHERE id > $1 ORDER BY id", after_id
        )
        return [r["ms"] for r in rows]
    finally:
        await conn.close()


async def last_id(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT coalesce(max(id), 0) FROM heartbeat")
    finally:
        await conn.close()


async def wait_applied(source_dsn: str, target_dsn: str, timeout: float = 300) -> float:
    """Insert a heartbeat now; seconds until the target has it."""
    src = await asyncpg.connect(source_dsn)
    tgt = await asyncpg.connect(target_dsn)
    try:
        started = time.perf_counter()
        hid = await src.fetchval("INSERT INTO heartbeat DEFAULT VALUES RETURNING id")
        while not await tgt.fetchval("SELECT 1 FROM heartbeat WHERE id = $1", hid):
            if time.perf_counter() - started > timeout:
                raise TimeoutError("the target did not catch up")
            await asyncio.sleep(0.002)
        return time.perf_counter() - started
    finally:
        await src.close()
        await tgt.close()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"n": len(ordered), "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


async def run_phase(
    name: str, source: LocalCluster, target: LocalCluster, args: argparse.Namespace, throttle: list[str]
) -> dict:
    src_dsn, tgt_dsn = source.dsn(DB), target.dsn(DB)
    first = await last_id(src_dsn)
    stop = asyncio.Event()
    beats = asyncio.create_task(heartbeats(src_dsn, stop))
    out = await asyncio.to_thread(
        pgbench, source, "-c", str(args.clients), "-j", "2", "-T", str(args.seconds), "-n", *throttle
    )
    stop.set()
    await beats
    catch_up = await wait_applied(src_dsn, tgt_dsn)
    tps = next((line.split("=")[1].split()[0] for line in out.splitlines() if line.startswith("tps")), "?")
    return {"phase": name, "tps": tps, "catch_up_s": catch_up, **summary(await lag_ms(tgt_dsn, first))}


@asynccontextmanager
async def bench_pair(prefix: str) -> AsyncIterator[tuple[Path, LocalCluster, LocalCluster, Store]]:
    """A logical source with an empty pgbench database, a target and a state store; all removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    # synchronous_commit on (the default in production): with it off, WAL reaches the walsender only
    # when the WAL writer flushes (every 200 ms), which is what the lag would then measure.
    settings = {"max_wal_size": "4GB", "checkpoint_timeout": "30min", "synchronous_commit": "on"}
    source = LocalCluster(root / "source", settings={**settings, "wal_level": "logical"}).init().start()
    target = LocalCluster(root / "target", settings=settings).init().start()
    os.environ[PASSWORD_ENV] = source.password
    store = await Store.open(str(root / "state.sqlite"))
    try:
        source.psql(f"CREATE DATABASE {DB}")
        yield root, source, target, store
    finally:
        await store.close()
        source.destroy()
        target.destroy()
        shutil.rmtree(root, ignore_errors=True)


def servers(source: LocalCluster, target: LocalCluster) -> dict[str, ServerConfig]:
    return {
        name: ServerConfig(name, "127.0.0.1", c.port, password_env=PASSWORD_ENV, sslmode="disable")
        for name, c in (("source", source), ("target", target))
    }


async def main_async(args: argparse.Namespace) -> None:
    async with bench_pair("pgmig-lag-") as (root, source, target, store):
        pgbench(source, "-i", "-q", "-s", str(args.scale))
        source.psql(HEARTBEAT, database=DB)
        engine = Engine(store, servers(source, target), NoEvents(), EngineConfig(workdir=root / "work"))
        m = await engine.create(
            MigrationRequest("source", "target", "online", "bench", databases=[DB], replica_identity_full=True)
        )  # pgbench_history has no key
        started = time.perf_counter()
        assert not (await engine.preflight(m)).blocking
        await engine.start(m.id)
        state = (await store.get_migration(m.id)).state
        if state is not State.CATCHING_UP:
            raise RuntimeError(f"migration ended in {state.value}: {(await store.get_migration(m.id)).error}")
        print(f"online full load of pgbench scale {args.scale}: {time.perf_counter() - started:.2f} s")
        target.psql(STAMP, database=DB)
        results = [
            await run_phase(f"pgbench -R {args.rate} -c {args.clients}", source, target, args, ["-R", str(args.rate)]),
            await run_phase(f"pgbench unthrottled -c {args.clients}", source, target, args, []),
        ]
        print(
            f"\n{'load':<32} {'tps':>8} {'beats':>6} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'catch-up s':>11}"
        )
        for r in results:
            print(
                f"{r['phase']:<32} {r['tps']:>8} {r['n']:>6} {r['median']:>10.1f} {r['p95']:>8.1f} {r['max']:>8.1f} "
                f"{r['catch_up_s']:>11.3f}"
            )
        await engine.cancel(m.id, "bench")
        await engine.close()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(main_async(parse(argv)))


if __name__ == "__main__":
    main()
