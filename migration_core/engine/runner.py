"""Running migrations in this process, apart from the lifecycle that decides when: one tracked task per
migration (its pipeline: pre-flight, roles, then the flow its mode asks for), other long work in the
background, and the scheduled look at each watched migration (replication, an expired approval, the
live message, servers that stopped answering)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from migration_core.changes.roles import RolePlan, copy_roles
from migration_core.flows.managed import run_managed, watch_managed
from migration_core.flows.offline import run_offline
from migration_core.flows.online import run_online
from migration_core.flows.steps.offline import choose_bindir
from migration_core.observe import charts
from migration_core.observe.monitor import servers_unreachable, watch_native
from migration_core.observe.progress import MigrationProgress
from migration_core.pg import workdir
from migration_core.pg.kept import KeptSessions
from migration_core.pg.servers import ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.failures import (
    expected,
    failure_reason,
    failure_retry,
    first_cause,
    session_ended,
    unreachable,
)
from migration_core.state.ledger import DONE, FAILED, RUNNING
from migration_core.state.lifecycle import Superseded
from migration_core.state.models import Backend, Migration, Mode, State, StepKind, utcnow
from migration_core.store import LeaseLost

if TYPE_CHECKING:
    from migration_core.engine.api import Engine

log = logging.getLogger(__name__)
MONITORED = (State.CATCHING_UP, State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL)


class Runner:
    """The tasks working on migrations here, and the scheduled look at the ones being watched."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._cancelling: set[str] = set()
        self._tick_failures: dict[str, str] = {}  # migration → why its last scheduled look failed
        self._ticks: dict[str, asyncio.Task] = {}  # migration → its scheduled look in flight (stop ends it too)
        self._kept: dict[str, KeptSessions] = {}  # migration → the sessions its looks keep (pg/kept.py)

    def kept(self, migration_id: str) -> KeptSessions | None:
        """The sessions this migration's looks keep here, until it is no longer watched or stopped here. None
        for a migration this process does not watch (a finished one, one another replica runs, a cancel's
        teardown): nothing would ever close them, so its questions get sessions of their own."""
        if not self.engine.scheduler.watching(migration_id):
            return None
        return self._kept.setdefault(migration_id, KeptSessions())

    async def _unwatch(self, migration_id: str) -> None:
        self.engine.scheduler.unwatch(migration_id)
        await self._forget(migration_id)

    async def _forget(self, migration_id: str) -> None:
        kept = self._kept.pop(migration_id, None)
        if kept is not None:
            await kept.close()

    def start(self, migration_id: str) -> asyncio.Task:
        """Run the migration here. A resume or retry moves the state as soon as the pause or failure is
        visible, which is before the task that paused or failed it has ended (its last bookkeeping): the new
        run waits for that task instead of being refused with the migration already moved and nothing
        running it."""
        return self.after(migration_id, self._run(migration_id), f"migration {migration_id}")

    def track(self, migration_id: str, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
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

    def after(self, migration_id: str, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Like `track`, for work that must not be refused because the task working on the migration here is
        still ending (a recovery that fell back a cutover and is still telling the channel, when the team's
        next decision starts a new one): it waits for that task, then runs, and is the one tracked."""
        previous = self._tasks.pop(migration_id, None)
        if previous is None or previous.done():
            return self.track(migration_id, coro, name)

        async def chained() -> Any:
            await asyncio.gather(previous, return_exceptions=True)
            return await coro

        return self.track(migration_id, chained(), name)

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

    async def stop(self, migration_id: str) -> None:
        """Interrupt the migration's task here (a cancel, a lease another process took) and wait for it to
        end: what it raises while being torn down is no failure of the migration."""
        task = self._tasks.get(migration_id)
        if task is not None:
            self._cancelling.add(migration_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._cancelling.discard(migration_id)
        tick = self._ticks.get(migration_id)
        if tick is not None and tick is not asyncio.current_task():
            # a look already past its "still streaming?" check would make pgmig's objects again behind a cancel
            tick.cancel()
            await asyncio.gather(tick, return_exceptions=True)
        await self._forget(migration_id)

    async def stop_all(self) -> None:
        """Interrupt every task here, the background ones too, and wait for them to end (closing)."""
        running = [*self._tasks.values(), *self._background, *self._ticks.values()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for migration_id in list(self._kept):
            await self._forget(migration_id)

    def progress(self, migration_id: str) -> MigrationProgress:
        return self.engine.ledger.progress(migration_id)

    async def tidied(self, migration_id: str, work: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await work
        finally:
            await self.tidy(migration_id)

    async def tidy(self, migration_id: str) -> None:
        """Export files are removed once a migration completed or was cancelled (unless keep_exports):
        a failed or paused one still needs them."""
        engine = self.engine
        m = await engine.store.get_migration(migration_id)
        if m is not None and m.state in (State.COMPLETED, State.CANCELLED) and not engine.config.keep_exports:
            await asyncio.to_thread(workdir.remove, engine.config.workdir / migration_id)

    async def _run(self, migration_id: str) -> None:
        engine = self.engine
        if not await engine.leases.hold(migration_id):
            log.warning("%s is held by another pgmig process; not running it here", migration_id)
            return
        engine.scheduler.watch(migration_id)
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
            m = await engine.store.get_migration(migration_id)
            if m is None or m.state not in MONITORED:  # streaming migrations stay under watch
                await self._unwatch(migration_id)
            await self.tidy(migration_id)

    async def _failed(self, mid: str, exc: Exception) -> None:
        """The migration fails with a cause a person can act on (the traceback only in the log, at debug
        level), and the steps it was running are saved failed with it: `status` must not show them running."""
        ledger = self.engine.ledger
        m = await ledger.get(mid)
        reason = failure_reason(exc, mid, self._sides(m))
        log.warning("%s failed: %s", mid, reason)
        if not m.state.finished:  # before the move: whoever sees the migration failed sees its steps failed
            for step in (await ledger.steps(mid)).values():
                if step.state == RUNNING:
                    await ledger.save(mid, step.name, FAILED, reason, step.data)
        await ledger.fail(mid, reason, failure_retry(exc))

    async def _pipeline(self, mid: str) -> None:
        """Pre-flight and roles, then the flow the migration's mode asks for."""
        engine = self.engine
        m = await engine.ledger.get(mid)
        steps = await engine.ledger.steps(mid)
        if not (steps.get(StepKind.PREFLIGHT) and steps[StepKind.PREFLIGHT].state == DONE):
            if (await engine.preflight(m)).blocking:
                return
            m = await engine.ledger.get(mid)
        ctx = engine.context(m)
        ctx.bindir = await choose_bindir(ctx.source, ctx.target, engine.config.pg_bindir)
        if steps.get(StepKind.ROLES) and steps[StepKind.ROLES].state == DONE:
            ctx.roles = RolePlan(**steps[StepKind.ROLES].data)
        else:
            ctx.roles = await copy_roles(ctx.source, ctx.target, m.databases, ctx.journal)
            await engine.ledger.save(mid, StepKind.ROLES, DONE, ctx.roles.describe(), asdict(ctx.roles))
        await ctx.reload()
        if ctx.backend is not None:
            await run_managed(ctx)
        else:
            await (run_online(ctx) if m.mode is Mode.ONLINE else run_offline(ctx))

    async def tick(self, mid: str) -> None:
        """One scheduled look at a migration: its replication watched, an expired approval closed, the live
        message refreshed. A look that fails says so where people look — logged once per cause (not a
        traceback every tick), and, when the servers do not answer, an alert raised once and cleared once
        they answer again, with the live message saying they are unreachable instead of `streaming`."""
        engine = self.engine
        m = await engine.store.get_migration(mid)
        if m is None or m.state.finished:
            await self._unwatch(mid)
            return
        this = asyncio.current_task()
        assert this is not None
        self._ticks[mid] = this
        try:
            await self._tick(m)
        finally:
            if self._ticks.get(mid) is this:
                del self._ticks[mid]

    async def _tick(self, m: Migration) -> None:
        engine, mid = self.engine, m.id
        for again in (True, False):
            try:
                m = await self._look(m)
            except Exception as exc:
                if again and session_ended(exc):
                    log.debug("%s: a session was ended under the look; looking again", mid, exc_info=exc)
                    continue  # it is closed, kept ones are pinged when borrowed: new logins where needed
                await self._look_failed(m, exc)
            else:
                if self._tick_failures.pop(mid, None) is not None:
                    log.info("%s: the servers answer again", mid)
                await engine.alerts.alert(m, "unreachable", False, "")
            break
        await engine.store.add_samples(mid, charts.samples(self.progress(mid), utcnow()))  # what the charts draw
        await engine.events.progress(m, self.progress(mid))

    def _sides(self, m: Migration) -> dict[str, ServerConfig]:
        """The migration's configured servers by role, for failure_reason to say which one did not answer."""
        named = (("source", m.source), ("target", m.target))
        return {role: self.engine.servers[name] for role, name in named if name in self.engine.servers}

    async def _look(self, m: Migration) -> Migration:
        engine = self.engine
        if m.state in MONITORED and (m.mode is Mode.ONLINE or m.options.backend is not Backend.NATIVE):
            ctx = engine.context(m)
            await (watch_native(ctx) if ctx.backend is None else watch_managed(ctx))
            m = await engine.ledger.get(m.id)
        if m.state is State.AWAITING_APPROVAL:
            request = await engine.cutover_request(m.id)
            if request and request.expired:
                await engine.expire_approval(m.id)
                m = await engine.ledger.get(m.id)
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
        await self.engine.alerts.alert(
            m,
            "unreachable",
            True,
            f"⚠️ servers unreachable: {reason}. pgmig cannot watch {m.id} meanwhile (replication itself may go on); "
            "this clears when they answer again",
        )
