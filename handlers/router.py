"""The one entry point every transport calls: text or click in, Reply out, audited, never a traceback."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from handlers import messages
from handlers.actions import Action
from handlers.approvals import audit_command, cutover_command, decide
from handlers.authz import refusal
from handlers.azure import (
    azure_check_command,
    configure_command,
    createdb_command,
    decide_provision,
    firewall_command,
    provision_command,
    undo_command,
)
from handlers.check import check_command
from handlers.context import Invocation, Reply, Services
from handlers.ddl import ddl_command
from handlers.grammar import ParsedCommand, UsageError, parse
from handlers.info import help_command, servers_command
from handlers.migrations import (
    cancel_command,
    cleanup_command,
    list_command,
    migrate_command,
    repair_command,
    resume_command,
    retry_command,
    status_command,
    verify_command,
)
from handlers.plan import plan_command
from migration_core.pg.secrets import redact
from migration_core.pg.servers import ConnectionProblem
from migration_core.state.errors import MigrationError
from migration_core.state.models import AuditEntry

log = logging.getLogger(__name__)

Handler = Callable[[ParsedCommand, Invocation, Services], Awaitable[Reply]]

HANDLERS: dict[str, Handler] = {
    "help": help_command,
    "servers": servers_command,
    "check": check_command,
    "plan": plan_command,
    "migrate": migrate_command,
    "status": status_command,
    "list": list_command,
    "cancel": cancel_command,
    "retry": retry_command,
    "resume": resume_command,
    "repair": repair_command,
    "verify": verify_command,
    "cleanup": cleanup_command,
    "cutover": cutover_command,
    "ddl": ddl_command,
    "audit": audit_command,
    "provision": provision_command,
    "azure-check": azure_check_command,
    "createdb": createdb_command,
    "firewall": firewall_command,
    "undo": undo_command,
    "configure": configure_command,
}

# A button press re-enters as the command text it carries (authorized as that command typed).
ACTION_COMMANDS = {
    Action.RERUN_CHECK.value,
    Action.DROP_SLOT_CANCEL.value,
    *(a.value for a in (Action.DDL_APPLY, Action.DDL_SKIP, Action.DDL_PAUSE, Action.DDL_RESUME)),
}


def ack_text(text: str) -> str | None:
    """What to show at once while a slow command runs; None for commands that answer quickly, and for
    any text that does not parse (the answer explains it). Never raises: it runs before the ack."""
    try:
        return parse(text).spec.working or None
    except Exception:  # noqa: BLE001 - whatever the text, Slack gets its ack
        return None


async def handle_command(text: str, inv: Invocation, svc: Services) -> Reply:
    """Parse, audit, run. Bad input gets usage help; an unexpected failure gets a short apology. Never
    raises, whatever the text."""
    try:
        return await _command(text if isinstance(text, str) else str(text), inv, svc)
    except Exception as exc:  # the last guard: one readable line, audited
        log.exception("command %r could not be handled", _head(text))
        await _audit(svc, inv, "command.failed", f"{_head(text)}: {_describe(exc)}")
        return messages.error_message(
            f"pgmig could not handle that command ({_describe(exc)}); the details are in pgmig's log"
        )


async def _command(text: str, inv: Invocation, svc: Services) -> Reply:
    try:
        cmd = parse(text)
    except UsageError as err:
        await _audit(svc, inv, "command.rejected", f"`{_head(text, 500)}`: {err}")
        return messages.usage_error(err)
    except Exception as exc:  # a parser bug must not become a traceback (or an HTTP 500 to Slack)
        log.exception("parsing %r failed", text[:200])
        await _audit(svc, inv, "command.rejected", f"`{_head(text, 500)}`: {type(exc).__name__}")
        return messages.error_message("pgmig could not read that command; `/pgmig help` lists the commands")
    return await _run(cmd, text, inv, svc)


async def handle_parsed(cmd: ParsedCommand, text: str, inv: Invocation, svc: Services) -> Reply:
    """A command a form built (the migrate modal) rather than one typed: `text` is how it would be typed
    (for the audit). Audited, authorized and run exactly as the typed command; never raises."""
    try:
        return await _run(cmd, text, inv, svc)
    except Exception as exc:  # the same last guard as handle_command
        log.exception("command %r could not be handled", _head(text))
        await _audit(svc, inv, "command.failed", f"{_head(text)}: {_describe(exc)}")
        return messages.error_message(
            f"pgmig could not handle that command ({_describe(exc)}); the details are in pgmig's log"
        )


async def _run(cmd: ParsedCommand, text: str, inv: Invocation, svc: Services) -> Reply:
    """Audit, then refuse what the spec does not allow here (Azure not configured, then who may run it), then
    run the handler."""
    action = AuditEntry.READ_ONLY if cmd.reads_only else "command"
    await _audit(svc, inv, action, f"/pgmig {text}".strip(), cmd.args.get("migration") or "")
    try:
        if cmd.spec.needs_azure:
            svc.provisioner.clients()  # raises, saying what to set, when Azure is not configured
        if denied := await refusal(cmd.who, cmd.spec.action, inv.user, svc.policy, svc.directory):
            return messages.error_message(denied)
        return await HANDLERS[cmd.name](cmd, inv, svc)
    except (MigrationError, ConnectionProblem) as exc:
        await _audit(svc, inv, "command.failed", f"{cmd.name}: {exc}")
        return messages.error_message(str(exc))
    except Exception as exc:  # the user gets one readable line; the log keeps the traceback
        log.exception("command %r failed", cmd.name)
        await _audit(svc, inv, "command.failed", f"{cmd.name}: {_describe(exc)}")
        return messages.error_message(
            f"`{cmd.name}` failed unexpectedly ({_describe(exc)}). Nothing was changed; the details are in pgmig's log."
        )


async def handle_action(action_id: str, value: str, inv: Invocation, svc: Services) -> Reply | None:
    """A button press: buttons that repeat a command carry its text as their value; approval buttons
    carry the migration id and answer only when the click is refused (the card itself shows the rest).
    Never raises, whatever the payload."""
    try:
        return await _action(str(action_id), "" if value is None else str(value), inv, svc)
    except Exception as exc:  # one readable line, audited, whatever went wrong
        log.exception("handling the click %r failed", _head(action_id))
        await _audit(svc, inv, "action.failed", f"{_head(action_id)}: {_describe(exc)}")
        return messages.error_message(f"the click could not be handled ({type(exc).__name__}); nothing changed")


async def _action(action_id: str, value: str, inv: Invocation, svc: Services) -> Reply | None:
    if inv.delivery and not await svc.engine.first_delivery(inv.delivery):
        subject = value.partition(":")[0] if re.match(r"^(mig|prov)-[0-9]{1,9}(:|$)", value) else ""
        await _audit(svc, inv, "action.duplicate", f"{action_id[:100]}: delivered again, ignored", subject)
        return None
    if action_id in ACTION_COMMANDS:
        await _audit(svc, inv, "action", f"{action_id}: {value}")
        return await handle_command(value, inv, svc)
    if action_id in (Action.APPROVE_CUTOVER.value, Action.REJECT_CUTOVER.value):
        return await decide("approve" if action_id == Action.APPROVE_CUTOVER.value else "reject", value, inv, svc)
    if action_id in (Action.APPROVE_PROVISION.value, Action.REJECT_PROVISION.value):
        return await decide_provision(
            "approve" if action_id == Action.APPROVE_PROVISION.value else "reject", value, inv, svc
        )
    await _audit(svc, inv, "action.unknown", action_id[:100])
    return messages.error_message("that button is no longer handled by this version of pgmig")


def _head(value: object, limit: int = 100) -> str:
    """The start of whatever a user sent, for a log line or an audit entry."""
    try:
        return (value if isinstance(value, str) else repr(value))[:limit]
    except Exception:  # noqa: BLE001 - a value that cannot even be shown
        return f"<{type(value).__name__}>"


def _describe(exc: BaseException) -> str:
    """One line about an unexpected exception: its type and the start of its message, secrets masked."""
    try:
        message = " ".join(str(exc).split())
    except Exception:  # noqa: BLE001 - an exception whose message itself fails
        message = ""
    message = redact(message)
    if len(message) > 300:
        message = message[:299] + "…"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def _audit(svc: Services, inv: Invocation, action: str, detail: str, migration_id: str = "") -> None:
    try:
        await svc.engine.record(
            AuditEntry(
                actor=inv.user, action=action, detail=redact(detail), migration_id=migration_id, channel=inv.channel
            )
        )
    except Exception:  # an audit hiccup must not eat the user's answer
        log.exception("could not write audit entry %s", action)
