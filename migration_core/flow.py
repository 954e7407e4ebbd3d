"""What every pipeline receives once pre-flight and roles are done: the migration, its finished
steps, both servers and the options, so a flow never looks anything up twice."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from migration_core.journal import Journal
from migration_core.ledger import DONE, Ledger
from migration_core.models import Migration, Step
from migration_core.offline import OfflineOptions
from migration_core.progress import MigrationProgress
from migration_core.roles import RolePlan
from migration_core.servers import ServerConfig


@dataclass
class Flow:
    ledger: Ledger
    m: Migration
    steps: dict[str, Step]
    source: ServerConfig
    target: ServerConfig
    options: OfflineOptions
    bindir: Path
    workdir: Path
    roles: RolePlan

    @property
    def mid(self) -> str:
        return self.m.id

    @property
    def journal(self) -> Journal:
        return self.ledger.journal(self.m.id)

    @property
    def progress(self) -> MigrationProgress:
        return self.ledger.progress(self.m.id)

    def done(self, name: str) -> bool:
        return name in self.steps and self.steps[name].state == DONE

    async def reload(self) -> None:
        self.steps = await self.ledger.steps(self.m.id)
