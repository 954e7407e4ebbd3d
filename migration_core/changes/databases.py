"""Target databases: created like the source's; replaced only when the journal says this migration
created it or the user said --overwrite; dropped only when the journal says pgmig created it.

Ownership is by identity, never by name: the journal records the database's OID and the server's
address when pgmig creates it, and a database is "the one this migration made" only while both still
match. A name that now belongs to something else (a newer migration's database, one a DBA re-created)
is left alone. Whatever the options, pgmig never replaces or drops a database another migration still
holds (unfinished, or failed with its half-made database), nor one a completed cutover released to the
applications.

"Empty" means nothing a person put there: no tables, views or sequences, no schema but an empty
`public`, no functions, types or large objects. A database a DBA prepared with a schema and grants is
not empty, and pgmig never drops it. Extensions a DBA enabled do not stop pgmig from using someone's
database as it is: the journal records which were there (Change.EXTENSIONS), and emptying it again
leaves them, with the schemas they live in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from migration_core.changes import extensions
from migration_core.changes.extensions import ExtensionsPayload
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident, literal
from migration_core.state.errors import MigrationError
from migration_core.state.journal import TARGET, Change, Journal, JournalEntry, Mark, Payload
from migration_core.state.models import RetryChanges, State, StepKind
from migration_core.store import Store

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

    @property
    def usable(self) -> bool:
        """Empty but for extensions: someone's database pgmig may fill as it is (and empty again)."""
        return not any(n for k, n in vars(self).items() if k != "extensions")

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


@dataclass
class DatabasePayload(Payload):
    """The journal's record of a target database pgmig (re)creates: its identity once made (`oid`, on the
    server at `address`) and, with --overwrite or a retry, the one it replaced."""

    SPARSE = ("replaced_oid", "address", "why", "oid")

    replaced: bool = False
    replaced_oid: int | None = None
    address: str | None = None
    why: str | None = None
    oid: int | None = None


@dataclass
class ContentsPayload(Payload):
    """The journal's record of someone's empty target database that pgmig fills: its identity, and who
    owned `public` with which grants (None: no `public`), to put back when emptying it again."""

    SPARSE = ("public_acl",)

    oid: int | None = None
    address: str | None = None
    public_owner: str | None = None
    public_acl: list[str] | None = field(default=None)


async def database_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def contents(server: ServerConfig, database: str) -> Contents:
    async with server.connection(database) as conn:
        return Contents(**dict(await conn.fetchrow(CONTENTS)))


async def database_oid(conn: asyncpg.Connection, name: str) -> int | None:
    """The database's identity on its server: its OID (a re-created database of the same name gets another)."""
    return await conn.fetchval("SELECT oid FROM pg_database WHERE datname = $1", name)


def created_by_pgmig(entry: JournalEntry | None, oid: int | None, what: Contents | None) -> bool:
    """Whether the database named like `entry` that exists now (`oid`) is the one this migration's journaled
    CREATE made: the OID recorded at creation matches. A CREATE journaled without an OID (pgmig stopped
    before reading it back) made the database only if it is still empty (a DBA's or another migration's
    would not be)."""
    if entry is None or not entry.live or oid is None:
        return False
    made = DatabasePayload.of(entry).oid
    if made is not None:
        return made == oid
    return what is not None and what.empty


@dataclass(frozen=True)
class Holder:
    """Another migration that holds a target database by identity: pgmig must not replace or drop it."""

    migration_id: str
    state: State
    released_at: datetime | None  # when a completed cutover released it to the applications

    def describe(self, database: str) -> str:
        if self.released_at is not None:
            return (
                f"{database} is the target {self.migration_id}'s cutover released to the applications at "
                f"{self.released_at:%Y-%m-%d %H:%M} UTC: the applications' primary now"
            )
        if self.state is State.FAILED:
            return f"{database} is the half-made target database of {self.migration_id}, which failed"
        return f"{self.migration_id} ({self.state.value}) is migrating into {database}"

    @property
    def fix(self) -> str:
        if self.released_at is not None:
            return "pgmig never replaces or drops a released target: choose another target database or server"
        if self.state is State.FAILED:
            return (
                f"`/pgmig cancel {self.migration_id}` drops it (or `/pgmig retry {self.migration_id}` finishes it), "
                "then migrate again"
            )
        return f"wait for {self.migration_id} to finish or cancel it, or choose another target"


