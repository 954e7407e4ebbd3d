"""A local fake of Azure Resource Manager for the two SDKs pgmig uses, written from the published REST API
specifications (Azure/azure-rest-api-specs), not from pgmig's code.

It runs an aiohttp server on 127.0.0.1 (ephemeral port) over TLS with a `trustme` CA, so the real async
clients run unchanged against it:

    async with FakeArm() as fake:
        client = PostgreSQLManagementClient(fake.credential(), fake.subscription, base_url=fake.endpoint,
                                            credential_scopes=["https://management.azure.com/.default"],
                                            connection_verify=fake.ca_path, polling_interval=0,
                                            api_version=PG_API)

Modelled api-versions (any other answers 400 NoRegisteredProviderFound, as ARM does):
- Microsoft.DBforPostgreSQL 2025-08-01 (specification/postgresql/resource-manager/Microsoft.DBforPostgreSQL/
  PostgreSQL/stable/2025-08-01/openapi.json): flexibleServers (GET/PUT/PATCH/DELETE, lists, restart/start/
  stop, `network` with publicNetworkAccess / delegatedSubnetResourceId / privateDnsZoneArmResourceId),
  databases and firewallRules (with the read-only `systemData` every ProxyResource has: createdAt kept while
  the resource is replaced by name, lastModifiedAt per write), configurations (pending restart for static
  parameters), migrations,
  checkMigrationNameAvailability, locations/{loc}/capabilities (CapabilitiesByLocation_List).
- Microsoft.DataMigration 2025-06-30 (stable/2025-06-30): services (LRO), projects, tasks (state advanced on
  each GET with $expand=output), tasks/command (Migrate.Sync.Complete.Database), tasks/cancel.
- Microsoft.Resources providers 2021-04-01, and 2016-02-01 (what azure-mgmt-core's automatic registration
  sends): GET /subscriptions/{s}/providers/{ns} (registrationState), POST …/register.
- Microsoft.Authorization permissions 2022-04-01: GET {scope}/providers/Microsoft.Authorization/permissions
  (the caller's actions; by default Contributor on resource groups, Reader on the subscription).

The migration service, as the spec's enums and Microsoft's documented limits describe it: states InProgress →
(WaitingForUserAction with substate WaitingForDBsToMigrateSpecification when dbsToMigrate is empty,
WaitingForLogicalReplicationSetupRequestOnSourceDB when online and `source_logical_replication` is False,
WaitingForTargetDBOverwriteConfirmation when a listed database exists on the target and overwriteDbsInTarget
is not True — each answered by PATCHing dbsToMigrate / setupLogicalReplicationOnSourceDbIfNeeded /
overwriteDbsInTarget) → ValidationInProgress (ValidateAndMigrate; `validationDetails` with server- and
database-level summaries; ValidationFailed when `fail_validation` says so) → MigratingData →
WaitingForCutoverTrigger (online) → CompletingMigration → CleaningUp → Succeeded (Canceled after a cancel).
Limits: at most 8 databases per migration, one active migration or validation per target server, a
migrationInstanceResourceId that must name an existing flexible server. The error codes of those refusals
are not in the spec; the fake uses MigrationDatabaseLimitExceeded (400), MigrationAlreadyInProgress (409)
and InvalidParameterValue (400), so pgmig must not depend on them.

ARM's own behaviour: camelCase REST JSON, `{"error": {"code", "message"}}` errors, long-running operations
as 202 + `Azure-AsyncOperation` (and `Location`) headers whose status URL answers {"status": "InProgress"}
`lro_polls` times before {"status": "Succeeded"} (or "Failed"); the SDK's AsyncARMPolling then does its
final GET on the request URL for PUT/PATCH (the resource, now final) and on the `Location` URL for POST
(answers 204). A namespace in `unregistered` answers 409 MissingSubscriptionRegistration with ARM's
message (the one azure-mgmt-core parses to register on its own; POST register answers 403 when
`may_register` is False, as for a resource-group-scoped identity). Everything else answers 400
NotImplementedInFake naming the method and path.

Secrets: `administratorLoginPassword` is dropped before storing; migrations and DMS tasks are stored as
received (hooks may need the connection info) but `secretParameters` and any `password`-like key are never
put in a response. The credential's token is an unsigned JWT whose claims (oid, appid, tid) name a service
principal.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import ssl
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import trustme
from aiohttp import web
from azure.core.credentials import AccessToken

PG_API = "2025-08-01"
DMS_API = "2025-06-30"
RESOURCES_APIS = ("2021-04-01", "2016-02-01")
AUTHORIZATION_API = "2022-04-01"
PG_NS = "Microsoft.DBforPostgreSQL"
DMS_NS = "Microsoft.DataMigration"
MAX_MIGRATION_DATABASES = 8
MIGRATION_ACTIVE = {"InProgress", "WaitingForUserAction", "CleaningUp"}
MIGRATION_FINAL = {"succeeded", "failed", "validation_failed", "canceled"}
CLIENT_OBJECT_ID = "11111111-1111-1111-1111-111111111111"
CLIENT_APP_ID = "22222222-2222-2222-2222-222222222222"
TENANT_ID = "33333333-3333-3333-3333-333333333333"
CONTRIBUTOR_NOT_ACTIONS = [
    "Microsoft.Authorization/*/Delete",
    "Microsoft.Authorization/*/Write",
    "Microsoft.Authorization/elevateAccess/Action",
]

# Keys never sent back in a response (at any depth), and keys the fake keeps for itself on a resource.
SECRET_KEYS = {
    "administratorloginpassword",
    "secretparameters",
    "password",
    "sourceserverpassword",
    "targetserverpassword",
}
INTERNAL_KEYS = {"lastCommand", "lastPatch"}

CONFIG_DEFAULTS: dict[str, str] = {
    "azure.extensions": "",
    "shared_preload_libraries": "pg_cron,pg_stat_statements",
    "wal_level": "replica",
    "max_connections": "100",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "max_worker_processes": "8",
}
# Parameters that only take effect after a restart (isDynamicConfig false).
STATIC_CONFIGS = {
    "shared_preload_libraries",
    "wal_level",
    "max_connections",
    "max_replication_slots",
    "max_wal_senders",
    "max_worker_processes",
}

Hook = Callable[[dict], Awaitable[None]]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON (the raw text if it was not JSON), None when empty


def fake_jwt(claims: dict) -> str:
    """An unsigned JWT carrying `claims` (what an Entra access token looks like to anyone who only reads it)."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.fake-signature"


class StaticToken:
    """An azure.core AsyncTokenCredential that always hands out the same bearer token (by default an
    unsigned JWT naming a service principal) and records the scopes it was asked for."""

    def __init__(self, token: str = "") -> None:
        self.token = token or fake_jwt(
            {
                "aud": "https://management.azure.com",
                "oid": CLIENT_OBJECT_ID,
                "appid": CLIENT_APP_ID,
                "tid": TENANT_ID,
                "idtyp": "app",
            }
        )
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> "StaticToken":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class FakeError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _key(path: str) -> str:
    return path.split("?", 1)[0].rstrip("/").lower()


def _public(value: Any) -> Any:
    """A deep copy without secrets or the fake's own bookkeeping keys."""
    if isinstance(value, dict):
        return {
            k: _public(v)
            for k, v in value.items()
            if k.lower() not in SECRET_KEYS and k not in INTERNAL_KEYS and not k.startswith("_")
        }
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def _merge(into: dict, patch: dict) -> dict:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def _arm_type(path: str) -> str:
    """/subscriptions/s/resourceGroups/rg/providers/NS/t1/n1/t2/n2 -> NS/t1/t2."""
    parts = path.strip("/").split("/")
    try:
        i = [p.lower() for p in parts].index("providers")
    except ValueError:
        return ""
    rest = parts[i + 1 :]
    return "/".join([rest[0]] + rest[1::2]) if rest else ""


