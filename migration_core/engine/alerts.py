"""What pgmig tells the team unasked about migrations nobody runs any more — a replication slot one left
behind, holding WAL on its source — and the periodic digest of the active ones."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from migration_core.changes import replication
from migration_core.pg.servers import ConnectionProblem
from migration_core.preflight.checks import pretty_bytes
from migration_core.state.journal import Change, JournalEntry
from migration_core.state.models import State

if TYPE_CHECKING:
    from migration_core.engine.api import Engine

log = logging.getLogger(__name__)


class Reminders:
    """Leftover-slot alerts and the digest."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def leftovers(self, migration_id: str) -> list[JournalEntry]:
        """What the migration changed on the servers and is still in effect (maybe in effect)."""
        return await self.engine.ledger.journal(migration_id).entries()

    async def check_leftovers(self) -> None:
        """A replication slot holds WAL on its source forever: alert on every slot the journal says a
        migration nobody runs any more (failed, cancelled half-way, completed with a teardown that failed)
        still has, with the WAL it holds."""
        engine = self.engine
        live = {e.migration_id for e in await engine.store.journal() if e.kind is Change.SLOT and e.live}
        for m in await engine.store.list_migrations():
            if not (m.state.finished or m.state is State.PAUSED) or m.source not in engine.servers:
                continue
            slots = await engine.ledger.journal(m.id).entries(Change.SLOT) if m.id in live else []
            held: dict[str, int | None] = {}
            for e in slots:
                try:
                    conn = await engine.servers[m.source].connect(e.database)
                    try:
                        lag = await replication.lag(conn, e.name)
                    finally:
                        await conn.close()
                except (ConnectionProblem, OSError) as exc:
                    log.warning("cannot look at slot %s of %s: %s", e.name, m.id, exc)
                    continue
                if lag.retained_bytes is not None:
                    held[e.name] = lag.retained_bytes
            fix = (
                f"`/pgmig cancel {m.id}` removes it"
                if m.state is State.FAILED
                else f"`/pgmig cleanup {m.source} --yes` removes it"
            )
            await engine.alerts.alert(
                m,
                "leftover-slot",
                bool(held),
                f"⚠️ {m.id} is {m.state.value}, but its "
                f"replication slot(s) still hold WAL on {m.source}: "
                + ", ".join(f"{n} {pretty_bytes(b or 0)}" for n, b in held.items())
                + f" — the source's disk fills until it is gone; {fix}",
            )

    async def check_job(self) -> None:
        """`check_leftovers` as the scheduler's job: failures are logged."""
        try:
            await self.check_leftovers()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("looking for leftover slots failed")

    def schedule_digest(self) -> None:
        self.engine.scheduler.digest(self.engine.config.digest, self.post_digest)

    async def post_digest(self) -> None:
        engine = self.engine
        active = await engine.store.list_migrations(active_only=True)
        if active:
            await engine.events.digest(active, {m.id: engine.progress(m.id) for m in active})
