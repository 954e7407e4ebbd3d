"""Row digests: equal rows give equal digests however the stream is cut; any changed row changes them."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from migration_core.verify.digest import RowDigest

ROWS = [b"%d\tname %d\t\\N\t2024-02-01\n" % (i, i * 7) for i in range(500)]


def digest(ordered: bool, stream: bytes, cuts: list[int]) -> RowDigest:
    d = RowDigest(ordered)
    start = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        d.update(stream[start:cut])
        start = cut
    return d


@given(st.lists(st.integers(0, len(b"".join(ROWS))), max_size=30), st.booleans())
def test_how_the_stream_is_cut_does_not_matter(cuts, ordered):
    stream = b"".join(ROWS)
    whole = digest(ordered, stream, [])
    cut = digest(ordered, stream, cuts)
    assert cut.value == whole.value


def test_unordered_ignores_row_order_and_ordered_does_not():
    shuffled = ROWS[:]
    random.Random(7).shuffle(shuffled)
    for ordered, same in ((False, True), (True, False)):
        a, b = digest(ordered, b"".join(ROWS), []), digest(ordered, b"".join(shuffled), [])
        assert (a.value == b.value) is same


def test_one_changed_byte_or_row_changes_the_digest():
    base = b"".join(ROWS)
    changed = base.replace(b"name 700", b"name 701")
    moved = base.replace(ROWS[3], b"") + ROWS[3].replace(b"\t\\N", b"\t")
    for ordered in (False, True):
        assert digest(ordered, base, []).value != digest(ordered, changed, []).value
        assert digest(ordered, base, []).value != digest(ordered, moved, []).value


def test_ranges_add_up_to_the_table():
    whole = digest(False, b"".join(ROWS), [])
    parts = RowDigest(False)
    for i in range(0, len(ROWS), 120):
        parts.add(digest(False, b"".join(ROWS[i : i + 120]), []))
    assert parts.value == whole.value


def test_the_kind_is_part_of_the_value():
    """An ordered and an unordered digest of the same rows never compare equal by accident."""
    assert digest(True, ROWS[0], []).value[0] == "o" and digest(False, ROWS[0], []).value[0] == "u"
