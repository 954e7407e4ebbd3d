"""The changes pgmig makes on a flexible server through Azure (`/pgmig createdb`, `firewall`, `configure` and a
provisioning's rules, parameters and restart) are journal entries, planned before each ARM call and marked done
after it; an undo acts only on what pgmig made, by identity. Real SDK clients against the fake ARM over TLS; the
flexible server's SQL side is a local cluster. pgmig "dies" at a failpoint by an exception raised where
PGMIG_KILL_AT would have killed the process: nothing after it runs."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from azure.mgmt.postgresqlflexibleservers import models
from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient

from bot.localpg import LocalCluster
from migration_core.azure.validation import FirewallRule
from migration_core.changes.azure import DatabasePayload, FirewallPayload, ParameterPayload, RestartPayload
from migration_core.pg import failpoints
from migration_core.state.journal import Journal
from migration_core.state.models import Change, JournalEntry, Mark
from tests.integration.azure_support import RG, azure_env, azure_server_toml, azure_toml, seed_server
from tests.integration.clusters import config_toml
from tests.integration.fake_arm import CONFIG_DEFAULTS, PG_API, FakeArm
from tests.integration.fake_slack import text_of
from tests.integration.slack_harness import Running, running
from tests.integration.test_crash_recovery import Pgmig

SCOPE = "azure:rg-data/sales-prod"
DATABASES = ("azj_shop", "azj_again", "azj_filled", "azj_crash")


class SqlBackedArm(FakeArm):
    """The fake ARM with a local cluster as the flexible server's SQL side: a database Azure creates or deletes
    is created or dropped there too, as on a real flexible server (the moment Azure accepts the request)."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__()
        self.cluster = cluster

    async def _put_child_lro(self, request, path, m, query, body):
        if "/databases/" in path.lower():
            name = path.rsplit("/", 1)[-1]
            if not await asyncio.to_thread(self.cluster.psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
                await asyncio.to_thread(self.cluster.psql, f'CREATE DATABASE "{name}"')
        return await super()._put_child_lro(request, path, m, query, body)

    async def _delete_lro(self, request, path, m, query, body):
        if "/databases/" in path.lower():
            name = path.rsplit("/", 1)[-1]
            await asyncio.to_thread(self.cluster.psql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return await super()._delete_lro(request, path, m, query, body)

    def path(self, child: str) -> str:
        return f"{self.server_path(RG, 'sales-prod')}/{child}"

    def rule(self, name: str) -> tuple[str, str] | None:
        found = self.resources.get(self.path(f"firewallRules/{name}").lower())
        return (found["properties"]["startIpAddress"], found["properties"]["endIpAddress"]) if found else None

    def parameter(self, name: str) -> str:
        found = self.resources.get(self.path(f"configurations/{name}").lower())
        return found["properties"]["value"] if found else CONFIG_DEFAULTS[name]


class Crash(Exception):
    """pgmig dying at a failpoint."""


@pytest.fixture
def crash_at(monkeypatch):
    """`crash_at(point)`: pgmig dies the moment it reaches that failpoint (failpoints.py names them)."""

    def at(point: str) -> None:
        def reached(name: str) -> None:
            if name == point:
                raise Crash(name)

        monkeypatch.setattr(failpoints, "reached", reached)

    return at


@pytest.fixture
async def setup(tmp_path, target_cluster) -> AsyncIterator[tuple[Running, SqlBackedArm]]:
    """pgmig with `sales`, the flexible server sales-prod (its SQL side: the target cluster)."""
    async with SqlBackedArm(target_cluster) as arm:
        seed_server(arm, "sales-prod")
        extra = azure_toml(arm) + 'admin_password_envs = ["SALES_ADMIN_PASSWORD"]\n[slack]\noperators = ["U0ALICE"]\n'
        config = config_toml({}, extra=extra) + azure_server_toml("sales", target_cluster, "sales-prod")
        async with running(tmp_path, config, env=azure_env(arm), azure_credential=arm.credential()) as slack:
            yield slack, arm
        assert not arm.errors, arm.errors
    for db in DATABASES:
        target_cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@asynccontextmanager
async def someone(arm: FakeArm) -> AsyncIterator[PostgreSQLManagementClient]:
    """Another person's client for the same subscription (the Azure portal, az, Terraform…)."""
    async with PostgreSQLManagementClient(
        arm.credential(),
        arm.subscription,
        base_url=arm.endpoint,
        credential_scopes=["https://management.azure.com/.default"],
        connection_verify=arm.ca_path,
        polling_interval=0,
        api_version=PG_API,
    ) as client:
        yield client


async def set_rule(arm: FakeArm, name: str, start: str, end: str) -> None:
    body = models.FirewallRule(properties=models.FirewallRuleProperties(start_ip_address=start, end_ip_address=end))
    async with someone(arm) as client:
        await (await client.firewall_rules.begin_create_or_update(RG, "sales-prod", name, body)).result()


async def entries(slack: Running, scope: str = SCOPE) -> dict[tuple[Change, str], JournalEntry]:
    found = await Journal(slack.services.engine.store, scope).entries(live_only=False)
    return {(e.kind, e.name or e.database): e for e in found}


def oid(cluster: LocalCluster, db: str) -> int | None:
    found = cluster.psql(f"SELECT oid FROM pg_database WHERE datname = '{db}'")
    return int(found) if found else None


async def test_firewall_createdb_and_configure_are_journaled_and_undone_exactly(setup, target_cluster):
    slack, arm = setup
    await set_rule(arm, "vpn", "10.0.0.1", "10.0.0.2")  # someone's rule, which pgmig replaces
    recorded = f"Recorded in pgmig's journal under `{SCOPE}`"
    assert recorded in await slack.ask("firewall sales office=203.0.113.1-203.0.113.20,vpn=198.51.100.7")
    assert recorded in await slack.ask("createdb sales azj_shop")
    said = await slack.ask("configure sales --wal-level logical --restart")
    assert "restarted" in said and recorded in said
    assert "already exists on *sales-prod*: nothing was created" in await slack.ask("createdb sales azj_shop")

    made = await entries(slack)
    assert set(made) == {
        (Change.FIREWALL_RULE, "office"),
        (Change.FIREWALL_RULE, "vpn"),
        (Change.AZURE_DATABASE, "azj_shop"),
        (Change.SERVER_PARAMETER, "wal_level"),
        (Change.SERVER_RESTART, "restart"),
    }
    assert {(e.mark, e.server) for e in made.values()} == {(Mark.DONE, "rg-data/sales-prod")}
    office = FirewallPayload.of(made[Change.FIREWALL_RULE, "office"])
    assert (office.start, office.end, office.before) == ("203.0.113.1", "203.0.113.20", None)
    assert office.resource_id.lower() == arm.path("firewallRules/office").lower() and office.modified_at
    assert FirewallPayload.of(made[Change.FIREWALL_RULE, "vpn"]).before == ["10.0.0.1", "10.0.0.2"]
    db = DatabasePayload.of(made[Change.AZURE_DATABASE, "azj_shop"])
    assert db.oid == oid(target_cluster, "azj_shop") and db.created_at and db.resource_id
    assert ParameterPayload.of(made[Change.SERVER_PARAMETER, "wal_level"]) == ParameterPayload("replica", "logical")
    assert RestartPayload.of(made[Change.SERVER_RESTART, "restart"]).pending == ["wal_level"]
    assert "firewall rule office 203.0.113.1-203.0.113.20 on flexible server rg-data/sales-prod" in [
        e.describe() for e in made.values()
    ]

    # in chat: anyone may list them; only an operator may undo them, which the audit log keeps
    listed = await slack.ask("undo sales", user="U0EVE")
    assert "What pgmig changed on sales through Azure" in listed and "firewall rule office" in listed, listed
    assert "`/pgmig undo sales --yes` undoes them" in listed
    assert "only operators" in (await slack.ask("undo sales --yes", user="U0EVE")).lower()
    assert arm.rule("office") is not None  # refused: nothing was undone
    undone = await slack.ask("undo sales --yes", user="U0ALICE")
    for said in (
        "deleted firewall rule office from sales-prod",
        "dropped database azj_shop on sales-prod",
        "put firewall rule vpn on sales-prod back to 10.0.0.1-10.0.0.2",
        "set wal_level on sales-prod back to replica (takes effect after a restart)",
    ):
        assert said in undone, undone
    assert "not undone" not in undone
    assert arm.rule("office") is None and arm.rule("vpn") == ("10.0.0.1", "10.0.0.2")
    assert arm.parameter("wal_level") == "replica" and oid(target_cluster, "azj_shop") is None
    assert {e.mark for e in (await entries(slack)).values()} == {Mark.UNDONE}
    assert "Nothing to undo." in await slack.ask("undo sales --yes", user="U0ALICE")
    assert "pgmig changed nothing there through Azure" in await slack.ask("undo sales")
    assert "`prov-x` is not a provisioning request" in await slack.ask("undo sales --request prov-x")


async def test_an_undo_leaves_what_someone_changed_or_re_created_since(setup, target_cluster):
    slack, arm = setup
    provisioner = slack.services.provisioner
    rules = [FirewallRule("office", "203.0.113.1", "203.0.113.1"), FirewallRule("lab", "192.0.2.1", "192.0.2.9")]
    await provisioner.add_firewall_rules("sales", rules)
    await provisioner.configure_server("sales", ["pg_trgm"], None, False)
    assert await provisioner.create_database("sales", "azj_again") == "azj_again"
    assert await provisioner.create_database("sales", "azj_filled") == "azj_filled"
    first = oid(target_cluster, "azj_again")
    async with someone(arm) as client:  # the same name, the same range: another rule all the same
        await (await client.firewall_rules.begin_delete(RG, "sales-prod", "office")).result()
        await (await client.databases.begin_delete(RG, "sales-prod", "azj_again")).result()
        await (await client.databases.begin_create(RG, "sales-prod", "azj_again", models.Database())).result()
        await (
            await client.configurations.begin_update(
                RG,
                "sales-prod",
                "azure.extensions",
                models.ConfigurationForUpdate(properties=models.ConfigurationProperties(value="hstore,pg_trgm")),
            )
        ).result()
    await set_rule(arm, "office", "203.0.113.1", "203.0.113.1")
    await set_rule(arm, "lab", "192.0.2.1", "192.0.2.20")
    target_cluster.psql("CREATE TABLE kept (id int)", database="azj_filled")
    assert oid(target_cluster, "azj_again") != first

    outcome = await provisioner.undo_changes("sales")
    assert sorted(outcome.done) == [
        "left azure.extensions = hstore,pg_trgm on sales-prod: it was changed since pgmig set it to pg_trgm",
        "left database azj_again on sales-prod: it is not the one pgmig created (re-created since)",
        "left firewall rule lab on sales-prod: it is not the rule pgmig set (changed or re-created since)",
        "left firewall rule office on sales-prod: it is not the rule pgmig set (changed or re-created since)",
    ]
    [failed] = outcome.failed
    assert "azj_filled on sales-prod holds data now: pgmig drops only an empty database it created" in failed
    assert arm.rule("office") == ("203.0.113.1", "203.0.113.1") and arm.rule("lab") == ("192.0.2.1", "192.0.2.20")
    assert arm.parameter("azure.extensions") == "hstore,pg_trgm"
    assert oid(target_cluster, "azj_again") and oid(target_cluster, "azj_filled")
    live = [key for key, e in (await entries(slack)).items() if e.live]
    assert live == [(Change.AZURE_DATABASE, "azj_filled")]  # pgmig's, still: a person decides


@pytest.mark.parametrize("point", ["plan-firewall_rule:", "made-firewall_rule:", "firewall_rule:"])
async def test_killed_around_setting_a_firewall_rule_the_entry_says_what_happened(setup, crash_at, point):
    """Killed before the ARM call: planned, nothing sent, and a rule someone creates under that name meanwhile
    is not pgmig's. Killed after the call: still planned ("maybe made"), the rule there with pgmig's range is
    found made and deleted. Killed once marked done: re-created by someone with the very same range, it is
    told apart by when it was last modified, and left."""
    slack, arm = setup
    crash_at(point)
    with pytest.raises(Crash):
        await slack.services.provisioner.add_firewall_rules(
            "sales", [FirewallRule("office", "203.0.113.1", "203.0.113.20")]
        )
    [entry] = (await entries(slack)).values()
    sent = len(arm.calls("PUT", "/firewallRules/office"))
    made = FirewallPayload.of(entry)
    if point == "plan-firewall_rule:":
        assert entry.mark is Mark.PLANNED and made == FirewallPayload("203.0.113.1", "203.0.113.20") and sent == 0
        await set_rule(arm, "office", "10.1.1.1", "10.1.1.1")
    elif point == "made-firewall_rule:":
        assert entry.mark is Mark.PLANNED and made == FirewallPayload("203.0.113.1", "203.0.113.20") and sent == 1
    else:
        assert entry.mark is Mark.DONE and made.resource_id and made.modified_at and sent == 1
        async with someone(arm) as client:
            await (await client.firewall_rules.begin_delete(RG, "sales-prod", "office")).result()
        await set_rule(arm, "office", "203.0.113.1", "203.0.113.20")
    outcome = await slack.services.provisioner.undo_changes("sales")
    if point == "made-firewall_rule:":
        assert outcome.done == ["deleted firewall rule office from sales-prod"] and arm.rule("office") is None
    else:
        assert outcome.done == [
            "left firewall rule office on sales-prod: it is not the rule pgmig set (changed or re-created since)"
        ]
        assert arm.rule("office") is not None
    assert outcome.ok and [e.mark for e in (await entries(slack)).values()] == [Mark.UNDONE]


@pytest.mark.parametrize("point", ["plan-azure_database:azj_crash", "made-azure_database:azj_crash"])
async def test_killed_around_creating_a_database_an_undo_drops_only_an_empty_one_it_may_have_made(
    setup, target_cluster, crash_at, point
):
    slack, arm = setup
    crash_at(point)
    with pytest.raises(Crash):
        await slack.services.provisioner.create_database("sales", "azj_crash")
    [entry] = (await entries(slack)).values()
    assert entry.mark is Mark.PLANNED and DatabasePayload.of(entry) == DatabasePayload()
    created = point.startswith("made-")
    assert (oid(target_cluster, "azj_crash") is not None) is created
    assert len(arm.calls("PUT", "/databases/azj_crash")) == int(created)
    outcome = await slack.services.provisioner.undo_changes("sales")
    assert outcome.ok and outcome.done == (["dropped database azj_crash on sales-prod"] if created else [])
    assert oid(target_cluster, "azj_crash") is None
    assert [e.mark for e in (await entries(slack)).values()] == [Mark.UNDONE]


async def test_killed_after_creating_a_database_someone_filled_since_is_not_pgmigs_to_drop(
    setup, target_cluster, crash_at
):
    """Without the identity pgmig would have read back, a database that holds data was not made by its call."""
    slack, _ = setup
    crash_at("made-azure_database:azj_crash")
    with pytest.raises(Crash):
        await slack.services.provisioner.create_database("sales", "azj_crash")
    target_cluster.psql("CREATE TABLE orders (id int)", database="azj_crash")
    outcome = await slack.services.provisioner.undo_changes("sales")
    assert outcome.ok and outcome.done == [
        "left database azj_crash on sales-prod: it holds data, so it is not the one pgmig's call made"
    ]
    assert oid(target_cluster, "azj_crash") is not None


@pytest.mark.parametrize("point", ["plan-server_parameter:", "made-server_parameter:"])
async def test_killed_around_setting_a_parameter_an_undo_puts_back_only_what_it_set(setup, crash_at, point):
    slack, arm = setup
    crash_at(point)
    with pytest.raises(Crash):
        await slack.services.provisioner.configure_server("sales", [], "logical", False)
    [entry] = (await entries(slack)).values()
    assert entry.mark is Mark.PLANNED and ParameterPayload.of(entry) == ParameterPayload("replica", "logical")
    made = point.startswith("made-")
    assert arm.parameter("wal_level") == ("logical" if made else "replica")
    outcome = await slack.services.provisioner.undo_changes("sales")
    assert outcome.ok and outcome.done == (
        ["set wal_level on sales-prod back to replica (takes effect after a restart)"] if made else []
    )
    assert arm.parameter("wal_level") == "replica"


async def test_a_provisionings_changes_are_its_own_journal(tmp_path, setup, monkeypatch):
    """Rules, parameters and the restart a provisioning makes are keyed by its request id; nothing of the
    server's own scope, and no migration, sees them."""
    slack, arm = setup
    monkeypatch.setenv("SALES_ADMIN_PASSWORD", "Str0ng-Admin-Pw")
    await slack.command(
        "provision sales-new --resource-group rg-data --region westeurope --version 16 --tier GeneralPurpose "
        "--sku Standard_D4ds_v5 --storage-gb 256 --admin-user pgadmin --admin-password-env SALES_ADMIN_PASSWORD "
        "--network public --firewall pgmig=198.51.100.7 --allow-azure-services",
        key="p",
    )
    call = await slack.fake.wait_for(
        "calls",
        lambda c: c.method in ("chat.update", "chat.postMessage") and "✅" in text_of(c.params),
        timeout=30,
    )
    assert "sales-new" in text_of(call.params)
    made = await entries(slack, "prov-1")
    assert set(made) == {
        (Change.FIREWALL_RULE, "pgmig"),
        (Change.FIREWALL_RULE, "AllowAllAzureServicesAndResourcesWithinAzureIps"),
    }
    assert {(e.mark, e.server) for e in made.values()} == {(Mark.DONE, "rg-data/sales-new")}
    assert await entries(slack) == {} and await slack.services.engine.store.list_migrations() == []
    outcome = await slack.services.provisioner.undo_changes("sales-new", "prov-1")
    assert outcome.ok and sorted(outcome.done) == [
        "deleted firewall rule AllowAllAzureServicesAndResourcesWithinAzureIps from sales-new",
        "deleted firewall rule pgmig from sales-new",
    ]
    assert len(arm.calls("DELETE", "/firewallRules/")) == 2


@asynccontextmanager
async def managed_identity(token: str) -> AsyncIterator[dict[str, str]]:
    """App Service's managed identity endpoint as Microsoft documents it (GET IDENTITY_ENDPOINT?api-version=
    2019-08-01&resource=…, the X-IDENTITY-HEADER secret; JSON access_token, expires_on, resource, token_type): what
    azure-identity's DefaultAzureCredential gets a token from in a pgmig process of its own. Its environment."""
    secret = secrets.token_hex(16)

    async def issue(request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != secret or request.query.get("api-version") != "2019-08-01":
            return web.json_response({"error": "invalid_request"}, status=400)
        expires = str(int(time.time()) + 3600)
        resource = request.query.get("resource", "")
        return web.json_response(
            {"access_token": token, "expires_on": expires, "resource": resource, "token_type": "Bearer"}
        )

    app = web.Application()
    app.router.add_get("/msi/token", issue)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{port}/msi/token", "IDENTITY_HEADER": secret}
    finally:
        await runner.cleanup()


async def test_pgmig_killed_right_after_azure_set_a_firewall_rule_the_next_pgmig_undoes_it_in_chat(
    tmp_path, target_cluster
):
    """A real pgmig process SIGKILLed the moment Azure accepted a firewall rule, before its entry was marked
    done: the rule is there, the entry still "planned" (maybe made). The next pgmig lists it and, asked to,
    deletes it, as its range is pgmig's."""
    async with SqlBackedArm(target_cluster) as arm, managed_identity(arm.credential().token) as identity:
        seed_server(arm, "sales-prod")
        extra = azure_toml(arm) + '[slack]\noperators = ["U0ALICE"]\n'
        config = tmp_path / "pgmig.toml"
        config.write_text(config_toml({}, extra=extra) + azure_server_toml("sales", target_cluster, "sales-prod"))
        home = tmp_path / "home"
        first = Pgmig(home, config, 1, "made-firewall_rule:")
        first.env.update({**azure_env(arm), **identity})
        await (await first.start()).type("firewall sales office=203.0.113.1-203.0.113.20")
        await first.killed()
        assert arm.rule("office") == ("203.0.113.1", "203.0.113.20")  # Azure made it; pgmig died before noting it
        second = Pgmig(home, config, 2, None)
        second.env.update({**azure_env(arm), **identity})
        await (await second.start()).type("undo sales", "undo sales --yes")
        await second.quit()
        said = second.log()
        assert "firewall rule office 203.0.113.1-203.0.113.20 on flexible server rg-data/sales-prod" in said, said
        assert "deleted firewall rule office from sales-prod" in said, said
        assert arm.rule("office") is None
        assert not arm.errors, arm.errors
