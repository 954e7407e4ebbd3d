"""Progress of a running migration, per database: what the live message and `/pgmig status` show."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class DatabaseProgress:
    database: str
    phase: str = "pending"
    tables_done: int = 0
    tables_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    lag_bytes: int | None = None  # online, while streaming
    lag_seconds: float | None = None
    retained_bytes: int | None = None  # WAL the slot holds on the source
    rows_done: int = 0  # rows copied, from COPY's own command tags
    ranges_done: int = 0  # large tables are copied as ranges: how many of them are done
    ranges_total: int = 0
    waiting: str = ""  # what a long statement waits for (a lock and who holds it), while it waits
    working: str = ""  # how far a long statement without a stream is, as the server reports it (index builds)

    def begin(self, phase: str) -> None:
        self.phase = phase
        self.tables_done = 0
        self.bytes_done = 0
        self.rows_done = self.ranges_done = self.ranges_total = 0
        self.waiting = self.working = ""
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

    def of(self, database: str) -> DatabaseProgress:
        return self.databases.setdefault(database, DatabaseProgress(database))