async def holders(store: Store, address: str, database: str, oid: int | None, but: str = "") -> list[Holder]:
    """The other migrations whose journal says they made the database that is at `address` now (same OID):
    unfinished ones, failed ones that still hold it, and completed ones that released it by a cutover."""
    if oid is None:
        return []
    found = []
    for entry in await store.journal():
        if (
            entry.kind is not Change.DATABASE
            or entry.server != TARGET
            or entry.database != database
            or entry.migration_id == but
            or not entry.live
        ):
            continue
        made = DatabasePayload.of(entry)
        if made.address != address or made.oid != oid:
            continue
        m = await store.get_migration(entry.migration_id)
        if m is None or m.state is State.CANCELLED:
            continue
        release = await store.step(m.id, StepKind.RELEASE)
        released = release.started_at if release is not None and m.state in (State.RELEASED, State.COMPLETED) else None
        if m.state is State.COMPLETED and released is None:
            continue  # an offline migration's finished copy: the person may replace it with --overwrite
        found.append(Holder(m.id, m.state, released))
    return found


def _refuse_held(database: str, held: list[Holder]) -> None:
    if held:
        first = next((h for h in held if h.released_at is not None), held[0])
        raise MigrationError(f"target database {first.describe(database)}", first.fix)


async def prepare_target(
    source: ServerConfig, target: ServerConfig, database: str, journal: Journal, *, overwrite: bool
) -> str:
    """What every migration does first on the target, offline and online alike: the database prepared
    (below), then the source's extensions created in it, before any schema arrives."""
    prepared = await prepare(source, target, database, journal, overwrite=overwrite)
    async with source.connection(database) as src, target.connection(database) as tgt:
        await extensions.enable(src, tgt, database, journal, target.address)
    return prepared


async def prepare(
    source: ServerConfig, target: ServerConfig, database: str, journal: Journal, *, overwrite: bool
) -> str:
    """Make `database` exist and be empty on the target; returns what was done, in words."""
    mine = await journal.find(Change.DATABASE, TARGET, database)
    replaced_before = mine is not None and DatabasePayload.of(mine).replaced
    try:
        async with target.connection() as tgt:
            replaced = False
            oid = await database_oid(tgt, database)
            if oid is not None:
                _refuse_held(
                    database, await holders(journal.store, target.address, database, oid, but=journal.migration_id)
                )
                what = await contents(target, database)
                ours = created_by_pgmig(mine, oid, what)
                if what.empty if ours else what.usable:
                    if ours and mine is not None and mine.mark is Mark.PLANNED:
                        made = DatabasePayload.of(mine)
                        made.oid, made.address = oid, target.address
                        await journal.done(mine, made)
                    if not ours:  # someone's empty database: what pgmig puts in is journaled, to be taken out
                        public = await _public_schema(target, database)
                        filled = ContentsPayload(oid, target.address, *public)
                        await journal.done(await journal.plan(Change.CONTENTS, TARGET, database, data=filled))
                    return (
                        f"target database {database} (created by this migration) is empty: reused"
                        if ours
                        else f"target database {database} exists and is empty"
                        + (f" but for {what.extensions} extension(s)" if what.extensions else "")
                        + ": used as it is (pgmig did not create it and will never drop it)"
                    )
                if not ours and not overwrite:
                    raise MigrationError(
                        f"target database {database} is not empty ({what.describe()}) and was not created by this "
                        "migration",
                        "pgmig never drops a database it did not create: migrate with --overwrite to drop and "
                        "recreate it, empty it yourself, or choose another target",
                        RetryChanges(overwrite=True),
                    )
                replaced = not ours or replaced_before
                data = DatabasePayload(
                    replaced,
                    oid,
                    target.address,
                    "--overwrite: the user chose to replace it"
                    if not ours
                    else "an earlier attempt of this migration created it",
                )
                entry = await journal.plan(Change.DATABASE, TARGET, database, data=data)
                await _drop(tgt, database, oid)
            else:
                data = DatabasePayload(replaced_before, address=target.address)
                entry = await journal.plan(Change.DATABASE, TARGET, database, data=data)
            await _create_like_source(source, tgt, database)
            data.oid = await database_oid(tgt, database)
            await journal.done(entry, data)
            return f"target database {database} {'recreated' if replaced or (mine and mine.live) else 'created'}"
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationError(
            f"cannot prepare target database {database}: {exc}",
            "the target role needs CREATEDB (or create the database yourself, empty)",
        ) from None
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"cannot prepare target database {database}: {exc}") from None


