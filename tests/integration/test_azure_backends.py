"""`/pgmig migrate --backend flex|dms`: the Azure services driven through the real SDK clients against the
fake ARM, while a stand-in does to the local clusters what the service would (copy, stream, stop at
cutover). pgmig's own part is real: states, approval, fence, sequences, FKs and triggers, verification."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from handlers.actions import Action
from migration_core.azure import dms_backend
from tests.integration.azure_support import (
    RG,
    ServiceStandIn,
    azure_env,
    azure_server_toml,
    azure_toml,
    seed_server,
)
from tests.integration.clusters import config_toml
from tests.integration.fake_arm import FakeArm
from tests.integration.fake_slack import text_of
from tests.integration.sample_data import online_pair
from tests.integration.slack_harness import running

POLICY = (  # a cutover whose counts never agree (a service writing during it) falls back after 5 s, not 30
    '[slack]\nnotify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER1"]\n'
    "[migration]\nprogress_interval_seconds = 0.1\n[online]\nfence_grace_seconds = 0.2\ncatch_up_timeout_seconds = 5\n"
)


def pgmig(tmp_path, arm: FakeArm, src, tgt):
    """pgmig with `azure` as the target, known to the fake as flexible server sales-prod (same state each time)."""
    config = config_toml({"onprem": src}, extra=azure_toml(arm) + POLICY) + azure_server_toml(
        "azure", tgt, "sales-prod"
    )
    return running(tmp_path, config, env=azure_env(arm), azure_credential=arm.credential())


@pytest.fixture(autouse=True)
def dms_takes_the_test_clusters(monkeypatch, request):
    """DMS classic takes sources of PostgreSQL 9.4–13; the local clusters run a newer one, so the DMS flows
    are tested as if DMS took it (test_dms_refuses_sources_it_cannot_migrate tests the real limit)."""
    if request.node.name != "test_dms_refuses_sources_it_cannot_migrate":
        monkeypatch.setattr(dms_backend, "SOURCE_VERSIONS", (90400, 990000))


@pytest.fixture
async def clusters(tmp_path, cluster_root):
    src, tgt = online_pair(cluster_root, tmp_path.name[-20:])
    yield src, tgt
    src.destroy()
    tgt.destroy()


@pytest.fixture
async def setup(tmp_path, clusters):
    """(app, fake ARM, source, target)."""
    src, tgt = clusters
    async with FakeArm() as arm:
        seed_server(arm, "sales-prod")
        async with pgmig(tmp_path, arm, src, tgt) as slack:
            yield slack, arm, src, tgt


async def notice(slack, state: str, timeout: float = 60) -> str:
    call = await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and state in text_of(c.params),
        timeout=timeout,
    )
    return text_of(call.params)


async def streaming(slack, backend: str) -> str:
    """Start an online migration of `app` on `backend`; the ready_for_cutover notice."""
    assert "mig-1" in await slack.ask(
        f"migrate onprem azure --mode online --db app --backend {backend}", user="U0ALICE"
    )
    return await notice(slack, "ready_for_cutover")


async def cut_over(slack) -> str:
    assert "approval card" in await slack.ask("cutover mig-1", user="U0ALICE")
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="a")
    return await notice(slack, "completed")


def equal_rows(src, tgt) -> None:
    for table in ("parent", "child"):
        query = f"SELECT count(*) || ':' || coalesce(sum(hashtext({table}::text)), 0) FROM {table}"
        assert src.psql(query, database="app") == tgt.psql(query, database="app"), table


async def test_flex_online_streams_waits_for_approval_and_cuts_over(setup):
    slack, arm, src, tgt = setup
    service = ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
    arm.fail_next("GET", "migrations/pgmig-mig-1", 409, "Conflict", "busy")  # one unreadable status: tolerated
    ready = await streaming(slack, "flex")
    assert "flexible-server migration service" in ready
    arm.fail_next("GET", "migrations/pgmig-mig-1", 409, "Conflict", "busy")  # while streaming: an alert, then clear
    await notice(slack, "cannot read the Azure flexible-server migration service's status")
    await notice(slack, "back to normal: service")
    src.psql("INSERT INTO parent DEFAULT VALUES; INSERT INTO child (parent_id) VALUES (3)", database="app")

    done = await cut_over(slack)
    assert "writes unavailable" in done and "verified equal" in done
    equal_rows(src, tgt)
    assert tgt.psql("SELECT last_value FROM parent_id_seq", database="app") == src.psql(
        "SELECT last_value FROM parent_id_seq", database="app"
    )
    assert service.events == ["start", "cutover"]

    [create] = [r for r in arm.requests if r.method == "PUT" and "/migrations/" in r.path]
    props = create.body["properties"]
    assert create.path.endswith("/flexibleServers/sales-prod/migrations/pgmig-mig-1")
    assert props["migrationMode"] == "Online" and props["migrationOption"] == "ValidateAndMigrate"
    assert props["sourceType"] == "OnPremises" and props["dbsToMigrate"] == ["app"]
    assert props["sourceDbServerResourceId"] == f"127.0.0.1:{src.port}@postgres"
    assert props["secretParameters"]["adminCredentials"]["sourceServerPassword"]
    [trigger] = [r for r in arm.requests if r.method == "PATCH" and "/migrations/" in r.path]
    assert trigger.body["properties"] == {"triggerCutover": "True", "dbsToTriggerCutoverOn": ["app"]}
    fenced_before_trigger = [a.action for a in await slack.services.engine.store.audit_log("mig-1")]
    assert "cutover.completed" in fenced_before_trigger
    m = await slack.services.engine.store.get_migration("mig-1")
    assert m.state.value == "completed" and m.options.backend == "flex"
    assert all("sourceServerPassword" not in text_of(c.params) for c in slack.fake.calls)


async def test_flex_offline_copy_is_verified_by_pgmig(setup):
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True, stream=False).attach(arm)
    await slack.command("migrate onprem azure --mode offline --db app --backend flex", key="m")
    await slack.reply("m")
    done = await notice(slack, "completed")
    assert "verified equal" in done
    equal_rows(src, tgt)
    [create] = [r for r in arm.requests if r.method == "PUT" and "/migrations/" in r.path]
    assert create.body["properties"]["migrationMode"] == "Offline"


async def test_dms_online_pgmig_builds_the_schema_and_reinstates_foreign_keys(setup):
    slack, arm, src, tgt = setup
    service = ServiceStandIn(src, tgt, "app", copies_schema=False).attach(arm)
    await streaming(slack, "dms")
    assert tgt.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", database="app") == "0"  # parked
    card = await slack.fake.wait_for(
        "calls", lambda c: c.method == "chat.update" and "READY_TO_COMPLETE" in text_of(c.params)
    )
    assert "changes applied" in text_of(card.params) and "latency" in text_of(card.params)
    src.psql("INSERT INTO child (parent_id) VALUES (2)", database="app")
    await cut_over(slack)
    equal_rows(src, tgt)
    assert tgt.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated", database="app") == "1"
    assert service.events == ["start", "cutover"]
    service_put = [
        r for r in arm.requests if r.method == "PUT" and "/services/pgmig-dms" in r.path and "/projects/" not in r.path
    ]
    assert (
        service_put[0].body["sku"]["name"] == "Premium_4vCores" and service_put[0].body["properties"]["virtualSubnetId"]
    )
    [project] = [r for r in arm.requests if r.method == "PUT" and r.path.endswith("/projects/pgmig-mig-1")]
    assert project.body["properties"]["sourcePlatform"] == "PostgreSql"
    assert project.body["properties"]["targetPlatform"] == "AzureDbForPostgreSql"
    [task] = [r for r in arm.requests if r.method == "PUT" and "/tasks/" in r.path]
    assert task.body["properties"]["taskType"] == "Migrate.PostgreSql.AzureDbForPostgreSql.SyncV2"
    assert task.body["properties"]["input"]["selectedDatabases"][0]["name"] == "app"
    [command] = [r for r in arm.requests if r.method == "POST" and r.path.endswith("/command")]
    assert command.body == {"commandType": "Migrate.Sync.Complete.Database", "input": {"databaseName": "app"}}


@pytest.mark.parametrize("backend", ["flex", "dms"])
async def test_cancel_tells_the_service_to_stop(setup, backend):
    slack, arm, src, tgt = setup
    service = ServiceStandIn(src, tgt, "app", copies_schema=backend == "flex").attach(arm)
    await streaming(slack, backend)
    assert "cancelled" in await slack.ask("cancel mig-1")
    if backend == "flex":
        [cancel] = [r for r in arm.requests if r.method == "PATCH" and "/migrations/" in r.path]
        assert cancel.body["properties"] == {"cancel": "True"}
    else:
        assert [r for r in arm.requests if r.method == "POST" and r.path.endswith("/tasks/migrate/cancel")]
    assert service.events == ["start", "cancel"]
    assert (await slack.services.engine.store.get_migration("mig-1")).state.value == "cancelled"
    assert src.psql("SELECT count(*) FROM pg_replication_slots") == "0"


@pytest.mark.parametrize("backend", ["flex", "dms"])
async def test_cancel_drops_the_slots_the_service_left_and_only_those(setup, backend):
    """The service stops streaming but leaves its slot on the source (Change.SERVICE_MIGRATION's undo drops
    it); a slot a DBA made on the same database before the start stays."""
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=backend == "flex", leaves_slot=True).attach(arm)
    src.psql("SELECT pg_create_logical_replication_slot('dba_slot', 'pgoutput')", database="app")
    await streaming(slack, backend)
    cancelled = await slack.ask("cancel mig-1")
    assert "cancelled" in cancelled and "dropped the service's slot azure_service_app" in cancelled, cancelled
    assert src.psql("SELECT string_agg(slot_name, ',') FROM pg_replication_slots") == "dba_slot"
    journal = await slack.services.engine.store.journal("mig-1")
    [entry] = [e for e in journal if e.kind.value == "service_migration"]
    assert entry.mark.value == "undone"
    assert entry.data["slots_before"] == {"app": ["dba_slot"]} and entry.data["ref"]


async def failing(setup, backend: str, needle: str, message: str) -> str:
    """Start a migration whose service fails with `message`; the failure notice pgmig posts."""
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=backend == "flex").attach(arm)
    arm.fail_operation(needle, "MigrationFailed", message)
    await slack.command(f"migrate onprem azure --mode online --db app --backend {backend}", key="m")
    await slack.reply("m")
    return await notice(slack, "failed")


async def test_a_failing_service_fails_the_migration_readably_and_retry_starts_afresh(setup):
    slack, arm, src, tgt = setup
    failed = await failing(setup, "flex", "migrations/pgmig-mig-1", "source server is not reachable")
    assert "flexible-server migration service reports the migration failed" in failed
    assert "source server is not reachable" in failed

    await slack.command("retry mig-1", key="r")  # a fresh service migration, over what the first one left
    await slack.reply("r")
    await notice(slack, "ready_for_cutover")
    first, second = [r for r in arm.requests if r.method == "PUT" and "/migrations/" in r.path]
    assert first.path.endswith("/pgmig-mig-1") and second.path.endswith("/pgmig-mig-1-r2")
    assert second.body["properties"]["overwriteDbsInTarget"] == "False"  # the first attempt created nothing
    await cut_over(slack)
    equal_rows(src, tgt)


async def test_backend_refusals(setup):
    slack, arm, src, tgt = setup
    assert "Azure DMS classic migrates PostgreSQL online only" in await slack.ask(
        "migrate onprem azure --mode offline --db app --backend dms"
    )
    assert "onprem is not known as one" in await slack.ask("migrate azure onprem --mode online --db app --backend flex")
    assert arm.requests == []


async def test_dms_errors_come_from_the_task_outputs(setup):
    failed = await failing(setup, "dms", "tasks/migrate", "cannot connect to the source server")
    assert "Azure DMS reports the migration failed" in failed and "cannot connect to the source server" in failed


async def test_a_restarted_pgmig_keeps_watching_the_service_and_cuts_over(tmp_path, clusters):
    src, tgt = clusters
    async with FakeArm() as arm:
        seed_server(arm, "sales-prod")
        ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
        async with pgmig(tmp_path, arm, src, tgt) as slack:
            await streaming(slack, "flex")
        src.psql("INSERT INTO parent DEFAULT VALUES", database="app")
        async with pgmig(tmp_path, arm, src, tgt) as slack:  # a new process, the same state store
            await slack.fake.wait_for(
                "calls",
                lambda c: c.method == "chat.update" and "WaitingForCutoverTrigger" in text_of(c.params),
                timeout=30,
            )
            await cut_over(slack)
            equal_rows(src, tgt)
        assert len([r for r in arm.requests if r.method == "PUT" and "/migrations/" in r.path]) == 1


@pytest.mark.parametrize("sku", ["Premium_4vCores", "Standard_1vCores"])
async def test_an_existing_dms_service_is_used_when_it_can_migrate_online(setup, sku):
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=False).attach(arm)
    arm.put_resource(
        f"/subscriptions/{arm.subscription}/resourceGroups/rg-data/providers/Microsoft.DataMigration/"
        "services/pgmig-dms",
        {"location": "northeurope", "sku": {"name": sku}, "properties": {"provisioningState": "Succeeded"}},
    )
    await slack.command("migrate onprem azure --mode online --db app --backend dms", key="m")
    await slack.reply("m")
    if sku.startswith("Premium"):
        await notice(slack, "ready_for_cutover")
        [project] = [r for r in arm.requests if r.method == "PUT" and r.path.endswith("/projects/pgmig-mig-1")]
        assert project.body["location"] == "northeurope"
    else:
        failed = await notice(slack, "failed")
        assert "the DMS service pgmig-dms is Standard_1vCores; online migrations need a Premium SKU" in failed
    assert not [r for r in arm.requests if r.method == "PUT" and r.path.endswith("/services/pgmig-dms")]


class WritesDuringItsCutover(ServiceStandIn):
    """A service whose first cutover leaves a row the source does not have: pgmig's row counts must catch it."""

    async def cutover(self, resource: dict) -> None:
        await super().cutover(resource)
        if self.events.count("cutover") == 1:
            await asyncio.to_thread(self.tgt.psql, "INSERT INTO child (id, parent_id) VALUES (1000, 1)", database="app")


