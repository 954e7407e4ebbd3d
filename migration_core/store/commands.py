"""Commands for the replica that holds the work (`pgmig_command`), the wake-ups between replicas (LISTEN/NOTIFY)
and the Slack deliveries already seen (`pgmig_delivery`), so that a click is acted on once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from migration_core.pg.secrets import redact
from migration_core.state.models import utcnow
from migration_core.store.database import Database, ts


class CommandsRepo(Database):
    """The command queue, replica notifications and delivery keys."""

    async def enqueue(self, cid: str, subject: str, kind: str, actor: str, args: dict[str, Any]) -> None:
        await self._db.execute(
            "INSERT INTO pgmig_command VALUES ($1,$2,$3,$4,$5,'queued','',$6,$6)",
            cid,
            subject,
            kind,
            actor,
            json.dumps(args),
            ts(utcnow()),
        )

    async def commands_for(self, owner: str) -> list[dict[str, Any]]:
        """Queued commands on work this process holds, oldest first."""
        rows = await self._db.fetch(
            "SELECT c.* FROM pgmig_command c JOIN pgmig_migration m ON m.id = c.subject "
            "WHERE c.state = 'queued' AND m.owner = $1 ORDER BY c.created_at",
            owner,
        )
        return [{**r, "args": json.loads(r["args"])} for r in rows]

    async def take_command(self, cid: str) -> bool:
        """Queued → running, for one process only."""
        return (
            await self._db.execute(
                "UPDATE pgmig_command SET state = 'running', updated_at = $2 WHERE id = $1 AND state = 'queued'",
                cid,
                ts(utcnow()),
            )
            == 1
        )

    async def finish_command(self, cid: str, result: dict[str, Any]) -> None:
        await self._db.execute(
            "UPDATE pgmig_command SET state = 'done', result = $2, updated_at = $3 WHERE id = $1",
            cid,
            redact(json.dumps(result)),
            ts(utcnow()),
        )

    async def command(self, cid: str) -> dict[str, Any] | None:
        rows = await self._db.fetch("SELECT * FROM pgmig_command WHERE id = $1", cid)
        if not rows:
            return None
        r = rows[0]
        return {**r, "args": json.loads(r["args"]), "result": json.loads(r["result"]) if r["result"] else None}

    async def listen(self, channel: str, wake: Callable[[], object]) -> None:
        """Call `wake` whenever another replica notifies `channel` (PostgreSQL stores only)."""
        await self._db.listen(channel, wake)

    async def notify(self, channel: str) -> None:
        await self._db.notify(channel)

    async def first_delivery(self, key: str) -> bool:
        """Whether this is the first time a Slack delivery (action id + action_ts + user) is seen."""
        return (
            await self._db.execute(
                "INSERT INTO pgmig_delivery VALUES ($1,$2) ON CONFLICT (key) DO NOTHING", key, ts(utcnow())
            )
            == 1
        )
