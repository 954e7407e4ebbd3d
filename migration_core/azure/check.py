"""`/pgmig azure-check`: what pgmig's Azure side needs, checked against the real subscription before a
migration or a provisioning depends on it — the cloud settings and pinned api-versions in use, whose token
pgmig gets and what that identity may do where, the resource providers' registration, the target's state
and migration slot, DMS classic's source versions — each with the exact fix. Read-only: it changes nothing."""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from migration_core.azure.backend import word
from migration_core.azure.clients import AzureClients
from migration_core.azure.config import AzureConfig
from migration_core.azure.dms_backend import ADVICE, source_version, version_problem
from migration_core.azure.errors import explain, registration_fix
from migration_core.azure.flex_backend import ACTIVE_STATES, MAX_DATABASES, RUNTIME_SERVER, azure_target
from migration_core.azure.providers import DMS_NAMESPACE, PG_NAMESPACE
from migration_core.azure.state import TRANSITIONAL, unusable
from migration_core.pg.servers import ServerConfig
from migration_core.state.errors import MigrationError

PG = "Microsoft.DBforPostgreSQL/flexibleServers"
# What each part of pgmig does at Azure (the README's permissions table says the same).
NEEDS = {
    "provision, createdb, firewall, configure": (
        f"{PG}/read",
        f"{PG}/write",
        f"{PG}/firewallRules/write",
        f"{PG}/databases/write",
        f"{PG}/configurations/write",
        f"{PG}/restart/action",
    ),
    "--backend flex": (f"{PG}/read", f"{PG}/migrations/read", f"{PG}/migrations/write"),
    "--backend dms": (
        "Microsoft.DataMigration/services/read",
        "Microsoft.DataMigration/services/write",
        "Microsoft.DataMigration/services/projects/write",
        "Microsoft.DataMigration/services/projects/tasks/read",
        "Microsoft.DataMigration/services/projects/tasks/write",
    ),
}
SUBNET_JOIN = "Microsoft.Network/virtualNetworks/subnets/join/action"


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckItem:
    level: Level
    subject: str  # "identity", "provider Microsoft.DataMigration", "target sales-prod"…
    said: str  # what was found
    fix: str = ""  # the exact thing to do (never empty on a FAIL)


@dataclass(frozen=True)
class CheckRequest:
    """What to check besides the subscription itself: a target, the backend and the migration's shape."""

    target: ServerConfig | None = None
    source: ServerConfig | None = None
    backend: str = ""  # flex | dms; "" checks what every Azure command needs
    databases: tuple[str, ...] = ()
    online: bool = True


@dataclass
class AzureReport:
    items: list[CheckItem] = field(default_factory=list)

    @property
    def blocking(self) -> list[CheckItem]:
        return [i for i in self.items if i.level is Level.FAIL]

    @property
    def warnings(self) -> list[CheckItem]:
        return [i for i in self.items if i.level is Level.WARN]

    def add(self, level: Level, subject: str, said: str, fix: str = "") -> None:
        self.items.append(CheckItem(level, subject, said, fix))


def allowed(action: str, actions: list[str], not_actions: list[str]) -> bool:
    """Whether Azure RBAC's action patterns (`*`, `Microsoft.X/*`, `*/read`) grant `action`."""

    def matches(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)

    return matches(actions) and not matches(not_actions)


def cloud_items(config: AzureConfig, report: AzureReport) -> None:
    cloud = config.cloud
    report.add(
        Level.OK,
        "cloud",
        f"{cloud.name if cloud else 'a custom cloud'}: ARM {config.arm_endpoint}, token scope {config.scope}, "
        f"authority {config.authority}",
    )
    if cloud is None and not config.credential_scope and "127.0.0.1" not in config.arm_endpoint:
        report.add(
            Level.WARN,
            "cloud",
            f"{config.arm_endpoint} is no cloud pgmig knows: the token scope is guessed as {config.scope}",
            "set [azure] credential_scope (PGMIG_ARM_SCOPE) to the audience your cloud documents, and "
            "authority_host (AZURE_AUTHORITY_HOST) to its Entra ID host",
        )
    report.add(
        Level.OK,
        "api-versions",
        f"{PG_NAMESPACE} {config.pg_api_version}, {DMS_NAMESPACE} {config.dms_api_version} (pinned)",
    )


