"""The native online pipeline: [replica identity] → schema → full load under a slot's snapshot →
catching up (the monitor takes it to ready for cutover), and the teardown of its replication after
the cutover."""
from __future__ import annotations

from migration_core import undo
from migration_core.flow import Flow
from migration_core.journal import Change, Journal
from migration_core.ledger import DONE, RUNNING
from migration_core.models import State, StepKind
from migration_core.online import OnlineDatabase, set_identity_full
from migration_core.servers import ServerConfig


def online_job(flow: Flow, db: str) -> OnlineDatabase:
    return OnlineDatabase(flow.source, flow.target, db, flow.journal, flow.options, flow.workdir, flow.bindir,
                          flow.progress.of(db))


async def ensure_identity(flow: Flow) -> None:
    """REPLICA IDENTITY FULL where asked for; the journal remembers each table's previous identity."""
    if flow.m.options.get("replica_identity_full") and not flow.done(StepKind.IDENTITY):
        changed = {db: await set_identity_full(flow.source, db, flow.journal) for db in flow.m.databases}
        listed = "; ".join(f"{db}: {', '.join(t)}" for db, t in changed.items() if t)
        await flow.ledger.save(flow.mid, StepKind.IDENTITY, DONE, f"REPLICA IDENTITY FULL set on the source for {listed}"
                               if listed else "every table already had a replica identity", {"tables": changed})


async def schema_steps(flow: Flow) -> None:
    """The target's schema for every database not done yet (pre-data; post-data comes after the load)."""
    schemas = [db for db in flow.m.databases if not flow.done(StepKind.SCHEMA.at(db))]
    if schemas:
        await flow.ledger.advance(flow.mid, State.SCHEMA, f"schema of {', '.join(schemas)}")
    for db in schemas:
        await schema_step(flow, db)


async def schema_step(flow: Flow, db: str) -> None:
    job = online_job(flow, db)
    await flow.ledger.save(flow.mid, StepKind.SCHEMA.at(db), RUNNING, "")
    detail = await job.schema(flow.roles)
    await flow.ledger.save(flow.mid, StepKind.SCHEMA.at(db), DONE, detail, {"schema_sql": str(job.schema_sql)})


async def run_online(flow: Flow) -> None:
    ledger, mid, m = flow.ledger, flow.mid, flow.m
    await ensure_identity(flow)
    await schema_steps(flow)
    loads = [db for db in m.databases if not flow.done(StepKind.LOAD.at(db))]
    if loads:
        await ledger.advance(mid, State.FULL_LOAD, f"full load of {', '.join(loads)} under a slot's snapshot")
    for db in loads:
        if StepKind.LOAD.at(db) in flow.steps:  # an earlier attempt stopped mid-load: start this database afresh
            await online_job(flow, db).teardown()
            await schema_step(flow, db)
        await ledger.save(mid, StepKind.LOAD.at(db), RUNNING, "")
        data = await online_job(flow, db).full_load(flow.roles)
        parked = data["parked"]
        await ledger.save(mid, StepKind.LOAD.at(db), DONE,
                          f"{data['published_tables']} tables published and copied; "
                          f"{len(parked['foreign_keys'])} foreign keys dropped and "
                          f"{sum(t['enabled'] != 'D' for t in parked['triggers'])} triggers disabled on the "
                          f"target until cutover; streaming from {data['consistent_lsn']}", data)
    await ledger.advance(mid, State.CATCHING_UP, "full load done; the target now follows every change on the source")


async def teardown_replication(journal: Journal, source: ServerConfig, target: ServerConfig) -> undo.Outcome:
    """After a cutover: subscriptions, slots and publications dropped, replica identities put back."""
    return await undo.rollback(journal, source, target, (*undo.REPLICATION, Change.REPLICA_IDENTITY))
