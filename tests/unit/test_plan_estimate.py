"""The plan's estimate arithmetic (migration_core/plan/estimate.py), on numbers worked out by hand."""

from __future__ import annotations

import pytest

from migration_core.plan.estimate import (
    COPY_FACTOR,
    COPY_PASSES,
    INDEX_FACTOR,
    INDEX_PASSES,
    SCHEMA_PASSES,
    SPREAD,
    STATEMENTS_PER_TABLE,
    VERIFY_FACTOR,
    VERIFY_PASSES,
    Learned,
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
    # 100 MB written after being read at 10 MB/s, on 2 streams, and the copy's own pass over the schema
    central_copy = 100 * COPY_FACTOR / 10 / 2 + 0.1 * COPY_PASSES
    assert e.copy.low == pytest.approx(central_copy / SPREAD) and e.copy.high == pytest.approx(central_copy * SPREAD)
    assert e.indexes.high == pytest.approx((50 * INDEX_FACTOR / 10 / 2 + 0.1 * INDEX_PASSES) * SPREAD)
    assert e.verify.low == pytest.approx((100 * VERIFY_FACTOR / 10 / 2 + 0.1 * VERIFY_PASSES) / SPREAD)
    rest = SCHEMA_PASSES - COPY_PASSES - INDEX_PASSES - VERIFY_PASSES
    assert e.overhead.low == pytest.approx((0.1 * rest + 4 * STATEMENTS_PER_TABLE * 0.001) / SPREAD)
    assert e.total.high == pytest.approx(e.overhead.high + e.copy.high + e.indexes.high + e.verify.high)


def test_early_verification_moves_the_checksums_into_the_copy_and_keeps_the_total() -> None:
    work = Workload(tables=4, rows=1000, heap_bytes=100 * MB, index_bytes=50 * MB, schema_seconds=0.1)
    rates = Rates(read_bytes_per_second=10 * MB, round_trip_seconds=0.001, streams=2)
    after, early = estimate(work, rates), estimate(work, rates, early_verify=True)
    assert early.verify.high == pytest.approx(0.1 * VERIFY_PASSES * SPREAD)  # only the verify step's own pass
    assert early.copy.high == pytest.approx(after.copy.high + 100 * VERIFY_FACTOR / 10 / 2 * SPREAD)
    assert early.total.low == pytest.approx(after.total.low) and early.total.high == pytest.approx(after.total.high)


def test_streams_never_outnumber_tables_and_history_widens_the_import() -> None:
    one = Workload(tables=1, rows=60_000, heap_bytes=10 * MB, index_bytes=0, schema_seconds=None)
    many = estimate(one, Rates(10 * MB, 0.0, streams=8))
    single = estimate(one, Rates(10 * MB, 0.0, streams=1))
    assert many.copy == single.copy  # one table is one stream, whatever --parallel says
    slow = estimate(one, Rates(10 * MB, 0.0, streams=1, learned=Learned(rows=1_000)))  # 60 s by history
    assert slow.import_.high == pytest.approx(60) and slow.import_.low == single.import_.low


def test_an_earlier_migrations_rates_widen_each_phase_to_what_they_predict() -> None:
    work = Workload(tables=2, rows=1000, heap_bytes=40 * MB, index_bytes=8 * MB, schema_seconds=None)
    sampled = estimate(work, Rates(100 * MB, 0.0, streams=2))
    learned = estimate(work, Rates(100 * MB, 0.0, streams=2, learned=Learned(copy=2 * MB, indexes=1 * MB)))
    assert learned.copy == Range(sampled.copy.low, 20.0)  # 40 MB at the 2 MB/s that copy really moved
    assert learned.indexes == Range(sampled.indexes.low, 8.0)
    assert learned.import_.high == pytest.approx(learned.overhead.high + 20.0 + 8.0)
    faster = estimate(work, Rates(1 * MB, 0.0, streams=2, learned=Learned(copy=400 * MB)))
    assert faster.copy.low == pytest.approx(0.1)  # faster than the sample: the range reaches down to it


def test_between_the_same_servers_an_earlier_migration_centres_each_phase_on_what_it_predicts() -> None:
    work = Workload(tables=2, rows=1000, heap_bytes=40 * MB, index_bytes=8 * MB, schema_seconds=None)
    learned = Learned(copy=2 * MB, indexes=1 * MB, rows=50, same_servers=True)
    e = estimate(work, Rates(100 * MB, 0.0, streams=2, learned=learned))
    assert e.copy == Range.around(20.0) and e.indexes == Range.around(8.0)  # not reaching down to the sample
    assert e.import_ == Range.around(20.0)  # 1000 rows at the 50 a second the whole import took


def test_a_table_copied_whole_bounds_its_phase_whatever_the_streams() -> None:
    # one 90 MB table and three small ones: its stream reads 90 MB while the others are done
    work = Workload(4, 1000, 100 * MB, 20 * MB, None, largest_heap=90 * MB, largest_indexes=18 * MB)
    two, one = estimate(work, Rates(10 * MB, 0.0, streams=2)), estimate(work, Rates(10 * MB, 0.0, streams=1))
    assert two.copy.high == pytest.approx(90 * COPY_FACTOR / 10 * SPREAD)
    assert two.indexes.high == pytest.approx(18 * INDEX_FACTOR / 10 * SPREAD)
    assert one.copy.high == pytest.approx(100 * COPY_FACTOR / 10 * SPREAD)
    split = estimate(work, Rates(10 * MB, 0.0, streams=2, split_bytes=64 * MB))  # copied as ranges: shared
    assert split.copy.high == pytest.approx(100 * COPY_FACTOR / 10 / 2 * SPREAD)


def test_range_ratio_wal_and_identity_cost() -> None:
    r = Range(2, 4)
    assert (r.ratio(3), r.ratio(1), r.ratio(8)) == (1.0, 2.0, 2.0)
    assert wal_held(1000, r) == Range(2000, 4000)
    assert identity_full_cost(changes_per_hour=100, rows=5000, row_bytes=80) == (8000, 500_000)


def test_durations_read_as_precisely_as_they_deserve() -> None:
    assert [seconds_text(s) for s in (0.04, 0.42, 4.24, 12.4, 210, 9000)] == [
        "40 ms",
        "0.42 s",
        "4.2 s",
        "12 s",
        "3.5 min",
        "2.5 h",
    ]
    assert range_text(Range(4.21, 4.24)) == "4.2 s" and range_text(Range(1, 3)) == "1.0 s – 3.0 s"
