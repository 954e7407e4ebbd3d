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

from tests.integration.fake_arm import DMS_API, PG_API, FakeArm

RG = "rg-test"


@pytest.fixture
async def fake():
    async with FakeArm() as f:
        yield f
        assert not f.errors, f.errors  # nothing blew up inside the fake or its hooks


def _kw(fake: FakeArm, api_version: str) -> dict:
    return {
        "base_url": fake.endpoint,
        "credential_scopes": ["https://management.azure.com/.default"],
        "connection_verify": fake.ca_path,
        "polling_interval": 0,
        "api_version": api_version,
    }


@pytest.fixture
async def flex(fake):
    async with PostgreSQLManagementClient(fake.credential(), fake.subscription, **_kw(fake, PG_API)) as client:
        yield client


@pytest.fixture
async def dmsc(fake):
    async with DataMigrationManagementClient(fake.credential(), fake.subscription, **_kw(fake, DMS_API)) as client:
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
    assert put.query["api-version"] == "2025-08-01"
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
        async with s.get(f"{fake.endpoint}{fake.server_path(RG, 'x')}?api-version=2025-08-01", ssl=ctx) as r:
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


def _migration(mode: str = "Online", dbs: list[str] | None = None, **props) -> pg.Migration:
    return pg.Migration(
        location="westeurope",
        properties=pg.MigrationProperties(
            migration_mode=mode,
            source_db_server_resource_id="10.0.0.4:5432@pgadmin",
            dbs_to_migrate=["shop", "crm"] if dbs is None else dbs,
            secret_parameters=pg.MigrationSecretParameters(
                admin_credentials=pg.AdminCredentials(source_server_password="src-Pw", target_server_password="tgt-Pw")
            ),
            **props,
        ),
    )


async def _state(flex, name: str, server: str = "tgt") -> tuple[str, str]:
    status = (await flex.migrations.get(RG, server, name)).properties.current_status
    return status.state, status.current_sub_state_details.current_sub_state


async def test_flex_online_migration(fake, flex):
    seen: dict[str, dict] = {}

    async def on_start(res):
        seen["start"] = res

    async def on_cutover(res):
        seen["cutover"] = res

    fake.on_start, fake.on_cutover = on_start, on_cutover
    fake.put_resource(fake.server_path(RG, "tgt"), {"location": "westeurope", "properties": {}})
    mig = await flex.migrations.create(RG, "tgt", "mig1", _migration(overwrite_dbs_in_target="True"))
    assert mig.properties.current_status.state == "InProgress"
    assert mig.properties.current_status.current_sub_state_details.current_sub_state == "PerformingPreRequisiteSteps"
    assert mig.properties.secret_parameters is None and "src-Pw" not in str(mig)
    assert "start" not in seen  # the service copies nothing before its checks and validation
    assert (
        fake.calls("PUT", "/migrations/mig1")[0].body["properties"]["secretParameters"]["adminCredentials"][
            "sourceServerPassword"
        ]
        == "src-Pw"
    )
    assert await _state(flex, "mig1") == ("InProgress", "ValidationInProgress")
    for _ in range(fake.steps_to_ready):
        assert await _state(flex, "mig1") == ("InProgress", "MigratingData")
    assert seen["start"]["properties"]["dbsToMigrate"] == ["shop", "crm"]
    mig = await flex.migrations.get(RG, "tgt", "mig1")
    status = mig.properties.current_status
    assert (status.state, status.current_sub_state_details.current_sub_state) == (
        "WaitingForUserAction",
        "WaitingForCutoverTrigger",
    )
    validation = status.current_sub_state_details.validation_details
    assert validation.status == "Succeeded" and validation.db_level_validation_details[0].database_name == "shop"
    shop = status.current_sub_state_details.db_details["shop"]
    assert shop.migration_state == "WaitingForCutoverTrigger" and shop.full_load_completed_tables == 3
    assert [m.name async for m in flex.migrations.list_by_target_server(RG, "tgt")] == ["mig1"]

    patch = pg.MigrationResourceForPatch(properties=pg.MigrationPropertiesForPatch(trigger_cutover="True"))
    mig = await flex.migrations.update(RG, "tgt", "mig1", patch)
    assert seen["cutover"]["name"] == "mig1"
    assert mig.properties.current_status.current_sub_state_details.current_sub_state == "CompletingMigration"
    assert await _state(flex, "mig1") == ("CleaningUp", "Completed")
    mig = await flex.migrations.get(RG, "tgt", "mig1")
    assert mig.properties.current_status.state == "Succeeded"
    assert mig.properties.current_status.current_sub_state_details.current_sub_state == "Completed"
    assert {d.migration_state for d in mig.properties.current_status.current_sub_state_details.db_details.values()} == {
        "Succeeded"
    }
    assert [m.name async for m in flex.migrations.list_by_target_server(RG, "tgt")] == []