def _err(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


DEFAULT_SKUS = {
    "Burstable": ["Standard_B1ms", "Standard_B2s", "Standard_B2ms"],
    "GeneralPurpose": ["Standard_D2ds_v5", "Standard_D4ds_v5", "Standard_D8ds_v5", "Standard_D16ds_v5"],
    "MemoryOptimized": ["Standard_E2ds_v5", "Standard_E4ds_v5", "Standard_E8ds_v5"],
}
STORAGE_GB = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def default_capability(
    versions: tuple[str, ...] = ("13", "14", "15", "16", "17", "18"),
    skus: dict[str, list[str]] | None = None,
    zones: tuple[str, ...] = ("1", "2", "3"),
    storage_gb: tuple[int, ...] = STORAGE_GB,
) -> dict:
    """One `Capability` of CapabilitiesByLocation_List (2025-08-01 shapes): the region's server editions
    with their SKUs (zones, HA modes), storage sizes and PostgreSQL versions."""
    storage = [{"storageSizeMb": gb * 1024, "status": "Available"} for gb in storage_gb]
    editions = []
    for tier, names in (skus or DEFAULT_SKUS).items():
        ha = [] if tier == "Burstable" else (["SameZone", "ZoneRedundant"] if len(zones) > 1 else ["SameZone"])
        editions.append(
            {
                "name": tier,
                "defaultSkuName": names[0] if names else "",
                "status": "Available",
                "supportedStorageEditions": [
                    {"name": "ManagedDisk", "defaultStorageSizeMb": 131072, "supportedStorageMb": storage}
                ],
                "supportedServerSkus": [
                    {
                        "name": name,
                        "vCores": int(re.sub(r"[^0-9]", " ", name).split()[0]),
                        "supportedZones": list(zones),
                        "supportedHaMode": ha,
                        "status": "Available",
                    }
                    for name in names
                ],
            }
        )
    return {
        "name": "FlexibleServerCapabilities",
        "status": "Available",
        "supportedServerEditions": editions,
        "supportedServerVersions": [{"name": v, "status": "Available"} for v in versions],
        "zoneRedundantHaSupported": "Enabled" if len(zones) > 1 else "Disabled",
        "restricted": "Disabled",
    }


S = r"/subscriptions/(?P<sub>[^/]+)"
RG = S + r"/resourceGroups/(?P<rg>[^/]+)"
FLEXS = r"/providers/Microsoft\.DBforPostgreSQL/flexibleServers"
SRV = RG + FLEXS + r"/(?P<server>[^/]+)"
SVCS = r"/providers/Microsoft\.DataMigration/services"
SVC = RG + SVCS + r"/(?P<service>[^/]+)"
PRJ = SVC + r"/projects/(?P<project>[^/]+)"
TASK = PRJ + r"/tasks/(?P<task>[^/]+)"
OPS = S + r"/providers/(?P<ns>[^/]+)/locations/(?P<loc>[^/]+)"


class FakeArm:
    subscription: str = "00000000-0000-0000-0000-000000000000"

    def __init__(self, *, lro_polls: int = 1, steps_to_ready: int = 2, tables_per_db: int = 3) -> None:
        self.endpoint = ""
        self.ca_path = ""
        self.requests: list[Recorded] = []
        self.resources: dict[str, dict] = {}
        self.lro_polls = lro_polls
        self.steps_to_ready = steps_to_ready
        self.tables_per_db = tables_per_db
        self.config_defaults: dict[str, str] = dict(CONFIG_DEFAULTS)
        self.cleanup_polls = 1  # GETs after the one that shows CleaningUp before the end state (Succeeded, Canceled)
        self.source_logical_replication = True  # False: online migrations wait for logical replication setup
        # the databases on a target server, as the migration service sees them (default: its ARM databases)
        self.target_databases: Callable[[str], Awaitable[set[str]]] | None = None
        self.unregistered: set[str] = set()  # namespaces the subscription is not registered for
        self.may_register = False  # the credential may POST …/register (needs */register/action)
        self.register_polls = 1  # GETs a provider shows Registering after a register
        self.capabilities: dict[str, dict] = {}  # location → the capability CapabilitiesByLocation lists
        self.permissions: dict[str, tuple[list[str], list[str]]] = {}  # lower-cased scope → (actions, notActions)
        self._registering: dict[str, int] = {}
        self._fail_validations: list[tuple[str, dict]] = []
        self.on_start: Hook | None = None
        self.on_cutover: Hook | None = None
        self.on_cancel: Hook | None = None
        self.errors: list[BaseException] = []  # exceptions raised inside the fake or its hooks
        self._fail_next: list[tuple[str, str, int, str, str]] = []
        self._fail_ops: list[tuple[str, str, str]] = []
        self._ops: dict[str, dict] = {}
        self._state: dict[str, dict] = {}  # per migration/task progress, keyed like resources
        self._tmp: str | None = None
        self._runner: web.AppRunner | None = None
        self._routes = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> "FakeArm":
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self._tmp = tempfile.mkdtemp(prefix="fake-arm-")
        self.ca_path = os.path.join(self._tmp, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"https://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def __aenter__(self) -> "FakeArm":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def credential(self) -> StaticToken:
        return StaticToken()

    # ------------------------------------------------------------------ test helpers

    def fail_next(self, method: str, path_contains: str, status: int, code: str, message: str) -> None:
        """The next request with this method whose path contains `path_contains` (case-insensitive)
        answers `status` with ARM's error shape. One-shot."""
        self._fail_next.append((method.upper(), path_contains.lower(), status, code, message))

    def fail_operation(self, path_contains: str, code: str, message: str) -> None:
        """The next long-running operation on a matching path ends "Failed" with this error. One-shot.

        Also applies to a flex migration / DMS task whose own path (not just its parent's) matches:
        its next GET (for a task: with $expand=output) reports it failed."""
        self._fail_ops.append((path_contains.lower(), code, message))

    def fail_validation(
        self,
        path_contains: str,
        server: list[tuple[str, str]] | None = None,
        databases: dict[str, list[tuple[str, str]]] | None = None,
    ) -> None:
        """The next migration created on a matching path fails its validation: ValidationFailed, with these
        (type, message) items in validationDetails, server-level and per database. One-shot."""
        self._fail_validations.append((path_contains.lower(), {"server": server or [], "dbs": databases or {}}))

    def put_resource(self, path: str, body: dict) -> None:
        """Seed an existing resource (its full ARM path, with or without a query)."""
        path = path.split("?", 1)[0].rstrip("/")
        res = copy.deepcopy(body)
        res.setdefault("properties", {})
        res.update(id=path, name=path.rsplit("/", 1)[-1], type=_arm_type(path))
        if res["type"].lower() == f"{PG_NS}/flexibleServers".lower():
            res["properties"].pop("administratorLoginPassword", None)
            res["properties"].setdefault("state", "Ready")
            res["properties"].setdefault("network", {"publicNetworkAccess": "Enabled"})
            res["properties"].setdefault("fullyQualifiedDomainName", f"{res['name']}.postgres.database.azure.com")
        self.resources[_key(path)] = res

    def calls(self, method: str, path_contains: str) -> list[Recorded]:
        method, needle = method.upper(), path_contains.lower()
        return [
            r for r in self.requests if (not method or method == "*" or r.method == method) and needle in r.path.lower()
        ]

    def server_path(self, resource_group: str, server: str) -> str:
        group = f"/subscriptions/{self.subscription}/resourceGroups/{resource_group}"
        return f"{group}/providers/{PG_NS}/flexibleServers/{server}"

    def migration_path(self, resource_group: str, server: str, migration: str) -> str:
        return f"{self.server_path(resource_group, server)}/migrations/{migration}"

    def dms_service_path(self, resource_group: str, service: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{resource_group}/providers/{DMS_NS}/services/{service}"
        )

    def dms_task_path(self, resource_group: str, service: str, project: str, task: str) -> str:
        return f"{self.dms_service_path(resource_group, service)}/projects/{project}/tasks/{task}"

    # ------------------------------------------------------------------ dispatch

    def _build_routes(self) -> list[tuple[set[str], re.Pattern, Callable]]:
        r: list[tuple[str, str, Callable]] = [
            ("GET", S + FLEXS, self._list_servers),
            ("GET", RG + FLEXS, self._list_servers),
            ("GET", SRV, self._get),
            ("PUT", SRV, self._put_server),
            ("PATCH", SRV, self._patch_server),
            ("DELETE", SRV, self._delete_lro),
            ("POST", SRV + r"/(?P<action>restart|start|stop)", self._server_action),
            ("GET", SRV + r"/(?P<coll>databases|firewallRules)", self._list_children),
            ("GET", SRV + r"/(?:databases|firewallRules)/(?P<child>[^/]+)", self._get),
            ("PUT", SRV + r"/(?:databases|firewallRules)/(?P<child>[^/]+)", self._put_child_lro),
            ("DELETE", SRV + r"/(?:databases|firewallRules)/(?P<child>[^/]+)", self._delete_lro),
            ("GET", SRV + r"/configurations", self._list_configs),
            ("GET", SRV + r"/configurations/(?P<config>[^/]+)", self._get_config),
            ("PUT", SRV + r"/configurations/(?P<config>[^/]+)", self._set_config),
            ("PATCH", SRV + r"/configurations/(?P<config>[^/]+)", self._set_config),
            ("GET", SRV + r"/migrations", self._list_migrations),
            ("GET", SRV + r"/migrations/(?P<migration>[^/]+)", self._get_migration),
            ("PUT", SRV + r"/migrations/(?P<migration>[^/]+)", self._create_migration),
            ("PATCH", SRV + r"/migrations/(?P<migration>[^/]+)", self._patch_migration),
            ("DELETE", SRV + r"/migrations/(?P<migration>[^/]+)", self._cancel_migration),
            ("POST", SRV + r"/checkMigrationNameAvailability", self._check_migration_name),
            ("GET", S + r"/providers/(?P<ns>[^/]+)", self._get_provider),
            ("POST", S + r"/providers/(?P<ns>[^/]+)/register", self._register_provider),
            (
                "GET",
                S + r"/providers/Microsoft\.DBforPostgreSQL/locations/(?P<loc>[^/]+)/capabilities",
                self._capabilities,
            ),
            (
                "GET",
                S + r"(?:/.+)?/providers/Microsoft\.Authorization/permissions",
                self._permissions,
            ),
            ("GET", OPS + r"/azureAsyncOperation/(?P<op>[^/]+)", self._op_status),
            ("GET", OPS + r"/operationResults/(?P<op>[^/]+)", self._op_result),
            ("GET", S + SVCS, self._list_services),
            ("GET", RG + SVCS, self._list_services),
            ("GET", SVC, self._get),
            ("PUT", SVC, self._put_service),
            ("DELETE", SVC, self._delete_lro),
            ("GET", SVC + r"/(?P<coll>projects)", self._list_children),
            ("GET", PRJ, self._get),
            ("PUT", PRJ, self._put_project),
            ("DELETE", PRJ, self._delete_sync),
            ("GET", PRJ + r"/(?P<coll>tasks)", self._list_children),
            ("GET", TASK, self._get_task),
            ("PUT", TASK, self._put_task),
            ("DELETE", TASK, self._delete_sync),
            ("POST", TASK + r"/command", self._task_command),
            ("POST", TASK + r"/cancel", self._cancel_task),
        ]
        return [({m}, re.compile("^" + p + "$", re.IGNORECASE), h) for m, p, h in r]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        path = request.path.rstrip("/") or "/"
        query = dict(request.query)
        self.requests.append(Recorded(request.method, path, query, body))
        headers = {"x-ms-request-id": str(uuid.uuid4())}

        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return _err(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing or is not a Bearer token.",
                headers,
            )
        for i, (method, needle, status, code, message) in enumerate(self._fail_next):
            if method == request.method and needle in path.lower():
                del self._fail_next[i]
                return _err(status, code, message, headers)
        if "api-version" not in query:
            return _err(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
                headers,
            )
        if refused := self._refusal(path, query["api-version"]):
            return _err(*refused, headers)

        for methods, pattern, handler in self._routes:
            if request.method in methods and (m := pattern.match(path)):
                try:
                    resp = await handler(request, path, m, query, body)
                except FakeError as exc:
                    resp = _err(exc.status, exc.code, exc.message)
                except Exception as exc:  # a bug in the fake or a hook: 400 so the SDK does not retry
                    self.errors.append(exc)
                    resp = _err(
                        400, "FakeInternalError", f"{request.method} {path}: {exc!r}\n" + traceback.format_exc()
                    )
                resp.headers.update(headers)
                return resp
        return _err(400, "NotImplementedInFake", f"{request.method} {path} is not implemented by FakeArm", headers)

    # ------------------------------------------------------------------ generic pieces

    def _refusal(self, path: str, api: str) -> tuple[int, str, str] | None:
        """ARM's answer before any handler: an api-version the namespace does not offer, or a namespace the
        subscription is not registered for."""
        low = path.lower()
        if re.fullmatch(r"/subscriptions/[^/]+/providers/[^/]+(/register)?", low):
            ns, supported = "Microsoft.Resources", RESOURCES_APIS
        elif "/providers/microsoft.authorization/" in low:
            ns, supported = "Microsoft.Authorization", (AUTHORIZATION_API,)
        elif f"/providers/{DMS_NS.lower()}/" in low or low.endswith(f"/providers/{DMS_NS.lower()}"):
            ns, supported = DMS_NS, (DMS_API,)
        elif f"/providers/{PG_NS.lower()}/" in low:
            ns, supported = PG_NS, (PG_API,)
        else:
            return None
        if api not in supported:
            return (
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for API version '{api}' of namespace '{ns}'. "
                f"The supported api-versions are '{', '.join(supported)}'.",
            )
        if ns in self.unregistered and "/locations/" not in low:
            return (
                409,
                "MissingSubscriptionRegistration",
                f"The subscription is not registered to use namespace '{ns}'. "
                "See https://aka.ms/rps-not-found for how to register subscriptions.",
            )
        return None

    # ------------------------------------------------------------------ providers, capabilities, permissions

    def _provider(self, ns: str) -> dict:
        if ns in self.unregistered:
            state = "Registering" if ns in self._registering else "NotRegistered"
        else:
            state = "Registered"
        return {
            "id": f"/subscriptions/{self.subscription}/providers/{ns}",
            "namespace": ns,
            "registrationState": state,
            "registrationPolicy": "RegistrationRequired",
        }

    async def _get_provider(self, request, path, m, query, body) -> web.Response:
        ns = next((n for n in (PG_NS, DMS_NS) if n.lower() == m["ns"].lower()), m["ns"])
        if ns in self._registering:
            self._registering[ns] -= 1
            if self._registering[ns] < 0:
                del self._registering[ns]
                self.unregistered.discard(ns)
        return web.json_response(self._provider(ns))

    async def _register_provider(self, request, path, m, query, body) -> web.Response:
        ns = next((n for n in (PG_NS, DMS_NS) if n.lower() == m["ns"].lower()), m["ns"])
        if not self.may_register:
            raise FakeError(
                403,
                "AuthorizationFailed",
                f"The client '{CLIENT_APP_ID}' with object id '{CLIENT_OBJECT_ID}' does not have authorization to "
                f"perform action '{ns}/register/action' over scope '/subscriptions/{self.subscription}' or the "
                "scope is invalid. If access was recently granted, please refresh your credentials.",
            )
        if ns in self.unregistered:
            self._registering[ns] = self.register_polls
        return web.json_response(self._provider(ns))

    async def _capabilities(self, request, path, m, query, body) -> web.Response:
        found = self.capabilities.get(m["loc"].lower(), default_capability())
        return web.json_response({"value": [found] if found else []})

    async def _permissions(self, request, path, m, query, body) -> web.Response:
        scope = path.rsplit("/providers/Microsoft.Authorization/", 1)[0].lower()
        default = (["*"], CONTRIBUTOR_NOT_ACTIONS) if "/resourcegroups/" in scope else (["*/read"], [])
        granted = [s for s in self.permissions if scope == s or scope.startswith(s + "/")]  # inherited downwards
        actions, not_actions = self.permissions[max(granted, key=len)] if granted else default
        return web.json_response({"value": [{"actions": actions, "notActions": not_actions}]})

    # ------------------------------------------------------------------ generic pieces (continued)

    def _stored(self, path: str) -> dict:
        res = self.resources.get(_key(path))
        if res is None:
            raise FakeError(
                404,
                "ResourceNotFound",
                f"The Resource '{_arm_type(path)}/{path.rsplit('/', 1)[-1]}' "
                f"under resource group '{self._rg(path)}' was not found.",
            )
        return res

    @staticmethod
    def _rg(path: str) -> str:
        m = re.search(r"/resourceGroups/([^/]+)", path, re.IGNORECASE)
        return m.group(1) if m else ""

    @staticmethod
    def _shape(path: str, body: dict | None) -> dict:
        """A new resource from a request body: the ARM envelope plus what the request carried."""
        res = copy.deepcopy(body) if isinstance(body, dict) else {}
        res.setdefault("properties", {})
        for k in ("id", "name", "type", "systemData"):
            res.pop(k, None)
        return {"id": path, "name": path.rsplit("/", 1)[-1], "type": _arm_type(path), **res}

    @staticmethod
    def _json(res: Any, status: int = 200) -> web.Response:
        return web.json_response(_public(res), status=status)

    async def _get(self, request, path, m, query, body) -> web.Response:
        return self._json(self._stored(path))

    def _children(self, parent: str, coll: str) -> list[dict]:
        prefix = _key(parent) + "/" + coll.lower() + "/"
        return [r for k, r in self.resources.items() if k.startswith(prefix) and "/" not in k[len(prefix) :]]

    async def _list_children(self, request, path, m, query, body) -> web.Response:
        parent, coll = path.rsplit("/", 1)
        return self._json({"value": self._children(parent, coll)})

    async def _delete_sync(self, request, path, m, query, body) -> web.Response:
        self._drop(path)
        return web.Response(status=204)

    def _drop(self, path: str) -> None:
        k = _key(path)
        for key in [key for key in self.resources if key == k or key.startswith(k + "/")]:
            del self.resources[key]
            self._state.pop(key, None)

    def _take_fail_op(self, path: str, parent: str | None = None) -> tuple[str, str] | None:
        """Consume the first fail_operation matching `path` (and, when given, not matching `parent`)."""
        low, plow = path.lower(), (parent or "").lower()
        for i, (needle, code, message) in enumerate(self._fail_ops):
            if needle in low and not (parent and needle in plow):
                del self._fail_ops[i]
                return code, message
        return None

    def _lro(
        self,
        path: str,
        ns: str,
        api: str,
        location: str | None,
        *,
        finish: Callable[[], None] | None = None,
        rollback: Callable[[], None] | None = None,
        status: int = 202,
        body: Any = None,
    ) -> web.Response:
        """Start a long-running operation: answers `status` with Azure-AsyncOperation and Location headers."""
        op = uuid.uuid4().hex
        loc = (location or "eastus").replace(" ", "").lower()
        fail = self._take_fail_op(path)
        self._ops[op] = {
            "path": path,
            "remaining": self.lro_polls,
            "finish": finish,
            "rollback": rollback,
            "error": {"code": fail[0], "message": fail[1]} if fail else None,
            "status": "InProgress",
            "start": _now(),
        }
        base = f"{self.endpoint}/subscriptions/{self.subscription}/providers/{ns}/locations/{loc}"
        headers = {
            "Azure-AsyncOperation": f"{base}/azureAsyncOperation/{op}?api-version={api}",
            "Location": f"{base}/operationResults/{op}?api-version={api}",
        }
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(_public(body), status=status, headers=headers)

    def _advance_op(self, op_id: str) -> dict:
        op = self._ops.get(op_id)
        if op is None:
            raise FakeError(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
        if op["status"] == "InProgress":
            if op["remaining"] > 0:
                op["remaining"] -= 1
            elif op["error"]:
                op["status"] = "Failed"
                if op["rollback"]:
                    op["rollback"]()
            else:
                op["status"] = "Succeeded"
                if op["finish"]:
                    op["finish"]()
        return op

    async def _op_status(self, request, path, m, query, body) -> web.Response:
        op = self._advance_op(m["op"])
        out = {"id": path, "name": m["op"], "status": op["status"], "startTime": op["start"]}
        if op["status"] != "InProgress":
            out["endTime"] = _now()
        if op["status"] == "Failed":
            out["error"] = op["error"]
        return web.json_response(out)

    async def _op_result(self, request, path, m, query, body) -> web.Response:
        op = self._advance_op(m["op"])
        if op["status"] == "InProgress":
            return web.Response(status=202, headers={"Location": str(request.url)})
        if op["status"] == "Failed":
            return _err(400, op["error"]["code"], op["error"]["message"])
        return web.Response(status=204)

    async def _delete_lro(self, request, path, m, query, body) -> web.Response:
        res = self._stored(path)
        ns, api = (DMS_NS, DMS_API) if "/microsoft.datamigration/" in path.lower() else (PG_NS, PG_API)
        return self._lro(path, ns, api, res.get("location"), finish=lambda: self._drop(path))

    # ------------------------------------------------------------------ flexible servers

    async def _list_servers(self, request, path, m, query, body) -> web.Response:
        sub_rg = _key(path).rsplit("/providers/", 1)[0]
        kind = f"{PG_NS}/flexibleServers".lower()
        out = [r for k, r in self.resources.items() if k.startswith(sub_rg + "/") and r["type"].lower() == kind]
        return self._json({"value": out})

    async def _put_server(self, request, path, m, query, body) -> web.Response:
        k = _key(path)
        before = copy.deepcopy(self.resources.get(k))
        res = self._shape(path, body)
        res["properties"].pop("administratorLoginPassword", None)
        if before is not None:
            res = _merge(copy.deepcopy(before), {kk: v for kk, v in res.items() if kk not in ("id", "name", "type")})
        network = res["properties"].setdefault("network", {})
        if network.get("delegatedSubnetResourceId"):  # VNet integration: private access only
            network["publicNetworkAccess"] = "Disabled"
        network.setdefault("publicNetworkAccess", "Enabled")
        res["properties"]["state"] = "Updating" if before else "Provisioning"
        res["properties"]["fullyQualifiedDomainName"] = f"{res['name']}.postgres.database.azure.com"
        self.resources[k] = res

        def finish() -> None:
            res["properties"]["state"] = "Ready"

        def rollback() -> None:
            if before is None:
                self._drop(path)
            else:
                self.resources[k] = before

        return self._lro(path, PG_NS, PG_API, res.get("location"), finish=finish, rollback=rollback)

    async def _patch_server(self, request, path, m, query, body) -> web.Response:
        res = self._stored(path)
        before = copy.deepcopy(res)
        patch = copy.deepcopy(body) if isinstance(body, dict) else {}
        for k in ("id", "name", "type", "location"):
            patch.pop(k, None)
        (patch.get("properties") or {}).pop("administratorLoginPassword", None)
        _merge(res, patch)
        res["properties"]["state"] = "Updating"

        def finish() -> None:
            res["properties"]["state"] = "Ready"

        def rollback() -> None:
            self.resources[_key(path)] = before

        return self._lro(path, PG_NS, PG_API, res.get("location"), finish=finish, rollback=rollback)

    async def _server_action(self, request, path, m, query, body) -> web.Response:
        server_path = path.rsplit("/", 1)[0]
        res = self._stored(server_path)
        action = m["action"].lower()
        before = res["properties"].get("state", "Ready")
        res["properties"]["state"] = {"restart": "Restarting", "start": "Starting", "stop": "Stopping"}[action]

        def finish() -> None:
            res["properties"]["state"] = "Stopped" if action == "stop" else "Ready"
            if action in ("restart", "start"):
                for cfg in self._children(server_path, "configurations"):
                    cfg["properties"]["isConfigPendingRestart"] = False

        def rollback() -> None:
            res["properties"]["state"] = before

        return self._lro(path, PG_NS, PG_API, res.get("location"), finish=finish, rollback=rollback)

    async def _put_child_lro(self, request, path, m, query, body) -> web.Response:
        """databases and firewallRules: stored when the operation succeeds, with ARM's systemData (a resource
        replaced under its name keeps its createdAt; one deleted and created again gets a new one)."""
        res = self._shape(path, body)
        if "/databases/" in path.lower():
            res["properties"].setdefault("charset", "UTF8")
            res["properties"].setdefault("collation", "en_US.utf8")
        server = self.resources.get(_key(path.rsplit("/", 2)[0]), {})

        def finish() -> None:
            now, before = _now(), self.resources.get(_key(path), {}).get("systemData", {})
            who = {"By": CLIENT_APP_ID, "ByType": "Application"}
            res["systemData"] = {
                **{f"created{k}": v for k, v in who.items()},
                "createdAt": before.get("createdAt", now),
                **{f"lastModified{k}": v for k, v in who.items()},
                "lastModifiedAt": now,
            }
            self.resources[_key(path)] = res

        return self._lro(path, PG_NS, PG_API, server.get("location"), finish=finish)

    # ------------------------------------------------------------------ configurations

    def _config(self, server_path: str, name: str) -> dict:
        path = f"{server_path}/configurations/{name}"
        stored = self.resources.get(_key(path))
        if stored is not None:
            return stored
        if name not in self.config_defaults:
            raise FakeError(
                404,
                "ResourceNotFound",
                f"The configuration '{name}' does not exist for server '{server_path.rsplit('/', 1)[-1]}'.",
            )
        default = self.config_defaults[name]
        return {
            "id": path,
            "name": name,
            "type": _arm_type(path),
            "properties": {
                "value": default,
                "defaultValue": default,
                "description": f"{name} (FakeArm)",
                "dataType": "String",
                "allowedValues": "",
                "source": "system-default",
                "isDynamicConfig": name not in STATIC_CONFIGS,
                "isReadOnly": False,
                "isConfigPendingRestart": False,
                "unit": "",
                "documentationLink": "https://www.postgresql.org/docs/current/runtime-config.html",
            },
        }

    async def _get_config(self, request, path, m, query, body) -> web.Response:
        return self._json(self._config(path.rsplit("/configurations/", 1)[0], m["config"]))

    async def _list_configs(self, request, path, m, query, body) -> web.Response:
        server_path = path.rsplit("/", 1)[0]
        names = list(self.config_defaults) + [
            c["name"] for c in self._children(server_path, "configurations") if c["name"] not in self.config_defaults
        ]
        return self._json({"value": [self._config(server_path, n) for n in names]})

    async def _set_config(self, request, path, m, query, body) -> web.Response:
        server_path, name = path.rsplit("/configurations/", 1)[0], m["config"]
        current = copy.deepcopy(self._config(server_path, name))
        props = (body or {}).get("properties") or {}
        server = self.resources.get(_key(server_path), {})

        def finish() -> None:
            cfg = current
            cfg["properties"]["value"] = props.get("value", cfg["properties"].get("value"))
            cfg["properties"]["source"] = props.get("source") or "user-override"
            if not cfg["properties"].get("isDynamicConfig", True):
                cfg["properties"]["isConfigPendingRestart"] = True
            self.resources[_key(path)] = cfg

        return self._lro(path, PG_NS, PG_API, server.get("location"), finish=finish)

    # ------------------------------------------------------------------ flex migrations

    def _mig_dbs(self, res: dict) -> list[str]:
        return list(res["properties"].get("dbsToMigrate") or [])

    def _mig_state(self, res: dict) -> str:
        """currentStatus.state of a stored migration (rendered first when the fake drives it)."""
        self._render_migration(res)
        return str(res["properties"].get("currentStatus", {}).get("state", ""))

    async def _cleanups(self, server_path: str) -> None:
        """Cleaning up goes on whether anyone reads the migration or not: every look at the server's
        migrations moves it on, as a GET of the migration itself does."""
        for r in self._children(server_path, "migrations"):
            st = self._state.get(_key(r["id"]))
            if st is not None and st["phase"] == "cleaning":
                await self._advance_migration(r["id"])

    async def _active_on(self, server_path: str, but: str = "") -> list[dict]:
        """Migrations (and validations) that hold the server: the service runs one at a time."""
        await self._cleanups(server_path)
        return [
            r
            for r in self._children(server_path, "migrations")
            if r["name"].lower() != but.lower() and self._mig_state(r) in MIGRATION_ACTIVE
        ]

    async def _list_migrations(self, request, path, m, query, body) -> web.Response:
        server_path = path.rsplit("/", 1)[0]
        await self._cleanups(server_path)
        out = self._children(server_path, "migrations")
        for child in out:
            self._render_migration(child)
        if query.get("migrationListFilter", "Active").lower() == "active":
            out = [r for r in out if r["properties"]["currentStatus"]["state"] in MIGRATION_ACTIVE]
        return self._json({"value": out})

    async def _existing_databases(self, server_path: str) -> set[str]:
        if self.target_databases is not None:
            return set(await self.target_databases(server_path.rsplit("/", 1)[-1]))
        return {c["name"] for c in self._children(server_path, "databases")}

    async def _create_migration(self, request, path, m, query, body) -> web.Response:
        k = _key(path)
        existed = k in self.resources
        server_path = path.rsplit("/migrations/", 1)[0]
        server = self._stored(server_path)
        res = self._shape(path, body)
        res.setdefault("location", server.get("location", "eastus"))
        props = res["properties"]
        dbs = self._mig_dbs(res)
        if len(dbs) > MAX_MIGRATION_DATABASES:
            raise FakeError(
                400,
                "MigrationDatabaseLimitExceeded",
                f"A migration can include at most {MAX_MIGRATION_DATABASES} databases; {len(dbs)} were requested.",
            )
        if busy := await self._active_on(server_path, but=res["name"]):
            raise FakeError(
                409,
                "MigrationAlreadyInProgress",
                f"Only one active migration or validation is allowed on server '{server['name']}'; "
                f"'{busy[0]['name']}' is {busy[0]['properties']['currentStatus']['state']}.",
            )
        runtime = props.get("migrationInstanceResourceId")
        if runtime and _key(runtime) not in self.resources:
            raise FakeError(400, "InvalidParameterValue", f"The migration runtime server '{runtime}' was not found.")
        props.setdefault("migrationMode", "Offline")
        props.setdefault("migrationOption", "ValidateAndMigrate")
        props.setdefault("overwriteDbsInTarget", "False")
        props.setdefault("setupLogicalReplicationOnSourceDbIfNeeded", "False")
        props["migrationId"] = str(uuid.uuid4())
        props["targetDbServerResourceId"] = server_path
        props["targetDbServerFullyQualifiedDomainName"] = (
            server.get("properties", {}).get("fullyQualifiedDomainName")
            or f"{server_path.rsplit('/', 1)[-1]}.postgres.database.azure.com"
        )
        props.setdefault("migrationWindowStartTimeInUtc", _now())
        fail = self._take_fail_op(path, server_path)
        self._state[k] = {
            "phase": "prereq",
            "wait": None,
            "step": 0,
            "gets": 0,
            "started": _now(),
            "substate": None,
            "dbs": {db: "active" for db in dbs},
            "existing": await self._existing_databases(server_path),
            "fail": {"code": fail[0], "message": fail[1]} if fail else None,
            "validation": None,
            "invalid": self._take_validation_failure(path),
            "cleanup_left": self.cleanup_polls,
            "after_cleanup": "succeeded",
        }
        self.resources[k] = res
        self._render_migration(res)
        return self._json(res, 200 if existed else 201)

    def _pending_wait(self, res: dict, st: dict) -> str | None:
        """The user action the service waits for before it copies anything (None: none)."""
        props = res["properties"]
        if not st["dbs"]:
            return "WaitingForDBsToMigrateSpecification"
        online = str(props.get("migrationMode", "Offline")).lower() == "online"
        setup = str(props.get("setupLogicalReplicationOnSourceDbIfNeeded", "")).lower() == "true"
        if online and not self.source_logical_replication and not setup:
            return "WaitingForLogicalReplicationSetupRequestOnSourceDB"
        overwrite = str(props.get("overwriteDbsInTarget", "")).lower() == "true"
        if st["existing"] & set(st["dbs"]) and not overwrite:
            return "WaitingForTargetDBOverwriteConfirmation"
        return None

    async def _advance_migration(self, path: str) -> None:
        k = _key(path)
        st, res = self._state[k], self.resources[k]
        st["gets"] += 1
        if st["phase"] in MIGRATION_FINAL:
            return
        if st["fail"] is None and (fail := self._take_fail_op(path, path.rsplit("/migrations/", 1)[0])):
            st["fail"] = {"code": fail[0], "message": fail[1]}
        if st["fail"]:
            st["phase"] = "failed"
            return
        option = str(res["properties"].get("migrationOption", "ValidateAndMigrate")).lower()
        if st["phase"] in ("prereq", "waiting"):
            st["wait"] = self._pending_wait(res, st)
            if st["wait"]:
                st["phase"] = "waiting"
            elif option in ("validate", "validateandmigrate"):
                st["phase"] = "validating"
            else:
                await self._begin_copy(res, st)
        elif st["phase"] == "validating":
            st["validation"] = self._validation(res, st)
            if st["invalid"]:
                st["phase"] = "validation_failed"
            elif option == "validate":
                st["phase"] = "succeeded"
            else:
                await self._begin_copy(res, st)
        elif st["phase"] == "loading":
            st["step"] += 1
            if st["step"] > self.steps_to_ready:
                if str(res["properties"].get("migrationMode", "Offline")).lower() == "online":
                    st["phase"] = "ready"
                else:
                    st["dbs"] = {db: ("done" if s == "active" else s) for db, s in st["dbs"].items()}
                    st["phase"] = "cleaning"
        elif st["phase"] == "completing":
            st["dbs"] = {db: ("done" if s == "cutting" else s) for db, s in st["dbs"].items()}
            st["phase"] = "ready" if "active" in st["dbs"].values() else "cleaning"
        elif st["phase"] == "cleaning":
            st["cleanup_left"] -= 1
            if st["cleanup_left"] <= 0:
                st["phase"] = st["after_cleanup"]

    async def _begin_copy(self, res: dict, st: dict) -> None:
        """The service starts copying (what on_start stands in for) once nothing is waited for."""
        st["phase"], st["step"] = "loading", 1
        if self.on_start:
            await self.on_start(res)

    def _validation(self, res: dict, st: dict) -> dict:
        """validationDetails as the service reports them once it has validated (failures as injected)."""
        invalid = st["invalid"] or {"server": [], "dbs": {}}

        def items(found: list[tuple[str, str]], passed: tuple[str, ...]) -> list[dict]:
            failed = {kind for kind, _ in found}
            out = [
                {"type": kind, "state": "Failed", "messages": [{"state": "Failed", "message": message}]}
                for kind, message in found
            ]
            return out + [{"type": kind, "state": "Succeeded", "messages": []} for kind in passed if kind not in failed]

        return {
            "status": "Failed" if st["invalid"] else "Succeeded",
            "validationStartTimeInUtc": st["started"],
            "validationEndTimeInUtc": _now(),
            "serverLevelValidationDetails": items(
                invalid["server"], ("AuthenticationAndConnectivityValidation", "SourceVersionValidation")
            ),
            "dbLevelValidationDetails": [
                {
                    "databaseName": db,
                    "startedOn": st["started"],
                    "endedOn": _now(),
                    "summary": items(invalid["dbs"].get(db, []), ("ExtensionsValidation", "CollationValidation")),
                }
                for db in st["dbs"]
            ],
        }

    def _take_validation_failure(self, path: str) -> dict | None:
        low = path.lower()
        for i, (needle, found) in enumerate(self._fail_validations):
            if needle in low:
                del self._fail_validations[i]
                return found
        return None

    def _render_migration(self, res: dict) -> None:
        st = self._state.get(_key(res["id"]))
        if st is None:  # seeded with put_resource: leave as given
            res["properties"].setdefault("currentStatus", {"state": "InProgress"})
            return
        phase, n, steps = st["phase"], self.tables_per_db, max(self.steps_to_ready, 1)
        cleaned = "Completed" if st["after_cleanup"] == "succeeded" else "CancelingRequestedDBMigrations"
        state, sub = {
            "prereq": ("InProgress", "PerformingPreRequisiteSteps"),
            "waiting": ("WaitingForUserAction", st["wait"]),
            "validating": ("InProgress", "ValidationInProgress"),
            "loading": ("InProgress", "MigratingData"),
            "ready": ("WaitingForUserAction", "WaitingForCutoverTrigger"),
            "completing": ("InProgress", "CompletingMigration"),
            "cleaning": ("CleaningUp", cleaned),
            "succeeded": ("Succeeded", "Completed"),
            "failed": ("Failed", st["substate"] or "PerformingPreRequisiteSteps"),
            "validation_failed": ("ValidationFailed", "Completed"),
            "canceled": ("Canceled", "Completed"),
        }[phase]
        if phase != "failed":
            st["substate"] = sub
        details: dict[str, dict] = {}
        for db, dstate in st["dbs"].items():
            message = ""
            if phase in ("prereq", "waiting", "validating", "validation_failed"):
                done, mstate, op = 0, "InProgress", sub
                if phase == "validation_failed":
                    mstate = "Failed"
                if st["wait"] == "WaitingForTargetDBOverwriteConfirmation" and db in st["existing"]:
                    message = f"Database '{db}' already exists on the target server."
            elif phase == "loading":
                done, mstate, op = min(n, n * st["step"] // (steps + 1)), "InProgress", "MigratingData"
            else:
                done, op = (
                    n,
                    {"ready": "WaitingForCutoverTrigger", "completing": "CompletingMigration"}.get(phase, "Completed"),
                )
                mstate = {
                    "active": "WaitingForCutoverTrigger",
                    "cutting": "InProgress",
                    "done": "Succeeded",
                    "canceled": "Canceled",
                }[dstate]
                if phase == "failed":
                    mstate, done = "Failed", min(n, n * st["step"] // (steps + 1))
                elif phase in ("canceled", "cleaning") and st["after_cleanup"] == "canceled":
                    mstate = "Succeeded" if dstate == "done" else "Canceled"
            if dstate == "canceled":
                mstate = "Canceled"
            loading = 0 if done >= n or mstate != "InProgress" or op != "MigratingData" else 1
            changes = 10 * max(st["gets"] - st["step"], 0) if phase in ("ready", "completing") else 0
            d = {
                "databaseName": db,
                "migrationState": mstate,
                "migrationOperation": op,
                "startedOn": st["started"],
                "fullLoadQueuedTables": n - done - loading,
                "fullLoadErroredTables": 0,
                "fullLoadLoadingTables": loading,
                "fullLoadCompletedTables": done,
                "cdcUpdateCounter": changes // 2,
                "cdcDeleteCounter": changes // 10,
                "cdcInsertCounter": changes - changes // 2 - changes // 10,
                "appliedChanges": changes,
                "incomingChanges": changes,
                "latency": 2 if phase == "loading" else 0,
            }
            if mstate in ("Succeeded", "Failed", "Canceled"):
                d["endedOn"] = _now()
            if phase == "failed":
                message = st["fail"]["message"]
            if message:
                d["message"] = message
            details[db] = d
        substate: dict[str, Any] = {"currentSubState": sub, "dbDetails": details}
        if st["validation"]:
            substate["validationDetails"] = st["validation"]
        status: dict[str, Any] = {"state": state, "currentSubStateDetails": substate}
        if phase == "failed":
            status["error"] = st["fail"]["message"]
        elif phase == "validation_failed":
            status["error"] = "Migration validation failed: see validationDetails."
        res["properties"]["currentStatus"] = status

    async def _get_migration(self, request, path, m, query, body) -> web.Response:
        res = self._stored(path)
        if _key(path) in self._state:
            await self._advance_migration(path)
        self._render_migration(res)
        return self._json(res)

    async def _patch_migration(self, request, path, m, query, body) -> web.Response:
        res = self._stored(path)
        st = self._state.get(_key(path))
        props = ((body or {}).get("properties") or {}) if isinstance(body, dict) else {}
        res["lastPatch"] = copy.deepcopy(body)
        cutover = str(props.get("triggerCutover", "")).lower() == "true"
        cancel = str(props.get("cancel", "")).lower() == "true"
        if st is not None and (cutover or cancel) and st["phase"] in MIGRATION_FINAL:
            raise FakeError(
                400,
                "InvalidMigrationState",
                f"Migration '{res['name']}' is already {res['properties']['currentStatus']['state']}.",
            )
        if st is not None and cutover and st["phase"] not in ("ready", "completing"):
            raise FakeError(
                400,
                "InvalidMigrationState",
                f"Cutover can only be triggered when migration "
                f"'{res['name']}' is WaitingForUserAction (it is "
                f"{res['properties']['currentStatus']['state']}).",
            )
        _merge(res, {k: v for k, v in (body or {}).items() if k in ("properties", "tags")})
        if st is not None and "dbsToMigrate" in props and st["phase"] in ("prereq", "waiting"):
            st["dbs"] = {db: "active" for db in props["dbsToMigrate"] or []}
        if st is not None and cutover:
            wanted = props.get("dbsToTriggerCutoverOn") or list(st["dbs"])
            unknown = [db for db in wanted if db not in st["dbs"]]
            if unknown:
                raise FakeError(
                    400, "InvalidDatabaseName", f"Databases {unknown} are not part of migration '{res['name']}'."
                )
            if self.on_cutover:
                await self.on_cutover(res)
            for db in wanted:
                if st["dbs"][db] == "active":
                    st["dbs"][db] = "cutting"
            st["phase"] = "completing"
        elif st is not None and cancel:
            await self._do_cancel_migration(res, st, props.get("dbsToCancelMigrationOn"))
        self._render_migration(res)
        return self._json(res)

    async def _do_cancel_migration(self, res: dict, st: dict, dbs: list[str] | None) -> None:
        if self.on_cancel:
            await self.on_cancel(res)
        for db in dbs or list(st["dbs"]):
            if st["dbs"].get(db) in ("active", "cutting"):
                st["dbs"][db] = "canceled"
        if not dbs or not any(s in ("active", "cutting") for s in st["dbs"].values()):
            st["phase"], st["after_cleanup"] = "cleaning", "canceled"

    async def _cancel_migration(self, request, path, m, query, body) -> web.Response:
        """migrations.cancel (DELETE): cancels all databases, answers 200 with the migration."""
        res = self._stored(path)
        st = self._state.get(_key(path))
        if st is not None and st["phase"] not in MIGRATION_FINAL:
            await self._do_cancel_migration(res, st, None)
        self._render_migration(res)
        return self._json(res)

    async def _check_migration_name(self, request, path, m, query, body) -> web.Response:
        name = (body or {}).get("name", "")
        taken = _key(f"{path.rsplit('/', 1)[0]}/migrations/{name}") in self.resources
        out = {
            "name": name,
            "type": (body or {}).get("type", f"{PG_NS}/flexibleServers/migrations"),
            "nameAvailable": not taken,
        }
        if taken:
            out.update(reason="AlreadyExists", message=f"Migration name '{name}' is already in use.")
        return web.json_response(out)

    # ------------------------------------------------------------------ DMS classic

    async def _list_services(self, request, path, m, query, body) -> web.Response:
        sub_rg = _key(path).rsplit("/providers/", 1)[0]
        kind = f"{DMS_NS}/services".lower()
        out = [r for k, r in self.resources.items() if k.startswith(sub_rg + "/") and r["type"].lower() == kind]
        return self._json({"value": out})

    async def _put_service(self, request, path, m, query, body) -> web.Response:
        k = _key(path)
        before = copy.deepcopy(self.resources.get(k))
        res = self._shape(path, body)
        res.setdefault("kind", "Cloud")
        res["properties"]["provisioningState"] = "Accepted"
        self.resources[k] = res

        def finish() -> None:
            res["properties"]["provisioningState"] = "Succeeded"

        def rollback() -> None:
            if before is None:
                self._drop(path)
            else:
                self.resources[k] = before

        return self._lro(
            path,
            DMS_NS,
            DMS_API,
            res.get("location"),
            finish=finish,
            rollback=rollback,
            status=200 if before else 201,
            body=res,
        )

    async def _put_project(self, request, path, m, query, body) -> web.Response:
        k = _key(path)
        existed = k in self.resources
        res = self._shape(path, body)
        service = self.resources.get(_key(path.rsplit("/projects/", 1)[0]), {})
        res.setdefault("location", service.get("location", "eastus"))
        res["properties"].setdefault("creationTime", _now())
        res["properties"]["provisioningState"] = "Succeeded"
        self.resources[k] = res
        return self._json(res, 200 if existed else 201)

    def _task_dbs(self, res: dict) -> list[str]:
        sel = ((res["properties"].get("input") or {}).get("selectedDatabases")) or []
        return [d.get("name") or d.get("targetDatabaseName") for d in sel if isinstance(d, dict)]

    async def _put_task(self, request, path, m, query, body) -> web.Response:
        k = _key(path)
        existed = k in self.resources
        res = self._shape(path, body)
        props = res["properties"]
        props["state"] = "Queued"
        props.setdefault("taskId", str(uuid.uuid4()))
        props.setdefault("createdOn", _now())
        props.pop("output", None)
        props["commands"] = []
        project_path = path.rsplit("/tasks/", 1)[0]
        fail = self._take_fail_op(path, project_path)
        self._state[k] = {
            "phase": "queued",
            "step": 0,
            "gets": 0,
            "started": _now(),
            "dbs": {db: "active" for db in self._task_dbs(res)},
            "fail": {"code": fail[0], "message": fail[1]} if fail else None,
        }
        self.resources[k] = res
        if self.on_start:
            await self.on_start(res)
        return self._json(res, 200 if existed else 201)

    def _advance_task(self, path: str) -> None:
        k = _key(path)
        st = self._state[k]
        st["gets"] += 1
        if st["phase"] in ("succeeded", "failed", "canceled"):
            return
        if st["fail"] is None and (fail := self._take_fail_op(path, path.rsplit("/tasks/", 1)[0])):
            st["fail"] = {"code": fail[0], "message": fail[1]}
        if st["fail"]:
            st["phase"] = "failed"
            return
        if st["phase"] in ("queued", "loading"):
            st["step"] += 1
            if st["step"] <= self.steps_to_ready:
                st["phase"] = "loading"
            elif not st["dbs"]:
                st["phase"] = "succeeded"
            else:
                st["phase"] = "ready"
        if st["phase"] == "ready" and st["dbs"] and all(s == "complete" for s in st["dbs"].values()):
            st["phase"] = "succeeded"

    def _render_task(self, res: dict, with_output: bool) -> dict:
        st = self._state.get(_key(res["id"]))
        props = res["properties"]
        if st is None:
            return res
        phase, n, steps = st["phase"], self.tables_per_db, max(self.steps_to_ready, 1)
        props["state"] = {
            "queued": "Queued",
            "loading": "Running",
            "ready": "Running",
            "succeeded": "Succeeded",
            "failed": "Failed",
            "canceled": "Canceled",
        }[phase]
        for cmd in props.get("commands") or []:
            if cmd.get("state") == "Accepted" and phase in ("ready", "succeeded"):
                cmd["state"] = "Succeeded"
        if phase == "failed":
            props["errors"] = [{"code": st["fail"]["code"], "message": st["fail"]["message"]}]
        out = copy.deepcopy(res)
        if not with_output:
            out["properties"].pop("output", None)
            return out
        inp = props.get("input") or {}
        src, tgt = inp.get("sourceConnectionInfo") or {}, inp.get("targetConnectionInfo") or {}
        mig_state = {
            "queued": "PENDING",
            "loading": "PENDING",
            "ready": "ACTION_REQUIRED",
            "succeeded": "COMPLETE",
            "failed": "FAILED",
            "canceled": "COMPLETE",
        }[phase]
        output: list[dict] = [
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, res["id"])),
                "resultType": "MigrationLevelOutput",
                "startedOn": st["started"],
                "sourceServerVersion": "16.0",
                "sourceServer": src.get("serverName", ""),
                "targetServerVersion": "16.0",
                "targetServer": tgt.get("serverName", ""),
                "sourceServerType": "PostgreSQL",
                "targetServerType": "AzureDBForPostgresSQL",
                "state": mig_state,
                "databaseCount": float(len(st["dbs"])),
            }
        ]
        if phase in ("succeeded", "failed", "canceled"):
            output[0]["endedOn"] = _now()
        for db, dstate in st["dbs"].items():
            if phase in ("queued", "loading"):
                done = min(n, n * st["step"] // (steps + 1))
                mstate = "CONFIGURING" if phase == "queued" else "LOADING"
            else:
                done = n
                mstate = {"active": "READY_TO_COMPLETE", "complete": "COMPLETE", "cancelled": "CANCELLED"}[dstate]
                if phase == "failed":
                    mstate, done = "FAILED", min(n, n * st["step"] // (steps + 1))
                elif phase == "canceled" and dstate != "complete":
                    mstate = "CANCELLED"
            loading = 0 if done >= n or phase == "queued" else 1
            changes = 10 * max(st["gets"] - st["step"], 0) if phase not in ("queued", "loading") else 0
            d = {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, res["id"] + "/" + db)),
                "resultType": "DatabaseLevelOutput",
                "databaseName": db,
                "startedOn": st["started"],
                "migrationState": mstate,
                "incomingChanges": changes,
                "appliedChanges": changes,
                "cdcInsertCounter": changes - changes // 2,
                "cdcDeleteCounter": 0,
                "cdcUpdateCounter": changes // 2,
                "fullLoadCompletedTables": done,
                "fullLoadLoadingTables": loading,
                "fullLoadQueuedTables": n - done - loading,
                "fullLoadErroredTables": 0,
                "initializationCompleted": phase not in ("queued", "loading"),
                "latency": 2 if phase in ("queued", "loading") else 0,
            }
            if mstate in ("COMPLETE", "CANCELLED", "FAILED"):
                d["endedOn"] = _now()
            output.append(d)
        if phase == "failed":
            fail = st["fail"]
            output.append(
                {
                    "id": str(uuid.uuid4()),
                    "resultType": "ErrorOutput",
                    "error": {
                        "message": fail["message"],
                        "actionableMessage": f"{fail['code']}: {fail['message']}",
                        "hResult": -2146233088,
                    },
                    "events": [],
                }
            )
            for db in st["dbs"]:
                output.append(
                    {
                        "id": str(uuid.uuid4()),
                        "resultType": "DatabaseLevelErrorOutput",
                        "errorMessage": f"{db}: {fail['message']}",
                        "events": [],
                    }
                )
        out["properties"]["output"] = output
        return out

    async def _get_task(self, request, path, m, query, body) -> web.Response:
        res = self._stored(path)
        expand = query.get("$expand", "").lower() == "output"
        if expand and _key(path) in self._state:
            self._advance_task(path)
        return self._json(self._render_task(res, expand))

    async def _task_command(self, request, path, m, query, body) -> web.Response:
        task_path = path.rsplit("/", 1)[0]
        res = self._stored(task_path)
        st = self._state.get(_key(task_path))
        cmd = copy.deepcopy(body) if isinstance(body, dict) else {}
        ctype = cmd.get("commandType", "")
        if ctype != "Migrate.Sync.Complete.Database":
            raise FakeError(400, "NotImplementedInFake", f"command type {ctype!r} is not implemented by FakeArm")
        db = (cmd.get("input") or {}).get("databaseName")
        if st is None or db not in st["dbs"]:
            raise FakeError(400, "InvalidCommandInput", f"Database '{db}' is not part of task '{res['name']}'.")
        if st["phase"] != "ready" or st["dbs"][db] != "active":
            raise FakeError(
                400,
                "InvalidTaskState",
                f"Database '{db}' of task '{res['name']}' is not "
                f"READY_TO_COMPLETE (task is {res['properties'].get('state')}).",
            )
        res["lastCommand"] = cmd
        if self.on_cutover:
            await self.on_cutover(res)
        st["dbs"][db] = "complete"
        answer = {
            "commandType": ctype,
            "input": cmd.get("input"),
            "state": "Accepted",
            "commandId": str(uuid.uuid4()),
            "output": {"errors": []},
        }
        res["properties"].setdefault("commands", []).append(copy.deepcopy(answer))
        return self._json(answer)

    async def _cancel_task(self, request, path, m, query, body) -> web.Response:
        task_path = path.rsplit("/", 1)[0]
        res = self._stored(task_path)
        st = self._state.get(_key(task_path))
        if st is not None and st["phase"] not in ("succeeded", "failed", "canceled"):
            if self.on_cancel:
                await self.on_cancel(res)
            st["dbs"] = {db: ("complete" if s == "complete" else "cancelled") for db, s in st["dbs"].items()}
            st["phase"] = "canceled"
        return self._json(self._render_task(res, False))
