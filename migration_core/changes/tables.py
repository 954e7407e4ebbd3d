"""Target tables emptied before a whole-table copy refills them: in the copy's own transaction, so the
table is never seen empty, and only in a target database this migration prepared (journaled there)."""

from __future__ import annotations

import asyncpg


async def empty(conn: asyncpg.Connection, table: str) -> None:
    """TRUNCATE ONLY the (quoted) table: its partitions or children are copied on their own."""
    await conn.execute(f"TRUNCATE ONLY {table}")