async def test_flex_migration_failure_and_cancel(fake, flex):
    canceled = []

    async def on_cancel(res):
        canceled.append(res["name"])

    fake.on_cancel = on_cancel
    fake.put_resource(fake.server_path(RG, "tgt"), {"location": "westeurope", "properties": {}})
    props = pg.MigrationProperties(migration_mode="Offline", dbs_to_migrate=["shop"])
    fake.fail_operation("migrations/bad", "MigrationFailed", "could not connect to source")
    await flex.migrations.create(RG, "tgt", "bad", pg.Migration(location="westeurope", properties=props))
    mig = await flex.migrations.get(RG, "tgt", "bad")
    assert mig.properties.current_status.state == "Failed"
    assert "could not connect" in mig.properties.current_status.error
    assert "could not connect" in mig.properties.current_status.current_sub_state_details.db_details["shop"].message

    await flex.migrations.create(RG, "tgt", "stop", pg.Migration(location="westeurope", properties=props))
    mig = await flex.migrations.cancel(RG, "tgt", "stop")
    status = mig.properties.current_status
    assert (status.state, status.current_sub_state_details.current_sub_state) == (
        "CleaningUp",
        "CancelingRequestedDBMigrations",
    )
    assert canceled == ["stop"] and (await _state(flex, "stop"))[0] == "Canceled"


async def test_flex_waits_for_user_action_until_answered(fake, flex):
    """The three questions the service asks (spec: MigrationSubstate), each answered by its PATCH field."""
    fake.put_resource(fake.server_path(RG, "tgt"), {"location": "westeurope", "properties": {}})
    fake.put_resource(fake.server_path(RG, "tgt") + "/databases/shop", {"properties": {}})  # exists on the target
    fake.source_logical_replication = False
    await flex.migrations.create(RG, "tgt", "ask", _migration(dbs=[]))
    assert await _state(flex, "ask") == ("WaitingForUserAction", "WaitingForDBsToMigrateSpecification")
    assert await _state(flex, "ask") == ("WaitingForUserAction", "WaitingForDBsToMigrateSpecification")

    async def answer(**props) -> None:
        patch = pg.MigrationResourceForPatch(properties=pg.MigrationPropertiesForPatch(**props))
        await flex.migrations.update(RG, "tgt", "ask", patch)

    await answer(dbs_to_migrate=["shop", "crm"])
    assert await _state(flex, "ask") == ("WaitingForUserAction", "WaitingForLogicalReplicationSetupRequestOnSourceDB")
    await answer(setup_logical_replication_on_source_db_if_needed="True")
    mig = await flex.migrations.get(RG, "tgt", "ask")
    status = mig.properties.current_status
    assert (status.state, status.current_sub_state_details.current_sub_state) == (
        "WaitingForUserAction",
        "WaitingForTargetDBOverwriteConfirmation",
    )
    assert "already exists" in status.current_sub_state_details.db_details["shop"].message
    await answer(overwrite_dbs_in_target="True")
    assert await _state(flex, "ask") == ("InProgress", "ValidationInProgress")
    assert await _state(flex, "ask") == ("InProgress", "MigratingData")