async def test_a_failure_after_the_service_cut_over_fails_safely_and_retry_starts_afresh(setup):
    slack, arm, src, tgt = setup
    service = WritesDuringItsCutover(src, tgt, "app", copies_schema=True).attach(arm)
    await streaming(slack, "flex")
    await slack.command("cutover mig-1", user="U0ALICE", key="first")
    await slack.reply("first")
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="approve-first")
    failed = await notice(slack, "failed")
    assert "row counts of app differ" in failed and "had ended its replication of app" in failed
    assert src.psql("SHOW default_transaction_read_only", database="app") == "off"  # the source works again
    src.psql("INSERT INTO parent DEFAULT VALUES", database="app")
    await notice(slack, "cutover failed, nothing was released")  # the cutover task's last word: it has ended

    await slack.command("retry mig-1", key="r")
    await slack.reply("r")
    await slack.fake.wait_for(
        "calls",
        lambda _: (
            sum(  # a second ready notice: the fresh service migration streams
                1 for c in slack.fake.calls if c.params.get("thread_ts") and "ready_for_cutover*" in text_of(c.params)
            )
            == 2
        ),
        timeout=60,
    )
    assert await cut_over(slack)
    equal_rows(src, tgt)
    assert service.events == ["start", "cutover", "start", "cutover"]
    puts = [r for r in arm.requests if r.method == "PUT" and "/migrations/" in r.path]
    assert [r.path.rsplit("/", 1)[-1] for r in puts] == ["pgmig-mig-1", "pgmig-mig-1-r2"]
    # the retry may replace what the first attempt created, and says so to the service
    assert [r.body["properties"]["overwriteDbsInTarget"] for r in puts] == ["False", "True"]


