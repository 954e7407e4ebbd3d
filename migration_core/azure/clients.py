"""The official async SDK clients, pointed at the configured ARM endpoint with the configured CA."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from azure.core.credentials_async import AsyncTokenCredential
from azure.mgmt.datamigration.aio import DataMigrationManagementClient
from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient

from migration_core.azure.config import AzureConfig
from migration_core.errors import MigrationError


class AzureClients:
    """Opens clients per operation (they hold aiohttp sessions); the credential lives as long as pgmig.

    `credential` defaults to DefaultAzureCredential (service principal env vars, workload or managed
    identity); tests pass a static token credential.
    """

    def __init__(self, config: AzureConfig, credential: AsyncTokenCredential | None = None) -> None:
        self.config = config
        self._credential = credential

    def _require(self) -> AsyncTokenCredential:
        if not self.config.enabled:
            raise MigrationError(
                "Azure is not configured",
                "set AZURE_SUBSCRIPTION_ID (or [azure] subscription_id) "
                "and credentials (AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET or a "
                "managed identity)",
            )
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    def _kwargs(self) -> dict:
        return {
            "base_url": self.config.arm_endpoint,
            "credential_scopes": [self.config.credential_scope],
            "connection_verify": self.config.verify,
            "polling_interval": self.config.poll_seconds,
        }

    @asynccontextmanager
    async def flex(self) -> AsyncIterator[PostgreSQLManagementClient]:
        async with PostgreSQLManagementClient(self._require(), self.config.subscription_id, **self._kwargs()) as client:
            yield client

    @asynccontextmanager
    async def dms(self) -> AsyncIterator[DataMigrationManagementClient]:
        async with DataMigrationManagementClient(
            self._require(), self.config.subscription_id, **self._kwargs()
        ) as client:
            yield client

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()
