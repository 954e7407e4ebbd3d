"""A large table cut into ranges that parallel streams copy, and checksum, independently.

By a unique not-null integer key where the table has one (its primary key first), otherwise by `ctid`
page ranges, which PostgreSQL 14+ reads with a TID range scan (an older source reads the whole table
for each range, so its tables stay whole). The first range is open below and the last open above, so
the ranges cover every row visible to the snapshot whatever the statistics said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

from migration_core.pg.sql import ident, qualified

TID_RANGE_SCAN = 140000  # server_version_num with TID range scans

INTEGER_KEY = (
    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
    "WHERE i.indrelid = $1::regclass AND i.indnatts = 1 AND i.indisunique AND i.indisvalid "
    "AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attnotnull "
    "AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) "
    "ORDER BY i.indisprimary DESC, a.attname LIMIT 1"
)


@dataclass(frozen=True)
class Range:
    """One stream's share of a table: `where` is empty for the whole table."""

    where: str = ""
    size: int = 0  # estimated bytes on disk
    index: int = 1
    of: int = 1

    @property
    def label(self) -> str:
        return f"range {self.index}/{self.of}" if self.of > 1 else ""


def count(size: int, limit: int, parallel: int) -> int:
    """How many ranges a table of `size` bytes is cut into: none above `limit` bytes each, and at
    least one per stream once it is split, so one big table keeps every stream busy."""
    if size <= limit:
        return 1
    return max(math.ceil(size / limit), parallel)


def _between(column: str, bounds: list[str]) -> list[str]:
    """`column < b1`, `column >= b1 AND column < b2`, …, `column >= bn`: open at both ends."""
    conditions = [f"{column} < {bounds[0]}"]
    conditions += [f"{column} >= {lo} AND {column} < {hi}" for lo, hi in zip(bounds, bounds[1:], strict=False)]
    conditions.append(f"{column} >= {bounds[-1]}")
    return conditions


async def split(
    conn: asyncpg.Connection, schema: str, name: str, size: int, limit: int, parallel: int, server_version: int
) -> list[Range]:
    """The ranges of one table, read on `conn` (under the copy's snapshot). Whole when small."""
    n = count(size, limit, parallel)
    if n == 1:
        return [Range(size=size)]
    table = qualified(schema, name)
    conditions: list[str] = []
    key = await conn.fetchval(INTEGER_KEY, table)
    if key is not None:
        lo, hi = await conn.fetchrow(f"SELECT min({ident(key)}), max({ident(key)}) FROM ONLY {table}")
        if lo is not None and hi > lo:
            bounds = sorted({lo + (hi - lo + 1) * i // n for i in range(1, n)} - {lo})
            conditions = _between(ident(key), [str(b) for b in bounds]) if bounds else []
    elif server_version >= TID_RANGE_SCAN:
        pages = size // int(await conn.fetchval("SELECT current_setting('block_size')"))
        bounds = sorted({pages * i // n for i in range(1, n)} - {0})
        conditions = _between("ctid", [f"'({b},0)'::tid" for b in bounds]) if bounds else []
    if len(conditions) < 2:
        return [Range(size=size)]
    return [Range(c, size // len(conditions), i + 1, len(conditions)) for i, c in enumerate(conditions)]


def by_key_condition(where: str) -> bool:
    """Whether a range's condition names key values (the same rows on both sides) rather than pages."""
    return bool(where) and not where.startswith("ctid")