class ServicePerDatabase:
    """The service moving several databases: each cutover or command names the ones it is for."""

    def __init__(self, services: dict[str, ServiceStandIn]) -> None:
        self.services = services
        self.cut: list[str] = []

    def attach(self, fake: FakeArm) -> "ServicePerDatabase":
        fake.on_start, fake.on_cutover, fake.on_cancel = self.start, self.cutover, self.cancel
        return self

    async def start(self, resource: dict) -> None:
        for service in self.services.values():
            await service.start(resource)

    async def cutover(self, resource: dict) -> None:
        patch = (resource.get("lastPatch") or {}).get("properties") or {}
        command = (resource.get("lastCommand") or {}).get("input") or {}
        for db in patch.get("dbsToTriggerCutoverOn") or [command.get("databaseName")]:
            self.cut.append(db)
            await self.services[db].cutover(resource)

    async def cancel(self, resource: dict) -> None:
        for service in self.services.values():
            await service.cancel(resource)


@pytest.mark.parametrize("backend", ["flex", "dms"])
async def test_two_databases_are_cut_over_one_after_the_other(setup, backend):
    slack, arm, src, tgt = setup
    src.psql("CREATE DATABASE app2")
    src.psql(
        "CREATE TABLE parent (id serial PRIMARY KEY); CREATE TABLE child (id serial PRIMARY KEY, parent_id int "
        "REFERENCES parent); INSERT INTO parent DEFAULT VALUES",
        database="app2",
    )
    service = ServicePerDatabase(
        {db: ServiceStandIn(src, tgt, db, copies_schema=backend == "flex") for db in ("app", "app2")}
    ).attach(arm)
    await slack.command(
        f"migrate onprem azure --mode online --db app,app2 --backend {backend}", user="U0ALICE", key="m"
    )
    await slack.reply("m")
    await notice(slack, "ready_for_cutover")
    src.psql("INSERT INTO child (parent_id) VALUES (1)", database="app2")
    done = await cut_over(slack)
    assert "app: writes unavailable" in done and "app2: writes unavailable" in done
    assert service.cut == ["app", "app2"]
    for db in ("app", "app2"):
        query = "SELECT count(*) || ':' || coalesce(sum(hashtext(child::text)), 0) FROM child"
        assert src.psql(query, database=db) == tgt.psql(query, database=db), db


