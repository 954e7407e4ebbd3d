"""Finding and removing replication objects pgmig left on a server (slots retain WAL forever), and its own
schema with schema-change capture's event triggers (which would otherwise record every DDL statement forever).

Only this deployment's (`pgmig_<deployment>_…`, the state store's id): another pgmig using the same
source, with a state store of its own, keeps its objects. A schema is pgmig's only when its comment carries
pgmig's mark too (pg/sql.py's PGMIG_SCHEMA_MARK), and an event trigger only when its function lives in such a
schema; each is removed by the OID it was found with, and a schema only once nothing but pgmig's objects was
in it."""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from migration_core.changes import ddl, replication, watermarks
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import PGMIG_SCHEMA_MARK, ident
from migration_core.state.journal import Change, Journal

# pgmig's schemas of this deployment ($1: owned_pattern, $2: the mark)
SCHEMAS = (
    "SELECT oid, nspname FROM pg_namespace WHERE nspname LIKE $1 AND obj_description(oid, 'pg_namespace') = $2 "
    "ORDER BY 2"
)
# one of them, still that schema ($1 its OID, $2 its name, $3 the mark)
MARKED = "SELECT 1 FROM pg_namespace WHERE oid = $1 AND nspname = $2 AND obj_description(oid, 'pg_namespace') = $3"
# the event triggers of this deployment whose function is in one of those schemas
EVENT_TRIGGERS = (
    "SELECT e.oid, e.evtname FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid "
    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE e.evtname LIKE $1 AND n.nspname LIKE $1 "
    "AND obj_description(n.oid, 'pg_namespace') = $2 ORDER BY 2"
)
# what pgmig makes in its schema, on either side (changes/watermarks.py, changes/ddl.py)
OWN_TABLES = (ddl.CAPTURED, ddl.DECISIONS, watermarks.WATERMARKS, watermarks.DIGESTS)
OWN_FUNCTIONS = (f"{ddl.CAPTURE}()", f"{ddl.RECORD}(text, text, text)", f"{ddl.GATE}()", f"{watermarks.TRIGGER}()")


@dataclass
class Leftover:
    """One of this deployment's objects found on a server."""

    kind: str  # slot | publication | subscription | role | event trigger | schema
    name: str
    database: str
    active: bool = False
    oid: int | None = None  # an event trigger's or a schema's: removed only if still that object

    @property
    def migration_id(self) -> str | None:
        match = re.match(r"^pgmig_[0-9a-f]+_(?:rep_)?m(\d+)_", self.name)
        return f"mig-{match.group(1)}" if match else None

    def describe(self) -> str:
        return f"{self.kind} {self.name} in {self.database}" + (" (in use)" if self.active else "")


async def find(server: ServerConfig, deployment: str) -> list[Leftover]:
    owned = replication.owned_pattern(deployment)
    async with server.connection() as conn:
        found = [
            Leftover("slot", r["slot_name"], r["database"] or "", r["active"])
            for r in await conn.fetch(
                "SELECT slot_name, database, active FROM pg_replication_slots WHERE slot_name LIKE $1 ORDER BY 1", owned
            )
        ]
        found += [
            Leftover("role", r["rolname"], r["datname"] or "")
            for r in await conn.fetch(
                "SELECT r.rolname, (SELECT d.datname FROM pg_database d, aclexplode(d.datacl) a "
                "                   WHERE a.grantee = r.oid LIMIT 1) AS datname "
                "FROM pg_roles r WHERE r.rolname LIKE $1 ORDER BY 1",
                owned,
            )
        ]
        databases = [
            r["datname"]
            for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
            )
        ]
    for db in databases:
        async with server.connection(db) as conn:
            found += [
                Leftover("publication", r["pubname"], db)
                for r in await conn.fetch("SELECT pubname FROM pg_publication WHERE pubname LIKE $1 ORDER BY 1", owned)
            ]
            found += [
                Leftover("subscription", r["subname"], db, r["subenabled"])
                for r in await conn.fetch(
                    "SELECT subname, subenabled FROM pg_subscription WHERE subname LIKE $1 "
                    "AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1",
                    owned,
                )
            ]
            found += [
                Leftover("event trigger", r["evtname"], db, oid=r["oid"])
                for r in await conn.fetch(EVENT_TRIGGERS, owned, PGMIG_SCHEMA_MARK)
            ]
            found += [
                Leftover("schema", r["nspname"], db, oid=r["oid"])
                for r in await conn.fetch(SCHEMAS, owned, PGMIG_SCHEMA_MARK)
            ]
    return found


