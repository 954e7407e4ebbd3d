"""Who runs a migration when several pgmig processes share one state store: the lease each holds on its
migrations (claimed, renewed every quarter lease, given up when another process took it over), and
recovery.

Recovery runs at start-up and on every lease tick: a migration whose owner stopped renewing its lease
(or is provably this process's previous life: the same replica id) is taken over and carried on from
its state — pipelines restart their unfinished step, streaming ones are watched again, a cutover goes
back to streaming (cutting_over) or forward to completed (released).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from migration_core.engine.runner import MONITORED
from migration_core.flows import cutover as cutover_flow
from migration_core.pg.servers import ConnectionProblem
from migration_core.state.errors import MigrationError
from migration_core.state.journal import Mark
from migration_core.state.ledger import DONE
from migration_core.state.models import AuditEntry, Migration, State, StepKind

if TYPE_CHECKING:
    from migration_core.engine.api import Engine

log = logging.getLogger(__name__)
CUTOVER_STATES = (State.CUTTING_OVER, State.RELEASED)


class Leases:
    """This process's leases on migrations, and taking over the ones nobody alive holds."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._leasing = False

    async def hold(self, migration_id: str) -> bool:
        """Claim the lease (new work, retries, take-overs); this replica's earlier lives count as gone. The
        claim's fencing token goes with every write from here on; a take-over from another replica whose
        lease lapsed is said in the audit log and the channel."""
        engine = self.engine
        lease = await engine.store.claim(
            migration_id, engine.instance, engine.config.lease_seconds, previous_life=f"{engine.replica}/"
        )
        if lease is None:
            return False
        engine.ledger.tokens[migration_id] = lease.token
        self.keep()
        if lease.taken_from:
            gone = lease.taken_from.split("/", 1)[0]
            text = f"🔁 replica {engine.replica} took {migration_id} over from replica {gone}, whose lease lapsed"
            await engine.store.audit(AuditEntry("pgmig", "takeover", text, migration_id))
            m = await engine.store.get_migration(migration_id)
            if m is not None:
                await engine.alerts.notice(m, "takeover", text)
        return True

    def keep(self) -> None:
        """From the first lease on: renew ours and look for migrations nobody holds, every quarter lease."""
        if not self._leasing:
            self._leasing = True
            engine = self.engine
            engine.scheduler.lease(max(0.2, engine.config.lease_seconds / 4), self._renew_lease)
            engine.scheduler.every("commands", engine.config.command_poll_seconds, engine.commands.serve_job)
            engine.scheduler.every("leftovers", engine.config.leftover_check_seconds, engine.reminders.check_job)

    async def _renew_lease(self) -> None:
        """A coroutine function, so that apscheduler awaits it on the loop (a lambda would not be awaited)."""
        try:
            await self.engine.store.beat(self.engine.instance)
            await self._lost_leases()
            await self.recover()
        except asyncio.CancelledError:  # shutting down: the lease is released by close()
            return
        except Exception:
            log.exception("renewing the lease of %s failed", self.engine.instance)

    async def _lost_leases(self) -> None:
        """Stop the work on every migration another process took over while this one could not renew its
        lease (frozen, paused, cut off): its writes are refused already; its tasks end here."""
        engine = self.engine
        for mid, token in list(engine.ledger.tokens.items()):
            if await engine.store.holds(mid, token):
                continue
            log.warning("%s was taken over by another pgmig process: stopping the work on it here", mid)
            engine.scheduler.unwatch(mid)
            await engine.runner.stop(mid)
            if engine.ledger.tokens.get(mid) == token:
                del engine.ledger.tokens[mid]

    async def recover(self) -> list[str]:
        """Take over every unfinished migration no live process holds, and carry it on from its state.
        Runs at start-up and on every lease tick. Returns the migrations taken over."""
        engine = self.engine
        self.keep()
        await engine.commands.listen()
        taken = []
        for m in await engine.store.list_migrations(active_only=True):
            if engine.is_running(m.id) or engine.approvals.is_cutting(m.id) or m.state is State.PAUSED:
                continue
            owner, _ = await engine.store.owner(m.id)
            if owner == engine.instance and m.state is not State.RELEASED:
                continue  # ours already (a released one with no task here: its cutover was interrupted)
            if not await self.hold(m.id):
                continue  # another live replica's
            try:
                if await self._carry_on(m):
                    taken.append(m.id)
            except (MigrationError, ConnectionProblem) as exc:
                log.warning("could not take over %s: %s", m.id, exc)
        return taken

    async def _carry_on(self, m: Migration) -> bool:
        async with self.engine.canceller.exclusive(m.id):
            if self.engine.is_running(m.id):
                return False
            return await self._take_over(await self.engine.ledger.get(m.id))

    async def _take_over(self, m: Migration) -> bool:
        engine = self.engine
        if m.state in MONITORED:
            engine.scheduler.watch(m.id)
            return True
        await engine.store.audit(AuditEntry("pgmig", "recovered", f"taken over in {m.state.value} (owner gone)", m.id))
        if m.state in CUTOVER_STATES:
            recovering = engine.runner.tidied(m.id, cutover_flow.recover(engine.context(m)))
            engine.runner.track(m.id, recovering, f"recover cutover {m.id}")
            return True
        if not m.state.running:
            return False
        step = await engine.store.step(m.id, StepKind.RECOVERY)
        progress = await self._progress_marker(m.id)  # what got done: a restart that moved nothing is a loop
        before = step.data if step is not None else {}
        looping = before.get("state") == m.state.value and before.get("progress") == progress
        count = int(before.get("count", 0)) + 1 if looping else 1
        if count > engine.config.max_auto_restarts:
            await engine.ledger.fail(
                m.id,
                f"pgmig stopped {count - 1} times in a row while this migration was "
                f"{m.state.value}, so it is not restarted again by itself: look at pgmig's log, "
                f"then `/pgmig retry {m.id}`",
            )
            return True
        await engine.ledger.save(
            m.id,
            StepKind.RECOVERY,
            DONE,
            f"pgmig stopped during {m.state.value}; carried on"
            + (f" ({count} times in a row without progress)" if count > 1 else ""),
            {"state": m.state.value, "count": count, "progress": progress},
        )
        engine.start(m.id)
        return True

    async def _progress_marker(self, mid: str) -> int:
        """How much a migration has got done: finished steps and changes in effect."""
        steps = await self.engine.store.steps(mid)
        journal = await self.engine.ledger.journal(mid).entries()
        return sum(s.state == DONE for s in steps if s.name != StepKind.RECOVERY) + sum(
            e.mark is Mark.DONE for e in journal
        )
