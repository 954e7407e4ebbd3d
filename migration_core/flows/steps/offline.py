"""Offline migration of one database, by either of Microsoft's two methods.

- `dump` (export/import): `pg_dump -s` → db_schema.sql and `pg_dump -a` → db_data.sql, both taken under
  one snapshot, imported with psql. Plain SQL the team may edit while the migration is paused.
- `restore` (backup/restore, default): a custom-format schema archive from pg_dump; pg_restore creates
  the pre-data schema, pgmig streams the table data with parallel COPY (copy.py), and pg_restore -j N
  builds indexes, constraints and triggers after the data.

Each method has two halves, `export` and `import_`, so the engine can persist and pause between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from migration_core.changes import databases as target_db
from migration_core.changes import keys, matviews, sequences
from migration_core.changes.roles import copy_roles
from migration_core.changes.statistics import analyze
from migration_core.engine.config import EngineConfig
from migration_core.engine.context import MigrationContext
from migration_core.observe import server_progress, waits
from migration_core.pg import workdir as workdir_
from migration_core.pg.pgbin import MissingBinaries, client_bindir
from migration_core.pg.servers import ServerConfig, server_major
from migration_core.pg.sql import USER_SCHEMA_FILTER
from migration_core.pg.tools import NO_PUBSUB, Tool, ToolError, connection_env, conninfo, with_options
from migration_core.state.errors import MigrationError
from migration_core.state.events import NoEvents
from migration_core.state.ledger import Alerts, Ledger
from migration_core.state.models import Method, Migration, MigrationOptions, Mode, State
from migration_core.store import Store
from migration_core.transfer import copy, large_objects
from migration_core.transfer.limits import DEFAULT_LIMITS, DataLimits
from migration_core.verify.early import EarlyChecks
from migration_core.verify.tables import Known

TABLE_COUNT = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND " + USER_SCHEMA_FILTER
)


async def choose_bindir(source: ServerConfig, target: ServerConfig, configured: str | None) -> Path:
    """Client programs at least as new as the newer server; a clear refusal otherwise."""
    newest = max(await asyncio.gather(server_major(source), server_major(target)))
    try:
        return await asyncio.to_thread(client_bindir, newest, configured)
    except MissingBinaries as exc:
        raise MigrationError(str(exc)) from None


class OfflineDatabase:
    """One database's export and import for the migration `ctx` holds (its roles plan, client programs, progress)."""

    def __init__(self, ctx: MigrationContext, database: str, verify_early: bool = False) -> None:
        self.ctx, self.database = ctx, database
        self.source, self.target = ctx.source, ctx.target
        self.limits = ctx.config.limits
        self.verify_early = verify_early  # a verify step follows: compare each table as soon as it is copied
        self.checked: Known = {}  # tables compared during the import (restore method), for the verify step
        self.journal = ctx.journal
        self.options = ctx.options
        self.dir = workdir_.database_dir(ctx.workdir, database)
        self.bindir = ctx.bindir
        self.progress = ctx.progress.of(database)

    def tool(self, program: str) -> Tool:
        return Tool(self.bindir, program)

    @property
    def schema_file(self) -> Path:
        return self.dir / ("db_schema.sql" if self.options.method is Method.DUMP else "schema.dump")

    @property
    def data_file(self) -> Path:
        return self.dir / "db_data.sql"

    def artifacts(self) -> list[Path]:
        return [self.schema_file, self.data_file] if self.options.method is Method.DUMP else [self.schema_file]

    def _count_tables(self, pattern: str):
        regex = re.compile(pattern)

        def on_line(line: str) -> None:
            if regex.search(line):
                self.progress.tables_done += 1

        return on_line

    @property
    def exported(self) -> str:
        """What the export made, in the live message's words: the restore method's holds no row (the rows move
        at import), so it must not read as a finished export of the data."""
        return "schema exported" if self.options.method is Method.RESTORE else "exported"

    def watched(self, server: ServerConfig, what: str) -> contextlib.AbstractAsyncContextManager[None]:
        """A client program's work on `server`, under the one rule: what its sessions wait for is shown, and
        work other sessions keep blocked for `stall_seconds` fails, naming them."""
        return waits.watched(
            server, self.database, waits.pgmig_sessions, self.progress, what, stall=self.limits.stall_seconds
        )

    async def export(self) -> list[Path]:
        roles = self.ctx.roles
        workdir_.private_dir(self.dir)
        restore = self.options.method is Method.RESTORE
        self.progress.begin("exporting the schema" if restore else "exporting")
        try:
            async with self.source.connection(self.database) as src, self.watched(self.source, "exporting"):
                # Counted from the catalog alone: a table's size would wait for a lock on it (a control query).
                self.progress.tables_total = 0 if restore else await src.fetchval(TABLE_COUNT)
                env = connection_env(self.source, self.database)
                pg_dump = self.tool("pg_dump")
                if restore:
                    await pg_dump.run(["-Fc", "-s", *NO_PUBSUB, *roles.restore_flags, "-f", str(self.schema_file)], env)
                else:
                    async with src.transaction(isolation="repeatable_read", readonly=True):
                        snapshot = await src.fetchval("SELECT pg_export_snapshot()")
                        common = [f"--snapshot={snapshot}", *NO_PUBSUB, *roles.restore_flags]
                        await asyncio.gather(
                            pg_dump.run(["-s", *common, "-f", str(self.schema_file)], env),
                            pg_dump.run(
                                ["-a", "-v", *common, "-f", str(self.data_file)],
                                env,
                                on_line=self._count_tables(r"dumping contents of table"),
                            ),
                        )
        except ToolError as exc:
            raise MigrationError(f"export of {self.database} failed: {exc.summary}") from None
        self.progress.finish(self.exported)
        return self.artifacts()

    async def import_(self) -> str:
        for f in self.artifacts():
            if not f.exists():
                raise MigrationError(f"export file {f} is missing", "retry the migration to export again")
        self.progress.begin("preparing target")
        prepared = await target_db.prepare_target(
            self.source, self.target, self.database, self.journal, overwrite=self.options.overwrite
        )
        try:
            async with (
                self.source.connection(self.database) as src,
                self.target.connection(self.database, data=True) as tgt,
            ):
                if self.options.method is Method.DUMP:
                    await self._import_sql(tgt)
                else:
                    await self._import_archive()
                self.progress.phase = "finishing"
                # db_data.sql carries the snapshot's sequence values and large objects (and the team's edits).
                restore = self.options.method is Method.RESTORE
                seq = await sequences.sync(src, tgt) if restore else len(await sequences.values(tgt))
                los = (
                    await large_objects.copy(
                        self.source,
                        self.target,
                        self.database,
                        keep_owners=self.ctx.roles.keep_owners,
                        parallel=self.options.parallel,
                        progress=self.progress,
                        limits=self.limits,
                    )
                    if restore
                    else 0
                )
                self.progress.phase = "refreshing materialized views"
                views = await matviews.refresh(src, tgt)
                self.progress.phase = "analyzing"  # fresh statistics: the applications' first queries plan well
                async with server_progress.watched(
                    self.target, self.database, self.progress, "analyzing", self.limits.stall_seconds
                ):
                    await analyze(self.target, self.database, self.options.parallel)
        except ToolError as exc:
            raise MigrationError(f"import of {self.database} failed: {exc.summary}") from None
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"import of {self.database} failed: {exc}") from None
        self.progress.finish("imported")
        extra = f", {los} large object(s)" if los else ""
        return (
            f"{prepared}; {self.progress.tables_total} tables, {seq} sequences, {len(views)} materialized views{extra}"
        )

    async def _import_sql(self, tgt: asyncpg.Connection) -> None:
        env = connection_env(self.target, self.database)
        psql = self.tool("psql")
        self.progress.phase = "creating schema"
        async with self.watched(self.target, "creating schema"):
            await psql.run(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(self.schema_file)], env)
        # Load rows with the schema's triggers and foreign keys quiet, as pg_restore --disable-triggers would.
        if await tgt.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") or await tgt.fetchval(
            "SELECT has_parameter_privilege('session_replication_role', 'SET')"
        ):
            env = with_options(env, {"session_replication_role": "replica"})
        self.progress.phase = "loading data"
        self.progress.tables_done = 0
        async with self.watched(self.target, "loading data"):
            await psql.run(
                ["-X", "-v", "ON_ERROR_STOP=1", "-f", str(self.data_file), "-o", "/dev/null", "-L", "/dev/null"], env
            )

    async def _import_archive(self) -> None:
        env = connection_env(self.target, self.database)
        pg_restore = self.tool("pg_restore")
        flags = self.ctx.roles.restore_flags
        base = ["--exit-on-error", *NO_PUBSUB, *flags, f"--dbname={conninfo(dbname=self.database)}"]
        self.progress.phase = "creating schema"
        async with self.watched(self.target, "creating schema"):
            await pg_restore.run([*base, "--section=pre-data", str(self.schema_file)], env)
        self.progress.phase = "copying data"
        async with contextlib.AsyncExitStack() as stack:
            early = None
            if self.verify_early:
                early = await stack.enter_async_context(
                    EarlyChecks(self.source, self.target, self.database, self.options.parallel, self.limits)
                )
            await copy.copy_tables(
                self.source,
                self.target,
                self.database,
                self.options.parallel,
                self.progress,
                limits=self.limits,
                on_copied=early.copied if early else None,
            )
            self.progress.phase = "building indexes"
            async with server_progress.watched(
                self.target, self.database, self.progress, "building indexes", self.limits.stall_seconds
            ):
                await self._post_data(pg_restore, base, env)
            if early:  # the copies' checks still running are theirs, not the index builds' (the plan times each)
                self.progress.phase = "checking copies"
                self.checked = await early.known()
            else:
                self.checked = {}

    async def _post_data(self, pg_restore: Tool, base: list[str], env: dict[str, str]) -> None:
        """Keys first, as index builds the early checks' reads pass (keys.py); then the rest of post-data."""
        listing = self.dir / "post-data.list"
        await pg_restore.run(["-l", "-f", str(listing), str(self.schema_file)], env)
        entries = listing.read_text()
        async with self.source.connection(self.database) as src:
            built = await keys.plain_keys(src, entries)
        await keys.build(self.target, self.database, built, self.options.parallel)
        listing.write_text(keys.leave_out(entries, built))
        await pg_restore.run(
            [*base, "--section=post-data", "-L", str(listing), "-j", str(self.options.parallel), str(self.schema_file)],
            env,
        )


