"""A migration whose data a managed Azure service moves (`--backend flex|dms`), with pgmig around it:

start → the service copies (and, online, streams) while pgmig polls it into the same states, live
message and alerts as a native migration → ready for cutover → pgmig's cutover fences the source, waits
for the service's slots, triggers the service's cutover, then syncs sequences, reinstates foreign keys
and triggers and verifies (the services do none of that). Offline: the service's copy is verified.
DMS classic moves data only, so pgmig first builds the target schema with FKs and triggers parked.
"""

from __future__ import annotations

import asyncio

from migration_core.azure.backend import BackendRef, BackendStatus, ManagedBackend, Phase
from migration_core.changes import sequences, service
from migration_core.changes.constraints import Parked
from migration_core.engine.context import MigrationContext
from migration_core.flows.offline import verify_and_complete
from migration_core.flows.online import ensure_identity, schema_step, schema_steps
from migration_core.flows.steps.cutover import CatchUp, wait_caught_up
from migration_core.flows.steps.online import OnlineDatabase
from migration_core.observe.monitor import mark_ready
from migration_core.observe.progress import MigrationProgress
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, Change
from migration_core.state.ledger import DONE, FAILED
from migration_core.state.models import Mode, State, StepKind

BACKEND_STEP = StepKind.BACKEND
UNREAD_TOLERATED = 10  # consecutive status reads that may fail (after the SDK's own retries) before giving up


def show(progress: MigrationProgress, backend: ManagedBackend, status: BackendStatus) -> None:
    """The service's per-database view into pgmig's progress (what the live message renders)."""
    for db, d in status.databases.items():
        p = progress.of(db)
        p.phase = f"{backend.label}: {d.describe() or status.detail}"
        p.tables_done, p.tables_total = d.tables_done, d.tables_total
        p.lag_seconds = d.latency_seconds
        if p.started_at is None:
            p.begin(p.phase)
            p.tables_done, p.tables_total = d.tables_done, d.tables_total


def _failure(backend: ManagedBackend, status: BackendStatus) -> MigrationError:
    return MigrationError(
        f"{backend.label} reports the migration {status.phase.value}: {status.error or status.detail}",
        "look at the migration in the Azure portal; `/pgmig retry` starts a fresh one",
    )


async def prepare_schema(ctx: MigrationContext, fresh: bool) -> None:
    """DMS classic copies rows only: the schema first, indexes built, FKs dropped and triggers disabled.
    `fresh`: a retry after the service failed — the target databases are this migration's to rebuild."""
    if fresh:
        for db in ctx.m.databases:
            await schema_step(ctx, db)
    else:
        await schema_steps(ctx)
    for db in ctx.m.databases:
        if fresh or not ctx.done(StepKind.PREPARE.at(db)):
            parked = await OnlineDatabase(ctx, db).indexes_and_park()
            await ctx.ledger.save(
                ctx.mid,
                StepKind.PREPARE.at(db),
                DONE,
                f"indexes built; {len(parked.foreign_keys)} foreign keys dropped and "
                f"{len(parked.triggers)} triggers disabled on the target until cutover",
                {"parked": parked.as_dict()},
            )
    await ctx.reload()


async def sync_sequences(ctx: MigrationContext) -> None:
    """The services leave sequence values behind when they copy rows (logical replication does)."""
    for db in ctx.m.databases:
        src, tgt = await asyncio.gather(ctx.source.connect(db), ctx.target.connect(db))
        try:
            count = await sequences.sync(src, tgt)
        finally:
            await asyncio.gather(src.close(), tgt.close())
        await ctx.ledger.save(
            ctx.mid, StepKind.SEQUENCES.at(db), DONE, f"{count} sequence(s) set to the source's values"
        )


