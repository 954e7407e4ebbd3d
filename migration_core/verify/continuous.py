"""Continuous verification while an online migration streams: every published table walked in key ranges
of `[online] verify_chunk_rows`, each range's digest compared between source and target *at the same point
of the replication stream*, with no lock taken and replication never paused.

For one range (Netflix DBLog's watermarks, 2020): a low watermark row is committed on the source, the
source's digest of the range is read, a high watermark row is committed. The watermark table is published
with the migration's tables, and on the target a trigger takes the range's digest inside the apply
worker's transaction as each watermark arrives (changes/watermarks.py): the target exactly as the source
was at that watermark's commit (at the high one only the digest of its tuple versions, which is cheaper: the
apply worker waits while it runs). The source's read lies between the two watermarks. When the target's range
did not change between them (the digest of its tuple versions, which moves with every write to a row of
the range, even back to an earlier value, is the same at both), the source's range did not change either
— every source write to it would have been applied in between — so the source's read saw the same rows the
target holds: the comparison is consistent. A range that changed meanwhile is simply checked again later.

A range that changed between its watermarks twice in a row is hot: it is cut in two at its middle key, down
to single rows, so a table the applications write to all the time is still verified without a lock.

A range whose consistent comparison differs twice in a row is a divergence: the status and the channel name
the table and the key range. A table without a single-column key has no key order the two servers share (its
rows' pages differ between them), so it is *sieved*: its rows fall into KEYLESS_PARTS parts by their
content's hash (`hashtextextended` of the row's text, the digest's own hash, shifted right by SIEVE_SHIFT),
and one scan on each side takes every part's digests at once (at each watermark on the target, the source's
between them; the digest is a sum over a part's rows, whatever their order). Each part is judged like a key
range: written to between the watermarks (its tuple versions' digest moved), it waits for the next sieve;
else it compares. A row written between the watermarks spoils only its part(s), so a log appended to all the
time — even a large one — leaves most parts comparable each round, and the parts still open shrink round
after round: a sieve is a scan of the whole table on both sides (the target's inside the apply worker), the
same whatever the number of parts. A large table (more than KEYLESS_LIMIT chunks' rows) is sieved until it
is covered, not again on every pass; when HOT sieves in a row compare no new part it is left to the cutover's
count and the checksums after release, and status says so. A part that differs is named by its hash part
and repaired like a key range. The work is a few ranges per database on each progress tick, on the
replica that runs the migration.

**Coverage.** A table is *covered* once the walk went through it to its end and every range it was cut into
(a keyless table: its parts) compared equal at some point of the stream, with no range of it differing
since. A table in which a range diverged (something wrote to the target behind replication's back, and may
have written elsewhere in it after its ranges were compared) is covered again only by a pass begun after.
From there on the target's copy is the source's as of that point plus every change the subscription applied
after it, in commit order: the cutover's write window (flows/steps/cutover.py) then proves only that every
change committed before the fence arrived — a watermark written after the fence seen on the target — and
counts just the tables that are not covered (a large keyless table written to all the time may never
compare at rest). The covered tables, and where the walk is (the table, and the low key of the first of its
ranges in this pass not yet compared equal), are journaled with the verification objects (so any replica's
status knows them, and a restart walks on from that range, not from the table's start); the keyed tables'
covered share of the rows is what `[online] require_verified_share` asks of a cutover request (a keyless
table, which may never compare at rest, never holds a request back), and `finish` drives the walk on at a
request until that share is reached or a deadline passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeGuard

import asyncpg

from migration_core.changes import watermarks
from migration_core.engine.context import MigrationContext
from migration_core.pg.servers import ConnectionProblem
from migration_core.pg.sql import ident, qualified
from migration_core.state.journal import SOURCE, TARGET, Change, Payload
from migration_core.state.models import utcnow

log = logging.getLogger(__name__)

IN_FLIGHT = 8  # ranges per database whose watermarks are on their way to the target at once
GIVE_UP_SECONDS = 600.0  # a range whose watermarks did not arrive in this long is checked again later
LOST_AFTER = 10.0  # a range still without results this long: were its watermarks applied without digests?
HOT = 2  # a range that changed between its watermarks this many times in a row is cut in two
RESUME_EVERY = 10.0  # the walk's key within a table is journaled at most this often (its table, at once)
WALK_PAUSE = 0.02  # between rounds of a walk that goes on within one tick: the watermarks' way to the target
WALK_BUDGET = 10.0  # at most this long of a tick is spent walking while a database is not covered yet
PASS_SECONDS = 10.0  # a database covered whole begins a new pass at most this often, however often it ticks
KEYLESS_LIMIT = 10  # a table without a key larger than this many chunks' rows: sieved until covered, then left be
KEYLESS_PARTS = 1024  # a table without a key is sieved into this many parts by its rows' hashes (a power of two)
SIEVE_SHIFT = 65 - KEYLESS_PARTS.bit_length()  # a row's part: its hash >> SIEVE_SHIFT, in [-PARTS/2, PARTS/2)
HASH_LOW, HASH_SPAN = -(1 << 63), 1 << 64  # hashtextextended's values: [HASH_LOW, HASH_LOW + HASH_SPAN)
UNSEEN = (0, "0", "0")  # a part without rows on the target: its rows, digest and tuple versions' digest

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


Ref = tuple[str, str]  # (schema, table), as verify/tables.py names relations


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    kind: str
    key: str | None
    keytype: str | None
    estimate: int = 0  # rows, from the planner's statistics: the table's weight in the verified share
    once: bool = False  # a large table without a key: sieved until covered (see the module's docstring)

    @property
    def label(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def ref(self) -> Ref:
        return (self.schema, self.name)


@dataclass(frozen=True)
class Range:
    table: Table
    lo: str | None  # key text (without a key: the rows' hash), inclusive; None: from the first row
    hi: str | None  # key text (without a key: the rows' hash), exclusive; None: to the last row
    walk: int = field(default=0, compare=False)  # the pass it was cut in (not part of its identity)
    # where it lies in its table's walk: cut n-th (n,), its halves (n, 0) and (n, 1): sorts as the keys do
    order: tuple[int, ...] = field(default=(), compare=False)
    sieve: bool = False  # a keyless table's whole rows, compared in KEYLESS_PARTS parts at once (`parts`)

    @property
    def label(self) -> str:
        if self.sieve:
            return f"{self.table.label} (whole table, in {KEYLESS_PARTS} hash parts)"
        if self.table.key is None:
            low, width = self.hashes()
            return f"{self.table.label} (rows in hash part {(low - HASH_LOW) // width + 1} of {HASH_SPAN // width})"
        lo, hi = self.lo or "the first key", self.hi or "the last key"
        return f"{self.table.label} {self.table.key} from {lo} to {hi}" + (" (excluded)" if self.hi else "")

    def hashes(self) -> tuple[int, int]:
        """A keyless table's range: its rows' lowest hash, and how many hashes it spans."""
        low = int(self.lo) if self.lo is not None else HASH_LOW
        return low, (int(self.hi) if self.hi is not None else HASH_LOW + HASH_SPAN) - low

    def parts(self) -> dict[int, Range]:
        """A sieve's parts by their number (a row's hash >> SIEVE_SHIFT), each a range of hashes."""
        first = -KEYLESS_PARTS // 2

        def bound(b: int) -> str | None:  # the lowest and highest parts run to the end of the hashes
            return None if b in (first, -first) else str(b << SIEVE_SHIFT)

        return {
            b: Range(self.table, bound(b), bound(b + 1), self.walk, (*self.order, b - first))
            for b in range(first, -first)
        }


@dataclass
class Pending:
    """A range whose watermarks are on their way to the target, with the source's digest read between them."""

    range: Range
    chunk: int
    rows: int
    digest: str
    issued: float
    position: str = ""  # the source's WAL position once the high watermark was committed
    parts: dict[int, tuple[int, str]] = field(default_factory=dict)  # a sieve: each non-empty part's rows, digest


