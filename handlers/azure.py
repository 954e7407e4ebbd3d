"""`/pgmig provision | createdb | firewall | configure | azure-check` and the provisioning approval buttons:
parse, authorize (Azure configured first, then an explicit operators list for what changes anything), call
the core (the provisioning lifecycle is migration_core/azure/provisioning.py), render."""

from __future__ import annotations

import re

from handlers import azure_messages as am
from handlers import messages
from handlers.authz import may_approve, may_change_cloud
from handlers.check import resolve_servers
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from migration_core.azure.check import CheckRequest
from migration_core.azure.clients import AzureClients
from migration_core.azure.flex_backend import azure_target
from migration_core.azure.provision import AzureServer, configure, create_database, firewall_rule
from migration_core.azure.provisioning import Provisioner
from migration_core.azure.validation import ProvisionArgs, parse_firewall
from migration_core.changes import extensions
from migration_core.state.approval import Verdict
from migration_core.state.errors import MigrationError
from migration_core.state.models import AuditEntry

DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def _azure(svc: Services) -> AzureClients:
    if svc.azure is None or not svc.azure.config.enabled:
        raise MigrationError(
            "Azure is not configured in this pgmig",
            "set AZURE_SUBSCRIPTION_ID (or [azure] subscription_id) and Azure credentials "
            "(AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET or a managed identity), "
            "then restart pgmig",
        )
    return svc.azure


async def _azure_target(inv: Invocation, svc: Services, name: str, what: str) -> AzureServer | Reply:
    """The flexible server an operator's command acts on, or the reply saying why not (Azure not
    configured comes first, then who may change cloud resources)."""
    _azure(svc)
    if denied := await _operator(inv, svc, what):
        return denied
    found = resolve_servers(svc, name)
    if isinstance(found, Reply):
        return found
    return AzureServer(*azure_target(found[0]))


async def _operator(inv: Invocation, svc: Services, what: str) -> Reply | None:
    """Cloud resources are only created or changed by named operators: an empty list refuses everyone."""
    if await may_change_cloud(inv.user, svc.policy, svc.directory):
        return None
    if not svc.policy.operators:
        return messages.error_message(
            f'nobody may {what} until operators are named: set [slack] operators = ["U…"] (Slack user or '
            "user-group ids) in pgmig's config and restart pgmig"
        )
    return messages.error_message(f"only operators may {what} ([slack] operators)")


async def provision_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    config = _azure(svc).config
    if denied := await _operator(inv, svc, "provision servers"):
        return denied
    a = cmd.args
    if a["storage_gb"] and a["storage_size"] and a["storage_gb"] != a["storage_size"]:
        return messages.error_message("--storage-gb and --storage-size are the same setting; give one")
    args = ProvisionArgs(
        name=a["name"],
        admin_user=a["admin_user"],
        admin_password_env=a["admin_password_env"],
        resource_group=a["resource_group"] or config.resource_group,
        region=a["region"] or config.region,
        version=a["version"],
        tier=a["tier"],
        sku=a["sku"],
        storage_gb=a["storage_gb"] or a["storage_size"] or "128",
        ha=a["ha"],
        zone=a["zone"],
        standby_zone=a["standby_zone"],
        public_access=a["public_access"],
        allow_azure_services=a["allow_azure_services"],
        firewall=a["firewall"] or [],
        tags=a["tags"],
        source=a["source"] or "",
        network=a["network"],
        subnet=a["subnet"],
        private_dns_zone=a["private_dns_zone"],
    )
    if args.source and isinstance(found := resolve_servers(svc, args.source), Reply):
        return found
    record = await _provisioner(svc).request(args, inv.user, svc.policy.notify_channel or inv.channel)
    return am.provision_requested(record, svc.policy.required_approvals)


def _provisioner(svc: Services) -> Provisioner:
    _azure(svc)
    assert svc.provisioner is not None  # built whenever Azure is configured (bot/runtime.py)
    return svc.provisioner


