"""`/pgmig provision | createdb | firewall | configure` from Slack, through the real async Azure SDK
clients, against the fake ARM over TLS: what reaches Azure, what the channel sees, what is kept."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from handlers.actions import Action
from migration_core.azure.provisioning import ProvisionRecord, ProvisionState
from migration_core.state.journal import Journal
from tests.integration.azure_support import RG, azure_env, azure_server_toml, azure_toml, seed_server
from tests.integration.clusters import config_toml
from tests.integration.fake_arm import FakeArm, default_capability
from tests.integration.fake_slack import text_of
from tests.integration.slack_harness import running

GOOD = (
    "provision sales-prod --resource-group rg-data --region westeurope --version 16 --tier GeneralPurpose "
    "--sku Standard_D4ds_v5 --storage-gb 256 --admin-user pgadmin --admin-password-env SALES_ADMIN_PASSWORD "
    "--network public --firewall pgmig=198.51.100.7"
)
SUBNET = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-net/providers/Microsoft.Network/"
    "virtualNetworks/vnet-data/subnets/pg"
)
DNS_ZONE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-net/providers/Microsoft.Network/"
    "privateDnsZones/sales.private.postgres.database.azure.com"
)
SERVER_PATH = "/flexibleservers/sales-prod"
OPERATORS = ["U0ALICE"]
PASSWORD_ENVS = [
    "SALES_ADMIN_PASSWORD",
    "SHORT_PASSWORD",
    "TWO_CLASSES_PASSWORD",
    "NAMED_PASSWORD",
    "UNSET_PASSWORD_VAR",
]
PASSWORD_RULES = (
    "does not meet Azure's password rules: 8–128 characters, characters from at least three of "
    "uppercase, lowercase, digits and symbols, and not containing the admin user name"
)


@pytest.fixture
async def arm():
    async with FakeArm() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _admin_passwords(monkeypatch):
    monkeypatch.setenv("SALES_ADMIN_PASSWORD", "Str0ng-Admin-Pw")
    monkeypatch.setenv("SHORT_PASSWORD", "Ab1!")
    monkeypatch.setenv("TWO_CLASSES_PASSWORD", "alllowercase123")
    monkeypatch.setenv("NAMED_PASSWORD", "Pgadmin-1234")


@pytest.fixture
def source_extensions(source_cluster):
    """The source uses pg_trgm (allow-list only) and pg_prewarm (allow-list and preload: a restart)."""
    source_cluster.psql("CREATE DATABASE inventory_ext")
    source_cluster.psql("CREATE EXTENSION pg_trgm; CREATE EXTENSION pg_prewarm", database="inventory_ext")
    yield source_cluster
    source_cluster.psql("DROP DATABASE inventory_ext")


def configuration_writes(arm: FakeArm) -> dict[str, str]:
    return {
        r.path.rsplit("/", 1)[-1]: r.body["properties"]["value"]
        for r in arm.requests
        if r.method in ("PATCH", "PUT") and "/configurations/" in r.path
    }


def app(
    tmp_path,
    fake: FakeArm,
    extra: str = "",
    servers: str = "",
    clusters: dict | None = None,
    poll: float = 0,
    ca: bool = True,
    slack: str = "",
    operators: list[str] = OPERATORS,
    password_envs: list[str] = PASSWORD_ENVS,
):
    """`extra` goes into [azure], `slack` into [slack] (after the operators)."""
    azure = azure_toml(fake, poll=poll, ca=ca) + f"admin_password_envs = {json.dumps(password_envs)}\n" + extra
    policy = f"[slack]\noperators = {json.dumps(operators)}\n{slack}"
    config = config_toml(clusters or {}, extra=azure + policy) + servers
    return running(
        tmp_path,
        config,
        env=azure_env(fake),
        azure_credential=fake.credential(),
        usergroups={"S0DBAS": ["U0APPROVER2"]},
    )


async def finished(slack, name: str) -> str:
    """The provisioning message once it says done or failed (it is edited in place while it runs)."""
    call = await slack.fake.wait_for(
        "calls",
        lambda c: (
            c.method in ("chat.update", "chat.postMessage")
            and name in text_of(c.params)
            and ("✅" in text_of(c.params) or "❌" in text_of(c.params))
        ),
        timeout=30,
    )
    return text_of(call.params)


def lowered(path: str) -> str:
    return path.lower()


def writes(arm: FakeArm) -> list:
    """What reached Azure beyond reads (a request is checked against the region's offer, a read, at once)."""
    return [r for r in arm.requests if r.method != "GET"]


async def test_provision_sends_the_requested_server_and_registers_it_as_a_target(tmp_path, arm, source_extensions):
    arm.lro_polls = 8  # polled every 0.03 s, progress shown every 0.05 s
    async with app(tmp_path, arm, clusters={"onprem": source_extensions}, poll=0.03) as slack:
        await slack.command(
            GOOD.replace("--firewall pgmig=198.51.100.7", "--firewall office=203.0.113.1-203.0.113.20")
            + " --ha zone-redundant --zone 1 --standby-zone 3 --allow-azure-services --tags env=prod,team=data "
            "--source onprem",
            key="p",
        )
        assert "provisioning sales-prod" in text_of(await slack.reply("p"))
        done = await finished(slack, "sales-prod")
        assert "✅" in done and "sales-prod.postgres.database.azure.com" in done and "Added as server" in done
        assert "(state Ready)" in done
        assert configuration_writes(arm) == {
            "azure.extensions": "pg_prewarm,pg_trgm",  # for the named source
            "shared_preload_libraries": "pg_cron,pg_stat_statements,pg_prewarm",
        }
        assert [r for r in arm.requests if r.method == "POST" and r.path.endswith("/restart")]
        assert "restarted so that the preloaded libraries are loaded" in done
        journal = await Journal(slack.services.engine.store, "prov-1").entries()  # each change, by its request
        assert sorted((e.kind.value, e.name, e.mark.value) for e in journal) == [
            ("firewall_rule", "AllowAllAzureServicesAndResourcesWithinAzureIps", "done"),
            ("firewall_rule", "office", "done"),
            ("server_parameter", "azure.extensions", "done"),
            ("server_parameter", "shared_preload_libraries", "done"),
            ("server_restart", "restart", "done"),
        ]
        [put] = [r for r in arm.requests if r.method == "PUT" and lowered(r.path).endswith(SERVER_PATH)]
        body = put.body
        assert body["location"] == "westeurope" and body["tags"] == {"env": "prod", "team": "data"}
        assert body["sku"] == {"name": "Standard_D4ds_v5", "tier": "GeneralPurpose"}
        props = body["properties"]
        assert props["version"] == "16" and props["storage"]["storageSizeGB"] == 256
        assert props["highAvailability"] == {"mode": "ZoneRedundant", "standbyAvailabilityZone": "3"}
        assert props["availabilityZone"] == "1" and props["administratorLogin"] == "pgadmin"
        assert props["administratorLoginPassword"] == "Str0ng-Admin-Pw" and props["createMode"] == "Create"
        assert props["network"]["publicNetworkAccess"] == "Enabled"
        rules = {
            r.path.rsplit("/", 1)[-1]: r.body["properties"]
            for r in arm.requests
            if r.method == "PUT" and "/firewallrules/" in lowered(r.path)
        }
        assert rules == {
            "AllowAllAzureServicesAndResourcesWithinAzureIps": {"startIpAddress": "0.0.0.0", "endIpAddress": "0.0.0.0"},
            "office": {"startIpAddress": "203.0.113.1", "endIpAddress": "203.0.113.20"},
        }
        progress = [c for c in slack.fake.calls if c.method == "chat.update" and "⏳" in text_of(c.params)]
        assert progress, "the channel was told that the operation still runs"
        assert all("Str0ng-Admin-Pw" not in text_of(c.params) for c in slack.fake.calls)
        saved = await slack.services.engine.store.saved_servers()
        assert saved["sales-prod"]["host"] == "sales-prod.postgres.database.azure.com"
        assert saved["sales-prod"]["password_env"] == "SALES_ADMIN_PASSWORD" and "password" not in saved["sales-prod"]
        assert slack.services.servers["sales-prod"].azure_resource_group == "rg-data"
        assert "sales-prod" in await slack.ask("servers")
        status = await slack.ask("status prov-1")
        assert (
            "✅ *prov-1* · server *sales-prod* · done" in status and "sales-prod.postgres.database.azure.com" in status
        )
        audit = await slack.ask("audit prov-1")
        assert audit.index("provision.requested") < audit.index("provision.completed")
        assert "is a provisioning request, not a migration" in await slack.ask("cancel prov-1")


@pytest.mark.parametrize(
    "change, rule",
    [
        (("sales-prod", "Sales_Prod"), "3–63 characters of lowercase letters, digits and hyphens"),
        (("sales-prod", "-sales"), "not starting or ending with a hyphen"),
        (("sales-prod", "ab"), "3–63 characters"),
        (("--admin-user pgadmin", "--admin-user azure_superuser"), "reserved by Azure"),
        (("--admin-user pgadmin", "--admin-user Administrator"), "reserved by Azure"),
        (("--admin-user pgadmin", "--admin-user pg_admin"), "starting with `pg_`"),
        (("SALES_ADMIN_PASSWORD", "SHORT_PASSWORD"), "the password in SHORT_PASSWORD " + PASSWORD_RULES),
        (("SALES_ADMIN_PASSWORD", "TWO_CLASSES_PASSWORD"), "the password in TWO_CLASSES_PASSWORD " + PASSWORD_RULES),
        (("SALES_ADMIN_PASSWORD", "UNSET_PASSWORD_VAR"), "is not set where pgmig runs"),
        (
            ("SALES_ADMIN_PASSWORD", "SLACK_BOT_TOKEN"),
            "--admin-password-env SLACK_BOT_TOKEN is not one of [azure] admin_password_envs; add it there",
        ),
        (("--storage-gb 256", "--storage-gb 100"), "flexible server offers 32, 64, 128"),
        # str.isdigit() takes these, int() does not: the rule answers, not "failed unexpectedly"
        (("--storage-gb 256", "--storage-gb ²"), "--storage-gb `²`: a whole number of GB, one of 32, 64"),
        (("--storage-gb 256", "--storage-gb " + "9" * 5000), f"--storage-gb `{'9' * 20}…`: a whole number of GB"),
        (("--sku Standard_D4ds_v5", "--sku GP_Gen5_" + "4" * 5000), "is not a GeneralPurpose SKU"),
        (("--sku Standard_D4ds_v5", "--sku Standard_D٤ds_v5"), "is not a GeneralPurpose SKU"),
        (("--version 16", "--version 10"), "flexible server offers PostgreSQL"),
        (("--sku Standard_D4ds_v5", "--sku GP_Gen5_4"), "`--tier GeneralPurpose --sku Standard_D4ds_v5`"),
        (
            ("--sku Standard_D4ds_v5 --storage-gb", "--sku B_Gen5_1 --storage-gb"),
            "`--tier Burstable --sku Standard_B1ms`",
        ),
        (("--sku Standard_D4ds_v5", "--sku MO_Gen5_8"), "`--tier MemoryOptimized --sku Standard_E8ds_v5`"),
        (("--tier GeneralPurpose", "--tier Burstable"), "is not a Burstable SKU"),
        (("--region westeurope", "--region 'West Europe'"), "an Azure region name"),
        (("--resource-group rg-data", "--resource-group 'rg data'"), "1–90 letters, digits, underscores"),
        (
            ("--tier GeneralPurpose --sku Standard_D4ds_v5", "--ha same-zone --tier Burstable --sku Standard_B1ms"),
            "not offered on the Burstable",
        ),
        (("--version 16", "--version 16 --ha zone-redundant --zone 2 --standby-zone 2"), "another zone"),
        (("--version 16", "--version 16 --zone 4"), "zones are 1, 2 or 3"),
        (("--network public", "--network vnet"), "only apply with --public-access"),
        (("pgmig=198.51.100.7", "office=10.0.0.9-10.0.0.1"), "start address is after"),
        # a server nothing could reach is refused, not created and registered
        (("--network public --firewall pgmig=198.51.100.7", ""), "say how pgmig reaches the new server"),
        (("--firewall pgmig=198.51.100.7", ""), "a public server accepts no connection until a firewall rule"),
        (
            ("--network public --firewall pgmig=198.51.100.7", f"--network vnet --private-dns-zone {DNS_ZONE}"),
            "--network vnet needs --subnet",
        ),
        (
            ("--network public --firewall pgmig=198.51.100.7", f"--network vnet --subnet {SUBNET}"),
            "needs --private-dns-zone",
        ),
        (("--network public", f"--network public --subnet {SUBNET}"), "--subnet and --private-dns-zone are for"),
        (("--version 16", "--version 16 --tags novalue"), "expected key=value"),
    ],
)
async def test_every_rule_is_checked_before_azure_is_called(tmp_path, arm, change, rule):
    async with app(tmp_path, arm) as slack:
        answer = await slack.ask(GOOD.replace(*change))
        assert "cannot provision" in answer and rule in answer, answer
        assert arm.requests == []


async def test_version_older_than_the_source_and_storage_alias(tmp_path, arm, source_cluster):
    async with app(tmp_path, arm, clusters={"onprem": source_cluster}) as slack:
        major = int(source_cluster.psql("SHOW server_version_num")) // 10000
        assert f"older than the source's PostgreSQL {major}" in await slack.ask(
            GOOD.replace("--version 16", f"--version {major - 1}") + " --source onprem"
        )
        assert "same setting" in await slack.ask(
            GOOD.replace("--storage-gb 256", "--storage-size 256 --storage-gb 512")
        )
        assert arm.requests == []
        await slack.command(GOOD.replace("--storage-gb", "--storage-size"), key="alias")
        await slack.reply("alias")
        assert "✅" in await finished(slack, "sales-prod")
        [put] = [r for r in arm.requests if r.method == "PUT" and lowered(r.path).endswith(SERVER_PATH)]
        assert put.body["properties"]["storage"]["storageSizeGB"] == 256


async def test_an_existing_server_can_grow_but_never_shrink(tmp_path, arm):
    seed_server(arm, "sales-prod", storage_gb=512)
    async with app(tmp_path, arm) as slack:
        await slack.command(GOOD, key="shrink")
        await slack.reply("shrink")
        failed = await finished(slack, "sales-prod")
        assert "❌" in failed and "storage can only grow: the server has 512 GB, 256 GB would shrink it" in failed
        assert not [r for r in arm.requests if r.method in ("PUT", "PATCH")]
        await slack.command(GOOD.replace("256", "1024"), key="grow")
        await slack.reply("grow")
        grown = await finished(slack, "1024 GB")
        assert "already existed" in grown
        [patch] = [r for r in arm.requests if r.method == "PATCH"]
        assert patch.body["properties"]["storage"]["storageSizeGB"] == 1024
        assert "administratorLoginPassword" not in json.dumps(patch.body)


@pytest.mark.parametrize(
    "code, status, shown",
    [
        ("ServerNameAlreadyExists", 409, "server names are global across Azure: choose another name"),
        ("QuotaExceeded", 400, "request a vCore quota increase"),
    ],
)
async def test_arm_errors_are_shown_readably(tmp_path, arm, code, status, shown):
    arm.fail_next("PUT", "flexibleServers/sales-prod", status, code, f"the message of {code}")
    async with app(tmp_path, arm) as slack:
        await slack.command(GOOD, key="p")
        await slack.reply("p")
        failed = await finished(slack, "sales-prod")
        assert f"Azure said {code}: the message of {code}" in failed and shown in failed
        assert "Traceback" not in failed
        assert (await slack.services.provisioner.get("prov-1")).state == "failed"
        assert "sales-prod" not in slack.services.servers


async def test_a_failed_long_running_operation_is_reported(tmp_path, arm):
    arm.fail_operation("flexibleServers/sales-prod", "InternalServerError", "the zone ran out of capacity")
    async with app(tmp_path, arm) as slack:
        await slack.command(GOOD, key="p")
        await slack.reply("p")
        failed = await finished(slack, "sales-prod")
        assert "creating server sales-prod" in failed and "the zone ran out of capacity" in failed


async def test_provisioning_waits_for_approval_when_configured(tmp_path, arm):
    policy = 'notify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1", "S0DBAS"]\nrequired_approvals = 2\n'
    async with app(tmp_path, arm, extra="provision_requires_approval = true\n", slack=policy) as slack:
        assert "needs 2 approval(s)" in await slack.ask(GOOD, user="U0ALICE")
        card = await slack.fake.wait_for(
            "calls", lambda c: c.method == "chat.postMessage" and "Approve provisioning sales-prod" in text_of(c.params)
        )
        assert card.params["channel"] == "C0NOTIFY" and writes(arm) == []
        assert "🗳️ *prov-1* · server *sales-prod* · waiting" in await slack.ask("status prov-1")
        await slack.press(Action.APPROVE_PROVISION.value, user="U0ALICE", key="own")
        assert "someone else must approve" in text_of(await slack.reply("own"))
        await slack.press(Action.APPROVE_PROVISION.value, user="U0MALLORY", key="x")
        assert "only approvers" in text_of(await slack.reply("x"))
        await slack.press(Action.APPROVE_PROVISION.value, user="U0APPROVER1", key="a1")
        await slack.fake.wait_for("calls", lambda c: c.method == "chat.update" and "1 of 2" in text_of(c.params))
        assert writes(arm) == []
        await slack.press(Action.APPROVE_PROVISION.value, user="U0APPROVER2", key="a2")
        assert "✅" in await finished(slack, "sales-prod")
        actions = [e.action for e in await slack.services.engine.store.audit_log("prov-1")]
        assert actions[:1] == ["provision.requested"] and "provision.approve.refused" in actions
        assert actions[-1] == "provision.completed"


async def test_createdb_firewall_and_configure_from_the_source_inventory(
    tmp_path, arm, source_extensions, target_cluster
):
    seed_server(arm, "sales-prod")
    async with app(
        tmp_path,
        arm,
        servers=azure_server_toml("sales", target_cluster, "sales-prod"),
        clusters={"onprem": source_extensions},
    ) as slack:
        assert "Database `shop` created on *sales-prod*" in await slack.ask("createdb sales shop")
        [put] = [r for r in arm.requests if r.method == "PUT" and "/databases/shop" in r.path]
        assert put.body["properties"] == {"charset": "UTF8", "collation": "en_US.utf8"}
        assert "not a database name Azure accepts" in await slack.ask("createdb sales pg_secret")

        assert "office 203.0.113.1-203.0.113.20, vpn 198.51.100.7-198.51.100.7" in await slack.ask(
            "firewall sales office=203.0.113.1-203.0.113.20,vpn=198.51.100.7"
        )
        assert "is not an IPv4 range" in await slack.ask("firewall sales office=203.0.113.300")

        answer = await slack.ask("configure sales --extensions-from onprem --wal-level logical")
        assert "takes effect after a restart" in answer and "`/pgmig configure sales --restart`" in answer
        assert configuration_writes(arm) == {
            "azure.extensions": "pg_prewarm,pg_trgm",
            "wal_level": "logical",
            "shared_preload_libraries": "pg_cron,pg_stat_statements,pg_prewarm",
        }
        assert not [r for r in arm.requests if r.method == "POST" and r.path.endswith("/restart")]
        answer = await slack.ask("configure sales --extensions-from onprem --restart")
        assert "Nothing to change" in answer and "restarted" not in answer  # already allowed: no restart
        assert "restarted" in await slack.ask("configure sales --restart")
        assert len([r for r in arm.requests if r.method == "POST" and r.path.endswith("/restart")]) == 1

        assert "not known as an Azure flexible server" in await slack.ask("createdb onprem shop")


async def test_without_azure_configured_the_commands_say_what_to_set(tmp_path, target_cluster):
    config = config_toml({}) + azure_server_toml("sales", target_cluster, "sales-prod")
    async with running(tmp_path, config) as slack:
        assert "Azure is not configured" in await slack.ask(GOOD)
        assert "AZURE_SUBSCRIPTION_ID" in await slack.ask("createdb sales shop")


async def test_without_azure_configured_the_refusal_comes_before_any_password_check(tmp_path, target_cluster):
    config = config_toml({}, extra=f"[slack]\noperators = {json.dumps(OPERATORS)}\n") + azure_server_toml(
        "sales", target_cluster, "sales-prod"
    )
    async with running(tmp_path, config) as slack:
        for command in (
            GOOD,
            GOOD.replace("SALES_ADMIN_PASSWORD", "SHORT_PASSWORD"),
            GOOD.replace("SALES_ADMIN_PASSWORD", "SLACK_BOT_TOKEN"),
            GOOD.replace("SALES_ADMIN_PASSWORD", "UNSET_PASSWORD_VAR"),
        ):
            answer = await slack.ask(command)
            assert "Azure is not configured" in answer and "AZURE_SUBSCRIPTION_ID" in answer, answer
            assert "password" not in answer.lower() and "admin_password_envs" not in answer, answer
        for command in ("createdb sales shop", "firewall sales office=203.0.113.1", "configure sales --restart"):
            assert "Azure is not configured" in await slack.ask(command)


SECRET_VALUES = ["short", "Str0ng-Pw-ok-1234", "Pgadmin-Secret-99", "xSalesadmin-77", None]


async def test_a_variable_not_in_the_config_is_refused_unread_whatever_it_holds(tmp_path, arm, monkeypatch):
    """The oracle is closed: the replies to a set of provision commands naming variables the config does not
    allow are byte-for-byte the same whatever those variables hold, set or not."""
    commands = [
        GOOD.replace("SALES_ADMIN_PASSWORD", env).replace("--admin-user pgadmin", f"--admin-user {user}")
        for env in ("OTHER_SERVER_PASSWORD", "SOME_CLIENT_SECRET")
        for user in ("pgadmin", "salesadmin", "azure_superuser")
    ]
    commands.append(GOOD.replace("SALES_ADMIN_PASSWORD", "OTHER_SERVER_PASSWORD").replace("sales-prod", "Bad_Name"))
    replies = []
    async with app(tmp_path, arm) as slack:
        for value in SECRET_VALUES:
            for env in ("OTHER_SERVER_PASSWORD", "SOME_CLIENT_SECRET"):
                if value is None:
                    monkeypatch.delenv(env, raising=False)
                else:
                    monkeypatch.setenv(env, value)
            replies.append([await slack.ask(c) for c in commands])
        assert all(r == replies[0] for r in replies), "a reply depends on the secret's content"
        for reply in replies[0]:
            assert "cannot provision" in reply
            assert "is not one of [azure] admin_password_envs; add it there" in reply, reply
            assert not any(v and v in reply for v in SECRET_VALUES)
        assert arm.requests == [] and await slack.services.provisioner.get("prov-1") is None


async def test_an_allowed_variable_holding_a_bad_password_gets_the_rules_not_the_broken_one(tmp_path, arm, monkeypatch):
    command = GOOD.replace("SALES_ADMIN_PASSWORD", "SHORT_PASSWORD")
    async with app(tmp_path, arm) as slack:
        answers = []
        for bad in ("Ab1!", "alllowercase123", "x" * 129 + "A1!"):  # length, classes, length
            monkeypatch.setenv("SHORT_PASSWORD", bad)
            for user in ("pgadmin", "alll", "xxxx"):  # in the password or not: the same answer
                answers.append(await slack.ask(command.replace("--admin-user pgadmin", f"--admin-user {user}")))
                assert bad not in answers[-1]
        assert len(set(answers)) == 1, answers
        assert "the password in SHORT_PASSWORD " + PASSWORD_RULES in answers[0]
        assert "it has" not in answers[0] and arm.requests == []


async def test_no_admin_user_tells_whether_it_occurs_in_an_allowed_password(tmp_path, arm):
    """NAMED_PASSWORD (Pgadmin-1234) holds `pgadmin`, `gadmin1` and `1234` but not `zzzz`: no answer may differ
    for that, or an operator could spell the secret out one guess at a time. Azure alone enforces that rule."""
    policy = 'notify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1"]\nrequired_approvals = 1\n'
    command = GOOD.replace("SALES_ADMIN_PASSWORD", "NAMED_PASSWORD")
    async with app(tmp_path, arm, extra="provision_requires_approval = true\n", slack=policy) as slack:
        for n, user in enumerate(("pgadmin", "gadmin1", "zzzz", "PGADMIN"), start=1):
            answer = await slack.ask(command.replace("--admin-user pgadmin", f"--admin-user {user}"))
            assert f"(prov-{n}) needs 1 approval(s)" in answer and "password" not in answer, answer
        assert writes(arm) == []


async def test_cloud_changes_need_an_explicit_operators_list(tmp_path, arm, target_cluster):
    servers = azure_server_toml("sales", target_cluster, "sales-prod")
    commands = [
        GOOD,
        "createdb sales shop",
        "firewall sales office=203.0.113.1-203.0.113.20",
        "configure sales --wal-level logical --restart",
    ]
    async with app(tmp_path, arm, servers=servers, operators=[]) as slack:
        for command in commands:
            answer = await slack.ask(command)
            assert 'set [slack] operators = ["U…"]' in answer and "restart pgmig" in answer, answer
        assert arm.requests == []
        assert await slack.services.provisioner.get("prov-1") is None
    (tmp_path / "named").mkdir()
    async with app(tmp_path / "named", arm, servers=servers, operators=["U0BOB"]) as slack:
        for command in commands:
            assert "only operators may" in await slack.ask(command, user="U0ALICE")
        assert arm.requests == []


async def test_a_configured_servers_own_variable_may_re_provision_it(tmp_path, arm, target_cluster):
    """Growing a configured flexible server may read the password from that server's password_env, which
    need not be in [azure] admin_password_envs."""
    seed_server(arm, "sales-prod", storage_gb=256)
    command = GOOD.replace("SALES_ADMIN_PASSWORD", "PGMIG_TEST_PASSWORD").replace("256", "512")
    async with app(tmp_path, arm, password_envs=[]) as slack:  # not configured here: refused
        assert "PGMIG_TEST_PASSWORD is not one of [azure] admin_password_envs" in await slack.ask(command)
    (tmp_path / "configured").mkdir()
    async with app(
        tmp_path / "configured",
        arm,
        password_envs=[],
        servers=azure_server_toml("sales-prod", target_cluster, "sales-prod"),
    ) as slack:
        assert "SALES_ADMIN_PASSWORD is not one of" in await slack.ask(GOOD)
        await slack.command(command, key="grow")
        assert "provisioning sales-prod" in text_of(await slack.reply("grow"))
        assert "✅" in await finished(slack, "sales-prod")
        [patch] = [r for r in arm.requests if r.method == "PATCH"]
        assert patch.body["properties"]["storage"]["storageSizeGB"] == 512


async def test_the_private_ca_comes_from_ssl_cert_file_and_without_it_tls_fails_readably(tmp_path, arm, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with app(tmp_path, arm, ca=False) as slack:
        await slack.command(GOOD, key="untrusted")
        await slack.reply("untrusted")
        failed = await finished(slack, "sales-prod")
        assert "the Azure endpoint could not be reached" in failed and "SSL_CERT_FILE" in failed
        assert arm.requests == []  # the TLS handshake failed: nothing was sent
    monkeypatch.setenv("SSL_CERT_FILE", arm.ca_path)
    (tmp_path / "trusted").mkdir()
    async with app(tmp_path / "trusted", arm, ca=False) as slack:
        await slack.command(GOOD, key="trusted")
        await slack.reply("trusted")
        assert "✅" in await finished(slack, "sales-prod")


async def saved(slack, pid: str, change) -> None:
    """Change a provisioning request as the store holds it (time passing, a process dying)."""
    record = ProvisionRecord.from_dict(await slack.services.engine.store.provision(pid))
    change(record)
    await slack.services.engine.store.save_provision(pid, record.state.value, record.as_dict())


async def test_an_expired_provisioning_request_creates_nothing(tmp_path, arm):
    policy = 'notify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1"]\n'
    async with app(tmp_path, arm, extra="provision_requires_approval = true\n", slack=policy) as slack:
        await slack.ask(GOOD)
        await saved(
            slack, "prov-1", lambda r: setattr(r.approval, "expires_at", datetime(2000, 1, 1, tzinfo=timezone.utc))
        )
        assert "⌛ *prov-1* · server *sales-prod* · expired" in await slack.ask("status prov-1")
        assert await slack.services.provisioner.expire() == ["prov-1"]  # what the periodic sweep runs
        await slack.fake.wait_for(
            "calls", lambda c: c.method == "chat.update" and "expired without enough approvals" in text_of(c.params)
        )
        await slack.press(Action.APPROVE_PROVISION.value, user="U0APPROVER1", key="late")
        assert "has expired" in text_of(await slack.reply("late"))
        assert writes(arm) == []
        assert "provision.expired" in [e.action for e in await slack.services.engine.store.audit_log("prov-1")]


async def test_a_request_cut_short_by_a_restart_is_finished_by_the_next_pgmig(tmp_path, arm):
    async with app(
        tmp_path, arm, extra="provision_requires_approval = true\n", slack='approvers = ["U0APPROVER1"]\n'
    ) as slack:
        await slack.ask(GOOD)
        # as if pgmig stopped while Azure was creating the server
        await saved(slack, "prov-1", lambda r: setattr(r, "state", ProvisionState.RUNNING))
    seed_server(arm, "sales-prod", storage_gb=256)
    server = arm.resources[
        (
            f"/subscriptions/{arm.subscription}/resourceGroups/{RG}/providers/"
            "Microsoft.DBforPostgreSQL/flexibleServers/sales-prod"
        ).lower()
    ]
    server["properties"]["state"] = "Provisioning"

    def looks() -> int:
        return len([r for r in arm.requests if r.method == "GET" and lowered(r.path).endswith(SERVER_PATH)])

    before = looks()

    async def created_meanwhile() -> None:  # Ready only once the next pgmig has seen it still provisioning
        while looks() == before:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        server["properties"]["state"] = "Ready"

    ready = asyncio.create_task(created_meanwhile())
    async with app(tmp_path, arm, slack='approvers = ["U0APPROVER1"]\n') as slack:
        done = await finished(slack, "sales-prod")
        assert "✅" in done and "already existed" in done and "(state Ready)" in done
        assert looks() > before + 1  # seen provisioning, then looked again until it was ready
        assert not [r for r in writes(arm) if lowered(r.path).endswith(SERVER_PATH)]  # found, not created again
        assert "sales-prod" in slack.services.servers
        actions = [e.action for e in await slack.services.engine.store.audit_log("prov-1")]
        assert "provision.resumed" in actions and actions[-1] == "provision.completed"
    await ready


async def test_a_vnet_server_gets_its_subnet_and_dns_zone_and_says_how_it_is_reached(tmp_path, arm):
    vnet = GOOD.replace("--network public --firewall pgmig=198.51.100.7", f"--network vnet --subnet {SUBNET}") + (
        f" --private-dns-zone {DNS_ZONE}"
    )
    async with app(tmp_path, arm) as slack:
        await slack.command(vnet, key="p")
        assert "private access in subnet pg" in text_of(await slack.reply("p"))
        done = await finished(slack, "sales-prod")
        assert "✅" in done and "Private access only: reachable from subnet `pg`" in done
        [put] = [r for r in arm.requests if r.method == "PUT" and lowered(r.path).endswith(SERVER_PATH)]
        assert put.body["properties"]["network"] == {
            "publicNetworkAccess": "Disabled",
            "delegatedSubnetResourceId": SUBNET,
            "privateDnsZoneArmResourceId": DNS_ZONE,
        }
        assert not [r for r in arm.requests if "/firewallrules/" in lowered(r.path)]


async def test_what_the_region_offers_comes_from_azure(tmp_path, arm):
    """Versions, SKUs, zones, HA and storage are the region's (CapabilitiesByLocation), not pgmig's tables."""
    arm.capabilities["westeurope"] = default_capability(
        versions=("15", "16", "19"), skus={"GeneralPurpose": ["Standard_D2ds_v5"]}, zones=("1",), storage_gb=(128, 256)
    )
    async with app(tmp_path, arm) as slack:
        refused = await slack.ask(GOOD.replace("--version 16", "--version 17") + " --zone 2 --ha zone-redundant")
        assert "westeurope offers PostgreSQL 15, 16, 19, not 17" in refused
        assert "westeurope offers no GeneralPurpose SKU Standard_D4ds_v5: GeneralPurpose SKUs there are" in refused
        refused = await slack.ask(
            GOOD.replace("Standard_D4ds_v5", "Standard_D2ds_v5").replace("256", "512") + " --zone 2 --ha zone-redundant"
        )
        assert "--zone 2: Standard_D2ds_v5 in westeurope is offered in zones 1" in refused
        assert "HA ZoneRedundant is not offered for Standard_D2ds_v5 in westeurope (offered: SameZone)" in refused
        assert "offers GeneralPurpose storage of 128, 256 GB, not 512" in refused
        assert {r.method for r in arm.requests} == {"GET"}  # only the capabilities were read
        assert all(r.path.endswith("/locations/westeurope/capabilities") for r in arm.requests)
        await slack.command(
            GOOD.replace("--version 16", "--version 19").replace("Standard_D4ds_v5", "Standard_D2ds_v5"), key="p"
        )
        await slack.reply("p")  # a version pgmig's own table does not know yet, offered by the region
        assert "✅" in await finished(slack, "sales-prod")


async def test_a_version_past_its_end_of_life_is_allowed_with_a_warning(tmp_path, arm):
    async with app(tmp_path, arm) as slack:
        await slack.command(GOOD.replace("--version 16", "--version 13"), key="p")
        said = text_of(await slack.reply("p"))
        assert "PostgreSQL 13 reached its community end of life on 2025-11-13" in said
        done = await finished(slack, "sales-prod")
        assert "✅" in done and "end of life" in done


async def test_a_stopped_server_is_refused_with_the_command_that_starts_it(tmp_path, arm, target_cluster):
    seed_server(arm, "sales-prod")
    arm.resources[arm.server_path(RG, "sales-prod").lower()]["properties"]["state"] = "Stopped"
    async with app(tmp_path, arm, servers=azure_server_toml("sales", target_cluster, "sales-prod")) as slack:
        for command in ("createdb sales shop", "firewall sales office=203.0.113.1", "configure sales --restart"):
            answer = await slack.ask(command)
            assert "flexible server sales-prod is stopped" in answer, answer
            assert "az postgres flexible-server start --resource-group rg-data --name sales-prod" in answer
        assert {r.method for r in arm.requests} == {"GET"}
