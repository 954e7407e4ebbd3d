"""Each command's arguments, typed: one dataclass per `CommandSpec` (its `args`), whose fields are the spec's
positionals (lower-cased) and option dests; handlers read them with `ParsedCommand.of(…)`."""

from __future__ import annotations

from dataclasses import dataclass

from migration_core.state.models import DdlCapture


@dataclass(frozen=True)
class HelpArgs:
    command: str | None = None


@dataclass(frozen=True)
class CheckArgs:
    source: str
    target: str
    db: list[str] | None
    mode: str
    replica_identity_full: bool


@dataclass(frozen=True)
class PlanArgs:
    source: str
    target: str
    db: list[str] | None
    mode: str
    parallel: int | None


@dataclass(frozen=True)
class MigrateArgs:
    source: str
    target: str
    mode: str
    method: str
    db: list[str] | None
    parallel: int | None
    pause_after_export: bool
    overwrite: bool
    replica_identity_full: bool
    backend: str
    runtime_server: str | None
    capture_ddl: bool
    no_capture_ddl: bool

    @property
    def capture(self) -> DdlCapture:
        """Schema-change capture as asked (the grammar refuses both flags together)."""
        if self.no_capture_ddl:
            return DdlCapture.OFF
        return DdlCapture.ON if self.capture_ddl else DdlCapture.DEFAULT


@dataclass(frozen=True)
class ProvisionArgs:
    name: str
    resource_group: str | None
    region: str | None
    version: str
    tier: str
    sku: str
    storage_gb: str | None
    storage_size: str | None
    admin_user: str
    admin_password_env: str
    ha: str | None
    zone: str | None
    standby_zone: str | None
    network: str | None
    subnet: str | None
    private_dns_zone: str | None
    public_access: bool
    allow_azure_services: bool
    firewall: list[str] | None
    tags: str | None
    source: str | None


@dataclass(frozen=True)
class AzureCheckArgs:
    target: str | None
    backend: str | None
    source: str | None
    db: list[str] | None
    mode: str


@dataclass(frozen=True)
class CreatedbArgs:
    server: str
    dbname: str


@dataclass(frozen=True)
class FirewallArgs:
    server: str
    rules: str


@dataclass(frozen=True)
class UndoArgs:
    server: str
    request: str | None
    yes: bool


@dataclass(frozen=True)
class ConfigureArgs:
    server: str
    extensions_from: str | None
    extensions: list[str] | None
    wal_level: str | None
    restart: bool


@dataclass(frozen=True)
class StatusArgs:
    migration: str | None  # mig-N, prov-N, or None: every active migration


@dataclass(frozen=True)
class MigrationArgs:
    """cancel, resume, verify, cutover: the migration they act on."""

    migration: str


@dataclass(frozen=True)
class RepairArgs:
    migration: str
    table: str | None  # only this table's ranges (`orders` or `sales.orders`); None: every range that differs


@dataclass(frozen=True)
class RetryArgs:
    migration: str
    overwrite: bool | None
    replica_identity_full: bool | None
    parallel: int | None


@dataclass(frozen=True)
class AuditArgs:
    migration: str  # mig-N or prov-N
    all: bool
    page: int


@dataclass(frozen=True)
class CleanupArgs:
    server: str
    yes: bool


@dataclass(frozen=True)
class DdlArgs:
    migration: str
    decision: str | None = None
    id: str | None = None
    reason: str | None = None
