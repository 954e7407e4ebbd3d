"""Enabling on the target every extension a source database uses, before any schema or data moves,
journaled (Change.EXTENSIONS) so an undo drops exactly the extensions pgmig created and nothing a DBA
had enabled."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from migration_core.pg import failpoints
from migration_core.pg.servers import ServerConfig, column_per_database
from migration_core.pg.sql import ident
from migration_core.state.errors import MigrationError
from migration_core.state.journal import TARGET, Change, Journal, JournalEntry, Payload

NAMES = "SELECT extname FROM pg_extension ORDER BY oid"  # in the order they were created


@dataclass
class ExtensionsPayload(Payload):
    """The journal's record of the extensions pgmig creates in one target database: the database's identity
    (`oid`, on the server at `address`), the extensions it had before pgmig's first CREATE EXTENSION, those
    pgmig created (in order, with what CASCADE brought), and the one being created when pgmig last wrote
    (`making`: maybe made)."""

    SPARSE = ("making",)

    oid: int | None = None
    address: str | None = None
    before: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    making: str | None = None


async def enable(
    source: asyncpg.Connection, target: asyncpg.Connection, database: str, journal: Journal, address: str
) -> list[str]:
    """CREATE EXTENSION on the target for each one in use; a refusal names the extension and the fix. The
    entry is planned before the first CREATE and noted around each.

    Extensions living in a schema the target does not have yet are left to the schema dump, which
    creates the schema first and then the extension in it.
    """
    rows = await source.fetch(
        "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname <> 'plpgsql' ORDER BY e.oid"
    )
    entry: JournalEntry | None = None
    made = ExtensionsPayload()
    enabled: list[str] = []
    for row in rows:
        name, schema = row["extname"], row["nspname"]
        if not await target.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            continue
        present = await _names(target)
        if name not in present:
            if entry is None:
                entry, made = await _plan(target, database, journal, address)
            made.making = name
            await journal.note(entry, made)
            await _create(target, name, schema)
            failpoints.reached(f"create-extension:{database}")
            made.created += [n for n in await _names(target) if n not in present]
            made.making = None
            await journal.note(entry, made)
        enabled.append(name)
    if entry is not None:
        await journal.done(entry, made)
    return enabled


async def _names(conn: asyncpg.Connection) -> list[str]:
    return [r["extname"] for r in await conn.fetch(NAMES)]


async def _plan(
    target: asyncpg.Connection, database: str, journal: Journal, address: str
) -> tuple[JournalEntry, ExtensionsPayload]:
    """The entry for this database: an earlier attempt's, continued, while it is the very database that
    attempt created extensions in; else a new one, with what is there now as `before`."""
    oid = await target.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
    previous = await journal.find(Change.EXTENSIONS, TARGET, database)
    earlier = ExtensionsPayload.of(previous) if previous is not None and previous.live else None
    if earlier is not None and earlier.oid == oid and earlier.address == address:
        made = earlier
        await settle(target, made)
    else:
        made = ExtensionsPayload(oid, address, await _names(target))
    return await journal.plan(Change.EXTENSIONS, TARGET, database, data=made), made


async def _create(target: asyncpg.Connection, name: str, schema: str) -> None:
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


async def settle(conn: asyncpg.Connection, made: ExtensionsPayload) -> None:
    """pgmig stopped around the CREATE of `made.making`: when that extension is there now and was not
    before, it and the extensions it requires that were not there before either are pgmig's."""
    if made.making is None:
        return
    found = await conn.fetch(
        "SELECT e.extname FROM pg_extension e WHERE e.extname = $1 OR e.oid IN ("
        "  SELECT d.refobjid FROM pg_depend d JOIN pg_extension x ON x.oid = d.objid "
        "  WHERE d.classid = 'pg_extension'::regclass AND d.refclassid = 'pg_extension'::regclass "
        "  AND x.extname = $1) ORDER BY e.oid",
        made.making,
    )
    if made.making in (names := [r["extname"] for r in found]):
        made.created += [n for n in names if n not in made.before and n not in made.created]
    made.making = None


async def drop_created(conn: asyncpg.Connection, made: ExtensionsPayload) -> tuple[list[str], list[str]]:
    """DROP EXTENSION, never with CASCADE, of each extension pgmig created that is still there, newest
    first; returns those dropped and those left because something depends on them (with what)."""
    await settle(conn, made)
    present = await _names(conn)
    dropped: list[str] = []
    left: list[str] = []
    for name in reversed(made.created):
        if name not in present:
            continue
        try:
            await conn.execute(f"DROP EXTENSION IF EXISTS {ident(name)}")
        except asyncpg.DependentObjectsStillExistError as exc:
            left.append(f"{name} ({exc.detail or exc})")
        else:
            dropped.append(name)
    return dropped, left


async def kept(conn: asyncpg.Connection, made: ExtensionsPayload | None) -> list[str]:
    """The extensions in this database that pgmig did not create (`made`: its record here, if any)."""
    if made is not None:
        await settle(conn, made)
    ours = made.created if made is not None else []
    return [n for n in await _names(conn) if n not in ours]


USER_DATABASES = "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname"


async def inventory(server: ServerConfig) -> dict[str, list[str]]:
    """Every extension each user database of `server` uses (plpgsql aside): what an Azure target's
    azure.extensions allow-list must name before the schema can be restored there."""
    databases = (await column_per_database(server, [server.database], USER_DATABASES))[server.database]
    return await column_per_database(
        server, databases, "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY extname"
    )
