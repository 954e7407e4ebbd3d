"""What the state store persists: migrations, their steps, approvals, the audit log and the journal."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum, StrEnum


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


RUNNING_STATES = (
    "created",
    "preflight",
    "exporting",
    "importing",
    "verifying",
    "schema",
    "full_load",
    "catching_up",
    "cutting_over",
    "released",
)


class State(str, Enum):
    """Every state a migration can be in; which may follow which is `lifecycle.TRANSITIONS`."""

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
    RELEASED = "released"  # applications were told to switch: the point of no return
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


class StepState(StrEnum):
    """Where a step (or a provisioning request, stored as a step) stands."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    WAITING = "waiting"  # for a person: export files to review, an approval
    DROPPED = "dropped"  # its half-made result was removed (cancel)
    APPROVED = "approved"  # provisioning requests
    REJECTED = "rejected"
    EXPIRED = "expired"


class StepKind(StrEnum):
    """The steps a migration records; per-database ones are stored as `kind:database`."""

    PREFLIGHT = "preflight"
    PLAN = "plan"  # the migration's own plan (plan/record.py): what it would move and how long each phase should take
    ROLES = "roles"
    IDENTITY = "identity"
    EXPORT = "export"
    REVIEW = "review"
    IMPORT = "import"
    VERIFY = "verify"
    SCHEMA = "schema"
    LOAD = "load"
    PREPARE = "prepare"  # DMS: schema built and constraints parked before the service copies
    BACKEND = "backend"  # a managed service's migration
    SEQUENCES = "sequences"
    APPROVAL = "approval"
    CUTOVER = "cutover"
    RELEASE = "release"  # the point of no return: applications were told to switch
    INCIDENT = "incident"  # what the checks after release found
    RECOVERY = "recovery"  # how often pgmig restarted this migration's work by itself
    PROVISION = "provision"
    SCHEMA_WATCH = "schema_watch"  # online: a database's schema-change watch (drift baseline, cards posted)
    CUTOVER_HOLD = "cutover_hold"  # online: the cutover paused by someone (observe/ddl.py), until resumed

    def at(self, database: str) -> str:
        """The stored name of this step for one database."""
        return f"{self.value}:{database}"


class Mode(StrEnum):
    ONLINE = "online"  # copy, then stream every change until the cutover
    OFFLINE = "offline"  # a snapshot copy


class Method(StrEnum):
    """Microsoft's two offline methods."""

    RESTORE = "restore"  # pg_dump -Fc schema + pgmig's parallel COPY + pg_restore post-data
    DUMP = "dump"  # editable SQL files


class Backend(StrEnum):
    """Who moves the data."""

    NATIVE = "native"  # pgmig itself
    FLEX = "flex"  # the flexible server's migration service
    DMS = "dms"  # Azure DMS classic


class DdlCapture(StrEnum):
    """Whether an online migration captures schema changes made on its source while it streams."""

    DEFAULT = "default"  # as `[online] capture_ddl` says
    ON = "on"  # --capture-ddl
    OFF = "off"  # --no-capture-ddl

    def resolved(self, configured: bool) -> bool:
        """On or off, `configured` (`[online] capture_ddl`) deciding for the default."""
        return configured if self is DdlCapture.DEFAULT else self is DdlCapture.ON

    @classmethod
    def read(cls, stored: bool | str) -> "DdlCapture":
        """As stored: before the opt-out existed it was a bool, and false meant "as configured"."""
        if isinstance(stored, bool):
            return cls.ON if stored else cls.DEFAULT
        return cls(stored)


DEFAULT_PARALLEL = max(2, min(8, os.cpu_count() or 2))


@dataclass
class MigrationOptions:
    """What the person asked for, stored with the migration (retry and recovery read it back)."""

    method: Method = Method.RESTORE
    parallel: int = DEFAULT_PARALLEL
    overwrite: bool = False
    pause_after_export: bool = False
    replica_identity_full: bool = False
    backend: Backend = Backend.NATIVE
    runtime_server: str = ""  # flex backend: the runtime server's resource id (private networks); "" = the target's
    capture_ddl: DdlCapture = DdlCapture.DEFAULT  # online: --capture-ddl, --no-capture-ddl, or [online] capture_ddl

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MigrationOptions":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        options = cls(**known)
        options.method, options.backend = Method(options.method), Backend(options.backend)
        options.capture_ddl = DdlCapture.read(options.capture_ddl)
        return options


@dataclass(frozen=True)
class RetryChanges:
    """What a retry changes in the options, because the failure's fix asked for it; None: unchanged."""

    overwrite: bool | None = None
    replica_identity_full: bool | None = None
    parallel: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def applied_to(self, options: MigrationOptions) -> MigrationOptions:
        return replace(options, **self.to_dict())

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict) -> "RetryChanges":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def __or__(self, other: "RetryChanges") -> "RetryChanges":
        """Both sets of changes (two findings' fixes)."""
        return RetryChanges(**{**self.to_dict(), **other.to_dict()})

    def __str__(self) -> str:
        flags = {"overwrite": "--overwrite", "replica_identity_full": "--replica-identity-full"}
        said = [flags[k] for k, v in asdict(self).items() if k in flags and v]
        return " ".join(said + ([f"--parallel {self.parallel}"] if self.parallel else []))


