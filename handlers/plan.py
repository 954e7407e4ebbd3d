"""`/pgmig plan SOURCE TARGET`: the plan before the apply, measured read-only, rendered with its Re-run button."""

from __future__ import annotations

import shlex

from handlers.args import PlanArgs
from handlers.check import resolve_servers
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from handlers.plan_messages import plan_message
from migration_core.state.models import Mode


def command_text(a: PlanArgs) -> str:
    """The canonical command text, for the Re-run button."""
    parts = ["plan", a.source, a.target]
    if a.db:
        parts += ["--db", ",".join(a.db)]
    parts += ["--mode", a.mode]
    if a.parallel:
        parts += ["--parallel", str(a.parallel)]
    return " ".join(shlex.quote(p) for p in parts)


async def plan_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(PlanArgs)
    servers = resolve_servers(svc, a.source, a.target)
    if isinstance(servers, Reply):
        return servers
    source, target = servers
    plan = await svc.engine.plan(source.name, target.name, a.db or [], Mode(a.mode), a.parallel)
    return plan_message(plan, command_text(a))
