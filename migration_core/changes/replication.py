"""Native logical replication: publication and slot on the source, subscription on the target.

The slot is created over a replication connection with an exported snapshot, held open by a psql
walsender session while the tables are copied under that snapshot; the subscription then attaches to
the slot without copying, so changes stream from exactly the snapshot: no gap, no duplicates.

The subscription logs in to the source as a role made for it alone (`replication_role`): LOGIN
REPLICATION, CONNECT on its one database, a random password nobody else knows, dropped when the
migration ends. So the target's catalog, its server log and pg_stat_statements never see the operator's
own password, and what they do see stops working at cutover.

That password is still readable on the target, so the login must be able to do as little as possible.
REPLICATION cannot go: every walsender checks it, logical ones included, on every version (InitPostgres:
`am_walsender && !has_rolreplication` is FATAL; "Logical Replication – Security" in the manual), and no
grant is narrower. What REPLICATION adds beyond logical decoding is physical replication (pg_basebackup,
pg_receivewal: a copy of every database), and only pg_hba.conf can refuse that: physical connections
match its `replication` keyword, logical ones the database's name. pgmig does not edit a customer's
pg_hba.conf (a mistake there keeps the server from starting); the DBA adds two lines once, naming the
group LOGIN_GROUP, which every login joins, and the pre-flight checks they are in effect
(`login_plan`). Limits: a logical connection may still run the replication protocol's BASE_BACKUP
itself, which no server setting forbids; the login's replication commands are logged on the source,
and pinning the group to the target's address in pg_hba.conf makes the password useless elsewhere.

Every object is named `pgmig_<deployment>_…` (the deployment id is the state store's), which is how
`/pgmig cleanup` recognises its own and never another pgmig's.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from migration_core.observe import waits
from migration_core.observe.progress import DatabaseProgress
from migration_core.pg import secrets
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident, literal
from migration_core.pg.tools import PRIVATE, connection_env, conninfo, summarize, terminate
from migration_core.state.errors import MigrationError

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


LOGIN_GROUP = "pgmig_subscribers"  # named by the DBA's pg_hba.conf lines; the DBA's role, never created or dropped
LOGIN_CONNECTIONS = 4  # the apply worker, one reconnecting while its old walsender ends, and a spare


async def create_replication_role(source: asyncpg.Connection, name: str, database: str) -> str:
    """The role one subscription logs in as, with a fresh random password (returned, never stored): LOGIN
    REPLICATION (every walsender needs it), an explicit CONNECT on its database (which the cutover's fence
    leaves it), and LOGIN_CONNECTIONS sessions at most (PostgreSQL 16+ counts walsenders in that too).
    It joins LOGIN_GROUP when the DBA made it (so their pg_hba.conf lines refuse it physical replication)
    and, when pgmig may set it, logs every replication command it runs. DROP ROLE takes all of it along."""
    password = pysecrets.token_urlsafe(32)
    secrets.register(password)
    exists = await source.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    verb = "ALTER" if exists else "CREATE"
    await source.execute(
        f"{verb} ROLE {ident(name)} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE "
        f"NOINHERIT CONNECTION LIMIT {LOGIN_CONNECTIONS} PASSWORD {literal(password)}"
    )
    await source.execute(f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(name)}")
    if await source.fetchval(_MAY_ADD_TO_GROUP, LOGIN_GROUP):
        await source.execute(f"GRANT {ident(LOGIN_GROUP)} TO {ident(name)}")
    if await source.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        await source.execute(f"ALTER ROLE {ident(name)} SET log_replication_commands = on")
    return password


_MAY_ADD_TO_GROUP = "SELECT pg_has_role(current_user, oid, 'USAGE WITH ADMIN OPTION') FROM pg_roles WHERE rolname = $1"


def login_hba_lines() -> list[str]:
    """The pg_hba.conf lines (at its top) that refuse every subscription login a physical replication
    connection and nothing else. `+` marks a group only when unquoted, so the group's name needs no quotes."""
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", LOGIN_GROUP)
    return [f"local  replication  +{LOGIN_GROUP}  reject", f"host  replication  +{LOGIN_GROUP}  all  reject"]


# Methods a stolen password gets through (trust needs none); peer, ident, cert, gss, sspi do not take it.
PASSWORD_METHODS = frozenset({"trust", "password", "md5", "scram-sha-256", "ldap", "radius", "pam", "bsd"})


@dataclass
class HbaRule:
    """One line of pg_hba_file_rules."""

    line: int
    type: str
    databases: list[str]
    users: list[str]
    address: str | None
    netmask: str | None
    method: str

    def describe(self) -> str:
        where = self.address or ""
        if self.address and self.netmask:
            try:
                where = str(ipaddress.ip_network(f"{self.address}/{self.netmask}", strict=False))
            except ValueError:
                where = f"{self.address} {self.netmask}"
        fields = [self.type, ",".join(self.databases), ",".join(self.users), where, self.method]
        return f"line {self.line}: `{' '.join(f for f in fields if f)}`"


def _user_matches(users: list[str], role: str, groups: set[str]) -> bool:
    for user in users:
        if user in ("all", role) or (user.startswith("+") and user[1:] in groups):
            return True
        if user.startswith("/"):  # PostgreSQL 16+: a regular expression
            try:
                if re.search(user[1:], role):
                    return True
            except re.error:
                return True  # cannot tell: assume it matches
    return False