@dataclass
class Migration:
    id: str
    source: str
    target: str
    databases: list[str]
    mode: Mode
    state: State
    requested_by: str
    channel: str = ""
    options: MigrationOptions = field(default_factory=MigrationOptions)
    error: str = ""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    message_channel: str = ""  # where the live progress message is, once posted
    message_ts: str = ""
    retry_with: RetryChanges = field(default_factory=RetryChanges)  # what the failure's fix asks a retry to change

    @property
    def retry_command(self) -> str:
        """The retry to type after this failure: with the options its fix asks for (`retry_with`, recorded
        with the failure: `--overwrite` for a non-empty target, `--replica-identity-full` for tables
        without a key) that the migration does not have yet."""
        lacking = {k: v for k, v in self.retry_with.to_dict().items() if getattr(self.options, k) != v}
        wanted = RetryChanges(**lacking)
        return f"/pgmig retry {self.id}" + (f" {wanted}" if wanted else "")


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

    READ_ONLY = "query"  # the action of a command that changes nothing (status, verify…)


@dataclass
class AuditPage:
    """One page of a subject's audit: page 1 is the newest entries, each page reads oldest first.
    `read_only` counts the read-only commands left out (0 when they are listed)."""

    entries: list[AuditEntry]
    page: int
    pages: int
    read_only: int = 0


class Change(StrEnum):
    """What pgmig changes on a customer's server (the server side is in each entry)."""

    DATABASE = "database"  # target database created (data.replaced: dropped first, by --overwrite)
    CONTENTS = "contents"  # a target database that was empty, filled by pgmig (data: oid, address, public schema)
    EXTENSIONS = "extensions"  # target extensions pgmig created in a database (data: oid, before, created)
    ROLES = "roles"  # target roles created (data.roles)
    REPLICA_IDENTITY = "replica_identity"  # source tables set to REPLICA IDENTITY FULL (data.tables: previous)
    PUBLICATION = "publication"
    SLOT = "slot"
    SUBSCRIPTION = "subscription"
    REPLICATION_ROLE = "replication_role"  # the source role a subscription logs in as (random password)
    CONSTRAINTS = "constraints"  # target FKs dropped and triggers disabled (data.parked), until cutover
    FENCE = "fence"  # source writes fenced (data: read_only_before, revoked, …)
    SERVICE_CUTOVER = "service_cutover"  # a managed service told to end its replication: no way back
    SERVICE_MIGRATION = "service_migration"  # a managed service's migration started (data: ref, slots_before)
    REPAIR = "repair"  # a key range re-copied onto the target by `/pgmig repair` (nothing to undo)
    VERIFIER = "verifier"  # continuous verification's schema, watermark table (+ target trigger) (data: oid)
    DDL_CAPTURE = "ddl_capture"  # schema-change capture: source event triggers + table, target gate (changes/ddl.py)
    # Azure changes on a flexible server, outside any migration (changes/azure.py): scope prov-N or azure:GROUP/NAME,
    # server GROUP/NAME
    AZURE_DATABASE = "azure_database"  # a database Azure created for /pgmig createdb (data: resource_id, oid, …)
    FIREWALL_RULE = "firewall_rule"  # a firewall rule set (data: start, end, before)
    SERVER_PARAMETER = "server_parameter"  # a server parameter set (data: before, value)
    SERVER_RESTART = "server_restart"  # a restart (nothing to undo)


AZURE_CHANGES = (Change.AZURE_DATABASE, Change.FIREWALL_RULE, Change.SERVER_PARAMETER, Change.SERVER_RESTART)


class Mark(StrEnum):
    PLANNED = "planned"  # about to be made (or made, if pgmig died before marking it)
    DONE = "done"  # made, and in effect
    UNDONE = "undone"  # reverted or dropped by pgmig


SOURCE, TARGET = "source", "target"


@dataclass
class JournalEntry:
    migration_id: str
    kind: Change
    server: str  # SOURCE or TARGET
    database: str
    name: str = ""
    mark: Mark = Mark.PLANNED
    data: dict = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    @property
    def live(self) -> bool:
        """Made (or maybe made) and not reverted: what undo has to deal with."""
        return self.mark is not Mark.UNDONE

    def describe(self) -> str:
        where = f"on the {self.server}" + (f" in {self.database}" if self.database else "")
        if self.kind in AZURE_CHANGES:
            where = f"on flexible server {self.server}"
        what = {
            Change.DATABASE: f"database {self.database}",
            Change.CONTENTS: f"what pgmig put into {self.database} (it was empty)",
            Change.EXTENSIONS: "extensions " + ", ".join(self.data.get("created", [])),
            Change.ROLES: "roles " + ", ".join(self.data.get("roles", [])),
            Change.REPLICA_IDENTITY: "REPLICA IDENTITY FULL on " + ", ".join(self.data.get("tables", {})),
            Change.CONSTRAINTS: "foreign keys dropped and triggers disabled",
            Change.FENCE: "writes fenced (read-only, CONNECT revoked)",
            Change.SERVICE_CUTOVER: "the service's cutover",
            Change.SERVICE_MIGRATION: f"the service's migration {self.name}",
            Change.VERIFIER: f"verification schema {self.name} (watermark table)",
            Change.DDL_CAPTURE: f"schema-change capture in {self.name} (event triggers, ddl table)",
            Change.REPAIR: f"the repair of {self.name}",
            Change.AZURE_DATABASE: f"database {self.database} (created through Azure)",
            Change.FIREWALL_RULE: f"firewall rule {self.name} {self.data.get('start')}-{self.data.get('end')}",
            Change.SERVER_PARAMETER: f"{self.name} = {self.data.get('value')} (was {self.data.get('before')})",
            Change.SERVER_RESTART: "a restart (nothing to undo)",
        }.get(self.kind, f"{self.kind.value} {self.name}")
        maybe = " (maybe: pgmig stopped while making it)" if self.mark is Mark.PLANNED else ""
        return f"{what} {where}{maybe}"
