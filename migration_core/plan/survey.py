"""`/pgmig plan`: what a migration would move and how long it would take, measured before anything moves.

Read-only on both servers. The source is read the way the copy reads it (copy.py: a data connection, a
`COPY … TO STDOUT` under a read-only snapshot); the target is only inspected by the pre-flight. Every
number in a plan says where it comes from (`basis`)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from migration_core.changes.identity import NO_IDENTITY
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident, readable
from migration_core.pg.tools import NO_PUBSUB, Tool, ToolError, connection_env
from migration_core.plan.estimate import (
    INDEX_FACTOR,
    Estimate,
    Range,
    Rates,
    Workload,
    estimate,
    identity_full_cost,
    range_text,
    seconds_text,
    wal_held,
)
from migration_core.preflight.checks import PreflightReport, pretty_bytes
from migration_core.state.models import Migration, Mode, State, StepKind
from migration_core.store import Store
from migration_core.transfer import copy

SAMPLE_BYTES = 16 << 20  # of the largest table's pages read by the timed sample: long enough to measure, short
WAL_SAMPLE_SECONDS = 2.0  # between the two looks at the source's WAL position
LARGEST = 5  # tables listed per database
ROUND_TRIPS = 3  # `SELECT 1`s timed; the fastest is the round trip

# A table's rows as the statistics have them: ANALYZE's count, else the live rows counted since.
ROWS = "CASE WHEN c.reltuples > 0 THEN c.reltuples::bigint ELSE coalesce(s.n_live_tup, 0) END AS rows"
TABLE_FACTS = (
    "SELECT n.nspname AS schema, c.relname AS name, pg_relation_size(c.oid) AS heap, "
    "pg_indexes_size(c.oid) AS indexes, pg_total_relation_size(c.oid) AS total, " + ROWS + " "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
    "WHERE c.relkind = 'r' AND " + USER_SCHEMA_FILTER + " ORDER BY total DESC, 1, 2"
)

# Tables without a usable identity (as identity.py finds them), their write rate since the statistics were
# reset, and a unique index on NOT NULL columns that could serve as their identity at no cost.
KEYLESS = (
    "SELECT k.name, pg_relation_size(c.oid) AS heap, " + ROWS + ", "
    "coalesce(s.n_tup_upd, 0) + coalesce(s.n_tup_del, 0) AS changes, "
    "(SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique "
    "  AND i.indisvalid AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL AND NOT EXISTS ("
    "  SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey) AND NOT a.attnotnull) "
    "  ORDER BY 1 LIMIT 1) AS candidate "
    f"FROM ({NO_IDENTITY}) k JOIN pg_class c ON c.oid = k.name::regclass "
    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid ORDER BY changes DESC, 1"
)
STATS_SINCE = (
    "SELECT extract(epoch FROM now() - stats_reset)::float8 FROM pg_stat_database WHERE datname = current_database()"
)


@dataclass(frozen=True)
class TableSize:
    name: str
    bytes: int  # with its indexes and TOAST
    rows: int  # from the statistics


@dataclass(frozen=True)
class KeylessTable:
    """A table without a primary key or replica identity, and what REPLICA IDENTITY FULL would cost it."""

    name: str
    rows: int
    bytes: int
    changes: int  # updates + deletes since the statistics were reset
    hours: float | None  # since that reset; None when the server does not say
    key_build: Range  # seconds to build a unique index for a key, at the measured read rate
    candidate: str = ""  # a unique index on NOT NULL columns: REPLICA IDENTITY USING INDEX costs nothing

    @property
    def per_hour(self) -> float | None:
        return self.changes / self.hours if self.hours else None

    @property
    def advice(self) -> str:
        """FULL's cost against a key's, in words."""
        if self.candidate:
            return f"its unique index {self.candidate} can be the replica identity (USING INDEX): free, no FULL needed"
        key = f"a key costs an index build of about {range_text(self.key_build)} (and a brief lock to attach it)"
        if not self.changes:
            return f"no updates or deletes since the statistics were reset: FULL costs nothing measurable; {key}"
        wal, scanned = identity_full_cost(self.per_hour or self.changes, self.rows, self.bytes / max(self.rows, 1))
        unit = "an hour" if self.per_hour is not None else "since the statistics began (reset time unknown)"
        rate = f"{self.per_hour:,.0f}/h" if self.per_hour is not None else f"{self.changes:,}"
        return (
            f"{rate} updates+deletes: FULL logs ~{pretty_bytes(int(wal))} more WAL and the target scans "
            f"~{scanned:,.0f} rows {unit} to apply them; {key}"
        )


@dataclass
class DatabasePlan:
    name: str
    size: int  # pg_database_size
    tables: int
    rows: int
    heap_bytes: int
    index_bytes: int
    largest: list[TableSize]
    keyless: list[KeylessTable]
    schema_seconds: float | None  # the timed `pg_dump -s`
    estimate: Estimate


@dataclass(frozen=True)
class Sample:
    """The timed read of a slice of the largest table."""

    database: str
    table: str
    heap_bytes: int  # of the table's pages the slice covered
    sent: int  # bytes the COPY stream carried
    seconds: float

    @property
    def rate(self) -> float:
        return self.heap_bytes / max(self.seconds, 1e-6)

    def __str__(self) -> str:
        return (
            f"a {seconds_text(self.seconds)} sample of {self.table} in {self.database} "
            f"({pretty_bytes(self.heap_bytes)} of pages read at {pretty_bytes(int(self.rate))}/s)"
        )


@dataclass(frozen=True)
class History:
    """An earlier completed offline migration's import: rows over its whole duration."""

    migration_id: str
    database: str
    rows: int
    seconds: float
    same_servers: bool

    @property
    def rate(self) -> float:
        return self.rows / max(self.seconds, 1e-6)

    def __str__(self) -> str:
        servers = "the same servers" if self.same_servers else "other servers"
        return (
            f"{self.migration_id}'s import of {self.database} ({self.rows:,} rows in {seconds_text(self.seconds)}, "
            f"{servers})"
        )


