"""Pre-flight checks: what must hold on the source and target before a migration can start.

The same report backs `/pgmig check` and, later, the refusal of `/pgmig migrate`: a finding with
status FAIL blocks, WARN is shown and the migration proceeds.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from dataclasses import dataclass, field
from enum import Enum

import asyncpg

from migration_core.changes import replication
from migration_core.changes.databases import Holder, contents
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER
from migration_core.state.models import Mode, RetryChanges

MIN_REPLICATION_SLOTS = 5  # Microsoft's guide for online migrations
MIN_WAL_SENDERS = 10
SKIPPED_BY_DEFAULT = {"postgres", "azure_maintenance", "azure_sys"}
ALWAYS_AVAILABLE = {"plpgsql"}
LISTED = 10  # how many object names a finding spells out before "and N more"
NEW_MIGRATION = "start a new migration"  # how the fix of a finding a retry cannot get past begins


def needs_new_migration(error: str) -> bool:
    """Whether a migration's failure is a pre-flight refusal a retry cannot get past (the database list)."""
    return error.startswith("preflight:") and f"fix: {NEW_MIGRATION}" in error


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass
class Finding:
    """One line of the report: what was checked, what was found, and how to fix it."""

    status: Status
    scope: str
    title: str  # what the check expects ("target database is empty")
    detail: str = ""
    fix: str = ""
    retry: RetryChanges = field(default_factory=RetryChanges)  # when the fix is a retry with other options
    failed: str = ""  # what was found instead, when the check did not pass ("target database shop is not empty")
    retryable: bool = True  # False: the fix is another database list, which a retry of the migration cannot take

    def __post_init__(self) -> None:
        if not self.failed:
            self.failed = FAILED_TITLES.get(self.title, "")

    @property
    def headline(self) -> str:
        """The title, or what was found instead when the check did not pass: a ❌ or ⚠️ line never states the
        expectation as if it held ("❌ target database is empty — … is not empty" contradicts itself)."""
        return self.failed if self.failed and self.status is not Status.OK else self.title

    @property
    def said(self) -> str:
        """The finding in one line, for a failure's error text."""
        if not self.detail:
            return self.headline
        return f"{self.headline}: {self.detail}" if self.headline != self.title else f"{self.title} ({self.detail})"


# How a check's title reads when it did not pass (titles state the expectation).
FAILED_TITLES = {
    "databases exist": "databases missing on the source",
    "databases to migrate": "no databases to migrate",
    "role can replicate": "role cannot replicate",
    "max_slot_wal_keep_size is set": "max_slot_wal_keep_size is unlimited",
    "role can create the subscription's own replication role": "role cannot create the subscription's own "
    "replication role",
    "role can read every table and sequence": "role cannot read every table and sequence",
    "extensions available on target": "extensions not available on target",
    "encoding and collation match": "encoding or collation differ",
    "target database can be created": "target database cannot be created",
    "source database is open for writes": "source database is fenced",
    "the target database is free": "the target database is held by another migration",
    "no other migration writes to the target database": "another migration writes to the target database",
    "every table has a primary key or replica identity": "tables without a primary key or replica identity",
    "inspection finished": "inspection did not finish",
    "target version ≥ source version": "target version older than the source's",
}


@dataclass
class PreflightRequest:
    source: ServerConfig
    target: ServerConfig
    databases: list[str] = field(default_factory=list)  # empty = every user database
    mode: Mode = Mode.ONLINE
    replica_identity_full: bool = False
    own_replication: bool = True  # pgmig's own subscription (not a managed service's): it needs its own role
    overwrite: bool = False  # a non-empty target database is to be replaced
    writers: dict[str, str] = field(default_factory=dict)  # target database → another active migration into it
    held: dict[str, Holder] = field(default_factory=dict)  # target database → the migration that holds it by identity
    fenced: dict[str, str] = field(default_factory=dict)  # source database → the cutover that fenced it, in words
    service_asks_overwrite: bool = False  # the flex service stops at an existing target database, even an empty one


