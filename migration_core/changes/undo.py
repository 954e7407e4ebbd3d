"""Reverting what the journal says pgmig changed on a customer's server, and nothing else.

Each kind of change has one undo, safe to run twice (a crash may interrupt it): drop the subscription,
slot or publication pgmig made; put REPLICA IDENTITY back where pgmig changed it (and only if it is
still FULL); lift a fence exactly as it was laid; put parked constraints back; drop a database, an
extension or a role pgmig created; cancel a managed service's migration and drop the slots it made.
`rollback` runs them in an order that never leaves a dangling dependency (the service stopped before
anything it writes to, subscriptions before their slots and databases, what pgmig put into a database
before the extensions it used, databases before their owners' roles) and collects
failures instead of stopping at the first, so one unreachable server does not keep the other's
objects alive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from migration_core.azure.backend import ManagedBackend
from migration_core.changes import constraints, ddl, replication, roles, service, watermarks
from migration_core.changes import databases as target_db
from migration_core.changes.fence import unfence
from migration_core.changes.identity import reset_identity
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.state.failures import failure_reason
from migration_core.state.journal import SOURCE, Change, Journal, JournalEntry
from migration_core.state.models import State

log = logging.getLogger(__name__)

# a service writes to the target; subscriptions hold slots, databases hold subscriptions, objects in
# databases hold roles and extensions (a dropped database takes its extensions: theirs is undone after);
# parked constraints are only put back in a database that stays (in a dropped one there is nothing to do)
ORDER = (
    Change.SERVICE_MIGRATION,
    Change.SUBSCRIPTION,
    Change.REPAIR,
    Change.DDL_CAPTURE,
    Change.VERIFIER,
    Change.SLOT,
    Change.PUBLICATION,
    Change.REPLICATION_ROLE,
    Change.REPLICA_IDENTITY,
    Change.FENCE,
    Change.CONTENTS,
    Change.DATABASE,
    Change.EXTENSIONS,
    Change.CONSTRAINTS,
    Change.ROLES,
)
REPLICATION = (
    Change.SUBSCRIPTION,
    Change.REPAIR,
    Change.DDL_CAPTURE,
    Change.VERIFIER,
    Change.SLOT,
    Change.PUBLICATION,
    Change.REPLICATION_ROLE,
)


@dataclass
class Outcome:
    """What a rollback did, in words, and what it could not do (with why)."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __iadd__(self, other: "Outcome") -> "Outcome":
        self.done += other.done
        self.failed += other.failed
        return self


async def rollback(
    journal: Journal,
    source: ServerConfig,
    target: ServerConfig,
    kinds: Iterable[Change] = ORDER,
    databases: Iterable[str] | None = None,
    skip: Iterable[tuple[Change, str]] = (),
    backend: ManagedBackend | None = None,
) -> Outcome:
    """Undo every live entry of `kinds` (for `databases`, or all; but none of `skip`'s (kind, database)),
    newest first within a kind; `backend`: the managed service a Change.SERVICE_MIGRATION is cancelled on."""
    wanted, dbs, skipped = set(kinds), set(databases) if databases is not None else None, set(skip)
    entries = [
        e
        for e in await journal.entries()
        if e.kind in wanted and (dbs is None or e.database in dbs) and (e.kind, e.database) not in skipped
    ]
    outcome = Outcome()
    gone: dict[str, tuple[str, list[JournalEntry]]] = {}  # a server that did not answer → why, what stays on it
    for kind in ORDER:
        for entry in reversed([e for e in entries if e.kind is kind]):
            if entry.server in gone:  # asked once: every other change on it stays too
                gone[entry.server][1].append(entry)
                continue
            try:
                if said := await undo(entry, source, target, journal, backend):
                    outcome.done.append(said)
            except (MigrationError, ConnectionProblem, asyncpg.PostgresError, OSError) as exc:
                why = failure_reason(exc, journal.migration_id)
                if isinstance(exc, ConnectionProblem):  # could not even log in there
                    gone[entry.server] = (why.split(" — fix:", 1)[0], [entry])
                else:
                    outcome.failed.append(f"{entry.describe()}: {why}")
    outcome.failed += [stays(server, why, left) for server, (why, left) in gone.items()]
    return outcome


