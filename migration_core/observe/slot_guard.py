"""The slot guardian: what pgmig's replication slot holds on the source, how fast that grows and when it
reaches max_slot_wal_keep_size — said before the source drops the slot (or, with no limit set, before its
disk fills), with a way out (cancel, which drops the slot) once the subscriber has stopped applying.

A slot keeps every byte of WAL its subscriber has not confirmed. `max_slot_wal_keep_size` (PostgreSQL 13+)
caps that by invalidating the slot (the migration is then lost); unset (-1) nothing caps it short of a full
disk, whose free space SQL cannot portably read — so then only the held-WAL threshold warns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from migration_core.engine.context import MigrationContext
from migration_core.observe.progress import DatabaseProgress
from migration_core.preflight.checks import pretty_bytes

RATE_WINDOW = 60.0  # seconds of readings the growth rate is measured over (one busy tick is not a trend)

# to_jsonb: wal_status and safe_wal_size exist from PostgreSQL 13 on, and so does max_slot_wal_keep_size
SLOT = (
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS held, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS written, "
    "pg_wal_lsn_diff(s.confirmed_flush_lsn, '0/0')::bigint AS confirmed, "
    "to_jsonb(s) ->> 'wal_status' AS wal_status, (to_jsonb(s) ->> 'safe_wal_size')::bigint AS safe, "
    "(SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS keep_mb "
    "FROM pg_replication_slots s WHERE s.slot_name = $1"
)


@dataclass
class SlotReading:
    """One look at a slot: bytes held, the source's WAL position, and how far the subscriber confirmed."""

    held: int
    written: int
    confirmed: int | None
    wal_status: str  # reserved | extended | unreserved | lost ("" before PostgreSQL 13)
    safe: int | None  # bytes left before the slot is at risk (PostgreSQL 13+, with a limit set)
    limit: int  # max_slot_wal_keep_size in bytes; -1: unset (or a server without it)


async def read_slot(conn: asyncpg.Connection, name: str) -> SlotReading | None:
    row = await conn.fetchrow(SLOT, name)
    if row is None:
        return None
    keep_mb = row["keep_mb"]
    return SlotReading(
        max(0, row["held"] or 0),
        row["written"],
        row["confirmed"],
        row["wal_status"] or "",
        row["safe"],
        -1 if keep_mb is None or keep_mb < 0 else keep_mb << 20,
    )


def windowed_rate(
    samples: list[tuple[float, int]], now: float, value: int, window: float = RATE_WINDOW
) -> tuple[list[tuple[float, int]], float | None]:
    """The samples of the last `window` seconds with (now, value) added, and the rate a second over them
    (None until two looks apart)."""
    kept = [s for s in samples if now - s[0] <= window] + [(now, value)]
    (t0, v0), (t1, v1) = kept[0], kept[-1]
    return kept, (v1 - v0) / (t1 - t0) if t1 > t0 else None


def observe(p: DatabaseProgress, r: SlotReading, stall_seconds: float, now: float) -> bool:
    """Write the reading, the growth rate and the time to the limit into `p`; True once the subscriber has
    confirmed nothing while WAL grew for `stall_seconds` (it is not applying at all)."""
    p.retained_bytes, p.wal_limit = r.held, r.limit
    p.wal_samples, p.wal_rate = windowed_rate(p.wal_samples, now, r.written)
    left = r.safe if r.safe is not None else r.limit - r.held
    p.limit_in = left / p.wal_rate if r.limit >= 0 and p.wal_rate and left > 0 else None
    last = p.slot_seen
    p.slot_seen = (r.written, r.confirmed)
    if last is None or r.confirmed != last[1]:
        p.not_applying_since = None
    elif r.written > last[0] and p.not_applying_since is None:
        p.not_applying_since = now
    return p.not_applying_since is not None and now - p.not_applying_since >= stall_seconds


def warning(slot: str, p: DatabaseProgress, r: SlotReading) -> str:
    """`slot pgmig_… holds 1.2 GB of WAL, 61 % of max_slot_wal_keep_size 2 GB, growing 20 MB/min: the limit
    in about 40 min`."""
    said = f"slot {slot} holds {pretty_bytes(r.held)} of WAL"
    if r.limit >= 0:
        said += f", {100 * r.held / max(r.limit, 1):.0f} % of max_slot_wal_keep_size {pretty_bytes(r.limit)}"
    else:
        said += " (max_slot_wal_keep_size is unset: nothing stops it short of a full disk on the source)"
    if p.wal_rate:
        said += f", growing {pretty_bytes(int(p.wal_rate * 60))}/min"
    if r.wal_status in ("unreserved", "lost"):
        said += f": wal_status is {r.wal_status} — the source has dropped or is about to drop WAL the target needs"
    elif p.limit_in is not None:
        said += f": the limit in about {max(1, round(p.limit_in / 60))} min"
    return said


async def guard(ctx: MigrationContext) -> None:
    """One tick: every database's slot read and the "slot" alert raised or cleared, offering cancel (which
    drops the slots) while a subscriber applies nothing."""
    c, now = ctx.config, time.monotonic()
    said, stalled = [], False
    for db in ctx.m.databases:
        name = ctx.journal.object_name(db)
        async with ctx.kept(ctx.source, db) as conn:
            r = await read_slot(conn, name)
        if r is None:
            continue
        p = ctx.progress.of(db)
        stopped = observe(p, r, c.slot_stall_seconds, now)
        if r.limit >= 0:
            over = r.held > c.slot_warn_share * r.limit or (
                p.limit_in is not None and p.limit_in < c.slot_warn_minutes * 60
            )
        else:
            over = r.held > c.wal_retention_alert_bytes
        if over or r.wal_status in ("unreserved", "lost"):
            said.append(warning(name, p, r) + (" — the subscriber is applying nothing" if stopped else ""))
            stalled = stalled or stopped
    text = "⚠️ " + "; ".join(said)
    if stalled:
        text += ". Check the target's subscription, or cancel the migration: that drops the slot"
    await ctx.alerts.alert(ctx.m, "slot", bool(said), text, offer_cancel=stalled)
