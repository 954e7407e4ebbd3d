"""Cancelling a migration: stopping its work here and undoing, from the journal, what it changed on the
servers — and the per-migration lock that every command starting or stopping work takes, so a cancel
never interleaves with a retry, a resume or a cutover starting beside it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migration_core.changes import undo
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.journal import Change
from migration_core.state.ledger import DONE, RUNNING
from migration_core.state.models import Mode, State, StepKind, StepState

if TYPE_CHECKING:
    from migration_core.engine.api import Engine


@dataclass
class CancelOutcome:
    """What a cancel did on the servers, and what it could not undo (the migration then stays failed)."""

    state: State
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # target databases left on purpose (finished, or not pgmig's)


class Canceller:
    """The cancel teardown, and the lock it shares with every command that starts work on a migration."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._exclusives: dict[str, asyncio.Lock] = {}

    def exclusive(self, migration_id: str) -> asyncio.Lock:
        """What starts or stops work on a migration (cancel, retry, resume, starting a decided cutover, taking
        it over) runs one at a time in this process — and every such command runs on the process holding
        the migration's lease — so a cancel never undoes what a cutover starting beside it is doing."""
        return self._exclusives.setdefault(migration_id, asyncio.Lock())

    async def cancel(self, migration_id: str, actor: str) -> CancelOutcome:
        """Stop the work and undo, from the journal, what the migration changed on the servers: its
        replication objects, replica identities and fences, and the target databases and roles pgmig
        created (an offline database whose import finished stays). Refused once the target was released.
        When something cannot be undone (a server unreachable) the migration stays failed, saying what is
        left; cancelling again tries again."""
        async with self.exclusive(migration_id):
            return await self._cancel(migration_id, actor)

    async def _cancel(self, migration_id: str, actor: str) -> CancelOutcome:
        engine, ledger = self.engine, self.engine.ledger
        m = await ledger.get(migration_id)
        if m.state is State.RELEASED:
            raise MigrationError(
                f"{migration_id} was released to its target: applications may already write there, "
                "so nothing can be undone; the cutover is finishing"
            )
        engine.scheduler.unwatch(migration_id)  # no look starts from here on; stop ends the one in flight
        await engine.runner.stop(migration_id)
        m = await ledger.get(migration_id)
        if m.state in (State.COMPLETED, State.CANCELLED, State.RELEASED):
            return CancelOutcome(m.state)
        ctx = engine.context(m)
        outcome = CancelOutcome(State.CANCELLED)
        steps = await ledger.steps(migration_id)
        finished = [
            db
            for db in m.databases
            if m.mode is Mode.OFFLINE
            and steps.get(StepKind.IMPORT.at(db)) is not None
            and steps[StepKind.IMPORT.at(db)].state == DONE
        ]
        journal = ledger.journal(migration_id)
        ours = {e.database for e in await journal.entries(Change.DATABASE)}
        undone = await undo.rollback(
            journal,
            ctx.source,
            ctx.target,
            databases=None,
            skip=[(kind, db) for db in finished for kind in (Change.DATABASE, Change.CONTENTS, Change.EXTENSIONS)],
            backend=ctx.backend,
        )
        outcome.done += undone.done
        outcome.failed += undone.failed
        left = finished + [db for db in m.databases if db not in ours and db not in finished]
        present = await self._on_target(ctx.target, left)  # a database never created (or dropped) is not "left"
        outcome.kept = finished if present is None else present
        for step in steps.values():
            if step.state == RUNNING:  # what the cancel interrupted, and whether its half-made result is gone
                gone = any(step.name.endswith(f":{db}") and db in ours and db not in finished for db in m.databases)
                await ledger.save(
                    migration_id,
                    step.name,
                    StepState.DROPPED,
                    "stopped by the cancel"
                    + ("; its half-made target database was dropped" if gone and not undone.failed else ""),
                    step.data,
                )
        if outcome.failed:
            outcome.state = State.FAILED
            await ledger.move(
                migration_id,
                State.FAILED,
                f"cancel by {actor} could not finish: "
                + "; ".join(outcome.failed)
                + f". `/pgmig cancel {migration_id}` tries again",
                error="cancel: " + "; ".join(outcome.failed),
                actor=actor,
            )
            return outcome
        detail = (
            f"cancelled by {actor}"
            + (f"; {'; '.join(outcome.done)}" if outcome.done else "")
            + (f"; left in place: {', '.join(outcome.kept)}" if outcome.kept else "")
        )
        if not await ledger.move(migration_id, State.CANCELLED, detail, actor=actor):
            outcome.state = (await ledger.get(migration_id)).state
        await engine.runner.tidy(migration_id)  # once cancelled: the export files (every row) go with it
        return outcome

    async def _on_target(self, target: ServerConfig, databases: list[str]) -> list[str] | None:
        """Which of `databases` exist on the target now; None when it cannot be asked."""
        if not databases:
            return []
        try:
            async with target.connection() as conn:
                rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", databases)
        except ConnectionProblem:
            return None
        found = {r["datname"] for r in rows}
        return [db for db in databases if db in found]
