"""Azure for tests: the fake ARM's settings for pgmig, and a stand-in for what the Azure migration services
do to the databases, done for real between local clusters with native logical replication."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from bot.localpg import LocalCluster
from tests.conftest import PASSWORD
from tests.integration.fake_arm import FakeArm

RG = "rg-data"


def azure_toml(fake: FakeArm, extra: str = "", poll: float = 0, ca: bool = True) -> str:
    """[azure] for the fake; `ca=False` leaves the CA to SSL_CERT_FILE (or to nobody)."""
    ca_line = f'ca_file = "{fake.ca_path}"\n' if ca else ""
    return (
        f'[azure]\nresource_group = "{RG}"\nregion = "westeurope"\npoll_seconds = {poll}\nprogress_seconds = 0.05\n'
        f'{ca_line}dms_subnet = "/subscriptions/{fake.subscription}/resourceGroups/{RG}/'
        f'providers/Microsoft.Network/virtualNetworks/vnet/subnets/dms"\n{extra}'
    )


def azure_env(fake: FakeArm) -> dict[str, str]:
    return {"AZURE_SUBSCRIPTION_ID": fake.subscription, "PGMIG_ARM_ENDPOINT": fake.endpoint}


def azure_server_toml(name: str, cluster: LocalCluster, azure_server: str) -> str:
    """A local cluster standing in for a flexible server (its Azure identity is what the fake knows)."""
    return (
        f'\n[servers.{name}]\nhost = "127.0.0.1"\nport = {cluster.port}\nuser = "postgres"\n'
        f'password_env = "PGMIG_TEST_PASSWORD"\nsslmode = "disable"\nconnect_timeout = 5\n'
        f'azure_resource_group = "{RG}"\nazure_server = "{azure_server}"\n'
    )


def seed_server(fake: FakeArm, name: str, storage_gb: int = 128) -> None:
    path = (
        f"/subscriptions/{fake.subscription}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/"
        f"flexibleServers/{name}"
    )
    fake.put_resource(
        path,
        {
            "location": "westeurope",
            "sku": {"name": "Standard_D2ds_v5", "tier": "GeneralPurpose"},
            "properties": {
                "version": "16",
                "state": "Ready",
                "administratorLogin": "pgadmin",
                "storage": {"storageSizeGB": storage_gb},
                "fullyQualifiedDomainName": f"{name}.postgres.database.azure.com",
            },
        },
    )


async def _sql(cluster: LocalCluster, database: str, sql: str) -> None:
    conn = await asyncpg.connect(
        cluster.dsn(database, password=PASSWORD),  # a superuser: through the fence
        server_settings={"default_transaction_read_only": "off"},
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _schema(src: LocalCluster, database: str) -> str:
    return subprocess.run(
        [
            str(src.bindir / "pg_dump"),
            "-s",
            "-x",
            "-O",
            "-h",
            "127.0.0.1",
            "-p",
            str(src.port),
            "-U",
            "postgres",
            database,
        ],
        env={**os.environ, **src.env, "PGPASSWORD": PASSWORD},
        check=True,
        capture_output=True,
        text=True,
    ).stdout


class ServiceStandIn:
    """What the flexible-server migration service / DMS do to the databases when the fake ARM says so:
    (schema,) snapshot copy and streaming by a publication and subscription; at cutover the subscription
    is dropped (its slot with it); at cancel too, unless `leaves_slot`: then, as a service may, it stops
    streaming and leaves its slot on the source."""

    def __init__(
        self,
        src: LocalCluster,
        tgt: LocalCluster,
        database: str,
        copies_schema: bool,
        stream: bool = True,
        leaves_slot: bool = False,
    ) -> None:
        self.src, self.tgt, self.database = src, tgt, database
        self.copies_schema, self.stream, self.leaves_slot = copies_schema, stream, leaves_slot
        self.events: list[str] = []
        self.name = f"azure_service_{database}"  # slots are per cluster: one name per database

    def attach(self, fake: FakeArm) -> "ServiceStandIn":
        fake.on_start, fake.on_cutover, fake.on_cancel = self.start, self.cutover, self.cancel
        fake.target_databases = self.target_databases
        return self

    async def target_databases(self, server: str) -> set[str]:
        """What the service sees on the target server: the stand-in target cluster's databases."""
        names = await asyncio.to_thread(self.tgt.psql, "SELECT string_agg(datname, ',') FROM pg_database")
        return set((names or "").split(","))

    async def start(self, resource: dict) -> None:
        self.events.append("start")
        if self.copies_schema:
            exists = await asyncio.to_thread(
                self.tgt.psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"
            )
            if exists and resource["properties"].get("overwriteDbsInTarget") == "True":
                await self._drop()  # what the failed attempt left streaming
                await asyncio.to_thread(self.tgt.psql, f'DROP DATABASE "{self.database}" WITH (FORCE)')
                exists = ""
            if not exists:
                await asyncio.to_thread(self.tgt.psql, f'CREATE DATABASE "{self.database}"')
            schema = Path(tempfile.mkdtemp(prefix="pgmig-service-")) / "schema.sql"
            schema.write_text(await asyncio.to_thread(_schema, self.src, self.database))
            os.chmod(schema.parent, 0o755)
            os.chmod(schema, 0o644)
            await asyncio.to_thread(self.tgt.psql, database=self.database, file=schema)
        await _sql(self.src, self.database, f"CREATE PUBLICATION {self.name} FOR ALL TABLES")
        conninfo = f"host=127.0.0.1 port={self.src.port} user=postgres password={PASSWORD} dbname={self.database}"
        await _sql(
            self.tgt, self.database, f"CREATE SUBSCRIPTION {self.name} CONNECTION '{conninfo}' PUBLICATION {self.name}"
        )
        await self._wait_synced()  # the services report their full load done before streaming
        if not self.stream:  # offline: the copy is the whole job
            await self._drop()

    async def _wait_synced(self) -> None:
        for _ in range(600):
            states = await asyncio.to_thread(
                self.tgt.psql,
                "SELECT string_agg(srsubstate::text, '') FROM pg_subscription_rel",
                database=self.database,
            )
            if states and set(states) <= {"r", "s"}:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the stand-in service never finished its copy")

    async def _drop(self) -> None:
        await _sql(self.tgt, self.database, f"DROP SUBSCRIPTION IF EXISTS {self.name}")
        await _sql(self.src, self.database, f"DROP PUBLICATION IF EXISTS {self.name}")

    async def cutover(self, resource: dict) -> None:
        self.events.append("cutover")
        await self._drop()

    async def cancel(self, resource: dict) -> None:
        self.events.append("cancel")
        if "start" in self.events:  # a migration cancelled before it copied anything left nothing
            if self.leaves_slot:
                await _sql(self.tgt, self.database, f"ALTER SUBSCRIPTION {self.name} DISABLE")
                await _sql(self.tgt, self.database, f"ALTER SUBSCRIPTION {self.name} SET (slot_name = NONE)")
            await self._drop()