@dataclass
class Verification:
    """One database's continuous verification: the walk and its results in memory with its progress, the
    covered tables also in the journal (a restart keeps them and walks again for the rest)."""

    schema: str = ""
    planned: bool = False
    tables: list[Table] = field(default_factory=list)
    spoiled: set[Ref] = field(default_factory=set)  # large keyless tables whose sieves compared nothing: left
    cursor: tuple[int, str | None] = (0, None)  # next table, and the low key of its next range
    again: list[Range] = field(default_factory=list)  # ranges to compare again (changed meanwhile, or differed once)
    pending: dict[int, Pending] = field(default_factory=dict)
    changed: dict[Range, int] = field(default_factory=dict)  # comparisons the range's writes spoiled, in a row
    differed: dict[Range, int] = field(default_factory=dict)  # consistent comparisons that differed, in a row
    divergences: dict[Range, str] = field(default_factory=dict)  # differed twice in a row: in words
    open: dict[tuple[Ref, int], set[Range]] = field(default_factory=dict)  # not yet compared equal, by table, pass
    scanned: set[tuple[Ref, int]] = field(default_factory=set)  # tables a pass went through to their end
    covered: set[Ref] = field(default_factory=set)  # see the module's docstring
    fresh: dict[Ref, int] = field(default_factory=dict)  # a table that diverged: covered only by a pass from this
    covered_at: datetime | None = None
    journaled: tuple[frozenset[Ref], float | None, Ref | None, int] = (frozenset(), None, None, 0)  # as journaled
    journaled_key: tuple[str | None, float] = (None, 0.0)  # the walk's key as journaled, and when (monotonic)
    resume: Ref | None = None  # the table the walk was on when this process took over, from the journal
    resume_key: str | None = None  # and the low key of its first range not compared equal then (None: its start)
    passes: int = 0
    pass_began: float = 0.0  # when this process began the current pass (monotonic; 0: not yet)
    lost_said: bool = False  # ranges applied on the target without digests were logged (once)
    cut: int = 0  # ranges cut so far (Range.order)
    rows_verified: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)  # one walker at a time

    def share(self) -> float | None:
        """The covered share of the keyed tables' rows (planner estimates; each table weighs at least one
        row); None until the tables are known. A table without a key, which may never compare at rest while it
        is written to, is counted at cutover unless it is covered by then."""
        if not self.planned:
            return None
        weights = {t.ref: max(t.estimate, 1) for t in self.tables if t.key is not None}
        total = sum(weights.values())
        return 1.0 if not total else sum(w for ref, w in weights.items() if ref in self.covered) / total

    def summary(self) -> str:
        """One line for status and the live message: "verified 98 % at 12:04, 3 ranges pending, 0 differences"."""
        share = self.share()
        if share is None:
            return "verification starting"
        done = f"verified {share * 100:.0f} %"
        if self.covered_at is not None:
            done += f" at {self.covered_at:%H:%M}"
        sieved = {t.ref for t in self.tables if t.key is None}  # a keyless table's open parts: one sieve to send
        pending = sum(min(len(s), 1) if ref in sieved else len(s) for (ref, _), s in self.open.items())
        done += f", {pending} ranges pending, {len(self.divergences)} differences"
        done += f" (pass {self.passes + 1}, {self.rows_verified:,} rows compared)"
        if self.divergences:
            done += " · ❌ " + "; ".join(list(self.divergences.values())[:3])
        keyless = [self._sieving(t) for t in self.tables if t.key is None and t.ref not in self.covered]
        if keyless:
            done += f" · counted at cutover (no key): {', '.join(keyless[:3])}" + (" …" if len(keyless) > 3 else "")
        return done

    def _sieving(self, t: Table) -> str:
        """A keyless table not covered, with how far its latest pass's sieves got (a large one's each cost a
        scan of it on both sides: worth showing while it is covered)."""
        walks = [walk for ref, walk in self.open if ref == t.ref]
        if t.ref in self.spoiled or not walks:
            return t.label
        compared = KEYLESS_PARTS - len(self.open[(t.ref, max(walks))])
        return f"{t.label} ({compared} of {KEYLESS_PARTS} parts compared)"

    def at_rest(self) -> bool:
        """Every table covered (or a large keyless one left) and none differing: a new pass only refreshes the
        proof, so it need not begin on every tick (a live message refreshed every second would otherwise re-read
        a small database every second)."""
        return not self.divergences and all(t.ref in self.covered or t.ref in self.spoiled for t in self.tables)

    def walking(self) -> Ref | None:
        """The table the walk is on (None: about to begin a pass)."""
        index = self.cursor[0]
        return self.tables[index].ref if index < len(self.tables) else None

    def walked_to(self) -> str | None:
        """Where a restart may walk on from in the table the walk is on: the low key of the first of its ranges
        this pass has not compared equal yet (every range before it has), or the walk's next key when none is
        open. None: from the table's start."""
        ref = self.walking()
        if ref is None:
            return None
        waiting = self.open.get((ref, self.passes))
        return min(waiting, key=lambda r: r.order).lo if waiting else self.cursor[1]

    def settle(self, ref: Ref, walk: int) -> None:
        """Cover a table once one pass went through it and every range that pass cut it into compared equal,
        none of the table's ranges differing, and the pass began after the table last diverged."""
        key = (ref, walk)
        if walk < self.fresh.get(ref, 0):  # walked in part before the table diverged: what else was written then?
            self.scanned.discard(key)
            self.open.pop(key, None)
            return
        if key not in self.scanned or self.open.get(key):
            return
        self.scanned.discard(key)
        self.open.pop(key, None)
        walked = any(t.ref == ref for t in self.tables)
        differs = any(r.table.ref == ref for r in self.divergences)
        if walked and not differs and ref not in self.covered:
            self.covered.add(ref)
            self.covered_at = utcnow()


