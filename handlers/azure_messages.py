"""Block Kit for the Azure commands: the provisioning approval card and the provisioning progress line."""

from __future__ import annotations

from handlers.actions import Action
from handlers.context import Reply
from handlers.messages import esc, header, section, sections
from handlers.migration_messages import approvals_line, decision, mention
from migration_core.azure.check import AzureReport, Level
from migration_core.azure.provision import ParameterChange, ProvisionResult
from migration_core.azure.provisioning import ProvisionRecord, ProvisionState
from migration_core.azure.validation import ProvisionRequest


def provision_card(record: ProvisionRecord, approvers: list[str], required: int, closed: str = "") -> Reply:
    pid, req = record.id, record.request
    lines = [
        f"*Provisioning requested by {mention(record.requested_by)}*: {esc(req.describe())}",
        f"Admin user `{esc(req.admin_user)}`, password from `${esc(req.admin_password_env)}`"
        + (f"; tags {esc(', '.join(f'{k}={v}' for k, v in req.tags.items()))}" if req.tags else ""),
        *warned(req),
        approvals_line(approvers, required, record.approval.expires_at),
    ]
    blocks = [
        header(f"Approve provisioning {req.name}? ({pid})"),
        *sections(lines),
        decision(
            closed,
            "provisioning",
            Action.APPROVE_PROVISION,
            Action.REJECT_PROVISION,
            f"{pid}:{record.approval.round}",
            f"Create {req.name} in Azure.",
            "Nothing is created.",
        ),
    ]
    return Reply(f"Approve provisioning {req.name}? {len(approvers)} of {required} approvals", blocks, ephemeral=False)


def warned(req: ProvisionRequest) -> list[str]:
    """What the request was allowed with but should be read (a version past its end of life…)."""
    return [f"⚠️ {esc(w)}" for w in req.warnings]


def reachability(req: ProvisionRequest) -> str:
    """How the new server can be reached, so nobody expects more."""
    if req.network == "vnet":
        return (
            f"Private access only: reachable from subnet `{esc(req.subnet.rsplit('/', 1)[-1])}`'s VNet (and peered "
            "networks) through the private DNS zone; pgmig must run there to use it"
        )
    rules = ", ".join(f"{r.name} {r.start}-{r.end}" for r in req.firewall)
    return "Public access, allowed for " + esc(
        ", ".join(x for x in (rules, "Azure services" if req.allow_azure_services else "") if x)
    )


def provision_requested(record: ProvisionRecord, required: int) -> Reply:
    """The answer to `/pgmig provision`: started, or waiting for the team."""
    pid, req, channel = record.id, record.request, record.channel
    if record.state is ProvisionState.WAITING:
        return Reply(
            f"{pid}: provisioning {req.name} awaits approval",
            [
                section(
                    f"🗳️ Provisioning *{esc(req.name)}* ({pid}) needs {required} approval(s): "
                    f"the card is in <#{channel}>."
                ),
                *[section(w) for w in warned(req)],
            ],
            ephemeral=False,
        )
    return Reply(
        f"{pid}: provisioning {req.name}",
        [
            section(
                f"🏗️ *{pid}*: provisioning {esc(req.describe())}. Progress follows in <#{channel}>; this takes several "
                "minutes."
            ),
            *[section(w) for w in warned(req)],
        ],
        ephemeral=False,
    )


def provisioning(pid: str, req: ProvisionRequest, note: str) -> Reply:
    """The progress line of a provisioning that runs."""
    return Reply(
        f"provisioning {req.name}: {note}", [section(f"⏳ *{esc(req.name)}* ({pid}): {esc(note)}")], ephemeral=False
    )


def provisioned(pid: str, req: ProvisionRequest, result: ProvisionResult, registered: bool, notes: list[str]) -> Reply:
    what = "created" if result.created else "already existed; its storage is now " + str(req.storage_gb) + " GB"
    lines = [
        f"✅ *{esc(req.name)}* ({pid}) {what} in {result.seconds:.0f} s: `{esc(result.fqdn)}` "
        f"(state {esc(result.state or 'unknown')})"
    ]
    lines.append(reachability(req))
    if result.firewall:
        lines.append(f"Firewall rules: {esc(', '.join(result.firewall))}")
    lines += warned(req)
    if notes:
        lines.append(f"Server parameters for the source: {esc('; '.join(notes))}")
    if registered:
        lines.append(
            f"Added as server `{esc(req.name)}` (user {esc(req.admin_user)}, password from "
            f"`${esc(req.admin_password_env)}`, sslmode require). Next: `/pgmig createdb {esc(req.name)} "
            f"DBNAME` or `/pgmig check SOURCE {esc(req.name)}`"
        )
    return Reply(f"{req.name} provisioned: {result.fqdn}", sections(lines), ephemeral=False)


def provision_failed(pid: str, req: ProvisionRequest, reason: str) -> Reply:
    return Reply(
        f"provisioning {req.name} failed",
        [section(f"❌ Provisioning *{esc(req.name)}* ({pid}) failed: {esc(reason)}")],
        ephemeral=False,
    )


def journaled(scope: str, what: str) -> str:
    """Where pgmig recorded a change on Azure, so that a person knows it can be traced and undone exactly."""
    return f"Recorded in pgmig's journal under `{esc(scope)}` {what}."


