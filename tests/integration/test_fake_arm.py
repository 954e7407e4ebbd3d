"""The fake ARM answers the real async SDK clients the way Azure does (LROs, errors, migration states)."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.mgmt.datamigration import models as dms
from azure.mgmt.datamigration.aio import DataMigrationManagementClient
from azure.mgmt.postgresqlflexibleservers import models as pg
from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient

from tests.integration.fake_arm import FakeArm

RG = "rg-test"


@pytest.fixture
async def fake():
    async with FakeArm() as f:
        yield f
        assert not f.errors, f.errors  # nothing blew up inside the fake or its hooks


def _kw(fake: FakeArm) -> dict:
    return {
        "base_url": fake.endpoint,
        "credential_scopes": ["https://management.azure.com/.default"],
        "connection_verify": fake.ca_path,
        "polling_interval": 0,
    }


@pytest.fixture
async def flex(fake):
    async with PostgreSQLManagementClient(fake.credential(), fake.subscription, **_kw(fake)) as client:
        yield client


@pytest.fixture
async def dmsc(fake):
    async with DataMigrationManagementClient(fake.credential(), fake.subscription, **_kw(fake)) as client:
        yield client


def _server() -> pg.Server:
    return pg.Server(
        location="westeurope",
        sku=pg.Sku(name="Standard_D2ds_v5", tier="GeneralPurpose"),
        tags={"app": "shop"},
        properties=pg.ServerProperties(
            administrator_login="pgadmin",
            administrator_login_password="Sup3r-secret!",
            version="16",
            storage=pg.Storage(storage_size_gb=128),
            create_mode="Create",
        ),
    )


async def test_server_create_lro_and_grow_storage(fake, flex):
    fake.lro_polls = 2
    server = await (await flex.servers.begin_create_or_update(RG, "tgt1", _server())).result()
    assert server.properties.state == "Ready"
    assert server.properties.fully_qualified_domain_name == "tgt1.postgres.database.azure.com"
    assert server.location == "westeurope" and server.tags == {"app": "shop"}
    put = fake.calls("PUT", "/flexibleServers/tgt1")[0]
    assert put.query["api-version"] == "2026-10-01"
    assert put.body["sku"] == {"name": "Standard_D2ds_v5", "tier": "GeneralPurpose"}
    assert put.body["properties"]["storage"]["storageSizeGB"] == 128 and put.body["properties"]["version"] == "16"
    assert put.body["properties"]["administratorLoginPassword"] == "Sup3r-secret!"  # recorded as sent
    assert len(fake.calls("GET", "/azureAsyncOperation/")) == 3  # 2 InProgress + Succeeded
    assert "administratorLoginPassword" not in str(fake.resources)

    patch = pg.ServerForPatch(properties=pg.ServerPropertiesForPatch(storage=pg.Storage(storage_size_gb=256)))
    grown = await (await flex.servers.begin_update(RG, "tgt1", patch)).result()
    assert grown.properties.storage.storage_size_gb == 256 and grown.properties.version == "16"
    fake.put_resource(
        fake.server_path(RG, "old"), {"location": "westeurope", "properties": {"storage": {"storageSizeGB": 512}}}
    )
    assert (await flex.servers.get(RG, "old")).properties.storage.storage_size_gb == 512


async def test_errors(fake, flex):
    fake.fail_next("PUT", "/flexibleServers/taken", 409, "ServerNameAlreadyExists", "Name taken.")
    with pytest.raises(ResourceExistsError) as exc:
        await flex.servers.begin_create_or_update(RG, "taken", _server())
    assert exc.value.error.code == "ServerNameAlreadyExists" and exc.value.status_code == 409

    fake.fail_operation("/flexibleServers/broken", "InternalServerError", "Provisioning failed.")
    poller = await flex.servers.begin_create_or_update(RG, "broken", _server())
    with pytest.raises(HttpResponseError) as exc:
        await poller.result()
    assert exc.value.error.code == "InternalServerError"
    assert fake.server_path(RG, "broken").lower() not in fake.resources  # a failed create leaves nothing

    with pytest.raises(HttpResponseError) as exc:
        await flex.servers.get(RG, "missing")
    assert exc.value.status_code == 404 and exc.value.error.code == "ResourceNotFound"


async def test_no_bearer_is_401(fake):
    ctx = ssl.create_default_context(cafile=fake.ca_path)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{fake.endpoint}{fake.server_path(RG, 'x')}?api-version=2026-10-01", ssl=ctx) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "AuthenticationFailed"
        async with s.get(f"{fake.endpoint}/nowhere?api-version=1", ssl=ctx, headers={"Authorization": "Bearer t"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "NotImplementedInFake"


async def test_configurations_pending_restart(fake, flex):
    fake.put_resource(fake.server_path(RG, "tgt"), {"location": "westeurope", "properties": {}})
    wal = await flex.configurations.get(RG, "tgt", "wal_level")
    assert wal.properties.value == "replica" and wal.properties.is_dynamic_config is False
    assert (await flex.configurations.get(RG, "tgt", "azure.extensions")).properties.is_dynamic_config is True

    body = pg.Configuration(properties=pg.ConfigurationProperties(value="logical", source="user-override"))
    wal = await (await flex.configurations.begin_update(RG, "tgt", "wal_level", body)).result()
    assert wal.properties.value == "logical" and wal.properties.is_config_pending_restart is True
    ext = pg.Configuration(properties=pg.ConfigurationProperties(value="PG_CRON,HSTORE", source="user-override"))
    ext = await (await flex.configurations.begin_put(RG, "tgt", "azure.extensions", ext)).result()
    assert ext.properties.value == "PG_CRON,HSTORE" and not ext.properties.is_config_pending_restart

    assert await (await flex.servers.begin_restart(RG, "tgt")).result() is None
    wal = await flex.configurations.get(RG, "tgt", "wal_level")
    assert wal.properties.value == "logical" and wal.properties.is_config_pending_restart is False
    names = [c.name async for c in flex.configurations.list_by_server(RG, "tgt")]
    assert "shared_preload_libraries" in names

    db = await (
        await flex.databases.begin_create(
            RG, "tgt", "shop", pg.Database(properties=pg.DatabaseProperties(charset="UTF8", collation="en_US.utf8"))
        )
    ).result()
    assert db.name == "shop"
    rule = pg.FirewallRule(properties=pg.FirewallRuleProperties(start_ip_address="1.2.3.4", end_ip_address="1.2.3.4"))
    await (await flex.firewall_rules.begin_create_or_update(RG, "tgt", "office", rule)).result()
    assert [r.properties.start_ip_address async for r in flex.firewall_rules.list_by_server(RG, "tgt")] == ["1.2.3.4"]


async def test_flex_online_migration(fake, flex):
    seen: dict[str, dict] = {}

    async def on_start(res):
        seen["start"] = res

    async def on_cutover(res):
        seen["cutover"] = res

    fake.on_start, fake.on_cutover = on_start, on_cutover
    fake.put_resource(fake.server_path(RG, "tgt"), {"location": "westeurope", "properties": {}})
    body = pg.Migration(
        location="westeurope",
        properties=pg.MigrationProperties(
            migration_mode="Online",
            source_db_server_resource_id="10.0.0.4:5432@pgadmin",
            dbs_to_migrate=["shop", "crm"],
            secret_parameters=pg.MigrationSecretParameters(
                admin_credentials=pg.AdminCredentials(source_server_password="src-Pw", target_server_password="tgt-Pw")
            ),
            overwrite_dbs_in_target="True",
        ),
    )
    mig = await flex.migrations.create(RG, "tgt", "mig1", body)
    assert mig.properties.current_status.state == "InProgress"
    assert mig.properties.current_status.current_sub_state_details.current_sub_state == "PerformingPreRequisiteSteps"
    assert mig.properties.secret_parameters is None and "src-Pw" not in str(mig)
    assert seen["start"]["properties"]["dbsToMigrate"] == ["shop", "crm"]
    assert (
        fake.calls("PUT", "/migrations/mig1")[0].body["properties"]["secretParameters"]["adminCredentials"][
            "sourceServerPassword"
        ]
        == "src-Pw"
    )

    for _ in range(fake.steps_to_ready):
        mig = await flex.migrations.get(RG, "tgt", "mig1")
        status = mig.properties.current_status
        assert (status.state, status.current_sub_state_details.current_sub_state) == ("InProgress", "MigratingData")
    mig = await flex.migrations.get(RG, "tgt", "mig1")
    status = mig.properties.current_status
    assert (status.state, status.current_sub_state_details.current_sub_state) == (
        "WaitingForUserAction",
        "WaitingForCutoverTrigger",
    )
    shop = status.current_sub_state_details.db_details["shop"]
    assert shop.migration_state == "WaitingForCutoverTrigger" and shop.full_load_completed_tables == 3
    assert [m.name async for m in flex.migrations.list_by_target_server(RG, "tgt")] == ["mig1"]

    patch = pg.MigrationResourceForPatch(properties=pg.MigrationPropertiesForPatch(trigger_cutover="True"))
    mig = await flex.migrations.update(RG, "tgt", "mig1", patch)
    assert seen["cutover"]["name"] == "mig1"
    assert mig.properties.current_status.current_sub_state_details.current_sub_state == "CompletingMigration"
    mig = await flex.migrations.get(RG, "tgt", "mig1")
    assert mig.properties.current_status.state == "Succeeded"
    assert mig.properties.current_status.current_sub_state_details.current_sub_state == "Completed"
    assert {d.migration_state for d in mig.properties.current_status.current_sub_state_details.db_details.values()} == {
        "Succeeded"
    }


async def test_flex_migration_failure_and_cancel(fake, flex):
    canceled = []

    async def on_cancel(res):
        canceled.append(res["name"])

    fake.on_cancel = on_cancel
    props = pg.MigrationProperties(migration_mode="Offline", dbs_to_migrate=["shop"])
    fake.fail_operation("migrations/bad", "MigrationFailed", "could not connect to source")
    await flex.migrations.create(RG, "tgt", "bad", pg.Migration(location="westeurope", properties=props))
    mig = await flex.migrations.get(RG, "tgt", "bad")
    assert mig.properties.current_status.state == "Failed"
    assert "could not connect" in mig.properties.current_status.error
    assert "could not connect" in mig.properties.current_status.current_sub_state_details.db_details["shop"].message

    await flex.migrations.create(RG, "tgt", "stop", pg.Migration(location="westeurope", properties=props))
    mig = await flex.migrations.cancel(RG, "tgt", "stop")
    assert mig.properties.current_status.state == "Canceled" and canceled == ["stop"]


async def test_dms_flow(fake, dmsc):
    commands = []

    async def on_cutover(res):
        commands.append(res["lastCommand"])

    fake.on_cutover = on_cutover
    svc = await (
        await dmsc.services.begin_create_or_update(
            RG,
            "dms1",
            dms.DataMigrationService(
                location="westeurope",
                sku=dms.ServiceSku(name="Premium_4vCores", tier="Premium"),
                virtual_subnet_id="/subscriptions/x/resourceGroups/n/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
            ),
        )
    ).result()
    assert svc.provisioning_state == "Succeeded"
    proj = await dmsc.projects.create_or_update(
        RG,
        "dms1",
        "p1",
        dms.Project(location="westeurope", source_platform="PostgreSql", target_platform="AzureDbForPostgreSql"),
    )
    assert proj.provisioning_state == "Succeeded"

    task_in = dms.MigratePostgreSqlAzureDbForPostgreSqlSyncTaskInput(
        selected_databases=[
            dms.MigratePostgreSqlAzureDbForPostgreSqlSyncDatabaseInput(name="shop", target_database_name="shop")
        ],
        source_connection_info=dms.PostgreSqlConnectionInfo(
            server_name="10.0.0.4", port=5432, user_name="src", password="src-Pw", database_name="postgres"
        ),
        target_connection_info=dms.PostgreSqlConnectionInfo(
            server_name="tgt.postgres.database.azure.com", port=5432, user_name="pgadmin", password="tgt-Pw"
        ),
    )
    task = await dmsc.tasks.create_or_update(
        RG,
        "dms1",
        "p1",
        "t1",
        dms.ProjectTask(properties=dms.MigratePostgreSqlAzureDbForPostgreSqlSyncTaskProperties(input=task_in)),
    )
    assert task.properties.state == "Queued"
    assert task.properties.input.source_connection_info.password is None

    for _ in range(fake.steps_to_ready):
        task = await dmsc.tasks.get(RG, "dms1", "p1", "t1", expand="output")
        assert task.properties.state == "Running"
    task = await dmsc.tasks.get(RG, "dms1", "p1", "t1", expand="output")
    levels = {o.result_type: o for o in task.properties.output}
    assert levels["MigrationLevelOutput"].source_server == "10.0.0.4"
    assert levels["DatabaseLevelOutput"].migration_state == "READY_TO_COMPLETE"

    cmd = await dmsc.tasks.command(
        RG,
        "dms1",
        "p1",
        "t1",
        dms.MigrateSyncCompleteCommandProperties(input=dms.MigrateSyncCompleteCommandInput(database_name="shop")),
    )
    assert (
        cmd.state == "Accepted"
        and fake.calls("POST", "/command")[0].body["commandType"] == "Migrate.Sync.Complete.Database"
    )
    assert commands[0]["input"]["databaseName"] == "shop"
    task = await dmsc.tasks.get(RG, "dms1", "p1", "t1", expand="output")
    levels = {o.result_type: o for o in task.properties.output}
    assert levels["DatabaseLevelOutput"].migration_state == "COMPLETE" and task.properties.state == "Succeeded"
    assert "tgt-Pw" not in str(task.serialize())


async def test_dms_task_failure(fake, dmsc):
    fake.put_resource(fake.dms_service_path(RG, "dms1") + "/projects/p1", {"location": "westeurope"})
    task_in = dms.MigratePostgreSqlAzureDbForPostgreSqlSyncTaskInput(
        selected_databases=[dms.MigratePostgreSqlAzureDbForPostgreSqlSyncDatabaseInput(name="shop")],
        source_connection_info=dms.PostgreSqlConnectionInfo(server_name="src", port=5432),
        target_connection_info=dms.PostgreSqlConnectionInfo(server_name="tgt", port=5432),
    )
    await dmsc.tasks.create_or_update(
        RG,
        "dms1",
        "p1",
        "t2",
        dms.ProjectTask(properties=dms.MigratePostgreSqlAzureDbForPostgreSqlSyncTaskProperties(input=task_in)),
    )
    fake.fail_operation("tasks/t2", "SourceUnreachable", "source refused the connection")
    task = await dmsc.tasks.get(RG, "dms1", "p1", "t2", expand="output")
    assert task.properties.state == "Failed"
    errors = [o for o in task.properties.output if o.result_type == "ErrorOutput"]
    assert errors[0].error.message == "source refused the connection"
    assert any(o.result_type == "DatabaseLevelErrorOutput" for o in task.properties.output)
