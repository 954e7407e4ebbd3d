"""The audit log (`pgmig_audit`): who did what to which migration or request, and where; paged for people,
with read-only commands counted rather than shown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from migration_core.pg.secrets import redact
from migration_core.state.models import AuditEntry, AuditPage
from migration_core.store.database import Database, at, ts


def _audit_entry(r: dict[str, Any]) -> AuditEntry:
    return AuditEntry(r["actor"], r["action"], r["detail"], r["migration_id"], r["channel"], at(r["at"]))


class AuditRepo(Database):
    """Writing and reading audit entries."""

    async def audit(self, e: AuditEntry) -> None:
        await self._db.execute(
            "INSERT INTO pgmig_audit VALUES ($1,$2,$3,$4,$5,$6)",
            ts(e.at),
            e.actor,
            e.action,
            redact(e.detail),
            e.migration_id,
            e.channel,
        )

    async def audit_log(self, migration_id: str | None = None, limit: int = 200) -> list[AuditEntry]:
        where, args = ("WHERE migration_id = $2", [limit, migration_id]) if migration_id else ("", [limit])
        rows = await self._db.fetch(f"SELECT * FROM pgmig_audit {where} ORDER BY at DESC LIMIT $1", *args)
        return [_audit_entry(r) for r in reversed(rows)]

    async def reached(self, migration_id: str) -> dict[str, datetime]:
        """When the migration first moved to each state it has been in (its moves' audit entries, `state: …`):
        what its plan's estimate of the whole run is compared with."""
        rows = await self._db.fetch(
            "SELECT substr(detail, 1, 40) AS head, at FROM pgmig_audit WHERE migration_id = $1 AND action = 'state' "
            "ORDER BY at",
            migration_id,
        )
        out: dict[str, datetime] = {}
        for r in rows:
            out.setdefault(r["head"].split(":", 1)[0], at(r["at"]))
        return out

    async def audit_page(self, subject: str, page: int = 1, size: int = 50, everything: bool = False) -> AuditPage:
        """A page of what was done to `subject`, read-only commands left out (and counted) unless
        `everything`: a script polling `status` must not push the decisions out of sight."""
        counts = await self._db.fetch(
            "SELECT count(*) AS total, coalesce(sum(CASE WHEN action = $2 THEN 1 ELSE 0 END), 0) AS reads "
            "FROM pgmig_audit WHERE migration_id = $1",
            subject,
            AuditEntry.READ_ONLY,
        )
        total, reads = int(counts[0]["total"]), int(counts[0]["reads"])
        shown = total if everything else total - reads
        rows = await self._db.fetch(
            "SELECT * FROM pgmig_audit WHERE migration_id = $1 AND ($2 OR action <> $3) "
            "ORDER BY at DESC LIMIT $4 OFFSET $5",
            subject,
            everything,
            AuditEntry.READ_ONLY,
            size,
            (page - 1) * size,
        )
        return AuditPage(
            [_audit_entry(r) for r in reversed(rows)], page, max(1, -(-shown // size)), 0 if everything else reads
        )
