"""The cutover of one online migration, per database, in the order that loses no row:

1. fence writes on the source: `default_transaction_read_only` for new sessions, CONNECT revoked from
   everyone but pgmig's role, then after a grace period every remaining client session ended (all at
   once, then polled until gone). Superusers can still connect and override: they are only softly
   fenced, and the report says so. The journal holds the setting before, every role revoked and
   pgmig's own grant *before* each of them is changed, so any later moment can lift the fence exactly;
2. wait until the slot has confirmed the source's WAL position taken after the fence;
3. set every target sequence to the source's state;
4. put back the foreign keys NOT VALID (enforced for new rows at once) and the triggers exactly as on
   the source, refresh materialized views, copy large objects;
5. compare row counts (the source is quiescent, so equality is exact; materialized views only warn).

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

from migration_core.changes import constraints, matviews, sequences, undo
from migration_core.engine.context import MigrationContext
from migration_core.observe import waits
from migration_core.observe.progress import DatabaseProgress
from migration_core.pg import failpoints
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.pg.sql import ident
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, TARGET, Change, Journal, JournalEntry
from migration_core.transfer import large_objects
from migration_core.transfer.analyze import analyze
from migration_core.transfer.limits import DEFAULT_LIMITS, DataLimits
from migration_core.verify.tables import Mismatch, VerifyResult, verify_database

CONNECT_GRANTEES = (
    "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee "
    "FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a "
    "WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT' ORDER BY 1"
)
READ_ONLY_SETTING = (
    "SELECT split_part(cfg, '=', 2) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, "
    "unnest(s.setconfig) cfg WHERE d.datname = current_database() AND s.setrole = 0 "
    "AND cfg LIKE 'default_transaction_read_only=%'"
)
OTHER_CLIENTS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' AND application_name <> 'pgmig'"
)
LATE_SESSION_ROUNDS = 3  # sessions that slipped in past the fence are ended (and caught up with) this often
WINDOW_STEPS = ("fence", "catch_up", "sequences", "constraints", "counts")  # while writes are fenced


@dataclass
class Fence:
    """What fencing changed on one source database (as the journal holds it)."""

    database: str
    read_only_before: str | None = None
    revoked_from: list[str] = field(default_factory=list)  # role names; "PUBLIC" for everyone
    ended_sessions: int = 0
    superusers: list[str] = field(default_factory=list)  # can still connect: softly fenced

    @classmethod
    def of(cls, entry: JournalEntry) -> "Fence":
        d = entry.data
        return cls(
            entry.database,
            d.get("read_only_before"),
            list(d.get("revoked", [])),
            d.get("ended_sessions", 0),
            list(d.get("superusers", [])),
        )


@dataclass
class DatabaseCutover:
    database: str
    fence: Fence
    timings: dict[str, float] = field(default_factory=dict)
    sequences: int = 0
    counts: VerifyResult | None = None
    verify: VerifyResult | None = None
    views: list[str] = field(default_factory=list)  # materialized views refreshed on the target (quoted)

    @property
    def window_seconds(self) -> float:
        """Writes unavailable: from the fence until the target is released (row counts equal)."""
        return sum(v for k, v in self.timings.items() if k in WINDOW_STEPS)


async def fence(source: ServerConfig, database: str, grace_seconds: float, journal: Journal) -> Fence:
    async with source.connection(database) as conn:
        await conn.execute("SET synchronous_commit = on")  # the fence is durable before any session is ended
        earlier = await journal.find(Change.FENCE, SOURCE, database)
        if earlier is not None and earlier.live:
            data = earlier.data  # never lifted (pgmig died): its "before" is the truth, not today's fenced state
        else:
            data = {
                "read_only_before": await conn.fetchval(READ_ONLY_SETTING),
                "revoked": [],
                "granted_self": "",
                "ended_sessions": 0,
                "superusers": [],
            }
        entry = await journal.plan(Change.FENCE, SOURCE, database, data=data)
        me = await conn.fetchval("SELECT current_user")
        streaming = journal.role_name(database)  # the subscription's own role keeps CONNECT: it must catch up
        grantees = [r["grantee"] for r in await conn.fetch(CONNECT_GRANTEES) if r["grantee"] != streaming]
        await conn.execute(f"ALTER DATABASE {ident(database)} SET default_transaction_read_only = on")
        if me not in grantees and not entry.data["granted_self"]:
            entry.data["granted_self"] = me
            await journal.note(entry)
            await conn.execute(f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(me)}")
        for name in grantees:
            if name == me:
                continue
            if name not in entry.data["revoked"]:
                entry.data["revoked"].append(name)
                await journal.note(entry)
            await conn.execute(
                f"REVOKE CONNECT ON DATABASE {ident(database)} FROM {'PUBLIC' if name == 'PUBLIC' else ident(name)}"
            )
        entry.data["superusers"] = [
            r["rolname"]
            for r in await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE rolsuper AND rolcanlogin AND rolname <> $1 ORDER BY 1", me
            )
        ]
        await journal.note(entry)
        await asyncio.sleep(grace_seconds)  # sessions may finish what they are doing
        entry.data["ended_sessions"] = entry.data.get("ended_sessions", 0) + await end_sessions(conn, database)
        await journal.done(entry)
        return Fence.of(entry)


async def end_sessions(conn: asyncpg.Connection, database: str) -> int:
    """End every application session on the database and wait until they are gone; returns how many."""
    pids = [r["pid"] for r in await conn.fetch(OTHER_CLIENTS)]
    for pid in pids:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    for _ in range(200):
        if not await conn.fetch(OTHER_CLIENTS):
            return len(pids)
        await asyncio.sleep(0.01)
    raise MigrationError(f"sessions on {database} would not end", "look at pg_stat_activity on the source")


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
    ctx: MigrationContext, database: str, parked: constraints.Parked, catch_up: CatchUp | None = None
) -> DatabaseCutover:
    """Steps 1–5 for one database; raises on any failure, leaving the undo to `rollback`.

    `catch_up` replaces step 2 for a managed service: wait for its slots, then trigger its cutover."""
    source, target, journal, config = ctx.source, ctx.target, ctx.journal, ctx.config
    grace = config.fence_grace_seconds
    started = time.perf_counter()
    result = DatabaseCutover(database, await fence(source, database, grace, journal))
    result.timings["fence"] = time.perf_counter() - started - grace
    step = time.perf_counter()
    if catch_up is None:
        await wait_caught_up(source, database, config.catch_up_timeout_seconds, journal.object_name(database))
        for _ in range(LATE_SESSION_ROUNDS):
            # A session that was past its CONNECT check when the fence came shows up only once started, and
            # may write after the catch-up's point: end it and catch up again, or the counts below fall back.
            async with source.connection(database) as conn:
                late = await end_sessions(conn, database)
            if not late:
                break
            result.fence.ended_sessions += late
            if entry := await journal.find(Change.FENCE, SOURCE, database):  # the fence's record says all it did
                entry.data["ended_sessions"] = result.fence.ended_sessions
                await journal.note(entry)
            await wait_caught_up(source, database, config.catch_up_timeout_seconds, journal.object_name(database))
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
    result.counts = await verify_database(source, target, database, ctx.options.parallel, counts_only=True)
    result.timings["counts"] = time.perf_counter() - step
    if not result.counts.ok:
        raise MigrationError(
            f"row counts of {database} differ in {len(result.counts.mismatches)} place(s): "
            + describe(result.counts.mismatches)
        )
    return result


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
            problems += await validate(conn, parked)
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
                source, target, result.database, parallel, target_snapshot=snapshot, limits=limits
            )
            result.timings["verify"] = time.perf_counter() - step
    if not result.verify.ok:
        problems.append(
            f"checksums of {result.database} differ in {len(result.verify.mismatches)} place(s): "
            + describe(result.verify.mismatches)
        )
    return problems


async def validate(conn: asyncpg.Connection, parked: constraints.Parked) -> list[str]:
    """VALIDATE every parked foreign key; each violation is reported, the others still validated."""
    problems = []
    for fk in parked.foreign_keys:
        try:
            await conn.execute(f"ALTER TABLE {fk.table} VALIDATE CONSTRAINT {ident(fk.name)}")
        except asyncpg.PostgresError as exc:
            problems.append(f"foreign key {fk.name} on {fk.table} does not hold: {exc}")
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
                entry = await journal.plan(Change.CONSTRAINTS, TARGET, db, data=entry.data)
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