def _now_id() -> int:
    """A watermark or chunk id: unique across restarts and replicas (nanoseconds), fits a bigint."""
    return time.time_ns()


async def step(ctx: MigrationContext, chunk_rows: int, budget: float = 0.0) -> dict[str, list[str]]:
    """One round for every database: results collected, new ranges sent, what is covered journaled; a
    database not yet covered whole keeps walking for its share of `budget` seconds (so coverage does not
    wait for a tick per four ranges; once covered, one round a tick, and a new pass at most every PASS_SECONDS,
    keep the source's cost low).
    Returns the divergences (in words) per database found so far; the caller alerts on them."""
    found = {}
    for db in ctx.m.databases:
        p = ctx.progress.of(db)
        v = p.verification or Verification()
        p.verification = v
        deadline = time.monotonic() + budget / len(ctx.m.databases)
        async with v.lock:
            try:
                if not v.schema:
                    schema = await watermarks.ensure(ctx.source, ctx.target, db, ctx.journal)
                    if schema is None:  # the migration stopped streaming since this look began
                        continue
                    await ctx.journal.confirm()  # a woken replica that lost the lease redefines nothing
                    await watermarks.renew(ctx.target, db, ctx.journal)
                    v.schema = schema
                    await _restore(ctx, db, v)
                await _collect(ctx, db, v)
                await _send(ctx, db, v, chunk_rows)
                while (v.share() or 0) < 1.0 and time.monotonic() < deadline:
                    await asyncio.sleep(WALK_PAUSE)
                    await _collect(ctx, db, v)
                    await _send(ctx, db, v, chunk_rows)
                await _journal(ctx, db, v)
            except (asyncpg.PostgresError, ConnectionProblem, OSError) as exc:  # the next tick tries again
                p.verified = f"verification paused: {exc}"
                continue
        p.verified = v.summary()
        if v.divergences:
            found[db] = list(v.divergences.values())
    return found