async def run_managed(ctx: MigrationContext) -> None:
    ledger, mid, m, backend = ctx.ledger, ctx.mid, ctx.m, managed(ctx)
    previous = ctx.steps.get(BACKEND_STEP)
    retrying = previous is not None and previous.state != DONE  # the service failed: start a fresh one
    if m.mode is Mode.ONLINE:
        await ensure_identity(ctx)  # the services stream by logical replication too
    if backend.prepares_schema:
        await prepare_schema(ctx, fresh=retrying)
    if not ctx.done(BACKEND_STEP):
        attempt = int(previous.data.get("attempt", 0)) + 1 if previous else 1
        name = service_name(mid, attempt)
        await ledger.advance(mid, State.FULL_LOAD, f"{backend.label}: starting {name} for {', '.join(m.databases)}")
        if backend.advice and attempt == 1:
            await ctx.alerts.notice(m, "backend", f"ℹ️ {backend.advice}")
        # the earlier attempt's databases are this migration's own to replace; others only with --overwrite
        found = previous.data.get("ref") if retrying and previous else None
        earlier = BackendRef.from_dict(found) if found else None
        ref = await service.start(
            ctx.journal, ctx.source, m.databases, name, lambda: backend.start(m, name, ctx.source, ctx.target, earlier)
        )
        data = {"ref": ref.as_dict(), "attempt": attempt}
        await ledger.save(mid, BACKEND_STEP, DONE, f"{backend.label}: {name}", data)
        await ctx.reload()
    ref = BackendRef.from_dict(ctx.steps[BACKEND_STEP].data["ref"])
    poll = ctx.config.managed_poll_seconds
    unread = 0
    while True:
        try:
            status = await backend.status(ref)
            unread = 0
        except MigrationError as exc:  # copies run for hours: an ARM hiccup must not fail them
            unread += 1
            if unread > UNREAD_TOLERATED:
                raise
            for db in m.databases:
                ctx.progress.of(db).phase = f"{backend.label}: status unreadable ({exc.message})"
            await asyncio.sleep(poll)
            continue
        show(ctx.progress, backend, status)
        if status.phase in (Phase.FAILED, Phase.CANCELLED):
            await ledger.save(mid, BACKEND_STEP, FAILED, status.error or status.detail, ctx.steps[BACKEND_STEP].data)
            raise _failure(backend, status)
        if m.mode is Mode.OFFLINE and status.phase is Phase.SUCCEEDED:
            await sync_sequences(ctx)
            await verify_and_complete(ctx)
            return
        if m.mode is Mode.ONLINE and status.phase is Phase.SUCCEEDED:  # finished outside pgmig: nothing streams
            await ledger.save(
                mid, BACKEND_STEP, FAILED, "completed without pgmig's cutover", ctx.steps[BACKEND_STEP].data
            )
            raise MigrationError(
                f"{backend.label} completed its migration without pgmig's cutover: nothing streams any more",
                f"`/pgmig retry {mid}` starts a fresh service migration",
            )
        if m.mode is Mode.ONLINE and status.phase is Phase.READY:
            await ledger.advance(mid, State.CATCHING_UP, f"{backend.label} copied the data and streams changes")
            await ctx.reload()
            await mark_ready(ctx, f"{backend.label} is {status.detail}")
            return
        await attend(ctx, backend, ref, status)
        await asyncio.sleep(poll)


async def attend(ctx: MigrationContext, backend: ManagedBackend, ref: BackendRef, status: BackendStatus) -> None:
    """The service waits: pgmig takes the steps that are its own (a queued start, a confirmation the person
    gave with --overwrite), said in the thread; what only a person can do is posted once, cleared once done."""
    try:
        done = await backend.advance(ref, status, ctx.source, ctx.target)
    except MigrationError as exc:  # tried again at the next poll: an ARM hiccup must not fail the copy
        await ctx.alerts.alert(ctx.m, "service-step", True, f"⚠️ {backend.label}: {exc}")
        done = ""
    else:
        await ctx.alerts.alert(ctx.m, "service-step", False, "")
    if done:
        await ctx.alerts.notice(ctx.m, "backend", f"↪️ {backend.label}: {done}")
    waiting = status.phase is Phase.WAITING
    await ctx.alerts.alert(ctx.m, "service-waits", waiting, f"✋ {backend.label} waits for you: {status.action}")


def service_name(mid: str, attempt: int) -> str:
    """The service-side migration of one attempt (a retry after the service failed starts a fresh one)."""
    return f"pgmig-{mid}" + (f"-r{attempt}" if attempt > 1 else "")


def managed(ctx: MigrationContext) -> ManagedBackend:
    if ctx.backend is None:
        raise MigrationError(f"BUG: {ctx.mid} has no managed backend")
    return ctx.backend


