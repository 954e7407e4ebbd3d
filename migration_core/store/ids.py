"""Short typable ids (`mig-7`, `prov-3`) from named counters, allocated atomically so two replicas never share
one.
"""

from __future__ import annotations

from migration_core.store.database import Database


class IdsRepo(Database):
    """The `pgmig_counter` table."""

    async def next_migration_id(self) -> str:
        """Short typable ids (`mig-7`), allocated atomically so two replicas never share one."""
        return await self.next_id("migration", "mig")

    async def next_id(self, counter: str, prefix: str) -> str:
        rows = await self._db.fetch(
            "INSERT INTO pgmig_counter (name, value) VALUES ($1, 1) "
            "ON CONFLICT (name) DO UPDATE SET value = pgmig_counter.value + 1 RETURNING value",
            counter,
        )
        return f"{prefix}-{rows[0]['value']}"
