"""Watching a native online migration: lag and WAL held per database (and the slot guardian's look,
slot_guard.py), alerts raised and cleared once, and the move from catching up to ready for cutover.

An alert is for a condition that lasts: a subscription not streaming for a moment is normal (a new one
starting, a walsender restarting), so "not streaming" is said once it has lasted `STREAM_GRACE_SECONDS`
(or a progress interval, if longer). What stops the target from applying changes — a column the
source has and the target lacks after a schema change on the source, or the apply worker failing again
and again — is found and said with its fix ("replication blocked"), and keeps the cutover refused.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from migration_core.changes import replication
from migration_core.engine.context import MigrationContext
from migration_core.observe import ddl, forecast, slot_guard
from migration_core.observe.progress import DatabaseProgress, MigrationProgress
from migration_core.preflight.checks import pretty_bytes
from migration_core.state.errors import MigrationError
from migration_core.state.models import State
from migration_core.verify import continuous

CLOSE_WATCH_FIRST, CLOSE_WATCH_MAX = 0.05, 1.0  # seconds between looks right after the full load
STREAM_GRACE_SECONDS = 15.0  # a subscription not streaming for longer than this (and a tick) is alerted on
APPLY_ERROR_WINDOW = 60.0  # the apply worker failing twice within this many seconds: replication is blocked
LOG_TAIL = 256 << 10  # how much of the end of the target's server log is read for the apply worker's error

# The columns of every table the publication carries, as the source has them (generated ones are not sent)
PUBLISHED_COLUMNS = (
    "SELECT format('%I.%I', t.schemaname, t.tablename) AS tbl, "
    "array_agg(a.attname::text ORDER BY a.attnum) AS cols, "
    "array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS types, "
    "array_agg(quote_ident(a.attname) ORDER BY a.attnum) AS quoted "
    "FROM pg_publication_tables t "
    "JOIN pg_attribute a ON a.attrelid = format('%I.%I', t.schemaname, t.tablename)::regclass "
    "WHERE t.pubname = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' GROUP BY 1"
)
# The same tables' columns on the target (a table it does not have: NULL)
TARGET_COLUMNS = (
    "SELECT t AS tbl, CASE WHEN to_regclass(t) IS NOT NULL THEN ARRAY(SELECT a.attname::text FROM pg_attribute a "
    "WHERE a.attrelid = to_regclass(t) AND a.attnum > 0 AND NOT a.attisdropped) END AS cols FROM unnest($1::text[]) t"
)


async def measure(ctx: MigrationContext) -> dict[str, replication.Lag]:
    """Every database's lag, also written into its progress (with since when it has not streamed)."""
    lags: dict[str, replication.Lag] = {}
    for db in ctx.m.databases:
        async with ctx.kept(ctx.source, db) as conn:
            lags[db] = await replication.lag(conn, ctx.journal.object_name(db))
        p = ctx.progress.of(db)
        if not p.blocked:  # said until look_closer finds it fixed
            p.phase = "streaming" if lags[db].streaming else "not streaming"
        p.lag_bytes, p.lag_seconds, p.retained_bytes = lags[db].bytes, lags[db].seconds, lags[db].retained_bytes
        p.not_streaming_since = None if lags[db].streaming else p.not_streaming_since or time.monotonic()
    return lags


def servers_unreachable(progress: MigrationProgress, databases: list[str], why: str) -> None:
    """The servers did not answer a look: the live message says so, instead of the last look's `streaming`
    and its lag, which nobody can vouch for any more."""
    for db in databases:
        p = progress.of(db)
        p.phase = f"servers unreachable: {why.split(' — fix:', 1)[0]}"
        p.lag_bytes = p.lag_seconds = p.retained_bytes = p.wal_rate = p.limit_in = p.apply_rate = None
        p.verified = ""


