"""`/pgmig migrate | status | list | cancel | retry | resume | verify`."""

from __future__ import annotations

import shlex
from dataclasses import asdict

from handlers import messages
from handlers import migration_messages as mm
from handlers.args import CleanupArgs, MigrateArgs, MigrationArgs, RepairArgs, RetryArgs, StatusArgs
from handlers.azure import provision_status
from handlers.check import resolve_servers
from handlers.context import Invocation, Reply, Services
from handlers.grammar import ParsedCommand
from migration_core.engine.api import Command, MigrationRequest
from migration_core.pg.servers import ServerConfig
from migration_core.preflight.checks import needs_new_migration
from migration_core.state.models import Backend, Method, Migration, Mode, RetryChanges, State


async def _find(svc: Services, migration_id: str) -> Migration | Reply:
    if migration_id.startswith("prov-"):
        return messages.error_message(
            f"{migration_id} is a provisioning request, not a migration: "
            f"`/pgmig status {migration_id}` and `/pgmig audit {migration_id}` show it"
        )
    m = await svc.engine.find(migration_id)
    if m is None:
        return messages.error_message(f"there is no {migration_id}; `/pgmig list` shows the migrations")
    return m


def migrate_text(a: MigrateArgs, databases: list[str] | None = None) -> str:
    """The canonical `/pgmig migrate …` of these arguments (`databases` instead of theirs): for the audit, and
    for the command to type when a new migration is the fix."""
    parts = ["migrate", a.source, a.target, "--mode", a.mode]
    if a.mode == "offline":
        parts += ["--method", a.method]
    if chosen := databases if databases is not None else a.db:
        parts += ["--db", ",".join(chosen)]
    if a.parallel:
        parts += ["--parallel", str(a.parallel)]
    flags = {
        "--overwrite": a.overwrite,
        "--pause-after-export": a.pause_after_export,
        "--replica-identity-full": a.replica_identity_full,
        "--capture-ddl": a.capture_ddl,
        "--no-capture-ddl": a.no_capture_ddl,
    }
    parts += [flag for flag, given in flags.items() if given]
    if a.backend != "native":
        parts += ["--backend", a.backend]
    if a.runtime_server:
        parts += ["--runtime-server", a.runtime_server]
    return "/pgmig " + " ".join(shlex.quote(p) for p in parts)


async def migrate_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(MigrateArgs)
    servers = resolve_servers(svc, a.source, a.target)
    if isinstance(servers, Reply):
        return servers
    req = MigrationRequest(
        source=a.source,
        target=a.target,
        mode=Mode(a.mode),
        requested_by=inv.user,
        channel=inv.channel,
        databases=a.db or [],
        method=Method(a.method),
        parallel=a.parallel,
        overwrite=a.overwrite,
        pause_after_export=a.pause_after_export,
        replica_identity_full=a.replica_identity_full,
        capture_ddl=a.capture,
        backend=Backend(a.backend),
        runtime_server=a.runtime_server or "",
    )
    if conflicts := req.conflicts():
        return messages.error_message(conflicts[0].message)
    if refused := _backend_refusal(req.backend, servers[1], svc):
        return refused
    m = await svc.engine.create(req, command=migrate_text(a))
    report = await svc.engine.preflight(m)
    if report.blocking:
        instead = migrate_text(a, report.databases) if not report.retryable and report.databases else ""
        return mm.refused(m, report, instead)
    svc.engine.start(m.id)
    m = await svc.engine.find(m.id) or m
    return mm.started(m, report, svc.policy.notify_channel)


def _backend_refusal(backend: Backend, target: ServerConfig, svc: Services) -> Reply | None:
    """An Azure service as the mover: it must be configured, and the target must be a flexible server (which
    options go with it is `MigrationRequest.conflicts`)."""
    if backend is Backend.NATIVE:
        return None
    if not svc.provisioner.config.enabled:
        return messages.error_message(
            f"`--backend {backend.value}` needs Azure: set AZURE_SUBSCRIPTION_ID (or [azure] "
            "subscription_id) and credentials, then restart pgmig"
        )
    if not target.azure_name:
        return messages.error_message(
            f"`--backend {backend.value}` migrates into an Azure flexible server, and "
            f"{target.name} is not known as one: add azure_resource_group (and "
            f"azure_server) to [servers.{target.name}], or create it with `/pgmig provision`"
        )
    return None


