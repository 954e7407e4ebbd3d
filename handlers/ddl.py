"""`/pgmig ddl mig-N [apply|skip ID [REASON]]`: the schema changes captured on a streaming migration's source
and the operators' decisions on them (migration_core/observe/ddl.py). Applying a destructive change (DROP,
ALTER … TYPE, RENAME, a table rewrite) is an approval: with [slack] approvers set, it takes
`required_approvals` distinct approvers, as a cutover does; without, one operator decides, as for any other."""

from __future__ import annotations

from handlers import messages
from handlers.args import DdlArgs
from handlers.authz import may_approve
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from handlers.messages import esc
from migration_core.observe.ddl import Captured


async def ddl_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(DdlArgs)
    m = await svc.engine.find(a.migration)
    if m is None:
        return messages.error_message(f"there is no {a.migration}; `/pgmig list` shows the migrations")
    required = required_approvals(svc)
    if a.decision is None:
        return schema_changes(m.id, await svc.engine.schema_changes(m.id), required)
    if a.id is None:
        return messages.error_message(f"which change? `/pgmig ddl {m.id}` lists them with their ids")
    c = await svc.engine.decide_schema_change(
        m.id,
        a.id,
        a.decision.lower(),
        inv.user,
        a.reason or "",
        is_approver=not svc.policy.approvers or await may_approve(inv.user, svc.policy, svc.directory),
        required=required,
    )
    return decided(m.id, c, required)


def required_approvals(svc: Services) -> int:
    """How many distinct approvers applying a destructive change takes: a cutover's count where approvers
    are configured; otherwise one operator's decision."""
    return svc.policy.required_approvals if svc.policy.approvers else 1


def schema_changes(mid: str, found: dict[str, list[Captured]], required: int) -> Reply:
    """Each database's captured changes, oldest first, with their state."""
    lines = []
    for db, changes in found.items():
        lines.append(f"*{esc(db)}*")
        lines += [f"• {esc(c.words(required))}" for c in changes] or ["• none captured"]
    pending = sum(c.pending for cs in found.values() for c in cs)
    hint = (
        f"{pending} await a decision — replication waits at the first: "
        f"`/pgmig ddl {mid} apply ID` or `/pgmig ddl {mid} skip ID REASON` (operators)"
        if pending
        else "nothing awaits a decision"
    )
    text = f"schema changes of {mid}: {hint}"
    return Reply(text, [messages.header(f"Schema changes of {mid}"), *messages.sections(lines), messages.context(hint)])


def decided(mid: str, c: Captured, required: int) -> Reply:
    if c.pending:  # a destructive change's approval, not the last one needed
        text = (
            f"👍 your approval of {c.database} {c.label} is recorded: {len(c.approvals)} of {required} approvals "
            f"({', '.join(c.approvals)}); it is applied when {required - len(c.approvals)} more approve"
        )
        return Reply(text, [messages.section(esc(text))])
    what = (
        "will run on the target at its place in the stream; replication goes on from there"
        if c.decision == "apply"
        else "is skipped: the target will not have it (verification may show the difference)"
    )
    text = f"✅ {c.database} {c.label} {what}. `/pgmig ddl {mid}` shows its outcome."
    return Reply(text, [messages.section(esc(text))])
