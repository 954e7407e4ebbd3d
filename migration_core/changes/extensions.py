"""Enabling on the target every extension a source database uses, before any schema or data moves."""

from __future__ import annotations

import asyncpg

from migration_core.pg.servers import ServerConfig, column_per_database
from migration_core.pg.sql import ident
from migration_core.state.errors import MigrationError


async def enable(source: asyncpg.Connection, target: asyncpg.Connection) -> list[str]:
    """CREATE EXTENSION on the target for each one in use; a refusal names the extension and the fix.

    Extensions living in a schema the target does not have yet are left to the schema dump, which
    creates the schema first and then the extension in it.
    """
    rows = await source.fetch(
        "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname <> 'plpgsql' ORDER BY e.oid"
    )
    enabled: list[str] = []
    for row in rows:
        name, schema = row["extname"], row["nspname"]
        if not await target.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            continue
        try:
            await target.execute(f"CREATE EXTENSION IF NOT EXISTS {ident(name)} WITH SCHEMA {ident(schema)} CASCADE")
        except asyncpg.PostgresError as exc:
            allow = await target.fetchval("SELECT current_setting('azure.extensions', true)")
            fix = (
                f"add {name} to the server parameter azure.extensions"
                if allow is not None
                else f"install the {name} extension's package on the target server"
            )
            raise MigrationError(f"extension {name} cannot be enabled on the target: {exc}", fix) from None
        enabled.append(name)
    return enabled


USER_DATABASES = "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname"


async def inventory(server: ServerConfig) -> dict[str, list[str]]:
    """Every extension each user database of `server` uses (plpgsql aside): what an Azure target's
    azure.extensions allow-list must name before the schema can be restored there."""
    databases = (await column_per_database(server, [server.database], USER_DATABASES))[server.database]
    return await column_per_database(
        server, databases, "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY extname"
    )