async def finish(ctx: MigrationContext, chunk_rows: int, share: float, within: float) -> None:
    """Walk on (on the replica that runs the migration) until every database's covered share reaches
    `share`, or `within` seconds pass: a cutover request of a small or already verified database need
    not wait for the next ticks."""
    deadline = time.monotonic() + within
    while True:
        await step(ctx, chunk_rows)
        shares = [ctx.progress.of(db).verification for db in ctx.m.databases]
        if all(v is not None and (v.share() or 0) >= share for v in shares) or time.monotonic() >= deadline:
            return
        await asyncio.sleep(WALK_PAUSE)


async def journaled(ctx: MigrationContext) -> dict[str, watermarks.VerifierObjects]:
    """Each database's verification as journaled by the replica walking it (any replica can read it)."""
    found = {}
    for db in ctx.m.databases:
        entry = await ctx.journal.find(Change.VERIFIER, SOURCE, db, watermarks.schema_name(ctx.journal, db))
        if entry is not None and entry.live:
            found[db] = watermarks.VerifierObjects.of(entry)
    return found


async def shares(ctx: MigrationContext) -> dict[str, float | None]:
    """Each database's covered share as journaled; None: not walked yet."""
    made = await journaled(ctx)
    return {db: made[db].share if db in made else None for db in ctx.m.databases}


