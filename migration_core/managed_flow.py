"""A migration whose data a managed Azure service moves (`--backend flex|dms`), with pgmig around it:

start → the service copies (and, online, streams) while pgmig polls it into the same states, live
message and alerts as a native migration → ready for cutover → pgmig's cutover fences the source, waits
for the service's slots, triggers the service's cutover, then syncs sequences, reinstates foreign keys
and triggers and verifies (the services do none of that). Offline: the service's copy is verified.
DMS classic moves data only, so pgmig first builds the target schema with FKs and triggers parked.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace

from migration_core import sequences
from migration_core.azure.backend import BackendStatus, ManagedBackend, Phase
from migration_core.constraints import Parked
from migration_core.cutover import CatchUp, wait_caught_up
from migration_core.engine_config import EngineConfig
from migration_core.errors import MigrationError
from migration_core.flow import Flow
from migration_core.journal import SOURCE, Change
from migration_core.ledger import DONE, FAILED, Alerts, Ledger
from migration_core.models import Migration, State, StepKind
from migration_core.monitor import mark_ready
from migration_core.offline_flow import verify_and_complete
from migration_core.online_flow import ensure_identity, online_job, schema_step, schema_steps
from migration_core.progress import MigrationProgress
from migration_core.servers import ServerConfig, column_per_database

BACKEND_STEP = StepKind.BACKEND
UNREAD_TOLERATED = 10  # consecutive status reads that may fail (after the SDK's own retries) before giving up


async def logical_slots(source: ServerConfig, databases: list[str]) -> dict[str, list[str]]:
    """The slots already there before the service starts: at cutover, only the service's are waited for."""
    return await column_per_database(
        source, databases, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")


def show(progress: MigrationProgress, backend: ManagedBackend, status: BackendStatus) -> None:
    """The service's per-database view into pgmig's progress (what the live message renders)."""
    for db, d in status.databases.items():
        p = progress.of(db)
        p.phase = f"{backend.label}: {d.describe() or status.detail}"
        p.tables_done, p.tables_total = d.tables_done, d.tables_total
        p.lag_seconds = d.latency_seconds
        if p.started_at is None:
            p.begin(p.phase)
            p.tables_done, p.tables_total = d.tables_done, d.tables_total


def _failure(backend: ManagedBackend, status: BackendStatus) -> MigrationError:
    return MigrationError(f"{backend.label} reports the migration {status.phase.value}: "
                          f"{status.error or status.detail}",
                          "look at the migration in the Azure portal; `/pgmig retry` starts a fresh one")


async def prepare_schema(flow: Flow, fresh: bool) -> None:
    """DMS classic copies rows only: the schema first, indexes built, FKs dropped and triggers disabled.
    `fresh`: a retry after the service failed — the target databases are this migration's to rebuild."""
    if fresh:
        for db in flow.m.databases:
            await schema_step(flow, db)
    else:
        await schema_steps(flow)
    for db in flow.m.databases:
        if fresh or not flow.done(StepKind.PREPARE.at(db)):
            parked = await online_job(flow, db).indexes_and_park(flow.roles)
            await flow.ledger.save(flow.mid, StepKind.PREPARE.at(db), DONE,
                                   f"indexes built; {len(parked.foreign_keys)} foreign keys dropped and "
                                   f"{len(parked.triggers)} triggers disabled on the target until cutover",
                                   {"parked": parked.as_dict()})
    await flow.reload()


async def sync_sequences(flow: Flow) -> None:
    """The services leave sequence values behind when they copy rows (logical replication does)."""
    for db in flow.m.databases:
        src, tgt = await asyncio.gather(flow.source.connect(db), flow.target.connect(db))
        try:
            count = await sequences.sync(src, tgt)
        finally:
            await asyncio.gather(src.close(), tgt.close())
        await flow.ledger.save(flow.mid, StepKind.SEQUENCES.at(db), DONE, f"{count} sequence(s) set to the source's values")


async def run_managed(flow: Flow, backend: ManagedBackend, poll_seconds: float) -> None:
    ledger, mid, m = flow.ledger, flow.mid, flow.m
    previous = flow.steps.get(BACKEND_STEP)
    retrying = previous is not None and previous.state != DONE  # the service failed: start a fresh one
    if m.mode == "online":
        await ensure_identity(flow)  # the services stream by logical replication too
    if backend.prepares_schema:
        await prepare_schema(flow, fresh=retrying)
    if not flow.done(BACKEND_STEP):
        attempt = int(previous.data.get("attempt", 0)) + 1 if previous else 1
        name = f"pgmig-{mid}" + (f"-r{attempt}" if attempt > 1 else "")
        slots = await logical_slots(flow.source, m.databases)
        await ledger.advance(mid, State.FULL_LOAD, f"{backend.label}: starting {name} for {', '.join(m.databases)}")
        # what an earlier attempt left in the target databases is this migration's own: replace it
        ref = await backend.start(replace(m, options={**m.options, "overwrite": m.options.get("overwrite") or retrying}),
                                  name, flow.source, flow.target)
        await ledger.save(mid, BACKEND_STEP, DONE, f"{backend.label}: {name}",
                          {"ref": ref, "slots_before": slots, "attempt": attempt})
        await flow.reload()
    ref = flow.steps[BACKEND_STEP].data["ref"]
    unread = 0
    while True:
        try:
            status = await backend.status(ref)
            unread = 0
        except MigrationError as exc:  # copies run for hours: an ARM hiccup must not fail them
            unread += 1
            if unread > UNREAD_TOLERATED:
                raise
            for db in m.databases:
                flow.progress.of(db).phase = f"{backend.label}: status unreadable ({exc.message})"
            await asyncio.sleep(poll_seconds)
            continue
        show(flow.progress, backend, status)
        if status.phase in (Phase.FAILED, Phase.CANCELLED):
            await ledger.save(mid, BACKEND_STEP, FAILED, status.error or status.detail, flow.steps[BACKEND_STEP].data)
            raise _failure(backend, status)
        if m.mode == "offline" and status.phase is Phase.SUCCEEDED:
            await sync_sequences(flow)
            await verify_and_complete(flow)
            return
        if m.mode == "online" and status.phase is Phase.SUCCEEDED:  # finished outside pgmig: nothing streams
            await ledger.save(mid, BACKEND_STEP, FAILED, "completed without pgmig's cutover", flow.steps[BACKEND_STEP].data)
            raise MigrationError(f"{backend.label} completed its migration without pgmig's cutover: nothing streams "
                                 "any more", f"`/pgmig retry {mid}` starts a fresh service migration")
        if m.mode == "online" and status.phase is Phase.READY:
            await ledger.advance(mid, State.CATCHING_UP, f"{backend.label} copied the data and streams changes")
            await mark_ready(ledger, await ledger.get(mid), f"{backend.label} is {status.detail}")
            return
        await asyncio.sleep(poll_seconds)


async def watch_managed(ledger: Ledger, alerts: Alerts, config: EngineConfig, backend: ManagedBackend,
                        m: Migration) -> None:
    """A tick while streaming: the service's view, its lag alert, its failure, the move to ready."""
    step = await ledger.store.step(m.id, BACKEND_STEP)
    if step is None or step.state != DONE:
        return
    try:
        status = await backend.status(step.data["ref"])
    except MigrationError as exc:
        await alerts.alert(m, "service", True, f"⚠️ cannot read the {backend.label}'s status: {exc}")
        return
    await alerts.alert(m, "service", False, "")
    show(ledger.progress(m.id), backend, status)
    behind = {db: d.latency_seconds for db, d in status.databases.items()
              if (d.latency_seconds or 0) > config.lag_alert_seconds}
    await alerts.alert(m, "lag", bool(behind), f"⚠️ {backend.label} latency above the alert threshold: " +
                       ", ".join(f"{db} {s:.0f} s" for db, s in behind.items()))
    if status.phase in (Phase.FAILED, Phase.CANCELLED):
        await ledger.save(m.id, BACKEND_STEP, FAILED, status.error or status.detail, step.data)
        await ledger.fail(m.id, str(_failure(backend, status)))
    elif status.phase is Phase.READY:
        await mark_ready(ledger, m, f"{backend.label} is {status.detail}")


async def cancel_managed(ledger: Ledger, m: Migration, backend: ManagedBackend) -> str:
    """Tell the service to stop its migration; returns what was done, in words."""
    step = await ledger.store.step(m.id, BACKEND_STEP)
    if step is not None and step.state == DONE:
        await backend.cancel(step.data["ref"])
        return f"{backend.label} told to stop"
    return ""


class ManagedCutover:
    """What run_cutover needs for a managed migration: its parked constraints and its catch-up step."""

    def __init__(self, ledger: Ledger, backend: ManagedBackend, source: ServerConfig, poll_seconds: float) -> None:
        self.ledger, self.backend, self.source, self.poll = ledger, backend, source, poll_seconds

    async def parked(self, m: Migration) -> dict[str, Parked]:
        out = {}
        for db in m.databases:
            step = await self.ledger.store.step(m.id, StepKind.PREPARE.at(db))
            out[db] = Parked.from_dict(step.data["parked"]) if step else Parked([], [])
        return out

    async def catch_up(self, m: Migration) -> CatchUp:
        data = (await self.ledger.store.step(m.id, BACKEND_STEP)).data
        ref, before = data["ref"], data.get("slots_before", {})

        async def run(db: str, timeout: float) -> None:
            await wait_caught_up(self.source, db, timeout, exclude=tuple(before.get(db, [])))
            # journaled first: once the service is told, there is no falling back to its replication
            async with self.ledger.journal(m.id).change(Change.SERVICE_CUTOVER, SOURCE, db):
                await self.backend.cutover(ref, db)
            await self.completed(ref, db, max(timeout, 600.0))
        return run

    async def abandon(self, m: Migration, reason: str) -> None:
        """The service's replication is over but the cutover failed: a retry must start a fresh one (whose
        own cutover is then not mistaken for this spent one's)."""
        step = await self.ledger.store.step(m.id, BACKEND_STEP)
        if step is not None:
            await self.ledger.save(m.id, BACKEND_STEP, FAILED, f"cutover failed after the service's: {reason}"[:2000],
                                   step.data)
        journal = self.ledger.journal(m.id)
        for entry in await journal.entries(Change.SERVICE_CUTOVER):
            await journal.undone(entry)

    async def completed(self, ref: dict, db: str, timeout: float) -> None:
        """Until the service says `db` finished its cutover."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            status = await self.backend.status(ref)
            d = status.databases.get(db)
            if status.phase is Phase.FAILED:
                raise _failure(self.backend, status)
            if (d is not None and d.completed) or status.phase is Phase.SUCCEEDED:
                return
            await asyncio.sleep(self.poll)
        raise MigrationError(f"{self.backend.label} did not complete the cutover of {db} within {timeout:g} s")