@dataclass
class PreflightReport:
    source: str
    target: str
    mode: Mode
    databases: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.status is Status.FAIL]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status is Status.WARN]

    @property
    def retry(self) -> RetryChanges:
        """What a retry must change to get past every blocking finding whose fix is one."""
        return functools.reduce(operator.or_, (f.retry for f in self.blocking), RetryChanges())

    @property
    def retryable(self) -> bool:
        """Whether a retry of the migration can get past what blocks it (it keeps the database list)."""
        return all(f.retryable for f in self.blocking)

    def add(self, *findings: Finding) -> None:
        self.findings.extend(findings)


def listing(names: list[str]) -> str:
    """Spell out up to LISTED names, then say how many more there are."""
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def pretty_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def major_version(server_version_num: int) -> int:
    return server_version_num // 10000


async def run_preflight(req: PreflightRequest) -> PreflightReport:
    """Run every check; never raises for a server-side problem, it reports it."""
    report = PreflightReport(req.source.name, req.target.name, req.mode)
    src_conn, tgt_conn = await asyncio.gather(
        _try_connect(req.source, "source", report), _try_connect(req.target, "target", report)
    )
    try:
        await _inspect(req, report, src_conn, tgt_conn)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        report.add(
            Finding(
                Status.FAIL,
                "check",
                "inspection finished",
                f"a catalog query failed: {type(exc).__name__}: {exc}",
                "check the migration roles' privileges and that both servers stay up, then re-run",
            )
        )
    finally:
        for conn in (src_conn, tgt_conn):
            if conn is not None:
                await conn.close()
    return report


async def _inspect(
    req: PreflightRequest,
    report: PreflightReport,
    src_conn: asyncpg.Connection | None,
    tgt_conn: asyncpg.Connection | None,
) -> None:
    """Server-level facts first, then every chosen database concurrently (at most 4 at once)."""
    src_version = await _server_facts(src_conn, "source", report) if src_conn else None
    tgt_version = await _server_facts(tgt_conn, "target", report) if tgt_conn else None
    if src_version and tgt_version:
        report.add(_version_finding(src_version, tgt_version))
    if not src_conn:
        return
    report.databases = await _choose_databases(src_conn, req.databases, report)
    if req.mode is Mode.ONLINE:
        report.add(*await _replication_findings(src_conn, len(report.databases), req.own_replication))
        if tgt_conn and req.own_replication:
            report.add(await _apply_workers_finding(tgt_conn, len(report.databases)))
        if req.own_replication:
            report.add(await _login_finding(src_conn, report.databases))
    tgt_facts = await _TargetFacts.read(tgt_conn) if tgt_conn else None
    gate = asyncio.Semaphore(4)

    async def one(db: str) -> list[Finding]:
        async with gate:
            return await _database_findings(req, db, tgt_facts)

    for findings in await asyncio.gather(*(one(db) for db in report.databases)):
        report.add(*findings)


async def _try_connect(
    server: ServerConfig, role: str, report: PreflightReport, database: str | None = None
) -> asyncpg.Connection | None:
    try:
        return await server.connect(database)
    except ConnectionProblem as problem:
        report.add(
            Finding(
                Status.FAIL, role, f"cannot connect to {server.name} ({server.address})", problem.message, problem.fix
            )
        )
        return None


async def _server_facts(conn: asyncpg.Connection, role: str, report: PreflightReport) -> int:
    version_num = int(await conn.fetchval("SHOW server_version_num"))
    version = await conn.fetchval("SHOW server_version")
    report.add(Finding(Status.OK, role, "connected", f"PostgreSQL {version}"))
    return version_num


def _version_finding(src: int, tgt: int) -> Finding:
    s, t = major_version(src), major_version(tgt)
    if t < s:
        return Finding(
            Status.FAIL,
            "servers",
            "target version ≥ source version",
            f"target is PostgreSQL {t}, older than the source's {s}",
            f"use a target running PostgreSQL {s} or newer (flexible server offers 11–17)",
        )
    return Finding(Status.OK, "servers", "target version ≥ source version", f"source {s} → target {t}")


