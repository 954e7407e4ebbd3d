"""The cutover of a whole migration: every database through cutover.py's procedure, then the release
(the point of no return), then the checks and the teardown of replication.

Before release any failure, timeout, cancel or crash rolls back from the journal everywhere: the
constraints parked again, every fence lifted, replication left running, back to ready_for_cutover.
The release is recorded in the store *before* the channel is told applications may switch; from then
on the migration only goes forward: what the checks find is an incident, posted and kept, and the
source stays fenced. `recover` applies the same rule to a cutover a dead pgmig left half-done.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict

import asyncpg

from migration_core.changes import constraints
from migration_core.changes.constraints import Parked
from migration_core.changes.fence import Fence
from migration_core.engine.context import MigrationContext
from migration_core.flows.managed import ManagedCutover
from migration_core.flows.online import teardown_replication
from migration_core.flows.steps import cutover
from migration_core.flows.steps.cutover import WINDOW_STEPS, DatabaseCutover
from migration_core.observe import ddl, forecast, monitor
from migration_core.pg.servers import ConnectionProblem
from migration_core.state.errors import MigrationError
from migration_core.state.failures import failure_reason
from migration_core.state.journal import Change
from migration_core.state.ledger import DONE, RUNNING
from migration_core.state.models import AuditEntry, State, StepKind
from migration_core.verify.tables import expected_words, matview_note

log = logging.getLogger(__name__)


def managed_cutover(ctx: MigrationContext) -> ManagedCutover | None:
    """A service moves the data: its cutover is triggered once the source is fenced, and after that there
    is no falling back to replication (the migration fails, the source is writable again)."""
    return ManagedCutover(ctx) if ctx.backend is not None else None


async def parked_constraints(ctx: MigrationContext) -> dict[str, Parked]:
    if (managed := managed_cutover(ctx)) is not None:
        return await managed.parked()
    parked = {}
    for db in ctx.m.databases:
        load = await ctx.ledger.store.step(ctx.mid, StepKind.LOAD.at(db))
        parked[db] = Parked.from_dict(load.data["parked"]) if load else Parked([], [])
    return parked


async def run_cutover(ctx: MigrationContext, actor: str, decided: bool = False) -> bool:
    """Switch a streaming migration to its target; True when completed, False when it fell back.

    `decided`: the team's decision already moved it to cutting_over (the one approval that completed the
    quorum won that move); otherwise this moves it, from ready_for_cutover."""
    ledger, mid, m = ctx.ledger, ctx.mid, ctx.m
    if decided:
        if m.state is not State.CUTTING_OVER:
            raise MigrationError(f"{mid} is {m.state.value}, not cutting_over: nothing to start")
    elif not await ledger.move(
        mid,
        State.CUTTING_OVER,
        f"cutting over {', '.join(m.databases)} (started by {actor})",
        expect=(State.READY_FOR_CUTOVER,),
        actor=actor,
    ):
        m = await ledger.get(mid)
        raise MigrationError(f"{mid} is {m.state.value}; only a migration ready for cutover can cut over")
    await ledger.store.audit(AuditEntry(actor, "cutover.started", ", ".join(m.databases), m.id))
    managed = managed_cutover(ctx)
    parked = await parked_constraints(ctx)
    catch_up = await managed.catch_up() if managed is not None else None
    expected = await schema_expected(ctx)
    done: list[DatabaseCutover] = []
    try:
        if managed is None:  # nothing is fenced over a broken subscription
            await monitor.require_caught_up(ctx, "cutover not started, nothing was fenced", lag_too=False)
        windows = forecast.last(ctx) if managed is None else {}
        if ctx.config.max_window_seconds > 0 and managed is None and None in windows.values():
            windows = await forecast.look(ctx, sample=False)  # a limit to keep and no look yet: measure now
        if held := forecast.too_long(ctx, windows):
            raise MigrationError(f"cutover not started, nothing was fenced: {held}")
        for db in m.databases:
            done.append(await cutover.cut_over(ctx, db, parked[db], catch_up, expected.get(db)))
            done[-1].predicted = w.seconds if (w := windows.get(db)) is not None else None
        facts = {
            "timings": {r.database: r.timings for r in done},
            "fences": {r.database: asdict(r.fence) for r in done},
            "predicted": {r.database: r.predicted for r in done},
            "expected": {db: [[*key, why] for key, why in found.items()] for db, found in expected.items()},
        }
        await ledger.save(mid, StepKind.RELEASE, RUNNING, "releasing the target", facts)
    except BaseException as exc:  # a cancel or a shutdown mid-fence falls back too
        await fall_back(ctx, parked, exc)
        if not isinstance(exc, Exception):
            raise
        return False
    # The point of no return: the move is committed whatever interrupts it (a shutdown waits for it), and
    # only then is anyone told. From here no path falls back: a failure or a shutdown while announcing
    # leaves the migration released, and recovery finishes it forward with the source still fenced.
    await ledger.advance(
        mid, State.RELEASED, "target released: applications can switch now", expect=(State.CUTTING_OVER,)
    )
    await ledger.save(mid, StepKind.RELEASE, DONE, "applications told to switch to the target", facts)
    await ctx.alerts.notice(
        m,
        "released",
        "🟢 target released: every change before the fence applied, sequences synced, foreign keys and "
        "triggers back, row counts equal — applications can switch now (writes were unavailable "
        + ", ".join(f"{r.database} {r.window_seconds:.2f} s" for r in done)
        + "). Checksums are being compared against the target as it was at this moment.",
    )
    problems: list[str] = []
    for result in done:
        try:
            problems += await cutover.check(
                ctx.source,
                ctx.target,
                result,
                parked[result.database],
                m.options.parallel,
                ctx.progress.of(result.database),
                ctx.config.limits,
            )
        except (MigrationError, ConnectionProblem, asyncpg.PostgresError, OSError) as exc:
            problems.append(f"the checks of {result.database} could not run: {failure_reason(exc, mid)}")
        await ledger.save(
            m.id,
            StepKind.CUTOVER.at(result.database),
            DONE,
            ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()),
            {"timings": result.timings, "predicted": result.predicted},
        )
    await finish(ctx, problems, done)
    return True


async def fall_back(ctx: MigrationContext, parked: dict[str, Parked], exc: BaseException) -> None:
    """Before release: undo from the journal and go back to streaming (or, once a managed service ended
    its replication, to failed with the source writable)."""
    ledger, alerts, m, managed = ctx.ledger, ctx.alerts, ctx.m, managed_cutover(ctx)
    reason = "cancelled" if isinstance(exc, asyncio.CancelledError) else failure_reason(exc, m.id)
    if (now := await ledger.get(m.id)).state is not State.CUTTING_OVER:
        log.error("%s is %s: its cutover does not fall back (%s)", m.id, now.state.value, reason)
        return  # released (the point of no return), or moved on by someone else: nothing is undone here
    try:
        lifted = await cutover.rollback(ctx.source, ctx.target, ctx.journal, parked)
    except MigrationError as undo_failed:
        lifted = [str(undo_failed)]
        log.error("the fallback of %s's cutover did not finish: %s", m.id, undo_failed)
    undone = "; ".join(lifted) or "nothing had been changed yet"
    switched = await ctx.journal.entries(Change.SERVICE_CUTOVER)
    if managed is not None and switched:
        await managed.abandon(reason)
        await ledger.store.audit(AuditEntry("pgmig", "cutover.failed", reason[:2000], m.id))
        await ledger.move(
            m.id,
            State.FAILED,
            f"cutover failed after {managed.backend.label} had ended its "
            f"replication of {', '.join(e.database for e in switched)}: {reason}. {undone}; the source "
            f"stays the primary; `/pgmig retry {m.id}` starts a fresh service migration over the "
            "target databases",
            error=f"cutting_over: {reason}",
        )
        await alerts.notice(m, "cutover", f"⚠️ cutover failed, nothing was released: {reason}")
        return
    await ledger.store.audit(AuditEntry("pgmig", "cutover.fallback", reason[:2000], m.id))
    await ledger.move(
        m.id,
        State.READY_FOR_CUTOVER,
        f"cutover fell back: {reason}. {undone}; {await replication_now(ctx)}",
        error=f"cutover fell back: {reason}",
    )
    await alerts.notice(m, "cutover", f"⚠️ cutover fell back, nothing was switched: {reason}")


async def replication_now(ctx: MigrationContext) -> str:
    """What replication does after a fallback, as measured, not assumed."""
    try:
        lags = await monitor.measure(ctx)
    except (ConnectionProblem, asyncpg.PostgresError, OSError) as exc:
        return f"replication could not be looked at ({failure_reason(exc, ctx.mid)})"
    if all(x.streaming for x in lags.values()):
        return "replication keeps running"
    return f"replication is NOT running: {monitor.replication_words(lags)} — check the subscriptions"


async def finish(ctx: MigrationContext, problems: list[str], done: list[DatabaseCutover]) -> None:
    """After release: replication torn down, the incident (if any) kept and posted, completed."""
    ledger, alerts, m = ctx.ledger, ctx.alerts, ctx.m
    left: list[str] = []
    schema = await schema_outcomes(ctx)  # before the teardown takes capture away
    if ctx.backend is None:
        left = (await teardown_replication(ctx)).failed
    if problems:
        await ledger.save(m.id, StepKind.INCIDENT, DONE, "\n".join(problems)[:2000], {"problems": problems})
        await alerts.notice(
            m,
            "incident",
            f"🚨 {m.id} was released to the target, but the checks after release "
            f"found {len(problems)} problem(s):\n"
            + "\n".join(f"• {p}" for p in problems[:10])
            + "\nThe source stays fenced (applications may already write to the target). Fix the "
            f"target's data, then `/pgmig verify {m.id}` checks again.",
        )
    lines = [summary(r) for r in done]
    warned = {w.name: w for r in done for check in (r.counts, r.verify) if check is not None for w in check.warnings}
    lines += [f"⚠️ {matview_note(w)}" for w in warned.values()]
    lines += schema
    if left:
        lines.append("left on the servers (`/pgmig cleanup` removes them): " + "; ".join(left))
    verdict = (
        f"cutover complete with {len(problems)} problem(s) found after release (see the incident)"
        if problems
        else "cutover complete: applications can move to the target"
    )
    await ledger.store.audit(AuditEntry("pgmig", "cutover.completed", "\n".join(lines)[:2000], m.id))
    await ledger.advance(m.id, State.COMPLETED, verdict + ".\n" + "\n".join(lines), expect=(State.RELEASED,))


async def schema_expected(ctx: MigrationContext) -> dict[str, dict[tuple[str, str], str]]:
    """The tables skipped schema changes let differ, per database (observe/ddl.expected); none unless watched."""
    if ctx.backend is not None or not ddl.wanted(ctx):
        return {}
    return await ddl.expected(ctx)


async def schema_outcomes(ctx: MigrationContext) -> list[str]:
    """The schema changes captured while streaming, applied and skipped, for the summary (observe/ddl.py)."""
    if ctx.backend is not None or not ddl.wanted(ctx):
        return []
    try:
        return await ddl.outcomes(ctx)
    except (MigrationError, ConnectionProblem, asyncpg.PostgresError, OSError) as exc:
        return [f"the schema changes captured while streaming could not be read: {failure_reason(exc, ctx.mid)}"]


def summary(r: DatabaseCutover) -> str:
    soft = f"; superusers only softly fenced: {', '.join(r.fence.superusers)}" if r.fence.superusers else ""
    window = ", ".join(f"{k} {v:.2f} s" for k, v in r.timings.items() if k in WINDOW_STEPS)
    after = ", ".join(f"{k} {v:.2f} s" for k, v in r.timings.items() if k not in WINDOW_STEPS)
    checked = (
        f"{r.verify.tables} tables, {r.verify.rows} rows and {r.sequences} sequences verified equal"
        if r.verify is not None
        else "not verified by checksums"
    )
    predicted = f", predicted {r.predicted:.2f} s" if r.predicted is not None else ""
    counted = r.counts.tables if r.counts is not None else 0
    proof = f"; in the window {counted} table(s) counted, {len(r.proven)} proven by continuous verification"
    differ = {m.name: m for check in (r.counts, r.verify) if check is not None for m in check.expected}
    allowed = "".join(f"; {expected_words(m)}" for m in differ.values())
    return (
        f"{r.database}: writes unavailable {r.window_seconds:.2f} s{predicted} ({window})"
        + proof
        + allowed
        + (f"; after release {after}" if after else "")
        + f"; {checked}; {r.fence.ended_sessions} session(s) ended{soft}"
    )


async def recover(ctx: MigrationContext) -> None:
    """A cutover a dead pgmig left unfinished: back to streaming from cutting_over, forward from released."""
    m = ctx.m
    release = await ctx.ledger.store.step(m.id, StepKind.RELEASE)
    parked = await parked_constraints(ctx)
    if m.state is State.CUTTING_OVER:
        await fall_back(
            ctx, parked, MigrationError("pgmig stopped in the middle of the cutover, before the target was released")
        )
        return
    problems: list[str] = []
    for db in m.databases:
        try:
            async with ctx.target.connection(db) as conn:
                problems += await constraints.validate(conn, parked[db])
        except (ConnectionProblem, asyncpg.PostgresError, OSError) as exc:  # a check that cannot run is a problem
            problems.append(f"the foreign keys of {db} could not be validated: {failure_reason(exc, m.id)}")
    await ctx.alerts.notice(
        m,
        "released",
        "🟢 pgmig restarted after the target was released: finishing the cutover "
        "(the source stays fenced; foreign keys validated, checksums were not compared — "
        f"`/pgmig verify {m.id}` compares now)",
    )
    facts = release.data if release is not None else {}
    done = [
        DatabaseCutover(
            db,
            Fence(**facts.get("fences", {}).get(db, {"database": db})),
            facts.get("timings", {}).get(db, {}),
            predicted=facts.get("predicted", {}).get(db),
        )
        for db in m.databases
    ]
    await finish(ctx, problems, done)