async def service_step(ctx: MigrationContext) -> tuple[BackendRef, dict] | None:
    """The service-side migration this migration started, and what was recorded with it."""
    step = await ctx.ledger.store.step(ctx.mid, BACKEND_STEP)
    if step is None or step.state != DONE:
        return None
    return BackendRef.from_dict(step.data["ref"]), step.data


async def watch_managed(ctx: MigrationContext) -> None:
    """A tick while streaming: the service's view, its lag alert, its failure, the move to ready."""
    found, backend, m, alerts = await service_step(ctx), managed(ctx), ctx.m, ctx.alerts
    if found is None:
        return
    ref, data = found
    try:
        status = await backend.status(ref)
    except MigrationError as exc:
        await alerts.alert(m, "service", True, f"⚠️ cannot read the {backend.label}'s status: {exc}")
        return
    await alerts.alert(m, "service", False, "")
    show(ctx.progress, backend, status)
    behind = {
        db: d.latency_seconds
        for db, d in status.databases.items()
        if (d.latency_seconds or 0) > ctx.config.lag_alert_seconds
    }
    await alerts.alert(
        m,
        "lag",
        bool(behind),
        f"⚠️ {backend.label} latency above the alert threshold: "
        + ", ".join(f"{db} {s:.0f} s" for db, s in behind.items()),
    )
    if status.phase in (Phase.FAILED, Phase.CANCELLED):
        await ctx.ledger.save(m.id, BACKEND_STEP, FAILED, status.error or status.detail, data)
        await ctx.ledger.fail(m.id, str(_failure(backend, status)))
    elif status.phase is Phase.READY:
        await mark_ready(ctx, f"{backend.label} is {status.detail}")


class ManagedCutover:
    """What run_cutover needs for a managed migration: its parked constraints and its catch-up step."""

    def __init__(self, ctx: MigrationContext) -> None:
        self.ctx, self.backend = ctx, managed(ctx)

    async def parked(self) -> dict[str, Parked]:
        out = {}
        for db in self.ctx.m.databases:
            step = await self.ctx.ledger.store.step(self.ctx.mid, StepKind.PREPARE.at(db))
            out[db] = Parked.from_dict(step.data["parked"]) if step else Parked([], [])
        return out

    async def catch_up(self) -> CatchUp:
        found = await service_step(self.ctx)
        if found is None:
            raise MigrationError(f"{self.ctx.mid} has no service migration to cut over")
        ref, data = found
        started = await self.ctx.journal.find(
            Change.SERVICE_MIGRATION, SOURCE, "", service_name(self.ctx.mid, int(data.get("attempt", 1)))
        )
        # the slots already there before the service started: only the service's are waited for
        before = service.ServicePayload.of(started).slots_before if started else data.get("slots_before", {})

        async def run(db: str, timeout: float) -> None:
            await wait_caught_up(self.ctx.source, db, timeout, exclude=tuple(before.get(db, [])))
            # journaled first: once the service is told, there is no falling back to its replication
            async with self.ctx.journal.change(Change.SERVICE_CUTOVER, SOURCE, db):
                await self.backend.cutover(ref, db)
            await self.completed(ref, db, max(timeout, 600.0))

        return run

    async def abandon(self, reason: str) -> None:
        """The service's replication is over but the cutover failed: a retry must start a fresh one (whose
        own cutover is then not mistaken for this spent one's)."""
        step = await self.ctx.ledger.store.step(self.ctx.mid, BACKEND_STEP)
        if step is not None:
            await self.ctx.ledger.save(
                self.ctx.mid, BACKEND_STEP, FAILED, f"cutover failed after the service's: {reason}"[:2000], step.data
            )
        journal = self.ctx.journal
        for entry in await journal.entries(Change.SERVICE_CUTOVER):
            await journal.undone(entry)

    async def completed(self, ref: BackendRef, db: str, timeout: float) -> None:
        """Until the service says `db` finished its cutover."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            status = await self.backend.status(ref)
            d = status.databases.get(db)
            if status.phase is Phase.FAILED:
                raise _failure(self.backend, status)
            if (d is not None and d.completed) or status.phase is Phase.SUCCEEDED:
                return
            await asyncio.sleep(self.ctx.config.managed_poll_seconds)
        raise MigrationError(f"{self.backend.label} did not complete the cutover of {db} within {timeout:g} s")
