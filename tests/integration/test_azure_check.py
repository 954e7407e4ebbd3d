"""`/pgmig azure-check` against the fake ARM (through the real SDK clients), and the sovereign-cloud
settings: which token scope and authority host pgmig asks for, and which api-versions it sends."""

from __future__ import annotations

import pytest

from migration_core.azure import clients as azure_clients
from migration_core.azure.check import allowed
from migration_core.azure.clients import AzureClients, claims_of
from migration_core.azure.config import AzureConfig, from_environment
from tests.integration.azure_support import RG, azure_env, azure_server_toml, azure_toml, seed_server
from tests.integration.clusters import config_toml
from tests.integration.fake_arm import CLIENT_APP_ID, CLIENT_OBJECT_ID, TENANT_ID, FakeArm, fake_jwt
from tests.integration.slack_harness import running


@pytest.fixture
async def arm():
    async with FakeArm() as fake:
        seed_server(fake, "sales-prod")
        yield fake


def target(name: str = "azure", server: str = "sales-prod") -> str:
    """A flexible server entry azure-check reads only from Azure (no connection is made to it)."""
    return (
        f'\n[servers.{name}]\nhost = "{server}.postgres.database.azure.com"\nuser = "pgadmin"\n'
        f'password_env = "PGMIG_TEST_PASSWORD"\nsslmode = "require"\nazure_resource_group = "{RG}"\n'
        f'azure_server = "{server}"\n'
    )


def app(tmp_path, arm: FakeArm, servers: str = "", clusters: dict | None = None, env: dict | None = None, cred=None):
    config = config_toml(clusters or {}, extra=azure_toml(arm) + '[slack]\noperators = ["U0ALICE"]\n') + servers
    return running(tmp_path, config, env={**azure_env(arm), **(env or {})}, azure_credential=cred or arm.credential())


async def test_a_healthy_subscription_and_target(tmp_path, arm):
    async with app(tmp_path, arm, servers=target()) as slack:
        answer = await slack.ask("azure-check azure --backend flex --db app")
    assert "Azure check: ready" in answer and "❌" not in answer, answer
    assert "api-versions*: Microsoft.DBforPostgreSQL 2025-08-01, Microsoft.DataMigration 2025-06-30" in answer
    assert f"service principal (app id {CLIENT_APP_ID}, object id {CLIENT_OBJECT_ID}, tenant {TENANT_ID})" in answer
    assert "provider Microsoft.DBforPostgreSQL*: registered" in answer
    assert "permissions on resource group rg-data*: enough for" in answer
    assert "sales-prod in westeurope: Ready, PostgreSQL 16, public access Enabled" in answer
    assert {r.method for r in arm.requests} == {"GET"}  # it only reads


async def test_every_problem_comes_with_its_fix(tmp_path, arm, source_cluster):
    arm.unregistered.add("Microsoft.DataMigration")  # and the identity is only Reader on the subscription
    arm.permissions[f"/subscriptions/{arm.subscription}/resourcegroups/{RG}".lower()] = (
        ["Microsoft.DBforPostgreSQL/flexibleServers/read", "Microsoft.DBforPostgreSQL/flexibleServers/*/read"],
        [],
    )
    arm.resources[arm.server_path(RG, "sales-prod").lower()]["properties"]["state"] = "Stopped"
    arm.put_resource(
        arm.migration_path(RG, "sales-prod", "portal-run"),
        {"location": "westeurope", "properties": {"currentStatus": {"state": "WaitingForUserAction"}}},
    )
    async with app(tmp_path, arm, servers=target(), clusters={"onprem": source_cluster}) as slack:
        dms = await slack.ask("azure-check azure --backend dms --source onprem")
        flex = await slack.ask("azure-check azure --backend flex --db " + ",".join(f"d{i}" for i in range(9)))
    assert "problem(s) to fix" in dms
    assert "❌ *provider Microsoft.DataMigration*: NotRegistered in the subscription" in dms
    assert "az provider register --namespace Microsoft.DataMigration" in dms
    assert "missing Microsoft.DBforPostgreSQL/flexibleServers/write" in dms
    assert "Microsoft.DataMigration/services/write" in dms and "assign pgmig's identity Contributor" in dms
    assert "permissions on DMS subnet*: missing Microsoft.Network/virtualNetworks/subnets/join/action" in dms
    assert "assign pgmig's identity Network Contributor" in dms
    assert "flexible server sales-prod is stopped" in dms
    assert "az postgres flexible-server start --resource-group rg-data --name sales-prod" in dms
    assert "Azure DMS classic migrates PostgreSQL 9.4 to 13 only" in dms and "--backend flex" in dms
    assert "Microsoft recommends the flexible server's own migration service" in dms
    assert "Microsoft.DBforPostgreSQL/flexibleServers/migrations/write" in flex
    assert "runs migration portal-run: the service takes one at a time" in flex
    assert "9 databases: the service takes at most 8 per migration" in flex
    assert "provider Microsoft.DataMigration" not in flex and "DMS" not in flex  # not what flex needs
    assert not [r for r in arm.requests if r.method != "GET"]


