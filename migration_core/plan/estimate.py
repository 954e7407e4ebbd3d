"""The arithmetic of a plan's duration estimate: measured rates in, ranges of seconds out. Pure (no I/O), so
the model is unit-tested on its own and every factor it assumes is named here, once.

The model, per database: fixed costs (the client programs' passes over the schema, each about as long as the
`pg_dump -s` the plan timed; and a few statements per table, each a measured round trip), and data work at the
source's measured read rate: the copy (read on the source and written on the target), the index builds (they
read the table and write the index) and the verification (a checksum pass over both sides). Each phase carries
its own passes (a migration times its copy and index builds whole: plan/review.py sets them beside these); the
rest is the overhead. Parallel streams divide the data work, but a table no larger than the copy's split size
is one stream's whole: the largest such table bounds the phase however many streams there are. With early
verification (the offline restore method) the checksums ride on the copy, and the verify step only has its pass
left. An earlier migration's measured rates, when there is one, say what really happened: between the same
servers the copy, the index builds and the whole import are centred on what they predict (the sample is a
moment's read, the earlier migration a whole one); between other servers they only widen the ranges to it."""

from __future__ import annotations

from dataclasses import dataclass

SPREAD = 1.5  # a range is the central estimate divided and multiplied by this
COPY_FACTOR = 2.0  # the target writes what the source reads: a copy takes about twice the timed read
INDEX_FACTOR = 2.0  # an index build reads its table's keys, sorts them and writes the index
VERIFY_FACTOR = 1.0  # counts and checksums read both sides at once, at about the read rate
# The passes of a database's migration that each cost about one `pg_dump -s` (a login, often a process, a walk
# through the catalog): roles, the schema export, CREATE DATABASE, pg_restore pre-data, the copy's planning,
# the post-data listing, the key builds, pg_restore post-data, sequences and large objects, materialized
# views, ANALYZE, the verification.
SCHEMA_PASSES = 12
COPY_PASSES = 1  # of them, the copy's: its sessions, snapshot and table list
INDEX_PASSES = 2  # the index builds': the key builds, pg_restore post-data (its listing reads only the archive)
VERIFY_PASSES = 1  # the verification's
STATEMENTS_PER_TABLE = 12  # per table: COPY out and in, truncate, counts, checksums, ANALYZE, index statements…


@dataclass(frozen=True)
class Range:
    """Seconds (or bytes): at least `low`, at most `high`."""

    low: float
    high: float

    @classmethod
    def around(cls, central: float, spread: float = SPREAD) -> Range:
        return cls(central / spread, central * spread)

    def __add__(self, other: Range) -> Range:
        return Range(self.low + other.low, self.high + other.high)

    def __mul__(self, factor: float) -> Range:
        return Range(self.low * factor, self.high * factor)

    def covering(self, value: float) -> Range:
        """This range widened to include `value` (another measure of the same thing)."""
        return Range(min(self.low, value), max(self.high, value))

    def ratio(self, actual: float) -> float:
        """How far `actual` lies outside the range, as a factor ≥ 1 (1: inside it)."""
        if actual < self.low:
            return self.low / max(actual, 1e-9)
        if actual > self.high:
            return actual / max(self.high, 1e-9)
        return 1.0


def seconds_text(seconds: float) -> str:
    """`40 ms`, `0.42 s`, `4.2 s`, `12 s`, `3.5 min`, `2.1 h`: as precise as an estimate deserves."""
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def range_text(r: Range) -> str:
    """`0.4 s – 0.9 s`; one value when both ends read the same."""
    low, high = seconds_text(r.low), seconds_text(r.high)
    return low if low == high else f"{low} – {high}"


@dataclass(frozen=True)
class Workload:
    """What one database holds, as the estimate needs it."""

    tables: int
    rows: int
    heap_bytes: int  # the tables' pages (pg_relation_size): what COPY reads
    index_bytes: int
    schema_seconds: float | None  # the timed `pg_dump -s` of it; None when it could not be timed
    largest_heap: int = 0  # its largest table's pages, and that table's indexes: one stream's, unless split
    largest_indexes: int = 0


