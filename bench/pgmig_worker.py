"""Runs pgmig's offline migration, or an online one's initial copy (schema, slot, full load, subscription,
then teardown), once, in its own process, for the benchmark (see methods.pgmig).

Exits 3 when pgmig's offline API cannot be imported (it is still being written), so the benchmark can
report "unavailable" rather than "failed".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

UNAVAILABLE_EXIT = 3
ELAPSED_FILE = "elapsed"  # in --workdir: seconds from the command to the state, for migrate-* (see methods.pgmig)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--password-env", required=True)
    parser.add_argument(
        "--mode",
        choices=("offline", "online", "migrate-offline", "migrate-online"),
        default="offline",
        help="offline/online: the copy path alone; migrate-*: a whole migration through the engine, as "
        "`/pgmig migrate` runs it, to completed (verified) or ready_for_cutover",
    )
    parser.add_argument(
        "--split-mb", type=int, default=1024, help="DataLimits.split_table_bytes in MiB (tables larger are split)"
    )
    return parser.parse_args()


async def online_copy(source, target, database: str, jobs: int, workdir: Path, limits) -> None:
    """The online full load as a migration runs it (journal in memory); replication dropped afterwards."""
    from migration_core.flows.steps.offline import script_context
    from migration_core.flows.steps.online import OnlineDatabase
    from migration_core.state.models import MigrationOptions, Mode

    options = MigrationOptions(parallel=jobs, overwrite=True)
    async with script_context(source, target, [database], Mode.ONLINE, options, workdir, limits=limits) as ctx:
        job = OnlineDatabase(ctx, database)
        await job.schema()
        try:
            await job.full_load()
        finally:
            await job.teardown()


async def migrate(source, target, database: str, jobs: int, workdir: Path, limits, mode: str) -> None:
    """What a user waits for: `/pgmig migrate` to `completed` (offline, verified) or `ready_for_cutover`
    (online), through the engine with an in-memory state store, timed into ELAPSED_FILE; an online
    migration is then cancelled, which removes its replication."""
    from migration_core.engine.api import Engine, EngineConfig, MigrationRequest
    from migration_core.state.events import NoEvents
    from migration_core.state.models import State
    from migration_core.store import Store

    store = await Store.open(":memory:")
    config = EngineConfig(workdir=workdir, default_parallel=jobs, limits=limits)
    engine = Engine(store, {"source": source, "target": target}, NoEvents(), config)
    online = mode == "migrate-online"
    try:
        started = time.perf_counter()  # the slash command arrives
        m = await engine.create(
            MigrationRequest(
                source="source",
                target="target",
                mode="online" if online else "offline",
                requested_by="UBENCH",
                databases=[database],
                parallel=jobs,
                overwrite=True,
                replica_identity_full=online,
            )
        )
        report = await engine.preflight(m)
        if report.blocking:
            raise SystemExit("pre-flight refused: " + "; ".join(f.detail for f in report.blocking))
        engine.start(m.id)
        goal = State.READY_FOR_CUTOVER if online else State.COMPLETED
        while (state := (await store.get_migration(m.id)).state) is not goal:
            if state.finished:
                raise SystemExit(f"{m.id} {state.value}: {(await store.get_migration(m.id)).error}")
            await asyncio.sleep(0.01)
        (workdir / ELAPSED_FILE).write_text(f"{time.perf_counter() - started:.3f}")
        if online:
            await engine.cancel(m.id, "UBENCH")
    finally:
        await engine.close()
        await store.close()


def main() -> None:
    args = parse()
    try:
        from migration_core.flows.steps.offline import copy_databases
        from migration_core.pg.servers import ServerConfig
        from migration_core.state.models import MigrationOptions
        from migration_core.transfer.limits import DataLimits
    except Exception as exc:  # noqa: BLE001 - half-written code may fail in any way; all mean "not available"
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(UNAVAILABLE_EXIT)

    def server(name: str, port: int) -> ServerConfig:
        return ServerConfig(
            name=name, host="127.0.0.1", port=port, user="postgres", password_env=args.password_env, sslmode="disable"
        )

    source, target = server("source", args.source_port), server("target", args.target_port)
    limits = DataLimits(split_table_bytes=args.split_mb << 20)
    if args.mode.startswith("migrate-"):
        asyncio.run(migrate(source, target, args.database, args.jobs, args.workdir, limits, args.mode))
        return
    if args.mode == "online":
        asyncio.run(online_copy(source, target, args.database, args.jobs, args.workdir, limits))
        return
    asyncio.run(
        copy_databases(
            source,
            target,
            databases=[args.database],
            options=MigrationOptions(parallel=args.jobs, overwrite=True),
            workdir=args.workdir,
            limits=limits,
        )
    )


if __name__ == "__main__":
    main()
