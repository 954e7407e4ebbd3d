"""A migration's own plan: measured as its pipeline starts, right after the pre-flight, the way `/pgmig plan`
measures, and kept in its `plan` step, so the card and `/pgmig status` can show it and set what each phase took
beside it (review.py), and a later plan of the same servers can learn from it (survey.history).

The measurements run before the first step so the sample reads an idle source, not one the migration's own copy
keeps busy. Online, the WAL rate is read over the migration's own first steps and its full load (they write next to
nothing on the source), not in a wait of its own. A plan that cannot be made (in PLAN_SECONDS, or at all) is left
out, saying why: it only reads, and it never stops a migration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping

import asyncpg

from migration_core.engine.context import MigrationContext
from migration_core.pg.servers import ConnectionProblem
from migration_core.plan.estimate import range_text, seconds_text
from migration_core.plan.survey import WAL_UNREADABLE, MigrationPlan, WalClock, history, measure, settle_wal
from migration_core.state.errors import MigrationError
from migration_core.state.ledger import DONE
from migration_core.state.models import Mode, Step, StepKind

log = logging.getLogger(__name__)
PLAN_SECONDS = 30.0  # the most a migration's plan may take: beyond it the migration goes on without one
WAL_SECONDS = 2.0  # online: the look at the source's WAL rate, unless the full load ends sooner
# What is expected to keep a plan from being made (anything else is logged with its traceback): the migration goes
# on either way. Only reads are guarded: a lost lease (a save) or a cancel still stops the migration.
UNMEASURED = (TimeoutError, ConnectionProblem, MigrationError, asyncpg.PostgresError, OSError)
STARTED = {StepKind.EXPORT, StepKind.IMPORT, StepKind.SCHEMA, StepKind.LOAD}  # a plan is made before these


def saved(steps: Mapping[str, Step]) -> MigrationPlan | None:
    """The plan a migration keeps (None: made before plans were, or it could not be made)."""
    step = steps.get(StepKind.PLAN)
    return MigrationPlan.from_dict(step.data) if step is not None and step.data else None


class Planning:
    """A migration's plan for this run of its pipeline; online, its WAL rate is settled beside the full load."""

    def __init__(self, ctx: MigrationContext, plan: MigrationPlan | None, clock: WalClock | None) -> None:
        self.ctx, self.plan, self.clock = ctx, plan, clock

    @contextlib.asynccontextmanager
    async def settling(self) -> AsyncIterator[None]:
        """Around the full load: the WAL rate is read WAL_SECONDS after the plan began, or when the load ends if
        that is sooner, and kept with the plan; the load never waits for it. A load that fails drops the look."""
        plan, clock = self.plan, self.clock
        if plan is None or clock is None:
            yield
            return
        look = asyncio.ensure_future(self._settle(plan, clock, WAL_SECONDS))
        try:
            yield
        except BaseException:
            look.cancel()
            await asyncio.gather(look, return_exceptions=True)
            raise
        if not look.done():
            look.cancel()
            await asyncio.gather(look, return_exceptions=True)
            await self._settle(plan, clock, 0.0)  # the window so far: the plan, the first steps and the whole load
        else:
            await look

    async def _settle(self, plan: MigrationPlan, clock: WalClock, at_least: float) -> None:
        try:
            async with asyncio.timeout(PLAN_SECONDS):
                await settle_wal(plan, self.ctx.source, clock, at_least)
        except Exception as exc:
            plan.notes.append(f"WAL rate not measured: {why(exc, self.ctx.mid)}")
            plan.wal_pending = False
        self.clock = None
        await keep(self.ctx, plan)


async def make(ctx: MigrationContext) -> Planning:
    """The migration's plan: the one it keeps, or measured now and kept."""
    if ctx.done(StepKind.PLAN):
        plan = saved(ctx.steps)
        if plan is None or not plan.wal_pending:
            return Planning(ctx, plan, None)
        # pgmig stopped before the WAL rate was read: it is read over this run's steps
        clock = await _clock(ctx, plan)
        if clock is None:
            await keep(ctx, plan)
        return Planning(ctx, plan, clock)
    if any(name.split(":", 1)[0] in STARTED for name in ctx.steps):
        return Planning(ctx, None, None)  # begun before plans were made: a plan now would predict the past
    m = ctx.m
    addresses = (ctx.source.address, ctx.target.address)
    preflight = ctx.steps.get(StepKind.PREFLIGHT)
    checked = (
        (preflight.finished_at - preflight.started_at).total_seconds()
        if preflight and preflight.started_at and preflight.finished_at
        else 0.0
    )
    plan = MigrationPlan(
        m.source, m.target, m.mode, m.options.parallel, checked, addresses=addresses, method=m.options.method
    )
    clock = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PLAN_SECONDS):
            plan.history = await history(ctx.ledger.store, addresses, but=m.id)
            if m.mode is Mode.ONLINE:
                clock = await WalClock.start(ctx.source)
                plan.wal_pending = clock is not None
            await measure(plan, ctx.source, m.databases, ctx.bindir)
    except Exception as exc:
        said = f"no plan: {why(exc, m.id)} after {seconds_text(time.perf_counter() - started)}; the migration goes on"
        await ctx.ledger.save(m.id, StepKind.PLAN, DONE, said)
        return Planning(ctx, None, None)
    if m.mode is Mode.ONLINE and clock is None:
        plan.notes.append(WAL_UNREADABLE)
    await keep(ctx, plan)
    return Planning(ctx, plan, clock)


async def _clock(ctx: MigrationContext, plan: MigrationPlan) -> WalClock | None:
    """A new look at the source's WAL rate; None, said in the plan's notes, when the source does not answer."""
    try:
        async with asyncio.timeout(PLAN_SECONDS):
            clock = await WalClock.start(ctx.source)
    except Exception as exc:
        plan.notes.append(f"WAL rate not measured: {why(exc, ctx.mid)}")
        clock = None
    else:
        if clock is None:
            plan.notes.append(WAL_UNREADABLE)
    plan.wal_pending = clock is not None
    return clock


async def keep(ctx: MigrationContext, plan: MigrationPlan) -> None:
    detail = (
        f"{range_text(plan.total)} from the command to {plan.until}, from {plan.grounds}; "
        f"measured in {seconds_text(plan.seconds)}"
    )
    await ctx.ledger.save(ctx.mid, StepKind.PLAN, DONE, detail, plan.as_dict())


def why(exc: Exception, mid: str) -> str:
    """The cause in words; one that was not expected is logged whole."""
    if not isinstance(exc, UNMEASURED):
        log.warning("%s: its plan could not be measured", mid, exc_info=exc)
    if isinstance(exc, TimeoutError):
        return f"measuring took longer than {PLAN_SECONDS:g} s"
    return str(exc) or type(exc).__name__
