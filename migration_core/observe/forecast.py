"""The predicted write freeze: how long a cutover would fence writes on the source if it started now, per
database, part by part as cut_over times them (`WINDOW_STEPS`), each from something measured — so the team
knows before approving, and `[online] max_window_seconds` can hold back a cutover that would not fit.

The grace the fence gives sessions is not in the window (`DatabaseCutover.window_seconds` leaves it out),
so it is not predicted either. After the fence no new WAL arrives: the catch-up is the lag the subscriber
still has to apply, at the rate it applies (its `confirmed_flush_lsn` over the last minute of ticks), plus
the fixed cost of confirming a fresh commit. The fixed parts are counted statements × measured round trips
(connections included: each step opens its own), the counts the timed counts-only comparison the cutover
itself runs, and the fence and the fixed catch-up from an earlier cutover between the same servers when
the state store has one (it measured exactly those steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import asyncpg

from migration_core.changes import sequences
from migration_core.changes.constraints import Parked
from migration_core.changes.fence import CONNECT_GRANTEES
from migration_core.engine.context import MigrationContext
from migration_core.flows.steps.cutover import WINDOW_STEPS
from migration_core.observe.progress import DatabaseProgress
from migration_core.observe.slot_guard import windowed_rate
from migration_core.plan.estimate import seconds_text
from migration_core.preflight.checks import pretty_bytes
from migration_core.state.models import State, StepKind
from migration_core.verify import continuous
from migration_core.verify.tables import verify_database

REMEASURE_SECONDS = 300.0  # the fixed parts (objects, connections, counts) are measured again this often
COUNTS_REMEASURE_MAX = 2.0  # a counts-only comparison slower than this is timed once, then scaled by size
FENCE_TRIPS, FENCE_STORE = 4, 3  # fence: statements on the source besides two per grantee; journal writes
CATCH_UP_TRIPS = 5  # the catch-up's own commit, flush position, the polls' first look, late sessions
CONFIRM_SHARE = 0.75  # of the target's wal_writer_delay: the apply worker confirms a commit once it is flushed
STORE_WRITE_SECONDS = 0.012  # one journal write (a committed, synced row in the state store)
CAUGHT_UP_BYTES = 64 << 10  # lag below this is the stream's own keepalives: applied at once
WAL_WRITER_DELAY = "SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'wal_writer_delay'"
HEAP_BYTES = (
    "SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
)


@dataclass(frozen=True)
class Part:
    seconds: float
    basis: str  # where the number comes from, in words


@dataclass(frozen=True)
class Window:
    """One database's predicted write freeze, part by part (the keys are WINDOW_STEPS)."""

    parts: dict[str, Part]
    fits_in: float | None = None  # with a limit it exceeds: seconds until it fits at the lag's trend; None: not falling

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.parts.values())

    @property
    def catch_up(self) -> float:
        return self.parts["catch_up"].seconds

    def words(self) -> str:
        """`expected window 0.42 s (fence 0.05 s: mig-3's cutover of shop; catch-up 0.03 s: caught up; …)`."""
        said = "; ".join(f"{k.replace('_', '-')} {v.seconds:.2f} s: {v.basis}" for k, v in self.parts.items())
        return f"expected window {self.seconds:.2f} s ({said})"


@dataclass
class Measured:
    """What the forecast needs besides the tick's lag and rates, measured on the servers (kept in
    DatabaseProgress.forecast, so a tick measures the fixed parts only every REMEASURE_SECONDS)."""

    at: float = 0.0
    source_trip: float = 0.0  # fastest `SELECT 1`
    target_trip: float = 0.0
    source_connect: float = 0.0  # opening a session (each cutover step opens its own)
    target_connect: float = 0.0
    confirm: float = 0.0  # how long the subscriber takes to confirm a commit it applied (wal_writer_delay)
    grantees: int = 0  # roles with CONNECT: the fence revokes each and journals it
    sequences: int = 0
    parked: int = 0  # foreign keys and triggers put back at cutover
    heap_bytes: int = 0
    counts_seconds: float | None = None  # the timed counts-only comparison…
    counts_heap: int = 0  # …and the tables' size when it ran
    counts_proven: frozenset[tuple[str, str]] = frozenset()  # …and the tables it left out (verification covers them)
    earlier: tuple[str, dict[str, float]] | None = None  # (mig-N, its cutover timings) between the same servers
    confirmed: list[tuple[float, int]] = field(default_factory=list)  # (when, confirmed_flush_lsn): apply rate
    window: Window | None = None


def catch_up_seconds(lag_bytes: int, apply_rate: float | None, fixed: float) -> float | None:
    """After the fence: what is still to apply at the measured apply rate, plus the fixed cost; None when
    there is lag and nothing is being applied (no end can be predicted)."""
    if lag_bytes <= CAUGHT_UP_BYTES:
        return fixed
    if not apply_rate or apply_rate <= 0:
        return None
    return lag_bytes / apply_rate + fixed


