"""Azure Database Migration Service (classic): service → project (PostgreSql → AzureDbForPostgreSql) →
task Migrate.PostgreSql.AzureDbForPostgreSql.SyncV2. It moves data only (online), so pgmig creates the
target schema first, with foreign keys dropped and triggers disabled until its own cutover.

Microsoft steers PostgreSQL users from DMS classic to the flexible server's own migration service
(`--backend flex`), and DMS classic takes sources of PostgreSQL 9.4 to 13 only: pgmig refuses other
sources before creating anything and says so in its advice. The subscription must be registered for
Microsoft.DataMigration (providers.ensure_registered checks, registers when allowed, or says who must)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from migration_core.azure.backend import BackendRef, BackendStatus, DatabaseStatus, Phase, number, seconds, word
from migration_core.azure.clients import AzureClients
from migration_core.azure.errors import explain
from migration_core.azure.flex_backend import azure_target
from migration_core.azure.lro import call, run_lro
from migration_core.azure.providers import DMS_NAMESPACE, ensure_registered
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.models import Migration, Mode

if TYPE_CHECKING:
    from azure.mgmt.datamigration import models
    from azure.mgmt.datamigration.aio import DataMigrationManagementClient

TASK = "migrate"
READY_STATES = {"READY_TO_COMPLETE"}
DONE_STATES = {"COMPLETE"}
FAILED_STATES = {"FAILED", "VALIDATION_FAILED"}
SOURCE_VERSIONS = (90400, 140000)  # DMS classic migrates PostgreSQL 9.4 up to 13 (server_version_num)
ADVICE = (
    "Microsoft recommends the flexible server's own migration service (`--backend flex`) over DMS classic "
    "for PostgreSQL; DMS classic takes sources of PostgreSQL 9.4 to 13 only"
)


async def source_version(source: ServerConfig) -> int:
    """The source's server_version_num (90624 for 9.6.24)."""
    try:
        async with source.connection() as conn:
            return int(await conn.fetchval("SHOW server_version_num"))
    except ConnectionProblem as problem:
        raise MigrationError(f"cannot read the version of {source.name}: {problem.message}", problem.fix) from None


def version_problem(version_num: int) -> MigrationError | None:
    low, high = SOURCE_VERSIONS
    if low <= version_num < high:
        return None
    shown = f"{version_num // 10000}" if version_num >= 100000 else f"{version_num // 10000}.{version_num // 100 % 100}"
    return MigrationError(
        f"Azure DMS classic migrates PostgreSQL 9.4 to 13 only; the source runs PostgreSQL {shown}",
        "use `--backend flex` (the flexible server's migration service, which Microsoft recommends) or "
        "`--backend native`",
    )


def _connection(server: ServerConfig, host: str, port: int) -> models.PostgreSqlConnectionInfo:
    from azure.mgmt.datamigration import models

    return models.PostgreSqlConnectionInfo(
        server_name=host,
        port=port,
        user_name=server.user,
        password=server.password() or "",
        database_name=server.database,
        encrypt_connection=server.sslmode not in ("disable", "allow"),
        trust_server_certificate=server.sslmode in ("require", "prefer"),
    )


