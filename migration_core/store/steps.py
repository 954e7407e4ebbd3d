"""The steps of a migration or provisioning request (`pgmig_step`): each one's state, detail and data, so that
a restarted process resumes where the last one stopped.
"""

from __future__ import annotations

import json
from typing import Any

from migration_core.pg.secrets import redact
from migration_core.state.models import Step, StepState
from migration_core.store.database import Database, dt, ts
from migration_core.store.leases import LeaseLost, fence

OPEN_ROUND = "EXISTS (SELECT 1 FROM pgmig_migration WHERE id = $1 AND state = 'awaiting_approval' AND round = ${n})"


class StepsRepo(Database):
    """Saving (fenced) and reading steps."""

    async def save_step(self, step: Step, token: int | None = None, open_round: str | None = None) -> bool:
        """Insert or update a step; with a `token`, only while it is the migration's fencing token. With an
        `open_round`, only while the migration awaits approval in that round: False when it no longer does (a
        decision closed the round since the step was read), and nothing is written."""
        fenced, fencing = fence(token, 8)
        if open_round is not None:
            fenced += f"AND {OPEN_ROUND.format(n=8 + len(fencing))} "
            fencing.append(open_round)
        saved = await self._db.execute(
            f"INSERT INTO pgmig_step SELECT $1,$2,$3,$4,$5,$6,$7 {fenced}ON CONFLICT (migration_id, name) DO UPDATE "
            "SET state = excluded.state, detail = excluded.detail, started_at = excluded.started_at, "
            "finished_at = excluded.finished_at, data = excluded.data",
            step.migration_id,
            step.name,
            step.state,
            redact(step.detail),
            ts(step.started_at),
            ts(step.finished_at),
            redact(json.dumps(step.data)),
            *fencing,
        )
        if saved != 1 and open_round is None:
            raise LeaseLost(step.migration_id)
        return saved == 1

    async def steps(self, migration_id: str) -> list[Step]:
        rows = await self._db.fetch(
            "SELECT * FROM pgmig_step WHERE migration_id = $1 ORDER BY COALESCE(started_at, ''), name", migration_id
        )
        return [self._step(r) for r in rows]

    async def steps_named(self, name: str) -> list[Step]:
        """One kind of step across every migration or request (e.g. every `provision`)."""
        rows = await self._db.fetch("SELECT * FROM pgmig_step WHERE name = $1 ORDER BY migration_id", name)
        return [self._step(r) for r in rows]

    async def step(self, migration_id: str, name: str) -> Step | None:
        return next((s for s in await self.steps(migration_id) if s.name == name), None)

    @staticmethod
    def _step(r: dict[str, Any]) -> Step:
        return Step(
            r["migration_id"],
            r["name"],
            StepState(r["state"]),
            r["detail"],
            dt(r["started_at"]),
            dt(r["finished_at"]),
            json.loads(r["data"]),
        )