def fits_in(lag_bytes: int, apply_rate: float | None, wal_rate: float | None, spare: float) -> float | None:
    """Seconds until the catch-up fits into `spare` seconds, while the lag changes at WAL rate − apply rate;
    None when the lag is not falling (or `spare` leaves no room at all)."""
    if not apply_rate or spare <= 0:
        return None
    falling = apply_rate - (wal_rate or 0.0)
    if falling <= 0:
        return None
    return max(0.0, (lag_bytes - spare * apply_rate) / falling)


def predict(p: DatabaseProgress, f: Measured, limit: float) -> Window | None:
    """The window's parts from the measurements; None when the catch-up cannot be predicted."""
    if f.earlier is not None:
        mid, t = f.earlier
        fence = Part(t.get("fence", 0.0), f"{mid}'s cutover between these servers")
        fixed, fixed_said = t.get("catch_up", f.confirm), f"{mid}'s catch-up"
    else:
        writes = FENCE_STORE + f.grantees
        fence = Part(
            f.source_connect + (FENCE_TRIPS + 2 * f.grantees) * f.source_trip + writes * STORE_WRITE_SECONDS,
            f"{FENCE_TRIPS + 2 * f.grantees} statements ({f.grantees} roles with CONNECT) at "
            f"{f.source_trip * 1000:.1f} ms and {writes} journal writes",
        )
        if continuous.running(p.verification):  # flows/steps/cutover.fence_arrived
            trips = CATCH_UP_TRIPS * max(f.source_trip, f.target_trip)
            fixed = f.source_connect + f.target_connect + trips + STORE_WRITE_SECONDS
            fixed_said = "the fence's watermark seen on the target"
        else:  # the slot's confirmed position: the subscriber confirms a flushed commit after wal_writer_delay
            fixed = 2 * f.source_connect + CATCH_UP_TRIPS * f.source_trip + STORE_WRITE_SECONDS + f.confirm
            fixed_said = f"a commit confirmed (the target's wal_writer_delay: {f.confirm * 1000:.0f} ms)"
    lag, rate = p.lag_bytes or 0, p.apply_rate
    catch = catch_up_seconds(lag, rate, fixed)
    if catch is None:
        return None
    behind = (
        "caught up"
        if lag <= CAUGHT_UP_BYTES
        else f"{pretty_bytes(lag)} behind at {pretty_bytes(int(rate or 0))}/s applied"
    )
    counts = (
        Part(
            f.counts_seconds * max(f.heap_bytes, 1) / max(f.counts_heap, 1),
            f"a timed counts-only comparison of the tables verification does not cover "
            f"({pretty_bytes(f.heap_bytes)} of tables in all)",
        )
        if f.counts_seconds is not None
        else Part(0.0, "not measured yet")
    )
    parts = {
        "fence": fence,
        "catch_up": Part(catch, f"{behind}, plus {fixed_said}"),
        "sequences": Part(
            (2 + f.sequences) * f.target_trip,
            f"{f.sequences} sequences × {f.target_trip * 1000:.1f} ms",
        ),
        "constraints": Part(
            f.source_connect + f.target_connect + (4 + f.parked) * f.target_trip + STORE_WRITE_SECONDS,
            f"{f.parked} foreign keys and triggers × {f.target_trip * 1000:.1f} ms, large objects' connections",
        ),
        "counts": counts,
    }
    assert tuple(parts) == WINDOW_STEPS
    window = Window(parts)
    if limit > 0 and window.seconds > limit:
        spare = limit - (window.seconds - catch)
        return Window(parts, fits_in(lag, rate, p.wal_rate, spare - fixed))
    return window


def apply_rate(p: DatabaseProgress, f: Measured, now: float) -> None:
    """The subscriber's apply rate from the confirmed position the slot guardian read this tick."""
    confirmed = p.slot_seen[1] if p.slot_seen else None
    if confirmed is None:
        return
    f.confirmed, p.apply_rate = windowed_rate(f.confirmed, now, confirmed)


async def measure(ctx: MigrationContext, db: str, f: Measured, parked: Parked) -> None:
    """The fixed parts: round trips, connections, objects, and (while it stays quick, else once) the
    counts-only comparison the cutover runs."""
    start = time.perf_counter()
    async with ctx.kept(ctx.source, db) as src:
        f.source_connect = time.perf_counter() - start
        f.source_trip = await _trip(src)
        f.grantees = len(await src.fetch(CONNECT_GRANTEES))
        f.sequences = len(await src.fetch(sequences.LIST))
        f.heap_bytes = await src.fetchval(HEAP_BYTES)
    start = time.perf_counter()
    async with ctx.kept(ctx.target, db) as tgt:
        f.target_connect = time.perf_counter() - start
        f.target_trip = await _trip(tgt)
        f.confirm = CONFIRM_SHARE * (await tgt.fetchval(WAL_WRITER_DELAY) or 0.0)
    f.parked = len(parked.foreign_keys) + len(parked.triggers)
    f.earlier = await earlier_cutover(ctx, db)
    proven = continuous.proven(ctx, db)
    # timed again while quick, and whenever what the window counts changed (verification covered more tables:
    # a slow first timing of every table must not stand for the few the window counts once they are covered)
    if f.counts_seconds is None or f.counts_seconds < COUNTS_REMEASURE_MAX or proven != f.counts_proven:
        start = time.perf_counter()  # what the window counts: the tables continuous verification does not cover
        await verify_database(ctx.source, ctx.target, db, ctx.options.parallel, counts_only=True, proven=proven)
        f.counts_seconds, f.counts_heap, f.counts_proven = time.perf_counter() - start, f.heap_bytes, proven
    f.at = time.monotonic()