async def test_a_private_endpoint_target_needs_a_runtime_server(tmp_path, arm):
    arm.resources[arm.server_path(RG, "sales-prod").lower()]["properties"]["network"] = {
        "publicNetworkAccess": "Disabled"
    }
    async with app(tmp_path, arm, servers=target()) as slack:
        answer = await slack.ask("azure-check azure --backend flex")
    assert "reachable only through a private endpoint" in answer and "azure_runtime_server" in answer


async def test_unknown_names_and_no_azure(tmp_path, arm, target_cluster):
    async with app(tmp_path, arm, servers=target()) as slack:
        assert "did you mean" in await slack.ask("azure-check azur")
    (tmp_path / "none").mkdir()
    async with running(tmp_path / "none", config_toml({}) + azure_server_toml("a", target_cluster, "a")) as slack:
        assert "Azure is not configured" in await slack.ask("azure-check")


# ---- sovereign clouds: scope, authority host, api-versions


@pytest.mark.parametrize(
    "endpoint, scope, authority",
    [
        ("https://management.azure.com", "https://management.azure.com/.default", "login.microsoftonline.com"),
        # US Gov's audience is not its endpoint's (azure-mgmt-core's own table says so)
        (
            "https://management.usgovcloudapi.net/",
            "https://management.core.usgovcloudapi.net/.default",
            "login.microsoftonline.us",
        ),
        (
            "https://management.chinacloudapi.cn",
            "https://management.chinacloudapi.cn/.default",
            "login.chinacloudapi.cn",
        ),
        (
            "https://management.local.azurestack.external",
            "https://management.local.azurestack.external/.default",
            "login.microsoftonline.com",
        ),
    ],
)
def test_each_cloud_gets_its_own_scope_and_authority(endpoint, scope, authority):
    config = AzureConfig(subscription_id="s", arm_endpoint=endpoint)
    assert (config.scope, config.authority) == (scope, authority)


def test_settings_and_environment_override_the_cloud_defaults():
    config = from_environment(
        {"arm_endpoint": "https://management.usgovcloudapi.net", "subscription_id": "s"},
        {"AZURE_AUTHORITY_HOST": "https://login.example.gov/", "PGMIG_ARM_SCOPE": "https://arm.example.gov/.default"},
    )
    assert config.authority == "login.example.gov" and config.scope == "https://arm.example.gov/.default"
    assert from_environment({}, {"PGMIG_PG_API_VERSION": "2026-01-01-preview"}).pg_api_version == "2026-01-01-preview"


async def test_the_credential_is_built_for_the_clouds_authority(monkeypatch):
    built: list[dict] = []

    class Recording:
        def __init__(self, **kwargs) -> None:
            built.append(kwargs)

        async def close(self) -> None:
            pass

    import azure.identity.aio

    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", Recording)
    clients = AzureClients(AzureConfig(subscription_id="s", arm_endpoint="https://management.usgovcloudapi.net"))
    clients._require()
    assert built == [{"authority": "login.microsoftonline.us"}]


async def test_pgmig_asks_for_the_configured_scope_and_sends_the_pinned_api_versions(tmp_path, arm):
    cred = arm.credential()
    env = {"PGMIG_ARM_SCOPE": "https://management.core.usgovcloudapi.net/.default"}
    async with app(tmp_path, arm, servers=target(), env=env, cred=cred) as slack:
        await slack.ask("azure-check azure --backend dms")
    assert ("https://management.core.usgovcloudapi.net/.default",) in cred.scopes
    versions = {r.query["api-version"] for r in arm.requests if "/flexibleServers/" in r.path}
    assert versions == {"2025-08-01"}
    assert {r.query["api-version"] for r in arm.requests if r.path.endswith("/providers/Microsoft.DataMigration")} == {
        "2021-04-01"
    }


def test_identity_claims_and_rbac_patterns():
    assert claims_of(fake_jwt({"oid": "o", "tid": "t", "upn": "ann@example.com", "idtyp": "user"})).describe() == (
        "user (ann@example.com, object id o, tenant t)"
    )
    mi = {
        "oid": "o",
        "appid": "a",
        "xms_mirid": "/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/x",
    }
    assert claims_of(fake_jwt(mi)).kind == "managed identity"
    assert claims_of("not-a-jwt").kind == "unknown"
    contributor = (["*"], ["Microsoft.Authorization/*/Write"])
    assert allowed("Microsoft.DBforPostgreSQL/flexibleServers/migrations/write", *contributor)
    assert not allowed("Microsoft.Authorization/roleAssignments/write", *contributor)
    assert allowed("Microsoft.Web/sites/read", ["*/read"], []) and not allowed(
        "Microsoft.Web/sites/write", ["*/read"], []
    )
    assert azure_clients.Identity("unknown").describe() == "an identity whose token carries no readable claims"
