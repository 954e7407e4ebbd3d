"""Digests of table rows as `COPY … TO STDOUT` renders them (text format: one row a line, newlines in
values escaped), computed by pgmig on the bytes it carries.

The source side comes free: the copy stream passes through pgmig anyway, so verifying a table needs no
second read of the source. The target side is one `COPY … TO STDOUT` of the loaded table under the same
rendering settings (servers.RENDERING), hashed the same way.

- `ordered`: one hash of the whole stream (xxh3, ~10 GB/s). For a table loaded by one stream into a
  table truncated in the same transaction, which PostgreSQL fills page after page without looking for
  free space elsewhere, so a sequential read gives the rows back in the order they were sent.
- unordered: the sum of a hash of every row, so order does not matter; for tables copied as ranges by
  several streams at once. Costs a hash call per row (~0.2 µs).

xxhash is used because it is the fastest well-distributed 64-bit hash callable per row from Python;
Python's own `hash` is salted per process, and zlib's crc32 is 32 bits and slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import xxhash

_MASK = (1 << 64) - 1


@dataclass
class RowDigest:
    """Fed chunk by chunk (`update`), in any chunking: rows split across chunks are joined. It counts
    no rows: COPY's command tags do, on both sides."""

    ordered: bool
    _sum: int = 0
    _stream: xxhash.xxh3_64 = field(default_factory=xxhash.xxh3_64)
    _tail: bytes = b""

    def update(self, chunk: bytes) -> None:
        if self.ordered:
            self._stream.update(chunk)
            return
        lines = (self._tail + chunk if self._tail else chunk).split(b"\n")
        self._tail = lines.pop()
        self._sum += sum(map(xxhash.xxh3_64_intdigest, lines))

    def add(self, other: "RowDigest") -> None:
        """Another part of the same table (one range): unordered digests only, whose sums add up."""
        assert not (self.ordered or other.ordered), "an ordered digest has one stream"
        self._sum += other._sum

    @property
    def value(self) -> str:
        kind, number = ("o", self._stream.intdigest()) if self.ordered else ("u", self._sum & _MASK)
        return f"{kind}{number:016x}"