async def decide_provision(action: str, value: str, inv: Invocation, svc: Services) -> Reply | None:
    """An Approve or Reject click on a provisioning card (its value: `prov-N:round`); the rules of a cutover."""
    verb = "approve" if action == "approve" else "reject"
    pid, _, round = value.partition(":")
    allowed = await may_approve(inv.user, svc.policy, svc.directory)
    decision = await _provisioner(svc).decide(pid, round, inv.user, verb, channel=inv.channel, is_approver=allowed)
    return messages.error_message(decision.reason) if decision.verdict is Verdict.REFUSED else None


async def provision_status(pid: str, svc: Services) -> Reply:
    record = await svc.provisioner.get(pid) if svc.provisioner is not None else None
    if record is None:
        return messages.error_message(f"there is no {pid}")
    return am.provision_status(record)


async def createdb_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    found = await _azure_target(inv, svc, cmd.args["server"], "create databases")
    if isinstance(found, Reply):
        return found
    db = cmd.args["dbname"]
    if not DATABASE_NAME.match(db) or db.lower().startswith("pg_") or db in ("azure_maintenance", "azure_sys"):
        return messages.error_message(
            f"`{db}` is not a database name Azure accepts: 1–63 letters, digits, "
            "underscores, `$` or hyphens, not starting with a digit or `pg_`"
        )
    name = await create_database(_azure(svc), found, db)
    await svc.engine.record(AuditEntry(inv.user, "azure.createdb", f"{found.name}/{name}", "", inv.channel))
    return am.database_created(found.name, name)


async def firewall_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    found = await _azure_target(inv, svc, cmd.args["server"], "change firewall rules")
    if isinstance(found, Reply):
        return found
    rules = [parse_firewall(r.strip()) for r in cmd.args["rules"].split(",") if r.strip()]
    azure = _azure(svc)
    for rule in rules:
        await firewall_rule(azure, found, rule)
    listed = ", ".join(f"{r.name} {r.start}-{r.end}" for r in rules)
    await svc.engine.record(AuditEntry(inv.user, "azure.firewall", f"{found.name}: {listed}", "", inv.channel))
    return am.firewall_added(found.name, listed)


async def configure_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.args
    found = await _azure_target(inv, svc, a["server"], "change server parameters")
    if isinstance(found, Reply):
        return found
    wanted = list(a["extensions"] or [])
    if a["extensions_from"]:
        source = resolve_servers(svc, a["extensions_from"])
        if isinstance(source, Reply):
            return source
        wanted += [e for names in (await extensions.inventory(source[0])).values() for e in names]
    if not wanted and not a["wal_level"] and not a["restart"]:
        return messages.error_message(
            "nothing to configure: give --extensions-from SOURCE, --extensions, --wal-level or --restart"
        )
    changes, restarted = await configure(_azure(svc), found, sorted(set(wanted)), a["wal_level"], a["restart"])
    await svc.engine.record(
        AuditEntry(
            inv.user,
            "azure.configure",
            "; ".join(f"{c.name}={c.after}" for c in changes) + (" (restarted)" if restarted else ""),
            "",
            inv.channel,
        )
    )
    return am.configured(a["server"], found.name, changes, restarted, any(c.pending_restart for c in changes))


async def azure_check_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    """Read-only, so anyone may ask: what pgmig's Azure identity can and cannot do, with the fixes."""
    a = cmd.args
    _azure(svc)
    target = source = None
    if a["target"]:
        found = resolve_servers(svc, a["target"])
        if isinstance(found, Reply):
            return found
        target = found[0]
    if a["source"]:
        found = resolve_servers(svc, a["source"])
        if isinstance(found, Reply):
            return found
        source = found[0]
    req = CheckRequest(target, source, a["backend"] or "", tuple(a["db"] or ()), a["mode"] != "offline")
    return am.azure_check(await _provisioner(svc).check(req))