@dataclass
class MigrationPlan:
    """Everything `/pgmig plan` answers with. `basis` says where each guessed number comes from."""

    source: str
    target: str
    mode: Mode
    parallel: int
    preflight: PreflightReport
    preflight_seconds: float
    databases: list[DatabasePlan] = field(default_factory=list)
    sample: Sample | None = None
    round_trip: float = 0.0
    history: History | None = None
    wal_rate: float | None = None  # online: bytes a second, measured over WAL_SAMPLE_SECONDS
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why

    @property
    def total(self) -> Range:
        """Command → completed (offline) or → streaming (online): the pre-flight again, then every database."""
        out = Range(self.preflight_seconds, self.preflight_seconds)
        for db in self.databases:
            out += db.estimate.total
        return out

    @property
    def full_load(self) -> Range:
        """While the slot holds WAL: every database's import (online loads run one after the other)."""
        out = Range(0, 0)
        for db in self.databases:
            out += db.estimate.import_
        return out

    @property
    def wal_held(self) -> Range | None:
        return wal_held(self.wal_rate, self.full_load) if self.wal_rate is not None else None

    @property
    def basis(self) -> list[str]:
        said = [f"read rate from {self.sample}" if self.sample else "no table to sample: no data to copy"]
        said.append(f"{self.round_trip * 1000:.1f} ms a statement (timed round trip) for the per-table overhead")
        timed = [db.name for db in self.databases if db.schema_seconds is not None]
        if timed:
            said.append(f"per-database overhead from a timed `pg_dump -s` of {', '.join(timed)}")
        said.append(
            f"copy + indexes bracketed by {self.history}"
            if self.history
            else "no earlier migration to learn from: the range rests on the sample alone"
        )
        if self.wal_rate is not None:
            said.append(f"WAL rate {pretty_bytes(int(self.wal_rate))}/s measured over {WAL_SAMPLE_SECONDS:g} s")
        said.append(f"pre-flight took {seconds_text(self.preflight_seconds)} here, and runs again at the start")
        return said + self.notes


async def survey(
    source: ServerConfig,
    report: PreflightReport,
    preflight_seconds: float,
    parallel: int,
    bindir: Path | None,
    history: History | None,
) -> MigrationPlan:
    """Measure the databases the pre-flight chose and estimate their migration. `bindir`: the client programs
    (None: pg_dump could not be found, and the plan says so)."""
    plan = MigrationPlan(report.source, report.target, report.mode, parallel, report, preflight_seconds)
    plan.history = history
    if not report.databases:
        plan.notes.append("no database to plan: see the pre-flight")
        return plan
    wal = asyncio.ensure_future(wal_rate(source)) if report.mode is Mode.ONLINE else None
    try:
        facts = {db: await _facts(source, db) for db in report.databases}
        largest = max(report.databases, key=lambda db: facts[db].largest_heap)
        plan.sample, plan.round_trip = await sample(source, largest)
        rates = Rates(
            plan.sample.rate if plan.sample else 1.0, plan.round_trip, parallel, history.rate if history else None
        )
        for db in report.databases:
            seconds = await schema_seconds(source, db, bindir) if bindir else None
            plan.databases.append(_database(db, facts[db], seconds, rates))
        if bindir is None:
            plan.notes.append("pg_dump not found: the per-database schema overhead is not counted")
        if wal is not None:
            plan.wal_rate = await wal
            if plan.wal_rate is None:
                plan.notes.append("the source's WAL position cannot be read (a standby?): WAL held not estimated")
    finally:
        if wal is not None and not wal.done():
            wal.cancel()
    return plan


@dataclass(frozen=True)
class _Facts:
    size: int
    tables: list[asyncpg.Record]
    keyless: list[asyncpg.Record]
    hours: float | None

    @property
    def largest_heap(self) -> int:
        return max((t["heap"] for t in self.tables), default=0)


