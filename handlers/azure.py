"""`/pgmig provision | createdb | firewall | configure | azure-check` and the provisioning approval buttons:
call the core (the provisioning lifecycle is migration_core/azure/provisioning.py), render. The router has
refused them already when Azure is not configured, then anyone not on an explicit operators list for what
changes anything (their specs' `needs_azure` and `who`)."""

from __future__ import annotations

import re

from handlers import azure_messages as am
from handlers import messages
from handlers.args import AzureCheckArgs, ConfigureArgs, CreatedbArgs, FirewallArgs, ProvisionArgs, UndoArgs
from handlers.authz import may_approve
from handlers.check import resolve_servers
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from migration_core.azure import validation
from migration_core.azure.check import CheckRequest
from migration_core.changes.azure import AzureServer
from migration_core.state.approval import Verdict
from migration_core.state.models import AuditEntry

DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def _flexible_server(svc: Services, name: str) -> AzureServer | Reply:
    """The flexible server a configured server name stands for, or the reply saying why there is none."""
    found = resolve_servers(svc, name)
    if isinstance(found, Reply):
        return found
    return svc.provisioner.flexible_server(name)


async def provision_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(ProvisionArgs)
    config = svc.provisioner.config
    if a.storage_gb and a.storage_size and a.storage_gb != a.storage_size:
        return messages.error_message("--storage-gb and --storage-size are the same setting; give one")
    args = validation.ProvisionArgs(
        name=a.name,
        admin_user=a.admin_user,
        admin_password_env=a.admin_password_env,
        resource_group=a.resource_group or config.resource_group,
        region=a.region or config.region,
        version=a.version,
        tier=a.tier,
        sku=a.sku,
        storage_gb=a.storage_gb or a.storage_size or "128",
        ha=a.ha,
        zone=a.zone,
        standby_zone=a.standby_zone,
        public_access=a.public_access,
        allow_azure_services=a.allow_azure_services,
        firewall=a.firewall or [],
        tags=a.tags,
        source=a.source or "",
        network=a.network,
        subnet=a.subnet,
        private_dns_zone=a.private_dns_zone,
    )
    if args.source and isinstance(found := resolve_servers(svc, args.source), Reply):
        return found
    record = await svc.provisioner.request(args, inv.user, svc.policy.notify_channel or inv.channel)
    return am.provision_requested(record, svc.policy.required_approvals)


async def decide_provision(action: str, value: str, inv: Invocation, svc: Services) -> Reply | None:
    """An Approve or Reject click on a provisioning card (its value: `prov-N:round`); the rules of a cutover."""
    verb = "approve" if action == "approve" else "reject"
    pid, _, round = value.partition(":")
    svc.provisioner.clients()  # refused first when Azure is not configured, as the Azure commands are
    allowed = await may_approve(inv.user, svc.policy, svc.directory)
    decision = await svc.provisioner.decide(pid, round, inv.user, verb, channel=inv.channel, is_approver=allowed)
    return messages.error_message(decision.reason) if decision.verdict is Verdict.REFUSED else None


async def provision_status(pid: str, svc: Services) -> Reply:
    record = await svc.provisioner.get(pid)
    if record is None:
        return messages.error_message(f"there is no {pid}")
    return am.provision_status(record)


async def createdb_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(CreatedbArgs)
    found = _flexible_server(svc, a.server)
    if isinstance(found, Reply):
        return found
    db = a.dbname
    if not DATABASE_NAME.match(db) or db.lower().startswith("pg_") or db in ("azure_maintenance", "azure_sys"):
        return messages.error_message(
            f"`{db}` is not a database name Azure accepts: 1–63 letters, digits, "
            "underscores, `$` or hyphens, not starting with a digit or `pg_`"
        )
    name = await svc.provisioner.create_database(a.server, db)
    if name is None:
        return am.database_exists(found.name, db)
    await svc.engine.record(AuditEntry(inv.user, "azure.createdb", f"{found.name}/{name}", "", inv.channel))
    return am.database_created(found.name, name, found.scope)


async def firewall_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(FirewallArgs)
    found = _flexible_server(svc, a.server)
    if isinstance(found, Reply):
        return found
    rules = [validation.parse_firewall(r.strip()) for r in a.rules.split(",") if r.strip()]
    await svc.provisioner.add_firewall_rules(a.server, rules)
    listed = ", ".join(f"{r.name} {r.start}-{r.end}" for r in rules)
    await svc.engine.record(AuditEntry(inv.user, "azure.firewall", f"{found.name}: {listed}", "", inv.channel))
    return am.firewall_added(found.name, listed, found.scope)


async def undo_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    """`/pgmig undo SERVER [--request prov-N] [--yes]`: the Azure changes pgmig journaled on a flexible server
    (its own, or a provisioning request's), listed; with --yes undone, each only if it is still pgmig's."""
    a = cmd.of(UndoArgs)
    found = _flexible_server(svc, a.server)
    if isinstance(found, Reply):
        return found
    if a.request is not None and not re.fullmatch(r"prov-\d{1,9}", a.request):
        return messages.error_message(f"`{a.request}` is not a provisioning request: like prov-3")
    scope = a.request or found.scope
    if not a.yes:
        return am.azure_changes(a.server, scope, await svc.provisioner.azure_changes(a.server, a.request or ""))
    outcome = await svc.provisioner.undo_changes(a.server, a.request or "")
    said = "; ".join(outcome.done + [f"not undone: {f}" for f in outcome.failed]) or "nothing to undo"
    await svc.engine.record(
        AuditEntry(inv.user, "azure.undo", f"{found.name} ({scope}): {said}"[:2000], "", inv.channel)
    )
    return am.azure_undone(a.server, scope, outcome.done, outcome.failed)


async def configure_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(ConfigureArgs)
    found = _flexible_server(svc, a.server)
    if isinstance(found, Reply):
        return found
    wanted = list(a.extensions or [])
    if a.extensions_from:
        source = resolve_servers(svc, a.extensions_from)
        if isinstance(source, Reply):
            return source
        wanted += await svc.provisioner.source_extensions(source[0].name)
    if not wanted and not a.wal_level and not a.restart:
        return messages.error_message(
            "nothing to configure: give --extensions-from SOURCE, --extensions, --wal-level or --restart"
        )
    changes, restarted = await svc.provisioner.configure_server(a.server, sorted(set(wanted)), a.wal_level, a.restart)
    await svc.engine.record(
        AuditEntry(
            inv.user,
            "azure.configure",
            "; ".join(f"{c.name}={c.after}" for c in changes) + (" (restarted)" if restarted else ""),
            "",
            inv.channel,
        )
    )
    return am.configured(a.server, found.name, changes, restarted, any(c.pending_restart for c in changes), found.scope)


async def azure_check_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    """Read-only, so anyone may ask: what pgmig's Azure identity can and cannot do, with the fixes."""
    a = cmd.of(AzureCheckArgs)
    target = source = None
    if a.target:
        found = resolve_servers(svc, a.target)
        if isinstance(found, Reply):
            return found
        target = found[0]
    if a.source:
        found = resolve_servers(svc, a.source)
        if isinstance(found, Reply):
            return found
        source = found[0]
    req = CheckRequest(target, source, a.backend or "", tuple(a.db or ()), a.mode != "offline")
    return am.azure_check(await svc.provisioner.check(req))
