"""The metrics behind a migration's charts (`pgmig_metric`): one sample per database per progress tick, kept in
the state store so that a restart, or the replica that takes a migration over, still draws its whole story.

Bounded: a series that grows past `MAX_SAMPLES` is thinned to one sample per equal slice of its whole span (the
last of each, and its very first), so it covers the whole migration at an even resolution that coarsens as the
migration lasts, the ticks since at full resolution. The copy's bytes and rows are running totals, so the rate
between any two samples kept is still the true average between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from migration_core.store.database import Database, at, placeholders

MAX_SAMPLES = 720  # per migration and database: three hours of 15 s ticks at full resolution, then thinned


@dataclass(frozen=True)
class Sample:
    """One database's numbers at one tick; None where nothing was measured (an offline migration has no lag)."""

    database: str
    at: datetime
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    apply_rate: float | None = None  # bytes a second the subscriber confirms
    wal_rate: float | None = None  # bytes a second the source's WAL grows
    wal_held: int | None = None  # bytes of WAL the slot holds on the source
    wal_limit: int | None = None  # the source's max_slot_wal_keep_size in bytes; -1: unset
    copied_bytes: int = 0  # running totals of the copy (they restart at 0 when a phase or a process does)
    copied_rows: int = 0


def stamp(when: datetime) -> str:
    """Fixed-width UTC text: ordered the same by SQLite's bytes and by any PostgreSQL collation."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _real(value: float | None) -> float | None:
    """PostgreSQL's float8 parameters take floats only (a rate may come as an int)."""
    return None if value is None else float(value)


class MetricsRepo(Database):
    """Adding samples (bounded per series) and reading a migration's."""

    async def add_samples(self, migration_id: str, samples: list[Sample]) -> None:
        for s in samples:
            await self._db.execute(
                "INSERT INTO pgmig_metric VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
                "ON CONFLICT (migration_id, database, at) DO NOTHING",
                migration_id,
                s.database,
                stamp(s.at),
                s.lag_bytes,
                _real(s.lag_seconds),
                _real(s.apply_rate),
                _real(s.wal_rate),
                s.wal_held,
                s.wal_limit,
                s.copied_bytes,
                s.copied_rows,
            )
            [row] = await self._db.fetch(
                "SELECT count(*) AS n FROM pgmig_metric WHERE migration_id = $1 AND database = $2",
                migration_id,
                s.database,
            )
            if row["n"] > MAX_SAMPLES:
                await self._thin(migration_id, s.database)

    async def _thin(self, migration_id: str, database: str) -> None:
        """One sample per slice of the series' span (MAX_SAMPLES / 2 slices): the last in each, and the first."""
        rows = await self._db.fetch(
            "SELECT at FROM pgmig_metric WHERE migration_id = $1 AND database = $2 ORDER BY at", migration_id, database
        )
        times = [at(r["at"]) for r in rows]
        width = (times[-1] - times[0]) / (MAX_SAMPLES // 2)
        slices = [int((t - times[0]) / width) for t in times]
        last_of_slice = [a != b for a, b in zip(slices, slices[1:], strict=False)] + [True]
        drop = [r["at"] for n, r in enumerate(rows) if n and not last_of_slice[n]]  # at most MAX_SAMPLES parameters
        await self._db.execute(
            "DELETE FROM pgmig_metric WHERE migration_id = $1 AND database = $2 "
            f"AND at IN ({placeholders(3, len(drop))})",
            migration_id,
            database,
            *drop,
        )

    async def samples(self, migration_id: str) -> list[Sample]:
        """Every sample kept of the migration, oldest first."""
        rows = await self._db.fetch(
            "SELECT * FROM pgmig_metric WHERE migration_id = $1 ORDER BY at, database", migration_id
        )
        return [self._sample(r) for r in rows]

    @staticmethod
    def _sample(r: dict[str, Any]) -> Sample:
        return Sample(
            r["database"],
            at(r["at"]),
            r["lag_bytes"],
            r["lag_seconds"],
            r["apply_rate"],
            r["wal_rate"],
            r["wal_held"],
            r["wal_limit"],
            r["copied_bytes"],
            r["copied_rows"],
        )
