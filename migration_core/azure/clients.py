"""The official async SDK clients, pointed at the configured cloud (ARM endpoint, token scope, authority
host) with the configured CA and the pinned api-versions; plus the few plain ARM reads no installed SDK
covers (resource provider registration, the identity's permissions), sent through the same pipeline."""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator

from migration_core.azure.config import AUTHORIZATION_API_VERSION, RESOURCES_API_VERSION, AzureConfig
from migration_core.state.errors import MigrationError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.mgmt.datamigration.aio import DataMigrationManagementClient
    from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient


@dataclass(frozen=True)
class Identity:
    """Who pgmig's token says it is (claims only; the token itself is never kept or shown)."""

    kind: str  # "service principal", "managed identity", "user", or "unknown"
    object_id: str = ""
    app_id: str = ""
    tenant_id: str = ""
    name: str = ""  # a user's UPN, when it is a user

    def describe(self) -> str:
        if self.kind == "unknown":
            return "an identity whose token carries no readable claims"
        parts = [self.kind] + [
            f"{label} {value}"
            for label, value in (
                ("", self.name),
                ("app id", self.app_id),
                ("object id", self.object_id),
                ("tenant", self.tenant_id),
            )
            if value
        ]
        return " ".join(parts[:1]) + (" (" + ", ".join(p.strip() for p in parts[1:]) + ")" if parts[1:] else "")


def claims_of(token: str) -> Identity:
    """The identity in a JWT access token's payload (not verified: Azure does that; pgmig only names it)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return Identity("unknown")
    if not isinstance(data, dict):
        return Identity("unknown")
    kind = "user" if data.get("idtyp") == "user" or data.get("upn") else "service principal"
    if str(data.get("xms_mirid", "")).lower().find("/providers/microsoft.managedidentity/") >= 0:
        kind = "managed identity"
    return Identity(
        kind,
        str(data.get("oid", "")),
        str(data.get("appid") or data.get("azp") or ""),
        str(data.get("tid", "")),
        str(data.get("upn") or data.get("unique_name") or "") if kind == "user" else "",
    )


class AzureClients:
    """Opens clients per operation (they hold aiohttp sessions); the credential lives as long as pgmig.

    `credential` defaults to DefaultAzureCredential (service principal env vars, workload or managed
    identity) with the cloud's authority host; tests pass a static token credential.
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

            self._credential = DefaultAzureCredential(authority=self.config.authority)
        return self._credential

    def _kwargs(self, api_version: str) -> dict:
        return {
            "base_url": self.config.arm_endpoint,
            "credential_scopes": [self.config.scope],
            "connection_verify": self.config.verify,
            "polling_interval": self.config.poll_seconds,
            "api_version": api_version,
        }

    @asynccontextmanager
    async def flex(self) -> AsyncIterator[PostgreSQLManagementClient]:
        from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient

        async with PostgreSQLManagementClient(
            self._require(), self.config.subscription_id, **self._kwargs(self.config.pg_api_version)
        ) as client:
            yield client

    @asynccontextmanager
    async def dms(self) -> AsyncIterator[DataMigrationManagementClient]:
        from azure.mgmt.datamigration.aio import DataMigrationManagementClient

        async with DataMigrationManagementClient(
            self._require(), self.config.subscription_id, **self._kwargs(self.config.dms_api_version)
        ) as client:
            yield client

    async def arm(self, method: str, path: str, api_version: str, body: Any = None) -> Any:
        """One plain ARM request (path from /subscriptions/…) through the flex client's pipeline: the same
        endpoint, token scope, CA and retries. Returns the parsed JSON (None when empty); an error answer
        raises HttpResponseError, as the SDK operations do."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        sep = "&" if "?" in path else "?"
        request = HttpRequest(method, f"{path}{sep}api-version={api_version}", json=body)
        async with self.flex() as client:
            response = await client.send_request(request)
            await response.read()
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        return response.json() if response.content else None

    async def provider_state(self, namespace: str) -> str:
        """`Registered`, `NotRegistered`, `Registering`… of a resource provider in the subscription."""
        found = await self.arm(
            "GET", f"/subscriptions/{self.config.subscription_id}/providers/{namespace}", RESOURCES_API_VERSION
        )
        return str((found or {}).get("registrationState", ""))

    async def register_provider(self, namespace: str) -> str:
        """POST …/providers/NS/register (needs `*/register/action` on the subscription); the state after."""
        found = await self.arm(
            "POST",
            f"/subscriptions/{self.config.subscription_id}/providers/{namespace}/register",
            RESOURCES_API_VERSION,
        )
        return str((found or {}).get("registrationState", ""))

    async def permissions(self, scope: str) -> tuple[list[str], list[str]]:
        """The actions (and not-actions) the identity has at `scope` (a subscription or resource group path):
        Microsoft.Authorization's Permissions - List, which needs no rights beyond reading."""
        found = await self.arm(
            "GET", f"{scope}/providers/Microsoft.Authorization/permissions", AUTHORIZATION_API_VERSION
        )
        actions: list[str] = []
        not_actions: list[str] = []
        for item in (found or {}).get("value", []):
            actions += [str(a) for a in item.get("actions", [])]
            not_actions += [str(a) for a in item.get("notActions", [])]
        return actions, not_actions

    async def identity(self) -> Identity:
        """Whose token pgmig gets for the configured scope (a failure raises ClientAuthenticationError)."""
        token = await self._require().get_token(self.config.scope)
        return claims_of(token.token)

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()
