"""A managed Azure service's migration (`--backend flex|dms`): pgmig starts it, and the service, not pgmig,
makes replication slots on the source. Journaled (Change.SERVICE_MIGRATION) before the start with the
logical slots each source database already had, and noted with the service's reference once it
answered, so an undo cancels that very service migration and drops only the slots that appeared since
and are not in use — never one that was there before, never one somebody streams from."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from migration_core.azure.backend import BackendRef, ManagedBackend
from migration_core.changes.replication import PREFIX
from migration_core.pg.servers import ConnectionProblem, ServerConfig, column_per_database
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, Change, Journal, JournalEntry, Payload

LETS_GO_SECONDS = 10.0  # how long a cancelled service may take to stop streaming from its slots
LOGICAL_SLOTS = (
    "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND slot_type = 'logical'"
)


@dataclass
class ServicePayload(Payload):
    """The journal's record of a service migration: its reference (`ref`, BackendRef.as_dict, once the
    start returned) and the logical slots on each source database before it started."""

    SPARSE = ("ref",)

    slots_before: dict[str, list[str]] = field(default_factory=dict)
    ref: dict[str, Any] | None = None


async def start(
    journal: Journal, source: ServerConfig, databases: list[str], name: str, begin: Callable[[], Awaitable[BackendRef]]
) -> BackendRef:
    """Journal the service migration `name`, then start it (`begin`) and note its reference. Started again
    after pgmig stopped in between, the slots before are still those of the first try: the service may
    have made its own since."""
    previous = await journal.find(Change.SERVICE_MIGRATION, SOURCE, "", name)
    if previous is not None and previous.live:
        made = ServicePayload(ServicePayload.of(previous).slots_before)
    else:
        made = ServicePayload(await column_per_database(source, databases, LOGICAL_SLOTS))
    entry = await journal.plan(Change.SERVICE_MIGRATION, SOURCE, "", name, made)
    ref = await begin()
    made.ref = ref.as_dict()
    await journal.done(entry, made)
    return ref


async def cancel(entry: JournalEntry, source: ServerConfig, backend: ManagedBackend | None, journal: Journal) -> str:
    """Undo a Change.SERVICE_MIGRATION: tell the service to stop, then drop the logical slots that appeared
    on the source since it started and are not in use; a slot in use stays, said."""
    made = ServicePayload.of(entry)
    if made.ref is None:  # pgmig stopped (or was cancelled) while starting it: whether Azure made it is unknown
        await journal.undone(entry)
        return (
            f"the service migration {entry.name} was being started when pgmig stopped: if Azure created it, "
            "cancel it in the Azure portal and drop the replication slots it left on the source"
        )
    if backend is None:  # a migration with a service migration runs on a managed backend
        raise MigrationError(f"BUG: no managed backend to cancel the service migration {entry.name} on")
    await backend.cancel(BackendRef.from_dict(made.ref))
    said = [f"{backend.label} told to stop"]
    for database, before in made.slots_before.items():
        try:
            conn = await source.connect(database)
        except ConnectionProblem as exc:
            if exc.missing_database:
                continue  # its slots went with it
            raise
        try:
            said += await _drop_new_slots(conn, database, before)
        finally:
            await conn.close()
    await journal.undone(entry)
    return "; ".join(said)


async def _drop_new_slots(conn: asyncpg.Connection, database: str, before: list[str]) -> list[str]:
    """Drop the logical slots of this database that were not in `before` (nor pgmig's own, which their own
    entries undo), unless still in use once the cancelled service had time to let go; returns what was
    done and left, in words."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LETS_GO_SECONDS
    while True:
        found = await conn.fetch(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = current_database() "
            "AND slot_type = 'logical' AND NOT slot_name = ANY($1::text[]) AND left(slot_name, $2) <> $3 ORDER BY 1",
            before,
            len(PREFIX),
            PREFIX,
        )
        if all(r["active_pid"] is None for r in found) or loop.time() >= deadline:
            break
        await asyncio.sleep(0.5)
    said = []
    for row in found:
        name, pid = row["slot_name"], row["active_pid"]
        dropped = False
        if pid is None:
            try:  # taken since it was read: stays
                dropped = bool(
                    await conn.fetch(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = $1 AND NOT active",
                        name,
                    )
                )
            except asyncpg.ObjectInUseError:
                pass
        said.append(
            f"dropped the service's slot {name} on the source in {database}"
            if dropped
            else f"left slot {name} in {database}: it appeared after the service started but is in use"
            + (f" (pid {pid})" if pid else "")
            + ", so it may not be the service's; drop it by hand if it is"
        )
    return said
