"""`/pgmig help` and `/pgmig servers`: answers from configuration alone."""

from __future__ import annotations

from handlers import messages
from handlers.args import HelpArgs
from handlers.context import Invocation, Reply, Services
from handlers.grammar import COMMANDS, ParsedCommand


async def help_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    wanted = cmd.of(HelpArgs).command
    if not wanted:
        return messages.help_message()
    spec = COMMANDS.get(wanted.lower())
    if spec is None:
        return messages.error_message(f"no command `{wanted}`; commands: {', '.join(COMMANDS)}")
    return messages.command_help(spec)


async def servers_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    return messages.servers_message(svc.servers)
