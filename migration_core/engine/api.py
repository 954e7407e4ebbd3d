"""The migration lifecycle: create, run, retry, resume, cancel, recover, approvals and the cutover entry
point. The pipelines live in offline_flow.py, online_flow.py, cutover_flow.py and monitor.py; which
state may follow which is lifecycle.py; every flow records its steps through the Ledger and every
change it makes on a server in the journal.

Recovery runs at start-up and on every lease tick: a migration whose owner stopped renewing its lease
(or is provably this process's previous life: the same replica id) is taken over and carried on from
its state — pipelines restart their unfinished step, streaming ones are watched again, a cutover goes
back to streaming (cutting_over) or forward to completed (released).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from migration_core.azure.backend import ManagedBackend
from migration_core.changes import cleanup, replication, undo
from migration_core.changes import databases as target_db
from migration_core.changes.cleanup import CleanupReport
from migration_core.changes.databases import Holder
from migration_core.changes.roles import RolePlan, copy_roles
from migration_core.engine.config import EngineConfig, MigrationRequest
from migration_core.engine.context import MigrationContext
from migration_core.engine.scheduler import Scheduler
from migration_core.flows import cutover as cutover_flow
from migration_core.flows.cutover import run_cutover
from migration_core.flows.managed import cancel_managed, run_managed, watch_managed
from migration_core.flows.offline import run_offline
from migration_core.flows.online import run_online
from migration_core.flows.steps.offline import choose_bindir
from migration_core.observe.monitor import require_caught_up, servers_unreachable, watch_native
from migration_core.observe.progress import MigrationProgress
from migration_core.pg import workdir
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.preflight.checks import PreflightReport, PreflightRequest, pretty_bytes, run_preflight
from migration_core.state import approval
from migration_core.state.approval import ApprovalRequest, Decision, Verdict
from migration_core.state.errors import MigrationError
from migration_core.state.events import MigrationEvents
from migration_core.state.failures import expected, failure_reason, failure_retry, first_cause, unreachable
from migration_core.state.journal import Change, JournalEntry, Mark
from migration_core.state.ledger import DONE, FAILED, RUNNING, Alerts, Ledger
from migration_core.state.lifecycle import Superseded
from migration_core.state.models import (
    AuditEntry,
    AuditPage,
    Backend,
    Method,
    Migration,
    MigrationOptions,
    Mode,
    RetryChanges,
    State,
    Step,
    StepKind,
    StepState,
)
from migration_core.state.store import LeaseLost, Store
from migration_core.verify.tables import VerifyResult, verify_database

__all__ = ["Engine", "EngineConfig", "MigrationRequest", "CancelOutcome"]
log = logging.getLogger(__name__)
MONITORED = (State.CATCHING_UP, State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL)
COMMANDS_CHANNEL = "pgmig_commands"
CUTOVER_STATES = (State.CUTTING_OVER, State.RELEASED)


class Command(StrEnum):
    """What acts on a migration's running work: executed by the replica that holds the migration."""

    CANCEL = "cancel"
    RETRY = "retry"  # (args: a RetryChanges' fields)
    RESUME = "resume"
    CUTOVER = "cutover"  # start a cutover the team decided
    CLEANUP = "cleanup"  # remove a finished migration's leftovers from a server (args: server)


@dataclass
class MigrationStatus:
    migration: Migration
    steps: list[Step]
    progress: MigrationProgress
    leftovers: list[JournalEntry]
    holder: str = ""  # the replica whose lease is fresh on it ("" when nobody runs it now)
    takeovers: list[AuditEntry] = field(default_factory=list)  # when another replica took it over, and from whom


@dataclass
class CancelOutcome:
    """What a cancel did on the servers, and what it could not undo (the migration then stays failed)."""

    state: State
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # target databases left on purpose (finished, or not pgmig's)


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


