"""Native logical replication: publication and slot on the source, subscription on the target.

The slot is created over a replication connection with an exported snapshot, held open by a psql
walsender session while the tables are copied under that snapshot; the subscription then attaches to
the slot without copying, so changes stream from exactly the snapshot: no gap, no duplicates.

The subscription logs in to the source as a role made for it alone (`replication_role`): LOGIN
REPLICATION, CONNECT on its one database, a random password nobody else knows, dropped when the
migration ends. So the target's catalog, its server log and pg_stat_statements never see the operator's
own password, and what they do see stops working at cutover.

Every object is named `pgmig_<deployment>_…` (the deployment id is the state store's), which is how
`/pgmig cleanup` recognises its own and never another pgmig's.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from migration_core import secrets, waits
from migration_core.errors import MigrationError
from migration_core.progress import DatabaseProgress
from migration_core.servers import ServerConfig
from migration_core.sql import USER_SCHEMA_FILTER, ident, literal
from migration_core.tools import PRIVATE, connection_env, conninfo, summarize, terminate

PREFIX = "pgmig_"


def _short(migration_id: str) -> str:
    return "m" + migration_id.split("-", 1)[-1]


def object_name(deployment: str, migration_id: str, database: str) -> str:
    """One name for the slot, publication and subscription of a migration's database (≤ 63 chars)."""
    clean = re.sub(r"[^a-z0-9_]", "_", database.lower())[:24]
    digest = hashlib.sha256(database.encode()).hexdigest()[:6]
    return f"{PREFIX}{deployment}_{_short(migration_id)}_{clean}_{digest}"


def role_name(deployment: str, migration_id: str, database: str) -> str:
    """The source role one database's subscription logs in as."""
    return f"{PREFIX}{deployment}_rep_{_short(migration_id)}_{hashlib.sha256(database.encode()).hexdigest()[:8]}"


def owned_pattern(deployment: str) -> str:
    """A LIKE pattern matching every object name of this deployment (and no other pgmig's)."""
    return rf"{PREFIX.replace('_', chr(92) + '_')}{deployment}\_%"


PUBLISHED = (
    "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE (c.relkind = 'p' OR (c.relkind = 'r' AND NOT c.relispartition)) "
    "AND c.relpersistence = 'p' AND " + USER_SCHEMA_FILTER + " ORDER BY 1"
)


async def create_publication(conn: asyncpg.Connection, name: str) -> int:
    """Publish every permanent user table (partitioned ones through their root); returns how many."""
    tables = [r["name"] for r in await conn.fetch(PUBLISHED)]
    await conn.execute(f"DROP PUBLICATION IF EXISTS {ident(name)}")
    if tables:
        await conn.execute(
            f"CREATE PUBLICATION {ident(name)} FOR TABLE {', '.join(tables)} WITH (publish_via_partition_root = true)"
        )
    else:
        await conn.execute(f"CREATE PUBLICATION {ident(name)} WITH (publish_via_partition_root = true)")
    return len(tables)


@dataclass
class SlotSession:
    """A live walsender session that created the slot and holds its exported snapshot."""

    process: asyncio.subprocess.Process
    slot: str
    consistent_lsn: str
    snapshot: str

    async def release(self) -> None:
        """End the session: the snapshot expires, the slot stays and keeps the changes since it."""
        if self.process.stdin and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except asyncio.TimeoutError:
            await terminate(self.process)


