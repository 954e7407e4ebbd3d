"""What the state store persists: migrations, their steps, approvals and the audit log."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


RUNNING_STATES = ("created", "preflight", "exporting", "importing", "verifying", "schema", "full_load",
                  "catching_up", "cutting_over")


class State(str, Enum):
    """Every state a migration can be in (the state machine is documented in docs/architecture.md)."""

    CREATED = "created"
    PREFLIGHT = "preflight"
    EXPORTING = "exporting"
    IMPORTING = "importing"
    SCHEMA = "schema"
    FULL_LOAD = "full_load"
    CATCHING_UP = "catching_up"
    READY_FOR_CUTOVER = "ready_for_cutover"
    AWAITING_APPROVAL = "awaiting_approval"
    CUTTING_OVER = "cutting_over"
    VERIFYING = "verifying"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)

    @property
    def running(self) -> bool:
        """A pgmig process is (or was, before a restart) doing work in this state."""
        return self.value in RUNNING_STATES


@dataclass
class Migration:
    id: str
    source: str
    target: str
    databases: list[str]
    mode: str
    state: State
    requested_by: str
    channel: str = ""
    options: dict = field(default_factory=dict)
    error: str = ""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    message_channel: str = ""   # where the live progress message is, once posted
    message_ts: str = ""


@dataclass
class Step:
    migration_id: str
    name: str
    state: str
    detail: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    data: dict = field(default_factory=dict)  # machine-readable facts a resumed step needs


@dataclass
class Approval:
    migration_id: str
    approver: str
    decision: str  # "approve" | "reject"
    reason: str = ""
    at: datetime = field(default_factory=utcnow)
    round: str = ""  # which cutover request this answers: earlier rounds' approvals never count again


@dataclass
class AuditEntry:
    actor: str
    action: str
    detail: str = ""
    migration_id: str = ""
    channel: str = ""
    at: datetime = field(default_factory=utcnow)
