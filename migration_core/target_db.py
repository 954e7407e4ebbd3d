"""Target databases: created like the source's; replaced only when the journal says this migration
created it or the user said --overwrite; dropped only when the journal says pgmig created it.

"Empty" means nothing a person put there: no tables, views or sequences, no schema but an empty
`public`, no functions, types, large objects or extensions beyond plpgsql. A database a DBA prepared
with a schema and grants is not empty, and pgmig never drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from migration_core import extensions
from migration_core.errors import MigrationError
from migration_core.journal import TARGET, Change, Journal, JournalEntry, Mark
from migration_core.models import RetryChanges
from migration_core.servers import ServerConfig
from migration_core.sql import USER_SCHEMA_FILTER, ident, literal

_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {cls}::regclass AND d.objid = {oid} AND d.deptype = 'e')"
)
_USER_NAMESPACE = "nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'"
CONTENTS = (
    "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "        WHERE c.relkind IN ('r','p','v','m','S','f') AND " + USER_SCHEMA_FILTER + ") AS relations, "
    "(SELECT count(*) FROM pg_namespace n WHERE "
    + _USER_NAMESPACE
    + " AND nspname <> 'public' AND "
    + _NOT_EXTENSION_MEMBER.format(cls="'pg_namespace'", oid="n.oid")
    + ") AS schemas, "
    "(SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE "
    + _USER_NAMESPACE
    + " AND "
    + _NOT_EXTENSION_MEMBER.format(cls="'pg_proc'", oid="p.oid")
    + ") AS functions, "
    "(SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE "
    + _USER_NAMESPACE
    + " AND t.typrelid = 0 AND t.typelem = 0 AND "
    + _NOT_EXTENSION_MEMBER.format(cls="'pg_type'", oid="t.oid")
    + ") AS types, "
    "(SELECT count(*) FROM pg_largeobject_metadata) AS large_objects, "
    "(SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') AS extensions"
)


@dataclass
class Contents:
    """What is in a database, counted by kind."""

    relations: int = 0
    schemas: int = 0
    functions: int = 0
    types: int = 0
    large_objects: int = 0
    extensions: int = 0

    @property
    def empty(self) -> bool:
        return not any(vars(self).values())

    def describe(self) -> str:
        words = {
            "relations": "tables, views or sequences",
            "schemas": "schemas",
            "functions": "functions",
            "types": "types",
            "large_objects": "large objects",
            "extensions": "extensions",
        }
        return ", ".join(f"{n} {words[k]}" for k, n in vars(self).items() if n) or "nothing"


async def database_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def contents(server: ServerConfig, database: str) -> Contents:
    async with server.connection(database) as conn:
        return Contents(**dict(await conn.fetchrow(CONTENTS)))


def created_by_pgmig(entry: JournalEntry | None, what: Contents | None) -> bool:
    """Whether a database that exists now is the one this migration's journaled CREATE made. A CREATE
    journaled but never confirmed made the database only if it is still empty (a DBA's would not be)."""
    if entry is None or not entry.live:
        return False
    return entry.mark is Mark.DONE or (what is not None and what.empty)


async def prepare_target(
    source: ServerConfig, target: ServerConfig, database: str, journal: Journal, *, overwrite: bool
) -> str:
    """What every migration does first on the target, offline and online alike: the database prepared
    (below), then the source's extensions created in it, before any schema arrives."""
    prepared = await prepare(source, target, database, journal, overwrite=overwrite)
    async with source.connection(database) as src, target.connection(database) as tgt:
        await extensions.enable(src, tgt)
    return prepared


async def prepare(
    source: ServerConfig, target: ServerConfig, database: str, journal: Journal, *, overwrite: bool
) -> str:
    """Make `database` exist and be empty on the target; returns what was done, in words."""
    mine = await journal.find(Change.DATABASE, TARGET, database)
    try:
        async with target.connection() as tgt:
            replaced = False
            if await database_exists(tgt, database):
                what = await contents(target, database)
                ours = created_by_pgmig(mine, what)
                if what.empty:
                    if ours and mine is not None and mine.mark is Mark.PLANNED:
                        await journal.done(mine)
                    return (
                        f"target database {database} (created by this migration) is empty: reused"
                        if ours
                        else f"target database {database} exists and is empty: used as it is (pgmig did not create it "
                        "and will never drop it)"
                    )
                if not ours and not overwrite:
                    raise MigrationError(
                        f"target database {database} is not empty ({what.describe()}) and was not created by this "
                        "migration",
                        "pgmig never drops a database it did not create: migrate with --overwrite to drop and "
                        "recreate it, empty it yourself, or choose another target",
                        RetryChanges(overwrite=True),
                    )
                replaced = not ours or bool(mine and mine.data.get("replaced"))
                entry = await journal.plan(
                    Change.DATABASE,
                    TARGET,
                    database,
                    data={
                        "replaced": replaced,
                        "why": "--overwrite: the user chose to replace it"
                        if not ours
                        else "an earlier attempt of this migration created it",
                    },
                )
                await _drop(tgt, database)
            else:
                entry = await journal.plan(
                    Change.DATABASE, TARGET, database, data={"replaced": bool(mine and mine.data.get("replaced"))}
                )
            await _create_like_source(source, tgt, database)
            await journal.done(entry)
            return f"target database {database} {'recreated' if replaced or (mine and mine.live) else 'created'}"
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationError(
            f"cannot prepare target database {database}: {exc}",
            "the target role needs CREATEDB (or create the database yourself, empty)",
        ) from None
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"cannot prepare target database {database}: {exc}") from None