async def look_closer(ctx: MigrationContext, lags: dict[str, replication.Lag]) -> dict[str, str]:
    """Each database whose target cannot apply the changes → why, with the fix (`DatabaseProgress.blocked`,
    and the live message's phase, say it too; an empty `blocked` when nothing is wrong)."""
    found = {}
    for db in lags:
        p = ctx.progress.of(db)
        p.blocked = await _blocked(ctx, db, p)
        if p.blocked:
            found[db] = p.blocked
            p.phase = f"replication blocked: {p.blocked}"
        else:
            p.phase = "streaming" if lags[db].streaming else "not streaming"
    return found


async def _blocked(ctx: MigrationContext, db: str, p: DatabaseProgress) -> str:
    """A schema change on the source the target lacks (said before the first change trips on it), else the
    apply worker failing again and again (PostgreSQL 15+ counts it) with its error from the target's server
    log when pgmig's login may read it."""
    w = p.schema_changes
    if w and w.waiting(ctx.mid) and w.capture:  # the decision may have come since the watch read the changes
        w.changes = await ddl.captured(ctx, db)
    if w and (waits := w.waiting(ctx.mid)):  # the stream waits there, on purpose
        _gated(p)
        return waits
    name = ctx.journal.object_name(db)
    async with ctx.kept(ctx.source, db) as src:
        published = await src.fetch(PUBLISHED_COLUMNS, name)
    async with ctx.kept(ctx.target, db) as tgt:
        there = {r["tbl"]: r["cols"] for r in await tgt.fetch(TARGET_COLUMNS, [r["tbl"] for r in published])}
    lacking = _lacking(published, there)
    # a change decided, or captured since the watch looked: the stream brings it
    expected = bool(w and (w.in_flight or await ddl.unseen(ctx, db, w)))
    if lacking and not expected:
        return lacking
    if expected:  # the capture's gate fails the worker until the change's decision reaches it: not a fault
        _gated(p)
        return ""
    async with ctx.kept(ctx.target, db) as tgt:
        # the worker restarts this long after failing: quiet for a few such rounds, it is applying again
        retry = await tgt.fetchval(
            "SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'"
        )
        quiet = max(3 * (retry or 5.0), 2 * ctx.config.progress_interval)
        failing = _apply_failing(p, await _apply_errors(tgt, name), quiet)
        if not failing:
            return ""
        said = await _logged_error(tgt, name)
    if said:
        return f"the target's apply worker keeps failing: {said} — fix that on the target and replication resumes"
    return (
        f"the target's apply worker failed {len(p.apply_failures)} times in the last {APPLY_ERROR_WINDOW:g} s "
        "(pg_stat_subscription_stats) — its error is in the target's server log (lines with 'logical replication'"
        " or 'replication target relation'): fix that on the target and replication resumes"
    )


def _lacking(published: list[asyncpg.Record], there: dict[str, list[str] | None]) -> str:
    """What the source's published tables have that the target's do not, with the statement that adds it."""
    said = []
    for r in published:
        table, cols = r["tbl"], there.get(r["tbl"])
        if cols is None:
            said.append(
                f"{table} is published on the source but does not exist on the target: create it there "
                f"as on the source (`pg_dump -s -t '{table}'` prints it) and replication resumes"
            )
            continue
        for col, kind, quoted in zip(r["cols"], r["types"], r["quoted"], strict=True):
            if col not in cols:
                said.append(
                    f"{table} has column {col} ({kind}) on the source, not on the target: add it on the target "
                    f"(`ALTER TABLE {table} ADD COLUMN {quoted} {kind}`) and replication resumes"
                )
    return "; ".join(said)


async def _apply_errors(tgt: asyncpg.Connection, subscription: str) -> int | None:
    """How often the subscription's apply worker failed since the statistics were reset (PostgreSQL 15+)."""
    try:
        return await tgt.fetchval(
            "SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = $1", subscription
        )
    except asyncpg.UndefinedTableError:
        return None


def _gated(p: DatabaseProgress) -> None:
    """The capture's gate fails the apply worker on purpose until a change's decision reaches it: none of those
    failures count, and the first look after the change passed takes the count afresh (else the failures
    between the last look and the pass would seem new, and the worker would seem to keep failing)."""
    p.apply_errors = None
    p.apply_failures.clear()


