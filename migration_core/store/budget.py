"""The Slack posting budget (`pgmig_budget`): one rate limit shared by every replica, counted on the store's
clock, with a hold when Slack says Retry-After.
"""

from __future__ import annotations

from migration_core.store.database import Database


class BudgetRepo(Database):
    """Taking from and holding a rate budget."""

    async def take_budget(self, key: str, limit: int, window_seconds: float) -> bool:
        """One call of a rate budget shared by every replica (e.g. Slack's per-workspace limit of a Web API
        method): True when fewer than `limit` were taken in the current window and nobody was told to
        hold off; counted on the store's clock."""
        now = self._db.clock()
        await self._db.execute(f"INSERT INTO pgmig_budget VALUES ($1, {now}, 0, '') ON CONFLICT (key) DO NOTHING", key)
        await self._db.execute(
            f"UPDATE pgmig_budget SET window_start = {now}, used = 0 WHERE key = $1 "
            f"AND window_start < {self._db.clock('$2')}",
            key,
            window_seconds,
        )
        return (
            await self._db.execute(
                f"UPDATE pgmig_budget SET used = used + 1 WHERE key = $1 AND used < $2 AND held_until < {now}",
                key,
                limit,
            )
            == 1
        )

    async def hold_budget(self, key: str, seconds: float) -> None:
        """Nobody takes from the budget for `seconds` (the service said Retry-After)."""
        await self._db.execute(
            f"INSERT INTO pgmig_budget VALUES ($1, {self._db.clock()}, 0, '') ON CONFLICT (key) DO NOTHING", key
        )
        await self._db.execute(
            f"UPDATE pgmig_budget SET held_until = {self._db.clock_ahead('$2')} WHERE key = $1", key, seconds
        )
