"""How a large table is cut: never a range above the limit, every row in exactly one range."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from migration_core.transfer import ranges


def test_a_table_under_the_limit_stays_whole_and_one_over_it_feeds_every_stream():
    assert ranges.count(100, 100, 8) == 1
    assert ranges.count(101, 100, 8) == 8  # just over: one range per stream
    assert ranges.count(10_000, 100, 2) == 100  # far over: none above the limit


@given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=6, unique=True), st.integers(-(2**41), 2**41))
def test_open_ended_ranges_put_every_value_in_exactly_one(bounds, value):
    bounds.sort()
    conditions = ranges._between("k", [str(b) for b in bounds])
    assert len(conditions) == len(bounds) + 1
    holds = [eval(c.replace("AND", "and").replace("k", str(value))) for c in conditions]  # noqa: S307 - ints only
    assert holds.count(True) == 1


def test_which_ranges_name_the_same_rows_on_both_sides():
    assert ranges.by_key_condition('"id" < 5') and not ranges.by_key_condition("ctid < '(5,0)'::tid")
    assert not ranges.by_key_condition("")