async def _facts(source: ServerConfig, db: str) -> _Facts:
    """What the catalog and statistics say of the database."""
    async with source.connection(db) as conn:
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        tables = await conn.fetch(TABLE_FACTS)
        keyless = await conn.fetch(KEYLESS)
        since = await conn.fetchval(STATS_SINCE)
    return _Facts(size, tables, keyless, since / 3600 if since else None)


def _database(name: str, f: _Facts, schema: float | None, rates: Rates) -> DatabasePlan:
    work = Workload(
        len(f.tables),
        sum(t["rows"] for t in f.tables),
        sum(t["heap"] for t in f.tables),
        sum(t["indexes"] for t in f.tables),
        schema,
    )
    keyless = [
        KeylessTable(
            k["name"],
            k["rows"],
            k["heap"],
            k["changes"],
            f.hours,
            Range.around(k["heap"] * INDEX_FACTOR / max(rates.read_bytes_per_second, 1.0)),
            k["candidate"] or "",
        )
        for k in f.keyless
    ]
    largest = [TableSize(readable(t["schema"], t["name"]), t["total"], t["rows"]) for t in f.tables[:LARGEST]]
    return DatabasePlan(
        name,
        f.size,
        work.tables,
        work.rows,
        work.heap_bytes,
        work.index_bytes,
        largest,
        keyless,
        schema,
        estimate(work, rates),
    )


async def sample(source: ServerConfig, database: str) -> tuple[Sample | None, float]:
    """A timed `COPY … TO STDOUT` of a slice of the database's largest table (TABLESAMPLE SYSTEM, about
    SAMPLE_BYTES of its pages), through the copy's own path, under a read-only snapshot; and the fastest of a
    few round trips. (None, …) when the database has no table."""
    conn = await source.connect(database, data=True)
    try:
        trips = []
        for _ in range(ROUND_TRIPS):
            start = time.perf_counter()
            await conn.fetchval("SELECT 1")
            trips.append(time.perf_counter() - start)
        tables = await copy.list_tables(conn)
        if not tables:
            return None, min(trips)
        table = tables[0]
        share = min(1.0, SAMPLE_BYTES / max(table.size, 1))
        columns = ", ".join(ident(c) for c in table.columns)
        query = f"SELECT {columns} FROM ONLY {table.qualified}"
        if share < 1:
            query += f" TABLESAMPLE SYSTEM ({share * 100:.6f})"
        sent = 0

        async def sink(chunk: bytes) -> None:
            nonlocal sent
            sent += len(chunk)
            await copy.gather_more(chunk)

        async with conn.transaction(isolation="repeatable_read", readonly=True):
            start = time.perf_counter()
            await conn.copy_from_query(query, output=sink, format="binary" if table.binary_safe else "text")
            seconds = time.perf_counter() - start
        return Sample(database, table.readable, int(table.size * share), sent, seconds), min(trips)
    finally:
        await conn.close()


async def schema_seconds(source: ServerConfig, database: str, bindir: Path) -> float | None:
    """How long `pg_dump -Fc -s` of the database takes, as the export runs it (into a file thrown away):
    the unit of the per-database overhead. None when pg_dump fails (the pre-flight says why)."""
    with tempfile.TemporaryDirectory(prefix="pgmig-plan-") as tmp:
        start = time.perf_counter()
        try:
            await Tool(bindir, "pg_dump").run(
                ["-Fc", "-s", *NO_PUBSUB, "-f", str(Path(tmp) / "schema.dump")], connection_env(source, database)
            )
        except ToolError:
            return None
        return time.perf_counter() - start


async def wal_rate(source: ServerConfig) -> float | None:
    """Bytes a second the source's WAL grew between two looks WAL_SAMPLE_SECONDS apart; None on a standby."""
    async with source.connection() as conn:
        try:
            first = await conn.fetchval("SELECT pg_current_wal_lsn()")
            start = time.perf_counter()
            await asyncio.sleep(WAL_SAMPLE_SECONDS)
            grown = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", first)
        except asyncpg.PostgresError:
            return None
        return float(grown) / (time.perf_counter() - start)


async def history(store: Store, same: Callable[[Migration], bool]) -> History | None:
    """The earlier completed offline migration whose import moved the most rows (between the same servers
    first, as `same` tells; the newest of equals): its import step's timing and its verify step's row count."""
    found: list[History] = []
    for m in await store.list_migrations():
        if m.state is not State.COMPLETED or m.mode is not Mode.OFFLINE:
            continue
        found += await _imports(store, m, same(m))
    return max(reversed(found), key=lambda h: (h.same_servers, h.rows), default=None)


async def _imports(store: Store, m: Migration, same: bool) -> list[History]:
    out = []
    steps = {s.name: s for s in await store.steps(m.id)}
    for db in m.databases:
        imported, verified = steps.get(StepKind.IMPORT.at(db)), steps.get(StepKind.VERIFY.at(db))
        if imported is None or verified is None or not imported.started_at or not imported.finished_at:
            continue
        rows = int(verified.data.get("rows", 0))
        seconds = (imported.finished_at - imported.started_at).total_seconds()
        if rows and seconds > 0:
            out.append(History(m.id, db, rows, seconds, same))
    return out
