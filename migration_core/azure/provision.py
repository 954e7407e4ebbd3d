"""Creating and configuring flexible servers: the server itself (a long-running operation of minutes,
reported while it runs) with public access through firewall rules or private access in a delegated subnet,
databases, firewall rules and server parameters. A server in a transitional state is waited for; a stopped
one is refused with the command that starts it (state.py). Every change but the server itself is made, and
journaled, by changes/azure.py; the server is recorded by its provisioning request."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migration_core.azure.backend import word
from migration_core.azure.clients import AzureClients
from migration_core.azure.errors import explain
from migration_core.azure.lro import Progress, run_lro
from migration_core.azure.state import settled
from migration_core.azure.validation import FirewallRule, ProvisionRequest, storage_problem
from migration_core.changes import azure as changes
from migration_core.changes.azure import AzureServer
from migration_core.pg import secrets
from migration_core.pg.servers import ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.journal import Journal

if TYPE_CHECKING:
    from azure.mgmt.postgresqlflexibleservers import models

AZURE_SERVICES_RULE = FirewallRule("AllowAllAzureServicesAndResourcesWithinAzureIps", "0.0.0.0", "0.0.0.0")
# Extensions that only work once loaded at server start (shared_preload_libraries, a restart).
PRELOADED = {
    "pg_cron",
    "pg_stat_statements",
    "pg_partman_bgw",
    "timescaledb",
    "pg_squeeze",
    "pgaudit",
    "pg_prewarm",
    "pg_hint_plan",
    "auto_explain",
    "pg_failover_slots",
    "pglogical",
    "wal2json",
}


@dataclass
class ProvisionResult:
    name: str
    fqdn: str
    state: str
    created: bool  # False when the server existed (and was only grown)
    seconds: float
    firewall: list[str]


def _server_body(req: ProvisionRequest, password: str) -> models.Server:
    from azure.mgmt.postgresqlflexibleservers import models

    props = models.ServerProperties(
        administrator_login=req.admin_user,
        administrator_login_password=password,
        version=req.version,
        storage=models.Storage(storage_size_gb=req.storage_gb),
        high_availability=models.HighAvailability(mode=req.ha, standby_availability_zone=req.standby_zone),
        network=_network(req),
        create_mode="Create",
    )
    if req.zone:
        props.availability_zone = req.zone
    return models.Server(
        location=req.region, sku=models.Sku(name=req.sku, tier=req.tier), properties=props, tags=req.tags or None
    )


def _network(req: ProvisionRequest) -> models.Network:
    """Public access (reached through firewall rules) or private access in a delegated subnet with its DNS
    zone: never "Disabled" alone, which would make a server nothing reaches (a private endpoint is not
    something pgmig creates)."""
    from azure.mgmt.postgresqlflexibleservers import models

    if req.network == "vnet":
        return models.Network(
            public_network_access="Disabled",
            delegated_subnet_resource_id=req.subnet,
            private_dns_zone_arm_resource_id=req.private_dns_zone,
        )
    return models.Network(public_network_access="Enabled")


def _props(server: models.Server) -> models.ServerProperties:
    if server.properties is None:
        raise MigrationError(f"Azure returned server {server.name} without its properties")
    return server.properties


async def provision(
    clients: AzureClients,
    req: ProvisionRequest,
    journal: Journal,
    on_progress: Progress | None = None,
    progress_every: float = 15.0,
) -> ProvisionResult:
    """Create the server (or grow an existing one's storage), then its firewall rules (journaled)."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.mgmt.postgresqlflexibleservers import models

    password = os.environ.get(req.admin_password_env)
    if password is None:
        raise MigrationError(f"the environment variable {req.admin_password_env} is no longer set")
    secrets.register(password)
    started = time.monotonic()
    async with clients.flex() as client:
        try:
            existing = await client.servers.get(req.resource_group, req.name)
        except ResourceNotFoundError:
            existing = None
        except AzureError as exc:
            raise explain(exc, f"looking up server {req.name}") from None
        if existing is not None:
            existing = await settled(
                client, req.resource_group, req.name, clients.config.poll_seconds, existing, on_progress, progress_every
            )
            storage = _props(existing).storage
            current = storage.storage_size_gb if storage else None
            if problem := storage_problem(req.storage_gb, current):
                raise MigrationError(f"{req.name} exists: {problem}")
            if current is not None and req.storage_gb > current:
                patch = models.ServerForPatch(
                    properties=models.ServerPropertiesForPatch(storage=models.Storage(storage_size_gb=req.storage_gb))
                )
                existing = await run_lro(
                    client.servers.begin_update(req.resource_group, req.name, patch),
                    f"growing the storage of {req.name} to {req.storage_gb} GB",
                    on_progress,
                    progress_every,
                )
            server, created = existing, False
        else:
            server = await run_lro(
                client.servers.begin_create_or_update(req.resource_group, req.name, _server_body(req, password)),
                f"creating server {req.name}",
                on_progress,
                progress_every,
            )
            created = True
        rules = ([AZURE_SERVICES_RULE] if req.allow_azure_services else []) + list(req.firewall)
        for rule in rules:
            await changes.set_firewall_rule(journal, client, AzureServer(req.resource_group, req.name), rule)
    return ProvisionResult(
        req.name,
        _props(server).fully_qualified_domain_name or "",
        word(_props(server).state),
        created,
        time.monotonic() - started,
        [f"{r.name} {r.start}-{r.end}" for r in rules],
    )


async def firewall_rules(
    clients: AzureClients, server: AzureServer, rules: list[FirewallRule], journal: Journal
) -> None:
    """Each rule created (or replaced, by name), journaled."""
    async with clients.flex() as client:
        await settled(client, server.resource_group, server.name, clients.config.poll_seconds)
        for rule in rules:
            await changes.set_firewall_rule(journal, client, server, rule)


async def create_database(
    clients: AzureClients, server: AzureServer, database: str, journal: Journal, sql: ServerConfig
) -> str | None:
    """The database created with UTF8, as pgmig's own target databases are (None: it exists already)."""
    async with clients.flex() as client:
        await settled(client, server.resource_group, server.name, clients.config.poll_seconds)
        return await changes.create_database(journal, client, server, database, sql)


@dataclass
class ParameterChange:
    name: str
    before: str
    after: str
    pending_restart: bool


async def configure(
    clients: AzureClients,
    server: AzureServer,
    journal: Journal,
    extensions: list[str] | None = None,
    wal_level: str | None = None,
    restart: bool = False,
) -> tuple[list[ParameterChange], bool]:
    """Allow-list the extensions (and preload those that need it), set wal_level; with `restart`, restart
    when a changed parameter needs it (or, when nothing is to be set, restart anyway). Each parameter set and
    the restart are journaled. Returns the changes and whether the server was restarted."""
    changed: list[ParameterChange] = []
    async with clients.flex() as client:
        await settled(client, server.resource_group, server.name, clients.config.poll_seconds)

        async def merge(name: str, wanted: list[str]) -> None:
            before = changes.value_of(await changes.parameter(client, server, name))
            have = [v.strip() for v in before.split(",") if v.strip()]
            merged = have + [w for w in wanted if w.lower() not in {h.lower() for h in have}]
            if merged != have:
                await set_parameter(name, before, ",".join(merged))

        async def set_parameter(name: str, before: str, value: str) -> None:
            pending = await changes.set_parameter(journal, client, server, name, before, value)
            changed.append(ParameterChange(name, before, value, pending))

        if extensions:
            await merge("azure.extensions", sorted(e.lower() for e in extensions))
            preload = sorted(e.lower() for e in extensions if e.lower() in PRELOADED)
            if preload:
                await merge("shared_preload_libraries", preload)
        if wal_level:
            before = changes.value_of(await changes.parameter(client, server, "wal_level"))
            if before != wal_level:
                await set_parameter("wal_level", before, wal_level)
        pending = [c.name for c in changed if c.pending_restart]
        restarted = False
        if restart and (pending or not (extensions or wal_level)):
            await changes.restart(journal, client, server, pending)
            restarted = True
    return changed, restarted
