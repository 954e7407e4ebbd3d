"""Resource provider registration: a subscription must be registered for a namespace (DMS classic's
Microsoft.DataMigration is often not) before any of its resources can be created. The SDK's automatic
registration (azure-mgmt-core) needs `*/register/action` on the subscription and then polls every 10 s
without end; pgmig checks first, registers when it may, waits with its own poll and otherwise says exactly
who must run which command."""

from __future__ import annotations

import asyncio

from migration_core.azure.clients import AzureClients
from migration_core.azure.errors import code_of, explain, registration_fix
from migration_core.state.errors import MigrationError

DMS_NAMESPACE = "Microsoft.DataMigration"
PG_NAMESPACE = "Microsoft.DBforPostgreSQL"


async def ensure_registered(clients: AzureClients, namespace: str, timeout: float = 600.0) -> str:
    """ "" when the subscription is registered for `namespace`; else register it (if pgmig's identity may)
    and wait until it is, returning what was done; else refuse with the command and who may run it."""
    from azure.core.exceptions import AzureError, HttpResponseError

    try:
        state = await clients.provider_state(namespace)
    except AzureError as exc:
        raise explain(exc, f"reading the registration of {namespace}") from None
    if state == "Registered":
        return ""
    if state != "Registering":
        try:
            state = await clients.register_provider(namespace)
        except HttpResponseError as exc:
            if exc.status_code == 403 or code_of(exc) == "AuthorizationFailed":
                raise MigrationError(
                    f"the subscription is not registered for the resource provider {namespace}, and pgmig's "
                    "identity may not register it",
                    registration_fix(namespace),
                ) from None
            raise explain(exc, f"registering {namespace}") from None
        except AzureError as exc:
            raise explain(exc, f"registering {namespace}") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while state != "Registered":
        if loop.time() > deadline:
            raise MigrationError(
                f"{namespace} is still {state or 'not registered'} after {timeout:.0f} s",
                f"check `az provider show --namespace {namespace}`; registration usually takes minutes",
            )
        await asyncio.sleep(max(clients.config.poll_seconds, 0.05))
        try:
            state = await clients.provider_state(namespace)
        except AzureError as exc:
            raise explain(exc, f"reading the registration of {namespace}") from None
    return f"registered the subscription for the resource provider {namespace}"
