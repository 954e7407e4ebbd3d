"""Builds the long-lived services every transport shares: store, engine, publisher."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.replica import replica_id
from bot.settings import Settings, SettingsError
from handlers.authz import Directory
from handlers.context import Poster, Services
from handlers.publisher import ChannelPublisher, ProvisioningPublisher
from migration_core.azure.backend import ManagedBackend
from migration_core.azure.clients import AzureClients
from migration_core.azure.dms_backend import DmsBackend
from migration_core.azure.flex_backend import FlexBackend
from migration_core.azure.provisioning import Provisioner
from migration_core.engine.api import Engine, EngineConfig
from migration_core.pg.servers import ServerConfig
from migration_core.store import Store
from migration_core.transfer.limits import DataLimits

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


@runtime_checkable
class Budgeted(Protocol):
    """A poster whose edits draw on a budget every replica shares, kept in the state store (bot.slack_poster's,
    which the shell never loads: slack-sdk's web client and aiohttp are a tenth of a second of each start)."""

    budget: Store | None


async def build_services(
    settings: Settings, poster: Poster, directory: Directory, azure_credential: AsyncTokenCredential | None = None
) -> Services:
    """Open the store, wire the engine to post through `poster`, and pick up interrupted migrations.

    Servers pgmig provisioned earlier come back from the store (a `[servers.NAME]` entry wins)."""
    try:
        store = await Store.open(settings.state_url)
    except Exception as exc:
        raise SettingsError(f"PGMIG_STATE: cannot open the state store: {type(exc).__name__}: {exc}") from None
    if isinstance(poster, Budgeted):
        poster.budget = store  # one chat.update budget for every replica
    for name, data in (await store.saved_servers()).items():
        settings.servers.setdefault(name, ServerConfig(**data))
    azure = AzureClients(settings.azure, azure_credential)
    backends: dict[str, ManagedBackend] = (
        {"flex": FlexBackend(azure), "dms": DmsBackend(azure)} if settings.azure.enabled else {}
    )
    m, o = settings.migration, settings.online
    mb = 1 << 20
    publisher = ChannelPublisher(poster, settings.policy)
    engine = Engine(
        store,
        settings.servers,
        publisher,
        EngineConfig(
            workdir=Path(m.workdir).absolute(),
            pg_bindir=m.pg_bindir,
            progress_interval=m.progress_interval_seconds,
            default_parallel=m.parallel,
            ready_lag_seconds=o.ready_lag_seconds,
            ready_lag_bytes=int(o.ready_lag_mb * mb),
            lag_alert_seconds=o.lag_alert_seconds,
            lag_alert_bytes=int(o.lag_alert_mb * mb),
            wal_retention_alert_bytes=int(o.wal_retention_alert_mb * mb),
            slot_warn_share=o.slot_warn_share,
            slot_warn_minutes=o.slot_warn_minutes,
            max_window_seconds=o.max_window_seconds,
            verify_chunk_rows=o.verify_chunk_rows,
            require_verified_share=o.require_verified_share,
            capture_ddl=o.capture_ddl,
            ddl_auto_apply=tuple(o.ddl_auto_apply),
            digest=m.digest,
            lease_seconds=m.lease_seconds,
            replica_id=replica_id(settings.home),
            keep_exports=m.keep_exports,
            fence_grace_seconds=o.fence_grace_seconds,
            catch_up_timeout_seconds=o.catch_up_timeout_seconds,
            managed_poll_seconds=max(settings.azure.poll_seconds, 0.05),
            limits=DataLimits(stall_seconds=m.stall_seconds, split_table_bytes=int(m.split_table_mb * mb)),
        ),
        backends,
    )
    publisher.engine = engine
    await engine.recover()
    engine.schedule_digest()
    provisioner = Provisioner(
        engine,
        azure,
        ProvisioningPublisher(poster, settings.policy),
        required_approvals=settings.policy.required_approvals if settings.policy.approvers else 0,
        approval_minutes=settings.policy.approval_timeout_minutes,
    )
    await provisioner.resume()
    return Services(settings.servers, settings.policy, directory, engine, poster, provisioner)


async def close_services(services: Services) -> None:
    await services.engine.close()
    await services.provisioner.azure.close()
    await services.engine.store.close()
