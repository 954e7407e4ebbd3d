"""The plan's estimate arithmetic (migration_core/plan/estimate.py), on numbers worked out by hand."""

from __future__ import annotations

import pytest

from migration_core.plan.estimate import (
    COPY_FACTOR,
    SCHEMA_PASSES,
    SPREAD,
    STATEMENTS_PER_TABLE,
    Range,
    Rates,
    Workload,
    estimate,
    identity_full_cost,
    range_text,
    seconds_text,
    wal_held,
)

MB = 1 << 20


def test_each_phase_scales_with_its_bytes_and_the_streams() -> None:
    work = Workload(tables=4, rows=1000, heap_bytes=100 * MB, index_bytes=50 * MB, schema_seconds=0.1)
    e = estimate(work, Rates(read_bytes_per_second=10 * MB, round_trip_seconds=0.001, streams=2))
    central_copy = 100 * COPY_FACTOR / 10 / 2  # 100 MB written after being read at 10 MB/s, on 2 streams
    assert e.copy.low == pytest.approx(central_copy / SPREAD) and e.copy.high == pytest.approx(central_copy * SPREAD)
    assert e.indexes.high == pytest.approx(50 * 2 / 10 / 2 * SPREAD)
    assert e.verify.low == pytest.approx(100 / 10 / 2 / SPREAD)
    overhead = 0.1 * SCHEMA_PASSES + 4 * STATEMENTS_PER_TABLE * 0.001
    assert e.overhead.low == pytest.approx(overhead / SPREAD)
    assert e.total.high == pytest.approx(e.overhead.high + e.copy.high + e.indexes.high + e.verify.high)


def test_streams_never_outnumber_tables_and_history_widens_the_import() -> None:
    one = Workload(tables=1, rows=60_000, heap_bytes=10 * MB, index_bytes=0, schema_seconds=None)
    many = estimate(one, Rates(10 * MB, 0.0, streams=8))
    single = estimate(one, Rates(10 * MB, 0.0, streams=1))
    assert many.copy == single.copy  # one table is one stream, whatever --parallel says
    slow = estimate(one, Rates(10 * MB, 0.0, streams=1, history_rows_per_second=1_000))  # 60 s by history
    assert slow.import_.high == pytest.approx(60) and slow.import_.low == single.import_.low


def test_range_ratio_wal_and_identity_cost() -> None:
    r = Range(2, 4)
    assert (r.ratio(3), r.ratio(1), r.ratio(8)) == (1.0, 2.0, 2.0)
    assert wal_held(1000, r) == Range(2000, 4000)
    assert identity_full_cost(changes_per_hour=100, rows=5000, row_bytes=80) == (8000, 500_000)


def test_durations_read_as_precisely_as_they_deserve() -> None:
    assert [seconds_text(s) for s in (0.04, 0.42, 12.4, 210, 9000)] == ["40 ms", "0.4 s", "12 s", "3.5 min", "2.5 h"]
    assert range_text(Range(0.41, 0.44)) == "0.4 s" and range_text(Range(1, 3)) == "1.0 s – 3.0 s"
