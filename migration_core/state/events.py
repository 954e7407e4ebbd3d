"""How the core tells the outside world what migrations are doing, without knowing about Slack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from migration_core.observe.progress import MigrationProgress
from migration_core.state.approval import ApprovalRequest, Closed
from migration_core.state.models import Migration

if TYPE_CHECKING:
    from migration_core.observe.ddl import SchemaCard


class MigrationEvents(Protocol):
    async def progress(self, migration: Migration, progress: MigrationProgress) -> None:
        """A periodic tick while the migration runs: update the live view in place."""

    async def state_changed(
        self, migration: Migration, progress: MigrationProgress, detail: str, closed: Closed | None = None
    ) -> None:
        """The migration entered `migration.state`; `detail` says why or what came of it; `closed`: the
        cutover request this move ended (already recorded), if one was open."""

    async def alert(
        self, migration: Migration, progress: MigrationProgress, text: str, offer_cancel: bool = False
    ) -> None:
        """Something needs a person's attention (lag, WAL held on the source), or stopped needing it;
        `offer_cancel`: cancelling the migration is the way out, offered to operators with the alert."""

    async def schema_change(
        self, migration: Migration, progress: MigrationProgress, card: SchemaCard
    ) -> tuple[str, str]:
        """A schema change captured on the source (or a drift found): its card posted in the migration's
        thread, or updated where it is (`card.channel`, `card.ts`); returns where it is (empty: not posted)."""

    async def request_changed(
        self, migration: Migration, progress: MigrationProgress, request: ApprovalRequest
    ) -> None:
        """The open cutover request's facts changed while it waits (the schema changes the target lacks, saved
        with it): its card is redrawn where it is."""

    async def chart(self, migration: Migration, progress: MigrationProgress, moment: str) -> None:
        """A moment worth a picture (`moment`: "full load done", "ready for cutover", "completed", "lag alert"…):
        the migration's chart (`Engine.chart`) goes to its thread."""

    async def digest(self, migrations: list[Migration], progress: dict[str, MigrationProgress]) -> None:
        """The periodic summary of every active migration."""


class NoEvents:
    """For callers that need none (scripts, benchmarks)."""

    async def progress(self, migration: Migration, progress: MigrationProgress) -> None:
        return None

    async def state_changed(
        self, migration: Migration, progress: MigrationProgress, detail: str, closed: Closed | None = None
    ) -> None:
        return None

    async def alert(
        self, migration: Migration, progress: MigrationProgress, text: str, offer_cancel: bool = False
    ) -> None:
        return None

    async def schema_change(
        self, migration: Migration, progress: MigrationProgress, card: SchemaCard
    ) -> tuple[str, str]:
        return "", ""

    async def request_changed(
        self, migration: Migration, progress: MigrationProgress, request: ApprovalRequest
    ) -> None:
        return None

    async def chart(self, migration: Migration, progress: MigrationProgress, moment: str) -> None:
        return None

    async def digest(self, migrations: list[Migration], progress: dict[str, MigrationProgress]) -> None:
        return None
