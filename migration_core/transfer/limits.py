"""How data work is bounded: by progress, never by the clock, and how big a table may be before it is split."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataLimits:
    # A stream that moves no byte for this long has stalled, and so has a client program's work (export, import,
    # index builds) that other sessions keep blocked this long: fail it, naming what it waits for (waits.py)
    stall_seconds: float = 300.0
    split_table_bytes: int = 1 << 30  # larger tables are copied (and checksummed) as ranges, in parallel


DEFAULT_LIMITS = DataLimits()