async def _drop(conn: asyncpg.Connection, database: str) -> None:
    """DROP DATABASE … WITH (FORCE). A subscription inside (holding a slot on some source) is not
    pgmig's to remove here: pgmig's own are dropped from the journal before their database."""
    db = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = $1", database)
    names = [r["subname"] for r in await conn.fetch("SELECT subname FROM pg_subscription WHERE subdbid = $1", db)]
    if names:
        raise MigrationError(
            f"target database {database} holds subscription {', '.join(names)}",
            "pgmig drops the subscriptions it made before their database; this one is not "
            "pgmig's: drop it yourself (ALTER SUBSCRIPTION … DISABLE; SET (slot_name = NONE); DROP)",
        )
    await conn.execute(f"DROP DATABASE IF EXISTS {ident(database)} WITH (FORCE)")


async def _create_like_source(source: ServerConfig, tgt: asyncpg.Connection, database: str) -> None:
    """Same encoding and locale as the source when the target offers them, else the target's default."""
    async with source.connection(database) as src:
        row = await src.fetchrow(
            "SELECT pg_encoding_to_char(encoding) AS enc, datcollate, datctype "
            "FROM pg_database WHERE datname = current_database()"
        )
    try:
        await tgt.execute(
            f"CREATE DATABASE {ident(database)} TEMPLATE template0 ENCODING {literal(row['enc'])} "
            f"LC_COLLATE {literal(row['datcollate'])} LC_CTYPE {literal(row['datctype'])}"
        )
    except (asyncpg.InvalidParameterValueError, asyncpg.FeatureNotSupportedError, asyncpg.InsufficientPrivilegeError):
        await tgt.execute(f"CREATE DATABASE {ident(database)}")


async def drop_if_created(target: ServerConfig, entry: JournalEntry, journal: Journal) -> str:
    """Undo a journaled CREATE DATABASE: drop it only if it is provably the one pgmig created."""
    async with target.connection() as conn:
        if not await database_exists(conn, entry.database):
            await journal.undone(entry)
            return ""
        what = await contents(target, entry.database) if entry.mark is Mark.PLANNED else None
        if not created_by_pgmig(entry, what):
            await journal.undone(entry)  # the CREATE never happened: this one is someone else's
            return f"left {entry.database}: pgmig did not create it"
        await _drop(conn, entry.database)
        await journal.undone(entry)
        return f"dropped target database {entry.database}"