def physical_opening(rules: list[HbaRule], role: str, groups: set[str]) -> HbaRule | None:
    """The pg_hba.conf line that would take `role`'s password (the role a member of `groups`) for a physical
    replication connection; None when none would. Rules in file order; the first match decides, and only
    a line for every address (`local`, or `host … all`) decides for every connection of its kind. Network
    lines first: the password leaks on the target, far from the source's Unix socket."""
    for local in (False, True):
        for rule in rules:
            if (rule.type == "local") != local or "replication" not in rule.databases:
                continue
            if not _user_matches(rule.users, role, groups):
                continue
            if rule.method in PASSWORD_METHODS:
                return rule
            if local or (rule.type == "host" and rule.address == "all"):
                break
    return None


@dataclass
class LoginPlan:
    """What each subscription's login on the source will be, in words, for the pre-flight."""

    refused: bool | None  # physical replication refused by pg_hba.conf; None: cannot tell
    detail: str
    fix: str = ""


async def login_plan(source: asyncpg.Connection, databases: list[str]) -> LoginPlan:
    """Read what create_replication_role would make of a login here, and whether pg_hba.conf (as loaded)
    would let it make a physical replication connection."""
    me = await source.fetchrow("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")
    group = await source.fetchval(_MAY_ADD_TO_GROUP, LOGIN_GROUP)  # None: no such role; False: not pgmig's to grant
    public = [
        r["datname"]
        for r in await source.fetch(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
            "AND NOT datname = ANY($1::text[]) AND has_database_privilege('public', oid, 'CONNECT') ORDER BY 1",
            databases,
        )
    ]
    connect = f"CONNECT on {', '.join(databases) or '-'}"
    if public:
        more = f" and {len(public) - 5} more" if len(public) > 5 else ""
        connect += f" and through PUBLIC on {', '.join(public[:5])}{more}"
    said = [f"{PREFIX}…_rep_… (one per database) LOGIN REPLICATION", connect]
    said.append(f"at most {LOGIN_CONNECTIONS} sessions, dropped when the migration ends")
    if me["rolsuper"]:
        said.append("its replication commands logged")
    if group:
        said.append(f"member of {LOGIN_GROUP}")
    detail = ", ".join(said)
    lines = " and ".join(f"`{line}`" for line in login_hba_lines())
    add_lines = f"put {lines} at the top of pg_hba.conf, then SELECT pg_reload_conf()"
    if group is None:
        fix = f"as a superuser on the source: CREATE ROLE {ident(LOGIN_GROUP)} NOLOGIN; and {add_lines}"
    elif not group:
        grant = f"GRANT {ident(LOGIN_GROUP)} TO {ident(me['rolname'])} WITH ADMIN OPTION"
        fix = f"{grant}; and, if not there yet, {add_lines}"
    else:
        fix = add_lines
    readable = await source.fetchval(  # asked first: the source's log is spared a permission error
        "SELECT has_table_privilege('pg_hba_file_rules', 'SELECT') "
        "AND has_function_privilege('pg_hba_file_rules()', 'EXECUTE')"
    )
    rows = await source.fetch("SELECT * FROM pg_hba_file_rules") if readable else None
    if rows is None:
        return LoginPlan(
            None,
            f"{detail}; pg_hba_file_rules is for superusers, so whether it could take a "
            "base backup of the whole cluster (pg_basebackup) is unknown",
            fix,
        )
    broken = [f"line {r['line_number']}: {r['error']}" for r in rows if r["error"]]
    if broken:
        return LoginPlan(
            None,
            f"{detail}; pg_hba.conf has errors ({'; '.join(broken[:3])}), so the server "
            "keeps the rules it loaded before, which cannot be read",
            "correct pg_hba.conf; " + fix,
        )
    rules = [
        HbaRule(
            r["line_number"],
            r["type"],
            r["database"] or [],
            r["user_name"] or [],
            r["address"],
            r["netmask"],
            r["auth_method"],
        )
        for r in sorted(rows, key=lambda r: (r.get("rule_number") or 0, r["line_number"]))
    ]
    opening = physical_opening(rules, f"{PREFIX}000000_rep_m0_00000000", {LOGIN_GROUP} if group else set())
    if opening is not None:
        return LoginPlan(
            False,
            f"{detail}; pg_hba.conf {opening.describe()} lets it take a base backup of "
            "the whole cluster (pg_basebackup) with the password the target holds",
            fix,
        )
    if await _hba_changed_since_loaded(source):
        return LoginPlan(
            None,
            f"{detail}; pg_hba.conf changed since the server loaded it, so what it enforces may differ",
            "SELECT pg_reload_conf() on the source",
        )
    return LoginPlan(True, f"{detail}; physical replication (pg_basebackup, pg_receivewal) refused by pg_hba.conf")


async def _hba_changed_since_loaded(source: asyncpg.Connection) -> bool:
    """pg_hba_file_rules reads the file, the server enforces what it loaded: edited without a reload?"""
    try:
        return bool(
            await source.fetchval(
                "SELECT (pg_stat_file(current_setting('hba_file'))).modification > pg_conf_load_time()"
            )
        )
    except asyncpg.PostgresError:
        return False


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
