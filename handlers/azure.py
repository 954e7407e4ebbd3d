"""`/pgmig provision | createdb | firewall | configure` and the provisioning approval buttons.

Every rule Azure would enforce is checked before a request is sent; provisioning runs in the background
(minutes) with its progress edited into one message, and can be gated by approvers like a cutover.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict
from datetime import datetime, timedelta

from handlers import azure_messages as am
from handlers import messages
from handlers.authz import may_approve, may_change_cloud
from handlers.check import resolve_servers
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from migration_core import extensions
from migration_core.azure.clients import AzureClients
from migration_core.azure.flex_backend import azure_target
from migration_core.azure.provision import AzureServer, configure, create_database, firewall_rule, provision
from migration_core.azure.validation import FirewallRule, ProvisionRequest, parse_firewall, validate
from migration_core.errors import MigrationError
from migration_core.models import Approval, AuditEntry, Step, utcnow
from migration_core.secrets import redact
from migration_core.servers import ConnectionProblem, ServerConfig, server_major

log = logging.getLogger(__name__)
STEP = "provision"
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def _azure(svc: Services) -> AzureClients:
    if svc.azure is None or not svc.azure.config.enabled:
        raise MigrationError("Azure is not configured in this pgmig",
                             "set AZURE_SUBSCRIPTION_ID (or [azure] subscription_id) and Azure credentials "
                             "(AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET or a managed identity), "
                             "then restart pgmig")
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
            f"nobody may {what} until operators are named: set [slack] operators = [\"U…\"] (Slack user or "
            "user-group ids) in pgmig's config and restart pgmig")
    return messages.error_message(f"only operators may {what} ([slack] operators)")


def _password_envs(svc: Services, name: str) -> set[str]:
    """The variables a provisioning request may read its password from: `[azure] admin_password_envs`, and
    the configured server's own when the request re-provisions (grows) that flexible server."""
    allowed = set(svc.azure.config.admin_password_envs) if svc.azure else set()
    existing = svc.servers.get(name)
    if existing is not None and existing.azure_name == name and existing.password_env:
        allowed.add(existing.password_env)
    return allowed


async def provision_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    azure = _azure(svc)
    if denied := await _operator(inv, svc, "provision servers"):
        return denied
    a = dict(cmd.args)
    if a["storage_gb"] and a["storage_size"] and a["storage_gb"] != a["storage_size"]:
        return messages.error_message("--storage-gb and --storage-size are the same setting; give one")
    config = azure.config
    a["storage_gb"] = a["storage_gb"] or a["storage_size"] or "128"
    a["resource_group"] = a["resource_group"] or config.resource_group
    a["region"] = a["region"] or config.region
    existing = svc.servers.get(a["name"])
    if existing is not None and existing.azure_name != a["name"]:
        return messages.error_message(f"`{a['name']}` is already a configured server that is not this flexible "
                                      "server; choose another name")
    source_major = None
    if a["source"]:
        source = resolve_servers(svc, a["source"])
        if isinstance(source, Reply):
            return source
        source_major = await server_major(source[0])
    req = validate(a, source_major, _password_envs(svc, a["name"]))
    pid = await svc.store.next_id("provision", "prov")
    now = utcnow()
    expires = now + timedelta(minutes=svc.policy.approval_timeout_minutes)
    channel = svc.policy.notify_channel or inv.channel
    step = Step(pid, STEP, "waiting", f"requested by {inv.user}", now, None,
                {"request": asdict(req), "source": a["source"] or "", "requested_by": inv.user, "channel": channel,
                 "round": now.isoformat(),
                 "expires_at": expires.isoformat(), "ts": ""})
    await svc.store.audit(AuditEntry(inv.user, "provision.requested", req.describe(), pid, inv.channel))
    if not azure.config.provision_requires_approval:
        await svc.store.save_step(step)
        _start(svc, pid, req, inv.user, channel)
        return Reply(f"{pid}: provisioning {req.name}", [messages.section(
            f"🏗️ *{pid}*: provisioning {messages.esc(req.describe())}. Progress follows in <#{channel}>; "
            "this takes several minutes.")], ephemeral=False)
    if not svc.policy.approvers:
        return messages.error_message("provisioning needs approval ([azure] provision_requires_approval) but no "
                                      "approvers are configured ([slack] approvers)")
    step.data["ts"] = await svc.poster.post(channel, am.provision_card(
        pid, req, inv.user, [], svc.policy.required_approvals, step.data["expires_at"]))
    await svc.store.save_step(step)
    return Reply(f"{pid}: provisioning {req.name} awaits approval", [messages.section(
        f"🗳️ Provisioning *{messages.esc(req.name)}* ({pid}) needs {svc.policy.required_approvals} approval(s): "
        f"the card is in <#{channel}>.")], ephemeral=False)