async def _public_schema(server: ServerConfig, database: str) -> tuple[str | None, list[str] | None]:
    """Who owns `public` and its grants, as they were (None: no `public`): emptying the database again puts
    them back."""
    async with server.connection(database) as conn:
        row = await conn.fetchrow(
            "SELECT pg_get_userbyid(nspowner) AS owner, nspacl::text[] AS acl FROM pg_namespace "
            "WHERE nspname = 'public'"
        )
    return (row["owner"], list(row["acl"] or [])) if row else (None, None)


async def empty_again(target: ServerConfig, entry: JournalEntry, journal: Journal) -> str:
    """Undo a Change.CONTENTS: a database that was empty before pgmig filled it is emptied again — its
    schemas and large objects dropped, `public` put back as it was — only while it is still that very
    database (same OID, same server). A schema holding an extension pgmig did not create stays, with
    that extension: only what else is in it is dropped. The extensions pgmig created are the
    Change.EXTENSIONS undo's, which runs next."""
    filled = ContentsPayload.of(entry)
    async with target.connection() as conn:
        oid = await database_oid(conn, entry.database)
    if oid is None or oid != filled.oid or filled.address != target.address:
        await journal.undone(entry)
        return "" if oid is None else f"{entry.database} is no longer the database pgmig filled: left in place"
    made = await journal.find(Change.EXTENSIONS, TARGET, entry.database)
    async with target.connection(entry.database) as conn:
        theirs = await extensions.kept(conn, ExtensionsPayload.of(made) if made is not None and made.live else None)
        keep = {
            r["nspname"]
            for r in await conn.fetch(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                "WHERE e.extname = ANY($1::text[])",
                theirs,
            )
        }
        for schema in await conn.fetch(
            "SELECT nspname FROM pg_namespace n WHERE "
            + _USER_NAMESPACE
            + " AND "
            + _NOT_EXTENSION_MEMBER.format(cls="'pg_namespace'", oid="n.oid")
            + " ORDER BY nspname"
        ):
            if schema["nspname"] in keep:
                await _clear_schema(conn, schema["nspname"])
            else:
                await conn.execute(f"DROP SCHEMA IF EXISTS {ident(schema['nspname'])} CASCADE")
        await conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
        if (owner := filled.public_owner) is not None:
            if "public" in keep:
                await conn.execute(f"ALTER SCHEMA public OWNER TO {ident(owner)}")
                for grantee in await conn.fetch(  # regrole's text is the name already quoted as SQL needs it
                    "SELECT DISTINCT grantee::regrole::text AS name FROM pg_namespace, aclexplode(nspacl) "
                    "WHERE nspname = 'public' AND grantee <> 0 AND grantee <> nspowner"
                ):
                    await conn.execute(f"REVOKE ALL ON SCHEMA public FROM {grantee['name']}")
            else:
                await conn.execute(f"CREATE SCHEMA public AUTHORIZATION {ident(owner)}")
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            for item in filled.public_acl or []:
                grantee, rights = item.split("=", 1)[0], item.split("=", 1)[1].split("/", 1)[0]
                privileges = [p for letter, p in (("U", "USAGE"), ("C", "CREATE")) if letter in rights]
                if privileges:
                    who = "PUBLIC" if grantee == "" else ident(grantee.strip('"'))
                    await conn.execute(f"GRANT {', '.join(privileges)} ON SCHEMA public TO {who}")
    await journal.undone(entry)
    return f"{entry.database} emptied again, as it was before pgmig filled it"


_RELATION_KINDS = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "f": "FOREIGN TABLE",
    "c": "TYPE",
}


