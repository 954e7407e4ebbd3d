"""REPLICA IDENTITY FULL on source tables that have no usable identity (logical replication needs one to
send updates and deletes), and putting each table's identity back."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER
from migration_core.state.journal import SOURCE, Change, Journal, JournalEntry, Payload

NO_IDENTITY = (
    "SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relreplident::text AS identity FROM pg_class c "
    "JOIN pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND (c.relreplident = 'n' OR "
    "(c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) "
    "AND " + USER_SCHEMA_FILTER + " ORDER BY 1"
)
IDENTITY_WORDS = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}


@dataclass
class IdentityPayload(Payload):
    """The journal's record of REPLICA IDENTITY FULL set on source tables: each table's identity before."""

    tables: dict[str, str] = field(default_factory=dict)  # quoted table → relreplident (d, n, f or i)


async def set_identity_full(source: ServerConfig, database: str, journal: Journal) -> list[str]:
    """REPLICA IDENTITY FULL on every table with no usable identity (each one's previous identity in the
    journal first, so cancel and teardown put it back); returns them."""
    async with source.connection(database) as conn:
        rows = await conn.fetch(NO_IDENTITY)
        if not rows:
            return []
        before = IdentityPayload({r["name"]: r["identity"] for r in rows})
        async with journal.change(Change.REPLICA_IDENTITY, SOURCE, database, data=before):
            for r in rows:
                await conn.execute(f"ALTER TABLE {r['name']} REPLICA IDENTITY FULL")
        return [r["name"] for r in rows]


async def reset_identity(conn: asyncpg.Connection, entry: JournalEntry) -> list[str]:
    """Undo a Change.REPLICA_IDENTITY: each table back to the identity it had, unless someone changed it
    since pgmig set FULL."""
    reset = []
    for table, before in IdentityPayload.of(entry).tables.items():
        now = await conn.fetchval("SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)", table)
        if now == "f" and before != "f":
            await conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY {IDENTITY_WORDS.get(before, 'DEFAULT')}")
            reset.append(table)
    return reset