# ---- what the service stops on, and how pgmig answers (issue 23)


def migration_puts(arm: FakeArm) -> list:
    return [r for r in arm.requests if r.method == "PUT" and "/migrations/" in r.path]


async def test_flex_refuses_an_existing_target_database_unless_overwrite_is_given(setup):
    """An empty database a DBA pre-created would make the service wait for an overwrite confirmation: pgmig
    says so before creating anything, and a retry with --overwrite lets the service replace it."""
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
    tgt.psql("CREATE DATABASE app")
    await slack.command("migrate onprem azure --mode online --db app --backend flex", key="m")
    refused = text_of(await slack.reply("m"))  # by the pre-flight, before anything is created
    assert "target database app exists" in refused and "stops and asks before replacing it" in refused, refused
    assert "`/pgmig retry mig-1 --overwrite`" in refused
    assert migration_puts(arm) == []
    await slack.command("retry mig-1 --overwrite", key="r")
    await slack.reply("r")
    await notice(slack, "ready_for_cutover")
    [put] = migration_puts(arm)
    assert put.body["properties"]["overwriteDbsInTarget"] == "True"


@pytest.mark.parametrize("overwrite", [False, True])
async def test_flex_overwrite_question_is_answered_only_under_overwrite(setup, overwrite):
    """The service asks before replacing a target database that appeared after pgmig looked: pgmig confirms
    only for a migration started with --overwrite; otherwise the channel hears exactly what to do."""
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)

    async def appeared(server: str) -> set[str]:
        return {"app"}  # created on the target after pgmig's own look

    arm.target_databases = appeared
    flag = " --overwrite" if overwrite else ""
    await slack.command(f"migrate onprem azure --mode online --db app --backend flex{flag}", user="U0ALICE", key="m")
    await slack.reply("m")
    patches = lambda: [  # noqa: E731
        r.body["properties"] for r in arm.requests if r.method == "PATCH" and "/migrations/" in r.path
    ]
    if overwrite:
        said = await notice(slack, "confirmed that pgmig-mig-1 may overwrite existing target databases")
        assert "--overwrite" in said
        await notice(slack, "ready_for_cutover")
        assert patches() == [{"overwriteDbsInTarget": "True"}]
    else:
        waits = await notice(slack, "waits for you")
        assert "asks before dropping and recreating them" in waits
        assert (
            "az postgres flexible-server migration update --resource-group rg-data --name sales-prod "
            "--migration-name pgmig-mig-1 --overwrite-dbs" in waits
        )
        card = await slack.fake.wait_for(
            "calls",
            lambda c: c.method == "chat.update" and "WaitingForTargetDBOverwriteConfirmation" in text_of(c.params),
        )
        assert "waits for permission to overwrite" in text_of(card.params)
        await asyncio.sleep(0.5)
        assert patches() == []  # nothing confirmed on the person's behalf
        assert (await slack.services.engine.store.get_migration("mig-1")).state.value == "full_load"
        assert "cancelled" in await slack.ask("cancel mig-1")