async def create_slot(
    source: ServerConfig,
    database: str,
    slot: str,
    psql: Path,
    server_version: int,
    progress: DatabaseProgress | None = None,
) -> SlotSession:
    """Create the slot over a walsender session that stays open, holding the exported snapshot.

    A new slot waits for every transaction already running on the source to end, however long that
    takes (a forgotten `idle in transaction` session: for ever). So there is no time limit: while it
    waits, `progress` names the sessions it waits for, which a DBA can end."""
    syntax = "(SNAPSHOT 'export')" if server_version >= 150000 else "EXPORT_SNAPSHOT"
    proc = await asyncio.create_subprocess_exec(
        str(psql),
        "-X",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        conninfo(dbname=database, replication="database", application_name=f"pgmig {slot}"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=connection_env(source, database),
        umask=PRIVATE,
        start_new_session=True,  # as tools.py: a terminal's Ctrl-C is pgmig's, not its walsender session's
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(f"CREATE_REPLICATION_SLOT {ident(slot)} LOGICAL pgoutput {syntax};\n".encode())
    await proc.stdin.drain()
    try:
        async with waits.watched(source, database, _walsender(f"pgmig {slot}"), progress, "creating the slot"):
            line = await proc.stdout.readline()
    except BaseException:
        await terminate(proc)
        raise
    parts = line.decode().strip().split("|")
    if len(parts) < 3:
        await terminate(proc)
        error = summarize((await proc.stderr.read()).decode(errors="replace"))
        raise MigrationError(
            f"cannot create replication slot {slot} on the source: {error}",
            "check free replication slots and the REPLICATION privilege (/pgmig check)",
        )
    return SlotSession(proc, parts[0], parts[1], parts[2])


def _walsender(application: str) -> waits.Finder:
    """Finds the walsender session of the psql that goes by `application`."""

    async def find(conn: asyncpg.Connection) -> list[int]:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = $1",
            application,
        )
        return [r["pid"] for r in rows]

    return find


async def create_replication_role(source: asyncpg.Connection, name: str, database: str) -> str:
    """The role one subscription logs in as, with a fresh random password (returned, never stored): LOGIN
    REPLICATION and an explicit CONNECT on its database (which the cutover's fence leaves it)."""
    password = pysecrets.token_urlsafe(32)
    secrets.register(password)
    exists = await source.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    verb = "ALTER" if exists else "CREATE"
    await source.execute(
        f"{verb} ROLE {ident(name)} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE "
        f"NOINHERIT PASSWORD {literal(password)}"
    )
    await source.execute(f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(name)}")
    return password


async def drop_replication_role(source: asyncpg.Connection, name: str, database: str) -> bool:
    if not await source.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
        return False
    for pid in [r["pid"] for r in await source.fetch("SELECT pid FROM pg_stat_activity WHERE usename = $1", name)]:
        await source.execute("SELECT pg_terminate_backend($1)", pid)
    if await source.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        await source.execute(f"REVOKE CONNECT ON DATABASE {ident(database)} FROM {ident(name)}")
    await source.execute(f"DROP ROLE {ident(name)}")
    return True


def subscription_conninfo(source: ServerConfig, database: str, user: str, password: str) -> str:
    """How the target reaches the source, as the subscription's own role. It holds that role's password:
    never log or show it."""
    return conninfo(
        host=source.replication_host or source.host,
        port=str(source.replication_port or source.port),
        user=user,
        password=password,
        dbname=database,
        sslmode=source.sslmode,
        application_name="pgmig",
    )


async def create_subscription(target: asyncpg.Connection, name: str, connection: str, publication: str) -> None:
    """Attach to the existing slot without copying: the tables already hold the snapshot's rows.

    From PostgreSQL 16 changes are applied as each table's owner unless run_as_owner is set; a migrated
    schema often has owners without rights on every partition, so pgmig's own role applies them. A
    superuser target keeps the statement (which holds a password) out of its server log and
    pg_stat_statements; other roles cannot, which is why that password is the subscription's own.
    """
    version = int(await target.fetchval("SHOW server_version_num"))
    extra = ", run_as_owner = true" if version >= 160000 else ""
    hushed = {}
    if await target.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        hushed = {"log_statement": "none", "log_min_error_statement": "panic", "log_min_duration_statement": "-1"}
        if await target.fetchval("SELECT 1 FROM pg_settings WHERE name = 'pg_stat_statements.track'"):
            hushed["pg_stat_statements.track"] = "none"
    for setting, value in hushed.items():
        await target.execute(f"SET {setting} = {literal(value)}")
    try:
        await target.execute(
            f"CREATE SUBSCRIPTION {ident(name)} CONNECTION {literal(connection)} PUBLICATION {ident(publication)} "
            f"WITH (create_slot = false, slot_name = {literal(name)}, copy_data = false, enabled = true{extra})"
        )
    finally:
        for setting in hushed:
            await target.execute(f"RESET {setting}")


async def drop_subscription(target: asyncpg.Connection, name: str) -> bool:
    """Detach from the slot first, so dropping never reaches out to the source (which may be gone)."""
    if not await target.fetchval("SELECT 1 FROM pg_subscription WHERE subname = $1", name):
        return False
    await target.execute(f"ALTER SUBSCRIPTION {ident(name)} DISABLE")
    await target.execute(f"ALTER SUBSCRIPTION {ident(name)} SET (slot_name = NONE)")
    await target.execute(f"DROP SUBSCRIPTION {ident(name)}")
    return True


async def drop_slot(source: asyncpg.Connection, name: str) -> bool:
    for _ in range(50):  # a walsender may take a moment to let go after the subscription is gone
        row = await source.fetchrow("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", name)
        if row is None:
            return False
        if row["active_pid"] is None:
            await source.execute("SELECT pg_drop_replication_slot($1)", name)
            return True
        await source.execute("SELECT pg_terminate_backend($1)", row["active_pid"])
        await asyncio.sleep(0.1)
    raise MigrationError(f"replication slot {name} stays in use", "stop whatever streams from it, then cleanup")


async def drop_publication(source: asyncpg.Connection, name: str) -> bool:
    if not await source.fetchval("SELECT 1 FROM pg_publication WHERE pubname = $1", name):
        return False
    await source.execute(f"DROP PUBLICATION {ident(name)}")
    return True


@dataclass
class Lag:
    """How far the target is behind, and what the slot holds back on the source."""

    bytes: int | None = None
    seconds: float | None = None
    retained_bytes: int | None = None
    streaming: bool = False


async def lag(source: asyncpg.Connection, name: str) -> Lag:
    row = await source.fetchrow(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.replay_lsn, s.confirmed_flush_lsn))::bigint AS behind, "
        "extract(epoch FROM r.replay_lag)::float8 AS seconds, r.pid IS NOT NULL AS streaming "
        "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
        "WHERE s.slot_name = $1",
        name,
    )
    if row is None:
        return Lag()
    return Lag(
        max(0, row["behind"] or 0),
        row["seconds"] or 0.0 if row["streaming"] else None,
        row["retained"],
        row["streaming"],
    )
