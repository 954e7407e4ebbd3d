"""Continuous verification's walk over tables without a key (verify/continuous.py): parts of the rows by their
hash, cut in two when hot down to KEYLESS_PARTS, a large table compared whole until covered, then left."""

from __future__ import annotations

import asyncio

from migration_core.changes.watermarks import range_condition
from migration_core.verify.continuous import (
    HASH_SPAN,
    HOT,
    KEYLESS_PARTS,
    Pending,
    Range,
    Table,
    Verification,
    _judge,
    _next,
    _split,
)


def keyless(name: str, once: bool = False) -> Table:
    return Table("public", name, "r", None, None, 1000, once)


def walk(v: Verification) -> Range | None:
    return asyncio.run(_next(None, v, 100))  # type: ignore[arg-type]  # keyless tables ask the source nothing


def cut(v: Verification, r: Range) -> Range | None:
    v.changed[r] = HOT
    return asyncio.run(_split(None, v, r))  # type: ignore[arg-type]


def test_a_hot_keyless_table_is_cut_by_hash_into_parts_that_cover_every_row_once():
    v = Verification(planned=True, tables=[keyless("feed")])
    whole = walk(v)
    assert whole is not None and whole.label == '"public"."feed" (whole table)'
    parts, queue = [], [whole]
    while queue:
        r = queue.pop(0)
        first = cut(v, r)
        if first == r:  # the smallest part: not cut again
            parts.append(r)
            continue
        assert first is not None and v.again
        queue += [first, v.again.pop()]
    assert len(parts) == KEYLESS_PARTS
    spans = sorted(p.hashes() for p in parts)
    assert sum(width for _, width in spans) == HASH_SPAN  # no hash left out, none twice
    assert all(low + width == spans[i + 1][0] for i, (low, width) in enumerate(spans[:-1]))
    assert parts[0].label == f'"public"."feed" (rows in hash part 1 of {KEYLESS_PARTS})'
    assert parts[0].hi is not None and parts[-1].hi is None  # the last part runs to the highest hash
    assert v.open[(("public", "feed"), 0)] == set(parts)  # coverage waits for every part


def test_a_hash_part_is_a_bounded_condition_on_the_rows_hash():
    where, args = range_condition(None, None, "-42", "7")
    hashed = "hashtextextended(t::text, 0)"
    assert where == f"true AND {hashed} >= $1::text::bigint AND {hashed} < $2::text::bigint"
    assert args == ["-42", "7"]
    assert range_condition(None, None, None, None) == ("true", [])


def test_a_large_keyless_table_is_compared_whole_until_covered_and_left_when_always_written():
    archive, log = keyless("archive", once=True), keyless("log", once=True)
    v = Verification(planned=True, tables=[archive, log])
    first = walk(v)
    assert first is not None and first.table == archive
    assert cut(v, first) is None  # not cut: left to the cutover's count
    assert v.spoiled == {archive.ref} and "archive" in v.summary()
    second = walk(v)
    assert second is not None and second.table == log
    v.covered.add(log.ref)
    assert walk(v) is None  # nothing left to walk: the covered one is not compared on every pass
    assert v.passes == 0


def test_a_hot_keyless_tables_next_pass_begins_at_half_the_parts_its_last_one_needed():
    """Re-cutting a hot keyless table from whole on every pass spent two spoiled comparisons (two scans of the
    table on both sides) a level; the next pass begins at half the finest parts the last one compared equal."""
    feed = keyless("feed")
    v = Verification(planned=True, tables=[feed])
    whole = walk(v)
    assert whole is not None
    part = cut(v, cut(v, cut(v, whole)))  # type: ignore[arg-type]  # three levels: part 1 of 8
    assert part is not None and part.label.endswith("(rows in hash part 1 of 8)")
    same = {"problem": None, "versions": "1", "rows": 0, "digest": "0"}
    _judge(v, Pending(part, 1, 0, "0", 0.0), same, same)  # compared equal at rest
    assert v.parts == {feed.ref: 8}
    v.cursor = (1, None)  # the end of this pass
    first = walk(v)
    assert first is not None and first.walk == 1 and first.label.endswith("(rows in hash part 1 of 4)")
    begun = sorted((r.hashes() for r in v.open[(feed.ref, 1)]))
    assert len(begun) == 4 and sum(width for _, width in begun) == HASH_SPAN
    assert [r.label[-12:] for r in v.again[-3:]] == ["part 2 of 4)", "part 3 of 4)", "part 4 of 4)"]
    assert v.parts == {}  # the new pass records its own
