"""Watching a native online migration: lag and WAL held per database, alerts raised and cleared once,
and the move from catching up to ready for cutover."""

from __future__ import annotations

from migration_core import replication
from migration_core.context import MigrationContext
from migration_core.models import State
from migration_core.preflight import pretty_bytes


async def watch_native(ctx: MigrationContext) -> None:
    m, progress, alerts, c = ctx.m, ctx.progress, ctx.alerts, ctx.config
    lags: dict[str, replication.Lag] = {}
    for db in m.databases:
        async with ctx.source.connection(db) as conn:
            lags[db] = await replication.lag(conn, ctx.journal.object_name(db))
        p = progress.of(db)
        p.phase = "streaming" if lags[db].streaming else "not streaming"
        p.lag_bytes, p.lag_seconds, p.retained_bytes = lags[db].bytes, lags[db].seconds, lags[db].retained_bytes
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
    ready = all(
        x.streaming and (x.bytes or 0) <= c.ready_lag_bytes and (x.seconds or 0) <= c.ready_lag_seconds
        for x in lags.values()
    )
    if ready:
        worst = max(lags.values(), key=lambda x: x.bytes or 0)
        await mark_ready(ctx, f"lag {worst.seconds or 0:.1f} s, {pretty_bytes(worst.bytes or 0)} behind")


async def mark_ready(ctx: MigrationContext, how_far: str) -> None:
    """catching_up → ready_for_cutover, once, with the requester told what to do next."""
    if ctx.m.state is State.CATCHING_UP:
        await ctx.ledger.move(
            ctx.mid,
            State.READY_FOR_CUTOVER,
            f"ready for cutover: {how_far}. Syncing continues; `/pgmig cutover {ctx.mid}` when the team is ready",
            expect=(State.CATCHING_UP,),
        )
