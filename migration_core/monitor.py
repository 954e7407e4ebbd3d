"""Watching a native online migration: lag and WAL held per database, alerts raised and cleared once,
and the move from catching up to ready for cutover."""
from __future__ import annotations

from migration_core import replication
from migration_core.engine_config import EngineConfig
from migration_core.ledger import Alerts, Ledger
from migration_core.models import Migration, State
from migration_core.preflight import pretty_bytes
from migration_core.servers import ServerConfig


async def watch_native(ledger: Ledger, alerts: Alerts, config: EngineConfig, m: Migration,
                       source: ServerConfig) -> None:
    progress = ledger.progress(m.id)
    lags: dict[str, replication.Lag] = {}
    for db in m.databases:
        conn = await source.connect(db)
        try:
            lags[db] = await replication.lag(conn, ledger.journal(m.id).object_name(db))
        finally:
            await conn.close()
        p = progress.of(db)
        p.phase = "streaming" if lags[db].streaming else "not streaming"
        p.lag_bytes, p.lag_seconds, p.retained_bytes = lags[db].bytes, lags[db].seconds, lags[db].retained_bytes
    c = config
    held = {db: x.retained_bytes for db, x in lags.items() if (x.retained_bytes or 0) > c.wal_retention_alert_bytes}
    await alerts.alert(m, "wal", bool(held), "⚠️ replication slots hold WAL on the source: " + ", ".join(
        f"{db} {pretty_bytes(b or 0)}" for db, b in held.items()) + f" (limit {pretty_bytes(c.wal_retention_alert_bytes)})"
        " — the source's disk fills if this goes on; check the target is applying, or cancel")
    behind = {db: x for db, x in lags.items()
              if (x.bytes or 0) > c.lag_alert_bytes or (x.seconds or 0) > c.lag_alert_seconds}
    await alerts.alert(m, "lag", bool(behind), "⚠️ replication lag above the alert threshold: " + ", ".join(
        f"{db} {pretty_bytes(x.bytes or 0)} / {x.seconds or 0:.1f} s" for db, x in behind.items()))
    stopped = [db for db, x in lags.items() if not x.streaming]
    await alerts.alert(m, "stream", bool(stopped), f"⚠️ not streaming: {', '.join(stopped)} — the target's "
                       "subscription is not connected; check its server log and pg_stat_subscription")
    ready = all(x.streaming and (x.bytes or 0) <= c.ready_lag_bytes and (x.seconds or 0) <= c.ready_lag_seconds
                for x in lags.values())
    if ready:
        worst = max(lags.values(), key=lambda x: x.bytes or 0)
        await mark_ready(ledger, m, f"lag {worst.seconds or 0:.1f} s, {pretty_bytes(worst.bytes or 0)} behind")


async def mark_ready(ledger: Ledger, m: Migration, how_far: str) -> None:
    """catching_up → ready_for_cutover, once, with the requester told what to do next."""
    if m.state is State.CATCHING_UP:
        await ledger.move(m.id, State.READY_FOR_CUTOVER, f"ready for cutover: {how_far}. Syncing continues; "
                          f"`/pgmig cutover {m.id}` when the team is ready", expect=(State.CATCHING_UP,))