async def _trip(conn: asyncpg.Connection) -> float:
    """The fastest of three `SELECT 1`s: the round trip a statement costs at least."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        await conn.fetchval("SELECT 1")
        best = min(best, time.perf_counter() - start)
    return best


async def earlier_cutover(ctx: MigrationContext, db: str) -> tuple[str, dict[str, float]] | None:
    """The newest completed cutover between the same servers (of this database if there is one): its
    measured timings."""
    store, m = ctx.ledger.store, ctx.m
    found = None
    for other in await store.list_migrations():
        if (
            other.id == m.id
            or other.state is not State.COMPLETED
            or (other.source, other.target) != (m.source, m.target)
        ):
            continue
        for name in [db] + [d for d in other.databases if d != db]:
            step = await store.step(other.id, StepKind.CUTOVER.at(name))
            if step is not None and step.data.get("timings"):
                found = (other.id, step.data["timings"]) if found is None or name == db else found
                break
    return found


async def look(ctx: MigrationContext, sample: bool = True) -> dict[str, Window | None]:
    """Every database's apply rate (`sample`: from a fresh slot reading, i.e. on the tick), the fixed parts
    when due, and its predicted window from the lag just measured (also kept in its progress:
    `DatabaseProgress.forecast.window`)."""
    from migration_core.flows.cutover import parked_constraints  # flows import observe: import at use

    now, windows = time.monotonic(), {}
    parked: dict[str, Parked] | None = None
    for db in ctx.m.databases:
        p = ctx.progress.of(db)
        f = p.forecast = p.forecast or Measured()
        if sample:
            apply_rate(p, f, now)
        if now - f.at >= REMEASURE_SECONDS or not f.at or continuous.proven(ctx, db) != f.counts_proven:
            parked = parked if parked is not None else await parked_constraints(ctx)
            await measure(ctx, db, f, parked.get(db, Parked([], [])))
        f.window = windows[db] = predict(p, f, ctx.config.max_window_seconds)
    return windows


def last(ctx: MigrationContext) -> dict[str, Window | None]:
    """Every database's window as the last tick predicted it (None: not looked at yet), without touching a
    server: the cutover consults it at once, where measuring again could wait on someone's lock."""
    return {db: (f.window if (f := ctx.progress.of(db).forecast) is not None else None) for db in ctx.m.databases}


def too_long(ctx: MigrationContext, windows: dict[str, Window | None]) -> str:
    """Why a cutover may not start under `[online] max_window_seconds` (empty when it may): each database
    over it, how its lag moves and when it is expected to fit."""
    limit = ctx.config.max_window_seconds
    if limit <= 0:
        return ""
    said = []
    for db, w in windows.items():
        if w is None:
            said.append(f"{db}: the write freeze cannot be predicted (lag, and the target applies nothing)")
        elif w.seconds > limit:
            moving = trend(ctx.progress.of(db))
            when = f"in about {seconds_text(w.fits_in)}" if w.fits_in is not None else "not while the lag does not fall"
            said.append(
                f"{db}: predicted write freeze {w.seconds:.2f} s is over max_window_seconds {limit:g} s "
                f"({moving + ': ' if moving else ''}expected to fit {when})"
            )
    return "; ".join(said)


def card_words(ctx: MigrationContext, windows: dict[str, Window | None]) -> str:
    """The approval card's prediction: per database the expected catch-up and window with each part's
    source, then why Approve is held, if it is."""
    said = [
        f"{db}: expected catch-up {w.catch_up:.2f} s, {w.words()}"
        if w is not None
        else f"{db}: the write freeze cannot be predicted (lag, and the target applies nothing)"
        for db, w in windows.items()
    ]
    if held := too_long(ctx, windows):
        said.append(f"Approve is held: {held}")
    return "\n".join(said)


def trend(p: DatabaseProgress) -> str:
    """`lag falling at 1.2 MB/min` from the two rates (empty while either is unknown)."""
    if p.apply_rate is None or p.wal_rate is None:
        return ""
    change = (p.wal_rate - p.apply_rate) * 60
    if abs(change) < 1:
        return "lag steady"
    return f"lag {'growing' if change > 0 else 'falling'} at {pretty_bytes(int(abs(change)))}/min"
