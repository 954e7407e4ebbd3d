"""Builds the long-lived services every transport shares: store, engine, publisher."""
from __future__ import annotations

from pathlib import Path

from bot.settings import Settings, SettingsError
from handlers.authz import Directory
from handlers.context import Poster, Services
from handlers.publisher import ChannelPublisher
from migration_core.engine import Engine, EngineConfig
from migration_core.store import Store


async def build_services(settings: Settings, poster: Poster, directory: Directory) -> Services:
    """Open the store, wire the engine to post through `poster`, and pick up interrupted migrations."""
    try:
        store = await Store.open(settings.state_url)
    except Exception as exc:
        raise SettingsError(f"PGMIG_STATE: cannot open the state store: {type(exc).__name__}: {exc}") from None
    m, o = settings.migration, settings.online
    mb = 1 << 20
    engine = Engine(store, settings.servers, ChannelPublisher(poster, store, settings.policy),
                    EngineConfig(workdir=Path(m.workdir).absolute(), pg_bindir=m.pg_bindir,
                                 progress_interval=m.progress_interval_seconds, default_parallel=m.parallel,
                                 ready_lag_seconds=o.ready_lag_seconds, ready_lag_bytes=int(o.ready_lag_mb * mb),
                                 lag_alert_seconds=o.lag_alert_seconds, lag_alert_bytes=int(o.lag_alert_mb * mb),
                                 wal_retention_alert_bytes=int(o.wal_retention_alert_mb * mb), digest=m.digest,
                                 lease_seconds=m.lease_seconds,
                                 fence_grace_seconds=o.fence_grace_seconds,
                                 catch_up_timeout_seconds=o.catch_up_timeout_seconds))
    await engine.recover()
    engine.schedule_digest()
    return Services(settings.servers, store, settings.policy, directory, engine, poster)


async def close_services(services: Services) -> None:
    await services.engine.close()
    await services.store.close()