async def _choose_databases(conn: asyncpg.Connection, wanted: list[str], report: PreflightReport) -> list[str]:
    rows = await conn.fetch("SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname")
    present = [r["datname"] for r in rows]
    if wanted:
        missing = [d for d in wanted if d not in present]
        if missing:
            report.add(
                Finding(
                    Status.FAIL,
                    "source",
                    "databases exist",
                    listing(missing),
                    f"{NEW_MIGRATION} whose --db names databases on the source: {listing(present)}",
                    retryable=False,
                )
            )
        return [d for d in wanted if d in present]
    chosen = [d for d in present if d not in SKIPPED_BY_DEFAULT]
    if not chosen:
        report.add(
            Finding(
                Status.FAIL,
                "source",
                "databases to migrate",
                "the source has no user databases",
                f"{NEW_MIGRATION} that names the databases with --db a,b",
                retryable=False,
            )
        )
    return chosen


async def _replication_findings(conn: asyncpg.Connection, n_databases: int, own_role: bool) -> list[Finding]:
    settings = {
        r["name"]: r["setting"]
        for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["wal_level", "max_replication_slots", "max_wal_senders", "max_slot_wal_keep_size"],
        )
    }
    used_slots = await conn.fetchval("SELECT count(*) FROM pg_replication_slots")
    used_senders = await conn.fetchval("SELECT count(*) FROM pg_stat_replication")
    role = await conn.fetchrow(
        "SELECT rolname, rolsuper, rolreplication, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    )
    version = int(await conn.fetchval("SHOW server_version_num"))
    restart = "then restart PostgreSQL (these settings only change at start)"
    out: list[Finding] = []
    wal_level = settings.get("wal_level", "?")
    out.append(
        Finding(Status.OK, "source", "wal_level = logical")
        if wal_level == "logical"
        else Finding(
            Status.FAIL,
            "source",
            "wal_level = logical",
            f"wal_level is '{wal_level}'",
            f"set `wal_level = logical` in postgresql.conf, {restart}",
        )
    )
    slots = int(settings.get("max_replication_slots", 0))
    senders = int(settings.get("max_wal_senders", 0))
    for name, value, minimum in (
        ("max_replication_slots", slots, MIN_REPLICATION_SLOTS),
        ("max_wal_senders", senders, MIN_WAL_SENDERS),
    ):
        title = f"{name} ≥ {minimum}"
        out.append(
            Finding(Status.OK, "source", title, f"{name} = {value}")
            if value >= minimum
            else Finding(
                Status.FAIL,
                "source",
                title,
                f"{name} is {value}",
                f"set `{name} = {minimum}` (or more) in postgresql.conf, {restart}",
            )
        )
    free_slots, free_senders = slots - used_slots, senders - used_senders
    title = f"free replication slots for {n_databases} database(s)"
    if free_slots >= n_databases and free_senders >= n_databases:
        out.append(Finding(Status.OK, "source", title, f"{free_slots} slot(s) and {free_senders} WAL sender(s) free"))
    else:
        out.append(
            Finding(
                Status.FAIL,
                "source",
                title,
                f"{free_slots} slot(s) and {free_senders} WAL sender(s) free, {n_databases} needed (one per database)",
                "drop unused slots (`SELECT pg_drop_replication_slot(name)`; see `pg_replication_slots`) "
                f"or raise max_replication_slots / max_wal_senders, {restart}",
            )
        )
    keep = settings.get("max_slot_wal_keep_size")  # PostgreSQL 13+
    if keep is not None:
        out.append(
            Finding(Status.OK, "source", "max_slot_wal_keep_size is set", f"{keep} MB")
            if int(keep) >= 0
            else Finding(
                Status.WARN,
                "source",
                "max_slot_wal_keep_size is set",
                "it is -1 (unlimited): a slot that stops being read keeps WAL until the source's disk fills",
                "set max_slot_wal_keep_size (e.g. to a share of the WAL volume's free space; a reload applies it)",
            )
        )
    user = role["rolname"]
    if role["rolsuper"] or role["rolreplication"]:
        why = "superuser" if role["rolsuper"] else "REPLICATION"
        out.append(Finding(Status.OK, "source", "role can replicate", f"'{user}' has {why}"))
    else:
        out.append(
            Finding(
                Status.FAIL,
                "source",
                "role can replicate",
                f"'{user}' is neither superuser nor REPLICATION",
                f'run as a superuser: ALTER ROLE "{user}" WITH REPLICATION;',
            )
        )
    if own_role:
        title = "role can create the subscription's own replication role"
        if role["rolsuper"] or (version >= 160000 and role["rolcreaterole"] and role["rolreplication"]):
            out.append(
                Finding(
                    Status.OK,
                    "source",
                    title,
                    f"the target logs in with a per-migration role, never with the password of '{user}'",
                )
            )
        else:
            out.append(
                Finding(
                    Status.FAIL,
                    "source",
                    title,
                    f"'{user}' may not create a role with REPLICATION (the subscription's own, so that "
                    "the target never holds this role's password)",
                    "connect pgmig to the source as a superuser"
                    + (
                        f', or ALTER ROLE "{user}" WITH CREATEROLE REPLICATION'
                        if version >= 160000
                        else " (PostgreSQL 15 and older: only superusers may create replication roles)"
                    ),
                )
            )
        out.append(_capture_finding(user, role["rolsuper"]))
    return out


def _capture_finding(user: str, superuser: bool) -> Finding:
    """Whether schema changes made while streaming can be captured (`[online] capture_ddl`): an event trigger
    needs a superuser; without one pgmig detects drift (what changed, not the statement) instead."""
    title = "schema changes while streaming can be captured"
    if superuser:
        return Finding(
            Status.OK, "source", title, f"'{user}' is a superuser: with capture_ddl, an event trigger records them"
        )
    return Finding(
        Status.WARN,
        "source",
        title,
        f"'{user}' may not create event triggers (superusers only; on Azure azure_pg_admin may not either): with "
        "capture_ddl pgmig falls back to drift detection — it reports tables, columns, indexes and constraints "
        "that changed, each tick, but not the statement, and does not hold replication for a decision",
        "connect pgmig to the source as a superuser to capture them; otherwise make each schema change on the "
        "target too",
    )


async def _login_finding(conn: asyncpg.Connection, databases: list[str]) -> Finding:
    """What the subscription's login will be: its password sits on the target, so say what it could do."""
    plan = await replication.login_plan(conn, databases)
    return Finding(Status.OK if plan.refused else Status.WARN, "source", "replication login", plan.detail, plan.fix)


async def _apply_workers_finding(conn: asyncpg.Connection, n_databases: int) -> Finding:
    """Each database streams through one subscription, and each subscription needs an apply worker."""
    limit = int(await conn.fetchval("SHOW max_logical_replication_workers"))
    busy = await conn.fetchval("SELECT count(*) FROM pg_subscription WHERE subenabled")
    title = f"apply workers on the target for {n_databases} database(s)"
    if limit - busy >= n_databases:
        return Finding(Status.OK, "target", title, f"max_logical_replication_workers = {limit}, {busy} in use")
    return Finding(
        Status.FAIL,
        "target",
        title,
        f"max_logical_replication_workers is {limit} and {busy} subscription(s) already use workers: "
        f"{n_databases} more are needed (one per database), or some would never stream",
        f"raise max_logical_replication_workers (and max_worker_processes) on the target to at least "
        f"{busy + n_databases} and restart it (on Azure: az postgres flexible-server parameter set), or "
        "migrate fewer databases at once",
    )


@dataclass
class _TargetFacts:
    """What the target offers, read once from its maintenance database."""

    available: dict[str, str]
    allow_list: set[str] | None  # Azure's azure.extensions; None when the server has no such setting
    databases: dict[str, tuple[str, str, str]]  # name → (encoding, collate, ctype)
    template: tuple[str, str, str]
    can_create_db: bool

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> "_TargetFacts":
        available = {
            r["name"]: r["default_version"] or ""
            for r in await conn.fetch("SELECT name, default_version FROM pg_available_extensions")
        }
        raw_allow = await conn.fetchval("SELECT current_setting('azure.extensions', true)")
        allow = {x.strip().lower() for x in raw_allow.split(",") if x.strip()} if raw_allow else None
        dbs = {
            r["datname"]: (r["enc"], r["datcollate"], r["datctype"])
            for r in await conn.fetch(
                "SELECT datname, pg_encoding_to_char(encoding) AS enc, datcollate, datctype FROM pg_database"
            )
        }
        can_create = await conn.fetchval("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
        return cls(available, allow, dbs, dbs.get("template1", ("?", "?", "?")), bool(can_create))


async def _database_findings(req: PreflightRequest, db: str, tgt: _TargetFacts | None) -> list[Finding]:
    report = PreflightReport(req.source.name, req.target.name, req.mode)
    conn = await _try_connect(req.source, f"db {db}", report, db)
    if conn is None:
        return report.findings
    scope = f"db {db}"
    try:
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        n_tables = await conn.fetchval(_USER_RELATIONS + " AND c.relkind IN ('r','p')")
        # the whole database on disk; the live message's bytes are the tables' data pages alone (progress.py)
        on_disk = f"database {pretty_bytes(size)} on disk (tables, indexes, TOAST)"
        report.add(Finding(Status.OK, scope, "size", f"{on_disk}, {n_tables} table(s)"))
        report.add(await _readable_finding(conn, scope, req.source.user))
        extensions = {
            r["extname"]: r["extversion"]
            for r in await conn.fetch("SELECT extname, extversion FROM pg_extension ORDER BY extname")
        }
        if tgt is not None:
            report.add(_extension_finding(scope, extensions, tgt, req))
            report.add(*_target_database_findings(scope, db, await _encoding(conn), tgt))
            report.add(*await _occupancy_findings(req, scope, db, tgt))
        report.add(*await _replication_traps(conn, scope, req))
    except asyncpg.PostgresError as exc:
        report.add(
            Finding(
                Status.FAIL,
                scope,
                "inspect database",
                f"query failed: {exc}",
                "grant the migration role read access to the catalog and the tables",
            )
        )
    finally:
        await conn.close()
    return report.findings


_FROM_USER_RELATIONS = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " + USER_SCHEMA_FILTER + " "
_USER_RELATIONS = "SELECT count(*) " + _FROM_USER_RELATIONS
_NAMES = "SELECT format('%I.%I', n.nspname, c.relname) AS name " + _FROM_USER_RELATIONS


async def _readable_finding(conn: asyncpg.Connection, scope: str, user: str) -> Finding:
    rows = await conn.fetch(
        _NAMES + "AND c.relkind IN ('r','p','S','m') AND NOT ("
        "has_schema_privilege(c.relnamespace, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')) "
        "ORDER BY 1"
    )
    names = [r["name"] for r in rows]
    if not names:
        return Finding(Status.OK, scope, "role can read every table and sequence")
    return Finding(
        Status.FAIL,
        scope,
        "role can read every table and sequence",
        f"'{user}' cannot read {len(names)}: {listing(names)}",
        f'grant it, e.g. GRANT USAGE ON SCHEMA … TO "{user}"; '
        f'GRANT SELECT ON ALL TABLES IN SCHEMA … TO "{user}"; (or use pg_read_all_data)',
    )


def _extension_finding(
    scope: str, extensions: dict[str, str], tgt: _TargetFacts, req: PreflightRequest | None = None
) -> Finding:
    used = {name: v for name, v in extensions.items() if name not in ALWAYS_AVAILABLE}
    if not used:
        return Finding(Status.OK, scope, "extensions available on target", "no extensions in use")
    missing = sorted(n for n in used if n not in tgt.available)
    blocked = sorted(
        n for n in used if n in tgt.available and tgt.allow_list is not None and n.lower() not in tgt.allow_list
    )
    if missing or blocked:
        detail, fixes = [], []
        if missing:
            detail.append(f"not installable on target: {listing(missing)}")
            fixes.append(
                "install these extensions' packages on the target server (on Azure: not supported, "
                "drop them from the source database or migrate without them)"
            )
        if blocked:
            detail.append(f"not in the target's azure.extensions allow-list: {listing(blocked)}")
            allowed = ",".join(sorted((tgt.allow_list or set()) | {b.lower() for b in blocked}))
            via_pgmig = (
                f"`/pgmig configure {req.target.name} --extensions-from {req.source.name} --restart` or "
                if req is not None and req.target.azure_name
                else ""
            )
            fixes.append(
                f"allow them: {via_pgmig}az postgres flexible-server parameter set --name azure.extensions "
                f"--value {allowed}"
            )
        return Finding(Status.FAIL, scope, "extensions available on target", "; ".join(detail), "; ".join(fixes))
    return Finding(
        Status.OK, scope, "extensions available on target", ", ".join(f"{n} {v}" for n, v in sorted(used.items()))
    )


async def _encoding(conn: asyncpg.Connection) -> tuple[str, str, str]:
    row = await conn.fetchrow(
        "SELECT pg_encoding_to_char(encoding) AS enc, datcollate, datctype FROM pg_database "
        "WHERE datname = current_database()"
    )
    return row["enc"], row["datcollate"], row["datctype"]


def _target_database_findings(scope: str, db: str, src: tuple[str, str, str], tgt: _TargetFacts) -> list[Finding]:
    out: list[Finding] = []
    exists = db in tgt.databases
    against = tgt.databases[db] if exists else tgt.template
    title = "encoding and collation match"
    if src == against:
        out.append(Finding(Status.OK, scope, title, f"{src[0]}, collate {src[1]}"))
    else:
        where = f"target database {db}" if exists else "a new target database (from template1)"
        out.append(
            Finding(
                Status.WARN,
                scope,
                title,
                f"source {src[0]}/{src[1]}/{src[2]}, {where} {against[0]}/{against[1]}/{against[2]}",
                "text sorts and compares differently under another collation; create the target database with "
                f"ENCODING '{src[0]}' LC_COLLATE '{src[1]}' LC_CTYPE '{src[2]}' if the target offers it",
            )
        )
    if not exists and not tgt.can_create_db:
        out.append(
            Finding(
                Status.FAIL,
                scope,
                "target database can be created",
                f"{db} does not exist on the target and the target role lacks CREATEDB",
                f'create it first (CREATE DATABASE "{db}") or grant CREATEDB to the target role',
            )
        )
    return out


async def _occupancy_findings(req: PreflightRequest, scope: str, db: str, tgt: _TargetFacts) -> list[Finding]:
    """The target database must be pgmig's to write: no other migration into it, and empty unless the
    person asked to replace it (found now, not after an hour of export)."""
    out: list[Finding] = []
    if db in req.fenced:
        out.append(
            Finding(
                Status.WARN,
                scope,
                "source database is open for writes",
                f"{db} on {req.source.name} is fenced by {req.fenced[db]}: its applications were moved to that "
                "cutover's target",
                "migrate it again only if you mean to copy what it held at that cutover",
            )
        )
    if (holder := req.held.get(db)) is not None:
        return [*out, Finding(Status.FAIL, scope, "the target database is free", holder.describe(db), holder.fix)]
    if db in req.writers:
        out.append(
            Finding(
                Status.FAIL,
                scope,
                "no other migration writes to the target database",
                f"{req.writers[db]} is migrating into {db} on {req.target.name}",
                f"wait for {req.writers[db].split()[0]} to finish or cancel it, or choose another target",
            )
        )
    if db not in tgt.databases:
        return out
    title = "target database is empty"
    try:
        what = await contents(req.target, db)
    except ConnectionProblem as problem:
        return [
            *out,
            Finding(
                Status.WARN,
                scope,
                title,
                problem.message,
                problem.fix,
                failed=f"target database {db} may not be empty: pgmig cannot look inside it",
            ),
        ]
    if what.usable and req.service_asks_overwrite and not req.overwrite:
        out.append(
            Finding(
                Status.FAIL,
                scope,
                title,
                f"{db} exists (empty): the flexible-server migration service stops and asks before replacing it",
                "migrate with --overwrite to let it replace the database, or drop it",
                RetryChanges(overwrite=True),
                failed=f"target database {db} exists",
            )
        )
    elif what.usable:
        but = f" but for {what.extensions} extension(s), which stay" if what.extensions else ""
        out.append(Finding(Status.OK, scope, title, f"{db} exists, empty{but}: used as it is (pgmig never drops it)"))
    elif req.overwrite:
        out.append(
            Finding(
                Status.WARN,
                scope,
                title,
                f"it holds {what.describe()}: --overwrite drops and recreates it",
                failed=f"target database {db} is not empty",
            )
        )
    else:
        out.append(
            Finding(
                Status.FAIL,
                scope,
                title,
                f"it holds {what.describe()}",
                "pgmig never drops a database it did not create: migrate with --overwrite to drop and recreate "
                "it, empty it yourself, or choose another target",
                RetryChanges(overwrite=True),
                failed=f"target database {db} is not empty",
            )
        )
    return out


async def _replication_traps(conn: asyncpg.Connection, scope: str, req: PreflightRequest) -> list[Finding]:
    """Things logical replication does not carry: rows without identity, large objects, unlogged tables."""
    out: list[Finding] = []
    no_identity = [
        r["name"]
        for r in await conn.fetch(
            _NAMES + "AND c.relkind = 'r' AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS ("
            "SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) ORDER BY 1"
        )
    ]
    large_objects = await conn.fetchval("SELECT count(*) FROM pg_largeobject_metadata")
    unlogged = [
        r["name"] for r in await conn.fetch(_NAMES + "AND c.relkind IN ('r','p') AND c.relpersistence = 'u' ORDER BY 1")
    ]
    online = req.mode is Mode.ONLINE
    title = "every table has a primary key or replica identity"
    if not no_identity:
        out.append(Finding(Status.OK, scope, title))
    elif not online:
        out.append(
            Finding(Status.OK, scope, title, f"{len(no_identity)} without one (fine offline): {listing(no_identity)}")
        )
    elif req.replica_identity_full:
        out.append(
            Finding(
                Status.WARN,
                scope,
                title,
                f"{len(no_identity)} without: {listing(no_identity)}",
                "pgmig will set REPLICA IDENTITY FULL on them (--replica-identity-full); "
                "updates on large ones replicate slower",
            )
        )
    else:
        out.append(
            Finding(
                Status.FAIL,
                scope,
                title,
                f"{len(no_identity)} without: {listing(no_identity)}",
                "add a primary key, or ALTER TABLE … REPLICA IDENTITY FULL, or pass "
                "--replica-identity-full and pgmig sets it",
                RetryChanges(replica_identity_full=True),
            )
        )
    if large_objects:
        out.append(
            Finding(
                Status.WARN if online else Status.OK,
                scope,
                "large objects",
                f"{large_objects} large object(s)",
                "logical replication does not carry them: pgmig copies them at cutover, "
                "so write no new ones during the migration"
                if online
                else "",
            )
        )
    if unlogged:
        out.append(
            Finding(
                Status.WARN if online else Status.OK,
                scope,
                "unlogged tables",
                f"{len(unlogged)}: {listing(unlogged)}",
                "logical replication does not carry unlogged tables: their rows are copied once "
                "and later changes are lost; ALTER TABLE … SET LOGGED to keep them in sync"
                if online
                else "",
            )
        )
    return out