class Engine:
    def __init__(
        self,
        store: Store,
        servers: dict[str, ServerConfig],
        events: MigrationEvents,
        config: EngineConfig,
        backends: dict[str, ManagedBackend] | None = None,
    ) -> None:
        self.store, self.servers, self.events, self.config = store, servers, events, config
        self.backends = backends or {}
        self.ledger = Ledger(store, events)
        self.alerts = Alerts(self.ledger)
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._cancelling: set[str] = set()
        self._cutting: set[str] = set()  # cutovers run by `cutover` in the caller's task, not tracked in _tasks
        self.scheduler = Scheduler(config.progress_interval, self._tick)
        self.replica = config.replica_id or uuid.uuid4().hex[:12]
        self.instance = f"{self.replica}/{uuid.uuid4().hex[:8]}"  # this life of this replica
        self._leasing = False
        self._listening = False
        self._serving = asyncio.Lock()
        self._exclusives: dict[str, asyncio.Lock] = {}
        self._tick_failures: dict[str, str] = {}  # migration → why its last scheduled look failed

    # ---- what handlers call -------------------------------------------------------------------

    async def create(self, req: MigrationRequest, command: str = "") -> Migration:
        """A new `mig-N`, audited as `command` (the canonical `/pgmig migrate …` the person typed or the form
        built), so the migration's own audit starts with what was asked, from where."""
        mid = await self.store.next_migration_id()
        options = MigrationOptions(
            Method(req.method),
            req.parallel or self.config.default_parallel,
            req.overwrite,
            req.pause_after_export,
            req.replica_identity_full,
            Backend(req.backend),
            req.runtime_server,
        )
        m = Migration(
            id=mid,
            source=req.source,
            target=req.target,
            databases=list(req.databases),
            mode=Mode(req.mode),
            state=State.CREATED,
            requested_by=req.requested_by,
            channel=req.channel,
            options=options,
        )
        await self.store.create_migration(m, owner=self.instance)
        self.ledger.tokens[mid] = 1  # a new migration's first lease
        self._keep_leases()
        await self.store.audit(
            AuditEntry(
                req.requested_by,
                "migration.created",
                command or f"{req.source} → {req.target} {Mode(req.mode).value}",
                mid,
                req.channel,
            )
        )
        return m

    def _address(self, name: str) -> str:
        return self.servers[name].address if name in self.servers else name

    async def writers(self, target: str, but: str = "") -> dict[str, str]:
        """Each database on `target` (by address: two names may be one server) that an unfinished migration
        other than `but` writes to → that migration, in words (`mig-3 (full_load)`). Failed migrations
        that still hold their half-made databases are found by identity (`held`)."""
        out: dict[str, str] = {}
        for other in await self.store.list_migrations(active_only=True):
            if other.id != but and self._address(other.target) == self._address(target):
                for db in other.databases:
                    out.setdefault(db, f"{other.id} ({other.state.value})")
        return out

    async def held(self, target: str, databases: list[str], but: str = "") -> dict[str, Holder]:
        """The target's databases that another migration holds by identity (target_db.holders): above all
        those a completed cutover released to the applications. Databases not there yet are free."""
        config = self.server(target)
        try:
            async with config.connection() as conn:
                rows = await conn.fetch(
                    "SELECT datname, oid FROM pg_database "
                    "WHERE datname = ANY($1::text[]) OR cardinality($1::text[]) = 0",
                    databases,
                )
        except ConnectionProblem:
            return {}  # the pre-flight says why it cannot reach the target
        out: dict[str, Holder] = {}
        for r in rows:
            found = await target_db.holders(self.store, config.address, r["datname"], r["oid"], but=but)
            if found:
                out[r["datname"]] = next((h for h in found if h.released_at is not None), found[0])
        return out

    async def fenced(self, source: str) -> dict[str, str]:
        """The source's databases that a released cutover fenced (and that stay fenced) → which one, in words."""
        out: dict[str, str] = {}
        for other in await self.store.list_migrations():
            if other.state not in (State.RELEASED, State.COMPLETED) or self._address(other.source) != self._address(
                source
            ):
                continue
            release = await self.store.step(other.id, StepKind.RELEASE)
            when = f" (released {release.started_at:%Y-%m-%d %H:%M} UTC)" if release and release.started_at else ""
            for e in await self.ledger.journal(other.id).entries(Change.FENCE):
                out.setdefault(e.database, f"{other.id}'s cutover{when}")
        return out

    async def preflight(self, m: Migration) -> PreflightReport:
        """Run the checks `/pgmig check` runs; a blocking finding fails the migration at `preflight`."""
        await self.ledger.advance(m.id, State.PREFLIGHT, "running pre-flight checks")
        source, target = self._servers(m)
        report = await run_preflight(
            PreflightRequest(
                source,
                target,
                databases=m.databases,
                mode=m.mode,
                replica_identity_full=m.options.replica_identity_full,
                own_replication=m.options.backend is Backend.NATIVE,
                overwrite=m.options.overwrite,
                writers=await self.writers(m.target, but=m.id),
                held=await self.held(m.target, m.databases, but=m.id),
                service_asks_overwrite=m.options.backend is Backend.FLEX,
                fenced=await self.fenced(m.source),
            )
        )
        if report.blocking:
            problems = "; ".join(
                f"{f.scope}: {f.said}" + (f" — fix: {f.fix}" if f.fix else "") for f in report.blocking
            )
            await self.ledger.save(m.id, StepKind.PREFLIGHT, FAILED, problems)
            await self.ledger.move(
                m.id, State.FAILED, problems, error=f"preflight: {problems}", retry_with=report.retry
            )
            return report
        if not m.databases:
            await self.store.set_databases(m.id, report.databases)
        warnings = "; ".join(f.said for f in report.warnings)
        await self.ledger.save(m.id, StepKind.PREFLIGHT, DONE, f"warnings: {warnings}" if warnings else "passed")
        return report

    def start(self, migration_id: str) -> asyncio.Task:
        return self._track(migration_id, self._run(migration_id), f"migration {migration_id}")

    def _track(self, migration_id: str, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """The one task working on a migration in this process; it leaves the map when it ends (and only
        it). A second one is a bug the state machine should have prevented: refused, never overwritten."""
        if (running := self._tasks.get(migration_id)) is not None and not running.done():
            coro.close()
            raise MigrationError(f"BUG: {migration_id} already has {running.get_name()} running here")
        task = asyncio.create_task(coro, name=name)
        self._tasks[migration_id] = task

        def done(t: asyncio.Task) -> None:
            if self._tasks.get(migration_id) is t:
                del self._tasks[migration_id]

        task.add_done_callback(done)
        return task

    def background(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Other long work (provisioning a server): tracked, logged if it fails, cancelled at close."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)

        def done(t: asyncio.Task) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def is_running(self, migration_id: str) -> bool:
        return migration_id in self._tasks

    async def wait(self, migration_id: str) -> None:
        task = self._tasks.get(migration_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def wait_all(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    def progress(self, migration_id: str) -> MigrationProgress:
        return self.ledger.progress(migration_id)

    async def retry(self, migration_id: str, actor: str = "pgmig", changes: RetryChanges | None = None) -> bool:
        """Failed → run again from the failed step, with the options the fix asked for (`changes`: e.g.
        --overwrite after a non-empty target). False when it is not failed (or another click won)."""
        async with self._exclusive(migration_id):
            return await self._retry(migration_id, actor, changes or RetryChanges())

    async def _retry(self, migration_id: str, actor: str, changes: RetryChanges) -> bool:
        if self.is_running(migration_id):  # its last task (a failed cutover's notices) has not ended yet
            raise MigrationError(f"{migration_id} is still finishing its last step; retry in a moment")
        if not await self._hold(migration_id):
            return False
        m = await self.ledger.get(migration_id)
        if m.state is not State.FAILED:
            return False
        if changes:
            await self.store.set_options(migration_id, changes.applied_to(m.options))
        with_what = f" with {changes}" if changes else ""
        if not await self.ledger.move(
            migration_id, State.CREATED, f"retried by {actor}{with_what}", expect=(State.FAILED,), actor=actor
        ):
            return False
        if await self.store.step(migration_id, StepKind.RECOVERY):
            await self.ledger.save(migration_id, StepKind.RECOVERY, DONE, f"retried by {actor}", {"count": 0})
        self.progress(migration_id).retried_at = time.time()  # "completed in" counts from here
        self.start(migration_id)
        return True

    async def resume(self, migration_id: str, actor: str = "pgmig") -> bool:
        """Paused after export → import whatever the export files now contain."""
        async with self._exclusive(migration_id):
            return await self._resume(migration_id, actor)

    async def _resume(self, migration_id: str, actor: str) -> bool:
        if not await self._hold(migration_id):
            return False
        if not await self.ledger.move(
            migration_id,
            State.IMPORTING,
            f"resumed by {actor}: importing the export files as they are now",
            expect=(State.PAUSED,),
            actor=actor,
        ):
            return False
        await self.ledger.save(migration_id, StepKind.REVIEW, DONE, "resumed")
        self.start(migration_id)
        return True

    async def cancel(self, migration_id: str, actor: str) -> CancelOutcome:
        """Stop the work and undo, from the journal, what the migration changed on the servers: its
        replication objects, replica identities and fences, and the target databases and roles pgmig
        created (an offline database whose import finished stays). Refused once the target was released.
        When something cannot be undone (a server unreachable) the migration stays failed, saying what is
        left; cancelling again tries again."""
        async with self._exclusive(migration_id):
            return await self._cancel(migration_id, actor)

    def _exclusive(self, migration_id: str) -> asyncio.Lock:
        """What starts or stops work on a migration (cancel, retry, resume, starting a decided cutover, taking
        it over) runs one at a time in this process — and every such command runs on the process holding
        the migration's lease — so a cancel never undoes what a cutover starting beside it is doing."""
        return self._exclusives.setdefault(migration_id, asyncio.Lock())

    async def _cancel(self, migration_id: str, actor: str) -> CancelOutcome:
        m = await self.ledger.get(migration_id)
        if m.state is State.RELEASED:
            raise MigrationError(
                f"{migration_id} was released to its target: applications may already write there, "
                "so nothing can be undone; the cutover is finishing"
            )
        task = self._tasks.get(migration_id)
        if task is not None:
            self._cancelling.add(migration_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._cancelling.discard(migration_id)
        m = await self.ledger.get(migration_id)
        if m.state in (State.COMPLETED, State.CANCELLED, State.RELEASED):
            return CancelOutcome(m.state)
        self.scheduler.unwatch(migration_id)
        ctx = self.context(m)
        outcome = CancelOutcome(State.CANCELLED)
        if ctx.backend is not None and (said := await cancel_managed(ctx)):
            outcome.done.append(said)
        steps = await self.ledger.steps(migration_id)
        finished = [
            db
            for db in m.databases
            if m.mode is Mode.OFFLINE
            and steps.get(StepKind.IMPORT.at(db)) is not None
            and steps[StepKind.IMPORT.at(db)].state == DONE
        ]
        journal = self.ledger.journal(migration_id)
        ours = {e.database for e in await journal.entries(Change.DATABASE)}
        undone = await undo.rollback(
            journal,
            ctx.source,
            ctx.target,
            databases=None,
            skip=[(kind, db) for db in finished for kind in (Change.DATABASE, Change.CONTENTS)],
        )
        outcome.done += undone.done
        outcome.failed += undone.failed
        left = finished + [db for db in m.databases if db not in ours and db not in finished]
        present = await self._on_target(ctx.target, left)  # a database never created (or dropped) is not "left"
        outcome.kept = finished if present is None else present
        for step in steps.values():
            if step.state == RUNNING:  # what the cancel interrupted, and whether its half-made result is gone
                gone = any(step.name.endswith(f":{db}") and db in ours and db not in finished for db in m.databases)
                await self.ledger.save(
                    migration_id,
                    step.name,
                    StepState.DROPPED,
                    "stopped by the cancel"
                    + ("; its half-made target database was dropped" if gone and not undone.failed else ""),
                    step.data,
                )
        if outcome.failed:
            outcome.state = State.FAILED
            await self.ledger.move(
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
        if not await self.ledger.move(migration_id, State.CANCELLED, detail, actor=actor):
            outcome.state = (await self.ledger.get(migration_id)).state
        await self._tidy(migration_id)  # once cancelled: the export files (every row) go with it
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

    async def verify(self, migration_id: str) -> list[VerifyResult]:
        """Compare source and target now, for each database whose data reached the target: one whose copy
        never started (the migration failed or was cancelled before) or whose target database a cancel
        dropped is left out — an empty list means there is nothing to verify yet."""
        m = await self.ledger.get(migration_id)
        source, target = self._servers(m)
        streaming = m.mode is Mode.ONLINE and m.state is not State.COMPLETED
        return [
            await verify_database(
                source, target, db, m.options.parallel, replicated_only=streaming, limits=self.config.limits
            )
            for db in await self._copied(m)
        ]

    async def _copied(self, m: Migration) -> list[str]:
        """The databases some or all of whose data was copied to the target and is still there."""
        steps = await self.ledger.steps(m.id)
        made = await self.ledger.journal(m.id).entries(Change.DATABASE, live_only=False)
        dropped = {e.database for e in made if not e.live} - {e.database for e in made if e.live}

        def started(db: str) -> bool:
            if StepKind.BACKEND.value in steps:  # a managed service copies every database
                return True
            step = steps.get(StepKind.IMPORT.at(db)) or steps.get(StepKind.LOAD.at(db))
            return step is not None and step.state != StepState.DROPPED

        return [db for db in m.databases if db not in dropped and started(db)]

    async def find(self, migration_id: str) -> Migration | None:
        return await self.store.get_migration(migration_id)

    async def migrations(self, active_only: bool = False, newest: int | None = None) -> list[Migration]:
        found = await self.store.list_migrations(active_only=active_only)
        return found[-newest:] if newest else found

    async def status(self, migration_id: str) -> MigrationStatus | None:
        """What `/pgmig status` shows: the migration, its steps, its live progress and, once it is over,
        what it left on the servers."""
        m = await self.find(migration_id)
        if m is None:
            return None
        holder = await self.store.lease_alive(m.id, self.config.lease_seconds)
        return MigrationStatus(
            m,
            await self.store.steps(m.id),
            self.progress(m.id),
            await self.leftovers(m.id) if m.state.finished else [],
            holder.split("/", 1)[0],
            [e for e in await self.store.audit_log(m.id) if e.action == "takeover"],
        )

    async def cleanup(self, server: str, remove: bool, actor: str = "pgmig") -> CleanupReport:
        """This deployment's replication objects on a server: kept where an active migration uses them.
        The objects are listed before the migrations are read (a migration is stored before it makes
        anything, so a new one's objects never look loose); each finished migration's are removed by the
        replica holding it, one command at a time with its retry or cancel."""
        config = self.server(server)
        found = await cleanup.find(config, self.store.deployment)
        active = {m.id: m.state.value for m in await self.migrations(active_only=True)}
        report = cleanup.sort(config.name, found, active)
        if not remove:
            return report
        report.removed = []
        for mid in dict.fromkeys(x.migration_id for x in report.loose):
            items = [x for x in report.loose if x.migration_id == mid]
            if mid is None or await self.store.get_migration(mid) is None:
                report.removed += await cleanup.remove(config, items)  # no migration can take these up
                continue
            done = await self.perform(Command.CLEANUP, mid, actor, args={"server": config.name})
            report.removed += done.removed
            if not done.ok or done.queued_on:
                report.loose = [x for x in report.loose if x.migration_id != mid]
                report.kept += [(x, done.message or f"queued on {done.queued_on}") for x in items]
        return report

    async def _cleanup(self, migration_id: str, server: str) -> CommandResult:
        """Remove a finished migration's leftovers while holding it, so no retry starts beside it."""
        async with self._exclusive(migration_id):
            held_before = (await self.store.owner(migration_id))[0] == self.instance
            if not await self._hold(migration_id):
                return CommandResult(Command.CLEANUP, migration_id, False, "another pgmig holds it")
            try:
                m = await self.ledger.get(migration_id)
                if not m.state.finished:
                    return CommandResult(Command.CLEANUP, migration_id, False, f"{m.state.value} again meanwhile")
                config = self.server(server)
                items = [x for x in await cleanup.find(config, self.store.deployment) if x.migration_id == m.id]
                removed = await cleanup.remove(config, items, self.ledger.journal(m.id))
                return CommandResult(Command.CLEANUP, migration_id, removed=removed)
            finally:
                if not held_before:
                    await self.store.let_go(migration_id, self.instance)
                    self.ledger.tokens.pop(migration_id, None)

    async def first_delivery(self, key: str) -> bool:
        """Slack may deliver a click twice: only the first one counts, whichever replica receives it."""
        return await self.store.first_delivery(key)

    async def record(self, entry: AuditEntry) -> None:
        """An audit entry from outside the engine's own work (a command, a click)."""
        await self.store.audit(entry)

    async def audit_log(self, subject: str, page: int = 1, everything: bool = False) -> AuditPage | None:
        """What was done to a migration or provisioning request, a page at a time (read-only commands only
        counted unless `everything`); None when there is no such thing."""
        known = await (self.store.provision(subject) if subject.startswith("prov-") else self.find(subject))
        return await self.store.audit_page(subject, page, everything=everything) if known is not None else None

    def server(self, name: str) -> ServerConfig:
        if name not in self.servers:
            raise MigrationError(f"there is no server {name!r}", "`/pgmig servers` lists the configured ones")
        return self.servers[name]

    async def register_server(self, server: ServerConfig, actor: str) -> bool:
        """A server pgmig provisioned becomes a migration target, kept across restarts (a `[servers.NAME]`
        entry of the same name wins). False when the name is taken."""
        if server.name in self.servers:
            return False
        self.servers[server.name] = server
        await self.store.save_server(server.name, server.as_dict(), actor)
        return True

    # ---- commands: run where the migration is held -------------------------------------------

    async def perform(
        self, kind: Command, migration_id: str, actor: str, wait: float | None = None, args: dict | None = None
    ) -> CommandResult:
        """Run a command on a migration here when this process holds it (or nobody alive does); else queue
        it for the replica that does (woken by NOTIFY on a PostgreSQL store, by polling otherwise) and
        wait up to `wait` (default `command_wait_seconds`) for its result."""
        owner = await self.store.lease_alive(migration_id, self.config.lease_seconds)
        if not owner or owner == self.instance or owner.startswith(f"{self.replica}/"):
            return await self._execute(kind, migration_id, actor, args or {})
        cid = uuid.uuid4().hex
        await self.store.enqueue(cid, migration_id, kind.value, actor, args or {})
        await self.store.notify(COMMANDS_CHANNEL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.command_wait_seconds if wait is None else wait)
        while loop.time() < deadline:
            row = await self.store.command(cid)
            if row is not None and row["state"] == "done":
                return CommandResult.from_dict(row["result"])
            await asyncio.sleep(0.1)
        return CommandResult(kind, migration_id, queued_on=owner.split("/", 1)[0])

    async def _execute(self, kind: Command, migration_id: str, actor: str, args: dict) -> CommandResult:
        try:
            if kind is Command.CLEANUP:
                return await self._cleanup(migration_id, args["server"])
            if kind is Command.CANCEL:
                return CommandResult(kind, migration_id, cancel=await self.cancel(migration_id, actor))
            if kind is Command.RETRY:
                changes = RetryChanges(**args)
                return CommandResult(kind, migration_id, await self.retry(migration_id, actor, changes))
            if kind is Command.RESUME:
                return CommandResult(kind, migration_id, await self.resume(migration_id, actor))
            async with self._exclusive(migration_id):
                if (await self.ledger.get(migration_id)).state is not State.CUTTING_OVER:
                    return CommandResult(kind, migration_id, False, "the cutover was cancelled before it started")
                if not await self._hold(migration_id):
                    return CommandResult(kind, migration_id, False, "another pgmig holds this migration")
                self.start_cutover(migration_id, actor)
            return CommandResult(kind, migration_id)
        except (MigrationError, ConnectionProblem, LeaseLost) as exc:
            return CommandResult(kind, migration_id, False, str(exc))

    async def serve_commands(self) -> int:
        """Run the commands queued for migrations this process holds; returns how many ran."""
        async with self._serving:
            ran = 0
            for c in await self.store.commands_for(self.instance):
                if await self.store.take_command(c["id"]):
                    result = await self._execute(Command(c["kind"]), c["subject"], c["actor"], c["args"])
                    await self.store.finish_command(c["id"], result.as_dict())
                    ran += 1
            return ran

    async def _serve_commands(self) -> None:
        try:
            await self.serve_commands()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("running queued commands failed")

    async def leftovers(self, migration_id: str) -> list[JournalEntry]:
        """What the migration changed on the servers and is still in effect (maybe in effect)."""
        return await self.ledger.journal(migration_id).entries()

    # ---- recovery -----------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Take over every unfinished migration no live process holds, and carry it on from its state.
        Runs at start-up and on every lease tick. Returns the migrations taken over."""
        self._keep_leases()
        if not self._listening:
            self._listening = True
            await self.store.listen(COMMANDS_CHANNEL, lambda: asyncio.ensure_future(self._serve_commands()))
        taken = []
        for m in await self.store.list_migrations(active_only=True):
            if m.id in self._tasks or m.id in self._cutting or m.state is State.PAUSED:
                continue
            owner, _ = await self.store.owner(m.id)
            if owner == self.instance and m.state is not State.RELEASED:
                continue  # ours already (a released one with no task here: its cutover was interrupted)
            if not await self._hold(m.id):
                continue  # another live replica's
            try:
                if await self._carry_on(m):
                    taken.append(m.id)
            except (MigrationError, ConnectionProblem) as exc:
                log.warning("could not take over %s: %s", m.id, exc)
        return taken

    async def _carry_on(self, m: Migration) -> bool:
        async with self._exclusive(m.id):
            if m.id in self._tasks:
                return False
            return await self._take_over(await self.ledger.get(m.id))

    async def _take_over(self, m: Migration) -> bool:
        if m.state in MONITORED:
            self.scheduler.watch(m.id)
            return True
        await self.store.audit(AuditEntry("pgmig", "recovered", f"taken over in {m.state.value} (owner gone)", m.id))
        if m.state in CUTOVER_STATES:
            self._track(m.id, self._tidied(m.id, cutover_flow.recover(self.context(m))), f"recover cutover {m.id}")
            return True
        if not m.state.running:
            return False
        step = await self.store.step(m.id, StepKind.RECOVERY)
        progress = await self._progress_marker(m.id)  # what got done: a restart that moved nothing is a loop
        before = step.data if step is not None else {}
        looping = before.get("state") == m.state.value and before.get("progress") == progress
        count = int(before.get("count", 0)) + 1 if looping else 1
        if count > self.config.max_auto_restarts:
            await self.ledger.fail(
                m.id,
                f"pgmig stopped {count - 1} times in a row while this migration was "
                f"{m.state.value}, so it is not restarted again by itself: look at pgmig's log, "
                f"then `/pgmig retry {m.id}`",
            )
            return True
        await self.ledger.save(
            m.id,
            StepKind.RECOVERY,
            DONE,
            f"pgmig stopped during {m.state.value}; carried on"
            + (f" ({count} times in a row without progress)" if count > 1 else ""),
            {"state": m.state.value, "count": count, "progress": progress},
        )
        self.start(m.id)
        return True

    async def _progress_marker(self, mid: str) -> int:
        """How much a migration has got done: finished steps and changes in effect."""
        steps = await self.store.steps(mid)
        journal = await self.ledger.journal(mid).entries()
        return sum(s.state == DONE for s in steps if s.name != StepKind.RECOVERY) + sum(
            e.mark is Mark.DONE for e in journal
        )

    async def check_leftovers(self) -> None:
        """A replication slot holds WAL on its source forever: alert on every slot the journal says a
        migration nobody runs any more (failed, cancelled half-way, completed with a teardown that failed)
        still has, with the WAL it holds."""
        live = {e.migration_id for e in await self.store.journal() if e.kind is Change.SLOT and e.live}
        for m in await self.store.list_migrations():
            if not (m.state.finished or m.state is State.PAUSED) or m.source not in self.servers:
                continue
            slots = await self.ledger.journal(m.id).entries(Change.SLOT) if m.id in live else []
            held: dict[str, int | None] = {}
            for e in slots:
                try:
                    conn = await self.servers[m.source].connect(e.database)
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
            await self.alerts.alert(
                m,
                "leftover-slot",
                bool(held),
                f"⚠️ {m.id} is {m.state.value}, but its "
                f"replication slot(s) still hold WAL on {m.source}: "
                + ", ".join(f"{n} {pretty_bytes(b or 0)}" for n, b in held.items())
                + f" — the source's disk fills until it is gone; {fix}",
            )

    # ---- approvals and cutover ----------------------------------------------------------------

    def start_cutover(self, migration_id: str, actor: str) -> asyncio.Task:
        """Run a decided cutover (state cutting_over) as a tracked task (the click must answer at once)."""
        return self._track(migration_id, self._guarded_cutover(migration_id, actor), f"cutover {migration_id}")

    async def _guarded_cutover(self, migration_id: str, actor: str) -> None:
        try:
            ctx = self.context(await self.ledger.get(migration_id))
            await self._tidied(migration_id, run_cutover(ctx, actor, decided=True))
        except Exception:
            log.exception("cutover of %s could not run", migration_id)

    async def _tidied(self, migration_id: str, work: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await work
        finally:
            await self._tidy(migration_id)

    async def _tidy(self, migration_id: str) -> None:
        """Export files are removed once a migration completed or was cancelled (unless keep_exports):
        a failed or paused one still needs them."""
        m = await self.store.get_migration(migration_id)
        if m is not None and m.state in (State.COMPLETED, State.CANCELLED) and not self.config.keep_exports:
            await asyncio.to_thread(workdir.remove, self.config.workdir / migration_id)

    async def prepare_cutover(self, migration_id: str, actor: str, channel: str, minutes: int) -> ApprovalRequest:
        """Check that the migration may be cut over and verify its tables once more; the request the
        approval card shows (nothing is changed yet: `open_cutover` does that once the card is posted)."""
        m = await self.ledger.get(migration_id)
        if m.mode is not Mode.ONLINE:
            raise MigrationError(f"{m.id} is an offline migration: it has no cutover")
        if m.state is not State.READY_FOR_CUTOVER:
            lags = [
                f"{db}: {p.lag_seconds or 0:.1f} s / {p.lag_bytes or 0} bytes behind"
                for db, p in self.progress(m.id).databases.items()
                if p.lag_bytes is not None
            ]
            why = (
                "a request is already waiting for approval"
                if m.state is State.AWAITING_APPROVAL
                else "it must be ready_for_cutover (caught up)"
            )
            raise MigrationError(
                f"{m.id} is {m.state.value}: {why}" + (f". Current lag: {'; '.join(lags)}" if lags else "")
            )
        if m.options.backend is Backend.NATIVE:
            await require_caught_up(self.context(m), f"{m.id} cannot be cut over now")
        results = await self.verify(m.id)
        verification = "; ".join(self._streaming_verdict(m.id, r) for r in results)
        if any(x.target != "missing" for r in results for x in r.mismatches):
            verification += "; the cutover compares them exactly, with writes frozen"
        return ApprovalRequest.new(m.id, actor, minutes, channel, verification)

    def _streaming_verdict(self, mid: str, r: VerifyResult) -> str:
        """One database compared while it streams: rows still on their way differ, and say so (lag); a table
        missing on the target is no write in flight (DDL does not replicate)."""
        rows = f"{r.rows:,} rows"
        if r.ok:
            return f"{r.database} equal: {r.tables} tables, {rows}"
        missing = [x.name for x in r.mismatches if x.target == "missing"]
        moving = len(r.mismatches) - len(missing)
        said = []
        if moving:
            p = self.progress(mid).databases.get(r.database)
            lag = (
                f" (lag {p.lag_seconds or 0:.1f} s, {pretty_bytes(p.lag_bytes)} behind)"
                if p is not None and p.lag_bytes is not None
                else ""
            )
            said.append(f"≈ {moving} of {r.tables} tables differ by rows still in flight{lag}")
        if missing:
            said.append(f"❌ missing on the target: {', '.join(missing)}")
        return f"{r.database} " + ", ".join(said) + f", {rows}"

    async def open_cutover(self, request: ApprovalRequest) -> bool:
        """ready_for_cutover → awaiting_approval with `request` as the open round; False (and the request
        closed) when the migration moved on meanwhile."""
        await self.ledger.save(
            request.subject,
            StepKind.APPROVAL,
            StepState.WAITING,
            f"requested by {request.requested_by}",
            request.as_dict(),
        )
        if await self.ledger.move(
            request.subject,
            State.AWAITING_APPROVAL,
            f"cutover requested by {request.requested_by}",
            expect=(State.READY_FOR_CUTOVER,),
            actor=request.requested_by,
            action="cutover.requested",
            round=request.round,
        ):
            return True
        request.open = False
        await self.ledger.save(
            request.subject, StepKind.APPROVAL, StepState.DONE, "the migration moved on", request.as_dict()
        )
        return False

    async def cutover_request(self, migration_id: str) -> ApprovalRequest | None:
        step = await self.store.step(migration_id, StepKind.APPROVAL)
        return ApprovalRequest.from_dict(step.data) if step else None

    async def decide_cutover(
        self,
        migration_id: str,
        round: str,
        user: str,
        verb: str,
        *,
        is_approver: bool,
        required: int,
        channel: str = "",
        reason: str = "",
    ) -> tuple[Decision, ApprovalRequest | None]:
        """An Approve or Reject click on the card of `round` (approval.py's rules). The decision itself is a
        conditional move: awaiting_approval → cutting_over for the approval that completes the quorum,
        → ready_for_cutover for a reject or an expiry. Of any two racing, one wins and the other is
        refused saying so; the winner's cutover then starts on the replica holding the migration."""
        m = await self.store.get_migration(migration_id)
        request = await self.cutover_request(migration_id)

        async def refused(reason: str, why: str) -> tuple[Decision, ApprovalRequest | None]:
            await self.store.audit(AuditEntry(user, f"cutover.{verb}.refused", why, migration_id, channel))
            return Decision(Verdict.REFUSED, reason), request

        if m is None or request is None or m.state is not State.AWAITING_APPROVAL:
            state = m.state.value if m else "gone"
            return await refused(f"this cutover request is no longer open ({state})", "no open request")
        if round != request.round:
            return await refused(
                "this card belongs to an earlier cutover request: use the current card", f"old round {round or '-'}"
            )
        if request.expired:
            await self.expire_approval(migration_id)
        decision = await approval.decide(
            self.store, "cutover", request, user, verb, is_approver=is_approver, required=required, channel=channel
        )
        if decision.verdict is Verdict.REJECTED and not await self.reject_cutover(migration_id, user, reason):
            return await refused(await self._decided(migration_id), "decided meanwhile")
        if decision.verdict is Verdict.APPROVED:
            approvers = ", ".join(decision.approvers)
            if not await self.ledger.move(
                migration_id,
                State.CUTTING_OVER,
                f"cutover approved by {approvers}",
                expect=(State.AWAITING_APPROVAL,),
                actor=user,
                action="cutover.approved",
                verdict=("approved", decision.approvers),
            ):
                return await refused(await self._decided(migration_id), "decided meanwhile")
            await self.perform(Command.CUTOVER, migration_id, user)
        return decision, request

    async def _decided(self, migration_id: str) -> str:
        m = await self.ledger.get(migration_id)
        return f"this cutover request was decided meanwhile: {m.id} is {m.state.value}"

    async def reject_cutover(self, migration_id: str, actor: str, reason: str = "") -> bool:
        """Back to ready_for_cutover; the reason (asked by the Reject form) is in the move's audit entry and in
        the migration's `error` (`cutover rejected by ACTOR: REASON`), which the card and the thread show."""
        why = f": {' '.join(reason.split())[:500]}" if reason.strip() else ""
        return await self.ledger.move(
            migration_id,
            State.READY_FOR_CUTOVER,
            f"cutover rejected by {actor}{why}; replication keeps running",
            expect=(State.AWAITING_APPROVAL,),
            error=f"cutover rejected by {actor}{why}",
            actor=actor,
            action="cutover.rejected",
            verdict=("rejected", [actor]),
        )

    async def expire_approval(self, migration_id: str) -> bool:
        request = await self.cutover_request(migration_id)
        approved = await approval.approvers(self.store, request) if request else []
        return await self.ledger.move(
            migration_id,
            State.READY_FOR_CUTOVER,
            "the cutover request expired without enough approvals; replication keeps running",
            expect=(State.AWAITING_APPROVAL,),
            error="the cutover request expired",
            action="cutover.expired",
            verdict=("expired", approved),
        )

    async def cutover(self, migration_id: str, actor: str) -> bool:
        """Switch a streaming migration to its target (cutover_flow.py); True when completed. Recovery (which
        finishes a released migration nobody here runs) leaves it alone meanwhile."""
        ctx = self.context(await self.ledger.get(migration_id))
        self._cutting.add(migration_id)
        try:
            return await self._tidied(migration_id, run_cutover(ctx, actor))
        finally:
            self._cutting.discard(migration_id)

    def context(self, m: Migration) -> MigrationContext:
        """The one context every flow of this migration gets."""
        source, target = self._servers(m)
        return MigrationContext(self.ledger, self.alerts, self.config, m, source, target, self._backend(m))

    def schedule_digest(self) -> None:
        self.scheduler.digest(self.config.digest, self.post_digest)

    async def post_digest(self) -> None:
        active = await self.store.list_migrations(active_only=True)
        if active:
            await self.events.digest(active, {m.id: self.progress(m.id) for m in active})

    async def close(self) -> None:
        """Stop cleanly: running work is interrupted (a cutover before release falls back; one whose release
        is being committed finishes that commit and stays released; a restart picks the rest up) and leases
        are released."""
        self.scheduler.shutdown()
        for task in [*self._tasks.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), *self._background, return_exceptions=True)
        await self.store.release(self.instance)
        self.ledger.tokens.clear()

    # ---- running ------------------------------------------------------------------------------

    async def _hold(self, migration_id: str) -> bool:
        """Claim the lease (new work, retries, take-overs); this replica's earlier lives count as gone. The
        claim's fencing token goes with every write from here on; a take-over from another replica whose
        lease lapsed is said in the audit log and the channel."""
        lease = await self.store.claim(
            migration_id, self.instance, self.config.lease_seconds, previous_life=f"{self.replica}/"
        )
        if lease is None:
            return False
        self.ledger.tokens[migration_id] = lease.token
        self._keep_leases()
        if lease.taken_from:
            gone = lease.taken_from.split("/", 1)[0]
            text = f"🔁 replica {self.replica} took {migration_id} over from replica {gone}, whose lease lapsed"
            await self.store.audit(AuditEntry("pgmig", "takeover", text, migration_id))
            m = await self.store.get_migration(migration_id)
            if m is not None:
                await self.alerts.notice(m, "takeover", text)
        return True

    async def _lost_leases(self) -> None:
        """Stop the work on every migration another process took over while this one could not renew its
        lease (frozen, paused, cut off): its writes are refused already; its tasks end here."""
        for mid, token in list(self.ledger.tokens.items()):
            if await self.store.holds(mid, token):
                continue
            log.warning("%s was taken over by another pgmig process: stopping the work on it here", mid)
            self.scheduler.unwatch(mid)
            if (task := self._tasks.get(mid)) is not None:
                self._cancelling.add(mid)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                self._cancelling.discard(mid)
            if self.ledger.tokens.get(mid) == token:
                del self.ledger.tokens[mid]

    def _keep_leases(self) -> None:
        """From the first lease on: renew ours and look for migrations nobody holds, every quarter lease."""
        if not self._leasing:
            self._leasing = True
            self.scheduler.lease(max(0.2, self.config.lease_seconds / 4), self._renew_lease)
            self.scheduler.every("commands", self.config.command_poll_seconds, self._serve_commands)
            self.scheduler.every("leftovers", self.config.leftover_check_seconds, self._check_leftovers)

    async def _renew_lease(self) -> None:
        """A coroutine function, so that apscheduler awaits it on the loop (a lambda would not be awaited)."""
        try:
            await self.store.beat(self.instance)
            await self._lost_leases()
            await self.recover()
        except asyncio.CancelledError:  # shutting down: the lease is released by close()
            return
        except Exception:
            log.exception("renewing the lease of %s failed", self.instance)

    async def _check_leftovers(self) -> None:
        try:
            await self.check_leftovers()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("looking for leftover slots failed")

    def _servers(self, m: Migration) -> tuple[ServerConfig, ServerConfig]:
        missing = [n for n in (m.source, m.target) if n not in self.servers]
        if missing:
            raise MigrationError(
                f"server {', '.join(missing)} is no longer configured", "restore its [servers.NAME] entry and retry"
            )
        return self.servers[m.source], self.servers[m.target]

    def _backend(self, m: Migration) -> ManagedBackend | None:
        """The Azure service that moves this migration's data; None for pgmig's own engine."""
        name = m.options.backend
        if name is Backend.NATIVE:
            return None
        if name not in self.backends:
            raise MigrationError(
                f"{m.id} runs on the {name} backend, but Azure is not configured in this pgmig",
                "set AZURE_SUBSCRIPTION_ID (or [azure] subscription_id) and restart",
            )
        return self.backends[name]

    async def _run(self, migration_id: str) -> None:
        if not await self._hold(migration_id):
            log.warning("%s is held by another pgmig process; not running it here", migration_id)
            return
        self.scheduler.watch(migration_id)
        try:
            await self._pipeline(migration_id)
        except asyncio.CancelledError:
            raise
        except (Superseded, LeaseLost) as exc:
            log.info("%s", exc)
        except Exception as exc:
            if migration_id not in self._cancelling:  # errors of work being torn down are not failures
                try:
                    await self._failed(migration_id, exc)
                except LeaseLost as lost:  # another process runs it now: its outcome is not this one's to write
                    log.info("%s", lost)
        finally:
            m = await self.store.get_migration(migration_id)
            if m is None or m.state not in MONITORED:  # streaming migrations stay under watch
                self.scheduler.unwatch(migration_id)
            await self._tidy(migration_id)

    async def _failed(self, mid: str, exc: Exception) -> None:
        """The migration fails with a cause a person can act on (the traceback only in the log, at debug
        level), and the steps it was running are saved failed with it: `status` must not show them running."""
        m = await self.ledger.get(mid)
        reason = failure_reason(exc, mid, self._sides(m))
        log.warning("%s failed: %s", mid, reason)
        if not m.state.finished:  # before the move: whoever sees the migration failed sees its steps failed
            for step in (await self.ledger.steps(mid)).values():
                if step.state == RUNNING:
                    await self.ledger.save(mid, step.name, FAILED, reason, step.data)
        await self.ledger.fail(mid, reason, failure_retry(exc))

    async def _pipeline(self, mid: str) -> None:
        """Pre-flight and roles, then the flow the migration's mode asks for."""
        m = await self.ledger.get(mid)
        steps = await self.ledger.steps(mid)
        if not (steps.get(StepKind.PREFLIGHT) and steps[StepKind.PREFLIGHT].state == DONE):
            if (await self.preflight(m)).blocking:
                return
            m = await self.ledger.get(mid)
        ctx = self.context(m)
        ctx.bindir = await choose_bindir(ctx.source, ctx.target, self.config.pg_bindir)
        if steps.get(StepKind.ROLES) and steps[StepKind.ROLES].state == DONE:
            ctx.roles = RolePlan(**steps[StepKind.ROLES].data)
        else:
            ctx.roles = await copy_roles(ctx.source, ctx.target, m.databases, ctx.journal)
            await self.ledger.save(mid, StepKind.ROLES, DONE, ctx.roles.describe(), asdict(ctx.roles))
        await ctx.reload()
        if ctx.backend is not None:
            await run_managed(ctx)
        else:
            await (run_online(ctx) if m.mode is Mode.ONLINE else run_offline(ctx))

    async def _tick(self, mid: str) -> None:
        """One scheduled look at a migration: its replication watched, an expired approval closed, the live
        message refreshed. A look that fails says so where people look — logged once per cause (not a
        traceback every tick), and, when the servers do not answer, an alert raised once and cleared once
        they answer again, with the live message saying they are unreachable instead of `streaming`."""
        m = await self.store.get_migration(mid)
        if m is None or m.state.finished:
            self.scheduler.unwatch(mid)
            return
        try:
            m = await self._look(m)
        except Exception as exc:
            await self._look_failed(m, exc)
        else:
            if self._tick_failures.pop(mid, None) is not None:
                log.info("%s: the servers answer again", mid)
            await self.alerts.alert(m, "unreachable", False, "")
        await self.events.progress(m, self.progress(mid))

    def _sides(self, m: Migration) -> dict[str, ServerConfig]:
        """The migration's configured servers by role, for failure_reason to say which one did not answer."""
        named = (("source", m.source), ("target", m.target))
        return {role: self.servers[name] for role, name in named if name in self.servers}

    async def _look(self, m: Migration) -> Migration:
        if m.state in MONITORED and (m.mode is Mode.ONLINE or m.options.backend is not Backend.NATIVE):
            ctx = self.context(m)
            await (watch_native(ctx) if ctx.backend is None else watch_managed(ctx))
            m = await self.ledger.get(m.id)
        if m.state is State.AWAITING_APPROVAL:
            request = await self.cutover_request(m.id)
            if request and request.expired:
                await self.expire_approval(m.id)
                m = await self.ledger.get(m.id)
        return m

    async def _look_failed(self, m: Migration, exc: Exception) -> None:
        reason = failure_reason(exc, m.id, self._sides(m))
        cause = f"{type(first_cause(exc)).__name__}: {reason}"
        if self._tick_failures.get(m.id) != cause:  # once per cause; the traceback only when the words are not enough
            self._tick_failures[m.id] = cause
            log.warning("watching %s failed: %s", m.id, reason, exc_info=None if expected(exc) else exc)
        if not unreachable(exc):
            return
        if m.state in MONITORED:
            servers_unreachable(self.progress(m.id), m.databases, reason)
        await self.alerts.alert(
            m,
            "unreachable",
            True,
            f"⚠️ servers unreachable: {reason}. pgmig cannot watch {m.id} meanwhile (replication itself may go on); "
            "this clears when they answer again",
        )