async def elsewhere(ctx: MigrationContext) -> None:
    """On a replica that does not run the migration: status's verification line from the journal."""
    for db, made in (await journaled(ctx)).items():
        p = ctx.progress.of(db)
        if p.verification is None and made.share is not None:
            at = f" at {datetime.fromisoformat(made.at):%H:%M}" if made.at else ""
            p.verified = f"verified {made.share * 100:.0f} %{at} (journaled by the replica running it)"


def running(v: Verification | None) -> TypeGuard[Verification]:
    """Whether continuous verification runs here for a database (its objects made): the cutover's catch-up is
    then the fence's watermark seen on the target, not the slot's confirmed position."""
    return v is not None and bool(v.schema)


def proven(ctx: MigrationContext, db: str) -> frozenset[Ref]:
    """The tables of `db` this replica's continuous verification covers (see the module's docstring)."""
    v = ctx.progress.of(db).verification
    return frozenset(v.covered) if running(v) else frozenset()


async def _restore(ctx: MigrationContext, db: str, v: Verification) -> None:
    """After a restart (or on another replica): the tables covered before, from the journal."""
    entry = await ctx.journal.find(Change.VERIFIER, SOURCE, db, v.schema)
    if entry is not None:
        made = watermarks.VerifierObjects.of(entry)
        v.covered = {(r[0], r[1]) for r in made.covered}
        v.resume = (made.walking[0], made.walking[1]) if len(made.walking) >= 2 else None
        v.resume_key = made.walking[2] if len(made.walking) == 3 else None
        v.passes = made.passes
        v.journaled = (frozenset(v.covered), made.share, v.resume, v.passes)
        v.journaled_key = (v.resume_key, time.monotonic())
        v.covered_at = datetime.fromisoformat(made.at) if made.at else None


async def _journal(ctx: MigrationContext, db: str, v: Verification) -> None:
    """The covered tables and their share, and the table the walk is on, journaled when they changed (a few
    times a pass, not on every tick); the walk's key within that table at most every RESUME_EVERY seconds."""
    now = (frozenset(v.covered), v.share(), v.walking(), v.passes)
    key = v.walked_to()
    moved = key != v.journaled_key[0] and time.monotonic() - v.journaled_key[1] >= RESUME_EVERY
    if (now == v.journaled and not moved) or not v.planned:
        return
    entry = await ctx.journal.find(Change.VERIFIER, SOURCE, db, v.schema)
    if entry is None:
        return
    made = watermarks.VerifierObjects.of(entry)
    made.covered = sorted([list(r) for r in v.covered])
    made.share = v.share()
    made.at = v.covered_at.isoformat() if v.covered_at else ""
    made.walking = [*now[2], *([key] if key is not None else [])] if now[2] else []
    made.passes = v.passes
    await ctx.journal.note(entry, made)
    v.journaled, v.journaled_key = now, (key, time.monotonic())


