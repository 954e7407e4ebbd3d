"""How data work is bounded: by progress, never by the clock, and how big a table may be before it is split."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataLimits:
    stall_seconds: float = 300.0  # a stream that moves no byte for this long has stalled: fail it, readably
    split_table_bytes: int = 1 << 30  # larger tables are copied (and checksummed) as ranges, in parallel


DEFAULT_LIMITS = DataLimits()
