"""Finding and removing replication objects pgmig left on a server (slots retain WAL forever)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from migration_core import replication
from migration_core.servers import ServerConfig

OWNED = r"pgmig\_%"


@dataclass
class Leftover:
    kind: str           # slot | publication | subscription
    name: str
    database: str
    active: bool = False

    @property
    def migration_id(self) -> str | None:
        match = re.match(r"^pgmig_mig_(\d+)_", self.name)
        return f"mig-{match.group(1)}" if match else None

    def describe(self) -> str:
        return f"{self.kind} {self.name} in {self.database}" + (" (in use)" if self.active else "")


async def find(server: ServerConfig) -> list[Leftover]:
    conn = await server.connect()
    try:
        found = [Leftover("slot", r["slot_name"], r["database"] or "", r["active"]) for r in await conn.fetch(
            "SELECT slot_name, database, active FROM pg_replication_slots WHERE slot_name LIKE $1 ORDER BY 1", OWNED)]
        databases = [r["datname"] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")]
    finally:
        await conn.close()
    for db in databases:
        conn = await server.connect(db)
        try:
            found += [Leftover("publication", r["pubname"], db) for r in await conn.fetch(
                "SELECT pubname FROM pg_publication WHERE pubname LIKE $1 ORDER BY 1", OWNED)]
            found += [Leftover("subscription", r["subname"], db, r["subenabled"]) for r in await conn.fetch(
                "SELECT subname, subenabled FROM pg_subscription WHERE subname LIKE $1 "
                "AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1", OWNED)]
        finally:
            await conn.close()
    return found


async def remove(server: ServerConfig, leftovers: list[Leftover]) -> list[str]:
    """Subscriptions first (they hold slots), then slots, then publications."""
    removed = []
    order = {"subscription": 0, "slot": 1, "publication": 2}
    for item in sorted(leftovers, key=lambda x: order[x.kind]):
        conn = await server.connect(item.database or None)
        try:
            drop = {"subscription": replication.drop_subscription, "slot": replication.drop_slot,
                    "publication": replication.drop_publication}[item.kind]
            if await drop(conn, item.name):
                removed.append(item.describe())
        finally:
            await conn.close()
    return removed