async def _collect(ctx: MigrationContext, db: str, v: Verification) -> None:
    if not v.pending:
        return
    late = [p for p in v.pending.values() if p.position and time.monotonic() - p.issued > LOST_AFTER]
    confirmed = await _confirmed(ctx, db, late)  # read before the results: applied then, the results are there
    async with ctx.kept(ctx.target, db) as tgt:
        rows = await tgt.fetch(
            f"SELECT chunk, phase, rows, digest::text AS digest, versions::text AS versions, problem, "
            f"parts::text AS parts "
            f"FROM {ident(v.schema)}.{watermarks.DIGESTS} WHERE chunk = ANY($1::bigint[])",
            list(v.pending),
        )
        seen: dict[int, dict[str, asyncpg.Record]] = {}
        for r in rows:
            seen.setdefault(r["chunk"], {})[r["phase"]] = r
        lost = {p.chunk for p in late if p.position in confirmed and len(seen.get(p.chunk, {})) < 2}
        if lost and not v.lost_said:
            await ctx.journal.confirm()  # it may refresh the subscription: only while this replica holds the lease
            why = await watermarks.lost(tgt, v.schema, ctx.journal, db)
            log.warning("%s %s: %d range(s) applied on the target without digests (%s)", ctx.mid, db, len(lost), why)
            v.lost_said = True  # said: a look that died before saying it looks again
        finished = []
        for chunk, pending in v.pending.items():
            both = seen.get(chunk, {})
            if "L" not in both or "H" not in both:
                if time.monotonic() - pending.issued > GIVE_UP_SECONDS or chunk in lost:
                    finished.append(chunk)
                    v.again.append(pending.range)
                continue
            finished.append(chunk)
            _judge(v, pending, both["L"], both["H"])
        for chunk in finished:
            del v.pending[chunk]
        await watermarks.forget(tgt, v.schema, finished)


async def _confirmed(ctx: MigrationContext, db: str, late: list[Pending]) -> set[str]:
    """Of the high watermarks of ranges long without results, the positions the subscriber confirmed: the
    target applied those without taking digests (LOST_AFTER), and waiting on would hold the walk for
    GIVE_UP_SECONDS. `_collect` sends them again, and says why once per database, the subscription
    refreshed if it lacked the watermark table."""
    if not late:
        return set()
    async with ctx.kept(ctx.source, db) as src:
        return await watermarks.applied(src, ctx.journal.object_name(db), [p.position for p in late])


def _judge(v: Verification, pending: Pending, low: asyncpg.Record, high: asyncpg.Record) -> None:
    """Compare one range, when the comparison is consistent; else keep it for later."""
    r = pending.range
    if r.sieve:
        _judge_parts(v, pending, low, high)
        return
    if low["problem"] or high["problem"] or low["versions"] != high["versions"]:
        v.changed[r] = v.changed.get(r, 0) + 1  # written to between the watermarks (or missing there): later
        v.again.append(r)
        return
    v.changed.pop(r, None)
    if (low["rows"], low["digest"]) == (pending.rows, pending.digest):
        v.differed.pop(r, None)
        v.divergences.pop(r, None)
        v.rows_verified += pending.rows
        v.open.get((r.table.ref, r.walk), set()).discard(r)
        v.settle(r.table.ref, r.walk)
        return
    if not _differs(v, r, pending.rows, low["rows"]):
        v.again.append(r)


def _differs(v: Verification, r: Range, source_rows: int, target_rows: int) -> bool:
    """A consistent comparison of `r` that differed: a divergence when the one before did too (True)."""
    v.differed[r] = v.differed.get(r, 0) + 1
    if v.differed[r] < 2:
        return False
    v.divergences[r] = f"{r.label}: source {source_rows} rows, target {target_rows} rows" + (
        ", contents differ" if source_rows == target_rows else ""
    )
    v.covered.discard(r.table.ref)
    v.fresh[r.table.ref] = v.passes + 1  # something wrote behind replication's back: a whole pass again
    return True


def _judge_parts(v: Verification, pending: Pending, low: asyncpg.Record, high: asyncpg.Record) -> None:
    """Compare each part of a sieve that this pass has not compared equal yet, those not written to between
    the watermarks; the sieve goes again while any such part is left. HOT sieves in a row that compared no
    new part make a large table hot (`_split` leaves it)."""
    r = pending.range
    if low["problem"] or high["problem"] or low["parts"] is None or high["parts"] is None:
        v.changed[r] = v.changed.get(r, 0) + 1
        v.again.append(r)
        return
    lows, highs = json.loads(low["parts"]), json.loads(high["parts"])
    waiting = v.open.get((r.table.ref, r.walk), set())
    compared, left = False, False
    for b, part in r.parts().items():
        if part not in waiting and part not in v.differed:
            continue  # compared equal in this pass already
        (rows, digest, versions), moved = lows.get(str(b), UNSEEN), highs.get(str(b), UNSEEN)[2]
        if versions != moved:
            left = True  # written to between the watermarks: the next sieve
            continue
        source = pending.parts.get(b, (0, "0"))
        if (rows, digest) == source:
            v.differed.pop(part, None)
            v.divergences.pop(part, None)
            v.rows_verified += rows
            compared = compared or part in waiting
            waiting.discard(part)
        elif not _differs(v, part, source[0], rows):
            left = True
    if compared:
        v.changed.pop(r, None)
    elif left:
        v.changed[r] = v.changed.get(r, 0) + 1
    if left:
        v.again.append(r)
    v.settle(r.table.ref, r.walk)


