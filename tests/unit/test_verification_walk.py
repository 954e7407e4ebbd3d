"""Continuous verification's walk over tables without a key (verify/continuous.py): sieved into KEYLESS_PARTS
parts of their rows by hash, every part judged from one scan on each side; a large table sieved until
covered, then left; one that no sieve can compare left to the cutover's count."""

from __future__ import annotations

import asyncio
import json

from migration_core.changes.watermarks import range_condition
from migration_core.verify import continuous
from migration_core.verify.continuous import (
    HASH_LOW,
    HASH_SPAN,
    HOT,
    KEYLESS_PARTS,
    SIEVE_SHIFT,
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


def split(v: Verification, r: Range) -> Range | None:
    return asyncio.run(_split(None, v, r))  # type: ignore[arg-type]


def part_of(row_hash: int) -> int:
    """The part a row falls in, as the trigger and the source's scan compute it (an arithmetic shift)."""
    return row_hash >> SIEVE_SHIFT


def watermark(parts: dict[int, tuple[int, str, str]]) -> dict:
    """The target's results at one watermark: its non-empty parts' rows, digest and tuple versions' digest."""
    return {"problem": None, "parts": json.dumps({str(b): list(p) for b, p in parts.items()})}


def test_a_keyless_table_is_sieved_into_parts_that_cover_every_row_once():
    v = Verification(planned=True, tables=[keyless("feed")])
    sieve = walk(v)
    assert sieve is not None and sieve.sieve
    assert sieve.label == f'"public"."feed" (whole table, in {KEYLESS_PARTS} hash parts)'
    parts = sieve.parts()
    assert len(parts) == KEYLESS_PARTS
    spans = sorted(p.hashes() for p in parts.values())
    assert sum(width for _, width in spans) == HASH_SPAN  # no hash left out, none twice
    assert all(low + width == spans[i + 1][0] for i, (low, width) in enumerate(spans[:-1]))
    for row_hash in (HASH_LOW, -1, 0, 12345, HASH_LOW + HASH_SPAN - 1):  # a row's part holds its hash
        low, width = parts[part_of(row_hash)].hashes()
        assert low <= row_hash < low + width
    first = parts[-KEYLESS_PARTS // 2]
    assert first.lo is None and first.label == f'"public"."feed" (rows in hash part 1 of {KEYLESS_PARTS})'
    assert parts[KEYLESS_PARTS // 2 - 1].hi is None  # the last part runs to the highest hash
    assert v.open[(("public", "feed"), 0)] == set(parts.values())  # coverage waits for every part
    assert ", 1 ranges pending," in v.summary()  # one sieve to send, however many parts it has left


def test_a_hash_part_is_a_bounded_condition_on_the_rows_hash():
    where, args = range_condition(None, None, "-42", "7")
    hashed = "hashtextextended(t::text, 0)"
    assert where == f"true AND {hashed} >= $1::text::bigint AND {hashed} < $2::text::bigint"
    assert args == ["-42", "7"]
    assert range_condition(None, None, None, None) == ("true", [])


def test_parts_written_between_the_watermarks_wait_for_the_next_sieve_the_others_compare():
    """One scan compares every part at rest: an append spoils only its own part, so a log written all the
    time still shrinks to nothing open, one sieve after another, and a part that differs twice is named."""
    feed = keyless("feed")
    v = Verification(planned=True, tables=[feed])
    sieve = walk(v)
    assert sieve is not None
    source = {3: (2, "17"), 7: (1, "5"), -9: (4, "-30")}
    # the first sieve: part 7 appended to between the watermarks (its versions moved), part -9 differs
    low = {3: (2, "17", "100"), 7: (1, "5", "200"), -9: (3, "-31", "300")}
    high = {**low, 7: (2, "9", "201")}
    _judge(v, Pending(sieve, 1, 7, "", 0.0, parts=source), watermark(low), watermark(high))
    waiting = v.open[(feed.ref, 0)]
    parts = sieve.parts()
    assert parts[3] not in waiting and parts[0] not in waiting  # compared equal (part 0: empty on both sides)
    assert waiting == {parts[7], parts[-9]} and v.again == [sieve] and not v.divergences
    assert f'counted at cutover (no key): "public"."feed" ({KEYLESS_PARTS - 2} of {KEYLESS_PARTS} parts compared)' in (
        v.summary()
    )
    # the second: part 7 at rest and equal now; part -9 differs again: a divergence, named by its hash part
    v.again.clear()
    at_rest = {3: (2, "17", "100"), 7: (2, "9", "201"), -9: (3, "-31", "300")}
    source = {**source, 7: (2, "9")}
    _judge(v, Pending(sieve, 2, 8, "", 0.0, parts=source), watermark(at_rest), watermark(at_rest))
    assert waiting == {parts[-9]} and not v.again  # only a divergence left: a repair sends it
    assert list(v.divergences.values()) == [
        f'"public"."feed" (rows in hash part {-9 + KEYLESS_PARTS // 2 + 1} of {KEYLESS_PARTS}): '
        "source 4 rows, target 3 rows"
    ]
    assert feed.ref not in v.covered


def test_a_large_keyless_table_is_sieved_until_covered_and_left_when_no_sieve_compares_a_part():
    archive, log = keyless("archive", once=True), keyless("log", once=True)
    v = Verification(planned=True, tables=[archive, log])
    first = walk(v)
    assert first is not None and first.table == archive
    everywhere = {b: (1, str(b), "1") for b in first.parts()}  # every part written to in every sieve
    moved = {b: (1, str(b), "2") for b in first.parts()}
    for chunk in range(HOT):
        assert split(v, first) == first
        _judge(v, Pending(first, chunk, KEYLESS_PARTS, "", 0.0), watermark(everywhere), watermark(moved))
    assert split(v, first) is None  # left to the cutover's count
    assert v.spoiled == {archive.ref} and "archive" in v.summary()
    second = walk(v)
    assert second is not None and second.table == log
    v.covered.add(log.ref)
    assert walk(v) is None  # nothing left to walk: the covered one is not sieved on every pass
    assert v.passes == 0


def test_a_large_keyless_table_is_sieved_by_one_pass_at_a_time():
    """Each sieve of a large table is a scan of all of it on both sides: while one is on its way to the target
    or queued to go again, the next pass does not send another."""
    archive, feed = keyless("archive", once=True), keyless("feed")
    v = Verification(planned=True, tables=[archive, feed])
    sieve = walk(v)
    assert sieve is not None and sieve.table == archive
    assert (following := walk(v)) is not None and following.table == feed
    v.pending[1] = Pending(sieve, 1, 0, "", 0.0)  # on its way
    assert (following := walk(v)) is not None and following.table == feed and v.passes == 1
    del v.pending[1]
    v.again.append(sieve)  # judged: parts left, queued to go again
    assert (following := walk(v)) is not None and following.table == feed and v.passes == 2
    v.again.clear()
    assert (following := walk(v)) is not None and following.table == archive  # the next pass may sieve it


def test_a_sieve_that_compares_some_part_each_time_is_never_left():
    archive = keyless("archive", once=True)
    v = Verification(planned=True, tables=[archive])
    sieve = walk(v)
    assert sieve is not None
    parts = list(sieve.parts())
    for chunk, b in enumerate(parts[: HOT + 2]):  # each sieve: one part at rest, every other one written to
        low = {p: (1, "1", "1") for p in parts}
        high = {p: (1, "1", "1" if p == b else "2") for p in parts}
        _judge(
            v,
            Pending(sieve, chunk, KEYLESS_PARTS, "", 0.0, parts={p: (1, "1") for p in parts}),
            watermark(low),
            watermark(high),
        )
        assert split(v, sieve) == sieve
    assert not v.spoiled and len(v.open[(archive.ref, 0)]) == KEYLESS_PARTS - HOT - 2


def test_a_database_covered_whole_begins_a_new_pass_only_pass_seconds_after_the_last(monkeypatch):
    """A small database walked on every tick re-read all of it every tick (a tick of 0.2 s: five passes a
    second, a third of a core) for nothing new: covered, its next pass waits PASS_SECONDS."""
    feed = keyless("feed")
    v = Verification(planned=True, tables=[feed])
    clock = [1000.0]
    monkeypatch.setattr(continuous.time, "monotonic", lambda: clock[0])
    assert walk(v) is not None and v.passes == 0  # the first pass
    assert walk(v) is not None and v.passes == 1  # not covered yet: the next one at once
    v.covered.add(feed.ref)
    assert walk(v) is None and v.passes == 1  # covered: not yet
    clock[0] += continuous.PASS_SECONDS
    assert walk(v) is not None and v.passes == 2
    v.divergences[Range(feed, None, "0")] = "differs"  # a divergence: every pass counts again
    assert walk(v) is not None and v.passes == 3
