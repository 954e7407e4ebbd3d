"""Servers pgmig provisioned (`pgmig_server`) and the provisioning requests that make them (`pgmig_provision`;
their lifecycle is azure/provisioning.py's, their leases `LeasesRepo`'s).
"""

from __future__ import annotations

import json
from typing import Any

from migration_core.pg.secrets import redact
from migration_core.state.models import utcnow
from migration_core.store.database import Database, placeholders, ts


class ProvisioningRepo(Database):
    """Saving and reading provisioned servers and provisioning requests."""

    async def save_server(self, name: str, data: dict[str, Any], created_by: str) -> None:
        """A server pgmig provisioned, usable as a migration target across restarts (no secret in `data`)."""
        await self._db.execute(
            "INSERT INTO pgmig_server VALUES ($1,$2,$3,$4) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            name,
            json.dumps(data),
            created_by,
            ts(utcnow()),
        )

    async def saved_servers(self) -> dict[str, dict[str, Any]]:
        return {
            r["name"]: json.loads(r["data"]) for r in await self._db.fetch("SELECT * FROM pgmig_server ORDER BY name")
        }

    async def save_provision(
        self, pid: str, state: str, data: dict[str, Any], round: str = "", expect: tuple[str, ...] = ()
    ) -> bool:
        """A provisioning request (`prov-N`; its lifecycle is azure/provisioning.py's). With `expect` only if
        it is in one of those states (two approvers, two replicas: one wins), else created or replaced."""
        args: list[Any] = [pid, state, redact(json.dumps(data)), ts(utcnow()), round]
        if not expect:
            return (
                await self._db.execute(
                    "INSERT INTO pgmig_provision (id, state, data, updated_at, round) VALUES ($1,$2,$3,$4,$5) "
                    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data, "
                    "updated_at = excluded.updated_at, round = excluded.round",
                    *args,
                )
                == 1
            )
        return (
            await self._db.execute(
                f"UPDATE pgmig_provision SET state = $2, data = $3, updated_at = $4, round = $5 WHERE id = $1 "
                f"AND state IN ({placeholders(6, len(expect))})",
                *args,
                *expect,
            )
            == 1
        )

    async def provision(self, pid: str) -> dict[str, Any] | None:
        rows = await self._db.fetch("SELECT data FROM pgmig_provision WHERE id = $1", pid)
        return json.loads(rows[0]["data"]) if rows else None

    async def provisions(self) -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in await self._db.fetch("SELECT data FROM pgmig_provision ORDER BY id")]