def stays(server: str, why: str, left: list[JournalEntry]) -> str:
    """What a server that did not answer keeps, and what to do, whether it comes back or is gone for good."""
    named = {Change.SLOT: "slot", Change.PUBLICATION: "publication", Change.SUBSCRIPTION: "subscription"}
    named[Change.REPLICATION_ROLE] = "role"
    what = [
        (f"{named[e.kind]} {e.name}" if e.kind in named else e.describe().split(" on the ")[0])
        + (f" (database {e.database})" if e.database and e.kind is not Change.DATABASE else "")
        for e in left
    ]
    return (
        f"the {server} server is unreachable ({why}): its {', '.join(what)} stay there — if it comes back, "
        f"cancelling again removes them; if that server is gone for good, nothing is left to clean there"
    )


async def undo(
    entry: JournalEntry,
    source: ServerConfig,
    target: ServerConfig,
    journal: Journal,
    backend: ManagedBackend | None = None,
) -> str:
    """Revert one change; returns what was done, in words ("" when nothing was left to do). A fence of a
    migration whose target was released is never lifted: the source stays closed to the applications."""
    await journal.confirm()
    if entry.kind is Change.FENCE and await _released(journal):
        raise MigrationError(
            f"{entry.database} stays fenced on the source: {journal.migration_id} released its target",
            "after a release the source is never reopened by pgmig; a person who is sure lifts the fence by hand",
        )
    server = source if entry.server == SOURCE else target
    if entry.kind is Change.DATABASE:
        return await target_db.drop_if_created(target, entry, journal)
    if entry.kind is Change.CONTENTS:
        return await target_db.empty_again(target, entry, journal)
    if entry.kind is Change.EXTENSIONS:
        return await target_db.drop_extensions(target, entry, journal)
    if entry.kind is Change.SERVICE_MIGRATION:
        return await service.cancel(entry, source, backend, journal)
    if entry.kind is Change.ROLES:
        return await roles.drop_roles(target, entry, journal)
    if entry.kind is Change.REPAIR:  # the target was made like the source: nothing to put back
        await journal.undone(entry)
        return ""
    if entry.kind is Change.VERIFIER:  # after the subscription: no watermark is applied any more
        return await watermarks.drop(server, entry, journal)
    if entry.kind is Change.DDL_CAPTURE:  # after the subscription, before the schema it lives in
        return await ddl.drop(server, entry, journal)
    if entry.kind is Change.SERVICE_CUTOVER:
        return ""  # a service's ended replication cannot be restarted; recovery handles the migration
    try:
        conn = await server.connect(entry.database)
    except ConnectionProblem as exc:
        if exc.missing_database:
            await journal.undone(entry)  # its database is gone, and the object with it
            return ""
        raise
    try:
        said = await _undo_in(conn, entry)
    finally:
        await conn.close()
    await journal.undone(entry)
    return said


async def _released(journal: Journal) -> bool:
    m = await journal.store.get_migration(journal.migration_id)
    return m is not None and m.state in (State.RELEASED, State.COMPLETED)


async def _undo_in(conn: asyncpg.Connection, entry: JournalEntry) -> str:
    where = f"on the {entry.server} in {entry.database}"
    if entry.kind is Change.SUBSCRIPTION:
        return (
            f"dropped subscription {entry.name} {where}"
            if await replication.drop_subscription(conn, entry.name)
            else ""
        )
    if entry.kind is Change.SLOT:
        return f"dropped slot {entry.name} on the source" if await replication.drop_slot(conn, entry.name) else ""
    if entry.kind is Change.PUBLICATION:
        return (
            f"dropped publication {entry.name} {where}" if await replication.drop_publication(conn, entry.name) else ""
        )
    if entry.kind is Change.REPLICATION_ROLE:
        dropped = await replication.drop_replication_role(conn, entry.name, entry.database)
        return f"dropped replication role {entry.name} on the source" if dropped else ""
    if entry.kind is Change.REPLICA_IDENTITY:
        reset = await reset_identity(conn, entry)
        return f"REPLICA IDENTITY put back on {', '.join(reset)} {where}" if reset else ""
    if entry.kind is Change.FENCE:
        await unfence(conn, entry)
        return f"{entry.database} writable again on the source"
    if entry.kind is Change.CONSTRAINTS:
        await constraints.reinstate(conn, constraints.ConstraintsPayload.of(entry).parked)
        return f"foreign keys and triggers put back {where}"
    raise MigrationError(f"BUG: no undo for {entry.kind.value}")