async def test_flex_validation_failure_shows_the_services_reasons(setup):
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
    arm.fail_validation(
        "migrations/pgmig-mig-1",
        server=[("SourceVersionValidation", "Source server version is not supported.")],
        databases={"app": [("ExtensionsValidation", "Extension 'pg_partman' is not allow-listed on the target.")]},
    )
    await slack.command("migrate onprem azure --mode online --db app --backend flex", key="m")
    await slack.reply("m")
    failed = await notice(slack, "failed")
    assert "Migration validation failed" in failed
    assert "SourceVersionValidation failed: Source server version is not supported." in failed
    assert "app: ExtensionsValidation failed: Extension 'pg_partman' is not allow-listed on the target." in failed


async def test_flex_waits_for_another_migration_on_the_server_instead_of_failing(setup):
    """One migration or validation per target server: pgmig queues its own and starts it once the server is
    free (here: someone's validation in the portal)."""
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
    theirs = arm.migration_path(RG, "sales-prod", "portal-validation")
    arm.put_resource(theirs, {"location": "westeurope", "properties": {"currentStatus": {"state": "InProgress"}}})
    await slack.command("migrate onprem azure --mode online --db app --backend flex", key="m")
    await slack.reply("m")
    card = await slack.fake.wait_for(
        "calls", lambda c: c.method == "chat.update" and "runs portal-validation" in text_of(c.params)
    )
    assert "takes one migration at a time" in text_of(card.params)
    await asyncio.sleep(0.5)
    assert migration_puts(arm) == []  # not sent, so not failed at Azure either
    arm.resources[theirs.lower()]["properties"]["currentStatus"]["state"] = "Succeeded"
    said = await notice(slack, "started pgmig-mig-1 on sales-prod for app")
    assert "flexible-server migration service" in said
    await notice(slack, "ready_for_cutover")
    assert len(migration_puts(arm)) == 1