async def status_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    subject = cmd.of(StatusArgs).migration
    if not subject:
        return mm.migration_list(await svc.engine.migrations(active_only=True), "Active migrations")
    if subject.startswith("prov-"):
        return await provision_status(subject, svc)
    m = await _find(svc, subject)
    if isinstance(m, Reply):
        return m
    found = await svc.engine.status(m.id)
    assert found is not None
    return mm.status(found)


async def list_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    newest_first = list(reversed(await svc.engine.migrations(newest=20)))
    return mm.migration_list(newest_first, "Recent migrations (newest first)")


async def cancel_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    m = await _find(svc, cmd.of(MigrationArgs).migration)
    if isinstance(m, Reply):
        return m
    if m.state in (State.COMPLETED, State.CANCELLED):
        return messages.error_message(f"{m.id} is already {m.state.value}")
    result = await svc.engine.perform(Command.CANCEL, m.id, inv.user)
    if result.queued_on or result.cancel is None:
        return mm.command_pending(m, result)
    return mm.cancelled(m, result.cancel)


async def retry_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(RetryArgs)
    m = await _find(svc, a.migration)
    if isinstance(m, Reply):
        return m
    if m.state is not State.FAILED:
        return messages.error_message(f"{m.id} is {m.state.value}; only a failed migration can be retried")
    if needs_new_migration(m.error):
        return messages.error_message(
            f"{m.id} stopped at pre-flight because of its database list — {mm.new_migration_advice(m)}"
        )
    changes = RetryChanges(
        overwrite=True if a.overwrite else None,
        replica_identity_full=True if a.replica_identity_full else None,
        parallel=a.parallel,
    )
    result = await svc.engine.perform(Command.RETRY, m.id, inv.user, args=asdict(changes))
    if result.queued_on or not result.ok:
        return mm.command_pending(m, result)
    return mm.retrying(m, changes)


async def resume_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    m = await _find(svc, cmd.of(MigrationArgs).migration)
    if isinstance(m, Reply):
        return m
    if m.state is not State.PAUSED:
        return messages.error_message(f"{m.id} is {m.state.value}; only a paused migration can be resumed")
    result = await svc.engine.perform(Command.RESUME, m.id, inv.user)
    if result.queued_on or not result.ok:
        return mm.command_pending(m, result)
    return mm.resumed(m)


async def repair_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(RepairArgs)
    m = await _find(svc, a.migration)
    if isinstance(m, Reply):
        return m
    result = await svc.engine.perform(Command.REPAIR, m.id, inv.user, args={"table": a.table or ""})
    if result.queued_on or not result.ok:
        return mm.command_pending(m, result)
    return mm.repaired(m, result.message.split("; "))


async def verify_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    m = await _find(svc, cmd.of(MigrationArgs).migration)
    if isinstance(m, Reply):
        return m
    if m.mode is Mode.OFFLINE and m.state.running:
        return messages.error_message(
            f"{m.id} is {m.state.value}: an offline copy is verified once it is "
            "imported (pgmig does that itself); ask again when it completes"
        )
    results = await svc.engine.verify(m.id)
    found = await svc.engine.status(m.id)  # its steps: what the migration itself expected (edited export files)
    return mm.verification(m, results, found.steps if found else [], svc.engine.progress(m.id))


async def cleanup_command(cmd: ParsedCommand, inv: Invocation, svc: Services) -> Reply:
    a = cmd.of(CleanupArgs)
    servers = resolve_servers(svc, a.server)
    if isinstance(servers, Reply):
        return servers
    return mm.cleanup_report(await svc.engine.cleanup(servers[0].name, remove=a.yes, actor=inv.user))