def _apply_failing(p: DatabaseProgress, count: int | None, quiet: float) -> bool:
    """Whether the apply worker keeps failing, as seen from look to look: at least twice within
    APPLY_ERROR_WINDOW (one failure is a hiccup: the worker restarts and goes on), the last time less than
    `quiet` seconds ago (once the cause is fixed, it applies again and the alert clears)."""
    now = time.monotonic()
    if count is not None and p.apply_errors is not None and count > p.apply_errors:
        p.apply_failures += [now] * min(count - p.apply_errors, 10)
    p.apply_errors = count
    p.apply_failures = [t for t in p.apply_failures if now - t < APPLY_ERROR_WINDOW]
    return len(p.apply_failures) >= 2 and now - p.apply_failures[-1] < quiet


async def _logged_error(tgt: asyncpg.Connection, subscription: str) -> str:
    """The apply worker's last error in the target's server log, found by its replication origin; empty
    when pgmig's login may not read the log (superuser or pg_read_server_files is needed) or it is not
    in a file."""
    try:
        oid = await tgt.fetchval("SELECT oid FROM pg_subscription WHERE subname = $1", subscription)
        path = await tgt.fetchval("SELECT pg_current_logfile()")
        if oid is None or path is None:
            return ""
        size = await tgt.fetchval("SELECT size FROM pg_stat_file($1)", path)
        start = max(0, size - LOG_TAIL)
        tail = await tgt.fetchval("SELECT pg_read_binary_file($1, $2, $3)", path, start, size - start)
    except asyncpg.PostgresError:  # not allowed to read it (or it moved): the error count must do
        return ""
    lines = tail.decode(errors="replace").splitlines()
    origin = f'replication origin "pg_{oid}"'
    for i in range(len(lines) - 1, -1, -1):
        if "ERROR:" in lines[i] and any(origin in line for line in lines[i + 1 : i + 4]):
            return lines[i].split("ERROR:", 1)[1].strip()
    return ""


def caught_up(ctx: MigrationContext, lags: dict[str, replication.Lag]) -> str:
    """How far behind the worst database is, when all stream within the ready thresholds and none is
    blocked; else empty."""
    c = ctx.config
    if not all(
        x.streaming
        and (x.bytes or 0) <= c.ready_lag_bytes
        and (x.seconds or 0) <= c.ready_lag_seconds
        and not ctx.progress.of(db).blocked
        for db, x in lags.items()
    ):
        return ""
    worst = max(lags.values(), key=lambda x: x.bytes or 0)
    return f"lag {worst.seconds or 0:.1f} s, {pretty_bytes(worst.bytes or 0)} behind"


def replication_words(lags: dict[str, replication.Lag]) -> str:
    """Each database's replication, in words: `shop streaming, 0.2 s / 1.0 kB behind; crm not streaming`."""
    return "; ".join(
        f"{db} streaming, {x.seconds or 0:.1f} s / {pretty_bytes(x.bytes or 0)} behind"
        if x.streaming
        else f"{db} not streaming"
        for db, x in lags.items()
    )


async def require_caught_up(ctx: MigrationContext, doing: str, lag_too: bool = True) -> None:
    """Refuse `doing` (a cutover) unless every subscription streams — and, with `lag_too`, within the ready
    thresholds — now: a cutover over a broken subscription can only wait for the catch-up timeout and fall
    back. (Right before the fence a busy moment's lag is the catch-up's business; a broken stream is not.)"""
    if ddl.wanted(ctx):
        await ddl.require_decided(ctx, doing)
    lags = await measure(ctx)
    if blocked := await look_closer(ctx, lags):
        raise MigrationError(
            f"{doing}: replication blocked — " + "; ".join(f"{db}: {why}" for db, why in blocked.items()),
            "once that is fixed, `/pgmig status` shows every database streaming again: then ask again",
        )
    if not (caught_up(ctx, lags) if lag_too else all(x.streaming for x in lags.values())):
        raise MigrationError(
            f"{doing}: replication is not caught up — {replication_words(lags)}",
            "check the target's subscription (pg_stat_subscription and the target's server log) and that the "
            "target still reaches the source; when `/pgmig status` shows every database streaming and caught "
            "up, ask again",
        )