def _start(svc: Services, pid: str, req: ProvisionRequest, actor: str, channel: str) -> None:
    svc.engine.background(_provision(svc, pid, req, actor, channel), f"provision {pid}")


async def _provision(svc: Services, pid: str, req: ProvisionRequest, actor: str, channel: str) -> None:
    """The long-running part: create (or grow), firewall rules, register as a server; the channel sees it all."""
    azure = _azure(svc)
    ts = await svc.poster.post(channel, am.provisioning(pid, req, f"creating {req.describe()}"))

    async def progress(note: str) -> None:
        if ts:
            await svc.poster.update(channel, ts, am.provisioning(pid, req, note))

    step = await svc.store.step(pid, STEP)
    data = step.data if step else {}
    started = utcnow()
    await svc.store.save_step(Step(pid, STEP, "running", f"creating {req.describe()}", started, None, data))
    try:
        result = await provision(azure, req, progress, azure.config.progress_seconds)
    except Exception as exc:  # the channel must hear how it ended, whatever happened
        if not isinstance(exc, MigrationError):
            log.exception("provisioning %s failed", pid)
        reason = str(exc) if isinstance(exc, MigrationError) else \
            f"unexpected {type(exc).__name__}: {redact(str(exc))[:300]} (details in pgmig's log)"
        await svc.store.save_step(Step(pid, STEP, "failed", reason, started, utcnow(), data))
        await svc.store.audit(AuditEntry("pgmig", "provision.failed", reason[:2000], pid))
        await _show(svc, channel, ts, am.provision_failed(pid, req, reason))
        return
    server = ServerConfig(name=req.name, host=result.fqdn, user=req.admin_user, password_env=req.admin_password_env,
                          sslmode="require", azure_resource_group=req.resource_group, azure_server=req.name)
    registered = bool(result.fqdn) and req.name not in svc.servers
    if registered:
        svc.servers[req.name] = server
        await svc.store.save_server(req.name, server.as_dict(), actor)
    notes = await _allow_source_extensions(svc, req, data.get("source", ""), restart=result.created)
    await svc.store.save_step(Step(pid, STEP, "done", f"{result.fqdn} in {result.seconds:.0f} s", started, utcnow(),
                                   {**data, "fqdn": result.fqdn}))
    await svc.store.audit(AuditEntry("pgmig", "provision.completed", f"{req.name}: {result.fqdn}; " + "; ".join(notes),
                                     pid))
    await _show(svc, channel, ts, am.provisioned(pid, req, result, registered, notes))


async def _allow_source_extensions(svc: Services, req: ProvisionRequest, source: str, restart: bool) -> list[str]:
    """The server is to receive `source`: allow-list (and preload) the extensions it uses, restarting a
    brand-new server when that needs it. A problem here is reported, not fatal: the server exists."""
    if not source or source not in svc.servers:
        return []
    target = AzureServer(req.resource_group, req.name)
    try:
        wanted = sorted({e for names in (await extensions.inventory(svc.servers[source])).values() for e in names})
        if not wanted:
            return [f"{source} uses no extensions: nothing to allow-list"]
        changes, restarted = await configure(_azure(svc), target, wanted, restart=restart)
    except (MigrationError, ConnectionProblem) as exc:
        return [f"the extensions of {source} could not be allow-listed ({exc}); "
                f"`/pgmig configure {req.name} --extensions-from {source}` tries again"]
    notes = [f"{c.name} = {c.after}" for c in changes] or [f"{source}'s extensions were already allowed"]
    if restarted:
        notes.append("restarted so that the preloaded libraries are loaded")
    elif any(c.pending_restart for c in changes):
        notes.append(f"a restart is needed: `/pgmig configure {req.name} --restart`")
    return notes


