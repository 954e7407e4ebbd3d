"""The migration lifecycle: create, run, retry, resume, cancel, recover after a restart, approvals and
the cutover entry point. The pipelines themselves live in offline_flow.py, online_flow.py,
cutover_flow.py and monitor.py; every flow records its steps through the Ledger.

Offline: created → preflight → exporting → [paused] → importing → verifying → completed, or failed /
cancelled. Online: created → preflight → schema → full_load → catching_up → ready_for_cutover →
awaiting_approval → cutting_over → completed. Every step is a row in the store; a retry skips the
steps already done, so finished databases are not redone.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from migration_core import target_db
from migration_core.azure.backend import ManagedBackend
from migration_core.cutover_flow import run_cutover
from migration_core.engine_config import EngineConfig, MigrationRequest
from migration_core.errors import MigrationError
from migration_core.events import MigrationEvents
from migration_core.failures import failure_reason
from migration_core.flow import Flow
from migration_core.jobs import ProgressJobs
from migration_core.ledger import DONE, FAILED, Alerts, Ledger
from migration_core.managed_flow import ManagedCutover, cancel_managed, run_managed, watch_managed
from migration_core.models import AuditEntry, Migration, State, utcnow
from migration_core.monitor import watch_native
from migration_core.offline import OfflineOptions, choose_bindir
from migration_core.offline_flow import run_offline
from migration_core.online_flow import cancel_online, run_online
from migration_core.preflight import Mode, PreflightReport, PreflightRequest, run_preflight
from migration_core.progress import MigrationProgress
from migration_core.roles import RolePlan, copy_roles
from migration_core.servers import ServerConfig
from migration_core.store import Store
from migration_core.verify import VerifyResult, verify_database

__all__ = ["Engine", "EngineConfig", "MigrationRequest"]
log = logging.getLogger(__name__)
MONITORED = (State.CATCHING_UP, State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL)


class Engine:
    def __init__(self, store: Store, servers: dict[str, ServerConfig], events: MigrationEvents,
                 config: EngineConfig, backends: dict[str, ManagedBackend] | None = None) -> None:
        self.store, self.servers, self.events, self.config = store, servers, events, config
        self.backends = backends or {}
        self.ledger = Ledger(store, events)
        self.alerts = Alerts(self.ledger)
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._cancelling: set[str] = set()
        self.jobs = ProgressJobs(config.progress_interval, self._tick)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leasing = False

    # ---- what handlers call -------------------------------------------------------------------

    async def create(self, req: MigrationRequest) -> Migration:
        mid = await self.store.next_migration_id()
        options = {"method": req.method, "parallel": req.parallel or self.config.default_parallel,
                   "overwrite": req.overwrite, "pause_after_export": req.pause_after_export,
                   "replica_identity_full": req.replica_identity_full, "databases_given": bool(req.databases),
                   "backend": req.backend}
        m = Migration(id=mid, source=req.source, target=req.target, databases=list(req.databases), mode=req.mode,
                      state=State.CREATED, requested_by=req.requested_by, channel=req.channel, options=options)
        await self.store.create_migration(m)
        await self.store.audit(AuditEntry(req.requested_by, "migration.created",
                                          f"{req.source} → {req.target} {req.mode} {options}", mid, req.channel))
        return m

    async def preflight(self, m: Migration) -> PreflightReport:
        """Run the checks `/pgmig check` runs; a blocking finding fails the migration at `preflight`."""
        await self.ledger.set_state(m.id, State.PREFLIGHT, "running pre-flight checks")
        source, target = self._servers(m)
        report = await run_preflight(PreflightRequest(
            source, target, databases=m.databases, mode=Mode(m.mode),
            replica_identity_full=bool(m.options.get("replica_identity_full"))))
        if report.blocking:
            problems = "; ".join(f"{f.scope}: {f.title} ({f.detail})" + (f" — fix: {f.fix}" if f.fix else "")
                                 for f in report.blocking)
            await self.ledger.save(m.id, "preflight", FAILED, problems)
            await self.ledger.set_state(m.id, State.FAILED, problems, error=f"preflight: {problems}")
            return report
        if not m.databases:
            await self.store.set_databases(m.id, report.databases)
        warnings = "; ".join(f"{f.title} ({f.detail})" for f in report.warnings)
        await self.ledger.save(m.id, "preflight", DONE, f"warnings: {warnings}" if warnings else "passed")
        return report

    def start(self, migration_id: str) -> asyncio.Task:
        task = asyncio.create_task(self._run(migration_id), name=f"migration {migration_id}")
        self._tasks[migration_id] = task
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

    async def wait_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

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
        await self.ledger.save(migration_id, "review", DONE, "resumed")
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
        source, target = self._servers(m)
        if backend := self._backend(m):
            await cancel_managed(self.ledger, m, backend, source, actor)
            return []
        if m.mode == "online":
            await cancel_online(self.ledger, m, source, target, self.config.workdir / m.id, actor)
            return []
        dropped: list[str] = []
        for step in await self.store.steps(migration_id):
            if step.name.startswith("import:") and step.state != DONE:
                db = step.name.split(":", 1)[1]
                await target_db.drop(target, db)
                await self.ledger.save(migration_id, step.name, "dropped", "half-imported database dropped on cancel")
                dropped.append(db)
        await asyncio.to_thread(shutil.rmtree, self.config.workdir / migration_id, True)
        detail = f"cancelled by {actor}" + (f"; dropped half-imported {', '.join(dropped)}" if dropped else "")
        await self.ledger.set_state(migration_id, State.CANCELLED, detail)
        return dropped

    async def verify(self, migration_id: str) -> list[VerifyResult]:
        m = await self.ledger.get(migration_id)
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
            elif (m.mode == "online" or self._backend(m)) and m.state.running:
                await self.store.audit(AuditEntry("pgmig", "resumed", f"restarting {m.state.value} after a restart",
                                                  m.id))
                self.start(m.id)
                interrupted.append(m.id)
            elif m.state.running:
                reason = (f"{m.state.value}: interrupted — pgmig stopped while this step ran; "
                          f"`/pgmig retry {m.id}` continues from here")
                if await self.store.transition(m.id, State.FAILED, expect=(m.state,), error=reason):
                    interrupted.append(m.id)
                    await self.ledger.emit_state(m.id, reason)
        return interrupted

    # ---- approvals and cutover ----------------------------------------------------------------

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
        await self.ledger.emit_state(migration_id, f"cutover rejected by {actor}; replication keeps running")
        return True

    async def expire_approval(self, migration_id: str) -> bool:
        if not await self.store.transition(migration_id, State.READY_FOR_CUTOVER, expect=(State.AWAITING_APPROVAL,),
                                           error="the cutover request expired"):
            return False
        await self.store.audit(AuditEntry("pgmig", "cutover.expired", "", migration_id))
        await self.ledger.emit_state(migration_id, "the cutover request expired without enough approvals; "
                                                   "replication keeps running")
        return True

    async def cutover(self, migration_id: str, actor: str, grace_seconds: float = 5.0,
                      catch_up_timeout: float = 30.0) -> bool:
        """Switch a streaming migration to its target (cutover_flow.py); True when completed."""
        m = await self.ledger.get(migration_id)
        source, target = self._servers(m)
        backend = self._backend(m)
        managed = ManagedCutover(self.ledger, backend, source, self.config.managed_poll_seconds) if backend else None
        return await run_cutover(self.ledger, self.alerts, self.config, migration_id, actor, source, target,
                                 grace_seconds, catch_up_timeout, managed)

    def schedule_digest(self) -> None:
        self.jobs.digest(self.config.digest, self.post_digest)

    async def post_digest(self) -> None:
        active = await self.store.list_migrations(active_only=True)
        if active:
            await self.events.digest(active, {m.id: self.progress(m.id) for m in active})

    async def close(self) -> None:
        """Stop cleanly: running work is interrupted (a restart picks it up) and leases are released."""
        self.jobs.shutdown()
        for task in [*self._tasks.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), *self._background, return_exceptions=True)
        await self.store.release(self.instance)

    # ---- running ------------------------------------------------------------------------------

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
        except asyncio.CancelledError:  # shutting down: the lease is released by close()
            return
        except Exception:
            log.exception("renewing the lease of %s failed", self.instance)

    def _servers(self, m: Migration) -> tuple[ServerConfig, ServerConfig]:
        missing = [n for n in (m.source, m.target) if n not in self.servers]
        if missing:
            raise MigrationError(f"server {', '.join(missing)} is no longer configured",
                                 "restore its [servers.NAME] entry and retry")
        return self.servers[m.source], self.servers[m.target]

    def _backend(self, m: Migration) -> ManagedBackend | None:
        """The Azure service that moves this migration's data; None for pgmig's own engine."""
        name = m.options.get("backend", "native")
        if name == "native":
            return None
        if name not in self.backends:
            raise MigrationError(f"{m.id} runs on the {name} backend, but Azure is not configured in this pgmig",
                                 "set AZURE_SUBSCRIPTION_ID (or [azure] subscription_id) and restart")
        return self.backends[name]

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
                await self.ledger.fail(migration_id, failure_reason(exc, migration_id))
        finally:
            self._tasks.pop(migration_id, None)
            m = await self.store.get_migration(migration_id)
            if m is None or m.state not in MONITORED:  # streaming migrations stay under watch
                self.jobs.unwatch(migration_id)

    async def _pipeline(self, mid: str) -> None:
        """Pre-flight and roles, then the flow the migration's mode asks for."""
        m = await self.ledger.get(mid)
        steps = await self.ledger.steps(mid)
        if not (steps.get("preflight") and steps["preflight"].state == DONE):
            if (await self.preflight(m)).blocking:
                return
            m = await self.ledger.get(mid)
        source, target = self._servers(m)
        options = OfflineOptions(method=m.options["method"], parallel=int(m.options["parallel"]),
                                 overwrite=bool(m.options["overwrite"]),
                                 pause_after_export=bool(m.options["pause_after_export"]),
                                 pg_bindir=self.config.pg_bindir)
        bindir = await choose_bindir(source, target, options.pg_bindir)
        if steps.get("roles") and steps["roles"].state == DONE:
            roles = RolePlan(**steps["roles"].data)
        else:
            roles = await copy_roles(source, target, m.databases)
            await self.ledger.save(mid, "roles", DONE, roles.describe(), asdict(roles))
        flow = Flow(self.ledger, m, await self.ledger.steps(mid), source, target, options, bindir,
                    self.config.workdir / mid, roles)
        if backend := self._backend(m):
            await run_managed(flow, backend, self.config.managed_poll_seconds)
        else:
            await (run_online(flow) if m.mode == "online" else run_offline(flow))

    async def _tick(self, mid: str) -> None:
        m = await self.store.get_migration(mid)
        if m is None or m.state.finished:
            self.jobs.unwatch(mid)
            return
        if m.state in MONITORED and (backend := self._backend(m)):
            await watch_managed(self.ledger, self.alerts, self.config, backend, m)
            m = await self.ledger.get(mid)
        elif m.mode == "online" and m.state in MONITORED:
            await watch_native(self.ledger, self.alerts, self.config, m, self._servers(m)[0])
            m = await self.ledger.get(mid)
        if m.state is State.AWAITING_APPROVAL:
            request = await self.store.step(mid, "approval")
            if request and datetime.fromisoformat(request.data["expires_at"]) < utcnow():
                await self.expire_approval(mid)
                m = await self.ledger.get(mid)
        await self.events.progress(m, self.progress(mid))
