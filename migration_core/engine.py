"""The migration state machine: runs each step, persists it, and resumes after a failure or restart.

Offline: created → preflight → exporting → [paused] → importing → verifying → completed, or failed /
cancelled. Every step is a row in the store (`preflight`, `roles`, `export:DB`, `review`, `import:DB`,
`verify:DB`); a retry skips the steps already done, so finished databases are not redone.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
import shutil
from datetime import datetime, timedelta
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

from migration_core import target_db
from migration_core.errors import MigrationError
from migration_core.events import MigrationEvents
from migration_core.jobs import ProgressJobs
from migration_core.models import AuditEntry, Migration, State, Step, utcnow
from migration_core import replication
from migration_core.offline import DEFAULT_PARALLEL, OfflineDatabase, OfflineOptions, choose_bindir
from migration_core.constraints import Parked
from migration_core.cutover import DatabaseCutover, check, cut_over, fallback
from migration_core.online import OnlineDatabase, reset_identity, set_identity_full
from migration_core.preflight import Mode, PreflightReport, PreflightRequest, pretty_bytes, run_preflight
from migration_core.progress import MigrationProgress
from migration_core.roles import RolePlan, copy_roles
from migration_core.servers import ConnectionProblem, ServerConfig
from migration_core.store import Store
from migration_core.verify import VerifyResult, verify_database

log = logging.getLogger(__name__)
DONE, RUNNING, FAILED, WAITING = "done", "running", "failed", "waiting"
MAX_LISTED_MISMATCHES = 20


@dataclass
class EngineConfig:
    workdir: Path
    pg_bindir: str | None = None
    progress_interval: float = 15.0
    default_parallel: int = DEFAULT_PARALLEL
    fence_grace_seconds: float = 5.0       # cutover: sessions may finish this long before they are ended
    catch_up_timeout_seconds: float = 30.0  # cutover: longest wait for the target after the fence
    ready_lag_seconds: float = 5.0         # online: ready for cutover below this lag…
    ready_lag_bytes: int = 8 << 20         # …and this many bytes behind
    lag_alert_seconds: float = 60.0        # alert when lag stays above these
    lag_alert_bytes: int = 256 << 20
    wal_retention_alert_bytes: int = 1 << 30  # alert when a slot holds this much WAL on the source
    digest: str = "off"                    # off | hourly | daily: a summary of active migrations
    lease_seconds: float = 60.0            # several replicas: a migration whose owner is silent this long
                                           # may be taken over by another at start-up


@dataclass
class MigrationRequest:
    source: str
    target: str
    mode: str
    requested_by: str
    channel: str = ""
    databases: list[str] = field(default_factory=list)
    method: str = "restore"
    parallel: int | None = None
    overwrite: bool = False
    pause_after_export: bool = False
    replica_identity_full: bool = False


MONITORED = (State.CATCHING_UP, State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mismatch_lines(results: list[VerifyResult]) -> list[str]:
    return [f"{m.database} {m.kind} {m.name}: source {m.source}, target {m.target}"
            for r in results for m in r.mismatches]


def failure_reason(exc: BaseException, migration_id: str) -> str:
    """One readable reason; parallel work fails as an exception group, whose first cause is the story."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MigrationError):
        return str(exc)
    if isinstance(exc, ConnectionProblem):
        return f"{exc}" + (f" — fix: {exc.fix}" if exc.fix else "")
    if isinstance(exc, asyncpg.PostgresError):
        return f"the server said: {exc}"
    log.error("migration %s failed unexpectedly", migration_id, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


class Engine:
    def __init__(self, store: Store, servers: dict[str, ServerConfig], events: MigrationEvents,
                 config: EngineConfig) -> None:
        self.store, self.servers, self.events, self.config = store, servers, events, config
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancelling: set[str] = set()
        self._alerting: dict[tuple[str, str], bool] = {}  # (migration, alert kind) → currently raised
        self._progress: dict[str, MigrationProgress] = {}
        self.jobs = ProgressJobs(config.progress_interval, self._tick)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leasing = False

    # ---- what handlers call -------------------------------------------------------------------

    async def create(self, req: MigrationRequest) -> Migration:
        mid = await self.store.next_migration_id()
        options = {"method": req.method, "parallel": req.parallel or self.config.default_parallel,
                   "overwrite": req.overwrite, "pause_after_export": req.pause_after_export,
                   "replica_identity_full": req.replica_identity_full, "databases_given": bool(req.databases)}
        m = Migration(id=mid, source=req.source, target=req.target, databases=list(req.databases), mode=req.mode,
                      state=State.CREATED, requested_by=req.requested_by, channel=req.channel, options=options)
        await self.store.create_migration(m)
        await self.store.audit(AuditEntry(req.requested_by, "migration.created",
                                          f"{req.source} → {req.target} {req.mode} {options}", mid, req.channel))
        return m

    async def preflight(self, m: Migration) -> PreflightReport:
        """Run the checks `/pgmig check` runs; a blocking finding fails the migration at `preflight`."""
        await self._set_state(m.id, State.PREFLIGHT, "running pre-flight checks")
        source, target = self._servers(m)
        report = await run_preflight(PreflightRequest(
            source, target, databases=m.databases, mode=Mode(m.mode),
            replica_identity_full=bool(m.options.get("replica_identity_full"))))
        if report.blocking:
            problems = "; ".join(f"{f.scope}: {f.title} ({f.detail})" + (f" — fix: {f.fix}" if f.fix else "")
                                 for f in report.blocking)
            await self._save(m.id, "preflight", FAILED, problems)
            await self._set_state(m.id, State.FAILED, problems, error=f"preflight: {problems}")
            return report
        if not m.databases:
            await self.store.set_databases(m.id, report.databases)
        warnings = "; ".join(f"{f.title} ({f.detail})" for f in report.warnings)
        await self._save(m.id, "preflight", DONE, f"warnings: {warnings}" if warnings else "passed")
        return report

    def start(self, migration_id: str) -> asyncio.Task:
        task = asyncio.create_task(self._run(migration_id), name=f"migration {migration_id}")
        self._tasks[migration_id] = task
        return task

    async def _hold(self, migration_id: str) -> bool:
        """Claim the lease (new migrations, retries, pick-ups) and keep renewing it while this process lives."""
        stale = utcnow() - timedelta(seconds=self.config.lease_seconds)
        if not await self.store.claim(migration_id, self.instance, stale):
            return False
        if not self._leasing:
            self._leasing = True
            self.jobs.lease(max(0.2, self.config.lease_seconds / 4), self._renew_lease)
        return True

    async def _renew_lease(self) -> None:
        """A coroutine function, so that apscheduler awaits it on the loop (a lambda would not be awaited)."""
        try:
            await self.store.beat(self.instance)
        except Exception:
            log.exception("renewing the lease of %s failed", self.instance)

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
        return self._progress.setdefault(migration_id, MigrationProgress())

    async def retry(self, migration_id: str) -> bool:
        """Failed → run again from the failed step. False when it is not failed (or another click won)."""
        if not await self.store.transition(migration_id, State.CREATED, expect=(State.FAILED,)):
            return False
        self.start(migration_id)
        return True

    async def resume(self, migration_id: str) -> bool:
        """Paused after export → import whatever the export files now contain."""
        if not await self.store.transition(migration_id, State.IMPORTING, expect=(State.PAUSED,)):
            return False
        await self._save(migration_id, "review", DONE, "resumed")
        self.start(migration_id)
        return True

    async def cancel(self, migration_id: str, actor: str) -> list[str]:
        """Stop the work, drop target databases left half-imported, and mark the migration cancelled.

        Returns the databases dropped. Databases whose import finished are left in place.
        """
        task = self._tasks.get(migration_id)
        if task is not None:
            self._cancelling.add(migration_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._cancelling.discard(migration_id)
        m = await self.store.get_migration(migration_id)
        if m is None or m.state.finished:
            return []
        self.jobs.unwatch(migration_id)
        if m.mode == "online":
            return await self._cancel_online(m, actor)
        dropped: list[str] = []
        _, target = self._servers(m)
        for step in await self.store.steps(migration_id):
            if step.name.startswith("import:") and step.state != DONE:
                db = step.name.split(":", 1)[1]
                await target_db.drop(target, db)
                await self._save(migration_id, step.name, "dropped", "half-imported database dropped on cancel")
                dropped.append(db)
        await asyncio.to_thread(shutil.rmtree, self.config.workdir / migration_id, True)
        detail = f"cancelled by {actor}" + (f"; dropped half-imported {', '.join(dropped)}" if dropped else "")
        await self._set_state(migration_id, State.CANCELLED, detail)
        return dropped

    async def _cancel_online(self, m: Migration, actor: str) -> list[str]:
        """Drop subscription, slot and publication, undo REPLICA IDENTITY FULL: the source as it was."""
        source, target = self._servers(m)
        removed: list[str] = []
        for db in m.databases:
            job = OnlineDatabase(source, target, db, m.id, OfflineOptions(), self.config.workdir / m.id, Path("."),
                                 self.progress(m.id).of(db))
            removed += await job.teardown()
        identity = await self.store.step(m.id, "identity")
        for db, tables in (identity.data.get("tables", {}) if identity else {}).items():
            await reset_identity(source, db, tables)
        detail = (f"cancelled by {actor}; dropped {', '.join(removed) or 'no replication objects'}; "
                  "the target databases are left as they are")
        await self._set_state(m.id, State.CANCELLED, detail)
        return []

    async def verify(self, migration_id: str) -> list[VerifyResult]:
        m = await self.store.get_migration(migration_id)
        if m is None:
            raise MigrationError(f"no migration {migration_id}")
        source, target = self._servers(m)
        streaming = m.mode == "online" and m.state is not State.COMPLETED
        return [await verify_database(source, target, db, int(m.options.get("parallel", 2)), replicated_only=streaming)
                for db in m.databases]

    async def recover(self) -> list[str]:
        """At start-up, pick up what a previous process left: streaming migrations are watched again,
        interrupted online ones restart the interrupted step cleanly, interrupted offline ones are
        marked failed (resumable by retry). Returns the migrations acted on."""
        interrupted = []
        for m in await self.store.list_migrations(active_only=True):
            if m.id in self._tasks:
                continue
            if (m.state.running or m.state in MONITORED) and not await self._hold(m.id):
                continue  # another live replica runs it
            if m.mode == "online" and m.state in MONITORED:
                self.jobs.watch(m.id)
                interrupted.append(m.id)
            elif m.mode == "online" and m.state.running:
                await self.store.audit(AuditEntry("pgmig", "resumed", f"restarting {m.state.value} after a restart",
                                                  m.id))
                self.start(m.id)
                interrupted.append(m.id)
            elif m.state.running:
                reason = (f"{m.state.value}: interrupted — pgmig stopped while this step ran; "
                          f"`/pgmig retry {m.id}` continues from here")
                if await self.store.transition(m.id, State.FAILED, expect=(m.state,), error=reason):
                    interrupted.append(m.id)
                    await self._emit_state(m.id, reason)
        return interrupted

    def start_cutover(self, migration_id: str, actor: str) -> asyncio.Task:
        """Run the cutover as a tracked task (the approval click that triggers it must answer at once)."""
        task = asyncio.create_task(self._guarded_cutover(migration_id, actor), name=f"cutover {migration_id}")
        self._tasks[migration_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(migration_id, None))
        return task

    async def _guarded_cutover(self, migration_id: str, actor: str) -> None:
        try:
            await self.cutover(migration_id, actor, self.config.fence_grace_seconds,
                               self.config.catch_up_timeout_seconds)
        except Exception:
            log.exception("cutover of %s could not run", migration_id)

    async def reject_cutover(self, migration_id: str, actor: str) -> bool:
        if not await self.store.transition(migration_id, State.READY_FOR_CUTOVER, expect=(State.AWAITING_APPROVAL,),
                                           error=f"cutover rejected by {actor}"):
            return False
        await self.store.audit(AuditEntry(actor, "cutover.rejected", "", migration_id))
        await self._emit_state(migration_id, f"cutover rejected by {actor}; replication keeps running")
        return True

    async def expire_approval(self, migration_id: str) -> bool:
        if not await self.store.transition(migration_id, State.READY_FOR_CUTOVER, expect=(State.AWAITING_APPROVAL,),
                                           error="the cutover request expired"):
            return False
        await self.store.audit(AuditEntry("pgmig", "cutover.expired", "", migration_id))
        await self._emit_state(migration_id, "the cutover request expired without enough approvals; "
                                             "replication keeps running")
        return True

    async def cutover(self, migration_id: str, actor: str, grace_seconds: float = 5.0,
                      catch_up_timeout: float = 30.0) -> bool:
        """Switch a streaming migration to its target (cutover.py); on any failure fall back on every
        database and return to ready_for_cutover with the reason. True when completed."""
        if not await self.store.transition(migration_id, State.CUTTING_OVER,
                                           expect=(State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL)):
            m = await self._get(migration_id)
            raise MigrationError(f"{migration_id} is {m.state.value}; only a migration ready for cutover can cut over")
        m = await self._get(migration_id)
        await self.store.audit(AuditEntry(actor, "cutover.started", ", ".join(m.databases), m.id))
        await self._emit_state(m.id, f"cutting over {', '.join(m.databases)} (started by {actor})")
        source, target = self._servers(m)
        done: list[DatabaseCutover] = []
        parallel = int(m.options.get("parallel", 2))
        parked = {db: Parked.from_dict((await self.store.step(m.id, f"load:{db}")).data["parked"])
                  for db in m.databases}
        try:
            for db in m.databases:
                done.append(await cut_over(source, target, db, m.id, parked[db], grace_seconds, catch_up_timeout,
                                           parallel))
            await self._alert(m, "released", True, "🟢 target released: sequences synced, foreign keys and triggers "
                              "back, row counts equal — applications can switch now (writes were unavailable "
                              + ", ".join(f"{r.database} {r.window_seconds:.2f} s" for r in done)
                              + "). Checksums are being compared against the target as it was at this moment.")
            self._alerting.pop((m.id, "released"), None)
            for result in done:
                await check(source, target, result, parked[result.database], parallel)
                await self._save(m.id, f"cutover:{result.database}", DONE, ", ".join(
                    f"{k} {v:.3f} s" for k, v in result.timings.items()), {"timings": result.timings})
        except Exception as exc:
            for result in done:
                await fallback(source, target, result.fence, reinstated=True)
            reason = failure_reason(exc, m.id)
            await self.store.transition(m.id, State.READY_FOR_CUTOVER, error=f"cutover fell back: {reason}")
            await self.store.audit(AuditEntry("pgmig", "cutover.fallback", reason[:2000], m.id))
            await self._emit_state(m.id, f"cutover fell back: {reason}. The source is writable again and "
                                         "replication keeps running")
            await self._alert(m, "cutover", True, f"⚠️ cutover fell back, nothing was switched: {reason}")
            self._alerting.pop((m.id, "cutover"), None)
            return False
        for db in m.databases:
            await OnlineDatabase(source, target, db, m.id, OfflineOptions(), self.config.workdir / m.id, Path("."),
                                 self.progress(m.id).of(db)).teardown()
        lines = []
        for r in done:
            soft = f"; superusers only softly fenced: {', '.join(r.fence.superusers)}" if r.fence.superusers else ""
            lines.append(f"{r.database}: writes unavailable {r.window_seconds:.2f} s "
                         f"({', '.join(f'{k} {v:.2f} s' for k, v in r.timings.items())}); {r.verify.tables} tables, "
                         f"{r.verify.rows} rows and {r.sequences} sequences verified equal; "
                         f"{r.fence.ended_sessions} session(s) ended{soft}")
        await self.store.audit(AuditEntry("pgmig", "cutover.completed", "\n".join(lines)[:2000], m.id))
        await self._set_state(m.id, State.COMPLETED, "cutover complete: applications can move to the target.\n"
                              + "\n".join(lines))
        return True

    def schedule_digest(self) -> None:
        self.jobs.digest(self.config.digest, self.post_digest)

    async def post_digest(self) -> None:
        active = await self.store.list_migrations(active_only=True)
        if active:
            await self.events.digest(active, {m.id: self.progress(m.id) for m in active})

    async def close(self) -> None:
        """Stop cleanly: running work is interrupted (a restart picks it up) and leases are released."""
        self.jobs.shutdown()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.store.release(self.instance)

    # ---- the pipeline ------------------------------------------------------------------------

    def _servers(self, m: Migration) -> tuple[ServerConfig, ServerConfig]:
        missing = [n for n in (m.source, m.target) if n not in self.servers]
        if missing:
            raise MigrationError(f"server {', '.join(missing)} is no longer configured",
                                 "restore its [servers.NAME] entry and retry")
        return self.servers[m.source], self.servers[m.target]

    async def _run(self, migration_id: str) -> None:
        if not await self._hold(migration_id):
            log.warning("%s is held by another pgmig process; not running it here", migration_id)
            self._tasks.pop(migration_id, None)
            return
        self.jobs.watch(migration_id)
        try:
            await self._pipeline(migration_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if migration_id not in self._cancelling:  # errors of work being torn down are not failures
                await self._fail(migration_id, failure_reason(exc, migration_id))
        finally:
            self._tasks.pop(migration_id, None)
            m = await self.store.get_migration(migration_id)
            if m is None or m.state not in MONITORED:  # streaming migrations stay under watch
                self.jobs.unwatch(migration_id)

    async def _pipeline(self, mid: str) -> None:
        m = await self._get(mid)
        steps = {s.name: s for s in await self.store.steps(mid)}

        def done(name: str) -> bool:
            return name in steps and steps[name].state == DONE

        if not done("preflight"):
            if (await self.preflight(m)).blocking:
                return
            m = await self._get(mid)
        source, target = self._servers(m)
        options = OfflineOptions(method=m.options["method"], parallel=int(m.options["parallel"]),
                                 overwrite=bool(m.options["overwrite"]),
                                 pause_after_export=bool(m.options["pause_after_export"]),
                                 pg_bindir=self.config.pg_bindir)
        bindir = await choose_bindir(source, target, options.pg_bindir)
        progress = self.progress(mid)
        workdir = self.config.workdir / mid

        def job(db: str) -> OfflineDatabase:
            return OfflineDatabase(source, target, db, options, workdir, bindir, progress.of(db))

        if done("roles"):
            roles = RolePlan(**steps["roles"].data)
        else:
            roles = await copy_roles(source, target, m.databases)
            await self._save(mid, "roles", DONE, roles.describe(), asdict(roles))

        if m.mode == "online":
            def online_job(db: str) -> OnlineDatabase:
                return OnlineDatabase(source, target, db, mid, options, workdir, bindir, progress.of(db))
            await self._online(m, steps, online_job, roles)
            return

        exports = [db for db in m.databases if not done(f"export:{db}")]
        for db in m.databases:
            if db not in exports:
                progress.of(db).finish("exported")
        if exports:
            await self._set_state(mid, State.EXPORTING, f"exporting {', '.join(exports)} ({options.method})")
        for db in exports:
            await self._save(mid, f"export:{db}", RUNNING, "")
            files = await job(db).export(roles)
            digests = {str(f): await asyncio.to_thread(file_digest, f) for f in files}  # GBs: off the loop
            await self._save(mid, f"export:{db}", DONE, ", ".join(str(f) for f in files), {"files": digests})
        steps = {s.name: s for s in await self.store.steps(mid)}

        if options.pause_after_export and not done("review"):
            files = [f for db in m.databases for f in steps[f"export:{db}"].data["files"]]
            await self._save(mid, "review", WAITING, "\n".join(files))
            await self._set_state(mid, State.PAUSED, "export files ready to review and edit:\n" + "\n".join(files) +
                                  f"\n`/pgmig resume {mid}` imports whatever they then contain")
            return

        edited = sorted([f for db in m.databases for f, digest in steps[f"export:{db}"].data["files"].items()
                         if Path(f).exists() and await asyncio.to_thread(file_digest, Path(f)) != digest])
        imports = [db for db in m.databases if not done(f"import:{db}")]
        for db in m.databases:
            if db not in imports:
                progress.of(db).finish("imported")
        if imports:
            note = f"; edited after export: {', '.join(edited)}" if edited else ""
            await self._set_state(mid, State.IMPORTING, f"importing {', '.join(imports)}{note}")
        for db in imports:
            claimed = f"import:{db}" in steps  # an earlier attempt created or emptied it: ours to replace
            await self._save(mid, f"import:{db}", RUNNING, "")
            summary = await job(db).import_(roles, claimed)
            await self._save(mid, f"import:{db}", DONE, summary)

        await self._set_state(mid, State.VERIFYING, f"verifying {', '.join(m.databases)}")
        results = []
        for db in m.databases:
            progress.of(db).begin("verifying")
            result = await verify_database(source, target, db, options.parallel)
            progress.of(db).finish("verified" if result.ok else "mismatch")
            await self._save(mid, f"verify:{db}", DONE if result.ok else FAILED,
                             f"{result.tables} tables, {result.rows} rows, {result.sequences} sequences, "
                             f"{len(result.mismatches)} mismatch(es)", asdict(result))
            results.append(result)
        lines = mismatch_lines(results)
        shown = "\n".join(lines[:MAX_LISTED_MISMATCHES]) + (
            f"\n… and {len(lines) - MAX_LISTED_MISMATCHES} more" if len(lines) > MAX_LISTED_MISMATCHES else "")
        if lines and not edited:
            raise MigrationError(f"verification found {len(lines)} mismatch(es):\n{shown}",
                                 f"`/pgmig retry {mid}` re-verifies; `/pgmig verify {mid}` shows them again")
        rows = sum(r.rows for r in results)
        detail = (f"{len(m.databases)} database(s), {sum(r.tables for r in results)} tables, {rows} rows and "
                  f"{sum(r.sequences for r in results)} sequences verified equal")
        if lines:
            detail = (f"completed; {len(lines)} difference(s) from the source, expected because export files "
                      f"were edited ({', '.join(edited)}):\n{shown}")
        if options.method == "restore":
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        await self._set_state(mid, State.COMPLETED, detail)

    async def _online(self, m: Migration, steps: dict[str, Step], job, roles: RolePlan) -> None:
        """schema → full_load → catching_up; the scheduled tick takes it to ready_for_cutover."""
        mid = m.id
        source = self.servers[m.source]

        def done(name: str) -> bool:
            return name in steps and steps[name].state == DONE

        if m.options.get("replica_identity_full") and not done("identity"):
            changed = {db: await set_identity_full(source, db) for db in m.databases}
            listed = "; ".join(f"{db}: {', '.join(t)}" for db, t in changed.items() if t)
            await self._save(mid, "identity", DONE, f"REPLICA IDENTITY FULL set on the source for {listed}"
                             if listed else "every table already had a replica identity", {"tables": changed})
        schemas = [db for db in m.databases if not done(f"schema:{db}")]
        if schemas:
            await self._set_state(mid, State.SCHEMA, f"schema of {', '.join(schemas)}")
        for db in schemas:
            await self._online_schema(mid, db, job(db), roles, claimed=f"schema:{db}" in steps)
        loads = [db for db in m.databases if not done(f"load:{db}")]
        if loads:
            await self._set_state(mid, State.FULL_LOAD, f"full load of {', '.join(loads)} under a slot's snapshot")
        for db in loads:
            if f"load:{db}" in steps:  # an earlier attempt stopped mid-load: start this database afresh
                await job(db).teardown()
                await self._online_schema(mid, db, job(db), roles, claimed=True)
            await self._save(mid, f"load:{db}", RUNNING, "")
            data = await job(db).full_load(roles)
            parked = data["parked"]
            await self._save(mid, f"load:{db}", DONE,
                             f"{data['published_tables']} tables published and copied; "
                             f"{len(parked['foreign_keys'])} foreign keys dropped and "
                             f"{sum(t['enabled'] != 'D' for t in parked['triggers'])} triggers disabled on the "
                             f"target until cutover; streaming from {data['consistent_lsn']}", data)
        await self._set_state(mid, State.CATCHING_UP, "full load done; the target now follows every change "
                                                      "on the source")

    async def _online_schema(self, mid: str, db: str, job, roles: RolePlan, claimed: bool) -> None:
        await self._save(mid, f"schema:{db}", RUNNING, "")
        detail = await job.schema(roles, claimed)
        await self._save(mid, f"schema:{db}", DONE, detail, {"schema_sql": str(job.schema_sql)})

    async def _monitor(self, m: Migration) -> None:
        """Lag and slot retention per database; ready for cutover, alerts on trouble and on recovery."""
        source = self.servers[m.source]
        progress = self.progress(m.id)
        lags: dict[str, replication.Lag] = {}
        for db in m.databases:
            conn = await source.connect(db)
            try:
                lags[db] = await replication.lag(conn, replication.object_name(m.id, db))
            finally:
                await conn.close()
            p = progress.of(db)
            p.phase = "streaming" if lags[db].streaming else "not streaming"
            p.lag_bytes, p.lag_seconds, p.retained_bytes = lags[db].bytes, lags[db].seconds, lags[db].retained_bytes
        c = self.config
        held = {db: x.retained_bytes for db, x in lags.items() if (x.retained_bytes or 0) > c.wal_retention_alert_bytes}
        await self._alert(m, "wal", bool(held), "⚠️ replication slots hold WAL on the source: " + ", ".join(
            f"{db} {pretty_bytes(b or 0)}" for db, b in held.items()) + f" (limit {pretty_bytes(c.wal_retention_alert_bytes)})"
            " — the source's disk fills if this goes on; check the target is applying, or cancel")
        behind = {db: x for db, x in lags.items()
                  if (x.bytes or 0) > c.lag_alert_bytes or (x.seconds or 0) > c.lag_alert_seconds}
        await self._alert(m, "lag", bool(behind), "⚠️ replication lag above the alert threshold: " + ", ".join(
            f"{db} {pretty_bytes(x.bytes or 0)} / {x.seconds or 0:.1f} s" for db, x in behind.items()))
        stopped = [db for db, x in lags.items() if not x.streaming]
        await self._alert(m, "stream", bool(stopped), f"⚠️ not streaming: {', '.join(stopped)} — the target's "
                          "subscription is not connected; check its server log and pg_stat_subscription")
        ready = all(x.streaming and (x.bytes or 0) <= c.ready_lag_bytes and (x.seconds or 0) <= c.ready_lag_seconds
                    for x in lags.values())
        if m.state is State.CATCHING_UP and ready and \
                await self.store.transition(m.id, State.READY_FOR_CUTOVER, expect=(State.CATCHING_UP,)):
            worst = max(lags.values(), key=lambda x: x.bytes or 0)
            detail = (f"ready for cutover: lag {worst.seconds or 0:.1f} s, {pretty_bytes(worst.bytes or 0)} behind. "
                      f"Syncing continues; `/pgmig cutover {m.id}` when the team is ready")
            await self.store.audit(AuditEntry("pgmig", "state", f"ready_for_cutover: {detail}", m.id))
            await self._emit_state(m.id, detail)

    async def _alert(self, m: Migration, kind: str, raised: bool, text: str) -> None:
        """Post when a condition starts, and once more when it clears: never every tick."""
        key = (m.id, kind)
        if raised == self._alerting.get(key, False):
            return
        self._alerting[key] = raised
        message = text if raised else f"✅ back to normal: {kind} ({m.id})"
        await self.store.audit(AuditEntry("pgmig", f"alert.{kind}", message[:2000], m.id))
        try:
            await self.events.alert(m, self.progress(m.id), message)
        except Exception:
            log.exception("posting the %s alert of %s failed", kind, m.id)

    # ---- bookkeeping -------------------------------------------------------------------------

    async def _get(self, mid: str) -> Migration:
        m = await self.store.get_migration(mid)
        if m is None:
            raise MigrationError(f"no migration {mid}")
        return m

    async def _save(self, mid: str, name: str, state: str, detail: str, data: dict | None = None) -> None:
        existing = await self.store.step(mid, name)
        started = existing.started_at if existing and existing.started_at else utcnow()
        finished = utcnow() if state != RUNNING else None
        await self.store.save_step(Step(mid, name, state, detail, started, finished, data or {}))

    async def _set_state(self, mid: str, state: State, detail: str, error: str = "") -> None:
        await self.store.transition(mid, state, error=error)
        await self.store.audit(AuditEntry("pgmig", "state", f"{state.value}: {detail}"[:2000], mid))
        await self._emit_state(mid, detail)

    async def _emit_state(self, mid: str, detail: str) -> None:
        try:
            await self.events.state_changed(await self._get(mid), self.progress(mid), detail)
        except Exception:  # telling the channel must never break the migration itself
            log.exception("publishing the state of %s failed", mid)

    async def _fail(self, mid: str, message: str) -> None:
        m = await self._get(mid)
        step = m.state.value if m.state.running else "run"
        await self._set_state(mid, State.FAILED, message, error=f"{step}: {message}")

    async def _tick(self, mid: str) -> None:
        m = await self.store.get_migration(mid)
        if m is None or m.state.finished:
            self.jobs.unwatch(mid)
            return
        if m.mode == "online" and m.state in MONITORED:
            await self._monitor(m)
            m = await self._get(mid)
        if m.state is State.AWAITING_APPROVAL:
            request = await self.store.step(mid, "approval")
            if request and datetime.fromisoformat(request.data["expires_at"]) < utcnow():
                await self.expire_approval(mid)
                m = await self._get(mid)
        await self.events.progress(m, self.progress(mid))
