"""The persistent state store: SQLite (embedded default) or PostgreSQL (several bot replicas).

It holds migrations, their steps, approvals, the audit log, provisioned servers, the journal of every
change pgmig made on a customer's server and the metrics its charts are drawn from, with one repository per
table group (each module here).
Every text a person will read back (a migration's error, a step's detail and data, an audit entry)
passes through `secrets.redact` on its way in, whoever wrote it.
"""

from __future__ import annotations

from migration_core.store.approvals import ApprovalsRepo
from migration_core.store.audit import AuditRepo
from migration_core.store.budget import BudgetRepo
from migration_core.store.commands import CommandsRepo
from migration_core.store.ids import IdsRepo
from migration_core.store.journal import JournalRepo
from migration_core.store.leases import Lease, LeaseLost, LeasesRepo
from migration_core.store.metrics import MetricsRepo
from migration_core.store.migrations import MigrationsRepo
from migration_core.store.provisioning import ProvisioningRepo
from migration_core.store.steps import StepsRepo

__all__ = ["Lease", "LeaseLost", "Store"]


class Store(
    IdsRepo,
    MigrationsRepo,
    LeasesRepo,
    StepsRepo,
    ApprovalsRepo,
    AuditRepo,
    ProvisioningRepo,
    JournalRepo,
    CommandsRepo,
    BudgetRepo,
    MetricsRepo,
):
    """Migrations, steps, approvals and audit entries; survives restarts; safe for concurrent replicas.

    Open one with `Store.open(url)`; every repository shares its one connection (`Database`)."""