async def test_flex_validation_failure_carries_its_reasons(fake, flex):
    fake.put_resource(fake.server_path(RG, "tgt"), {"location": "westeurope", "properties": {}})
    fake.fail_validation(
        "migrations/v1",
        server=[("SourceVersionValidation", "Source version 9.5 is not supported.")],
        databases={"crm": [("ExtensionsValidation", "Extension 'pg_partman' is not supported.")]},
    )
    await flex.migrations.create(RG, "tgt", "v1", _migration())
    await flex.migrations.get(RG, "tgt", "v1")  # validating
    status = (await flex.migrations.get(RG, "tgt", "v1")).properties.current_status
    assert status.state == "ValidationFailed"
    details = status.current_sub_state_details.validation_details
    assert details.status == "Failed"
    [failed] = [i for i in details.server_level_validation_details if i.state == "Failed"]
    assert failed.messages[0].message == "Source version 9.5 is not supported."
    crm = next(d for d in details.db_level_validation_details if d.database_name == "crm")
    assert any(i.state == "Failed" and "pg_partman" in i.messages[0].message for i in crm.summary)
    assert [m.name async for m in flex.migrations.list_by_target_server(RG, "tgt")] == []  # not active


async def test_flex_limits_one_active_migration_and_eight_databases(fake, flex):
    fake.put_resource(fake.server_path(RG, "tgt"), {"location": "westeurope", "properties": {}})
    with pytest.raises(HttpResponseError) as exc:
        await flex.migrations.create(RG, "tgt", "big", _migration(dbs=[f"db{i}" for i in range(9)]))
    assert exc.value.status_code == 400 and "at most 8 databases" in exc.value.error.message
    fake.cleanup_polls = 3
    await flex.migrations.create(RG, "tgt", "first", _migration(dbs=[f"db{i}" for i in range(8)]))
    with pytest.raises(HttpResponseError) as exc:
        await flex.migrations.create(RG, "tgt", "second", _migration())
    assert exc.value.status_code == 409 and "'first'" in exc.value.error.message
    await flex.migrations.cancel(RG, "tgt", "first")
    with pytest.raises(HttpResponseError):  # cleaning up still holds the server
        await flex.migrations.create(RG, "tgt", "second", _migration())
    assert [(await _state(flex, "first"))[0] for _ in range(2)] == ["CleaningUp", "Canceled"]
    await flex.migrations.create(RG, "tgt", "second", _migration())

    runtime = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/nowhere"
    fake.put_resource(fake.server_path(RG, "other"), {"location": "westeurope", "properties": {}})
    with pytest.raises(HttpResponseError) as exc:
        await flex.migrations.create(RG, "other", "rt", _migration(migration_instance_resource_id=runtime))
    assert "runtime server" in exc.value.error.message


async def test_registration_capabilities_permissions_and_api_versions(fake, flex, dmsc):
    fake.unregistered.add("Microsoft.DataMigration")
    with pytest.raises(HttpResponseError) as exc:  # azure-mgmt-core tries to register, is refused, gives up
        await dmsc.services.get(RG, "dms1")
    assert exc.value.error.code == "MissingSubscriptionRegistration" and exc.value.status_code == 409
    assert fake.calls("POST", "/providers/Microsoft.DataMigration/register")[0].query["api-version"] == "2016-02-01"

    caps = [c async for c in flex.capabilities_by_location.list("westeurope")]
    general = next(e for e in caps[0].supported_server_editions if e.name == "GeneralPurpose")
    d4 = next(s for s in general.supported_server_skus if s.name == "Standard_D4ds_v5")
    assert d4.supported_zones == ["1", "2", "3"] and "ZoneRedundant" in d4.supported_ha_mode
    assert "16" in [v.name for v in caps[0].supported_server_versions]

    server = _server()
    server.properties.network = pg.Network(public_network_access="Disabled")
    made = await (await flex.servers.begin_create_or_update(RG, "closed", server)).result()
    assert (
        made.properties.network.public_network_access == "Disabled"
        and not made.properties.network.delegated_subnet_resource_id
    )

    ctx = ssl.create_default_context(cafile=fake.ca_path)
    headers = {"Authorization": f"Bearer {fake.credential().token}"}
    async with aiohttp.ClientSession() as s:
        url = f"{fake.endpoint}{fake.server_path(RG, 'closed')}?api-version=2026-10-01"
        async with s.get(url, ssl=ctx, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "NoRegisteredProviderFound"
        group = f"{fake.endpoint}/subscriptions/{fake.subscription}/resourceGroups/{RG}"
        url = f"{group}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"
        async with s.get(url, ssl=ctx, headers=headers) as r:
            assert (await r.json())["value"][0]["actions"] == ["*"]


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
