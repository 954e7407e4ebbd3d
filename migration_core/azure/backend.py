"""What pgmig needs from a managed migration service (the flexible server's own migration service, or
Azure DMS classic): start, status, cut over one database, cancel. Both map their states into these, so
the engine, the live message, the approval gate and the audit treat them like the native engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Protocol

from migration_core.pg.servers import ServerConfig
from migration_core.state.models import Migration


class Phase(str, Enum):
    QUEUED = "queued"  # not started yet: the target server runs another migration (one at a time)
    LOADING = "loading"  # validating, copying the snapshot, or catching up
    WAITING = "waiting"  # the service waits for a person: `BackendStatus.action` says what to do
    READY = "ready"  # streaming and waiting for the cutover trigger (online)
    SUCCEEDED = "succeeded"  # offline copy finished, or the cutover completed
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class DatabaseStatus:
    database: str
    state: str = ""  # the service's own word, shown as is
    tables_done: int = 0
    tables_total: int = 0
    tables_errored: int = 0
    applied_changes: int | None = None
    pending_changes: int | None = None
    latency_seconds: float | None = None
    message: str = ""
    cdc: tuple[int, int, int] | None = None  # changes captured: inserts, updates, deletes
    ready: bool = False  # waiting for its cutover
    completed: bool = False  # its cutover (or offline copy) finished

    def describe(self) -> str:
        """The service's word plus what it counts: `READY_TO_COMPLETE, 120 changes applied, 0 pending`."""
        parts = [self.state]
        if self.tables_errored:
            parts.append(f"{self.tables_errored} table(s) errored")
        if self.applied_changes is not None:
            parts.append(
                f"{self.applied_changes} changes applied"
                + (f", {self.pending_changes} pending" if self.pending_changes is not None else "")
            )
        if self.cdc and any(self.cdc):
            parts.append("captured {} inserts, {} updates, {} deletes".format(*self.cdc))
        if self.message:
            parts.append(self.message)
        return ", ".join(p for p in parts if p)


@dataclass
class BackendStatus:
    phase: Phase
    detail: str  # the service's state and sub-state, for the status line
    databases: dict[str, DatabaseStatus] = field(default_factory=dict)
    error: str = ""
    action: str = ""  # WAITING: what the person must do (pgmig already did what was its own to do)


@dataclass
class BackendRef:
    """Where a service-side migration lives (kept in the `backend` step): a flexible server's migration
    (`server`, `migration`) or a DMS classic task (`service`, `project`, `task`)."""

    resource_group: str
    server: str = ""
    migration: str = ""
    service: str = ""
    project: str = ""
    task: str = ""
    # flex: the service migrates at most 8 databases at a time, so more are batches run one after the
    # other (`migration`, then `migration-b2`, …); empty: one migration of every database
    batches: list[list[str]] = field(default_factory=list)
    overwrite: bool = False  # the person said --overwrite: pgmig may confirm the service's overwrite question
    created: list[str] = field(default_factory=list)  # target databases that did not exist before attempt 1
    runtime_server: str = ""  # migrationInstanceResourceId: the runtime server for private networks
    mode: str = ""  # flex: Online or Offline, for batches started later

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_dict(cls, data: dict) -> "BackendRef":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class ManagedBackend(Protocol):
    label: str  # "Azure flexible-server migration service", "Azure DMS"
    prepares_schema: bool  # True: pgmig creates the target schema first (DMS classic)
    advice: str  # said once when a migration starts on this backend ("" for none)

    async def start(
        self, m: Migration, name: str, source: ServerConfig, target: ServerConfig, earlier: BackendRef | None = None
    ) -> BackendRef:
        """Create the service-side migration called `name` (or queue it while the target runs another);
        returns the reference later calls take (kept in the store). `earlier`: the attempt a retry replaces,
        whose databases (and only those, without --overwrite) the new one may overwrite."""

    async def status(self, ref: BackendRef) -> BackendStatus: ...

    async def advance(self, ref: BackendRef, status: BackendStatus, source: ServerConfig, target: ServerConfig) -> str:
        """Take the steps the service waits for that are pgmig's own (start a queued migration or the next
        batch once the target is free, confirm an overwrite the person asked for); returns what it did."""

    async def cutover(self, ref: BackendRef, database: str) -> None:
        """Tell the service to finish `database` (the source is already fenced by pgmig)."""

    async def cancel(self, ref: BackendRef) -> None: ...


def word(value: object) -> str:
    """An SDK enum (or plain string, or None) as the service's own word: `WaitingForCutoverTrigger`."""
    if value is None:
        return ""
    return str(value.value) if isinstance(value, Enum) else str(value)


def number(value: object) -> int:
    """The services report counters as strings or numbers (or not at all)."""
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return 0


def seconds(value: object) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None
