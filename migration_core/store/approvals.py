"""Approvers' decisions (`pgmig_approval`): one per person per approval round, taken only while the round is
open, for a migration's cutover, a provisioning request, or a destructive schema change captured while a
migration streams (round `ddl:DB:ID`, open while it streams: observe/ddl.py).
"""

from __future__ import annotations

from migration_core.state.models import Approval
from migration_core.store.database import Database, at, ts


class ApprovalsRepo(Database):
    """Recording and reading decisions."""

    async def add_approval(self, a: Approval) -> bool:
        """Record one decision per person per round, only while that round is open (the migration awaits
        approval in it, or the provisioning request waits in it); False for a repeated click or a closed
        round — in one statement, so no decision can slip in after another closed the round."""
        return (
            await self._db.execute(
                "INSERT INTO pgmig_approval SELECT $1,$2,$3,$4,$5,$6 WHERE "
                "EXISTS (SELECT 1 FROM pgmig_migration WHERE id = $1 AND state = 'awaiting_approval' AND round = $6) "
                "OR EXISTS (SELECT 1 FROM pgmig_provision WHERE id = $1 AND state = 'waiting' AND round = $6) "
                "OR EXISTS (SELECT 1 FROM pgmig_migration WHERE id = $1 AND $6 LIKE 'ddl:%' "
                "AND state IN ('catching_up', 'ready_for_cutover', 'awaiting_approval')) "
                "ON CONFLICT (migration_id, round, approver) DO NOTHING",
                a.migration_id,
                a.approver,
                a.decision,
                a.reason,
                ts(a.at),
                a.round,
            )
            == 1
        )

    async def approvals(self, migration_id: str, round: str | None = None) -> list[Approval]:
        rows = await self._db.fetch("SELECT * FROM pgmig_approval WHERE migration_id = $1 ORDER BY at", migration_id)
        found = [
            Approval(r["migration_id"], r["approver"], r["decision"], r["reason"], at(r["at"]), r["round"])
            for r in rows
        ]
        return [a for a in found if round is None or a.round == round]