class DmsBackend:
    label = "Azure DMS"
    prepares_schema = True
    advice = ADVICE

    def __init__(self, clients: AzureClients) -> None:
        self.clients = clients

    async def start(
        self, m: Migration, name: str, source: ServerConfig, target: ServerConfig, earlier: BackendRef | None = None
    ) -> BackendRef:
        """The service (created when missing), a project and the sync task. `earlier` needs nothing here:
        pgmig itself rebuilt the target schema of a retry."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError
        from azure.mgmt.datamigration import models

        if m.mode is not Mode.ONLINE:
            raise MigrationError(
                "Azure DMS classic migrates PostgreSQL online only",
                "use `--backend flex` or `--backend native` for an offline migration",
            )
        if problem := version_problem(await source_version(source)):
            raise problem
        group, target_server = azure_target(target)
        await ensure_registered(self.clients, DMS_NAMESPACE)
        service, project = self.clients.config.dms_service, name
        async with self.clients.dms() as dms:
            try:
                found = await dms.services.get(group, service)
                location = found.location
                sku = found.sku.name if found.sku else ""
                if sku and not sku.startswith("Premium"):
                    raise MigrationError(
                        f"the DMS service {service} is {sku}; online migrations need a Premium SKU",
                        "name a Premium service in [azure] dms_service (pgmig creates one with "
                        "[azure] dms_sku when it does not exist)",
                    )
            except ResourceNotFoundError:
                location = await self._create_service(dms, group, service, target_server)
            except AzureError as exc:
                raise explain(exc, f"looking up the DMS service {service}") from None
            await call(
                dms.projects.create_or_update(
                    group,
                    service,
                    project,
                    models.Project(
                        location=location, source_platform="PostgreSql", target_platform="AzureDbForPostgreSql"
                    ),
                ),
                f"creating the DMS project {project}",
            )
            task_input = models.MigratePostgreSqlAzureDbForPostgreSqlSyncTaskInput(
                selected_databases=[
                    models.MigratePostgreSqlAzureDbForPostgreSqlSyncDatabaseInput(name=db, target_database_name=db)
                    for db in m.databases
                ],
                source_connection_info=_connection(
                    source, source.replication_host or source.host, source.replication_port or source.port
                ),
                target_connection_info=_connection(target, target.host, target.port),
            )
            await call(
                dms.tasks.create_or_update(
                    group,
                    service,
                    project,
                    TASK,
                    models.ProjectTask(
                        properties=models.MigratePostgreSqlAzureDbForPostgreSqlSyncTaskProperties(input=task_input)
                    ),
                ),
                f"creating the DMS task in {project}",
            )
        return BackendRef(group, service=service, project=project, task=TASK)

    async def _create_service(
        self, dms: DataMigrationManagementClient, group: str, service: str, target_server: str
    ) -> str:
        """A Premium service (online migrations need one) in the configured subnet; returns its region."""
        from azure.mgmt.datamigration import models

        cfg = self.clients.config
        if not cfg.dms_sku.startswith("Premium"):
            raise MigrationError(
                f"[azure] dms_sku is {cfg.dms_sku}; online migrations need a Premium SKU",
                "set dms_sku to e.g. Premium_4vCores",
            )
        if not cfg.dms_subnet:
            raise MigrationError(
                f"the DMS service {service} does not exist and pgmig cannot create it without a subnet",
                "set [azure] dms_subnet to the resource id of a VNet subnet that reaches "
                "both servers (or create the service yourself and name it in [azure] dms_service)",
            )
        location = cfg.region
        if not location:
            async with self.clients.flex() as client:
                found = await call(
                    client.servers.get(group, target_server), f"looking up target server {target_server}"
                )
                location = found.location
        await run_lro(
            dms.services.begin_create_or_update(
                group,
                service,
                models.DataMigrationService(
                    location=location, sku=models.ServiceSku(name=cfg.dms_sku), virtual_subnet_id=cfg.dms_subnet
                ),
            ),
            f"creating the DMS service {service}",
        )
        return location

    async def status(self, ref: BackendRef) -> BackendStatus:
        async with self.clients.dms() as dms:
            task = await call(
                dms.tasks.get(ref.resource_group, ref.service, ref.project, ref.task, expand="output"),
                f"reading the DMS task of {ref.project}",
            )
        props = task.properties
        if props is None:
            raise MigrationError(f"Azure returned the DMS task of {ref.project} without its properties")
        state = word(props.state)
        dbs: dict[str, DatabaseStatus] = {}
        errors = [f"{e.message}" for e in (props.errors or []) if getattr(e, "message", None)]
        for out in getattr(props, "output", None) or []:
            kind = word(out.result_type)
            if kind == "DatabaseLevelOutput":
                dbs[out.database_name] = _database(out)
            elif kind == "ErrorOutput" and out.error is not None:
                errors.append(str(out.error.message or out.error.actionable_message or "error"))
            elif kind == "DatabaseLevelErrorOutput" and out.error_message:
                errors.append(str(out.error_message))
        db_states = {d.state for d in dbs.values()}
        if state in ("Failed", "FailedInputValidation", "Faulted") or db_states & FAILED_STATES:
            phase = Phase.FAILED
        elif state == "Canceled" or db_states & {"CANCELLED"}:
            phase = Phase.CANCELLED
        elif dbs and all(d.completed for d in dbs.values()):
            phase = Phase.SUCCEEDED
        elif dbs and all(d.ready or d.completed for d in dbs.values()):
            phase = Phase.READY
        else:
            phase = Phase.LOADING
        detail = state + (f" ({', '.join(sorted(db_states))})" if db_states else "")
        return BackendStatus(phase, detail, dbs, "; ".join(errors) if phase is Phase.FAILED else "")

    async def advance(self, ref: BackendRef, status: BackendStatus, source: ServerConfig, target: ServerConfig) -> str:
        """DMS classic asks nothing of pgmig between start and cutover."""
        return ""

    async def cutover(self, ref: BackendRef, database: str) -> None:
        from azure.mgmt.datamigration import models

        async with self.clients.dms() as dms:
            await call(
                dms.tasks.command(
                    ref.resource_group,
                    ref.service,
                    ref.project,
                    ref.task,
                    models.MigrateSyncCompleteCommandProperties(
                        input=models.MigrateSyncCompleteCommandInput(database_name=database)
                    ),
                ),
                f"completing {database} in DMS",
            )

    async def cancel(self, ref: BackendRef) -> None:
        async with self.clients.dms() as dms:
            await call(
                dms.tasks.cancel(ref.resource_group, ref.service, ref.project, ref.task),
                f"cancelling the DMS task of {ref.project}",
            )


def _database(out: models.MigratePostgreSqlAzureDbForPostgreSqlSyncTaskOutputDatabaseLevel) -> DatabaseStatus:
    state = word(out.migration_state)
    done, loading, queued, errored = (
        number(out.full_load_completed_tables),
        number(out.full_load_loading_tables),
        number(out.full_load_queued_tables),
        number(out.full_load_errored_tables),
    )
    return DatabaseStatus(
        out.database_name or "",
        state,
        done,
        done + loading + queued + errored,
        errored,
        number(out.applied_changes) if out.applied_changes is not None else None,
        number(out.incoming_changes) if out.incoming_changes is not None else None,
        seconds(out.latency),
        "",
        (number(out.cdc_insert_counter), number(out.cdc_update_counter), number(out.cdc_delete_counter)),
        ready=state in READY_STATES,
        completed=state in DONE_STATES,
    )
