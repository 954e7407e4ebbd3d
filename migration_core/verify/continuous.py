"""Continuous verification while an online migration streams: every published table walked in key ranges
of `[online] verify_chunk_rows`, each range's digest compared between source and target *at the same point
of the replication stream*, with no lock taken and replication never paused.

For one range (Netflix DBLog's watermarks, 2020): a low watermark row is committed on the source, the
source's digest of the range is read, a high watermark row is committed. The watermark table is published
with the migration's tables, and on the target a trigger takes the range's digest inside the apply
worker's transaction as each watermark arrives (changes/watermarks.py): the target exactly as the source
was at that watermark's commit. The source's read lies between the two watermarks. When the target's range
did not change between them (the digest of its tuple versions, which moves with every write to a row of
the range, even back to an earlier value, is the same at both), the source's range did not change either
— every source write to it would have been applied in between — so the source's read saw the same rows the
target holds: the comparison is consistent. A range that changed meanwhile is simply checked again later.

A range whose consistent comparison differs twice in a row is a divergence: the status and the channel name
the table and the key range. A table without a single-column key is compared whole (as one range) while
it is small; a larger one is left to the cutover's count and the checksums after release, and status says
so. The work is a few ranges per database on each progress tick, on the replica that runs the migration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import asyncpg

from migration_core.changes import watermarks
from migration_core.engine.context import MigrationContext
from migration_core.pg.servers import ConnectionProblem
from migration_core.pg.sql import ident, qualified
from migration_core.state.journal import TARGET, Change, Payload

IN_FLIGHT = 4  # ranges per database whose watermarks are on their way to the target at once
GIVE_UP_SECONDS = 600.0  # a range whose watermarks did not arrive in this long is checked again later
KEYLESS_LIMIT = 10  # a table without a key is compared whole while it has at most this many chunks' rows

# The migration's published tables with their single-column key (primary key first, else a unique index on
# a NOT NULL column) and its type; NULL key: none
TABLES = """
SELECT t.schemaname AS nspname, t.tablename AS relname, c.relkind::text AS kind, c.reltuples::bigint AS estimate,
  (SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = c.oid AND i.indnkeyatts = 1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
      AND a.attnotnull ORDER BY i.indisprimary DESC, i.indexrelid LIMIT 1) AS keycol,
  (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_index i JOIN pg_attribute a
     ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = c.oid AND i.indnkeyatts = 1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
      AND a.attnotnull ORDER BY i.indisprimary DESC, i.indexrelid LIMIT 1) AS keytype
FROM pg_publication_tables t
JOIN pg_class c ON c.oid = format('%I.%I', t.schemaname, t.tablename)::regclass
WHERE t.pubname = $1 AND t.schemaname <> $2 ORDER BY 1, 2
"""


@dataclass
class RepairPayload(Payload):
    """A range `/pgmig repair` re-copied onto the target (nothing to undo: the target was made like the source)."""

    schema: str = ""
    table: str = ""
    key: str | None = None
    lo: str | None = None
    hi: str | None = None


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    kind: str
    key: str | None
    keytype: str | None

    @property
    def label(self) -> str:
        return qualified(self.schema, self.name)


@dataclass(frozen=True)
class Range:
    table: Table
    lo: str | None  # key text, inclusive; None: from the first row
    hi: str | None  # key text, exclusive; None: to the last row

    @property
    def label(self) -> str:
        if self.table.key is None:
            return f"{self.table.label} (whole table)"
        lo, hi = self.lo or "the first key", self.hi or "the last key"
        return f"{self.table.label} {self.table.key} from {lo} to {hi}" + (" (excluded)" if self.hi else "")


@dataclass
class Pending:
    """A range whose watermarks are on their way to the target, with the source's digest read between them."""

    range: Range
    chunk: int
    rows: int
    digest: str
    issued: float