async def _show(svc: Services, channel: str, ts: str, reply: Reply) -> None:
    if ts:
        await svc.poster.update(channel, ts, reply)
    else:
        await svc.poster.post(channel, reply)


def _request(data: dict) -> ProvisionRequest:
    saved = data["request"]
    return ProvisionRequest(**{**saved, "firewall": [FirewallRule(**r) for r in saved["firewall"]]})


async def expire_provisioning(svc: Services) -> list[str]:
    """Requests nobody approved in time: closed, their cards rewritten without buttons."""
    expired = []
    for step in await svc.store.steps_named(STEP):
        d = step.data
        if step.state == "waiting" and datetime.fromisoformat(d["expires_at"]) < utcnow():
            await svc.store.save_step(Step(step.migration_id, STEP, "expired", "not approved in time", step.started_at,
                                           utcnow(), d))
            await svc.store.audit(AuditEntry("pgmig", "provision.expired", "", step.migration_id))
            approvers = [x.approver for x in await svc.store.approvals(step.migration_id, d["round"])
                         if x.decision == "approve"]
            if d.get("ts"):
                await svc.poster.update(d["channel"], d["ts"], am.provision_card(
                    step.migration_id, _request(d), d["requested_by"], approvers, svc.policy.required_approvals,
                    d["expires_at"], "expired without enough approvals: nothing was created"))
            expired.append(step.migration_id)
    return expired


async def resume_provisioning(svc: Services, sweep_seconds: float = 60.0) -> list[str]:
    """At start-up: requests approved or running when pgmig stopped are run again (provisioning finds a
    server already created and only waits for it), so none is left hanging; expired requests are closed
    every `sweep_seconds`."""
    async def sweep() -> None:
        await expire_provisioning(svc)
    svc.engine.jobs.every("provision-expiry", sweep_seconds, sweep)
    resumed = []
    for step in await svc.store.steps_named(STEP):
        if step.state in ("approved", "running") and svc.azure is not None and svc.azure.config.enabled:
            await svc.store.audit(AuditEntry("pgmig", "provision.resumed", "after a restart", step.migration_id))
            _start(svc, step.migration_id, _request(step.data), step.data["requested_by"], step.data["channel"])
            resumed.append(step.migration_id)
    return resumed


async def decide_provision(action: str, pid: str, inv: Invocation, svc: Services) -> Reply | None:
    """An Approve or Reject click on a provisioning card; the same rules as a cutover approval."""
    step = await svc.store.step(pid, STEP)
    verb = "approve" if action == "approve" else "reject"
    if step is None or step.state != "waiting":
        await svc.store.audit(AuditEntry(inv.user, f"provision.{verb}.refused", "no open request", pid, inv.channel))
        return messages.error_message("this provisioning request is no longer open")
    req, d = _request(step.data), step.data

    async def close(note: str, state: str) -> None:
        await svc.store.save_step(Step(pid, STEP, state, note, step.started_at, utcnow(), d))
        approvers = [x.approver for x in await svc.store.approvals(pid, d["round"]) if x.decision == "approve"]
        await svc.poster.update(d["channel"], d["ts"], am.provision_card(
            pid, req, d["requested_by"], approvers, svc.policy.required_approvals, d["expires_at"], note))

    if datetime.fromisoformat(d["expires_at"]) < utcnow():
        await expire_provisioning(svc)
        return messages.error_message("this provisioning request has expired; run `/pgmig provision` again")
    if verb == "approve" and inv.user == d["requested_by"]:
        await svc.store.audit(AuditEntry(inv.user, "provision.approve.refused", "requester", pid, inv.channel))
        return messages.error_message("you requested this server: someone else must approve it")
    if not await may_approve(inv.user, svc.policy, svc.directory) and not (
            verb == "reject" and inv.user == d["requested_by"]):
        await svc.store.audit(AuditEntry(inv.user, f"provision.{verb}.refused", "not an approver", pid, inv.channel))
        return messages.error_message(f"only approvers may {verb} provisioning ([slack] approvers)")
    if not await svc.store.add_approval(Approval(pid, inv.user, verb, round=d["round"])):
        return messages.error_message(f"your decision on {pid} is already recorded")
    await svc.store.audit(AuditEntry(inv.user, f"provision.{verb}", req.name, pid, inv.channel))
    if verb == "reject":
        await close(f"rejected by {inv.user}: nothing was created", "rejected")
        return None
    approvals = [x.approver for x in await svc.store.approvals(pid, d["round"]) if x.decision == "approve"]
    if len(approvals) >= svc.policy.required_approvals:
        await close(f"approved by {', '.join(approvals)}: provisioning started", "approved")
        _start(svc, pid, req, d["requested_by"], d["channel"])
        return None
    await svc.poster.update(d["channel"], d["ts"], am.provision_card(
        pid, req, d["requested_by"], approvals, svc.policy.required_approvals, d["expires_at"]))
    return None


