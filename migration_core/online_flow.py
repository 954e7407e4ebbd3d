"""The native online pipeline: [replica identity] → schema → full load under a slot's snapshot →
catching up (the monitor takes it to ready for cutover). Also its cancel, which leaves the source
exactly as it was."""
from __future__ import annotations

from pathlib import Path

from migration_core.flow import Flow
from migration_core.ledger import DONE, RUNNING, Ledger
from migration_core.models import Migration, State
from migration_core.offline import OfflineOptions
from migration_core.online import OnlineDatabase, reset_identity, set_identity_full
from migration_core.servers import ServerConfig


def online_job(flow: Flow, db: str) -> OnlineDatabase:
    return OnlineDatabase(flow.source, flow.target, db, flow.mid, flow.options, flow.workdir, flow.bindir,
                          flow.progress.of(db))


async def ensure_identity(flow: Flow) -> None:
    """REPLICA IDENTITY FULL where asked for, remembered so cancel can undo it."""
    if flow.m.options.get("replica_identity_full") and not flow.done("identity"):
        changed = {db: await set_identity_full(flow.source, db) for db in flow.m.databases}
        listed = "; ".join(f"{db}: {', '.join(t)}" for db, t in changed.items() if t)
        await flow.ledger.save(flow.mid, "identity", DONE, f"REPLICA IDENTITY FULL set on the source for {listed}"
                               if listed else "every table already had a replica identity", {"tables": changed})


async def schema_steps(flow: Flow) -> None:
    """The target's schema for every database not done yet (pre-data; post-data comes after the load)."""
    schemas = [db for db in flow.m.databases if not flow.done(f"schema:{db}")]
    if schemas:
        await flow.ledger.set_state(flow.mid, State.SCHEMA, f"schema of {', '.join(schemas)}")
    for db in schemas:
        await schema_step(flow, db, claimed=f"schema:{db}" in flow.steps)


async def schema_step(flow: Flow, db: str, claimed: bool) -> None:
    job = online_job(flow, db)
    await flow.ledger.save(flow.mid, f"schema:{db}", RUNNING, "")
    detail = await job.schema(flow.roles, claimed)
    await flow.ledger.save(flow.mid, f"schema:{db}", DONE, detail, {"schema_sql": str(job.schema_sql)})


async def run_online(flow: Flow) -> None:
    ledger, mid, m = flow.ledger, flow.mid, flow.m
    await ensure_identity(flow)
    await schema_steps(flow)
    loads = [db for db in m.databases if not flow.done(f"load:{db}")]
    if loads:
        await ledger.set_state(mid, State.FULL_LOAD, f"full load of {', '.join(loads)} under a slot's snapshot")
    for db in loads:
        if f"load:{db}" in flow.steps:  # an earlier attempt stopped mid-load: start this database afresh
            await online_job(flow, db).teardown()
            await schema_step(flow, db, claimed=True)
        await ledger.save(mid, f"load:{db}", RUNNING, "")
        data = await online_job(flow, db).full_load(flow.roles)
        parked = data["parked"]
        await ledger.save(mid, f"load:{db}", DONE,
                          f"{data['published_tables']} tables published and copied; "
                          f"{len(parked['foreign_keys'])} foreign keys dropped and "
                          f"{sum(t['enabled'] != 'D' for t in parked['triggers'])} triggers disabled on the "
                          f"target until cutover; streaming from {data['consistent_lsn']}", data)
    await ledger.set_state(mid, State.CATCHING_UP, "full load done; the target now follows every change on the source")


async def teardown_replication(ledger: Ledger, m: Migration, source: ServerConfig, target: ServerConfig,
                               workdir: Path) -> list[str]:
    removed: list[str] = []
    for db in m.databases:
        job = OnlineDatabase(source, target, db, m.id, OfflineOptions(), workdir, Path("."), ledger.progress(m.id).of(db))
        removed += await job.teardown()
    return removed


async def undo_identity(ledger: Ledger, m: Migration, source: ServerConfig) -> None:
    identity = await ledger.store.step(m.id, "identity")
    for db, tables in (identity.data.get("tables", {}) if identity else {}).items():
        await reset_identity(source, db, tables)


async def cancel_online(ledger: Ledger, m: Migration, source: ServerConfig, target: ServerConfig,
                        workdir: Path, actor: str) -> None:
    """Drop subscription, slot and publication, undo REPLICA IDENTITY FULL: the source as it was."""
    removed = await teardown_replication(ledger, m, source, target, workdir)
    await undo_identity(ledger, m, source)
    await ledger.set_state(m.id, State.CANCELLED, f"cancelled by {actor}; dropped "
                           f"{', '.join(removed) or 'no replication objects'}; the target databases are left as they are")
