"""The cutover's fence on a source database, and its lifting.

Fencing sets `default_transaction_read_only` for new sessions, revokes CONNECT from everyone but pgmig's
role (and the subscription's, which must catch up), then after a grace period ends every remaining client
session. Superusers can still connect and override: they are only softly fenced. The journal holds the
setting before, every role revoked and pgmig's own grant *before* each of them is changed, so any later
moment can lift the fence exactly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg

from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import ident
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, Change, Journal, JournalEntry, Payload

CONNECT_GRANTEES = (
    "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee "
    "FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a "
    "WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT' ORDER BY 1"
)
READ_ONLY_SETTING = (
    "SELECT split_part(cfg, '=', 2) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, "
    "unnest(s.setconfig) cfg WHERE d.datname = current_database() AND s.setrole = 0 "
    "AND cfg LIKE 'default_transaction_read_only=%'"
)
OTHER_CLIENTS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' AND application_name <> 'pgmig'"
)


@dataclass
class FencePayload(Payload):
    """The journal's record of a fence, each part saved before it is made."""

    read_only_before: str | None = None  # the database's default_transaction_read_only (None: not set)
    revoked: list[str] = field(default_factory=list)  # role names; "PUBLIC" for everyone
    granted_self: str = ""  # pgmig's role, when the fence granted it CONNECT
    ended_sessions: int = 0
    superusers: list[str] = field(default_factory=list)  # can still connect: softly fenced


@dataclass
class Fence:
    """What fencing changed on one source database, as the cutover reports it."""

    database: str
    read_only_before: str | None = None
    revoked_from: list[str] = field(default_factory=list)  # role names; "PUBLIC" for everyone
    ended_sessions: int = 0
    superusers: list[str] = field(default_factory=list)  # can still connect: softly fenced

    @classmethod
    def of(cls, entry: JournalEntry) -> "Fence":
        d = FencePayload.of(entry)
        return cls(entry.database, d.read_only_before, list(d.revoked), d.ended_sessions, list(d.superusers))


def _role(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else ident(name)


async def fence(source: ServerConfig, database: str, grace_seconds: float, journal: Journal) -> Fence:
    async with source.connection(database) as conn:
        await conn.execute("SET synchronous_commit = on")  # the fence is durable before any session is ended
        earlier = await journal.find(Change.FENCE, SOURCE, database)
        if earlier is not None and earlier.live:
            data = FencePayload.of(earlier)  # never lifted (pgmig died): its "before" is the truth, not today's
        else:
            data = FencePayload(read_only_before=await conn.fetchval(READ_ONLY_SETTING))
        entry = await journal.plan(Change.FENCE, SOURCE, database, data=data)
        me = await conn.fetchval("SELECT current_user")
        streaming = journal.role_name(database)  # the subscription's own role keeps CONNECT: it must catch up
        grantees = [r["grantee"] for r in await conn.fetch(CONNECT_GRANTEES) if r["grantee"] != streaming]
        await conn.execute(f"ALTER DATABASE {ident(database)} SET default_transaction_read_only = on")
        if me not in grantees and not data.granted_self:
            data.granted_self = me
            await journal.note(entry, data)
            await conn.execute(f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(me)}")
        for name in grantees:
            if name == me:
                continue
            if name not in data.revoked:
                data.revoked.append(name)
                await journal.note(entry, data)
            await conn.execute(f"REVOKE CONNECT ON DATABASE {ident(database)} FROM {_role(name)}")
        data.superusers = [
            r["rolname"]
            for r in await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE rolsuper AND rolcanlogin AND rolname <> $1 ORDER BY 1", me
            )
        ]
        await journal.note(entry, data)
        await asyncio.sleep(grace_seconds)  # sessions may finish what they are doing
        data.ended_sessions += await end_sessions(conn, database)
        await journal.done(entry, data)
        return Fence.of(entry)


async def end_sessions(conn: asyncpg.Connection, database: str) -> int:
    """End every application session on the database and wait until they are gone; returns how many."""
    pids = [r["pid"] for r in await conn.fetch(OTHER_CLIENTS)]
    for pid in pids:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    for _ in range(200):
        if not await conn.fetch(OTHER_CLIENTS):
            return len(pids)
        await asyncio.sleep(0.01)
    raise MigrationError(f"sessions on {database} would not end", "look at pg_stat_activity on the source")


async def unfence(conn: asyncpg.Connection, entry: JournalEntry) -> None:
    """Lift a fence exactly as it was laid: CONNECT back to every role it was revoked from, pgmig's own
    grant removed when the fence added it, default_transaction_read_only as it was before."""
    d, db = FencePayload.of(entry), ident(entry.database)
    for name in d.revoked:
        await conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {_role(name)}")
    if d.granted_self:
        await conn.execute(f"REVOKE CONNECT ON DATABASE {db} FROM {ident(d.granted_self)}")
    before = d.read_only_before
    if before is None:
        await conn.execute(f"ALTER DATABASE {db} RESET default_transaction_read_only")
    else:
        await conn.execute(
            f"ALTER DATABASE {db} SET default_transaction_read_only = {'on' if before in ('on', 'true') else 'off'}"
        )
