"""One migration's context, built once by the engine and handed to every flow: the bookkeeping
(ledger, alerts), the engine's settings, the migration, both servers, for a managed migration the Azure
service moving its data, and the sessions its looks keep. A pipeline adds what it learns before its steps
run: the finished steps, the client programs chosen and the roles plan."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from migration_core.azure.backend import ManagedBackend
from migration_core.changes.roles import RolePlan
from migration_core.engine.config import EngineConfig
from migration_core.observe.progress import MigrationProgress
from migration_core.pg.kept import KeptSessions
from migration_core.pg.servers import ServerConfig
from migration_core.state.journal import Journal
from migration_core.state.ledger import DONE, Alerts, Ledger
from migration_core.state.models import Migration, MigrationOptions, Step


@dataclass
class MigrationContext:
    ledger: Ledger
    alerts: Alerts
    config: EngineConfig
    m: Migration
    source: ServerConfig
    target: ServerConfig
    backend: ManagedBackend | None = None
    steps: dict[str, Step] = field(default_factory=dict)  # the pipeline's: finished ones are skipped
    bindir: Path = Path()  # the pipeline's: client programs
    roles: RolePlan = field(default_factory=RolePlan)  # the pipeline's: roles on the target
    sessions: KeptSessions | None = None  # the engine's, kept between this migration's looks

    @property
    def mid(self) -> str:
        return self.m.id

    @property
    def options(self) -> MigrationOptions:
        return self.m.options

    @property
    def journal(self) -> Journal:
        return self.ledger.journal(self.m.id)

    @property
    def progress(self) -> MigrationProgress:
        return self.ledger.progress(self.m.id)

    @property
    def workdir(self) -> Path:
        """Where this migration's files go (workdir.py names the folders inside)."""
        return self.config.workdir / self.m.id

    def kept(
        self, server: ServerConfig, database: str, *, data: bool = False
    ) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A session for a look's questions: one kept from the last look when the engine keeps them (pg/kept.py)."""
        if self.sessions is None:
            return server.connection(database, data=data)
        return self.sessions.connection(server, database, data=data)

    def done(self, name: str) -> bool:
        return name in self.steps and self.steps[name].state == DONE

    async def reload(self) -> None:
        """Re-read the migration and its steps (after a step finished, or another flow moved it)."""
        self.m = await self.ledger.get(self.m.id)
        self.steps = await self.ledger.steps(self.m.id)
