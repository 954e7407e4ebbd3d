"""The engine's API: what handlers, the bot and the tests call on migrations. `Engine` holds what every
part shares (the store, the servers, the ledger, the scheduler, this process's identity) and keeps the
lifecycle itself — create, pre-flight, retry, resume, verify, status, cleanup; every other job lives in
the module named after it, and the methods below hand it over:

- runner.py: the tasks running migrations here, and the scheduled look at the watched ones;
- commands.py: the cross-replica command queue (a command runs where its migration is held);
- leases.py: leases, and recovery (taking over what no live process holds);
- cancel.py: the cancel teardown, and the lock every command starting or stopping work takes;
- approvals.py: cutover requests, their approvals, and starting the cutover;
- alerts.py: leftover-slot alerts and the digest.

The pipelines live in flows/ (offline, online, cutover, managed) and observe/monitor.py; which state
may follow which is state/lifecycle.py; every flow records its steps through the Ledger and every
change it makes on a server in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from migration_core.azure.backend import ManagedBackend
from migration_core.changes import cleanup
from migration_core.changes import databases as target_db
from migration_core.changes.cleanup import CleanupReport
from migration_core.changes.databases import Holder
from migration_core.engine.alerts import Reminders
from migration_core.engine.approvals import Approvals
from migration_core.engine.cancel import Canceller, CancelOutcome
from migration_core.engine.commands import Command, CommandResult, Commands
from migration_core.engine.config import EngineConfig, MigrationRequest
from migration_core.engine.context import MigrationContext
from migration_core.engine.leases import Leases
from migration_core.engine.runner import MONITORED, Runner
from migration_core.engine.scheduler import Scheduler
from migration_core.flows.steps.offline import choose_bindir
from migration_core.observe import charts
from migration_core.observe import ddl as schema_watch
from migration_core.observe.charts import Chart
from migration_core.observe.ddl import Captured, CutoverHold
from migration_core.observe.progress import MigrationProgress
from migration_core.pg.servers import ConnectionProblem, ServerConfig, user_databases
from migration_core.plan import record
from migration_core.plan.review import PlanReview, review
from migration_core.plan.survey import MigrationPlan, history, survey
from migration_core.preflight.checks import SKIPPED_BY_DEFAULT, PreflightReport, PreflightRequest, run_preflight
from migration_core.state import approval
from migration_core.state.approval import ApprovalRequest, Decision
from migration_core.state.errors import MigrationError
from migration_core.state.events import MigrationEvents
from migration_core.state.journal import Change, JournalEntry
from migration_core.state.ledger import DONE, FAILED, RUNNING, Alerts, Ledger
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
    utcnow,
)
from migration_core.store import Store
from migration_core.verify import continuous
from migration_core.verify.tables import VerifyResult, verify_database

__all__ = [
    "MONITORED",
    "CancelOutcome",
    "Command",
    "CommandResult",
    "Engine",
    "EngineConfig",
    "MigrationRequest",
    "MigrationStatus",
]

CHARTS_AT_CLOSE_SECONDS = 10.0  # a closing engine waits this long for charts still being shared


@dataclass
class MigrationStatus:
    migration: Migration
    steps: list[Step]
    progress: MigrationProgress
    leftovers: list[JournalEntry]
    holder: str = ""  # the replica whose lease is fresh on it ("" when nobody runs it now)
    takeovers: list[AuditEntry] = field(default_factory=list)  # when another replica took it over, and from whom
    plan: PlanReview | None = None  # its own plan beside what each phase took


class Engine:
    """One per process: the shared state every part works on, and the API the rest of pgmig calls."""

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
        self.replica = config.replica_id or uuid.uuid4().hex[:12]
        self.instance = f"{self.replica}/{uuid.uuid4().hex[:8]}"  # this life of this replica
        self.runner = Runner(self)
        self.scheduler = Scheduler(config.progress_interval, self.runner.tick)
        self.commands = Commands(self)
        self.leases = Leases(self)
        self.canceller = Canceller(self)
        self.approvals = Approvals(self)
        self.reminders = Reminders(self)

    # ---- the lifecycle --------------------------------------------------------------------------

    async def create(self, req: MigrationRequest, command: str = "") -> Migration:
        """A new `mig-N`, audited as `command` (the canonical `/pgmig migrate …` the person typed or the form
        built), so the migration's own audit starts with what was asked, from where."""
        req.validate()
        mid = await self.store.next_migration_id()
        options = MigrationOptions(
            Method(req.method),
            req.parallel or self.config.default_parallel,
            req.overwrite,
            req.pause_after_export,
            req.replica_identity_full,
            Backend(req.backend),
            req.runtime_server,
            req.capture_ddl,
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
        self.leases.keep()
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

    async def check(
        self, source: str, target: str, databases: list[str], mode: Mode, replica_identity_full: bool
    ) -> PreflightReport:
        """`/pgmig check`: the pre-flight a migration from `source` to `target` would run; nothing is made."""
        src, tgt = self.server(source), self.server(target)
        return await run_preflight(
            PreflightRequest(
                src,
                tgt,
                databases=databases,
                mode=mode,
                replica_identity_full=replica_identity_full,
                writers=await self.writers(tgt.name),
                held=await self.held(tgt.name, databases),
                fenced=await self.fenced(src.name),
            )
        )

    async def plan(
        self, source: str, target: str, databases: list[str], mode: Mode, parallel: int | None = None
    ) -> MigrationPlan:
        """`/pgmig plan`: the pre-flight `check` runs, then what the migration would move and how long it would
        take, measured read-only on the source and learnt from earlier migrations; nothing is made."""
        started = time.perf_counter()
        report = await self.check(source, target, databases, mode, replica_identity_full=False)
        seconds = time.perf_counter() - started
        src, tgt = self.server(source), self.server(target)
        bindir = None
        if report.databases:
            try:
                bindir = await choose_bindir(src, tgt, self.config.pg_bindir)
            except (MigrationError, ConnectionProblem):
                pass  # the plan says the schema overhead is not counted; the pre-flight says what is unreachable
        addresses = (src.address, tgt.address)
        earlier = await history(self.store, addresses)
        return await survey(src, report, seconds, parallel or self.config.default_parallel, bindir, earlier, addresses)

    async def plan_review(self, migration_id: str) -> PlanReview | None:
        """A migration's own plan (its `plan` step, plan/record.py) beside what each phase took so far; None
        when it has none (not made yet, made before plans were, or it could not be measured)."""
        m = await self.find(migration_id)
        steps = {s.name: s for s in await self.store.steps(migration_id)}
        plan = record.saved(steps)
        if m is None or plan is None:
            return None
        return review(plan, m, steps, self.progress(m.id), await self.store.reached(m.id), utcnow())

    async def databases(self, server: str) -> list[tuple[str, int]]:
        """A server's user databases (what `--db` defaults to), each with its size in bytes."""
        return await user_databases(self.server(server), SKIPPED_BY_DEFAULT)

    async def preflight(self, m: Migration) -> PreflightReport:
        """Run the checks `/pgmig check` runs; a blocking finding fails the migration at `preflight`."""
        await self.ledger.advance(m.id, State.PREFLIGHT, "running pre-flight checks")
        await self.ledger.save(m.id, StepKind.PREFLIGHT, RUNNING, "running")  # its start: the plan counts it
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

    async def retry(self, migration_id: str, actor: str = "pgmig", changes: RetryChanges | None = None) -> bool:
        """Failed → run again from the failed step, with the options the fix asked for (`changes`: e.g.
        --overwrite after a non-empty target). False when it is not failed (or another click won)."""
        async with self.canceller.exclusive(migration_id):
            return await self._retry(migration_id, actor, changes or RetryChanges())

    async def _retry(self, migration_id: str, actor: str, changes: RetryChanges) -> bool:
        if not await self.leases.hold(migration_id):
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
        async with self.canceller.exclusive(migration_id):
            return await self._resume(migration_id, actor)

    async def _resume(self, migration_id: str, actor: str) -> bool:
        if not await self.leases.hold(migration_id):
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

    async def verify(self, migration_id: str) -> list[VerifyResult]:
        """Compare source and target now, for each database whose data reached the target: one whose copy
        never started (the migration failed or was cancelled before) or whose target database a cancel
        dropped is left out — an empty list means there is nothing to verify yet."""
        m = await self.ledger.get(migration_id)
        source, target = self._servers(m)
        streaming = m.mode is Mode.ONLINE and m.state is not State.COMPLETED
        expected = await self._expected(m)
        return [
            await verify_database(
                source,
                target,
                db,
                m.options.parallel,
                replicated_only=streaming,
                limits=self.config.limits,
                expected=expected.get(db),
            )
            for db in await self._copied(m)
        ]

    async def _expected(self, m: Migration) -> dict[str, dict[tuple[str, str], str]]:
        """The tables skipped schema changes let differ, per database: as the cutover kept them once it ran (its
        capture is gone then), else read from the capture of a streaming migration."""
        if m.mode is not Mode.ONLINE or m.options.backend is not Backend.NATIVE:
            return {}
        released = await self.store.step(m.id, StepKind.RELEASE)
        if released is not None and "expected" in released.data:
            return {db: {(s, t): why for s, t, why in found} for db, found in released.data["expected"].items()}
        ctx = self.context(m)
        return await schema_watch.expected(ctx) if schema_watch.wanted(ctx) and not m.state.finished else {}

    async def schema_changes(self, migration_id: str) -> dict[str, list[Captured]]:
        """The schema changes captured on a streaming migration's source, per database, with their state."""
        return await schema_watch.listing(self.context(await self.ledger.get(migration_id)))

    async def decide_schema_change(
        self,
        migration_id: str,
        which: str,
        verb: str,
        actor: str,
        reason: str = "",
        *,
        is_approver: bool = True,
        required: int = 1,
    ) -> Captured:
        """`/pgmig ddl mig-N apply|skip ID`: the decision the target's gate waits for (observe/ddl.py); any
        replica may write it, the first decision stands. Applying a destructive change counts as one of the
        `required` approvals it needs (`is_approver`: the handlers' policy says whether `actor` is one)."""
        m = await self.ledger.get(migration_id)
        if m.state not in (State.CATCHING_UP, State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL):
            raise MigrationError(f"{m.id} is {m.state.value}: schema changes are decided while it streams")
        return await schema_watch.decide(
            self.context(m), which, verb, actor, reason, is_approver=is_approver, required=required
        )

    async def pause_cutover(
        self, migration_id: str, actor: str, reason: str = "", *, resume: bool = False
    ) -> CutoverHold:
        """`/pgmig ddl mig-N pause|resume` (a schema change's Pause cutover): the hold the cutover gate honours
        (observe/ddl.py), kept in the store so any replica sees it; pausing also rejects an open cutover
        request, saying why."""
        m = await self.ledger.get(migration_id)
        if resume:
            return await schema_watch.resume(self.context(m), actor)
        if m.state not in MONITORED:
            raise MigrationError(f"{m.id} is {m.state.value}: only a streaming migration's cutover can be paused")
        hold = await schema_watch.pause(self.context(m), actor, reason)
        if m.state is State.AWAITING_APPROVAL:
            await self.approvals.reject_cutover(m.id, actor, f"cutover paused: {hold.reason or 'no reason given'}")
        return hold

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

    async def steps(self, migration_id: str) -> list[Step]:
        return await self.store.steps(migration_id)

    async def chart(self, migration_id: str, moment: str) -> Chart | None:
        """The migration's chart at `moment` (observe/charts.py): the moment kept as a sample first, with where
        each database's phase began (a milestone seldom falls on a tick: the copy that just ended would be
        missing), then drawn from every sample the store keeps; None while there is nothing to draw."""
        m = await self.find(migration_id)
        if m is None:
            return None
        progress = self.progress(m.id)
        await self.store.add_samples(m.id, charts.began(progress) + charts.samples(progress, utcnow()))
        return await charts.draw(self.store, m, moment)

    async def set_message(self, migration_id: str, channel: str, ts: str) -> None:
        """Where the migration's live card was posted (Slack's channel id and ts): later edits go there."""
        await self.store.set_message(migration_id, channel, ts)

    async def cutover_approvers(self, request: ApprovalRequest) -> list[str]:
        """Who has approved this cutover request so far."""
        return await approval.approvers(self.store, request)

    async def ping(self) -> bool:
        """Whether the state store answers (the bot's health check)."""
        return await self.store.ping()

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
        if m.state in MONITORED and m.id not in self.ledger.tokens and self.config.verify_chunk_rows > 0:
            with contextlib.suppress(MigrationError):  # its servers are not configured here: nothing to add
                await continuous.elsewhere(self.context(m))
        return MigrationStatus(
            m,
            await self.store.steps(m.id),
            self.progress(m.id),
            await self.leftovers(m.id) if m.state.finished else [],
            holder.split("/", 1)[0],
            [e for e in await self.store.audit_log(m.id) if e.action == "takeover"],
            await self.plan_review(m.id),
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

    def context(self, m: Migration) -> MigrationContext:
        """The one context every flow of this migration gets."""
        source, target = self._servers(m)
        return MigrationContext(
            self.ledger, self.alerts, self.config, m, source, target, self._backend(m), sessions=self.runner.kept(m.id)
        )

    async def close(self) -> None:
        """Stop cleanly: running work is interrupted (a cutover before release falls back; one whose release
        is being committed finishes that commit and stays released; a restart picks the rest up) and leases
        are released."""
        self.scheduler.shutdown()
        await self.runner.stop_all()
        await self.ledger.charted(CHARTS_AT_CLOSE_SECONDS)
        await self.store.release(self.instance)
        self.ledger.tokens.clear()

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

    # ---- running migrations here: runner.py --------------------------------------------------------

    def start(self, migration_id: str) -> asyncio.Task:
        return self.runner.start(migration_id)

    def background(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        return self.runner.background(coro, name)

    def is_running(self, migration_id: str) -> bool:
        return self.runner.is_running(migration_id)

    async def wait(self, migration_id: str) -> None:
        await self.runner.wait(migration_id)

    async def wait_all(self) -> None:
        await self.runner.wait_all()

    def progress(self, migration_id: str) -> MigrationProgress:
        return self.runner.progress(migration_id)

    # ---- commands, run where the migration is held: commands.py -------------------------------------

    async def perform(
        self, kind: Command, migration_id: str, actor: str, wait: float | None = None, args: dict | None = None
    ) -> CommandResult:
        return await self.commands.perform(kind, migration_id, actor, wait, args)

    async def serve_commands(self) -> int:
        return await self.commands.serve_commands()

    # ---- leases and recovery: leases.py ------------------------------------------------------------

    async def recover(self) -> list[str]:
        return await self.leases.recover()

    # ---- cancel: cancel.py -------------------------------------------------------------------------

    async def cancel(self, migration_id: str, actor: str) -> CancelOutcome:
        return await self.canceller.cancel(migration_id, actor)

    async def repair(self, migration_id: str, actor: str, table: str = "") -> list[str]:
        """`/pgmig repair`: re-copy the key ranges continuous verification found to differ (of `table`, when
        named) while replication runs, then compare them again; audited. Runs where the migration runs (its
        verification is in that process's memory): through `perform(Command.REPAIR)`."""
        m = await self.ledger.get(migration_id)
        if not (m.mode is Mode.ONLINE and m.options.backend is Backend.NATIVE and m.state in MONITORED):
            raise MigrationError(
                f"{m.id} is {m.state.value}: a repair works while a native online migration streams",
                "once the target is released, differences are an incident: `/pgmig verify` names them",
            )
        said = await continuous.repair(self.context(m), table)
        if not said:
            what = f"no range of {table} in {m.id}" if table else f"no range of {m.id}"
            raise MigrationError(
                f"{what} differs as far as continuous verification has found",
                f"`/pgmig status {m.id}` shows what it has compared so far",
            )
        await self.record(AuditEntry(actor, "repair", "; ".join(said), m.id))
        return said

    # ---- approvals and cutover: approvals.py -------------------------------------------------------

    async def prepare_cutover(self, migration_id: str, actor: str, channel: str, minutes: int) -> ApprovalRequest:
        return await self.approvals.prepare_cutover(migration_id, actor, channel, minutes)

    async def open_cutover(self, request: ApprovalRequest) -> bool:
        return await self.approvals.open_cutover(request)

    async def cutover_request(self, migration_id: str) -> ApprovalRequest | None:
        return await self.approvals.cutover_request(migration_id)

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
        return await self.approvals.decide_cutover(
            migration_id, round, user, verb, is_approver=is_approver, required=required, channel=channel, reason=reason
        )

    async def reject_cutover(self, migration_id: str, actor: str, reason: str = "") -> bool:
        return await self.approvals.reject_cutover(migration_id, actor, reason)

    async def expire_approval(self, migration_id: str) -> bool:
        return await self.approvals.expire_approval(migration_id)

    def start_cutover(self, migration_id: str, actor: str) -> asyncio.Task:
        return self.approvals.start_cutover(migration_id, actor)

    async def cutover(self, migration_id: str, actor: str) -> bool:
        return await self.approvals.cutover(migration_id, actor)

    # ---- leftovers and the digest: alerts.py ---------------------------------------------------------

    async def leftovers(self, migration_id: str) -> list[JournalEntry]:
        return await self.reminders.leftovers(migration_id)

    async def check_leftovers(self) -> None:
        await self.reminders.check_leftovers()

    def schedule_digest(self) -> None:
        self.reminders.schedule_digest()

    async def post_digest(self) -> None:
        await self.reminders.post_digest()
