"""`/pgmig plan`, and the plan every migration makes as it starts (record.py): what it would move and how long it
would take, measured before anything moves.

Read-only on both servers. The source is read the way the copy reads it (copy.py: a data connection, a
`COPY … TO STDOUT` under a read-only snapshot); the target is only inspected by the pre-flight. Every
number in a plan says where it comes from (`basis`)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import asyncpg

from migration_core.changes.identity import NO_IDENTITY
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident, readable
from migration_core.pg.tools import NO_PUBSUB, Tool, ToolError, connection_env
from migration_core.plan.estimate import (
    INDEX_FACTOR,
    Estimate,
    Learned,
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
from migration_core.state.models import Method, Mode, Step, StepKind, StepState
from migration_core.store import Store
from migration_core.transfer import copy

SAMPLE_BYTES = 16 << 20  # of the largest table's pages read by the timed sample: long enough to measure, short
WAL_SAMPLE_SECONDS = 2.0  # between the two looks at the source's WAL position
LARGEST = 5  # tables listed per database
ROUND_TRIPS = 3  # `SELECT 1`s timed; the fastest is the round trip
LOCK_WAIT = 1.0  # a plan's reads give up on a lock held longer than this (seconds)
WAL_UNREADABLE = "the source's WAL position cannot be read (a standby?): WAL held not estimated"

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

    @classmethod
    def from_dict(cls, d: dict) -> DatabasePlan:
        return cls(
            **{
                **d,
                "largest": [TableSize(**t) for t in d["largest"]],
                "keyless": [KeylessTable(**{**k, "key_build": Range(**k["key_build"])}) for k in d["keyless"]],
                "estimate": Estimate(**{phase: Range(**r) for phase, r in d["estimate"].items()}),
            }
        )


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
    """What an earlier migration's import (offline) or full load (online) of one database measured: the workload
    its plan found, and how long the step, its copy and its index builds took (record.py keeps them)."""

    migration_id: str
    database: str
    mode: Mode
    same_servers: bool
    rows: int  # from the statistics when its plan was made
    heap_bytes: int
    index_bytes: int
    seconds: float  # the whole import or full-load step
    copy_seconds: float | None  # None: no copy phase (no table)
    index_seconds: float | None  # None: no index phase (no table, or the dump method)

    @property
    def learned(self) -> Learned:
        return Learned(
            self.heap_bytes / self.copy_seconds if self.copy_seconds and self.heap_bytes else None,
            self.index_bytes / self.index_seconds if self.index_seconds and self.index_bytes else None,
            self.rows / self.seconds if self.rows and self.seconds > 0 else None,
            self.same_servers,
        )

    def __str__(self) -> str:
        learned = self.learned
        rates = [
            f"{what} {pretty_bytes(int(rate))}/s"
            for what, rate in (("copy", learned.copy), ("index builds", learned.indexes))
            if rate is not None
        ]
        step = "import" if self.mode is Mode.OFFLINE else "full load"
        servers = "the same servers" if self.same_servers else "other servers"
        return (
            f"{self.migration_id}'s {step} of {self.database} ({self.rows:,} rows in {seconds_text(self.seconds)}"
            + "".join(f", {r}" for r in rates)
            + f"; {servers})"
        )


@dataclass
class MigrationPlan:
    """Everything `/pgmig plan` answers with, and what a migration keeps of its own plan (`as_dict`: all but the
    pre-flight, which is a step of its own). `basis` says where each guessed number comes from."""

    source: str
    target: str
    mode: Mode
    parallel: int
    preflight_seconds: float
    preflight: PreflightReport | None = None  # `/pgmig plan`'s; None in a migration's own plan
    addresses: tuple[str, str] = ("", "")  # the source's and the target's host:port: "the same servers" later
    method: Method = Method.RESTORE  # offline: restore verifies each table as its copy commits (early_verify)
    databases: list[DatabasePlan] = field(default_factory=list)
    sample: Sample | None = None
    round_trip: float = 0.0
    history: History | None = None
    wal_rate: float | None = None  # online: bytes a second, measured over WAL_SAMPLE_SECONDS (a migration: longer)
    wal_pending: bool = False  # a migration's online plan, kept before its WAL rate is read (beside the full load)
    notes: list[str] = field(default_factory=list)  # what could not be measured, and why
    seconds: float = 0.0  # the measurements themselves (the WAL look apart): a migration spends them again

    @property
    def total(self) -> Range:
        """Command → completed (offline) or → ready for cutover (online; its verification comes with the
        cutover): the pre-flight and these measurements again, then every database."""
        out = Range(self.preflight_seconds + self.seconds, self.preflight_seconds + self.seconds)
        for db in self.databases:
            out += db.estimate.total if self.mode is Mode.OFFLINE else db.estimate.import_
        return out

    @property
    def until(self) -> str:
        """What `total` runs to, in words."""
        return "completed" if self.mode is Mode.OFFLINE else "ready for cutover"

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
    def grounds(self) -> str:
        """Where the numbers come from, in a few words (a card's line; `basis` says it whole)."""
        said = [f"a {seconds_text(self.sample.seconds)} sample of {self.sample.table}" if self.sample else "no sample"]
        if self.history:
            said.append(f"learnt from {self.history.migration_id}'s {self.history.database}")
        return ", ".join(said)

    @property
    def basis(self) -> list[str]:
        said = [f"read rate from {self.sample}" if self.sample else "no table to sample: no data to copy"]
        said.append(f"{self.round_trip * 1000:.1f} ms a statement (timed round trip) for the per-table overhead")
        timed = [db.name for db in self.databases if db.schema_seconds is not None]
        if timed:
            said.append(f"per-database overhead from a timed `pg_dump -s` of {', '.join(timed)}")
        said.append(
            f"copy, index builds and the whole import "
            f"{'centred on' if self.history.same_servers else 'widened to'} what {self.history} predicts"
            if self.history
            else "no earlier migration to learn from: the range rests on the sample alone"
        )
        if self.wal_rate is not None:
            said.append(f"WAL rate {pretty_bytes(int(self.wal_rate))}/s, measured on the source")
        again = ", and runs again at the start" if self.preflight is not None else ""
        said.append(f"pre-flight took {seconds_text(self.preflight_seconds)}{again}")
        said.append(f"these measurements took {seconds_text(self.seconds)}")
        return said + self.notes

    def as_dict(self) -> dict:
        """What a migration's `plan` step keeps."""
        out = asdict(replace(self, preflight=None))
        del out["preflight"]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> MigrationPlan:
        return cls(
            **{
                **d,
                "mode": Mode(d["mode"]),
                "method": Method(d["method"]),
                "addresses": tuple(d["addresses"]),
                "databases": [DatabasePlan.from_dict(db) for db in d["databases"]],
                "sample": Sample(**d["sample"]) if d["sample"] else None,
                "history": History(**{**d["history"], "mode": Mode(d["history"]["mode"])}) if d["history"] else None,
            }
        )


async def survey(
    source: ServerConfig,
    report: PreflightReport,
    preflight_seconds: float,
    parallel: int,
    bindir: Path | None,
    history: History | None,
    addresses: tuple[str, str],
) -> MigrationPlan:
    """`/pgmig plan`: measure the databases the pre-flight chose and estimate their migration. `bindir`: the
    client programs (None: pg_dump could not be found, and the plan says so)."""
    plan = MigrationPlan(
        report.source, report.target, report.mode, parallel, preflight_seconds, report, addresses, history=history
    )
    if not report.databases:
        plan.notes.append("no database to plan: see the pre-flight")
        return plan
    clock = await WalClock.start(source) if report.mode is Mode.ONLINE else None
    await measure(plan, source, report.databases, bindir)
    if report.mode is Mode.ONLINE:
        await settle_wal(plan, source, clock, WAL_SAMPLE_SECONDS)
    return plan


async def measure(plan: MigrationPlan, source: ServerConfig, databases: list[str], bindir: Path | None) -> None:
    """Fill `plan` with what each database holds, how fast the source reads and its estimates (the WAL rate
    apart: WalClock); `plan.seconds` is how long this took."""
    started = time.perf_counter()
    facts = {db: await _facts(source, db) for db in databases}
    largest = max(databases, key=lambda db: facts[db].largest_heap)
    try:
        plan.sample, plan.round_trip = await sample(source, largest)
    except asyncpg.LockNotAvailableError:
        plan.sample, plan.round_trip = None, 0.0
        plan.notes.append(f"the copy sample of {largest} waited on a lock someone holds: throughput not measured")
    history = plan.history
    rates = Rates(
        plan.sample.rate if plan.sample else 1.0, plan.round_trip, plan.parallel, history.learned if history else None
    )
    early = plan.mode is Mode.OFFLINE and plan.method is Method.RESTORE
    for db in databases:
        seconds = await schema_seconds(source, db, bindir) if bindir else None
        plan.databases.append(_database(db, facts[db], seconds, rates, early))
    if bindir is None:
        plan.notes.append("pg_dump not found: the per-database schema overhead is not counted")
    plan.seconds = time.perf_counter() - started


async def settle_wal(plan: MigrationPlan, source: ServerConfig, clock: WalClock | None, at_least: float) -> None:
    """The source's WAL rate since `clock` started (at least `at_least` seconds of it), or why it is unknown."""
    plan.wal_rate, plan.wal_pending = await clock.rate(source, at_least) if clock else None, False
    if plan.wal_rate is None:
        plan.notes.append(WAL_UNREADABLE)


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
    """What the catalog and statistics say of the database (sizes take a table's lightest lock: one held by
    someone else past LOCK_WAIT fails the plan, which never holds up the migration it belongs to)."""
    async with source.connection(db) as conn:
        await conn.execute(f"SET lock_timeout = {int(LOCK_WAIT * 1000)}")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        tables = await conn.fetch(TABLE_FACTS)
        keyless = await conn.fetch(KEYLESS)
        since = await conn.fetchval(STATS_SINCE)
    return _Facts(size, tables, keyless, since / 3600 if since else None)


def _database(name: str, f: _Facts, schema: float | None, rates: Rates, early_verify: bool) -> DatabasePlan:
    largest = max(f.tables, key=lambda t: t["heap"], default=None)
    work = Workload(
        len(f.tables),
        sum(t["rows"] for t in f.tables),
        sum(t["heap"] for t in f.tables),
        sum(t["indexes"] for t in f.tables),
        schema,
        largest["heap"] if largest else 0,
        largest["indexes"] if largest else 0,
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
        estimate(work, rates, early_verify),
    )


async def sample(source: ServerConfig, database: str) -> tuple[Sample | None, float]:
    """A timed `COPY … TO STDOUT` of a slice of the database's largest table (TABLESAMPLE SYSTEM, about
    SAMPLE_BYTES of its pages), through the copy's own path, under a read-only snapshot; and the fastest of a
    few round trips. (None, …) when the database has no table. A plan never waits behind someone's lock
    (the migration it belongs to would wait with it): a lock held past LOCK_WAIT fails the sample."""
    conn = await source.connect(database, data=True)
    try:
        await conn.execute(f"SET lock_timeout = {int(LOCK_WAIT * 1000)}")
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
                [
                    "-Fc",
                    "-s",
                    *NO_PUBSUB,
                    f"--lock-wait-timeout={int(LOCK_WAIT * 1000)}",
                    "-f",
                    str(Path(tmp) / "schema.dump"),
                ],
                connection_env(source, database),
            )
        except ToolError:
            return None
        return time.perf_counter() - start


