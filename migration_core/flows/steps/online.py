"""Online migration of one database: schema, then a full load attached to a replication slot, then
streaming until cutover.

- `schema`: prepare the target database, enable extensions, `pg_dump -Fc -s --no-publications
  --no-subscriptions` (kept, with a plain-SQL copy for people), `pg_restore --section=pre-data`.
- `full_load`: publication and slot (exported snapshot) on the source, parallel COPY under that
  snapshot, `pg_restore --section=post-data -j N` (indexes after data), foreign keys recorded and
  dropped and triggers disabled on the target, then a subscription on the slot with copy_data = false.
- `teardown`: subscription, slot and publication dropped (from the journal); the source is left as it was.

Every change on either server is journaled before it is made (journal.py).
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from migration_core.changes import constraints, replication, undo
from migration_core.changes import databases as target_db
from migration_core.changes.statistics import analyze
from migration_core.engine.context import MigrationContext
from migration_core.observe import server_progress, waits
from migration_core.pg import workdir as workdir_
from migration_core.pg.tools import NO_PUBSUB, Tool, ToolError, connection_env, conninfo
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, TARGET, Change
from migration_core.transfer import copy


class OnlineDatabase:
    """One database of the migration `ctx` holds; the roles plan and client programs are the context's."""

    def __init__(self, ctx: MigrationContext, database: str) -> None:
        self.ctx, self.database = ctx, database
        self.source, self.target = ctx.source, ctx.target
        self.limits = ctx.config.limits
        self.journal = ctx.journal
        self.options = ctx.options
        self.dir = workdir_.database_dir(ctx.workdir, database)
        self.bindir = ctx.bindir
        self.progress = ctx.progress.of(database)
        self.name = self.journal.object_name(database)

    @property
    def archive(self) -> Path:
        return self.dir / "schema.dump"

    @property
    def schema_sql(self) -> Path:
        return self.dir / "schema.sql"

    async def schema(self) -> str:
        workdir_.private_dir(self.dir)
        self.progress.begin("schema")
        prepared = await target_db.prepare_target(
            self.source, self.target, self.database, self.journal, overwrite=self.options.overwrite
        )
        stall = self.limits.stall_seconds  # the client programs' work is under the one rule (waits.watched)
        try:
            async with waits.watched(
                self.source, self.database, waits.pgmig_sessions, self.progress, "exporting the schema", stall=stall
            ):
                await Tool(self.bindir, "pg_dump").run(
                    ["-Fc", "-s", *NO_PUBSUB, *self.ctx.roles.restore_flags, "-f", str(self.archive)],
                    connection_env(self.source, self.database),
                )
            restore = Tool(self.bindir, "pg_restore")
            await restore.run(
                ["-f", str(self.schema_sql), str(self.archive)], connection_env(self.target, self.database)
            )
            async with waits.watched(
                self.target, self.database, waits.pgmig_sessions, self.progress, "creating schema", stall=stall
            ):
                await restore.run(
                    [
                        "--exit-on-error",
                        *NO_PUBSUB,
                        *self.ctx.roles.restore_flags,
                        "--section=pre-data",
                        f"--dbname={conninfo(dbname=self.database)}",
                        str(self.archive),
                    ],
                    connection_env(self.target, self.database),
                )
        except ToolError as exc:
            raise MigrationError(f"schema of {self.database} failed: {exc.summary}") from None
        self.progress.finish("schema ready")
        return f"{prepared}; schema in {self.schema_sql}"

    async def full_load(self) -> dict:
        """Returns what later steps need: the slot's consistent point and what was parked on the target."""
        self.progress.begin("full load")
        async with self.source.connection(self.database) as src:
            version = int(await src.fetchval("SHOW server_version_num"))
            async with self.journal.change(Change.PUBLICATION, SOURCE, self.database, self.name):
                published = await replication.create_publication(src, self.name)
        async with self.journal.change(Change.SLOT, SOURCE, self.database, self.name):
            session = await replication.create_slot(
                self.source, self.database, self.name, self.bindir / "psql", version, self.progress
            )
        try:
            self.progress.phase = "copying data"
            await copy.copy_tables(
                self.source,
                self.target,
                self.database,
                self.options.parallel,
                self.progress,
                snapshot=session.snapshot,
                limits=self.limits,
            )
        finally:
            await session.release()
        parked = await self.indexes_and_park()
        self.progress.phase = "analyzing"  # fresh statistics: the applications' first queries after cutover plan well
        async with server_progress.watched(self.target, self.database, self.progress, "analyzing"):
            await analyze(self.target, self.database, self.options.parallel)
        role = self.journal.role_name(self.database)
        async with self.source.connection(self.database) as src:
            async with self.journal.change(Change.REPLICATION_ROLE, SOURCE, self.database, role):
                password = await replication.create_replication_role(src, role, self.database)
        try:
            async with self.target.connection(self.database) as tgt:
                async with self.journal.change(Change.SUBSCRIPTION, TARGET, self.database, self.name):
                    await replication.create_subscription(
                        tgt,
                        self.name,
                        replication.subscription_conninfo(self.source, self.database, role, password),
                        self.name,
                    )
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"subscribing {self.database} to the source failed: {exc}",
                f"the target must reach the source's host and port and log in there as {role} to database "
                f"{self.database} (pg_hba.conf: a `host <database> …` or `host all …` line that takes a password: "
                "logical replication never matches the `replication` keyword), "
                "and its role needs CREATE SUBSCRIPTION rights (superuser, pg_create_subscription "
                "or azure_pg_admin)",
            ) from None
        self.progress.finish("streaming")
        return {
            "slot": self.name,
            "consistent_lsn": session.consistent_lsn,
            "published_tables": published,
            "parked": parked.as_dict(),
        }

    async def indexes_and_park(self) -> constraints.Parked:
        """Post-data (indexes, constraints), then foreign keys dropped and triggers disabled on the target
        until cutover: changes arrive in commit order, not dependency order."""
        self.progress.phase = "building indexes"
        try:
            async with server_progress.watched(
                self.target, self.database, self.progress, "building indexes", self.limits.stall_seconds
            ):
                await Tool(self.bindir, "pg_restore").run(
                    [
                        "--exit-on-error",
                        *NO_PUBSUB,
                        *self.ctx.roles.restore_flags,
                        "--section=post-data",
                        "-j",
                        str(self.options.parallel),
                        f"--dbname={conninfo(dbname=self.database)}",
                        str(self.archive),
                    ],
                    connection_env(self.target, self.database),
                )
        except ToolError as exc:
            raise MigrationError(f"indexes and constraints of {self.database} failed: {exc.summary}") from None
        async with self.target.connection(self.database) as tgt:
            return await constraints.park(tgt, self.journal, self.database)

    async def teardown(self) -> list[str]:
        """Drop the replication objects the journal says this database has; returns what was dropped.
        Raises when something could not be dropped (a server unreachable): nothing is forgotten."""
        outcome = await undo.rollback(self.journal, self.source, self.target, undo.REPLICATION, [self.database])
        if not outcome.ok:
            raise MigrationError(
                f"cannot remove the replication objects of {self.database}: " + "; ".join(outcome.failed)
            )
        return outcome.done