@dataclass
class CleanupReport:
    """`/pgmig cleanup SERVER`: what active migrations still use (and their state), what nobody does, and
    what was removed of the latter."""

    server: str
    kept: list[tuple[Leftover, str]]
    loose: list[Leftover]
    removed: list[str] | None = None  # None: only listed


def sort(server: str, found: list[Leftover], active: dict[str, str]) -> CleanupReport:
    """`active`: the state of every migration still running (its objects are kept)."""
    return CleanupReport(
        server,
        [(x, active[x.migration_id]) for x in found if x.migration_id in active],
        [x for x in found if x.migration_id not in active],
    )


KINDS = {
    "subscription": Change.SUBSCRIPTION,
    "slot": Change.SLOT,
    "publication": Change.PUBLICATION,
    "role": Change.REPLICATION_ROLE,
    "event trigger": Change.DDL_CAPTURE,
    "schema": Change.VERIFIER,
}


async def remove(server: ServerConfig, leftovers: list[Leftover], journal: Journal | None = None) -> list[str]:
    """Subscriptions first (they hold slots), then slots, publications and the roles they logged in as, then
    capture's event triggers and last pgmig's schema. With the journal of the migration that made them, each
    one removed is marked undone there (so status and the leftover alerts stop reporting it; a schema's
    entries are those of the same name and OID); objects no migration's journal knows are removed by name."""
    removed = []
    entries = await journal.entries() if journal is not None else []
    for item in sorted(leftovers, key=lambda x: list(KINDS).index(x.kind)):
        if item.kind in ("event trigger", "schema"):
            said = await _remove_own(server, item)
            removed += [said] if said else []
            for entry in entries if said and item.kind == "schema" else []:  # what was made in it, on this side
                mine = entry.name == item.name and entry.data.get("oid") == item.oid
                if journal is not None and entry.database == item.database and mine:
                    await journal.undone(entry)
            continue
        async with server.connection(item.database or None) as conn:
            if item.kind == "role":
                dropped = await replication.drop_replication_role(conn, item.name, item.database)
            else:
                drop = {
                    "subscription": replication.drop_subscription,
                    "slot": replication.drop_slot,
                    "publication": replication.drop_publication,
                }[item.kind]
                dropped = await drop(conn, item.name)
        for entry in entries:
            if journal is not None and entry.kind is KINDS[item.kind] and entry.name == item.name:
                await journal.undone(entry)
        if dropped:
            removed.append(item.describe())
    return removed


async def _remove_own(server: ServerConfig, item: Leftover) -> str:
    """Drop an event trigger, or pgmig's objects in its schema and then the schema, if each is still the object
    found (its OID, name and, for a schema, pgmig's mark); what was dropped, in words, or "" when nothing was
    (gone meanwhile, or something not pgmig's depends on pgmig's objects). A schema that also holds objects
    pgmig did not make is left, with them."""
    try:
        async with server.connection(item.database) as conn, conn.transaction():
            if item.kind == "event trigger":
                if not await conn.fetchval(
                    "SELECT 1 FROM pg_event_trigger WHERE oid = $1 AND evtname = $2", item.oid, item.name
                ):
                    return ""
                await conn.execute(f"DROP EVENT TRIGGER {ident(item.name)}")
                return item.describe()
            if not await conn.fetchval(MARKED, item.oid, item.name, PGMIG_SCHEMA_MARK):
                return ""
            s = ident(item.name)
            for table in OWN_TABLES:
                await conn.execute(f"DROP TABLE IF EXISTS {s}.{table}")
            for function in OWN_FUNCTIONS:
                await conn.execute(f"DROP FUNCTION IF EXISTS {s}.{function}")
            left = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = $1", item.oid)
            left += await conn.fetchval("SELECT count(*) FROM pg_proc WHERE pronamespace = $1", item.oid)
            if left:
                return f"pgmig's tables and functions in {item.describe()} (the schema holds others: left)"
            await conn.execute(f"DROP SCHEMA {s}")
            return item.describe()
    except asyncpg.DependentObjectsStillExistError:  # rolled back: nothing is dropped
        return ""
