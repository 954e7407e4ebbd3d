"""The flexible server's built-in migration service (`migrations.create` on the target server): it
copies schema and data itself and, online, streams changes until pgmig triggers its cutover."""

from __future__ import annotations

from azure.mgmt.postgresqlflexibleservers import models

from migration_core.azure.backend import BackendRef, BackendStatus, DatabaseStatus, Phase, number, seconds, word
from migration_core.azure.clients import AzureClients
from migration_core.azure.lro import call
from migration_core.errors import MigrationError
from migration_core.models import Migration, Mode
from migration_core.servers import ServerConfig

DONE_STATES = {"succeeded", "completed"}


def azure_target(target: ServerConfig) -> tuple[str, str]:
    """(resource group, server name) of a target that is a flexible server, or a clear refusal."""
    if not target.azure_name or not target.azure_resource_group:
        raise MigrationError(
            f"{target.name} is not known as an Azure flexible server",
            f"add azure_resource_group (and azure_server) to [servers.{target.name}], "
            "or create it with `/pgmig provision`",
        )
    return target.azure_resource_group, target.azure_name


def source_reference(source: ServerConfig) -> str:
    """An on-premises source as the service names it: host:port@user, as Azure reaches it."""
    return f"{source.replication_host or source.host}:{source.replication_port or source.port}@{source.user}"


class FlexBackend:
    label = "Azure flexible-server migration service"
    prepares_schema = False

    def __init__(self, clients: AzureClients) -> None:
        self.clients = clients

    async def start(self, m: Migration, name: str, source: ServerConfig, target: ServerConfig) -> BackendRef:
        group, server = azure_target(target)
        props = models.MigrationProperties(
            migration_mode="Online" if m.mode is Mode.ONLINE else "Offline",
            migration_option="ValidateAndMigrate",
            source_type="OnPremises",
            ssl_mode="Prefer" if source.sslmode in ("disable", "allow", "prefer") else "Require",
            source_db_server_resource_id=source_reference(source),
            dbs_to_migrate=list(m.databases),
            overwrite_dbs_in_target="True" if m.options.overwrite else "False",
            secret_parameters=models.MigrationSecretParameters(
                admin_credentials=models.AdminCredentials(
                    source_server_password=source.password() or "", target_server_password=target.password() or ""
                ),
                source_server_username=source.user,
                target_server_username=target.user,
            ),
        )
        async with self.clients.flex() as client:
            found = await call(client.servers.get(group, server), f"looking up target server {server}")
            await call(
                client.migrations.create(
                    group, server, name, models.Migration(location=found.location, properties=props)
                ),
                f"creating migration {name} on {server}",
            )
        return BackendRef(group, server=server, migration=name)

    async def status(self, ref: BackendRef) -> BackendStatus:
        async with self.clients.flex() as client:
            found = await call(
                client.migrations.get(ref.resource_group, ref.server, ref.migration),
                f"reading migration {ref.migration}",
            )
        current = found.properties.current_status if found.properties else None
        state = word(current.state) if current else ""
        details = current.current_sub_state_details if current else None
        sub = word(details.current_sub_state) if details else ""
        dbs = {name: _database(name, d) for name, d in ((details.db_details or {}) if details else {}).items()}
        waiting = sub == "WaitingForCutoverTrigger" or (dbs and all(d.ready or d.completed for d in dbs.values()))
        if state in ("Failed", "ValidationFailed"):
            errors = [f"{d.database}: {d.message}" for d in dbs.values() if d.message]
            phase, error = Phase.FAILED, "; ".join([str((current.error if current else None) or state)] + errors)
        elif state in ("Canceled", "Cancelled"):
            phase, error = Phase.CANCELLED, ""
        elif state == "Succeeded":
            phase, error = Phase.SUCCEEDED, ""
        elif waiting:
            phase, error = Phase.READY, ""
        else:
            phase, error = Phase.LOADING, ""
        return BackendStatus(phase, f"{state}/{sub}".strip("/"), dbs, error)

    async def cutover(self, ref: BackendRef, database: str) -> None:
        await self._patch(
            ref,
            models.MigrationPropertiesForPatch(trigger_cutover="True", dbs_to_trigger_cutover_on=[database]),
            f"triggering the cutover of {database}",
        )

    async def cancel(self, ref: BackendRef) -> None:
        await self._patch(ref, models.MigrationPropertiesForPatch(cancel="True"), f"cancelling {ref.migration}")

    async def _patch(self, ref: BackendRef, props: models.MigrationPropertiesForPatch, what: str) -> None:
        async with self.clients.flex() as client:
            await call(
                client.migrations.update(
                    ref.resource_group, ref.server, ref.migration, models.MigrationResourceForPatch(properties=props)
                ),
                what,
            )


def _database(name: str, d: models.DatabaseMigrationState) -> DatabaseStatus:
    state = word(d.migration_state)
    done, loading, queued, errored = (
        number(d.full_load_completed_tables),
        number(d.full_load_loading_tables),
        number(d.full_load_queued_tables),
        number(d.full_load_errored_tables),
    )
    return DatabaseStatus(
        name,
        state,
        done,
        done + loading + queued + errored,
        errored,
        number(d.applied_changes) if d.applied_changes is not None else None,
        number(d.incoming_changes) if d.incoming_changes is not None else None,
        seconds(d.latency),
        str(d.message or ""),
        (number(d.cdc_insert_counter), number(d.cdc_update_counter), number(d.cdc_delete_counter)),
        ready=state == "WaitingForCutoverTrigger",
        completed=state.lower() in DONE_STATES,
    )
