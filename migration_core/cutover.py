"""The cutover of one online migration, per database, in the order that loses no row:

1. fence writes on the source: `default_transaction_read_only` for new sessions, CONNECT revoked from
   everyone but pgmig's role, then after a grace period every remaining client session ended (all at
   once, then polled until gone). Superusers can still connect and override: they are only softly
   fenced, and the report says so;
2. wait until the slot has confirmed the source's WAL position taken after the fence;
3. set every target sequence to the source's value;
4. put back the foreign keys NOT VALID (enforced for new rows at once) and the triggers exactly as on
   the source, refresh materialized views, copy large objects;
5. compare row counts (the source is quiescent, so equality is exact): the target is released here;
   then (`check`) VALIDATE the foreign keys and compare full checksums against a snapshot of the
   target exported at that moment, so applications may already write there while it runs;
6. drop the subscription, the slot and the publication.

If any of 2–5 fails, `fallback` undoes the fence (applications keep working on the source), parks the
constraints again and leaves replication running. Nothing on the source is dropped before step 6.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from migration_core import constraints, large_objects, matviews, replication, sequences
from migration_core.errors import MigrationError
from migration_core.servers import ServerConfig
from migration_core.sql import ident
from migration_core.verify import VerifyResult, verify_database

CONNECT_GRANTEES = (
    "SELECT DISTINCT a.grantee FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a "
    "WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT'")
READ_ONLY_SETTING = (
    "SELECT split_part(cfg, '=', 2) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, "
    "unnest(s.setconfig) cfg WHERE d.datname = current_database() AND s.setrole = 0 "
    "AND cfg LIKE 'default_transaction_read_only=%'")
OTHER_CLIENTS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' AND application_name <> 'pgmig'")


@dataclass
class Fence:
    """What fencing changed on one source database, so that it can be undone exactly."""

    database: str
    read_only_before: str | None = None
    revoked_from: list[str] = field(default_factory=list)   # role names; "PUBLIC" for everyone
    ended_sessions: int = 0
    superusers: list[str] = field(default_factory=list)     # can still connect: softly fenced


@dataclass
class DatabaseCutover:
    database: str
    fence: Fence
    timings: dict[str, float] = field(default_factory=dict)
    sequences: int = 0
    verify: VerifyResult | None = None

    @property
    def window_seconds(self) -> float:
        """Writes unavailable: from the fence until the target is released (row counts equal)."""
        return sum(v for k, v in self.timings.items() if k in ("fence", "catch_up", "sequences", "constraints",
                                                                "counts"))


async def fence(source: ServerConfig, database: str, grace_seconds: float) -> Fence:
    conn = await source.connect(database)
    try:
        f = Fence(database, await conn.fetchval(READ_ONLY_SETTING))
        me = await conn.fetchval("SELECT current_user")
        grantees = [r["grantee"] for r in await conn.fetch(CONNECT_GRANTEES)]
        await conn.execute(f"ALTER DATABASE {ident(database)} SET default_transaction_read_only = on")
        await conn.execute(f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(me)}")
        for oid in grantees:
            name = "PUBLIC" if oid == 0 else await conn.fetchval("SELECT rolname FROM pg_roles WHERE oid = $1", oid)
            if name == me:
                continue
            await conn.execute(f"REVOKE CONNECT ON DATABASE {ident(database)} FROM "
                               f"{'PUBLIC' if name == 'PUBLIC' else ident(name)}")
            f.revoked_from.append(name)
        f.superusers = [r["rolname"] for r in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolsuper AND rolcanlogin AND rolname <> $1 ORDER BY 1", me)]
        await asyncio.sleep(grace_seconds)  # sessions may finish what they are doing
        pids = [r["pid"] for r in await conn.fetch(OTHER_CLIENTS)]
        for pid in pids:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        f.ended_sessions = len(pids)
        for _ in range(200):
            if not await conn.fetch(OTHER_CLIENTS):
                return f
            await asyncio.sleep(0.01)
        raise MigrationError(f"sessions on {database} would not end", "look at pg_stat_activity on the source")
    finally:
        await conn.close()


async def unfence(source: ServerConfig, f: Fence) -> None:
    conn = await source.connect(f.database)
    try:
        for name in f.revoked_from:
            await conn.execute(f"GRANT CONNECT ON DATABASE {ident(f.database)} TO "
                               f"{'PUBLIC' if name == 'PUBLIC' else ident(name)}")
        if f.read_only_before is None:
            await conn.execute(f"ALTER DATABASE {ident(f.database)} RESET default_transaction_read_only")
        else:
            await conn.execute(f"ALTER DATABASE {ident(f.database)} SET default_transaction_read_only = "
                               f"{'on' if f.read_only_before in ('on', 'true') else 'off'}")
    finally:
        await conn.close()


CAUGHT_UP = (
    "SELECT bool_and(confirmed_flush_lsn >= $1::pg_lsn) FROM pg_replication_slots WHERE slot_type = 'logical' "
    "AND database = current_database() AND (slot_name = $2 OR ($2 IS NULL AND NOT slot_name = ANY($3::text[])))")


async def wait_caught_up(source: ServerConfig, database: str, timeout: float, slot: str | None = None,
                         exclude: tuple[str, ...] = ()) -> None:
    """Until the subscriber confirmed every change made before the fence (bounded by `timeout`).

    `slot` is pgmig's own; without it every logical slot of the database not in `exclude` counts (a
    managed service's slots, whose names pgmig does not choose)."""
    conn = await source.connect(database)
    try:
        target_lsn = await conn.fetchval("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = await conn.fetchval(CAUGHT_UP, target_lsn, slot, list(exclude))
            if done or (done is None and slot is None):
                return
            await asyncio.sleep(0.005)
        raise MigrationError(f"the target did not catch up with {database} within {timeout:g} s",
                             "check the subscription on the target (pg_stat_subscription); nothing was switched")
    finally:
        await conn.close()


CatchUp = Callable[[str, float], Awaitable[None]]


async def cut_over(source: ServerConfig, target: ServerConfig, database: str, migration_id: str,
                   parked: constraints.Parked, grace_seconds: float = 5.0, catch_up_timeout: float = 30.0,
                   parallel: int = 2, catch_up: CatchUp | None = None) -> DatabaseCutover:
    """Steps 1–5 for one database. Raises after undoing the fence if anything fails (the fallback).

    `catch_up` replaces step 2 for a managed service: wait for its slots, then trigger its cutover."""
    slot = replication.object_name(migration_id, database)
    started = time.perf_counter()
    f = await fence(source, database, grace_seconds)
    result = DatabaseCutover(database, f)
    result.timings["fence"] = time.perf_counter() - started - grace_seconds
    reinstated = False
    try:
        step = time.perf_counter()
        if catch_up is None:
            await wait_caught_up(source, database, catch_up_timeout, slot)
        else:
            await catch_up(database, catch_up_timeout)
        result.timings["catch_up"] = time.perf_counter() - step
        src, tgt = await asyncio.gather(source.connect(database), target.connect(database))
        try:
            step = time.perf_counter()
            result.sequences = await sequences.sync(src, tgt)
            result.timings["sequences"] = time.perf_counter() - step
            step = time.perf_counter()
            reinstated = True
            await constraints.reinstate(tgt, parked, validate=False)
            await matviews.refresh(src, tgt)
            await large_objects.copy(src, tgt)
            result.timings["constraints"] = time.perf_counter() - step
        finally:
            await asyncio.gather(src.close(), tgt.close(), return_exceptions=True)
        step = time.perf_counter()
        counts = await verify_database(source, target, database, parallel, counts_only=True)
        result.timings["counts"] = time.perf_counter() - step
        _raise_on_mismatch(database, counts, "row counts")
        return result
    except BaseException:
        await fallback(source, target, f, reinstated)
        raise


async def check(source: ServerConfig, target: ServerConfig, result: DatabaseCutover, parked: constraints.Parked,
                parallel: int = 2) -> None:
    """After release: VALIDATE the foreign keys, then full checksums against the target as it was at
    release; raises (the caller falls back) on a violation or a mismatch."""
    conn = await target.connect(result.database)
    try:
        step = time.perf_counter()
        await constraints.validate_all(conn, parked)
        result.timings["validate"] = time.perf_counter() - step
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            step = time.perf_counter()
            result.verify = await verify_database(source, target, result.database, parallel, target_snapshot=snapshot)
            result.timings["verify"] = time.perf_counter() - step
    finally:
        await conn.close()
    _raise_on_mismatch(result.database, result.verify, "checksums")


def _raise_on_mismatch(database: str, verify: VerifyResult, what: str) -> None:
    if not verify.ok:
        raise MigrationError(f"{what} of {database} differ in {len(verify.mismatches)} place(s): " + "; ".join(
            f"{m.kind} {m.name} source {m.source} target {m.target}" for m in verify.mismatches[:10]))


async def fallback(source: ServerConfig, target: ServerConfig, f: Fence, reinstated: bool) -> None:
    """Applications keep working on the source; the target goes back to streaming as before."""
    await unfence(source, f)
    if reinstated:
        tgt = await target.connect(f.database)
        try:
            await constraints.park(tgt)
        except asyncpg.PostgresError:
            pass  # a constraint that never came back needs no parking
        finally:
            await tgt.close()