async def test_flex_runtime_server_is_sent_and_checked(setup):
    """Private networks: migrations into a target run on its runtime server (migrationInstanceResourceId)."""
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
    runtime = arm.server_path(RG, "pgmig-runtime")
    servers = slack.services.servers
    servers["azure"] = replace(servers["azure"], azure_runtime_server=runtime)
    await slack.command("migrate onprem azure --mode online --db app --backend flex", key="m")
    await slack.reply("m")
    failed = await notice(slack, "failed")
    assert "reading server pgmig-runtime" in failed and "ResourceNotFound" in failed
    assert migration_puts(arm) == []
    seed_server(arm, "pgmig-runtime")
    await slack.command("retry mig-1", key="r")
    await slack.reply("r")
    await notice(slack, "ready_for_cutover")
    [put] = migration_puts(arm)
    assert put.body["properties"]["migrationInstanceResourceId"] == runtime


async def test_flex_runtime_server_given_per_migration(setup):
    """`--runtime-server ID` on the command: sent as migrationInstanceResourceId, and kept in the audit's
    canonical command."""
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
    runtime = arm.server_path(RG, "pgmig-runtime")
    seed_server(arm, "pgmig-runtime")
    await slack.command(
        f"migrate onprem azure --mode online --db app --backend flex --runtime-server {runtime}", key="m"
    )
    await slack.reply("m")
    await notice(slack, "ready_for_cutover")
    [put] = migration_puts(arm)
    assert put.body["properties"]["migrationInstanceResourceId"] == runtime
    audit = [e.detail for e in await slack.services.engine.store.audit_log("mig-1") if e.action == "migration.created"]
    assert f"--runtime-server {runtime}" in audit[0], audit


