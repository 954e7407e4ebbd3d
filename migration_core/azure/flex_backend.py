"""The flexible server's built-in migration service (`migrations.create` on the target server): it copies
schema and data itself and, online, streams changes until pgmig triggers its cutover.

What the service documents, and pgmig therefore respects: one active migration (or validation) per target
server — a second is queued here and started once the server is free, instead of failing at Azure; at most
8 databases per migration — an offline migration of more runs as batches one after the other, an online
one is refused (its batches could never stream side by side); and the service may stop and wait
(`WaitingForUserAction`): pgmig takes the steps that are its own (the database list; the overwrite of an
existing target database, only when the person said --overwrite) and shows every other wait with what the
person must do. A validation failure shows the reasons from `validationDetails`, not just the top error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migration_core.azure.backend import BackendRef, BackendStatus, DatabaseStatus, Phase, number, seconds, word
from migration_core.azure.clients import AzureClients
from migration_core.azure.errors import explain
from migration_core.azure.lro import call
from migration_core.azure.state import settled
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.models import Migration, Mode, RetryChanges

if TYPE_CHECKING:
    from azure.mgmt.postgresqlflexibleservers import models
    from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient

MAX_DATABASES = 8  # databases one service migration takes (the service's documented limit)
ACTIVE_STATES = {"InProgress", "WaitingForUserAction", "CleaningUp"}  # they hold the target's one migration slot
DONE_STATES = {"succeeded", "completed"}
OVERWRITE = "WaitingForTargetDBOverwriteConfirmation"
DATABASE_LIST = "WaitingForDBsToMigrateSpecification"
LOGICAL_REPLICATION = "WaitingForLogicalReplicationSetupRequestOnSourceDB"
SCHEDULED = {"WaitingForDataMigrationScheduling", "WaitingForDataMigrationWindow"}
RUNTIME_SERVER = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.DBforPostgreSQL/"
    r"flexibleServers/(?P<name>[^/]+)",
    re.IGNORECASE,
)


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


def batches_of(databases: list[str]) -> list[list[str]]:
    """The databases in service migrations of at most MAX_DATABASES each, in the order given."""
    return [databases[i : i + MAX_DATABASES] for i in range(0, len(databases), MAX_DATABASES)]


def migration_name(ref: BackendRef, index: int) -> str:
    """The service-side name of batch `index`: the reference's own name, then `-b2`, `-b3`…"""
    return ref.migration if index == 0 else f"{ref.migration}-b{index + 1}"


async def existing_databases(target: ServerConfig, databases: list[str]) -> list[str]:
    """Which of `databases` exist on the target now (the service asks before overwriting one)."""
    try:
        async with target.connection() as conn:
            rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", databases)
    except ConnectionProblem as problem:
        raise MigrationError(f"cannot list the databases on {target.name}: {problem.message}", problem.fix) from None
    return sorted(r["datname"] for r in rows)


@dataclass
class Batch:
    """One service-side migration of a batch, as read from Azure."""

    index: int
    name: str
    databases: list[str]
    found: models.Migration | None = None  # None: not created yet
    state: str = ""
    sub: str = ""


@dataclass
class Survey:
    """Where a (possibly batched) migration is: the batches read so far, the first unfinished one, and the
    other migrations that hold the target server when that one is not created yet."""

    read: list[Batch]
    current: Batch | None  # None: every batch succeeded
    busy: list[str] = field(default_factory=list)


def _status_of(found: models.Migration) -> tuple[str, str, models.MigrationSubstateDetails | None, str]:
    current = found.properties.current_status if found.properties else None
    details = current.current_sub_state_details if current else None
    state = word(current.state) if current else ""
    sub = word(details.current_sub_state) if details else ""
    return state, sub, details, str((current.error if current else None) or "")


