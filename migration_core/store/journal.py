"""The journal of every change pgmig makes on a customer's server (`pgmig_journal`; state/journal.py writes
it): each entry is saved, fenced, before the change it records, so that the change can be undone.
"""

from __future__ import annotations

import json

from migration_core.state.models import Change, JournalEntry, Mark
from migration_core.store.database import Database, at, ts
from migration_core.store.leases import LeaseLost, fence


class JournalRepo(Database):
    """Saving and reading journal entries."""

    async def save_journal(self, e: JournalEntry, token: int | None = None) -> None:
        """Insert or update a journal entry; with a `token`, only while it is the migration's fencing token
        (the entry is written before the change it records, so a refused entry means no change)."""
        fenced, fencing = fence(token, 10)
        saved = await self._db.execute(
            f"INSERT INTO pgmig_journal SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9 {fenced}"
            "ON CONFLICT (migration_id, kind, server, database, name) DO UPDATE SET mark = excluded.mark, "
            "data = excluded.data, updated_at = excluded.updated_at",
            e.migration_id,
            e.kind.value,
            e.server,
            e.database,
            e.name,
            e.mark.value,
            json.dumps(e.data),
            ts(e.at),
            ts(e.updated_at),
            *fencing,
        )
        if saved != 1:
            raise LeaseLost(e.migration_id)

    async def journal(self, migration_id: str | None = None) -> list[JournalEntry]:
        """One migration's journal in the order the changes were planned (every migration's with None)."""
        where, args = ("WHERE migration_id = $1", [migration_id]) if migration_id else ("", [])
        rows = await self._db.fetch(f"SELECT * FROM pgmig_journal {where} ORDER BY at, kind, database, name", *args)
        return [
            JournalEntry(
                r["migration_id"],
                Change(r["kind"]),
                r["server"],
                r["database"],
                r["name"],
                Mark(r["mark"]),
                json.loads(r["data"]),
                at(r["at"]),
                at(r["updated_at"]),
            )
            for r in rows
        ]