async def test_flex_stopped_target_is_refused_with_the_start_command(setup):
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=True).attach(arm)
    arm.resources[arm.server_path(RG, "sales-prod").lower()]["properties"]["state"] = "Stopped"
    await slack.command("migrate onprem azure --mode online --db app --backend flex", key="m")
    await slack.reply("m")
    failed = await notice(slack, "failed")
    assert "flexible server sales-prod is stopped" in failed
    assert "az postgres flexible-server start --resource-group rg-data --name sales-prod" in failed
    assert migration_puts(arm) == []


class BatchStandIn:
    """The service migrating, per service-side migration, only the databases that migration lists."""

    def __init__(self, src, tgt, databases: list[str]) -> None:
        self.services = {db: ServiceStandIn(src, tgt, db, copies_schema=True, stream=False) for db in databases}
        self.batches: list[list[str]] = []

    def attach(self, fake: FakeArm) -> "BatchStandIn":
        fake.on_start = self.start
        fake.target_databases = next(iter(self.services.values())).target_databases
        return self

    async def start(self, resource: dict) -> None:
        dbs = resource["properties"]["dbsToMigrate"]
        self.batches.append(dbs)
        for db in dbs:
            await self.services[db].start(resource)


async def test_flex_more_than_eight_databases_run_in_batches_offline_and_are_refused_online(setup):
    slack, arm, src, tgt = setup
    names = [f"shop{i}" for i in range(1, 10)]
    for db in names:
        src.psql(f"CREATE DATABASE {db}")
        src.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)", database=db)
    service = BatchStandIn(src, tgt, names).attach(arm)
    dbs = ",".join(names)
    await slack.command(f"migrate onprem azure --mode online --db {dbs} --backend flex", key="on")
    await slack.reply("on")
    refused = await notice(slack, "failed")
    assert "at most 8 databases per migration" in refused and "--mode offline" in refused
    assert migration_puts(arm) == []

    await slack.command(f"migrate onprem azure --mode offline --db {dbs} --backend flex", key="off")
    await slack.reply("off")
    await slack.fake.wait_for(
        "calls",
        lambda c: c.params.get("thread_ts") and "mig-2" in text_of(c.params) and "completed" in text_of(c.params),
        timeout=120,
    )
    assert [r.path.rsplit("/", 1)[-1] for r in migration_puts(arm)] == ["pgmig-mig-2", "pgmig-mig-2-b2"]
    assert service.batches == [names[:8], names[8:]]
    for db in names:
        assert tgt.psql("SELECT count(*) FROM t", database=db) == "2", db


async def test_dms_refuses_sources_it_cannot_migrate(setup):
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=False).attach(arm)
    await slack.command("migrate onprem azure --mode online --db app --backend dms", key="m")
    await slack.reply("m")
    failed = await notice(slack, "failed")
    assert "Azure DMS classic migrates PostgreSQL 9.4 to 13 only; the source runs PostgreSQL" in failed
    assert "--backend flex" in failed
    assert not [r for r in arm.requests if "Microsoft.DataMigration" in r.path]


@pytest.mark.parametrize("may_register", [False, True])
async def test_dms_provider_registration_is_checked_and_done_when_allowed(setup, may_register):
    slack, arm, src, tgt = setup
    ServiceStandIn(src, tgt, "app", copies_schema=False).attach(arm)
    arm.unregistered.add("Microsoft.DataMigration")
    arm.may_register = may_register
    await slack.command("migrate onprem azure --mode online --db app --backend dms", key="m")
    await slack.reply("m")
    advice = await notice(slack, "Microsoft recommends the flexible server's own migration service")
    assert "9.4 to 13" in advice
    outcome = await notice(slack, "ready_for_cutover" if may_register else "failed")
    [register] = arm.calls("POST", "/providers/Microsoft.DataMigration/register")
    assert register.query["api-version"] == "2021-04-01"  # pgmig's own, not azure-mgmt-core's endless retry
    if may_register:
        assert not arm.unregistered
    else:
        failed = outcome
        assert "not registered for the resource provider Microsoft.DataMigration" in failed
        assert "az provider register --namespace Microsoft.DataMigration" in failed
        assert "Microsoft.DataMigration/register/action" in failed
        assert not [r for r in arm.requests if r.method == "PUT" and "/services/" in r.path]
