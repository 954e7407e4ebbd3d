"""`/pgmig ddl mig-N [apply|skip ID [REASON] | pause [REASON] | resume]`: the schema changes captured on a
streaming migration's source, the operators' decisions on them (migration_core/observe/ddl.py), and the
cutover's hold. Applying a destructive change (DROP, ALTER … TYPE, RENAME, a table rewrite) is an approval:
with [slack] approvers set, it takes `required_approvals` distinct approvers, as a cutover does; without, one
operator decides, as for any other. Skipping takes a reason: the card and the audit say why.

A card's buttons (handlers/ddl_messages.py) carry this command's text, so a click is parsed, audited and
authorized as the typed command. In Slack, Skip first opens a form asking why (`skip_form`; bot/app.py opens it
and hands its submission back as the click, with the reason after the command); the shell's `press Skip`
answers with the command to type."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from handlers import ddl_messages as dm
from handlers import messages
from handlers.args import DdlArgs
from handlers.authz import may_approve
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand

SKIP_FORM = dm.SKIP_FORM


async def ddl_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(DdlArgs)
    m = await svc.engine.find(a.migration)
    if m is None:
        return messages.error_message(f"there is no {a.migration}; `/pgmig list` shows the migrations")
    required = dm.required_approvals(svc.policy)
    if a.decision is None:
        return dm.schema_changes(m.id, await svc.engine.schema_changes(m.id), required)
    verb = a.decision.lower()
    if verb in ("pause", "resume"):  # every word after `pause` is the reason
        reason = " ".join(w for w in (a.id, a.reason) if w)
        return dm.held(m.id, await svc.engine.pause_cutover(m.id, inv.user, reason, resume=verb == "resume"))
    if a.id is None:
        return messages.error_message(f"which change? `/pgmig ddl {m.id}` lists them with their ids")
    if verb == "skip" and not (a.reason or "").strip():
        return dm.skip_needs_reason(m.id, a.id)
    c = await svc.engine.decide_schema_change(
        m.id,
        a.id,
        verb,
        inv.user,
        a.reason or "",
        is_approver=not svc.policy.approvers or await may_approve(inv.user, svc.policy, svc.directory),
        required=required,
    )
    return dm.decided(m.id, c, required)


@dataclass
class SkipForm:
    """A submitted Skip form: the click it stands for (the button's command with the reason after it) and
    where its answer goes."""

    command: str
    channel: str
    on_home: bool


def skip_form(command: str, channel: str, on_home: bool) -> dict:
    """What Skip opens in Slack: a modal asking why (a confirm dialog cannot take text)."""
    return dm.skip_form(command, dm.skip_metadata(command, channel, on_home))


def read_skip(view: dict) -> SkipForm:
    """The submitted Skip form, as the command the router runs (`ddl mig-N skip ID 'REASON'`)."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        meta = {}
    values = (view.get("state") or {}).get("values") or {}
    reason = " ".join(str(((values.get(dm.REASON) or {}).get(dm.REASON) or {}).get("value") or "").split())
    command = str(meta.get("command") or "")
    return SkipForm(
        f"{command} {shlex.quote(reason)}" if reason else command,
        str(meta.get("channel") or ""),
        bool(meta.get("home")),
    )