async def check_azure(clients: AzureClients, req: CheckRequest) -> AzureReport:
    """Every check, in the order a person would fix them; an unreachable endpoint stops the rest."""
    from azure.core.exceptions import ClientAuthenticationError

    config, report = clients.config, AzureReport()
    cloud_items(config, report)
    try:
        identity = await clients.identity()
    except ClientAuthenticationError as exc:
        problem = explain(exc, "getting a token")
        report.add(Level.FAIL, "identity", problem.message, problem.fix)
        return report
    report.add(Level.OK, "identity", f"pgmig acts as {identity.describe()}")
    sub = f"/subscriptions/{config.subscription_id}"
    if not await _providers(clients, req, report):
        return report
    group = (req.target.azure_resource_group if req.target else None) or config.resource_group
    scopes: list[tuple[str, str, tuple[str, ...]]] = []
    wanted = [k for k in NEEDS if not req.backend or k == f"--backend {req.backend}" or k.startswith("provision")]
    if group:
        for what in wanted:
            scopes.append((f"resource group {group}", f"{sub}/resourceGroups/{group}", NEEDS[what]))
    if req.backend in ("", "dms") and config.dms_subnet:
        scopes.append(("DMS subnet", config.dms_subnet, (SUBNET_JOIN,)))
    await _permissions(clients, scopes, wanted, report)
    if req.target is not None:
        await _target(clients, req, report)
    if req.backend == "dms" or (not req.backend and req.source is not None):
        await _dms_source(req, report)
    return report


async def _providers(clients: AzureClients, req: CheckRequest, report: AzureReport) -> bool:
    """Registration of the namespaces pgmig uses; False when ARM cannot be read at all."""
    from azure.core.exceptions import AzureError

    for namespace in (PG_NAMESPACE, DMS_NAMESPACE):
        if namespace == DMS_NAMESPACE and req.backend == "flex":
            continue
        try:
            state = await clients.provider_state(namespace)
        except AzureError as exc:
            problem = explain(exc, f"reading the registration of {namespace}")
            report.add(Level.FAIL, f"provider {namespace}", problem.message, problem.fix)
            return False
        if state == "Registered":
            report.add(Level.OK, f"provider {namespace}", "registered in the subscription")
            continue
        needed = namespace == PG_NAMESPACE or req.backend == "dms"
        may = await _may(clients, f"/subscriptions/{clients.config.subscription_id}", f"{namespace}/register/action")
        said = f"{state or 'NotRegistered'} in the subscription" + (
            "; pgmig's identity may register it and will when it is first needed"
            if may
            else "; pgmig's identity may not register it"
        )
        level = Level.OK if may else (Level.FAIL if needed else Level.WARN)
        report.add(level, f"provider {namespace}", said, "" if may else registration_fix(namespace))
    return True


async def _may(clients: AzureClients, scope: str, action: str) -> bool | None:
    """Whether the identity has `action` at `scope` (None: its permissions cannot be read)."""
    from azure.core.exceptions import AzureError

    try:
        actions, not_actions = await clients.permissions(scope)
    except AzureError:
        return None
    return allowed(action, actions, not_actions)


async def _permissions(
    clients: AzureClients, scopes: list[tuple[str, str, tuple[str, ...]]], wanted: list[str], report: AzureReport
) -> None:
    from azure.core.exceptions import AzureError

    read: dict[str, tuple[list[str], list[str]] | None] = {}
    missing: dict[str, list[str]] = {}
    for label, scope, actions in scopes:
        if scope not in read:
            try:
                read[scope] = await clients.permissions(scope)
            except AzureError as exc:
                read[scope] = None
                report.add(
                    Level.WARN,
                    f"permissions on {label}",
                    f"cannot be read ({explain(exc, 'listing permissions').message})",
                    "give the identity Reader at least, so its rights can be checked",
                )
        found = read[scope]
        if found is None:
            continue
        lacking = [a for a in actions if not allowed(a, *found)]
        missing.setdefault(label, [])
        missing[label] += [a for a in lacking if a not in missing[label]]
    for label, lacking in missing.items():
        scope = next(s for lab, s, _ in scopes if lab == label)
        if lacking:
            role = "Network Contributor" if label == "DMS subnet" else "Contributor"
            report.add(
                Level.FAIL,
                f"permissions on {label}",
                "missing " + ", ".join(lacking),
                f"assign pgmig's identity {role} (or a custom role with these actions) on {scope}",
            )
        else:
            report.add(Level.OK, f"permissions on {label}", "enough for " + "; ".join(wanted))