@dataclass
class Verification:
    """One database's continuous verification (kept in memory with its progress; a restart begins a new pass)."""

    schema: str = ""
    tables: list[Table] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # tables too large to compare whole without a key
    cursor: tuple[int, str | None] = (0, None)  # next table, and the low key of its next range
    again: list[Range] = field(default_factory=list)  # ranges to compare again (changed meanwhile, or differed once)
    pending: dict[int, Pending] = field(default_factory=dict)
    differed: dict[Range, int] = field(default_factory=dict)  # consistent comparisons that differed, in a row
    divergences: dict[Range, str] = field(default_factory=dict)  # differed twice in a row: in words
    passes: int = 0
    ranges_this_pass: int = 0
    verified_this_pass: int = 0
    rows_verified: int = 0
    last_pass_ranges: int | None = None
    last_pass_verified: int = 0  # of those, compared equal during that pass (the rest: again, in the next)

    def summary(self) -> str:
        """One line for status and the live message."""
        done = f"pass {self.passes + 1}: {self.verified_this_pass} ranges verified"
        if self.last_pass_ranges is not None:
            done += f" (the last pass: {self.last_pass_verified} of {self.last_pass_ranges})"
        done += f", {self.rows_verified:,} rows compared in all"
        if self.divergences:
            done += f" · ❌ {len(self.divergences)} range(s) differ: " + "; ".join(list(self.divergences.values())[:3])
        if self.skipped:
            done += f" · not checked while streaming (no key, large): {', '.join(self.skipped[:3])}"
        return done


def _now_id() -> int:
    """A watermark or chunk id: unique across restarts and replicas (nanoseconds), fits a bigint."""
    return time.time_ns()


async def step(ctx: MigrationContext, chunk_rows: int) -> dict[str, list[str]]:
    """One round for every database: results collected, new ranges sent. Returns the divergences (in words)
    per database found so far; the caller alerts on them."""
    found = {}
    for db in ctx.m.databases:
        p = ctx.progress.of(db)
        v = p.verification or Verification()
        p.verification = v
        try:
            if not v.schema:
                v.schema = await watermarks.ensure(ctx.source, ctx.target, db, ctx.journal)
            await _collect(ctx, db, v)
            await _send(ctx, db, v, chunk_rows)
        except (asyncpg.PostgresError, ConnectionProblem, OSError) as exc:  # the next tick tries again
            p.verified = f"verification paused: {exc}"
            continue
        p.verified = v.summary()
        if v.divergences:
            found[db] = list(v.divergences.values())
    return found


async def _collect(ctx: MigrationContext, db: str, v: Verification) -> None:
    if not v.pending:
        return
    async with ctx.target.connection(db) as tgt:
        rows = await tgt.fetch(
            f"SELECT chunk, phase, rows, digest::text AS digest, versions::text AS versions, problem "
            f"FROM {ident(v.schema)}.{watermarks.DIGESTS} WHERE chunk = ANY($1::bigint[])",
            list(v.pending),
        )
        seen: dict[int, dict[str, asyncpg.Record]] = {}
        for r in rows:
            seen.setdefault(r["chunk"], {})[r["phase"]] = r
        finished = []
        for chunk, pending in v.pending.items():
            both = seen.get(chunk, {})
            if "L" not in both or "H" not in both:
                if time.monotonic() - pending.issued > GIVE_UP_SECONDS:
                    finished.append(chunk)
                    v.again.append(pending.range)
                continue
            finished.append(chunk)
            _judge(v, pending, both["L"], both["H"])
        for chunk in finished:
            del v.pending[chunk]
        await watermarks.forget(tgt, v.schema, finished)


def _judge(v: Verification, pending: Pending, low: asyncpg.Record, high: asyncpg.Record) -> None:
    """Compare one range, when the comparison is consistent; else keep it for later."""
    r = pending.range
    if low["problem"] or low["versions"] != high["versions"] or low["digest"] != high["digest"]:
        v.again.append(r)  # written to between the watermarks (or the table is missing there): later
        return
    if (low["rows"], low["digest"]) == (pending.rows, pending.digest):
        v.differed.pop(r, None)
        v.divergences.pop(r, None)
        v.verified_this_pass += 1
        v.rows_verified += pending.rows
        return
    v.differed[r] = v.differed.get(r, 0) + 1
    if v.differed[r] >= 2:
        v.divergences[r] = f"{r.label}: source {pending.rows} rows, target {low['rows']} rows" + (
            ", contents differ" if pending.rows == low["rows"] else ""
        )
    else:
        v.again.append(r)


