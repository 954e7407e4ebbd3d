"""A flexible server's state as pgmig acts on it: transitional states (a start, a restart, a scale) are
waited for; a stopped, disabled or dropping server is refused with what to do, instead of a command that
Azure would reject or a migration that would hang on an unreachable target."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from migration_core.azure.backend import word
from migration_core.azure.errors import explain
from migration_core.azure.lro import Progress
from migration_core.state.errors import MigrationError

if TYPE_CHECKING:
    from azure.mgmt.postgresqlflexibleservers import models
    from azure.mgmt.postgresqlflexibleservers.aio import PostgreSQLManagementClient

TRANSITIONAL = {"Provisioning", "Updating", "Starting", "Restarting", "Stopping"}


def unusable(state: str, group: str, name: str) -> MigrationError | None:
    """Why a server in `state` cannot be used now, with the fix; None when it can."""
    if state == "Stopped":
        return MigrationError(
            f"flexible server {name} is stopped",
            f"start it: `az postgres flexible-server start --resource-group {group} --name {name}` "
            "(Azure starts a stopped server by itself after 7 days), then try again",
        )
    if state == "Disabled":
        return MigrationError(
            f"flexible server {name} is disabled (the subscription is disabled, over its spending limit or the "
            "server is being moved)",
            "re-enable the subscription or wait for the move to finish, then try again",
        )
    if state == "Dropping":
        return MigrationError(f"flexible server {name} is being deleted", "choose or provision another server")
    return None


def props(server: models.Server) -> models.ServerProperties:
    if server.properties is None:
        raise MigrationError(f"Azure returned server {server.name} without its properties")
    return server.properties


async def settled(
    client: PostgreSQLManagementClient,
    group: str,
    name: str,
    poll: float,
    server: models.Server | None = None,
    on_progress: Progress | None = None,
    every: float = 15.0,
    timeout: float = 3600.0,
) -> models.Server:
    """The server once it is in no transitional state (a server still being created, started or scaled is
    waited for, up to `timeout`); a stopped, disabled or dropping one is refused with the fix."""
    from azure.core.exceptions import AzureError

    started = last = time.monotonic()
    try:
        if server is None:
            server = await client.servers.get(group, name)
        while word(props(server).state) in TRANSITIONAL:
            if time.monotonic() - started > timeout:
                raise MigrationError(
                    f"flexible server {name} is still {word(props(server).state)} after {timeout:.0f} s",
                    "look at the server's activity log in the Azure portal",
                )
            if on_progress is not None and time.monotonic() - last >= every:
                last = time.monotonic()
                await on_progress(f"{name} is {word(props(server).state)} after {last - started:.0f} s")
            await asyncio.sleep(max(poll, 0.05))
            server = await client.servers.get(group, name)
    except AzureError as exc:
        raise explain(exc, f"reading server {name}") from None
    if problem := unusable(word(props(server).state), group, name):
        raise problem
    return server