@contextlib.asynccontextmanager
async def script_context(
    source: ServerConfig,
    target: ServerConfig,
    databases: list[str],
    mode: Mode,
    options: MigrationOptions,
    workdir: Path,
    pg_bindir: str | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
) -> AsyncIterator[MigrationContext]:
    """A context for work with no migration around it (benchmarks, scripts): its state (the journal too) lives
    in memory, so nothing is undone afterwards; client programs chosen and roles copied, as a pipeline does.
    Files go under `workdir`/script-0."""
    store = await Store.open(":memory:")
    try:
        ledger = Ledger(store, NoEvents())
        m = Migration("script-0", source.name, target.name, databases, mode, State.CREATED, "script", options=options)
        config = EngineConfig(workdir=workdir, pg_bindir=pg_bindir, limits=limits)
        ctx = MigrationContext(ledger, Alerts(ledger), config, m, source, target)
        ctx.bindir = await choose_bindir(source, target, pg_bindir)
        ctx.roles = await copy_roles(source, target, databases, ctx.journal)
        yield ctx
    finally:
        await store.close()


async def copy_databases(
    source: ServerConfig,
    target: ServerConfig,
    databases: list[str],
    options: MigrationOptions,
    workdir: Path,
    pg_bindir: str | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
) -> dict[str, str]:
    """Migrate databases with no migration around them (benchmarks, scripts): roles, export, import."""
    async with script_context(source, target, databases, Mode.OFFLINE, options, workdir, pg_bindir, limits) as ctx:
        results = {}
        for db in databases:
            job = OfflineDatabase(ctx, db)
            await job.export()
            results[db] = await job.import_()
        return results