def validation_reasons(details: models.MigrationSubstateDetails | None) -> list[str]:
    """What the service's validation found wrong (or warns about), server-wide and per database."""
    found = details.validation_details if details else None
    if found is None:
        return []
    out: list[str] = []

    def take(items: list[models.ValidationSummaryItem] | None, where: str) -> None:
        for item in items or []:
            if word(item.state) not in ("Failed", "Warning"):
                continue
            texts = [m.message for m in item.messages or [] if m.message and word(m.state) != "Succeeded"]
            label = f"{where}{item.type or 'check'} {word(item.state).lower()}"
            out.append(label + (": " + " ".join(texts) if texts else ""))

    take(found.server_level_validation_details, "")
    for db in found.db_level_validation_details or []:
        take(db.summary, f"{db.database_name}: ")
    return out


class FlexBackend:
    label = "Azure flexible-server migration service"
    prepares_schema = False
    advice = ""

    def __init__(self, clients: AzureClients) -> None:
        self.clients = clients

    @property
    def _poll(self) -> float:
        return self.clients.config.poll_seconds

    async def start(
        self, m: Migration, name: str, source: ServerConfig, target: ServerConfig, earlier: BackendRef | None = None
    ) -> BackendRef:
        """Check what the service would stop on, then create the first migration (or queue it)."""
        group, server = azure_target(target)
        dbs = list(m.databases)
        if m.mode is Mode.ONLINE and len(dbs) > MAX_DATABASES:
            raise MigrationError(
                f"the flexible-server migration service takes at most {MAX_DATABASES} databases per migration and "
                f"one migration per server at a time, so {len(dbs)} databases cannot stream side by side",
                f"start online migrations of at most {MAX_DATABASES} databases each (--db), cutting each over "
                "before the next starts; or use --mode offline (pgmig runs it in batches) or --backend native",
            )
        existing = await existing_databases(target, dbs)
        allowed = set(dbs) if m.options.overwrite else set(earlier.created if earlier else [])
        blocked = [db for db in existing if db not in allowed]
        if blocked:
            raise MigrationError(
                f"target database(s) {', '.join(blocked)} already exist on {target.name} (even empty): the "
                "flexible-server migration service would stop and wait for permission to drop and recreate them",
                "retry with --overwrite to let the service replace them, or drop them first "
                "(pgmig never lets a database it did not create be dropped unasked)",
                RetryChanges(overwrite=True),
            )
        ref = BackendRef(
            group,
            server=server,
            migration=name,
            batches=batches_of(dbs),
            overwrite=m.options.overwrite,
            created=list(earlier.created) if earlier else [db for db in dbs if db not in existing],
            mode="Online" if m.mode is Mode.ONLINE else "Offline",
        )
        async with self.clients.flex() as client:
            await settled(client, group, server, self._poll)
            ref.runtime_server = await self._runtime_server(client, target, m.options.runtime_server)
            try:  # a migration of this name exists when a pgmig that stopped right after creating it restarts
                survey: Survey | None = await self._survey(client, ref)
            except MigrationError:
                survey = None  # unreadable now: the first poll's `advance` looks again
            if survey is not None and survey.current is not None and survey.current.found is None and not survey.busy:
                await self._create(client, ref, survey.current.index, source, target)
        return ref

    async def _runtime_server(self, client: PostgreSQLManagementClient, target: ServerConfig, asked: str = "") -> str:
        """The runtime server migrations into `target` run on (`--runtime-server`, else the target's
        `azure_runtime_server`), checked: a private network's source or target is only reachable through it."""
        rid = (asked or target.azure_runtime_server or "").strip()
        if not rid:
            return ""
        found = RUNTIME_SERVER.fullmatch(rid)
        if not found:
            raise MigrationError(
                f"azure_runtime_server of {target.name} is not a flexible server's resource id: {rid}",
                "use /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.DBforPostgreSQL/flexibleServers/NAME",
            )
        if found["sub"].lower() == self.clients.config.subscription_id.lower():
            await settled(client, found["rg"], found["name"], self._poll)
        return rid

    async def _survey(self, client: PostgreSQLManagementClient, ref: BackendRef) -> Survey:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        read: list[Batch] = []
        for index, databases in enumerate(ref.batches or [[]]):
            batch = Batch(index, migration_name(ref, index), list(databases))
            try:
                batch.found = await client.migrations.get(ref.resource_group, ref.server, batch.name)
            except ResourceNotFoundError:
                return Survey(read, batch, await self._busy(client, ref))
            except AzureError as exc:
                raise explain(exc, f"reading migration {batch.name}") from None
            batch.state, batch.sub, details, _ = _status_of(batch.found)
            read.append(batch)
            last = index == len(ref.batches or [[]]) - 1
            if last or not self._succeeded(batch.state, details):
                return Survey(read, batch)
        return Survey(read, None)

    @staticmethod
    def _succeeded(state: str, details: models.MigrationSubstateDetails | None) -> bool:
        """Finished well: Succeeded, or cleaning up after every database succeeded."""
        if state == "Succeeded":
            return True
        dbs = (details.db_details or {}) if details else {}
        return state == "CleaningUp" and bool(dbs) and all(word(d.migration_state) == "Succeeded" for d in dbs.values())

    async def _busy(self, client: PostgreSQLManagementClient, ref: BackendRef) -> list[str]:
        """Other migrations or validations that hold the target server (one at a time)."""
        from azure.core.exceptions import AzureError

        ours = {migration_name(ref, i) for i in range(len(ref.batches or [[]]))}
        try:
            found = [
                mig
                async for mig in client.migrations.list_by_target_server(
                    ref.resource_group, ref.server, migration_list_filter="Active"
                )
            ]
        except AzureError as exc:
            raise explain(exc, f"listing the migrations on {ref.server}") from None
        return sorted(str(mig.name) for mig in found if mig.name not in ours and _status_of(mig)[0] in ACTIVE_STATES)

    async def _create(
        self,
        client: PostgreSQLManagementClient,
        ref: BackendRef,
        index: int,
        source: ServerConfig,
        target: ServerConfig,
    ) -> str:
        """Create batch `index`. Overwriting is granted up front only for target databases that exist now and
        that the person allowed (--overwrite) or this migration's first attempt created; a database appearing
        later makes the service ask, and only --overwrite lets pgmig answer."""
        from azure.core.exceptions import AzureError, HttpResponseError
        from azure.mgmt.postgresqlflexibleservers import models

        group, server, name = ref.resource_group, ref.server, migration_name(ref, index)
        batch = (ref.batches or [[]])[index]
        found = await settled(client, group, server, self._poll)
        existing = set(await existing_databases(target, batch))
        allowed = set(batch) if ref.overwrite else set(ref.created)
        props = models.MigrationProperties(
            migration_mode=ref.mode or "Offline",
            migration_option="ValidateAndMigrate",
            source_type="OnPremises",
            ssl_mode="Prefer" if source.sslmode in ("disable", "allow", "prefer") else "Require",
            source_db_server_resource_id=source_reference(source),
            dbs_to_migrate=batch,
            overwrite_dbs_in_target="True" if existing and existing <= allowed else "False",
            secret_parameters=models.MigrationSecretParameters(
                admin_credentials=models.AdminCredentials(
                    source_server_password=source.password() or "", target_server_password=target.password() or ""
                ),
                source_server_username=source.user,
                target_server_username=target.user,
            ),
        )
        if ref.runtime_server:
            props.migration_instance_resource_id = ref.runtime_server
        try:
            await client.migrations.create(
                group, server, name, models.Migration(location=found.location, properties=props)
            )
        except HttpResponseError as exc:
            if exc.status_code == 409 and await self._busy(client, ref):
                return ""  # another migration took the server first: this one stays queued
            raise explain(exc, f"creating migration {name} on {server}") from None
        except AzureError as exc:
            raise explain(exc, f"creating migration {name} on {server}") from None
        return f"started {name} on {server} for {', '.join(batch)}"

    async def status(self, ref: BackendRef) -> BackendStatus:
        async with self.clients.flex() as client:
            survey = await self._survey(client, ref)
        return self._status(ref, survey)

    def _status(self, ref: BackendRef, survey: Survey) -> BackendStatus:
        batches = ref.batches or [[]]
        dbs: dict[str, DatabaseStatus] = {}
        for batch in survey.read:
            if batch is not survey.current and batch.found is not None:
                dbs.update(_databases(batch.found))
        current = survey.current
        if current is None:
            return BackendStatus(Phase.SUCCEEDED, f"{len(batches)} migration(s) succeeded", dbs)
        of = f" (batch {current.index + 1} of {len(batches)})" if len(batches) > 1 else ""
        for later in range(current.index + 1, len(batches)):
            for db in batches[later]:
                dbs[db] = DatabaseStatus(
                    db, "queued", message=f"batch {later + 1} of {len(batches)}: starts when batch {later} is done"
                )
        if current.found is None:
            why = (
                f"queued: {ref.server} runs {', '.join(survey.busy)} and takes one migration at a time; pgmig "
                "starts this one when it is done"
                if survey.busy
                else "starting"
            )
            for db in current.databases:
                dbs[db] = DatabaseStatus(db, "queued", message=why)
            return BackendStatus(Phase.QUEUED, f"{current.name}{of}: {why}", dbs)
        state, sub, details, error = _status_of(current.found)
        own = _databases(current.found)
        dbs.update(own)
        detail = f"{state}/{sub}".strip("/") + of
        phase, action, note = self._phase(ref, current, state, sub, details, own)
        for d in own.values():
            if phase is Phase.WAITING and not d.completed:
                d.state = sub  # what the service waits for, not its `InProgress`
            if note and not d.completed and note not in d.message:
                d.message = f"{note}: {d.message}" if d.message else note
        if phase is Phase.FAILED:
            reasons = validation_reasons(details)
            failures = [f"{d.database}: {d.message}" for d in own.values() if d.message and d.message != note]
            text = "; ".join(dict.fromkeys([error or state, *reasons, *failures]))
            return BackendStatus(phase, detail, dbs, f"{current.name}: {text}" if of else text)
        return BackendStatus(phase, detail, dbs, "", action)

    def _phase(
        self,
        ref: BackendRef,
        batch: Batch,
        state: str,
        sub: str,
        details: models.MigrationSubstateDetails | None,
        dbs: dict[str, DatabaseStatus],
    ) -> tuple[Phase, str, str]:
        """(phase, what the person must do, a note for each database) of one service migration."""
        where = f"--resource-group {ref.resource_group} --name {ref.server} --migration-name {batch.name}"
        if state in ("Failed", "ValidationFailed"):
            return Phase.FAILED, "", ""
        if state in ("Canceled", "Cancelled"):
            return Phase.CANCELLED, "", ""
        if state == "Succeeded" or self._succeeded(state, details):
            return Phase.SUCCEEDED, "", ""
        if state == "CleaningUp":
            states = {d.state for d in dbs.values()}
            if "Failed" in states:
                return Phase.FAILED, "", ""
            if states & {"Canceled", "Canceling"}:
                return Phase.CANCELLED, "", ""
            return Phase.LOADING, "", "the service is cleaning up"
        if state != "WaitingForUserAction":
            if sub == "ValidationInProgress":
                return Phase.LOADING, "", "the service validates source and target"
            return Phase.LOADING, "", ""
        if sub == "WaitingForCutoverTrigger" or (dbs and all(d.ready or d.completed for d in dbs.values())):
            return Phase.READY, "", ""
        if sub == OVERWRITE:
            if ref.overwrite:
                return Phase.LOADING, "", "target databases exist: pgmig confirms their overwrite (--overwrite)"
            return (
                Phase.WAITING,
                f"the service found databases of {batch.name} already on {ref.server} and asks before dropping and "
                f"recreating them; pgmig confirms only for a migration started with --overwrite. Either allow it: "
                f"`az postgres flexible-server migration update {where} --overwrite-dbs`, or `/pgmig cancel` this "
                "migration, drop or rename those databases and start again",
                "waits for permission to overwrite the existing target database",
            )
        if sub == DATABASE_LIST:
            return Phase.LOADING, "", "the service asks for the database list: pgmig sends it"
        if sub == LOGICAL_REPLICATION:
            return (
                Phase.WAITING,
                "the service needs logical replication on the source: set wal_level = logical (and enough "
                "max_replication_slots and max_wal_senders) on the source and restart it — pgmig never restarts "
                f"a source — then `az postgres flexible-server migration update {where} --setup-replication`",
                "waits for logical replication on the source",
            )
        if sub in SCHEDULED:
            props = batch.found.properties if batch.found else None
            start = props.migration_window_start_time_in_utc if props else None
            return Phase.LOADING, "", f"scheduled: starts at {start:%Y-%m-%d %H:%M} UTC" if start else "scheduled"
        return (
            Phase.WAITING,
            f"the service waits for an action pgmig does not know ({sub or 'no substate'}): look at migration "
            f"{batch.name} on {ref.server} in the Azure portal",
            f"waits: {sub}",
        )

    async def advance(self, ref: BackendRef, status: BackendStatus, source: ServerConfig, target: ServerConfig) -> str:
        """Start the queued migration (or the next batch) once the server is free; answer the service's
        questions that are pgmig's to answer."""
        from azure.mgmt.postgresqlflexibleservers import models

        async with self.clients.flex() as client:
            survey = await self._survey(client, ref)
            current = survey.current
            if current is None:
                return ""
            if current.found is None:
                return "" if survey.busy else await self._create(client, ref, current.index, source, target)
            if current.state != "WaitingForUserAction":
                return ""
            if current.sub == OVERWRITE and ref.overwrite:
                await self._patch(
                    client,
                    ref,
                    current.name,
                    models.MigrationPropertiesForPatch(overwrite_dbs_in_target="True"),
                    "confirming the overwrite",
                )
                return f"confirmed that {current.name} may overwrite existing target databases (--overwrite)"
            if current.sub == DATABASE_LIST and current.databases:
                await self._patch(
                    client,
                    ref,
                    current.name,
                    models.MigrationPropertiesForPatch(dbs_to_migrate=current.databases),
                    "sending the database list",
                )
                return f"sent {current.name} its databases: {', '.join(current.databases)}"
        return ""

    def _batch_of(self, ref: BackendRef, database: str) -> str:
        for index, batch in enumerate(ref.batches or [[]]):
            if database in batch:
                return migration_name(ref, index)
        return ref.migration

    async def cutover(self, ref: BackendRef, database: str) -> None:
        from azure.mgmt.postgresqlflexibleservers import models

        async with self.clients.flex() as client:
            await self._patch(
                client,
                ref,
                self._batch_of(ref, database),
                models.MigrationPropertiesForPatch(trigger_cutover="True", dbs_to_trigger_cutover_on=[database]),
                f"triggering the cutover of {database}",
            )

    async def cancel(self, ref: BackendRef) -> None:
        """Cancel every batch that runs (a queued one was never created: nothing to tell Azure)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError
        from azure.mgmt.postgresqlflexibleservers import models

        async with self.clients.flex() as client:
            for index in range(len(ref.batches or [[]])):
                name = migration_name(ref, index)
                try:
                    found = await client.migrations.get(ref.resource_group, ref.server, name)
                except ResourceNotFoundError:
                    continue
                except AzureError as exc:
                    raise explain(exc, f"reading migration {name}") from None
                if _status_of(found)[0] in ACTIVE_STATES:
                    await self._patch(
                        client, ref, name, models.MigrationPropertiesForPatch(cancel="True"), f"cancelling {name}"
                    )

    async def _patch(
        self,
        client: PostgreSQLManagementClient,
        ref: BackendRef,
        name: str,
        props: models.MigrationPropertiesForPatch,
        what: str,
    ) -> None:
        from azure.mgmt.postgresqlflexibleservers import models

        await call(
            client.migrations.update(
                ref.resource_group, ref.server, name, models.MigrationResourceForPatch(properties=props)
            ),
            f"{what} ({name})",
        )


def _databases(found: models.Migration) -> dict[str, DatabaseStatus]:
    _, _, details, _ = _status_of(found)
    return {name: _database(name, d) for name, d in ((details.db_details or {}) if details else {}).items()}


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