async def provision_status(pid: str, svc: Services) -> Reply:
    step = await svc.store.step(pid, STEP)
    if step is None:
        return messages.error_message(f"there is no {pid}")
    req, state, detail = step.data["request"], step.state, step.detail
    if state == "waiting" and datetime.fromisoformat(step.data["expires_at"]) < utcnow():
        state, detail = "expired", "not approved in time: nothing was created; run `/pgmig provision` again"
    return am.provision_status(pid, req["name"], state, detail, step.data.get("requested_by", ""),
                               step.data.get("fqdn", ""))


async def createdb_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    found = await _azure_target(inv, svc, cmd.args["server"], "create databases")
    if isinstance(found, Reply):
        return found
    db = cmd.args["dbname"]
    if not DATABASE_NAME.match(db) or db.lower().startswith("pg_") or db in ("azure_maintenance", "azure_sys"):
        return messages.error_message(f"`{db}` is not a database name Azure accepts: 1–63 letters, digits, "
                                      "underscores, `$` or hyphens, not starting with a digit or `pg_`")
    name = await create_database(_azure(svc), found, db)
    await svc.store.audit(AuditEntry(inv.user, "azure.createdb", f"{found.name}/{name}", "", inv.channel))
    return Reply(f"database {name} created on {found.name}", [messages.section(
        f"✅ Database `{messages.esc(name)}` created on *{messages.esc(found.name)}* (UTF8, en_US.utf8).")],
        ephemeral=False)


async def firewall_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    found = await _azure_target(inv, svc, cmd.args["server"], "change firewall rules")
    if isinstance(found, Reply):
        return found
    rules = [parse_firewall(r.strip()) for r in cmd.args["rules"].split(",") if r.strip()]
    azure = _azure(svc)
    for rule in rules:
        await firewall_rule(azure, found, rule)
    listed = ", ".join(f"{r.name} {r.start}-{r.end}" for r in rules)
    await svc.store.audit(AuditEntry(inv.user, "azure.firewall", f"{found.name}: {listed}", "", inv.channel))
    return Reply(f"firewall rules added to {found.name}", [messages.section(
        f"🧱 *{messages.esc(found.name)}* now allows {messages.esc(listed)}.")], ephemeral=False)


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
        return messages.error_message("nothing to configure: give --extensions-from SOURCE, --extensions, "
                                      "--wal-level or --restart")
    changes, restarted = await configure(_azure(svc), found, sorted(set(wanted)), a["wal_level"], a["restart"])
    await svc.store.audit(AuditEntry(inv.user, "azure.configure", "; ".join(
        f"{c.name}={c.after}" for c in changes) + (" (restarted)" if restarted else ""), "", inv.channel))
    return am.configured(a["server"], found.name, changes, restarted, any(c.pending_restart for c in changes))