async def _send(ctx: MigrationContext, db: str, v: Verification, chunk_rows: int) -> None:
    if len(v.pending) >= IN_FLIGHT:
        return
    await ctx.journal.confirm()  # a replica that lost the migration's lease (frozen, then woken) writes nothing
    async with ctx.kept(ctx.source, db, data=True) as src:
        if not v.planned:
            await _plan(src, ctx.journal.object_name(db), v, chunk_rows)
        while len(v.pending) < IN_FLIGHT:
            if v.again:
                r = await _split(src, v, v.again.pop(0))
                if r is None:  # left (a large keyless table written to all the time)
                    continue
            elif (r := await _next(src, v, chunk_rows)) is None:
                return
            chunk = _now_id()
            table, shift = (r.table.schema, r.table.name), SIEVE_SHIFT if r.sieve else None
            await watermarks.mark(src, v.schema, _now_id(), chunk, "L", table, r.table.key, r.lo, r.hi, shift)
            rows, digest, parts = await (_sieved(src, r) if r.sieve else _digest(src, r))
            await watermarks.mark(src, v.schema, _now_id(), chunk, "H", table, r.table.key, r.lo, r.hi, shift)
            position = await src.fetchval("SELECT pg_current_wal_lsn()::text")
            v.pending[chunk] = Pending(r, chunk, rows, digest, time.monotonic(), position, parts)


async def _split(src: asyncpg.Connection, v: Verification, r: Range) -> Range | None:
    """A hot range (see HOT) cut at its middle key: the first half is returned, the second queued; a range of
    one row stays whole, and so does a keyless table's (a sieve, or one part repaired): sieved again. A large
    keyless table is left when hot (None)."""
    t = r.table
    if v.changed.get(r, 0) < HOT:
        return r
    if t.once:
        v.spoiled.add(t.ref)
        v.changed.pop(r, None)
        v.open.pop((t.ref, r.walk), None)
        return None
    if t.key is None:
        return r
    key = f"t.{ident(t.key)}"
    where, args = watermarks.range_condition(t.key, t.keytype, r.lo, r.hi)
    middle = await src.fetchval(
        f"SELECT {key}::text FROM {_only(t)}{t.label} t WHERE {where} ORDER BY {key} "
        f"OFFSET greatest((SELECT count(*) FROM {_only(t)}{t.label} t WHERE {where}) / 2, 1) LIMIT 1",
        *args,
    )
    if middle is None or middle == r.lo:
        return r
    first, second = Range(t, r.lo, middle, r.walk, (*r.order, 0)), Range(t, middle, r.hi, r.walk, (*r.order, 1))
    v.changed.pop(r, None)
    ranges = v.open.setdefault((t.ref, r.walk), set())
    ranges.discard(r)
    ranges.update((first, second))
    v.again.append(second)
    return first


async def _plan(src: asyncpg.Connection, publication: str, v: Verification, chunk_rows: int) -> None:
    for r in await src.fetch(TABLES, publication, v.schema):
        estimate = max(r["estimate"] or 0, 0)
        once = r["keycol"] is None and estimate > KEYLESS_LIMIT * chunk_rows
        v.tables.append(Table(r["nspname"], r["relname"], r["kind"], r["keycol"], r["keytype"], estimate, once))
    v.planned = True
    v.covered &= {t.ref for t in v.tables}  # a restart keeps only what is still walked
    refs = [t.ref for t in v.tables]
    if v.resume in refs:  # walk on from the first range of the table the walk was on not compared equal then
        index = refs.index(v.resume)
        v.cursor = (index, v.resume_key if v.tables[index].key is not None else None)


