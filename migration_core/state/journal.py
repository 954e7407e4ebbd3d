"""The journal: every change pgmig makes on a customer's server, written to the state store *before*
the change is made and marked done after it.

Cancel, retry, cleanup, the cutover's fallback and crash recovery act from here: pgmig undoes or drops
exactly what it made and nothing else. An entry still `planned` after a crash means "maybe made": its
undo must find out (a database that is not empty was not created by that CREATE; dropping a slot that
does not exist is a no-op). Entries are keyed by (kind, server, database, name), so a retry that
makes the same change again reuses its entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import MISSING, Field, asdict, dataclass, fields
from typing import Any, ClassVar, Self

from migration_core.changes import replication
from migration_core.pg import failpoints
from migration_core.state.models import SOURCE, TARGET, Change, JournalEntry, Mark, utcnow
from migration_core.store import LeaseLost, Store

__all__ = ["Journal", "Change", "JournalEntry", "Mark", "Payload", "SOURCE", "TARGET"]


@dataclass
class Payload:
    """The typed data of one kind of change (a dataclass), stored as the JSON object `to_json` gives, in
    the shape entries have always had: fields in SPARSE are left out while at their default. `from_json`
    reads any stored entry, with defaults for what it lacks."""

    SPARSE: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for f in fields(self):
            if f.name in self.SPARSE and out[f.name] == _default(f):
                del out[f.name]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def of(cls, entry: JournalEntry) -> Self:
        return cls.from_json(entry.data)


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


class Journal:
    """One migration's journal (`Store` holds the rows)."""

    def __init__(self, store: Store, migration_id: str, token: Callable[[], int | None] = lambda: None) -> None:
        """`token`: the writer's fencing token now (None: unfenced, for a script that holds no lease)."""
        self.store, self.migration_id, self._token = store, migration_id, token

    def object_name(self, database: str) -> str:
        """The slot, publication and subscription name of one of this migration's databases."""
        return replication.object_name(self.store.deployment, self.migration_id, database)

    def role_name(self, database: str) -> str:
        """The source role one database's subscription logs in as."""
        return replication.role_name(self.store.deployment, self.migration_id, database)

    async def confirm(self) -> None:
        """Raise `LeaseLost` when this writer's fencing token is stale: called before a change on a server
        that writes no entry first (an undo, the cutover's last steps), so a process that lost its lease
        while frozen touches nothing when it wakes. Checking and renewing the lease are one statement: once
        it returns, no other process can take the migration over for a full lease period, even one that
        found this holder's lease stale a moment before."""
        token = self._token()
        if token is not None and not await self.store.renew(self.migration_id, token):
            raise LeaseLost(self.migration_id)

    async def entries(
        self, kind: Change | None = None, database: str | None = None, live_only: bool = True
    ) -> list[JournalEntry]:
        found = await self.store.journal(self.migration_id)
        return [
            e
            for e in found
            if (kind is None or e.kind is kind)
            and (database is None or e.database == database)
            and (e.live or not live_only)
        ]

    async def find(self, kind: Change, server: str, database: str, name: str = "") -> JournalEntry | None:
        return next(
            (e for e in await self.entries(kind, database, live_only=False) if e.server == server and e.name == name),
            None,
        )

    async def plan(
        self, kind: Change, server: str, database: str, name: str = "", data: Payload | None = None
    ) -> JournalEntry:
        """Record a change about to be made; call before making it."""
        stored = data.to_json() if data is not None else {}
        entry = JournalEntry(self.migration_id, kind, server, database, name, Mark.PLANNED, stored)
        previous = await self.find(kind, server, database, name)
        if previous is not None:
            entry.at = previous.at
        await self.store.save_journal(entry, self._token())
        failpoints.reached(f"plan-{kind.value}:{database}")
        return entry

    async def note(self, entry: JournalEntry, data: Payload | None = None) -> None:
        """Save what a change in progress has done so far (e.g. each role a fence revoked CONNECT from):
        `data`, when given, replaces the entry's."""
        if data is not None:
            entry.data = data.to_json()
        entry.updated_at = utcnow()
        await self.store.save_journal(entry, self._token())

    async def done(self, entry: JournalEntry, data: Payload | None = None) -> None:
        entry.mark = Mark.DONE
        await self.note(entry, data)
        failpoints.reached(f"{entry.kind.value}:{entry.database}")

    async def undone(self, entry: JournalEntry, data: Payload | None = None) -> None:
        entry.mark = Mark.UNDONE
        await self.note(entry, data)
        failpoints.reached(f"undo-{entry.kind.value}:{entry.database}")

    @asynccontextmanager
    async def change(
        self, kind: Change, server: str, database: str, name: str = "", data: Payload | None = None
    ) -> AsyncIterator[JournalEntry]:
        """`async with journal.change(…) as entry:` make the change inside; done when the block succeeds.

        A block that raises leaves the entry planned: the change may have happened before it failed."""
        entry = await self.plan(kind, server, database, name, data)
        yield entry
        await self.done(entry)