async def _target(clients: AzureClients, req: CheckRequest, report: AzureReport) -> None:
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    assert req.target is not None
    name = req.target.name
    try:
        group, server = azure_target(req.target)
    except MigrationError as exc:
        report.add(Level.FAIL, f"target {name}", exc.message, exc.fix)
        return

    async def read(what: str, get: Callable[[], Awaitable[object]]) -> object | None:
        try:
            return await get()
        except ResourceNotFoundError:
            report.add(
                Level.FAIL,
                f"target {name}",
                f"{what} not found",
                f"check azure_resource_group / azure_server of [servers.{name}]",
            )
        except AzureError as exc:
            problem = explain(exc, f"reading {what}")
            report.add(Level.FAIL, f"target {name}", problem.message, problem.fix)
        return None

    async with clients.flex() as client:
        found = await read(f"flexible server {group}/{server}", lambda: client.servers.get(group, server))
        if found is None:
            return
        props = getattr(found, "properties", None)
        state = word(props.state) if props else ""
        network = props.network if props else None
        public = word(network.public_network_access) if network else ""
        vnet = bool(network and network.delegated_subnet_resource_id)
        where = "private access (VNet)" if vnet else f"public access {public or 'unknown'}"
        version = props.version if props else "?"
        said = f"{server} in {getattr(found, 'location', '?')}: {state}, PostgreSQL {version}, {where}"
        if problem := unusable(state, group, server):
            report.add(Level.FAIL, f"target {name}", problem.message, problem.fix)
        elif state in TRANSITIONAL:
            report.add(Level.WARN, f"target {name}", said, "pgmig waits for it to settle before acting")
        elif not vnet and public == "Disabled" and not req.target.azure_runtime_server:
            report.add(
                Level.WARN,
                f"target {name}",
                said + ": reachable only through a private endpoint",
                f"the migration service needs a runtime server in that network: set azure_runtime_server in "
                f"[servers.{name}] to a flexible server's resource id",
            )
        else:
            report.add(Level.OK, f"target {name}", said)
        if req.backend in ("", "flex"):
            try:
                active = [
                    str(m.name)
                    async for m in client.migrations.list_by_target_server(
                        group, server, migration_list_filter="Active"
                    )
                    if m.properties
                    and m.properties.current_status
                    and word(m.properties.current_status.state) in ACTIVE_STATES
                ]
            except AzureError as exc:
                active = []
                report.add(Level.WARN, f"target {name}", explain(exc, "listing its migrations").message)
            if active:
                report.add(
                    Level.WARN,
                    f"target {name}",
                    f"runs migration {', '.join(active)}: the service takes one at a time, so a new one waits",
                    "let it finish, or cancel it in the Azure portal if it is abandoned",
                )
        if req.backend == "flex" and req.online and len(req.databases) > MAX_DATABASES:
            report.add(
                Level.FAIL,
                "databases",
                f"{len(req.databases)} databases: the service takes at most {MAX_DATABASES} per migration",
                f"online: migrations of at most {MAX_DATABASES} databases each; offline: pgmig runs batches",
            )
        runtime = (req.target.azure_runtime_server or "").strip()
        if runtime:
            parts = RUNTIME_SERVER.fullmatch(runtime)
            if not parts:
                report.add(
                    Level.FAIL,
                    f"runtime server of {name}",
                    f"not a flexible server's resource id: {runtime}",
                    "use /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.DBforPostgreSQL/flexibleServers/NAME",
                )
            elif (
                await read(f"runtime server {parts['name']}", lambda: client.servers.get(parts["rg"], parts["name"]))
                is not None
            ):
                report.add(Level.OK, f"runtime server of {name}", f"{parts['name']} exists")


async def _dms_source(req: CheckRequest, report: AzureReport) -> None:
    report.add(Level.WARN, "DMS classic", ADVICE, "prefer `--backend flex`")
    if req.source is None:
        return
    try:
        version = await source_version(req.source)
    except MigrationError as exc:
        report.add(Level.WARN, f"source {req.source.name}", exc.message, exc.fix)
        return
    if problem := version_problem(version):
        level = Level.FAIL if req.backend == "dms" else Level.WARN
        report.add(level, f"source {req.source.name}", problem.message, problem.fix)
    else:
        report.add(Level.OK, f"source {req.source.name}", "a version DMS classic migrates")
