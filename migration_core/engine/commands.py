"""The cross-replica command queue: what acts on a migration's running work (cancel, retry, resume, the
start of a decided cutover, the removal of a finished one's leftovers) runs on the process holding the
migration's lease. A command for another holder is queued in the state store (a NOTIFY wakes it on a
PostgreSQL store, polling otherwise) and its result waited for."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from migration_core.changes import cleanup
from migration_core.engine.cancel import CancelOutcome
from migration_core.pg.servers import ConnectionProblem
from migration_core.state.errors import MigrationError
from migration_core.state.models import RetryChanges, State
from migration_core.store import LeaseLost

if TYPE_CHECKING:
    from migration_core.engine.api import Engine

log = logging.getLogger(__name__)
COMMANDS_CHANNEL = "pgmig_commands"


class Command(StrEnum):
    """What acts on a migration's running work: executed by the replica that holds the migration."""

    CANCEL = "cancel"
    RETRY = "retry"  # (args: a RetryChanges' fields)
    RESUME = "resume"
    CUTOVER = "cutover"  # start a cutover the team decided
    CLEANUP = "cleanup"  # remove a finished migration's leftovers from a server (args: server)
    REPAIR = "repair"  # re-copy the ranges continuous verification found to differ (args: table)


@dataclass
class CommandResult:
    """How a command ended — or that another replica holds the migration and has not answered yet."""

    kind: Command
    subject: str
    ok: bool = True
    message: str = ""
    queued_on: str = ""  # the replica it waits for
    cancel: CancelOutcome | None = None  # what a cancel did
    removed: list[str] = field(default_factory=list)  # what a cleanup removed

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CommandResult":
        outcome = d.get("cancel")
        cancel = CancelOutcome(**{**outcome, "state": State(outcome["state"])}) if outcome else None
        return cls(
            Command(d["kind"]), d["subject"], d["ok"], d["message"], d["queued_on"], cancel, d.get("removed", [])
        )


class Commands:
    """Commands run here, or queued for (and served by) the replica holding their migration."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._listening = False
        self._serving = asyncio.Lock()

    async def perform(
        self, kind: Command, migration_id: str, actor: str, wait: float | None = None, args: dict | None = None
    ) -> CommandResult:
        """Run a command on a migration here when this process holds it (or nobody alive does); else queue
        it for the replica that does (woken by NOTIFY on a PostgreSQL store, by polling otherwise) and
        wait up to `wait` (default `command_wait_seconds`) for its result."""
        engine = self.engine
        owner = await engine.store.lease_alive(migration_id, engine.config.lease_seconds)
        if not owner or owner == engine.instance or owner.startswith(f"{engine.replica}/"):
            return await self._execute(kind, migration_id, actor, args or {})
        cid = uuid.uuid4().hex
        await engine.store.enqueue(cid, migration_id, kind.value, actor, args or {})
        await engine.store.notify(COMMANDS_CHANNEL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (engine.config.command_wait_seconds if wait is None else wait)
        while loop.time() < deadline:
            row = await engine.store.command(cid)
            if row is not None and row["state"] == "done":
                return CommandResult.from_dict(row["result"])
            await asyncio.sleep(0.1)
        return CommandResult(kind, migration_id, queued_on=owner.split("/", 1)[0])

    async def _execute(self, kind: Command, migration_id: str, actor: str, args: dict) -> CommandResult:
        engine = self.engine
        try:
            if kind is Command.CLEANUP:
                return await self._cleanup(migration_id, args["server"])
            if kind is Command.CANCEL:
                return CommandResult(kind, migration_id, cancel=await engine.cancel(migration_id, actor))
            if kind is Command.RETRY:
                changes = RetryChanges(**args)
                return CommandResult(kind, migration_id, await engine.retry(migration_id, actor, changes))
            if kind is Command.RESUME:
                return CommandResult(kind, migration_id, await engine.resume(migration_id, actor))
            if kind is Command.REPAIR:
                said = await engine.repair(migration_id, actor, args.get("table", ""))
                return CommandResult(kind, migration_id, message="; ".join(said))
            async with engine.canceller.exclusive(migration_id):
                if (await engine.ledger.get(migration_id)).state is not State.CUTTING_OVER:
                    return CommandResult(kind, migration_id, False, "the cutover was cancelled before it started")
                if not await engine.leases.hold(migration_id):
                    return CommandResult(kind, migration_id, False, "another pgmig holds this migration")
                engine.start_cutover(migration_id, actor)
            return CommandResult(kind, migration_id)
        except (MigrationError, ConnectionProblem, LeaseLost) as exc:
            return CommandResult(kind, migration_id, False, str(exc))

    async def _cleanup(self, migration_id: str, server: str) -> CommandResult:
        """Remove a finished migration's leftovers while holding it, so no retry starts beside it."""
        engine = self.engine
        async with engine.canceller.exclusive(migration_id):
            held_before = (await engine.store.owner(migration_id))[0] == engine.instance
            if not await engine.leases.hold(migration_id):
                return CommandResult(Command.CLEANUP, migration_id, False, "another pgmig holds it")
            try:
                m = await engine.ledger.get(migration_id)
                if not m.state.finished:
                    return CommandResult(Command.CLEANUP, migration_id, False, f"{m.state.value} again meanwhile")
                config = engine.server(server)
                items = [x for x in await cleanup.find(config, engine.store.deployment) if x.migration_id == m.id]
                removed = await cleanup.remove(config, items, engine.ledger.journal(m.id))
                return CommandResult(Command.CLEANUP, migration_id, removed=removed)
            finally:
                if not held_before:
                    await engine.store.let_go(migration_id, engine.instance)
                    engine.ledger.tokens.pop(migration_id, None)

    async def serve_commands(self) -> int:
        """Run the commands queued for migrations this process holds; returns how many ran."""
        store = self.engine.store
        async with self._serving:
            ran = 0
            for c in await store.commands_for(self.engine.instance):
                if await store.take_command(c["id"]):
                    result = await self._execute(Command(c["kind"]), c["subject"], c["actor"], c["args"])
                    await store.finish_command(c["id"], result.as_dict())
                    ran += 1
            return ran

    async def serve_job(self) -> None:
        """`serve_commands` as the scheduler's polling job and the NOTIFY wake-up: failures are logged."""
        try:
            await self.serve_commands()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("running queued commands failed")

    async def listen(self) -> None:
        """From the first recovery on, a NOTIFY on the commands channel serves the queue at once."""
        if not self._listening:
            self._listening = True
            await self.engine.store.listen(COMMANDS_CHANNEL, lambda: asyncio.ensure_future(self.serve_job()))