async def until_ready(ctx: MigrationContext, within: float) -> None:
    """Right after the full load, look closely (from 50 ms apart, backing off to 1 s) until every
    subscription has caught up, so ready_for_cutover follows at once rather than at the next tick;
    after `within` seconds the regular tick, with its alerts, takes over."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + within, CLOSE_WATCH_FIRST
    while loop.time() < deadline:
        lags = await measure(ctx)
        if caught_up(ctx, lags) and not await look_closer(ctx, lags):  # a blocked database is never ready
            ctx.m = await ctx.ledger.get(ctx.mid)
            await mark_ready(ctx, caught_up(ctx, lags))
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, CLOSE_WATCH_MAX)


async def watch_native(ctx: MigrationContext) -> None:
    m, alerts, c = ctx.m, ctx.alerts, ctx.config
    lags = await measure(ctx)
    if ddl.wanted(ctx):
        await ddl.watch(ctx)
    blocked = await look_closer(ctx, lags)
    await alerts.alert(
        m,
        "blocked",
        bool(blocked),
        "⚠️ replication blocked: " + "; ".join(f"{db}: {why}" for db, why in blocked.items()),
    )
    held = {db: x.retained_bytes for db, x in lags.items() if (x.retained_bytes or 0) > c.wal_retention_alert_bytes}
    await alerts.alert(
        m,
        "wal",
        bool(held),
        "⚠️ replication slots hold WAL on the source: "
        + ", ".join(f"{db} {pretty_bytes(b or 0)}" for db, b in held.items())
        + f" (limit {pretty_bytes(c.wal_retention_alert_bytes)})"
        " — the source's disk fills if this goes on; check the target is applying, or cancel",
    )
    await slot_guard.guard(ctx)
    await forecast.look(ctx)
    if c.verify_chunk_rows > 0:
        budget = min(c.progress_interval * 0.75, continuous.WALK_BUDGET)
        differ = await continuous.step(ctx, c.verify_chunk_rows, budget)
        await alerts.alert(
            m,
            "diverged",
            bool(differ),
            "❌ continuous verification found ranges that differ (twice, each compared at one point of the stream): "
            + "; ".join(f"{db}: {', '.join(said)}" for db, said in differ.items()),
        )
    behind = {
        db: x for db, x in lags.items() if (x.bytes or 0) > c.lag_alert_bytes or (x.seconds or 0) > c.lag_alert_seconds
    }
    await alerts.alert(
        m,
        "lag",
        bool(behind),
        "⚠️ replication lag above the alert threshold: "
        + ", ".join(f"{db} {pretty_bytes(x.bytes or 0)} / {x.seconds or 0:.1f} s" for db, x in behind.items()),
    )
    grace, now = max(STREAM_GRACE_SECONDS, c.progress_interval), time.monotonic()
    stopped = [
        db
        for db in lags
        if (since := ctx.progress.of(db).not_streaming_since) is not None
        and now - since >= grace
        and db not in blocked  # said with its cause above
    ]
    await alerts.alert(
        m,
        "stream",
        bool(stopped),
        f"⚠️ not streaming: {', '.join(stopped)} (for more than {grace:g} s) — the target's "
        "subscription is not connected; check its server log and pg_stat_subscription",
    )
    if how_far := caught_up(ctx, lags):
        await mark_ready(ctx, how_far)


async def mark_ready(ctx: MigrationContext, how_far: str) -> None:
    """catching_up → ready_for_cutover, once, with the requester told what to do next."""
    if ctx.m.state is State.CATCHING_UP:
        await ctx.ledger.move(
            ctx.mid,
            State.READY_FOR_CUTOVER,
            f"ready for cutover: {how_far}. Syncing continues; `/pgmig cutover {ctx.mid}` when the team is ready",
            expect=(State.CATCHING_UP,),
        )
