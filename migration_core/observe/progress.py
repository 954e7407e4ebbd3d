"""Progress of a running migration, per database: what the live message and `/pgmig status` show."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migration_core.observe.ddl import SchemaWatch
    from migration_core.observe.forecast import Measured
    from migration_core.verify.continuous import Verification

# The phases whose time is kept (`DatabaseProgress.timed`): a migration's plan compares them with its estimate
TIMED = frozenset({"copying data", "loading data", "building indexes"})


@dataclass
class DatabaseProgress:
    database: str
    phase: str = "pending"
    tables_done: int = 0
    tables_total: int = 0
    bytes_done: int = 0  # of the tables' data (pg_relation_size: heap pages, no indexes or TOAST), not the
    bytes_total: int = 0  # database's size (`check` shows that): how far the copy of those pages is
    started_at: float | None = None
    finished_at: float | None = None
    lag_bytes: int | None = None  # online, while streaming
    lag_seconds: float | None = None
    retained_bytes: int | None = None  # WAL the slot holds on the source
    wal_rate: float | None = None  # online: bytes a second the source's WAL grows (slot_guard)
    wal_limit: int | None = None  # online: the source's max_slot_wal_keep_size in bytes; -1: unset
    limit_in: float | None = None  # online: seconds until the slot holds that much, at that rate
    wal_samples: list[tuple[float, int]] = field(default_factory=list)  # (when, WAL position): the rate's window
    slot_seen: tuple[int, int | None] | None = None  # the last look's WAL position and confirmed_flush_lsn
    apply_rate: float | None = None  # online: bytes a second the subscriber confirms (forecast.py)
    forecast: "Measured | None" = None  # online: what the predicted write freeze is made of (forecast.py)
    not_applying_since: float | None = None  # since when WAL grew and the subscriber confirmed none of it
    rows_copied: int = 0  # rows of the pieces whose copy committed, from COPY's own command tags
    rows_copying: dict[int, int] = field(default_factory=dict)  # target session → rows its COPY under way took
    ranges_done: int = 0  # large tables are copied as ranges: how many of them are done
    ranges_total: int = 0
    waiting: str = ""  # what a long statement waits for (a lock and who holds it), while it waits
    working: str = ""  # how far a long statement without a stream is, as the server reports it (index builds)
    watches: dict[int, tuple[str, str]] = field(default_factory=dict)  # each watcher's (waiting, working)
    not_streaming_since: float | None = None  # online: since when the subscription has not streamed, unbroken
    blocked: str = ""  # online: why the target cannot apply changes (a column it lacks, its apply worker's error)
    apply_errors: int | None = None  # online: the subscription's apply error count at the last look (PG 15+)
    apply_failures: list[float] = field(default_factory=list)  # when the count was seen to grow, one entry an error
    verification: "Verification | None" = None  # online: continuous verification's state (verify/continuous.py)
    verified: str = ""  # online: what continuous verification has found, in one line
    schema_changes: "SchemaWatch | None" = None  # online: schema changes captured on the source (observe/ddl.py)
    timed: dict[str, float] = field(default_factory=dict)  # seconds spent in each TIMED phase of the current step

    def __setattr__(self, name: str, value: object) -> None:
        """A change of phase is timed, wherever the work sets it: how long the copy and the index builds took
        is what a migration's plan is compared with (plan/review.py)."""
        if name == "phase" and value != self.__dict__.get("phase"):
            now, since = time.time(), self.__dict__.get("_since")
            was = self.__dict__.get("phase")
            if since is not None and was in TIMED:
                self.timed[str(was)] = self.timed.get(str(was), 0.0) + now - since
            self.__dict__["_since"] = now if value in TIMED else None
        super().__setattr__(name, value)

    def spent(self, phase: str, now: float | None = None) -> tuple[float, bool] | None:
        """Seconds in `phase` during the current step, and whether it is still under way; None: not reached."""
        running = self.phase == phase and self.__dict__.get("_since") is not None
        if phase not in self.timed and not running:
            return None
        extra = (now or time.time()) - self.__dict__["_since"] if running else 0.0
        return self.timed.get(phase, 0.0) + extra, running

    @property
    def rows_done(self) -> int:
        """Rows copied so far: the committed pieces' and those the COPYs under way took (as the target reports
        them), so that rows count the table in progress as the bytes do."""
        return self.rows_copied + sum(self.rows_copying.values())

    def says(self, watcher: int, waiting: str, working: str) -> None:
        """What one watcher (waits.watched) found; `waiting` and `working` show every watcher's."""
        self.watches[watcher] = (waiting, working)
        self._show()

    def unwatch(self, watcher: int) -> None:
        self.watches.pop(watcher, None)
        self._show()

    def _show(self) -> None:
        self.waiting = "; ".join(w for w, _ in self.watches.values() if w)
        self.working = "; ".join(w for _, w in self.watches.values() if w)

    def begin(self, phase: str) -> None:
        self.timed = {}
        self.phase = phase
        self.tables_done = 0
        self.bytes_done = 0
        self.rows_copied = self.ranges_done = self.ranges_total = 0
        self.rows_copying.clear()
        self.started_at = time.time()
        self.finished_at = None

    def finish(self, phase: str) -> None:
        self.phase = phase
        self.finished_at = time.time()
        if self.tables_total:
            self.tables_done = self.tables_total
        if self.bytes_total:
            self.bytes_done = self.bytes_total

    @property
    def fraction(self) -> float | None:
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        if self.tables_total:
            return min(1.0, self.tables_done / self.tables_total)
        return None

    def elapsed(self, now: float | None = None) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or now or time.time()) - self.started_at

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far; None until there is a rate to go by."""
        f = self.fraction
        if f is None or f <= 0 or self.finished_at is not None:
            return None
        return self.elapsed(now) * (1 - f) / f


@dataclass
class MigrationProgress:
    databases: dict[str, DatabaseProgress] = field(default_factory=dict)
    retried_at: float | None = None  # when the latest retry started this run: how long it took counts from there

    def of(self, database: str) -> DatabaseProgress:
        return self.databases.setdefault(database, DatabaseProgress(database))