async def _clear_schema(conn: asyncpg.Connection, schema: str) -> None:
    """Drop the relations, routines and types in `schema` that no extension owns; the schema stays."""
    namespace = "(SELECT oid FROM pg_namespace WHERE nspname = $1)"
    relations = await conn.fetch(
        "SELECT c.relname, c.relkind::text AS relkind FROM pg_class c WHERE c.relnamespace = "
        + namespace
        + " AND c.relkind IN ('r','p','v','m','S','f','c') AND "
        + _NOT_EXTENSION_MEMBER.format(cls="'pg_class'", oid="c.oid")
        + " ORDER BY c.oid",
        schema,
    )
    for rel in relations:
        kind = _RELATION_KINDS[rel["relkind"]]
        await conn.execute(f"DROP {kind} IF EXISTS {ident(schema)}.{ident(rel['relname'])} CASCADE")
    routines = await conn.fetch(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args FROM pg_proc p WHERE p.pronamespace = "
        + namespace
        + " AND "
        + _NOT_EXTENSION_MEMBER.format(cls="'pg_proc'", oid="p.oid")
        + " ORDER BY p.oid",
        schema,
    )
    for fn in routines:
        await conn.execute(f"DROP ROUTINE IF EXISTS {ident(schema)}.{ident(fn['proname'])}({fn['args']}) CASCADE")
    types = await conn.fetch(
        "SELECT t.typname FROM pg_type t WHERE t.typnamespace = "
        + namespace
        + " AND t.typrelid = 0 AND t.typelem = 0 AND "
        + _NOT_EXTENSION_MEMBER.format(cls="'pg_type'", oid="t.oid")
        + " ORDER BY t.oid",
        schema,
    )
    for typ in types:
        await conn.execute(f"DROP TYPE IF EXISTS {ident(schema)}.{ident(typ['typname'])} CASCADE")


async def drop_extensions(target: ServerConfig, entry: JournalEntry, journal: Journal) -> str:
    """Undo a Change.EXTENSIONS: drop the extensions pgmig created, never with CASCADE (one something
    depends on stays, and the outcome says what), only while the database is still the very one they were
    created in (same OID, same server) and no other migration holds it."""
    made = ExtensionsPayload.of(entry)
    async with target.connection() as conn:
        oid = await database_oid(conn, entry.database)
    if oid is None:
        await journal.undone(entry)  # the database is gone, its extensions with it
        return ""
    if oid != made.oid or made.address != target.address:
        await journal.undone(entry)
        return f"{entry.database} is no longer the database pgmig created extensions in: left in place"
    _refuse_held(
        entry.database, await holders(journal.store, target.address, entry.database, oid, but=journal.migration_id)
    )
    async with target.connection(entry.database) as conn:
        dropped, left = await extensions.drop_created(conn, made)
    await journal.undone(entry, made)
    said = [f"dropped extension(s) {', '.join(dropped)} in {entry.database}"] if dropped else []
    if left:
        said.append(f"left extension(s) {', '.join(left)} in {entry.database}: something depends on them")
    return "; ".join(said)


async def _drop(conn: asyncpg.Connection, database: str, oid: int) -> None:
    """DROP DATABASE … WITH (FORCE) of the database whose identity was checked (`oid`): refused when the
    name now stands for another one. A subscription inside (holding a slot on some source) is not
    pgmig's to remove here: pgmig's own are dropped from the journal before their database."""
    db = await database_oid(conn, database)
    if db != oid:
        raise MigrationError(
            f"target database {database} was replaced by someone else while pgmig looked at it: left in place",
            "look at who re-created it, then retry",
        )
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
    """Undo a journaled CREATE DATABASE: drop it only if it is provably the one pgmig created (same OID,
    same server) and no other migration released or holds it."""
    async with target.connection() as conn:
        oid = await database_oid(conn, entry.database)
        if oid is None:
            await journal.undone(entry)
            return ""
        made = DatabasePayload.of(entry)
        what = await contents(target, entry.database) if made.oid is None else None
        moved = made.address is not None and made.address != target.address
        if moved or not created_by_pgmig(entry, oid, what):
            await journal.undone(entry)  # the name now belongs to another database: not pgmig's to drop
            return f"{entry.database} is no longer the database {journal.migration_id} created: left in place"
        _refuse_held(
            entry.database, await holders(journal.store, target.address, entry.database, oid, but=journal.migration_id)
        )
        await _drop(conn, entry.database, oid)
        await journal.undone(entry)
        return f"dropped target database {entry.database}"