async def _send(ctx: MigrationContext, db: str, v: Verification, chunk_rows: int) -> None:
    if len(v.pending) >= IN_FLIGHT:
        return
    await ctx.journal.confirm()  # a replica that lost the migration's lease (frozen, then woken) writes nothing
    async with ctx.source.connection(db, data=True) as src:
        if not v.tables and not v.skipped:
            await _plan(src, ctx.journal.object_name(db), v, chunk_rows)
        while len(v.pending) < IN_FLIGHT:
            r = v.again.pop(0) if v.again else await _next(src, v, chunk_rows)
            if r is None:
                return
            chunk = _now_id()
            table = (r.table.schema, r.table.name)
            await watermarks.mark(src, v.schema, _now_id(), chunk, "L", table, r.table.key, r.lo, r.hi)
            rows, digest = await _digest(src, r)
            await watermarks.mark(src, v.schema, _now_id(), chunk, "H", table, r.table.key, r.lo, r.hi)
            v.pending[chunk] = Pending(r, chunk, rows, digest, time.monotonic())


async def _plan(src: asyncpg.Connection, publication: str, v: Verification, chunk_rows: int) -> None:
    for r in await src.fetch(TABLES, publication, v.schema):
        t = Table(r["nspname"], r["relname"], r["kind"], r["keycol"], r["keytype"])
        if t.key is None and (r["estimate"] or 0) > KEYLESS_LIMIT * chunk_rows:
            v.skipped.append(t.label)
        else:
            v.tables.append(t)


async def _next(src: asyncpg.Connection, v: Verification, chunk_rows: int) -> Range | None:
    """The next range of the pass; at the end of a pass, the first of the next. None: nothing to verify."""
    if not v.tables:
        return None
    index, lo = v.cursor
    if index >= len(v.tables):
        v.passes += 1
        v.last_pass_ranges, v.last_pass_verified = v.ranges_this_pass, v.verified_this_pass
        v.ranges_this_pass = v.verified_this_pass = 0
        index, lo = 0, None
    t = v.tables[index]
    hi = None
    if t.key is not None:
        key = f"t.{ident(t.key)}"  # qualified: ORDER BY a bare name would sort by the text output column
        after = f"WHERE {key} >= $1::text::{t.keytype} " if lo is not None else ""
        hi = await src.fetchval(
            f"SELECT {key}::text FROM {_only(t)}{t.label} t {after}ORDER BY {key} OFFSET {int(chunk_rows)} LIMIT 1",
            *([lo] if lo is not None else []),
        )
    v.cursor = (index, hi) if hi is not None else (index + 1, None)
    v.ranges_this_pass += 1
    return Range(t, lo, hi)


def _only(t: Table) -> str:
    return "" if t.kind == "p" else "ONLY "  # a partitioned table's rows are its partitions'


async def _digest(src: asyncpg.Connection, r: Range) -> tuple[int, str]:
    """The source's rows and digest of a range, as the target's trigger computes them."""
    t = r.table
    where, args = watermarks.range_condition(t.key, t.keytype, r.lo, r.hi)
    row = await src.fetchrow(
        f"SELECT count(*) AS n, coalesce(sum(hashtextextended(t::text, 0)), 0)::text AS d "
        f"FROM {_only(t)}{t.label} t WHERE {where}",
        *args,
    )
    return row["n"], row["d"]


async def repair(ctx: MigrationContext, table: str = "") -> list[str]:
    """`/pgmig repair`: every range found to differ (of `table` only, when named: `orders` or
    `sales.orders`) re-copied from the source while replication runs (changes/watermarks.repair), each
    journaled first, then compared again by the next rounds. Returns what was sent, in words."""
    said = []
    for db in ctx.m.databases:
        v = ctx.progress.of(db).verification
        if v is None:
            continue
        chosen = [r for r in v.divergences if not table or table in (r.table.name, f"{r.table.schema}.{r.table.name}")]
        async with ctx.source.connection(db, data=True) as src:
            for r in chosen:
                t = r.table
                entry = await ctx.journal.plan(
                    Change.REPAIR, TARGET, db, r.label, RepairPayload(t.schema, t.name, t.key, r.lo, r.hi)
                )
                chunk = _now_id()
                rows = await watermarks.repair(
                    src, v.schema, _now_id(), chunk, (t.schema, t.name), _only(t), t.key, t.keytype, r.lo, r.hi
                )
                await ctx.journal.done(entry)
                v.divergences.pop(r, None)
                v.differed.pop(r, None)
                v.again.append(r)
                said.append(f"{db}: {r.label} ({rows:,} rows)")
    return said