def database_created(server: str, name: str, scope: str) -> Reply:
    return Reply(
        f"database {name} created on {server}",
        sections(
            [
                f"✅ Database `{esc(name)}` created on *{esc(server)}* (UTF8, en_US.utf8).",
                journaled(scope, "with its identity: only this very database, while empty, is pgmig's to drop"),
            ]
        ),
        ephemeral=False,
    )


def database_exists(server: str, name: str) -> Reply:
    return Reply(
        f"database {name} exists on {server}",
        [section(f"Database `{esc(name)}` already exists on *{esc(server)}*: nothing was created.")],
        ephemeral=False,
    )


def azure_changes(server: str, scope: str, live: list[str]) -> Reply:
    """`/pgmig undo SERVER` without --yes: what pgmig's journal holds of its Azure changes there."""
    if not live:
        return Reply(
            f"no Azure change of pgmig's to undo on {server}",
            sections(
                [
                    f"Nothing under `{esc(scope)}` on *{esc(server)}*: pgmig changed nothing there through Azure, "
                    "or it was undone already."
                ]
            ),
        )
    lines = [f"*What pgmig changed on {esc(server)} through Azure* (`{esc(scope)}`):"]
    lines += [f"• {esc(x)}" for x in live]
    lines.append(
        f"`/pgmig undo {esc(server)}"
        + (f" --request {esc(scope)}" if scope.startswith("prov-") else "")
        + " --yes` undoes them, newest first — each only if it is still what pgmig made (a rule someone changed, "
        "a database someone filled, a parameter someone set since, is left and said so)"
    )
    return Reply(f"{len(live)} Azure change(s) of pgmig's on {server}", sections(lines))


def azure_undone(server: str, scope: str, done: list[str], failed: list[str]) -> Reply:
    """`/pgmig undo SERVER --yes`: what was undone or left, and what could not be (its entry stays)."""
    lines = [f"*pgmig's Azure changes on {esc(server)}* (`{esc(scope)}`):"]
    lines += [f"↩️ {esc(x)}" for x in done] or ["Nothing to undo."]
    lines += [
        f"❌ not undone: {esc(x)} — it stays in the journal: `/pgmig undo {esc(server)} --yes` tries again"
        for x in failed
    ]
    return Reply(
        f"undo on {server}: {len(done)} done" + (f", {len(failed)} not undone" if failed else ""),
        sections(lines),
        ephemeral=False,
    )


def firewall_added(server: str, listed: str, scope: str) -> Reply:
    return Reply(
        f"firewall rules added to {server}",
        sections([f"🧱 *{esc(server)}* now allows {esc(listed)}.", journaled(scope, "with what each rule replaced")]),
        ephemeral=False,
    )


def configured(
    server: str, azure_name: str, changes: list[ParameterChange], restarted: bool, pending: bool, scope: str
) -> Reply:
    """`server` is pgmig's name for it (what commands take), `azure_name` the flexible server's."""
    lines = [f"*Server parameters of {esc(server)}*" + (f" ({esc(azure_name)})" if azure_name != server else "")]
    lines += [
        f"• `{esc(c.name)}`: `{esc(c.before or '(empty)')}` → `{esc(c.after)}`"
        + (" (takes effect after a restart)" if c.pending_restart and not restarted else "")
        for c in changes
    ]
    if not changes:
        lines.append("Nothing to change: every parameter already had the wanted value.")
    if restarted:
        lines.append("🔁 restarted: the changes are in effect.")
    elif pending:
        lines.append(f"A restart is needed: `/pgmig configure {esc(server)} --restart`")
    if changes or restarted:
        lines.append(journaled(scope, "with each parameter's value before"))
    return Reply(f"{server}: {len(changes)} parameter(s) changed", sections(lines), ephemeral=False)


PROVISION_ICON = {
    "waiting": "🗳️",
    "approved": "⏳",
    "running": "⏳",
    "done": "✅",
    "failed": "❌",
    "rejected": "🚫",
    "expired": "⌛",
}


def provision_status(record: ProvisionRecord) -> Reply:
    pid, state = record.id, record.state.value
    detail = (
        "not approved in time: nothing was created; run `/pgmig provision` again"
        if record.state is ProvisionState.EXPIRED
        else record.detail or f"requested by {record.requested_by}"
    )
    lines = [f"{PROVISION_ICON.get(state, '⏳')} *{pid}* · server *{esc(record.request.name)}* · {state}", esc(detail)]
    lines += [f"FQDN `{esc(record.fqdn)}`"] if record.fqdn else []
    lines.append(f"requested by {mention(record.requested_by)} · `/pgmig audit {pid}`")
    return Reply(f"{pid}: {state}", sections(lines))


CHECK_ICON = {Level.OK: "✅", Level.WARN: "⚠️", Level.FAIL: "❌"}


def azure_check(report: AzureReport) -> Reply:
    """`/pgmig azure-check`: one line per finding, the fix beneath every one that needs acting on."""
    lines = [
        f"{CHECK_ICON[i.level]} *{esc(i.subject)}*: {esc(i.said)}" + (f"\n      fix: {esc(i.fix)}" if i.fix else "")
        for i in report.items
    ]
    blocking, warnings = len(report.blocking), len(report.warnings)
    verdict = (
        f"{blocking} problem(s) to fix before relying on Azure"
        if blocking
        else f"ready ({warnings} warning(s))"
        if warnings
        else "ready"
    )
    return Reply(f"azure-check: {verdict}", [header(f"Azure check: {verdict}"), *sections(lines)])
