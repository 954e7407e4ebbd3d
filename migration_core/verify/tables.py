"""Verification: every table's row count and content checksum on both sides, and sequence values.

The checksum is the sum of a 64-bit hash of each row's text, so row order does not matter. The hash is
hashtextextended, which PostgreSQL keeps stable across versions (hash partitioning depends on it) and
which is three times faster than md5; both sides render rows under the same session settings
(servers.RENDERING) so that equal data gives equal text.

Materialized views are compared too, but a difference there is a warning, never a mismatch: a source
view not refreshed since its tables changed (normal in production) rightly differs from the target's,
which pgmig refreshes. pgmig never refreshes the source's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import asyncpg

from migration_core.changes.sequences import values as seq_values
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER, literal, qualified, readable
from migration_core.transfer import ranges
from migration_core.transfer.limits import DEFAULT_LIMITS, DataLimits

RELATIONS = (
    "SELECT n.nspname AS schema, c.relname AS name, pg_relation_size(c.oid) AS size, "
    "CASE WHEN c.relkind = 'm' AND NOT c.relispopulated THEN 'm-empty' ELSE c.relkind::text END AS kind "
    "FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','m') AND " + USER_SCHEMA_FILTER
)


@dataclass
class Mismatch:
    database: str
    kind: str  # table | materialized view | sequence
    name: str
    source: str
    target: str
    because: str = ""  # an expected difference: why (a schema change the team skipped)


@dataclass
class VerifyResult:
    database: str
    tables: int = 0
    rows: int = 0
    sequences: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    warnings: list[Mismatch] = field(default_factory=list)  # materialized views: reported, never failing
    expected: list[Mismatch] = field(default_factory=list)  # differences the team decided on: reported, never failing

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @classmethod
    def from_dict(cls, data: dict) -> "VerifyResult":
        return cls(
            data["database"],
            data.get("tables", 0),
            data.get("rows", 0),
            data.get("sequences", 0),
            [Mismatch(**m) for m in data.get("mismatches", [])],
            [Mismatch(**m) for m in data.get("warnings", [])],
            [Mismatch(**m) for m in data.get("expected", [])],
        )


def expected_words(m: Mismatch) -> str:
    """An expected difference in words: `public.audit_note missing on the target, as expected (schema change
    #3 CREATE TABLE skipped by U0BOB: kept on the source)`."""
    if m.target == "missing":
        differs = "missing on the target"
    else:
        differs = f"differs (source {m.source}, target {m.target})"
    return f"{m.name} {differs}, as expected ({m.because})"


def matview_note(w: Mismatch) -> str:
    """A materialized view that differs, in words a DBA acts on."""
    return (
        f"{w.database} materialized view {w.name}: source {w.source}, target {w.target} — expected when the "
        "source's view was not refreshed since its tables changed (the target's was refreshed by pgmig); "
        "REFRESH it on the source to compare"
    )


def _checksum_sql(schema: str, name: str, kind: str, counts_only: bool = False, where: str = "") -> str:
    only = "ONLY " if kind == "r" else ""
    digest = "''" if counts_only else "coalesce(sum(hashtextextended(t::text, 0)), 0)::text"
    condition = f" WHERE {where}" if where else ""
    return f"SELECT count(*) AS n, {digest} AS s FROM {only}{qualified(schema, name)} t{condition}"


async def check_ranges(
    pool: asyncpg.Pool, key: tuple[str, str], size: int, parallel: int, limits: DataLimits
) -> list[str]:
    """The conditions a table is checked in, one query each, in parallel (ranges.py): `[""]` when small."""
    async with pool.acquire() as conn:
        version = int(await conn.fetchval("SHOW server_version_num"))
        parts = await ranges.split(conn, key[0], key[1], size, limits.split_table_bytes, parallel, version)
    return [r.where for r in parts]


async def _digest(pool: asyncpg.Pool, sqls: list[str], snapshot: str | None) -> tuple[int, str]:
    """Rows and checksum summed over a table's ranges: a sum of sums is the sum."""
    rows = await asyncio.gather(*(_fetchrow(pool, sql, snapshot) for sql in sqls))
    total = sum(int(r["s"]) for r in rows) if rows[0]["s"] != "" else ""
    return sum(r["n"] for r in rows), str(total)


async def _fetchrow(pool: asyncpg.Pool, sql: str, snapshot: str | None) -> asyncpg.Record:
    if snapshot is None:
        return await pool.fetchrow(sql)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT {literal(snapshot)}")
        return await conn.fetchrow(sql)


Known = dict[tuple[str, str], tuple[int, str, int, str]]  # (schema, table) → source rows, sum, target rows, sum


async def compare_table(
    src_pool: asyncpg.Pool,
    tgt_pool: asyncpg.Pool,
    key: tuple[str, str],
    kind: str,
    sizes: tuple[int, int],
    parallel: int,
    limits: DataLimits,
    counts_only: bool = False,
    target_snapshot: str | None = None,
) -> tuple[int, str, int, str]:
    """One relation's rows and checksum on both sides, read at the same time; in ranges when large."""
    src_where = tgt_where = [""]
    if kind == "r" and max(sizes) > limits.split_table_bytes:
        src_where = await check_ranges(src_pool, key, sizes[0], parallel, limits)
        keyed = ranges.by_key_condition(src_where[0])  # the same rows on both sides: the same ranges
        tgt_where = src_where if keyed else await check_ranges(tgt_pool, key, sizes[1], parallel, limits)
    (sn, ss), (tn, ts) = await asyncio.gather(
        _digest(src_pool, [_checksum_sql(*key, kind, counts_only, w) for w in src_where], None),
        _digest(tgt_pool, [_checksum_sql(*key, kind, counts_only, w) for w in tgt_where], target_snapshot),
    )
    return sn, ss, tn, ts


