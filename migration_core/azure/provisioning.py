"""The provisioning lifecycle: a validated request (`prov-N`), the team's decision when `[azure]
provision_requires_approval` asks for one (approval.py's rules, as for a cutover), the long-running
create or grow (provision.py) in the background, the new server registered as a migration target (and
allow-listed for its source's extensions); taken up again after a restart, closed when nobody decided
in time. Nothing here knows Slack: what the channel sees goes through `ProvisioningEvents`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from migration_core.azure import capabilities
from migration_core.azure.check import AzureReport, CheckRequest, check_azure
from migration_core.azure.clients import AzureClients
from migration_core.azure.config import AzureConfig
from migration_core.azure.flex_backend import azure_target
from migration_core.azure.provision import (
    ParameterChange,
    ProvisionResult,
    configure,
    create_database,
    firewall_rules,
    provision,
)
from migration_core.azure.validation import FirewallRule, ProvisionArgs, ProvisionRequest, validate
from migration_core.changes import azure as changes
from migration_core.changes import extensions
from migration_core.changes.azure import AzureServer
from migration_core.changes.undo import Outcome
from migration_core.pg.secrets import redact
from migration_core.pg.servers import ConnectionProblem, ServerConfig, server_major
from migration_core.state import approval
from migration_core.state.approval import ApprovalRequest, Decision, Verdict
from migration_core.state.errors import MigrationError
from migration_core.state.journal import Journal
from migration_core.state.lifecycle import IllegalTransition
from migration_core.state.models import AuditEntry, utcnow

if TYPE_CHECKING:
    from migration_core.engine.api import Engine

log = logging.getLogger(__name__)


class ProvisionState(StrEnum):
    WAITING = "waiting"  # for approvals
    APPROVED = "approved"  # about to run (a restart runs it)
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        return self in (ProvisionState.DONE, ProvisionState.FAILED, ProvisionState.REJECTED, ProvisionState.EXPIRED)


P = ProvisionState
# The provisioning lifecycle as data, like lifecycle.TRANSITIONS for migrations: which state may follow which.
# A request starts waiting (for approvals) or approved (none needed); running may follow itself (a restart
# takes a request up again, provisioning finds the server it already created).
TRANSITIONS: dict[ProvisionState, frozenset[ProvisionState]] = {
    k: frozenset(v)
    for k, v in {
        P.WAITING: {P.APPROVED, P.REJECTED, P.EXPIRED},
        P.APPROVED: {P.RUNNING},
        P.RUNNING: {P.RUNNING, P.DONE, P.FAILED},
        P.DONE: set(),
        P.FAILED: set(),
        P.REJECTED: set(),
        P.EXPIRED: set(),
    }.items()
}
STARTS = (P.WAITING, P.APPROVED)


def predecessors(to: ProvisionState, expect: tuple[ProvisionState, ...] = ()) -> tuple[ProvisionState, ...]:
    """The states a move to `to` may start from: the table's, narrowed to `expect` (which must fit it)."""
    legal = tuple(s for s, nexts in TRANSITIONS.items() if to in nexts)
    if not expect:
        return legal
    wrong = [s for s in expect if s not in legal]
    if wrong:
        raise IllegalTransition(f"BUG: provisioning has no transition {wrong[0].value} → {to.value}")
    return expect


@dataclass
class ProvisionRecord:
    """One `prov-N`, as the state store keeps it."""

    id: str
    request: ProvisionRequest
    requested_by: str
    channel: str
    approval: ApprovalRequest
    source: str = ""
    state: ProvisionState = ProvisionState.WAITING
    detail: str = ""
    fqdn: str = ""
    progress_ts: str = ""  # the progress message, once posted
    updated_at: datetime = field(default_factory=utcnow)

    def as_dict(self) -> dict:
        return {**asdict(self), "approval": self.approval.as_dict(), "updated_at": self.updated_at.isoformat()}

    @classmethod
    def from_dict(cls, d: dict) -> "ProvisionRecord":
        saved = d["request"]
        request = ProvisionRequest(**{**saved, "firewall": [FirewallRule(**r) for r in saved["firewall"]]})
        return cls(
            d["id"],
            request,
            d["requested_by"],
            d["channel"],
            ApprovalRequest.from_dict(d["approval"]),
            d.get("source", ""),
            ProvisionState(d["state"]),
            d.get("detail", ""),
            d.get("fqdn", ""),
            d.get("progress_ts", ""),
            datetime.fromisoformat(d["updated_at"]),
        )