@dataclass(frozen=True)
class Learned:
    """What an earlier migration measured: bytes of table pages a second its copy moved, bytes of index a second
    its index builds made, rows a second over its whole import (None where it did not measure one)."""

    copy: float | None = None
    indexes: float | None = None
    rows: float | None = None
    same_servers: bool = False  # measured between the same two servers: what it predicts is the centre


@dataclass(frozen=True)
class Rates:
    """What was measured: the source's read rate, a statement's round trip and, from an earlier migration,
    its rates (None: none to learn from)."""

    read_bytes_per_second: float
    round_trip_seconds: float
    streams: int  # parallel copy streams
    learned: Learned | None = None
    split_bytes: int = 1 << 30  # tables larger than this are copied (and checksummed) as ranges, in parallel


@dataclass(frozen=True)
class Estimate:
    """Each phase as a range of seconds; `import_` is overhead + copy + indexes (what an import or a full load
    step takes), widened to what an earlier migration's import took at its rate, when there is one."""

    overhead: Range
    copy: Range
    indexes: Range
    verify: Range
    import_: Range

    @property
    def total(self) -> Range:
        return self.import_ + self.verify


def estimate(work: Workload, rates: Rates, early_verify: bool = False) -> Estimate:
    """One database's estimate from its workload and the measured rates. `early_verify`: tables are compared as
    their copy commits (the offline restore method), so the checksums are part of the copy."""
    streams = max(1, min(rates.streams, work.tables))
    rate = max(rates.read_bytes_per_second, 1.0)
    passes = work.schema_seconds or 0.0
    heap = _per_stream(work.heap_bytes, work.largest_heap, streams, rates.split_bytes)
    index = _per_stream(
        work.index_bytes,
        work.largest_indexes if work.largest_heap <= rates.split_bytes else 0,
        streams,
        rates.split_bytes,
    )
    checksums = heap * VERIFY_FACTOR / rate
    rest = SCHEMA_PASSES - COPY_PASSES - INDEX_PASSES - VERIFY_PASSES
    overhead = Range.around(passes * rest + work.tables * STATEMENTS_PER_TABLE * rates.round_trip_seconds)
    copy = Range.around(passes * COPY_PASSES + heap * COPY_FACTOR / rate + (checksums if early_verify else 0.0))
    indexes = Range.around(passes * INDEX_PASSES + index * INDEX_FACTOR / rate)
    verify = Range.around(passes * VERIFY_PASSES + (0.0 if early_verify else checksums))
    learned = rates.learned or Learned()
    if learned.copy:
        copy = _learnt(copy, work.heap_bytes / learned.copy, learned.same_servers)
    if learned.indexes:
        indexes = _learnt(indexes, work.index_bytes / learned.indexes, learned.same_servers)
    import_ = overhead + copy + indexes
    if learned.rows:
        import_ = _learnt(import_, work.rows / learned.rows, learned.same_servers)
    return Estimate(overhead, copy, indexes, verify, import_)


def _per_stream(total: int, largest: int, streams: int, split: int) -> float:
    """The bytes the busiest stream gets through: an even share, or the largest table when it goes whole."""
    return max(total / streams, largest if largest <= split else 0)


def _learnt(sampled: Range, predicted: float, same_servers: bool) -> Range:
    """A phase's range given what an earlier migration predicts for it: centred on it between the same servers,
    else the sampled range widened to it."""
    return Range.around(predicted) if same_servers else sampled.covering(predicted)


def wal_held(bytes_per_second: float, during: Range) -> Range:
    """The WAL a slot holds by the end of `during` (the full load), at the source's measured WAL rate."""
    return during * bytes_per_second


def identity_full_cost(changes_per_hour: float, rows: int, row_bytes: float) -> tuple[float, float]:
    """REPLICA IDENTITY FULL on a table without a key: (extra WAL bytes an hour — each update or delete logs
    the whole old row; rows the subscriber scans an hour — with no index to find a row by, each change
    scans the table)."""
    return changes_per_hour * row_bytes, changes_per_hour * rows
