"""Finding and removing replication objects pgmig left on a server (slots retain WAL forever).

Only this deployment's (`pgmig_<deployment>_…`, the state store's id): another pgmig using the same
source, with a state store of its own, keeps its objects."""

from __future__ import annotations

import re
from dataclasses import dataclass

from migration_core.changes import replication
from migration_core.pg.servers import ServerConfig
from migration_core.state.journal import Change, Journal


@dataclass
class Leftover:
    """One of this deployment's replication objects found on a server."""

    kind: str  # slot | publication | subscription | role
    name: str
    database: str
    active: bool = False

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
}


async def remove(server: ServerConfig, leftovers: list[Leftover], journal: Journal | None = None) -> list[str]:
    """Subscriptions first (they hold slots), then slots, publications and the roles they logged in as.
    With the journal of the migration that made them, each one removed is marked undone there (so status
    and the leftover alerts stop reporting it); objects no migration's journal knows are removed by name."""
    removed = []
    entries = await journal.entries() if journal is not None else []
    for item in sorted(leftovers, key=lambda x: list(KINDS).index(x.kind)):
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
