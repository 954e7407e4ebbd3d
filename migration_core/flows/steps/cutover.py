"""The cutover of one online migration, per database, in the order that loses no row:

1. fence writes on the source (changes/fence.py): read-only for new sessions, CONNECT revoked, the
   remaining client sessions ended, each change journaled first so any later moment can lift it exactly;
2. wait until the slot has confirmed the source's WAL position taken after the fence and, where
   continuous verification runs, until a watermark written after the fence is on the target (then every
   change committed before the fence is there too: one apply worker, commit order);
3. set every target sequence to the source's state;
4. put back the foreign keys NOT VALID (enforced for new rows at once) and the triggers exactly as on
   the source, refresh materialized views, copy large objects;
5. compare row counts (the source is quiescent, so equality is exact; materialized views only warn), again
   until they agree or the catch-up timeout passes (`counts_agree`: the slot's confirmed position alone
   was seen ahead of what the target showed) — of the tables continuous verification does not cover:
   a covered table was proven equal at a point of the stream, and step 2 proved that every change after
   it arrived, so the window's cost follows what is unverified, not the database's size.

Then (cutover_flow.py) the target is released — the point of no return — and `check` VALIDATEs the
foreign keys, analyzes the refreshed views and compares full checksums against a snapshot of the
target exported at release, so applications may already write there while it runs. What it finds
is an incident to act on, never a reason to reopen the source. Until release, `rollback` parks the
constraints again and lifts the fences from the journal: applications keep working on the source,
replication keeps running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from migration_core.changes import constraints, matviews, sequences, undo, watermarks
from migration_core.changes.fence import Fence, FencePayload, end_sessions, fence
from migration_core.changes.statistics import analyze
from migration_core.engine.context import MigrationContext
from migration_core.observe import waits
from migration_core.observe.progress import DatabaseProgress
from migration_core.pg import failpoints
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, TARGET, Change, Journal
from migration_core.transfer import large_objects
from migration_core.transfer.limits import DEFAULT_LIMITS, DataLimits
from migration_core.verify import continuous
from migration_core.verify.tables import Mismatch, VerifyResult, verify_database

LATE_SESSION_ROUNDS = 3  # sessions that slipped in past the fence are ended (and caught up with) this often
WINDOW_STEPS = ("fence", "catch_up", "sequences", "constraints", "counts")  # while writes are fenced


@dataclass
class DatabaseCutover:
    database: str
    fence: Fence
    timings: dict[str, float] = field(default_factory=dict)
    sequences: int = 0
    counts: VerifyResult | None = None
    verify: VerifyResult | None = None
    views: list[str] = field(default_factory=list)  # materialized views refreshed on the target (quoted)
    predicted: float | None = None  # the window observe/forecast.py predicted when the cutover started
    proven: frozenset[tuple[str, str]] = frozenset()  # tables not counted: covered, and the fence's watermark arrived
    expected: dict[tuple[str, str], str] = field(default_factory=dict)  # tables a skipped schema change lets differ

    @property
    def window_seconds(self) -> float:
        """Writes unavailable: from the fence until the target is released (row counts equal)."""
        return sum(v for k, v in self.timings.items() if k in WINDOW_STEPS)


CAUGHT_UP = (
    "SELECT bool_and(confirmed_flush_lsn >= $1::pg_lsn) FROM pg_replication_slots WHERE slot_type = 'logical' "
    "AND database = current_database() AND (slot_name = $2 OR ($2 IS NULL AND NOT slot_name = ANY($3::text[])))"
)


async def wait_caught_up(
    source: ServerConfig, database: str, timeout: float, slot: str | None = None, exclude: tuple[str, ...] = ()
) -> None:
    """Until the subscriber confirmed every change made before the fence (bounded by `timeout`).

    Applications may commit with synchronous_commit = off: their last commits can still sit unwritten in
    WAL buffers. So this session first commits a transaction of its own synchronously (a transaction id
    is enough to make a commit record): once it is flushed, so is every commit before it, and the flush
    position is what the subscriber must confirm. `slot` is pgmig's own; without it every logical slot of
    the database not in `exclude` counts (a managed service's slots, whose names pgmig does not choose)."""
    async with source.connection(database) as conn:
        await conn.execute("SET synchronous_commit = on")
        await conn.fetchval("SELECT txid_current()")
        target_lsn = await conn.fetchval("SELECT pg_current_wal_flush_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = await conn.fetchval(CAUGHT_UP, target_lsn, slot, list(exclude))
            if done or (done is None and slot is None):
                return
            await asyncio.sleep(0.005)
        raise MigrationError(
            f"the target did not catch up with {database} within {timeout:g} s",
            "check the subscription on the target (pg_stat_subscription); nothing was switched",
        )


CatchUp = Callable[[str, float], Awaitable[None]]


async def cut_over(
    ctx: MigrationContext,
    database: str,
    parked: constraints.Parked,
    catch_up: CatchUp | None = None,
    expected: dict[tuple[str, str], str] | None = None,
) -> DatabaseCutover:
    """Steps 1–5 for one database; raises on any failure, leaving the undo to `rollback`.

    `catch_up` replaces step 2 for a managed service: wait for its slots, then trigger its cutover. `expected`:
    the tables skipped schema changes let differ (observe/ddl.expected), read before the fence."""
    source, target, journal, config = ctx.source, ctx.target, ctx.journal, ctx.config
    grace = config.fence_grace_seconds
    started = time.perf_counter()
    result = DatabaseCutover(database, await fence(source, database, grace, journal), expected=expected or {})
    result.timings["fence"] = time.perf_counter() - started - grace
    step = time.perf_counter()
    if catch_up is None:
        proven = await fence_arrived(ctx, result)
        if proven is None:  # no verification here: the slot's confirmed position, then the counts, prove it
            await wait_caught_up(source, database, config.catch_up_timeout_seconds, journal.object_name(database))
            for _ in range(LATE_SESSION_ROUNDS):
                if not await end_late_sessions(ctx, result):
                    break
                await wait_caught_up(source, database, config.catch_up_timeout_seconds, journal.object_name(database))
        result.proven = proven or frozenset()
    else:
        await catch_up(database, config.catch_up_timeout_seconds)
    result.timings["catch_up"] = time.perf_counter() - step
    failpoints.reached(f"caught_up:{database}")
    await journal.confirm()
    async with source.connection(database) as src, target.connection(database, data=True) as tgt:
        # Writes are frozen: a lock someone holds on the target must fail the cutover (and fall back),
        # not stretch the freeze; the work itself (a materialized view's refresh) has no time limit.
        await tgt.execute(f"SET lock_timeout = {int(config.catch_up_timeout_seconds * 1000)}")
        step = time.perf_counter()
        result.sequences = await sequences.sync(src, tgt)
        result.timings["sequences"] = time.perf_counter() - step
        failpoints.reached(f"sequences:{database}")
        step = time.perf_counter()
        await constraints.reinstate(tgt, parked)
        if entry := await journal.find(Change.CONSTRAINTS, TARGET, database):
            await journal.undone(entry)
        result.views = await matviews.refresh(src, tgt)
        await large_objects.copy(source, target, database, parallel=ctx.options.parallel, limits=ctx.config.limits)
        result.timings["constraints"] = time.perf_counter() - step
    step = time.perf_counter()
    result.counts = await counts_agree(ctx, result, native=catch_up is None)
    result.timings["counts"] = time.perf_counter() - step
    if not result.counts.ok:
        raise MigrationError(
            f"row counts of {database} differ in {len(result.counts.mismatches)} place(s): "
            + describe(result.counts.mismatches)
        )
    return result


async def fence_arrived(ctx: MigrationContext, result: DatabaseCutover) -> frozenset[tuple[str, str]] | None:
    """The exact catch-up, where continuous verification runs: a watermark written after the fence (and
    after the last session that slipped past it) seen on the target, so every change committed before it
    is there too. Returns the tables the window need not count (those verification covers; all of them
    are counted when sessions kept slipping in), or None when verification runs elsewhere or not at all."""
    db = result.database
    v = ctx.progress.of(db).verification
    if not continuous.running(v):
        return None
    deadline = time.monotonic() + ctx.config.catch_up_timeout_seconds
    for _ in range(LATE_SESSION_ROUNDS):
        watermark = time.time_ns()
        await ctx.journal.confirm()  # still this replica's migration: the watermark is a write on the source too
        async with ctx.source.connection(db) as src:
            await watermarks.fence_mark(src, v.schema, watermark)
        async with ctx.target.connection(db) as tgt:
            while not await watermarks.arrived(tgt, v.schema, watermark):
                if time.monotonic() >= deadline:
                    raise MigrationError(
                        f"the target did not catch up with {db} within {ctx.config.catch_up_timeout_seconds:g} s "
                        "(the fence's watermark did not arrive)",
                        "check the subscription on the target (pg_stat_subscription); nothing was switched",
                    )
                await asyncio.sleep(0.002)
        if not await end_late_sessions(ctx, result):
            return continuous.proven(ctx, db)
    return frozenset()


async def end_late_sessions(ctx: MigrationContext, result: DatabaseCutover) -> bool:
    """End the sessions that slipped past the fence; True when there were any. A session that was past its
    CONNECT check when the fence came shows up only once started, and may write after the catch-up's
    point: it is ended (and the fence's record counts it) so the target can be caught up with again."""
    async with ctx.source.connection(result.database) as conn:
        late = await end_sessions(conn, result.database)
    if late:
        result.fence.ended_sessions += late
        if entry := await ctx.journal.find(Change.FENCE, SOURCE, result.database):  # its record says all it did
            recorded = FencePayload.of(entry)
            recorded.ended_sessions = result.fence.ended_sessions
            await ctx.journal.note(entry, recorded)
    return bool(late)


async def counts_agree(ctx: MigrationContext, result: DatabaseCutover, native: bool) -> VerifyResult:
    """Row counts of both sides, compared again until they agree, for at most catch_up_timeout_seconds.

    The slot's confirmed position alone is no proof that the target shows every row: pgmig's crash test
    saw cutovers (one in four under load) where rows committed before the catch-up's own transaction were
    still missing on the target after the slot had confirmed past it, and arrived a moment later. The
    source is fenced, so the target can only be catching up; a difference that outlasts the timeout is a
    real one and the cutover falls back. Before each new comparison of a native migration, sessions that
    slipped past the fence since are ended and caught up with, so counts are never compared against a
    source someone still writes to."""
    deadline = time.monotonic() + ctx.config.catch_up_timeout_seconds
    while True:
        counts = await verify_database(
            ctx.source,
            ctx.target,
            result.database,
            ctx.options.parallel,
            counts_only=True,
            proven=result.proven,
            expected=result.expected,
        )
        if counts.ok or time.monotonic() >= deadline:
            return counts
        await asyncio.sleep(0.05)
        if native and await end_late_sessions(ctx, result):
            slot = ctx.journal.object_name(result.database)
            await wait_caught_up(ctx.source, result.database, ctx.config.catch_up_timeout_seconds, slot)


def describe(mismatches: list[Mismatch], limit: int = 10) -> str:
    return "; ".join(f"{m.kind} {m.name} source {m.source} target {m.target}" for m in mismatches[:limit]) + (
        f"; and {len(mismatches) - limit} more" if len(mismatches) > limit else ""
    )


async def check(
    source: ServerConfig,
    target: ServerConfig,
    result: DatabaseCutover,
    parked: constraints.Parked,
    parallel: int = 2,
    progress: DatabaseProgress | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
) -> list[str]:
    """After release: VALIDATE each foreign key, ANALYZE the materialized views the cutover filled, then
    full checksums against the target as it was at release. Returns what is wrong, in words (empty when
    all holds); never undoes anything. None has a time limit; while VALIDATE waits (for a lock),
    `progress` says for what."""
    problems: list[str] = []
    async with target.connection(result.database, data=True) as conn:
        step = time.perf_counter()
        pid = conn.get_server_pid()
        async with waits.watched(target, result.database, pid, progress, "validating foreign keys"):
            problems += await constraints.validate(conn, parked)
        result.timings["validate"] = time.perf_counter() - step
        if result.views:
            step = time.perf_counter()
            try:
                await analyze(target, result.database, parallel, result.views)
            except asyncpg.PostgresError as exc:
                problems.append(f"the materialized views of {result.database} could not be analyzed: {exc}")
            result.timings["analyze"] = time.perf_counter() - step
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            step = time.perf_counter()
            result.verify = await verify_database(
                source,
                target,
                result.database,
                parallel,
                target_snapshot=snapshot,
                limits=limits,
                expected=result.expected,
            )
            result.timings["verify"] = time.perf_counter() - step
    if not result.verify.ok:
        problems.append(
            f"checksums of {result.database} differ in {len(result.verify.mismatches)} place(s): "
            + describe(result.verify.mismatches)
        )
    return problems


async def rollback(
    source: ServerConfig, target: ServerConfig, journal: Journal, parked: dict[str, constraints.Parked]
) -> list[str]:
    """Before release: constraints parked again on the target, then every fence the journal holds lifted
    (so the changes applications make from now on stream in as before). Returns what was done; raises
    only after trying everything."""
    said, failed = [], []
    await journal.confirm()
    for db, p in parked.items():
        try:
            entry = await journal.find(Change.CONSTRAINTS, TARGET, db)
            replan = entry is not None and not entry.live
            if replan and entry is not None:  # journaled again before the constraints are parked again
                entry = await journal.plan(
                    Change.CONSTRAINTS, TARGET, db, data=constraints.ConstraintsPayload.of(entry)
                )
            async with target.connection(db) as conn:
                await constraints.repark(conn, p)
            if replan and entry is not None:
                await journal.done(entry)
        except ConnectionProblem as exc:
            if not exc.missing_database:  # a target database already dropped (a cancel) has nothing to park
                failed.append(f"parking the constraints of {db} again: {exc}")
        except (asyncpg.PostgresError, OSError) as exc:  # the fences are lifted whatever failed here
            why = str(exc) or f"no answer within {target.query_timeout:g} s"  # a TimeoutError says nothing
            failed.append(f"parking the constraints of {db} again: {why}")
    outcome = await undo.rollback(journal, source, target, (Change.FENCE,))
    said += outcome.done
    failed += outcome.failed
    if failed:
        raise MigrationError(
            "the fallback did not finish: " + "; ".join(failed),
            "check both servers are reachable; a pgmig restart tries again",
        )
    return said
