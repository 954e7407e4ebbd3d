"""Every periodic duty pgmig has, on one apscheduler: a progress tick per watched migration, the lease
renewal (which also looks for migrations to take over), the digest, and other sweeps (expired
provisioning requests, slots nobody watches)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


class Scheduler:
    """Interval and cron jobs, each coalesced, so a slow run never piles up behind itself."""

    def __init__(self, interval_seconds: float, tick: Callable[[str], Awaitable[None]]) -> None:
        self.interval = interval_seconds
        self._tick = tick
        self._scheduler: AsyncIOScheduler | None = None

    def _ensure_started(self) -> AsyncIOScheduler:
        if self._scheduler is None:
            self._scheduler = AsyncIOScheduler()
            self._scheduler.start()
        return self._scheduler

    def watch(self, migration_id: str) -> None:
        self._ensure_started().add_job(
            self._safe_tick,
            "interval",
            seconds=self.interval,
            args=[migration_id],
            id=f"progress:{migration_id}",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
        )

    def lease(self, every_seconds: float, renew: Callable[[], Awaitable[None]]) -> None:
        """Keep this process's claim on its migrations fresh, so other replicas leave them alone."""
        self._ensure_started().add_job(
            renew, "interval", seconds=every_seconds, id="lease", replace_existing=True, coalesce=True, max_instances=1
        )

    def digest(self, every: str, post: Callable[[], Awaitable[None]]) -> None:
        """A summary of active migrations: "hourly" on the hour, "daily" at 09:00 UTC, "off" for none."""
        if every == "off":
            return
        trigger = {"hourly": {"minute": 0}, "daily": {"hour": 9, "minute": 0}}[every]
        self._ensure_started().add_job(
            post, "cron", id="digest", replace_existing=True, coalesce=True, max_instances=1, timezone="UTC", **trigger
        )

    def every(self, job_id: str, seconds: float, run: Callable[[], Awaitable[None]]) -> None:
        """Any other periodic duty (e.g. closing expired provisioning requests); `run` must be a coroutine
        function, so that the scheduler awaits it on the loop."""
        self._ensure_started().add_job(
            run, "interval", seconds=seconds, id=job_id, replace_existing=True, coalesce=True, max_instances=1
        )

    def trigger(self, job_id: str) -> str | None:
        """When a job runs, in apscheduler's words; None when there is no such job."""
        job = self._scheduler.get_job(job_id) if self._scheduler else None
        return str(job.trigger) if job else None

    def watching(self, migration_id: str) -> bool:
        return bool(self._scheduler and self._scheduler.get_job(f"progress:{migration_id}"))

    def unwatch(self, migration_id: str) -> None:
        if self._scheduler and self.watching(migration_id):
            self._scheduler.remove_job(f"progress:{migration_id}")

    async def _safe_tick(self, migration_id: str) -> None:
        try:
            await self._tick(migration_id)
        except asyncio.CancelledError:  # shutting down mid-tick: nothing failed
            return
        except Exception:  # a failed progress post must not stop the migration or later ticks
            log.exception("progress tick for %s failed", migration_id)

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