async def verify_database(
    source: ServerConfig,
    target: ServerConfig,
    database: str,
    parallel: int = 2,
    replicated_only: bool = False,
    counts_only: bool = False,
    target_snapshot: str | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
    known: Known | None = None,
    proven: frozenset[tuple[str, str]] = frozenset(),
    expected: dict[tuple[str, str], str] | None = None,
) -> VerifyResult:
    """`replicated_only` while an online migration streams: tables only, since logical replication
    carries neither sequences nor materialized views (both are brought over at cutover).
    `counts_only` for the cutover window; `target_snapshot` reads the target as it was when that
    snapshot was exported (the moment of release), whatever applications write there since.
    Tables above the split limit are checked in ranges, in parallel, each side cut by its own pages
    (rows sit on other pages there) or, with an integer key, both by the same key ranges. `known`:
    tables already compared (during the copy, early_checks.py), not read again. `proven`: tables the
    cutover need not count (continuous verification covers them, and every change reached the target).
    `expected`: tables the team let differ (a schema change skipped, observe/ddl.expected), with why: what
    differs in them is reported as expected, and fails nothing."""
    result = VerifyResult(database)
    src_pool = await source.pool(database, parallel)
    try:
        tgt_pool = await target.pool(database, parallel)
    except BaseException:
        await src_pool.close()
        raise
    try:
        src_rows = [r for r in await src_pool.fetch(RELATIONS) if not (replicated_only and r["kind"].startswith("m"))]
        tgt_rows = [r for r in await tgt_pool.fetch(RELATIONS) if not (replicated_only and r["kind"].startswith("m"))]
        src_rel = {(r["schema"], r["name"]): r["kind"] for r in src_rows}
        tgt_rel = {(r["schema"], r["name"]): r["kind"] for r in tgt_rows}
        src_size = {(r["schema"], r["name"]): r["size"] for r in src_rows}
        tgt_size = {(r["schema"], r["name"]): r["size"] for r in tgt_rows}
        for missing in sorted(set(src_rel) - set(tgt_rel)):
            result.mismatches.append(
                Mismatch(database, _kind(src_rel[missing]), readable(*missing), "present", "missing")
            )
        unpopulated = sorted(k for k in set(src_rel) & set(tgt_rel) if src_rel[k] == "m" and tgt_rel[k] == "m-empty")
        for key in unpopulated:
            result.warnings.append(
                Mismatch(database, "materialized view", readable(*key), "populated", "not populated")
            )
        common = sorted(
            k
            for k in set(src_rel) & set(tgt_rel)
            if src_rel[k] != "m-empty" and k not in unpopulated and k not in proven
        )
        result.tables = len(common)

        async def one(key: tuple[str, str]) -> None:
            kind = src_rel[key]
            if known and key in known:
                sn, ss, tn, ts = known[key]
            else:
                sizes = (src_size[key], tgt_size[key])
                sn, ss, tn, ts = await compare_table(
                    src_pool, tgt_pool, key, kind, sizes, parallel, limits, counts_only, target_snapshot
                )
            result.rows += sn
            if (sn, ss) != (tn, ts):
                detail = "rows" if sn != tn else "checksum"
                found = result.warnings if kind.startswith("m") else result.mismatches
                found.append(
                    Mismatch(
                        database,
                        _kind(kind),
                        readable(*key),
                        f"{sn} rows" + (f", sum {ss}" if detail == "checksum" else ""),
                        f"{tn} rows" + (f", sum {ts}" if detail == "checksum" else ""),
                    )
                )

        await asyncio.gather(*(one(k) for k in common))
        result.warnings.sort(key=lambda m: m.name)
        if replicated_only:
            return _set_aside(result, expected)
        async with src_pool.acquire() as s_conn, tgt_pool.acquire() as t_conn:
            src_seq, tgt_seq = await seq_values(s_conn), await seq_values(t_conn)
        result.sequences = len(src_seq)
        for name, value in sorted(src_seq.items()):
            if tgt_seq.get(name, "missing") != value:
                result.mismatches.append(
                    Mismatch(database, "sequence", name, str(value), str(tgt_seq.get(name, "missing")))
                )
        return _set_aside(result, expected)
    finally:
        await asyncio.gather(src_pool.close(), tgt_pool.close())


def _set_aside(result: VerifyResult, expected: dict[tuple[str, str], str] | None) -> VerifyResult:
    """The differences in tables the team let differ, moved from the mismatches to `expected`, with why."""
    why = {readable(*key): because for key, because in (expected or {}).items()}
    for m in list(result.mismatches):
        if m.kind == "table" and m.name in why:
            result.mismatches.remove(m)
            result.expected.append(replace(m, because=why[m.name]))
    result.mismatches.sort(key=lambda m: (m.kind, m.name))
    return result


def _kind(relkind: str) -> str:
    return "materialized view" if relkind.startswith("m") else "table"
