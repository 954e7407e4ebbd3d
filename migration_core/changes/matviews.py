"""Materialized views arrive empty from a schema dump and from logical replication: refresh them."""

from __future__ import annotations

import asyncpg

from migration_core.pg.sql import qualified


async def refresh(source: asyncpg.Connection, target: asyncpg.Connection) -> list[str]:
    """Refresh on the target every view populated on the source; views built on views are retried
    until nothing more succeeds, which orders them without reading dependencies."""
    rows = await source.fetch("SELECT schemaname, matviewname FROM pg_matviews WHERE ispopulated ORDER BY 1, 2")
    pending = [qualified(r["schemaname"], r["matviewname"]) for r in rows]
    done: list[str] = []
    while pending:
        failed: list[str] = []
        last_error: Exception | None = None
        for name in pending:
            try:
                await target.execute(f"REFRESH MATERIALIZED VIEW {name}")
                done.append(name)
            except asyncpg.PostgresError as exc:
                failed.append(name)
                last_error = exc
        if len(failed) == len(pending):
            raise last_error  # type: ignore[misc]
        pending = failed
    return done