class ProvisioningEvents(Protocol):
    """What the channel sees of a provisioning request (handlers/publisher.py renders it)."""

    async def card(self, record: ProvisionRecord, approvers: list[str], closed: str = "") -> str:
        """Post (no `approval.ts` yet) or rewrite the approval card; returns its reference."""

    async def progress(self, record: ProvisionRecord, note: str) -> str:
        """Post (no `progress_ts` yet) or edit the progress line; returns its reference."""

    async def finished(
        self, record: ProvisionRecord, result: ProvisionResult, registered: bool, notes: list[str]
    ) -> None: ...

    async def failed(self, record: ProvisionRecord, reason: str) -> None: ...


class Provisioner:
    def __init__(
        self,
        engine: Engine,
        azure: AzureClients,
        events: ProvisioningEvents,
        *,
        required_approvals: int,
        approval_minutes: int,
    ) -> None:
        self.engine, self.store, self.azure, self.events = engine, engine.store, azure, events
        self.required, self.minutes = required_approvals, approval_minutes
        self._running: set[str] = set()

    @property
    def config(self) -> AzureConfig:
        """The `[azure]` settings (defaults for a request; `enabled` once a subscription is set)."""
        return self.azure.config

    def clients(self) -> AzureClients:
        if not self.azure.config.enabled:
            raise MigrationError(
                "Azure is not configured in this pgmig",
                "set AZURE_SUBSCRIPTION_ID (or [azure] subscription_id) and Azure credentials "
                "(AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET or a managed identity), "
                "then restart pgmig",
            )
        return self.azure

    async def check(self, req: CheckRequest) -> AzureReport:
        """`/pgmig azure-check`: what Azure will let pgmig do, read-only (check.py)."""
        return await check_azure(self.clients(), req)

    def password_envs(self, name: str) -> set[str]:
        """The variables a request may read its password from: `[azure] admin_password_envs`, and the
        configured server's own when the request re-provisions (grows) that flexible server."""
        allowed = set(self.azure.config.admin_password_envs)
        existing = self.engine.servers.get(name)
        if existing is not None and existing.azure_name == name and existing.password_env:
            allowed.add(existing.password_env)
        return allowed

    async def request(self, args: ProvisionArgs, user: str, channel: str) -> ProvisionRecord:
        """Validate (nothing reaches Azure before every rule holds), record `prov-N`, then ask the team or
        start at once."""
        config = self.clients().config
        existing = self.engine.servers.get(args.name)
        if existing is not None and existing.azure_name != args.name:
            raise MigrationError(
                f"`{args.name}` is already a configured server that is not this flexible server; choose another name"
            )
        source = self.engine.server(args.source) if args.source else None
        req = validate(args, await server_major(source) if source else None, self.password_envs(args.name))
        req = await capabilities.checked(self.azure, req)  # what the region offers, from Azure itself
        if config.provision_requires_approval and self.required < 1:
            raise MigrationError(
                "provisioning needs approval ([azure] provision_requires_approval) but no approvers "
                "are configured ([slack] approvers)"
            )
        pid = await self.store.next_id("provision", "prov")
        record = ProvisionRecord(
            pid, req, user, channel, ApprovalRequest.new(pid, user, self.minutes, channel), args.source
        )
        await self.store.audit(AuditEntry(user, "provision.requested", req.describe(), pid, channel))
        if config.provision_requires_approval:
            record.approval.ts = await self.events.card(record, [])
            await self._save(record)
        else:  # born approved: nobody has to decide
            record.state, record.approval.open = ProvisionState.APPROVED, False
            await self._save(record)
            await self._start(record)
        return record

    async def get(self, pid: str) -> ProvisionRecord | None:
        data = await self.store.provision(pid)
        if data is None:
            return None
        record = ProvisionRecord.from_dict(data)
        if record.state is ProvisionState.WAITING and record.approval.expired:
            record.state, record.detail = ProvisionState.EXPIRED, "not approved in time: nothing was created"
        return record

    async def decide(
        self, pid: str, round: str, user: str, verb: str, *, is_approver: bool, channel: str = ""
    ) -> Decision:
        """An Approve or Reject click on the card of `round`. The decision is a conditional move of the request
        (waiting → approved or rejected): of two racing clicks, or a click and the expiry sweep, one wins,
        and only the winner starts provisioning."""
        record = await self.get(pid)

        async def refused(reason: str, why: str) -> Decision:
            await self.store.audit(AuditEntry(user, f"provision.{verb}.refused", why, pid, channel))
            return Decision(Verdict.REFUSED, reason)

        if record is not None and record.state is ProvisionState.EXPIRED:
            await self.expire()
            return await refused("this provisioning request has expired; run `/pgmig provision` again", "expired")
        if record is None or record.state is not ProvisionState.WAITING:
            return await refused("this provisioning request is no longer open", "no open request")
        if round != record.approval.round:
            return await refused("this card belongs to an earlier request: use the current card", "old round")
        decision = await approval.decide(
            self.store,
            "provision",
            record.approval,
            user,
            verb,
            is_approver=is_approver,
            required=self.required,
            channel=channel,
        )
        if decision.verdict is Verdict.REJECTED:
            if not await self._close(
                record, ProvisionState.REJECTED, f"rejected by {user}: nothing was created", decision
            ):
                return await refused("this provisioning request was decided meanwhile", "decided meanwhile")
        elif decision.verdict is Verdict.APPROVED:
            note = f"approved by {', '.join(decision.approvers)}: provisioning started"
            if not await self._close(record, ProvisionState.APPROVED, note, decision):
                return await refused("this provisioning request was decided meanwhile", "decided meanwhile")
            await self._start(record)
        elif decision.verdict is Verdict.RECORDED:
            await self.events.card(record, decision.approvers)
        return decision

    async def expire(self) -> list[str]:
        """Requests nobody decided in time: closed (unless a decision won the race), their cards rewritten."""
        expired = []
        for data in await self.store.provisions():
            record = ProvisionRecord.from_dict(data)
            if (
                record.state is ProvisionState.WAITING
                and record.approval.expired
                and await self._close(
                    record, ProvisionState.EXPIRED, "expired without enough approvals: nothing was created", None
                )
            ):
                await self.store.audit(AuditEntry("pgmig", "provision.expired", "", record.id))
                expired.append(record.id)
        return expired

    async def resume(self, sweep_seconds: float = 60.0) -> list[str]:
        """At start-up (and on every sweep): requests approved or running that no live pgmig holds run again
        here (provisioning finds a server already created and only waits for it); expired requests are
        closed every `sweep_seconds`."""
        self.engine.scheduler.every("provision-sweep", sweep_seconds, self._sweep)
        resumed = []
        for data in await self.store.provisions():
            record = ProvisionRecord.from_dict(data)
            if record.state in (ProvisionState.APPROVED, ProvisionState.RUNNING) and self.azure.config.enabled:
                if await self._start(record):
                    await self.store.audit(AuditEntry("pgmig", "provision.resumed", "taken up again", record.id))
                    resumed.append(record.id)
        return resumed

    async def _sweep(self) -> None:
        try:
            await self.expire()
            await self.resume()
        except Exception:  # noqa: BLE001 - a failed sweep is logged; the next one tries again
            log.exception("closing expired provisioning requests failed")

    async def _close(
        self, record: ProvisionRecord, state: ProvisionState, note: str, decision: Decision | None
    ) -> bool:
        """waiting → `state`, if still waiting (False when another decision won)."""
        record.approval.open = False
        if not await self._move(record, state, note, expect=(ProvisionState.WAITING,)):
            return False
        approvers = decision.approvers if decision else await approval.approvers(self.store, record.approval)
        if record.approval.ts:
            await self.events.card(record, approvers, note)
        return True

    async def _move(
        self, record: ProvisionRecord, to: ProvisionState, detail: str, expect: tuple[ProvisionState, ...] = ()
    ) -> bool:
        """The one guarded move of a request (TRANSITIONS): saved only if the stored state is one that may be
        followed by `to`; False when another replica, click or sweep moved it first."""
        record.state, record.detail = to, detail
        return await self._save(record, expect=predecessors(to, expect))

    async def _save(self, record: ProvisionRecord, expect: tuple[ProvisionState, ...] = ()) -> bool:
        record.updated_at = utcnow()
        round = record.approval.round if record.state is ProvisionState.WAITING else ""
        return await self.store.save_provision(
            record.id, record.state.value, record.as_dict(), round, tuple(s.value for s in expect)
        )

    async def _start(self, record: ProvisionRecord) -> bool:
        """Run it in the background here, if this process can hold it (one process runs a request)."""
        if record.id in self._running or not await self.store.claim_provision(
            record.id, self.engine.instance, self.engine.config.lease_seconds, f"{self.engine.replica}/"
        ):
            return False
        self._running.add(record.id)
        task = self.engine.background(self._run(record), f"provision {record.id}")
        task.add_done_callback(lambda _: self._running.discard(record.id))
        return True

    async def _run(self, record: ProvisionRecord) -> None:
        """The long-running part: create (or grow), firewall rules, register as a server; the channel sees it."""
        req, azure = record.request, self.clients()
        record.progress_ts = await self.events.progress(record, f"creating {req.describe()}")
        if not await self._move(record, ProvisionState.RUNNING, f"creating {req.describe()}"):
            return  # decided or finished elsewhere meanwhile

        async def progress(note: str) -> None:
            await self.events.progress(record, note)

        try:
            result = await provision(
                azure, req, Journal(self.store, record.id), progress, azure.config.progress_seconds
            )
        except Exception as exc:  # the channel must hear how it ended, whatever happened
            if not isinstance(exc, MigrationError):
                log.exception("provisioning %s failed", record.id)
            reason = (
                str(exc)
                if isinstance(exc, MigrationError)
                else f"unexpected {type(exc).__name__}: {redact(str(exc))[:300]} (details in pgmig's log)"
            )
            await self._move(record, ProvisionState.FAILED, reason)
            await self.store.audit(AuditEntry("pgmig", "provision.failed", reason[:2000], record.id))
            await self.events.failed(record, reason)
            return
        server = ServerConfig(
            name=req.name,
            host=result.fqdn,
            user=req.admin_user,
            password_env=req.admin_password_env,
            sslmode="require",
            azure_resource_group=req.resource_group,
            azure_server=req.name,
        )
        registered = bool(result.fqdn) and await self.engine.register_server(server, record.requested_by)
        notes = await self._allow_source_extensions(record, restart=result.created)
        record.fqdn = result.fqdn
        await self._move(record, ProvisionState.DONE, f"{result.fqdn} in {result.seconds:.0f} s")
        await self.store.audit(
            AuditEntry("pgmig", "provision.completed", f"{req.name}: {result.fqdn}; " + "; ".join(notes), record.id)
        )
        await self.events.finished(record, result, registered, notes)

    def flexible_server(self, server: str) -> AzureServer:
        """The flexible server a configured server stands for, or a clear refusal when it is none."""
        return AzureServer(*azure_target(self.engine.server(server)))

    def _journal(self, target: AzureServer) -> Journal:
        """The journal of the changes made on a flexible server outside a provisioning request."""
        return Journal(self.store, target.scope)

    async def create_database(self, server: str, database: str) -> str | None:
        """`/pgmig createdb`: a database on a configured flexible server; returns its name as Azure has it (None:
        it existed already, and nothing was made)."""
        target = self.flexible_server(server)
        return await create_database(
            self.clients(), target, database, self._journal(target), self.engine.server(server)
        )

    async def add_firewall_rules(self, server: str, rules: list[FirewallRule]) -> None:
        """`/pgmig firewall`: each rule created (or replaced, by name) on a configured flexible server."""
        target = self.flexible_server(server)
        await firewall_rules(self.clients(), target, rules, self._journal(target))

    async def configure_server(
        self, server: str, wanted: list[str], wal_level: str | None, restart: bool
    ) -> tuple[list[ParameterChange], bool]:
        """`/pgmig configure`: extensions allow-listed (and preloaded), wal_level, a restart when asked."""
        target = self.flexible_server(server)
        return await configure(self.clients(), target, self._journal(target), wanted, wal_level, restart)

    async def azure_changes(self, server: str, scope: str = "") -> list[str]:
        """What `undo_changes` would undo (the live entries of that scope on that server), in words, oldest first."""
        target = self.flexible_server(server)
        journal = Journal(self.store, scope or target.scope)
        return [e.describe() for e in await journal.entries() if e.server == target.key]

    async def undo_changes(self, server: str, scope: str = "") -> Outcome:
        """Undo what pgmig changed on a configured flexible server in one journal scope (a provisioning
        request's `prov-N`; by default the server's own), newest first within each kind: what was done or
        left, in words, and what could not be undone (its entry stays live), with why."""
        target, sql = self.flexible_server(server), self.engine.server(server)
        journal = Journal(self.store, scope or target.scope)
        live = [e for e in await journal.entries() if e.server == target.key]
        outcome = Outcome()
        async with self.clients().flex() as client:
            for kind in changes.ORDER:
                for entry in reversed([e for e in live if e.kind is kind]):
                    try:
                        if said := await changes.undo(journal, client, entry, sql):
                            outcome.done.append(said)
                    except (MigrationError, ConnectionProblem) as exc:
                        outcome.failed.append(f"{entry.describe()}: {exc}")
        return outcome

    async def source_extensions(self, source: str) -> list[str]:
        """The extensions a configured server's databases use, sorted, each once (read from the server)."""
        inventory = await extensions.inventory(self.engine.server(source))
        return sorted({e for names in inventory.values() for e in names})

    async def _allow_source_extensions(self, record: ProvisionRecord, restart: bool) -> list[str]:
        """The server is to receive its source: allow-list (and preload) the extensions it uses, restarting a
        brand-new server when that needs it. A problem here is reported, not fatal: the server exists."""
        req, source = record.request, record.source
        if not source or source not in self.engine.servers:
            return []
        try:
            wanted = await self.source_extensions(source)
            if not wanted:
                return [f"{source} uses no extensions: nothing to allow-list"]
            made, restarted = await configure(
                self.clients(),
                AzureServer(req.resource_group, req.name),
                Journal(self.store, record.id),
                wanted,
                restart=restart,
            )
        except (MigrationError, ConnectionProblem) as exc:
            return [
                f"the extensions of {source} could not be allow-listed ({exc}); "
                f"`/pgmig configure {req.name} --extensions-from {source}` tries again"
            ]
        notes = [f"{c.name} = {c.after}" for c in made] or [f"{source}'s extensions were already allowed"]
        if restarted:
            notes.append("restarted so that the preloaded libraries are loaded")
        elif any(c.pending_restart for c in made):
            notes.append(f"a restart is needed: `/pgmig configure {req.name} --restart`")
        return notes
