"""The native online pipeline: [replica identity] → schema → full load under a slot's snapshot →
catching up (the monitor takes it to ready for cutover), and the teardown of its replication after
the cutover."""

from __future__ import annotations

from migration_core.changes import undo
from migration_core.changes.identity import set_identity_full
from migration_core.engine.context import MigrationContext
from migration_core.flows.steps.online import OnlineDatabase
from migration_core.observe.monitor import until_ready
from migration_core.plan import record
from migration_core.state.journal import Change
from migration_core.state.ledger import DONE, RUNNING
from migration_core.state.models import State, StepKind


async def ensure_identity(ctx: MigrationContext) -> None:
    """REPLICA IDENTITY FULL where asked for; the journal remembers each table's previous identity."""
    if ctx.m.options.replica_identity_full and not ctx.done(StepKind.IDENTITY):
        changed = {db: await set_identity_full(ctx.source, db, ctx.journal) for db in ctx.m.databases}
        listed = "; ".join(f"{db}: {', '.join(t)}" for db, t in changed.items() if t)
        await ctx.ledger.save(
            ctx.mid,
            StepKind.IDENTITY,
            DONE,
            f"REPLICA IDENTITY FULL set on the source for {listed}"
            if listed
            else "every table already had a replica identity",
            {"tables": changed},
        )


async def schema_steps(ctx: MigrationContext) -> None:
    """The target's schema for every database not done yet (pre-data; post-data comes after the load)."""
    schemas = [db for db in ctx.m.databases if not ctx.done(StepKind.SCHEMA.at(db))]
    if schemas:
        await ctx.ledger.advance(ctx.mid, State.SCHEMA, f"schema of {', '.join(schemas)}")
    for db in schemas:
        await schema_step(ctx, db)


async def schema_step(ctx: MigrationContext, db: str) -> None:
    job = OnlineDatabase(ctx, db)
    await ctx.ledger.save(ctx.mid, StepKind.SCHEMA.at(db), RUNNING, "")
    detail = await job.schema()
    await ctx.ledger.save(ctx.mid, StepKind.SCHEMA.at(db), DONE, detail, {"schema_sql": str(job.schema_sql)})


async def run_online(ctx: MigrationContext) -> None:
    ledger, mid, m = ctx.ledger, ctx.mid, ctx.m
    planning = await record.make(ctx)  # the migration's plan, measured before anything moves
    await ensure_identity(ctx)
    await schema_steps(ctx)
    loads = [db for db in m.databases if not ctx.done(StepKind.LOAD.at(db))]
    if loads:
        await ledger.advance(mid, State.FULL_LOAD, f"full load of {', '.join(loads)} under a slot's snapshot")
    async with planning.settling():  # the plan's WAL rate, read beside the load: the load never waits for it
        for db in loads:
            if StepKind.LOAD.at(db) in ctx.steps:  # an earlier attempt stopped mid-load: start this database afresh
                await OnlineDatabase(ctx, db).teardown()
                await schema_step(ctx, db)
            await ledger.save(mid, StepKind.LOAD.at(db), RUNNING, "")
            data = await OnlineDatabase(ctx, db).full_load()
            # how long it, its copy and its index builds took (this run's): plan/review.py, survey.history
            data["seconds"], data["phases"] = ctx.progress.of(db).elapsed(), dict(ctx.progress.of(db).timed)
            parked = data["parked"]
            await ledger.save(
                mid,
                StepKind.LOAD.at(db),
                DONE,
                f"{data['published_tables']} tables published and copied; "
                f"{len(parked['foreign_keys'])} foreign keys dropped and "
                f"{sum(t['enabled'] != 'D' for t in parked['triggers'])} triggers disabled on the "
                f"target until cutover; streaming from {data['consistent_lsn']}",
                data,
            )
    await ledger.advance(mid, State.CATCHING_UP, "full load done; the target now follows every change on the source")
    await until_ready(ctx, ctx.config.progress_interval)


async def teardown_replication(ctx: MigrationContext) -> undo.Outcome:
    """After a cutover: subscriptions, slots, publications and their roles dropped, replica identities put back."""
    return await undo.rollback(ctx.journal, ctx.source, ctx.target, (*undo.REPLICATION, Change.REPLICA_IDENTITY))
