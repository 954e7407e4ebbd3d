"""Preparing a target database: create it like the source's, or refuse to overwrite one that has data."""
from __future__ import annotations

import asyncpg

from migration_core.errors import MigrationError
from migration_core.servers import ServerConfig
from migration_core.sql import USER_SCHEMA_FILTER, ident, literal

USER_OBJECTS = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r','p','v','m','S','f') AND " + USER_SCHEMA_FILTER)


async def database_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def user_object_count(server: ServerConfig, database: str) -> int:
    conn = await server.connect(database)
    try:
        return int(await conn.fetchval(USER_OBJECTS))
    finally:
        await conn.close()


async def prepare(source: ServerConfig, target: ServerConfig, database: str, *, overwrite: bool,
                  claimed: bool = False) -> str:
    """Make `database` exist and be empty on the target; returns what was done, in words.

    `claimed` means an earlier attempt of this migration already owns the database (a retry), so
    whatever is in it is pgmig's own half-finished work and may be replaced without --overwrite.
    """
    tgt = await target.connect()
    try:
        if await database_exists(tgt, database):
            objects = await user_object_count(target, database)
            if objects == 0:
                return f"target database {database} exists and is empty"
            if not (overwrite or claimed):
                raise MigrationError(
                    f"target database {database} is not empty ({objects} tables, views or sequences)",
                    "pass --overwrite to drop and recreate it, or choose another target")
            await tgt.execute(f"DROP DATABASE {ident(database)} WITH (FORCE)")
            verb = "recreated"
        else:
            verb = "created"
        await _create_like_source(source, tgt, database)
        return f"target database {database} {verb}"
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"cannot prepare target database {database}: {exc}",
                             "the target role needs CREATEDB (or create the database yourself)") from None
    finally:
        await tgt.close()


async def _create_like_source(source: ServerConfig, tgt: asyncpg.Connection, database: str) -> None:
    """Same encoding and locale as the source when the target offers them, else the target's default."""
    src = await source.connect(database)
    try:
        row = await src.fetchrow("SELECT pg_encoding_to_char(encoding) AS enc, datcollate, datctype "
                                 "FROM pg_database WHERE datname = current_database()")
    finally:
        await src.close()
    try:
        await tgt.execute(f"CREATE DATABASE {ident(database)} TEMPLATE template0 ENCODING {literal(row['enc'])} "
                          f"LC_COLLATE {literal(row['datcollate'])} LC_CTYPE {literal(row['datctype'])}")
    except (asyncpg.InvalidParameterValueError, asyncpg.FeatureNotSupportedError, asyncpg.InsufficientPrivilegeError):
        await tgt.execute(f"CREATE DATABASE {ident(database)}")


async def drop(target: ServerConfig, database: str) -> None:
    conn = await target.connect()
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {ident(database)} WITH (FORCE)")
    finally:
        await conn.close()