@dataclass(frozen=True)
class WalClock:
    """The source's WAL position when a look began: the rate it grows at is read against it later."""

    lsn: str
    started: float

    @classmethod
    async def start(cls, source: ServerConfig) -> WalClock | None:
        """None on a standby (no WAL position of its own)."""
        async with source.connection() as conn:
            try:
                lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            except asyncpg.PostgresError:
                return None
        return cls(lsn, time.perf_counter())

    async def rate(self, source: ServerConfig, at_least: float) -> float | None:
        """Bytes a second the WAL grew since the start, looked at no sooner than `at_least` seconds after it."""
        await asyncio.sleep(max(0.0, self.started + at_least - time.perf_counter()))
        async with source.connection() as conn:
            try:
                grown = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", self.lsn)
            except asyncpg.PostgresError:
                return None
        return float(grown) / (time.perf_counter() - self.started)


async def history(store: Store, addresses: tuple[str, str], but: str = "") -> History | None:
    """The earlier migration whose import or full load moved the most table data (between the same servers first,
    the newest of equals), from its plan and its steps. `but`: the migration asking, which is not earlier."""
    found: list[tuple[History, str]] = []
    for kept in await store.steps_named(StepKind.PLAN):
        if kept.migration_id != but and kept.data:
            plan = MigrationPlan.from_dict(kept.data)
            steps = {s.name: s for s in await store.steps(kept.migration_id)}
            when = kept.started_at.isoformat() if kept.started_at else ""
            found += [(h, when) for h in measured(kept.migration_id, plan, steps, plan.addresses == addresses)]
    best = max(found, key=lambda hw: (hw[0].same_servers, hw[0].heap_bytes, hw[1]), default=None)
    return best[0] if best else None


def measured(migration_id: str, plan: MigrationPlan, steps: dict[str, Step], same: bool) -> list[History]:
    """Each database of a migration whose import (offline) or full load (online) finished, as it measured it."""
    kind = StepKind.IMPORT if plan.mode is Mode.OFFLINE else StepKind.LOAD
    out = []
    for db in plan.databases:
        step = steps.get(kind.at(db.name))
        if step is None or step.state != StepState.DONE or "seconds" not in step.data:
            continue
        phases, seconds = step.data.get("phases", {}), float(step.data["seconds"])
        copied = phases.get("copying data", phases.get("loading data"))
        out.append(
            History(
                migration_id,
                db.name,
                plan.mode,
                same,
                db.rows,
                db.heap_bytes,
                db.index_bytes,
                seconds,
                copied,
                phases.get("building indexes"),
            )
        )
    return out
