"""`/pgmig check SOURCE TARGET`: the pre-flight report, and its Re-run button."""

from __future__ import annotations

import shlex

from handlers import messages
from handlers.args import CheckArgs
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand, did_you_mean
from migration_core.pg.servers import ServerConfig
from migration_core.preflight.checks import Mode


def resolve_servers(svc: Services, *names: str) -> list[ServerConfig] | Reply:
    """Look configured servers up by name, or explain which names are unknown."""
    unknown = [n for n in names if n not in svc.servers]
    if unknown:
        known = ", ".join(sorted(svc.servers)) or "none configured"
        hint = did_you_mean(unknown[0], svc.servers) if len(unknown) == 1 else ""
        return messages.error_message(f"unknown server {', '.join(unknown)}; configured servers: {known}{hint}")
    return [svc.servers[n] for n in names]


def command_text(a: CheckArgs) -> str:
    """The canonical command text, for the Re-run button and the audit log."""
    parts = ["check", a.source, a.target]
    if a.db:
        parts += ["--db", ",".join(a.db)]
    parts += ["--mode", a.mode]
    if a.replica_identity_full:
        parts.append("--replica-identity-full")
    return " ".join(shlex.quote(p) for p in parts)


async def check_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(CheckArgs)
    servers = resolve_servers(svc, a.source, a.target)
    if isinstance(servers, Reply):
        return servers
    source, target = servers
    databases = a.db or []
    report = await svc.engine.check(source.name, target.name, databases, Mode(a.mode), a.replica_identity_full)
    return messages.preflight_message(report, command_text(a))
