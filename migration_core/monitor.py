"""Watching a native online migration: lag and WAL held per database, alerts raised and cleared once,
and the move from catching up to ready for cutover."""

from __future__ import annotations

import asyncio

from migration_core import replication
from migration_core.context import MigrationContext
from migration_core.errors import MigrationError
from migration_core.models import State
from migration_core.preflight import pretty_bytes

CLOSE_WATCH_FIRST, CLOSE_WATCH_MAX = 0.05, 1.0  # seconds between looks right after the full load


async def measure(ctx: MigrationContext) -> dict[str, replication.Lag]:
    """Every database's lag, also written into its progress."""
    lags: dict[str, replication.Lag] = {}
    for db in ctx.m.databases:
        async with ctx.source.connection(db) as conn:
            lags[db] = await replication.lag(conn, ctx.journal.object_name(db))
        p = ctx.progress.of(db)
        p.phase = "streaming" if lags[db].streaming else "not streaming"
        p.lag_bytes, p.lag_seconds, p.retained_bytes = lags[db].bytes, lags[db].seconds, lags[db].retained_bytes
    return lags


def caught_up(ctx: MigrationContext, lags: dict[str, replication.Lag]) -> str:
    """How far behind the worst database is, when all stream within the ready thresholds; else empty."""
    c = ctx.config
    if not all(
        x.streaming and (x.bytes or 0) <= c.ready_lag_bytes and (x.seconds or 0) <= c.ready_lag_seconds
        for x in lags.values()
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
    lags = await measure(ctx)
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
        if how_far := caught_up(ctx, await measure(ctx)):
            ctx.m = await ctx.ledger.get(ctx.mid)
            await mark_ready(ctx, how_far)
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, CLOSE_WATCH_MAX)


async def watch_native(ctx: MigrationContext) -> None:
    m, alerts, c = ctx.m, ctx.alerts, ctx.config
    lags = await measure(ctx)
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
    stopped = [db for db, x in lags.items() if not x.streaming]
    await alerts.alert(
        m,
        "stream",
        bool(stopped),
        f"⚠️ not streaming: {', '.join(stopped)} — the target's "
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
