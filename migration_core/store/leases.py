"""Who runs which work: the leases on migrations and provisioning requests (renewed on the store's clock, so
replicas agree whichever one's clock is off), and the fencing tokens that refuse a stale holder's writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from migration_core.store.database import Database, dt

# A fenced write: only while the migration's fencing token is still the one the writer's claim got.
_HOLDS = "EXISTS (SELECT 1 FROM pgmig_migration WHERE id = $1 AND token = ${n})"


class LeaseLost(Exception):
    """A write by a process whose lease on the migration another one has taken over since (its fencing
    token is stale): refused, and the process must stop its work on that migration without another write."""

    def __init__(self, migration_id: str) -> None:
        super().__init__(f"{migration_id} was taken over by another pgmig process: this one stops its work on it")
        self.migration_id = migration_id


@dataclass(frozen=True)
class Lease:
    """A claim that succeeded: the fencing token every write under it carries, and whom it was taken from
    (another live process's stale lease; "" when it was free, ours, or our previous life's)."""

    token: int
    taken_from: str = ""


def fence(token: int | None, n: int) -> tuple[str, list[Any]]:
    """The WHERE clause of an `INSERT … SELECT` that writes only while `token` (parameter `$n`) is still the
    migration's fencing token (always without a token), and the parameters it adds."""
    if token is None:
        return "WHERE true ", []
    return f"WHERE {_HOLDS.format(n=n)} ", [token]


def _takeable(stale: str) -> str:
    """The lease condition of a claim by owner `$2`, with a lease of `$3` seconds and previous lives `$4`: the
    work is free, ours, gone stale, or held by one of our previous lives."""
    return f"(owner = '' OR owner = $2 OR heartbeat < {stale} OR ($4 <> '' AND substr(owner, 1, length($4)) = $4))"


class LeasesRepo(Database):
    """Claiming, renewing and giving back work; checking a fencing token."""

    async def claim(self, migration_id: str, owner: str, lease_seconds: float, previous_life: str = "") -> Lease | None:
        """Take a migration for this process unless another live one holds a fresh lease on it (atomic, on
        the store's clock); None when it does.

        Every change of holder increases the migration's fencing token: whatever the previous holder still
        writes with its token is refused (`LeaseLost`), however long it was frozen. `previous_life` is a
        prefix of owner ids that are provably this process's earlier lives (the same replica, started
        before): their leases are taken over at once, not after they go stale."""
        now, stale = self._db.clock(), self._db.clock("$3")
        rows = await self._db.fetch("SELECT owner, token FROM pgmig_migration WHERE id = $1", migration_id)
        if not rows:
            return None
        before, token = rows[0]["owner"], int(rows[0]["token"])
        claimed = await self._db.execute(
            f"UPDATE pgmig_migration SET owner = $2, heartbeat = {now}, "
            "token = CASE WHEN owner = $2 THEN token ELSE token + 1 END WHERE id = $1 AND token = $5 "
            f"AND {_takeable(stale)}",
            migration_id,
            owner,
            lease_seconds,
            previous_life,
            token,
        )
        if claimed != 1:
            return None
        if before == owner:
            return Lease(token)
        mine = before == "" or (previous_life != "" and before.startswith(previous_life))
        return Lease(token + 1, "" if mine else before)

    async def claim_provision(self, pid: str, owner: str, lease_seconds: float, previous_life: str = "") -> bool:
        """The one process that runs a provisioning request (the same rules as a migration's lease)."""
        now, stale = self._db.clock(), self._db.clock("$3")
        return (
            await self._db.execute(
                f"UPDATE pgmig_provision SET owner = $2, heartbeat = {now} WHERE id = $1 AND {_takeable(stale)}",
                pid,
                owner,
                lease_seconds,
                previous_life,
            )
            == 1
        )

    async def renew(self, migration_id: str, token: int) -> bool:
        """Renew the lease of the holder whose fencing token is `token`, in one statement that succeeds only
        while that token is still the migration's and the lease was not given back: after True, no other
        process can claim the migration for a full lease period (a claim needs a stale heartbeat)."""
        return (
            await self._db.execute(
                f"UPDATE pgmig_migration SET heartbeat = {self._db.clock()} "
                "WHERE id = $1 AND token = $2 AND owner <> ''",
                migration_id,
                token,
            )
            == 1
        )

    async def holds(self, migration_id: str, token: int) -> bool:
        """Whether `token` is still the migration's fencing token (nobody took it over since that claim)."""
        rows = await self._db.fetch("SELECT token FROM pgmig_migration WHERE id = $1", migration_id)
        return bool(rows) and int(rows[0]["token"]) == token

    async def owner(self, migration_id: str) -> tuple[str, datetime | None]:
        """Who holds the lease, and when it was last renewed."""
        rows = await self._db.fetch("SELECT owner, heartbeat FROM pgmig_migration WHERE id = $1", migration_id)
        return (rows[0]["owner"], dt(rows[0]["heartbeat"])) if rows else ("", None)

    async def lease_alive(self, migration_id: str, lease_seconds: float) -> str:
        """The owner of a fresh lease on the migration; "" when nobody (alive) holds it."""
        rows = await self._db.fetch(
            f"SELECT owner FROM pgmig_migration WHERE id = $1 AND owner <> '' AND heartbeat >= {self._db.clock('$2')}",
            migration_id,
            lease_seconds,
        )
        return rows[0]["owner"] if rows else ""

    async def release(self, owner: str) -> None:
        """A clean shutdown: other replicas (or this one restarted) may pick the work up at once."""
        for table in ("pgmig_migration", "pgmig_provision"):
            await self._db.execute(f"UPDATE {table} SET owner = '' WHERE owner = $1", owner)

    async def let_go(self, migration_id: str, owner: str) -> None:
        """Give back one migration's lease (held only for a moment)."""
        await self._db.execute(
            "UPDATE pgmig_migration SET owner = '' WHERE id = $1 AND owner = $2", migration_id, owner
        )

    async def beat(self, owner: str) -> None:
        """Renew the lease on everything this process holds."""
        for table in ("pgmig_migration", "pgmig_provision"):
            await self._db.execute(f"UPDATE {table} SET heartbeat = {self._db.clock()} WHERE owner = $1", owner)
