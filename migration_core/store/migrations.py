"""Migrations themselves (`pgmig_migration`): what each moves where, its state, its live Slack message. The
conditional state change is what makes double clicks and racing replicas harmless.
"""

from __future__ import annotations

import json
from typing import Any

from migration_core.pg.secrets import redact
from migration_core.state.models import Migration, MigrationOptions, Mode, RetryChanges, State, utcnow
from migration_core.store.database import Database, at, placeholders, ts


class MigrationsRepo(Database):
    """Creating, reading and moving migrations (their leases are `LeasesRepo`'s)."""

    async def create_migration(self, m: Migration, owner: str = "") -> Migration:
        """Insert a new migration, leased to `owner` from the first moment (no other replica's recovery
        may pick up a migration its creator is still setting up)."""
        await self._db.execute(
            "INSERT INTO pgmig_migration (id, source, target, databases, mode, state, requested_by, channel, options, "
            "error, created_at, updated_at, message_channel, message_ts, owner, heartbeat, token) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,1)",
            m.id,
            m.source,
            m.target,
            json.dumps(m.databases),
            Mode(m.mode).value,
            m.state.value,
            m.requested_by,
            m.channel,
            json.dumps(m.options.as_dict()),
            m.error,
            ts(m.created_at),
            ts(m.updated_at),
            m.message_channel,
            m.message_ts,
            owner,
            ts(utcnow()) if owner else "",  # a fresh lease (ISO text, as the store's clock writes it)
        )
        return m

    async def set_databases(self, migration_id: str, databases: list[str]) -> None:
        await self._db.execute(
            "UPDATE pgmig_migration SET databases = $1 WHERE id = $2", json.dumps(databases), migration_id
        )

    async def set_options(self, migration_id: str, options: MigrationOptions) -> None:
        await self._db.execute(
            "UPDATE pgmig_migration SET options = $1 WHERE id = $2", json.dumps(options.as_dict()), migration_id
        )

    async def set_message(self, migration_id: str, channel: str, ts: str) -> None:
        """Remember the live message so that every later update edits it in place, across restarts."""
        await self._db.execute(
            "UPDATE pgmig_migration SET message_channel = $1, message_ts = $2 WHERE id = $3", channel, ts, migration_id
        )

    async def get_migration(self, migration_id: str) -> Migration | None:
        rows = await self._db.fetch("SELECT * FROM pgmig_migration WHERE id = $1", migration_id)
        return self._migration(rows[0]) if rows else None

    async def list_migrations(self, active_only: bool = False) -> list[Migration]:
        rows = await self._db.fetch("SELECT * FROM pgmig_migration ORDER BY created_at, id")
        found = [self._migration(r) for r in rows]
        return [m for m in found if not m.state.finished] if active_only else found

    async def transition(
        self,
        migration_id: str,
        to: State,
        *,
        expect: tuple[State, ...] = (),
        error: str = "",
        round: str = "",
        retry_with: RetryChanges | None = None,
        token: int | None = None,
    ) -> bool:
        """Move to `to` only if the migration is in one of `expect` (any state when empty) and, with a
        `token`, only if that is still the migration's fencing token.

        The conditional UPDATE is what makes double clicks and racing replicas harmless. `round` is the
        approval round a move to awaiting_approval opens; any other move closes it. `retry_with` goes with
        a failure (what its fix asks a retry to change); any other move clears it.
        """
        sql = (
            "UPDATE pgmig_migration SET state = $1, error = $2, updated_at = $3, round = $4, retry_with = $5 "
            "WHERE id = $6"
        )
        retry = json.dumps((retry_with or RetryChanges()).to_dict())
        args: list[Any] = [to.value, redact(error), ts(utcnow()), round, retry, migration_id]
        if token is not None:
            args.append(token)
            sql += f" AND token = ${len(args)}"
        if expect:
            sql += f" AND state IN ({placeholders(len(args) + 1, len(expect))})"
            args += [s.value for s in expect]
        return await self._db.execute(sql, *args) == 1

    @staticmethod
    def _migration(r: dict[str, Any]) -> Migration:
        return Migration(
            id=r["id"],
            source=r["source"],
            target=r["target"],
            databases=json.loads(r["databases"]),
            mode=Mode(r["mode"]),
            state=State(r["state"]),
            requested_by=r["requested_by"],
            channel=r["channel"],
            options=MigrationOptions.from_dict(json.loads(r["options"])),
            error=r["error"],
            created_at=at(r["created_at"]),
            updated_at=at(r["updated_at"]),
            message_channel=r["message_channel"],
            message_ts=r["message_ts"],
            retry_with=RetryChanges.from_dict(json.loads(r["retry_with"])),
        )
