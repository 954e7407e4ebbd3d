"""The changes pgmig makes on a flexible server through Azure rather than SQL: a database `/pgmig createdb`
creates, firewall rules, server parameters and restarts. Each ARM call that makes one is journaled before
it is sent and marked done once Azure answered, with its undo beside it.

These changes belong to no migration. Their journal scope is the provisioning request (`prov-N`) that made
them, or else the flexible server itself (`AzureServer.scope`, `azure:GROUP/NAME`, one per server however
often `/pgmig firewall`, `configure` or `createdb` run). A second change of the same rule or parameter in a
scope keeps the first one's record of what was there before, while pgmig's earlier change still stands, so
an undo puts back what was there before pgmig, not what pgmig itself set in between.

Ownership is by identity, never by name alone:
- a firewall rule is pgmig's while it has the range pgmig set and, when Azure gives `systemData`, was last
  modified by pgmig's own write (`modified_at`): a rule someone re-created under that name is left. Without
  `systemData` (Azure does not always fill it) a rule someone re-created with the very same range cannot be
  told from pgmig's;
- a parameter is pgmig's while it has the value pgmig set: then it is set back to the value recorded before;
- a database is pgmig's while it is the one Azure created for pgmig (same `systemData.createdAt`, when
  given) and the server's SQL says it has the OID read back after creating it, and it holds nothing
  (pgmig never drops data, its own migrations' included). An entry without either (pgmig stopped while
  creating it) owns the database only while it is empty, as a journaled CREATE DATABASE does;
- a restart has nothing to undo: its entry says when pgmig restarted the server.

An entry still planned after a crash means "maybe made", and its undo finds out from what Azure shows now.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from migration_core.azure.errors import explain
from migration_core.azure.lro import call, run_lro
from migration_core.azure.validation import FirewallRule
from migration_core.changes.databases import contents, database_oid
from migration_core.pg import failpoints
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.journal import Change, Journal, JournalEntry, Payload

if TYPE_CHECKING:
    from azure.mgmt.postgresqlflexibleservers import models
    from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient

T = TypeVar("T")

# Undone in this order (newest first within a kind): firewall rules last, so pgmig still reaches the server
# over SQL while it checks a database's identity.
ORDER = (Change.AZURE_DATABASE, Change.SERVER_PARAMETER, Change.SERVER_RESTART, Change.FIREWALL_RULE)


@dataclass(frozen=True)
class AzureServer:
    """Where a flexible server lives in Azure (a `[servers.NAME]` entry's azure_* keys)."""

    resource_group: str
    name: str

    @property
    def key(self) -> str:
        """The server of its journal entries: resource group names are case-insensitive, server names lowercase."""
        return f"{self.resource_group.lower()}/{self.name}"

    @property
    def scope(self) -> str:
        """The journal scope of the changes made on it outside a provisioning request."""
        return f"azure:{self.key}"

    @classmethod
    def of(cls, entry: JournalEntry) -> AzureServer:
        group, _, name = entry.server.partition("/")
        return cls(group, name)


@dataclass
class FirewallPayload(Payload):
    """A firewall rule pgmig set: the range it set, the range the rule had before pgmig's first change (None:
    there was no rule of that name), and, once Azure answered, the rule's resource id and when pgmig's write
    modified it (`systemData.lastModifiedAt`, "" when Azure gives none)."""

    start: str
    end: str
    before: list[str] | None = None
    resource_id: str = ""
    modified_at: str = ""


@dataclass
class ParameterPayload(Payload):
    """A server parameter pgmig set: its value before pgmig's first change, and the value pgmig set."""

    before: str
    value: str


@dataclass
class DatabasePayload(Payload):
    """A database pgmig had Azure create, once made: its resource id, `systemData.createdAt` ("" when Azure
    gives none) and its OID on the server at `address` (None when the server could not be reached over SQL)."""

    resource_id: str = ""
    created_at: str = ""
    oid: int | None = None
    address: str = ""


@dataclass
class RestartPayload(Payload):
    """A restart pgmig asked for, and the parameters that waited for it (none: asked for alone)."""

    pending: list[str]


def _stamp(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _modified(rule: models.FirewallRule) -> str:
    return _stamp(rule.system_data.last_modified_at if rule.system_data else None)


def _range(rule: models.FirewallRule | None) -> list[str] | None:
    if rule is None or rule.properties is None:
        return None
    return [rule.properties.start_ip_address, rule.properties.end_ip_address]


def _ours(made: FirewallPayload, rule: models.FirewallRule | None) -> bool:
    """Whether the rule Azure has now is the one pgmig's write left (the range pgmig set, and pgmig's write
    the last one, when both sides say when)."""
    if rule is None or _range(rule) != [made.start, made.end]:
        return False
    now = _modified(rule)
    return not (made.modified_at and now and now != made.modified_at)


async def _found(read: Awaitable[T], what: str) -> T | None:
    """A resource read from ARM, or None where there is none (404); any other failure said, as `what`."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        return await read
    except ResourceNotFoundError:
        return None
    except AzureError as exc:
        raise explain(exc, what) from None


async def _rule(client: PostgreSQLManagementClient, server: AzureServer, name: str) -> models.FirewallRule | None:
    read = client.firewall_rules.get(server.resource_group, server.name, name)
    return await _found(read, f"reading firewall rule {name} of {server.name}")


async def set_firewall_rule(
    journal: Journal, client: PostgreSQLManagementClient, server: AzureServer, rule: FirewallRule
) -> None:
    """Create (or replace, by name) a firewall rule, journaled with the range it replaces."""
    from azure.mgmt.postgresqlflexibleservers import models

    current = await _rule(client, server, rule.name)
    made = FirewallPayload(rule.start, rule.end, _range(current))
    previous = await journal.find(Change.FIREWALL_RULE, server.key, "", rule.name)
    if previous is not None and previous.live and _ours(FirewallPayload.of(previous), current):
        made.before = FirewallPayload.of(previous).before  # pgmig's own change still stands: keep what was first
    entry = await journal.plan(Change.FIREWALL_RULE, server.key, "", rule.name, made)
    body = models.FirewallRule(
        properties=models.FirewallRuleProperties(start_ip_address=rule.start, end_ip_address=rule.end)
    )
    result = await run_lro(
        client.firewall_rules.begin_create_or_update(server.resource_group, server.name, rule.name, body),
        f"adding firewall rule {rule.name} to {server.name}",
        None,
        60,
    )
    failpoints.reached(f"made-{Change.FIREWALL_RULE.value}:")
    made.resource_id, made.modified_at = result.id or "", _modified(result)
    await journal.done(entry, made)


async def set_parameter(
    journal: Journal, client: PostgreSQLManagementClient, server: AzureServer, name: str, before: str, value: str
) -> bool:
    """Set a server parameter that has `before` now, journaled with that value; returns whether it waits for
    a restart to take effect."""
    made = ParameterPayload(before, value)
    previous = await journal.find(Change.SERVER_PARAMETER, server.key, "", name)
    if previous is not None and previous.live and ParameterPayload.of(previous).value == before:
        made.before = ParameterPayload.of(previous).before  # pgmig's own value still stands: keep what was first
    entry = await journal.plan(Change.SERVER_PARAMETER, server.key, "", name, made)
    result = await _put_parameter(client, server, name, value)
    failpoints.reached(f"made-{Change.SERVER_PARAMETER.value}:")
    await journal.done(entry)
    return bool(result.properties and result.properties.is_config_pending_restart)


async def _put_parameter(
    client: PostgreSQLManagementClient, server: AzureServer, name: str, value: str
) -> models.Configuration:
    from azure.mgmt.postgresqlflexibleservers import models

    body = models.ConfigurationForUpdate(properties=models.ConfigurationProperties(value=value, source="user-override"))
    return await run_lro(
        client.configurations.begin_update(server.resource_group, server.name, name, body),
        f"setting {name} on {server.name}",
        None,
        60,
    )


async def parameter(client: PostgreSQLManagementClient, server: AzureServer, name: str) -> models.Configuration:
    """A server parameter as Azure has it now."""
    return await call(
        client.configurations.get(server.resource_group, server.name, name), f"reading {name} on {server.name}"
    )


def value_of(config: models.Configuration) -> str:
    return (config.properties.value or "") if config.properties else ""


async def restart(
    journal: Journal, client: PostgreSQLManagementClient, server: AzureServer, pending: list[str]
) -> None:
    """Restart the server, journaled (with the parameters that waited for it)."""
    entry = await journal.plan(Change.SERVER_RESTART, server.key, "", "restart", RestartPayload(pending))
    await run_lro(
        client.servers.begin_restart(server.resource_group, server.name), f"restarting {server.name}", None, 60
    )
    await journal.done(entry)


async def _database(client: PostgreSQLManagementClient, server: AzureServer, name: str) -> models.Database | None:
    read = client.databases.get(server.resource_group, server.name, name)
    return await _found(read, f"reading database {name} of {server.name}")


async def _oid(sql: ServerConfig, database: str) -> int | None:
    """The database's OID read over SQL; None when the server cannot be reached (a firewall, say)."""
    try:
        async with sql.connection() as conn:
            return await database_oid(conn, database)
    except (ConnectionProblem, OSError):
        return None


async def create_database(
    journal: Journal, client: PostgreSQLManagementClient, server: AzureServer, database: str, sql: ServerConfig
) -> str | None:
    """Have Azure create a database (UTF8, as pgmig's own target databases are), journaled with its identity
    once made; `sql` is the configured server the OID is read on. None when a database of that name exists
    already: pgmig makes (and records) nothing then."""
    from azure.mgmt.postgresqlflexibleservers import models

    if await _database(client, server, database) is not None:
        return None
    made = DatabasePayload()
    entry = await journal.plan(Change.AZURE_DATABASE, server.key, database, "", made)
    body = models.Database(properties=models.DatabaseProperties(charset="UTF8", collation="en_US.utf8"))
    db = await run_lro(
        client.databases.begin_create(server.resource_group, server.name, database, body),
        f"creating database {database} on {server.name}",
        None,
        60,
    )
    failpoints.reached(f"made-{Change.AZURE_DATABASE.value}:{database}")
    made.resource_id = db.id or ""
    made.created_at = _stamp(db.system_data.created_at if db.system_data else None)
    made.oid, made.address = await _oid(sql, database), sql.address
    await journal.done(entry, made)
    return db.name or database


async def undo(
    journal: Journal, client: PostgreSQLManagementClient, entry: JournalEntry, sql: ServerConfig | None
) -> str:
    """Revert one change (`sql`: the configured server of that flexible server, for a database's identity);
    returns what was done or left, in words ("" when nothing was left to do). Safe to run twice."""
    server = AzureServer.of(entry)
    if entry.kind is Change.FIREWALL_RULE:
        said = await _undo_rule(client, server, entry)
    elif entry.kind is Change.SERVER_PARAMETER:
        said = await _undo_parameter(client, server, entry)
    elif entry.kind is Change.AZURE_DATABASE:
        said = await _drop_database(client, server, entry, sql)
    elif entry.kind is Change.SERVER_RESTART:
        said = ""  # a restart cannot be taken back, and leaves nothing behind
    else:
        raise MigrationError(f"BUG: {entry.kind.value} is not an Azure change")
    await journal.undone(entry)
    return said


async def _undo_rule(client: PostgreSQLManagementClient, server: AzureServer, entry: JournalEntry) -> str:
    from azure.mgmt.postgresqlflexibleservers import models

    made, name = FirewallPayload.of(entry), entry.name
    current = await _rule(client, server, name)
    if current is None or (_range(current) == made.before and not _ours(made, current)):
        return ""  # gone, never made, or put back already
    if not _ours(made, current):
        return f"left firewall rule {name} on {server.name}: it is not the rule pgmig set (changed or re-created since)"
    if made.before is None:
        await run_lro(
            client.firewall_rules.begin_delete(server.resource_group, server.name, name),
            f"deleting firewall rule {name} from {server.name}",
            None,
            60,
        )
        return f"deleted firewall rule {name} from {server.name}"
    body = models.FirewallRule(
        properties=models.FirewallRuleProperties(start_ip_address=made.before[0], end_ip_address=made.before[1])
    )
    await run_lro(
        client.firewall_rules.begin_create_or_update(server.resource_group, server.name, name, body),
        f"putting firewall rule {name} on {server.name} back",
        None,
        60,
    )
    return f"put firewall rule {name} on {server.name} back to {made.before[0]}-{made.before[1]}"


async def _undo_parameter(client: PostgreSQLManagementClient, server: AzureServer, entry: JournalEntry) -> str:
    made, name = ParameterPayload.of(entry), entry.name
    now = value_of(await parameter(client, server, name))
    if now == made.before:
        return ""  # never set, or set back already
    if now != made.value:
        return f"left {name} = {now} on {server.name}: it was changed since pgmig set it to {made.value}"
    result = await _put_parameter(client, server, name, made.before)
    waits = bool(result.properties and result.properties.is_config_pending_restart)
    return f"set {name} on {server.name} back to {made.before or '(empty)'}" + (
        " (takes effect after a restart)" if waits else ""
    )


async def _drop_database(
    client: PostgreSQLManagementClient, server: AzureServer, entry: JournalEntry, sql: ServerConfig | None
) -> str:
    made, name = DatabasePayload.of(entry), entry.database
    found = await _database(client, server, name)
    if found is None:
        return ""  # never made, or dropped already
    created = _stamp(found.system_data.created_at if found.system_data else None)
    if made.created_at and created and created != made.created_at:
        return f"left database {name} on {server.name}: it is not the one pgmig created (re-created since)"
    if sql is None:
        raise MigrationError(
            f"database {name} on {server.name}: no configured server stands for that flexible server, so pgmig "
            "cannot check that it is the one it created and holds nothing",
            "add it to the config (azure_resource_group, azure_server) and undo again",
        )
    async with sql.connection() as conn:
        oid = await database_oid(conn, name)
    if oid is None:
        raise MigrationError(
            f"Azure lists database {name} on {server.name} but {sql.name} has none of that name over SQL",
            f"check that [servers.{sql.name}] is that flexible server",
        )
    if made.oid is not None and oid != made.oid:
        return f"left database {name} on {server.name}: it is not the one pgmig created (re-created since)"
    if not (await contents(sql, name)).empty:
        if made.oid is None and not made.created_at:  # no identity: the call made an empty one, if any
            return f"left database {name} on {server.name}: it holds data, so it is not the one pgmig's call made"
        raise MigrationError(
            f"database {name} on {server.name} holds data now: pgmig drops only an empty database it created",
            "drop it yourself if that is what you want",
        )
    await run_lro(
        client.databases.begin_delete(server.resource_group, server.name, name),
        f"dropping database {name} on {server.name}",
        None,
        60,
    )
    return f"dropped database {name} on {server.name}"
