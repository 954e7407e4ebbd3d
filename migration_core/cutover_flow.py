"""The cutover of a whole migration: every database through cutover.py's procedure, the target
released, checked after release, replication torn down; any failure falls back everywhere."""
from __future__ import annotations

from migration_core.constraints import Parked
from migration_core.cutover import DatabaseCutover, check, cut_over, fallback
from migration_core.engine_config import EngineConfig
from migration_core.errors import MigrationError
from migration_core.failures import failure_reason
from migration_core.ledger import DONE, Alerts, Ledger
from migration_core.models import AuditEntry, State
from migration_core.managed_flow import ManagedCutover
from migration_core.online_flow import teardown_replication
from migration_core.servers import ServerConfig


async def run_cutover(ledger: Ledger, alerts: Alerts, config: EngineConfig, mid: str, actor: str,
                      source: ServerConfig, target: ServerConfig, grace_seconds: float,
                      catch_up_timeout: float, managed: ManagedCutover | None = None) -> bool:
    """Switch a streaming migration to its target; True when completed, False when it fell back.

    `managed`: a service moves the data; its cutover is triggered once the source is fenced, and after
    that there is no falling back to replication (the migration fails, the source is writable again)."""
    if not await ledger.store.transition(mid, State.CUTTING_OVER,
                                         expect=(State.READY_FOR_CUTOVER, State.AWAITING_APPROVAL)):
        m = await ledger.get(mid)
        raise MigrationError(f"{mid} is {m.state.value}; only a migration ready for cutover can cut over")
    m = await ledger.get(mid)
    await ledger.store.audit(AuditEntry(actor, "cutover.started", ", ".join(m.databases), m.id))
    await ledger.emit_state(m.id, f"cutting over {', '.join(m.databases)} (started by {actor})")
    done: list[DatabaseCutover] = []
    parallel = int(m.options.get("parallel", 2))
    if managed is None:
        parked = {db: Parked.from_dict((await ledger.store.step(m.id, f"load:{db}")).data["parked"])
                  for db in m.databases}
        catch_up = None
    else:
        parked, catch_up = await managed.parked(m), await managed.catch_up(m)
    try:
        for db in m.databases:
            done.append(await cut_over(source, target, db, m.id, parked[db], grace_seconds, catch_up_timeout,
                                       parallel, catch_up))
        await alerts.notice(m, "released", "🟢 target released: sequences synced, foreign keys and triggers "
                            "back, row counts equal — applications can switch now (writes were unavailable "
                            + ", ".join(f"{r.database} {r.window_seconds:.2f} s" for r in done)
                            + "). Checksums are being compared against the target as it was at this moment.")
        for result in done:
            await check(source, target, result, parked[result.database], parallel)
            await ledger.save(m.id, f"cutover:{result.database}", DONE, ", ".join(
                f"{k} {v:.3f} s" for k, v in result.timings.items()), {"timings": result.timings})
    except Exception as exc:
        for result in done:
            await fallback(source, target, result.fence, reinstated=True)
        reason = failure_reason(exc, m.id)
        if managed is not None and managed.switched:
            await managed.abandon(m, reason)
            await ledger.store.audit(AuditEntry("pgmig", "cutover.failed", reason[:2000], m.id))
            await ledger.set_state(m.id, State.FAILED, f"cutover failed after {managed.backend.label} had ended its "
                                   f"replication of {', '.join(managed.switched)}: {reason}. The source is writable "
                                   f"again and stays the primary; `/pgmig retry {m.id}` starts a fresh service "
                                   "migration over the target databases", error=f"cutting_over: {reason}")
            await alerts.notice(m, "cutover", f"⚠️ cutover failed, nothing was released: {reason}")
            return False
        await ledger.store.transition(m.id, State.READY_FOR_CUTOVER, error=f"cutover fell back: {reason}")
        await ledger.store.audit(AuditEntry("pgmig", "cutover.fallback", reason[:2000], m.id))
        await ledger.emit_state(m.id, f"cutover fell back: {reason}. The source is writable again and "
                                      "replication keeps running")
        await alerts.notice(m, "cutover", f"⚠️ cutover fell back, nothing was switched: {reason}")
        return False
    if managed is None:
        await teardown_replication(ledger, m, source, target, config.workdir / m.id)
    lines = []
    for r in done:
        soft = f"; superusers only softly fenced: {', '.join(r.fence.superusers)}" if r.fence.superusers else ""
        lines.append(f"{r.database}: writes unavailable {r.window_seconds:.2f} s "
                     f"({', '.join(f'{k} {v:.2f} s' for k, v in r.timings.items())}); {r.verify.tables} tables, "
                     f"{r.verify.rows} rows and {r.sequences} sequences verified equal; "
                     f"{r.fence.ended_sessions} session(s) ended{soft}")
    await ledger.store.audit(AuditEntry("pgmig", "cutover.completed", "\n".join(lines)[:2000], m.id))
    await ledger.set_state(m.id, State.COMPLETED, "cutover complete: applications can move to the target.\n"
                           + "\n".join(lines))
    return True