async def _next(src: asyncpg.Connection, v: Verification, chunk_rows: int) -> Range | None:
    """The next range of the walk; at the end of a pass, the first of the next. None: nothing to verify. A large
    keyless table is not walked once covered or left, nor while a sieve of it is on its way or queued (each is
    a scan of the whole table on both sides: one pass at a time)."""
    sieving = {p.range.table.ref for p in v.pending.values()} | {r.table.ref for r in v.again}
    walked = [
        i
        for i, t in enumerate(v.tables)
        if not (t.once and (t.ref in v.covered or t.ref in v.spoiled or t.ref in sieving))
    ]
    if not walked:
        return None
    index, lo = v.cursor
    if index not in walked:  # the end of a pass, or a large keyless table compared already (or left)
        later = [i for i in walked if i > index]
        if not later:
            if v.at_rest() and time.monotonic() - v.pass_began < PASS_SECONDS:
                return None  # another pass now would only re-read what is proven: the next, PASS_SECONDS apart
            v.passes += 1
            v.pass_began = time.monotonic()
        index, lo = (later or walked)[0], None
    t = v.tables[index]
    hi = None
    if t.key is not None:
        key = f"t.{ident(t.key)}"  # qualified: ORDER BY a bare name would sort by the text output column
        after = f"WHERE {key} >= $1::text::{t.keytype} " if lo is not None else ""
        hi = await src.fetchval(
            f"SELECT {key}::text FROM {_only(t)}{t.label} t {after}ORDER BY {key} OFFSET {int(chunk_rows)} LIMIT 1",
            *([lo] if lo is not None else []),
        )
    v.cut += 1
    r = Range(t, lo, hi, v.passes, (v.cut,), sieve=t.key is None)
    v.open.setdefault((t.ref, v.passes), set()).update(r.parts().values() if r.sieve else [r])
    if hi is None:
        v.cursor = (index + 1, None)
        v.scanned.add((t.ref, v.passes))
    else:
        v.cursor = (index, hi)
    return r


def _only(t: Table) -> str:
    return "" if t.kind == "p" else "ONLY "  # a partitioned table's rows are its partitions'


async def _digest(src: asyncpg.Connection, r: Range) -> tuple[int, str, dict[int, tuple[int, str]]]:
    """The source's rows and digest of a range, as the target's trigger computes them."""
    t = r.table
    where, args = watermarks.range_condition(t.key, t.keytype, r.lo, r.hi)
    row = await src.fetchrow(
        f"SELECT count(*) AS n, coalesce(sum({watermarks.ROW_HASH}), 0)::text AS d "
        f"FROM {_only(t)}{t.label} t WHERE {where}",
        *args,
    )
    return row["n"], row["d"], {}


async def _sieved(src: asyncpg.Connection, r: Range) -> tuple[int, str, dict[int, tuple[int, str]]]:
    """The source's rows and digest of each non-empty part of a keyless table, in one scan, as the target's
    trigger computes them."""
    t = r.table
    found = await src.fetch(
        f"SELECT h >> {SIEVE_SHIFT} AS b, count(*) AS n, sum(h)::text AS d "
        f"FROM (SELECT {watermarks.ROW_HASH} AS h FROM {_only(t)}{t.label} t) s GROUP BY 1"
    )
    return sum(p["n"] for p in found), "", {p["b"]: (p["n"], p["d"]) for p in found}


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
        async with v.lock, ctx.kept(ctx.source, db, data=True) as src:
            for r in chosen:
                t = r.table
                entry = await ctx.journal.plan(
                    Change.REPAIR, TARGET, db, r.label, RepairPayload(t.schema, t.name, t.key, r.lo, r.hi)
                )
                chunk = _now_id()
                rows, held = await watermarks.repair(
                    src, v.schema, _now_id(), chunk, (t.schema, t.name), _only(t), t.key, t.keytype, r.lo, r.hi
                )
                await ctx.journal.done(entry)
                v.divergences.pop(r, None)
                v.differed.pop(r, None)
                v.again.append(r)
                said.append(f"{db}: {r.label} ({rows:,} rows; writes to the table waited {held:.2f} s)")
    return said
