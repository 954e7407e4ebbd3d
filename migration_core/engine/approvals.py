"""The cutover's entry points: asking for approval (the request the card shows, opening the round),
the Approve/Reject clicks and expiry (approval.py's rules applied as conditional moves, so of two
racing decisions one wins), and the two ways a cutover starts — decided by the team (a tracked task on
the replica holding the migration) or run directly in the caller's task."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from migration_core.engine.commands import Command
from migration_core.flows.cutover import run_cutover
from migration_core.observe import ddl as schema_watch
from migration_core.observe import forecast
from migration_core.observe.monitor import measure, require_caught_up
from migration_core.preflight.checks import pretty_bytes
from migration_core.state import approval
from migration_core.state.approval import ApprovalRequest, Decision, Verdict
from migration_core.state.errors import MigrationError
from migration_core.state.models import AuditEntry, Backend, Mode, State, StepKind, StepState
from migration_core.verify import continuous
from migration_core.verify.tables import VerifyResult, expected_words

if TYPE_CHECKING:
    from migration_core.engine.api import Engine
    from migration_core.engine.context import MigrationContext

log = logging.getLogger(__name__)
VERIFY_AT_REQUEST_SECONDS = 15.0  # a cutover request walks continuous verification on for at most this long


class Approvals:
    """Cutover requests, their decisions, and starting the cutover."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cutting: set[str] = set()  # cutovers run by `cutover` in the caller's task, not tracked by the runner

    def is_cutting(self, migration_id: str) -> bool:
        return migration_id in self._cutting

    async def prepare_cutover(self, migration_id: str, actor: str, channel: str, minutes: int) -> ApprovalRequest:
        """Check that the migration may be cut over and verify its tables once more; the request the
        approval card shows (nothing is changed yet: `open_cutover` does that once the card is posted)."""
        engine = self.engine
        m = await engine.ledger.get(migration_id)
        if m.mode is not Mode.ONLINE:
            raise MigrationError(f"{m.id} is an offline migration: it has no cutover")
        if m.state is not State.READY_FOR_CUTOVER:
            lags = [
                f"{db}: {p.lag_seconds or 0:.1f} s / {p.lag_bytes or 0} bytes behind"
                for db, p in engine.progress(m.id).databases.items()
                if p.lag_bytes is not None
            ]
            why = (
                "a request is already waiting for approval"
                if m.state is State.AWAITING_APPROVAL
                else "it must be ready_for_cutover (caught up)"
            )
            raise MigrationError(
                f"{m.id} is {m.state.value}: {why}" + (f". Current lag: {'; '.join(lags)}" if lags else "")
            )
        predicted, schema = "", None
        if m.options.backend is Backend.NATIVE:
            ctx = engine.context(m)
            await require_caught_up(ctx, f"{m.id} cannot be cut over now")
            await self._require_verified(ctx)
            predicted = forecast.card_words(ctx, await forecast.look(ctx, sample=False))
            schema = await schema_watch.unapplied(ctx) if schema_watch.wanted(ctx) else None
        results = await engine.verify(m.id)
        verification = "; ".join(self._streaming_verdict(m.id, r) for r in results)
        if any(x.target != "missing" for r in results for x in r.mismatches):
            verification += "; the cutover compares them exactly, with writes frozen"
        request = ApprovalRequest.new(m.id, actor, minutes, channel, verification)
        request.forecast, request.schema_changes = predicted, schema
        return request

    async def _require_verified(self, ctx: MigrationContext) -> None:
        """`[online] require_verified_share`: refuse a request until continuous verification covers that
        share of every database's rows. It first waits a moment: on the replica running the migration by
        walking on itself, elsewhere for that replica's ticks (the journal has the shares), so a small or
        nearly verified database does not send the requester away."""
        c, m = self.engine.config, ctx.m
        if c.verify_chunk_rows <= 0 or c.require_verified_share <= 0:
            return

        def short(shares: dict[str, float | None]) -> dict[str, float | None]:
            return {db: s for db, s in shares.items() if s is None or s < c.require_verified_share}

        deadline = time.monotonic() + VERIFY_AT_REQUEST_SECONDS
        if m.id in self.engine.ledger.tokens:
            await continuous.finish(ctx, c.verify_chunk_rows, c.require_verified_share, VERIFY_AT_REQUEST_SECONDS)
        while (missing := short(await continuous.shares(ctx))) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if missing:
            raise MigrationError(
                f"{m.id} cannot be cut over yet: verified while streaming "
                + ", ".join(f"{db} {(s or 0) * 100:.0f} %" for db, s in missing.items())
                + f", and a request needs {c.require_verified_share * 100:.0f} % ([online] require_verified_share)",
                "verification goes on at every tick and `/pgmig status` shows how far it is; ask again once it "
                "is there (a range that differs must be repaired first: `/pgmig repair`)",
            )

    async def window_held(self, migration_id: str) -> str:
        """Why the predicted write freeze keeps a cutover from starting now (`[online] max_window_seconds`);
        empty when it may start (no limit, a managed backend, or within it)."""
        engine = self.engine
        m = await engine.ledger.get(migration_id)
        if engine.config.max_window_seconds <= 0 or m.options.backend is not Backend.NATIVE:
            return ""
        ctx = engine.context(m)
        await measure(ctx)
        return forecast.too_long(ctx, await forecast.look(ctx, sample=False))

    def _streaming_verdict(self, mid: str, r: VerifyResult) -> str:
        """One database compared while it streams: rows still on their way differ, and say so (lag); a table
        missing on the target is no write in flight (DDL does not replicate)."""
        rows = f"{r.rows:,} rows"
        allowed = "".join(f"; {expected_words(m)}" for m in r.expected)
        if r.ok:
            return f"{r.database} equal: {r.tables} tables, {rows}{allowed}"
        missing = [x.name for x in r.mismatches if x.target == "missing"]
        moving = len(r.mismatches) - len(missing)
        said = []
        if moving:
            p = self.engine.progress(mid).databases.get(r.database)
            lag = (
                f" (lag {p.lag_seconds or 0:.1f} s, {pretty_bytes(p.lag_bytes)} behind)"
                if p is not None and p.lag_bytes is not None
                else ""
            )
            said.append(f"≈ {moving} of {r.tables} tables differ by rows still in flight{lag}")
        if missing:
            said.append(f"❌ missing on the target: {', '.join(missing)}")
        return f"{r.database} " + ", ".join(said) + f", {rows}{allowed}"

    async def open_cutover(self, request: ApprovalRequest) -> bool:
        """ready_for_cutover → awaiting_approval with `request` as the open round; False (and the request
        closed) when the migration moved on meanwhile."""
        ledger = self.engine.ledger
        await ledger.save(
            request.subject,
            StepKind.APPROVAL,
            StepState.WAITING,
            f"requested by {request.requested_by}",
            request.as_dict(),
        )
        if await ledger.move(
            request.subject,
            State.AWAITING_APPROVAL,
            f"cutover requested by {request.requested_by}",
            expect=(State.READY_FOR_CUTOVER,),
            actor=request.requested_by,
            action="cutover.requested",
            round=request.round,
        ):
            return True
        request.open = False
        await ledger.save(
            request.subject, StepKind.APPROVAL, StepState.DONE, "the migration moved on", request.as_dict()
        )
        return False

    async def cutover_request(self, migration_id: str) -> ApprovalRequest | None:
        step = await self.engine.store.step(migration_id, StepKind.APPROVAL)
        return ApprovalRequest.from_dict(step.data) if step else None

    async def decide_cutover(
        self,
        migration_id: str,
        round: str,
        user: str,
        verb: str,
        *,
        is_approver: bool,
        required: int,
        channel: str = "",
        reason: str = "",
    ) -> tuple[Decision, ApprovalRequest | None]:
        """An Approve or Reject click on the card of `round` (approval.py's rules). The decision itself is a
        conditional move: awaiting_approval → cutting_over for the approval that completes the quorum,
        → ready_for_cutover for a reject or an expiry. Of any two racing, one wins and the other is
        refused saying so; the winner's cutover then starts on the replica holding the migration."""
        engine = self.engine
        m = await engine.store.get_migration(migration_id)
        request = await self.cutover_request(migration_id)

        async def refused(reason: str, why: str) -> tuple[Decision, ApprovalRequest | None]:
            await engine.store.audit(AuditEntry(user, f"cutover.{verb}.refused", why, migration_id, channel))
            return Decision(Verdict.REFUSED, reason), request

        if m is None or request is None or m.state is not State.AWAITING_APPROVAL:
            state = m.state.value if m else "gone"
            return await refused(f"this cutover request is no longer open ({state})", "no open request")
        if round != request.round:
            return await refused(
                "this card belongs to an earlier cutover request: use the current card", f"old round {round or '-'}"
            )
        if request.expired:
            await self.expire_approval(migration_id)
        elif verb == "approve" and is_approver and (held := await self.window_held(migration_id)):
            return await refused(f"Approve is held: {held}", "predicted window over max_window_seconds")
        decision = await approval.decide(
            engine.store, "cutover", request, user, verb, is_approver=is_approver, required=required, channel=channel
        )
        if decision.verdict is Verdict.REFUSED and request.expired:
            await self.expire_approval(migration_id)  # it expired while this click was on its way: closed now
        if decision.verdict is Verdict.REJECTED and not await self.reject_cutover(migration_id, user, reason):
            return await refused(await self._decided(migration_id), "decided meanwhile")
        if decision.verdict is Verdict.APPROVED:
            approvers = ", ".join(decision.approvers)
            if not await engine.ledger.move(
                migration_id,
                State.CUTTING_OVER,
                f"cutover approved by {approvers}",
                expect=(State.AWAITING_APPROVAL,),
                actor=user,
                action="cutover.approved",
                verdict=("approved", decision.approvers),
            ):
                return await refused(await self._decided(migration_id), "decided meanwhile")
            await engine.perform(Command.CUTOVER, migration_id, user)
        return decision, request

    async def _decided(self, migration_id: str) -> str:
        m = await self.engine.ledger.get(migration_id)
        return f"this cutover request was decided meanwhile: {m.id} is {m.state.value}"

    async def reject_cutover(self, migration_id: str, actor: str, reason: str = "") -> bool:
        """Back to ready_for_cutover; the reason (asked by the Reject form) is in the move's audit entry and in
        the migration's `error` (`cutover rejected by ACTOR: REASON`), which the card and the thread show."""
        why = f": {' '.join(reason.split())[:500]}" if reason.strip() else ""
        return await self.engine.ledger.move(
            migration_id,
            State.READY_FOR_CUTOVER,
            f"cutover rejected by {actor}{why}; replication keeps running",
            expect=(State.AWAITING_APPROVAL,),
            error=f"cutover rejected by {actor}{why}",
            actor=actor,
            action="cutover.rejected",
            verdict=("rejected", [actor]),
        )

    async def expire_approval(self, migration_id: str) -> bool:
        request = await self.cutover_request(migration_id)
        approved = await approval.approvers(self.engine.store, request) if request else []
        return await self.engine.ledger.move(
            migration_id,
            State.READY_FOR_CUTOVER,
            "the cutover request expired without enough approvals; replication keeps running",
            expect=(State.AWAITING_APPROVAL,),
            error="the cutover request expired",
            action="cutover.expired",
            verdict=("expired", approved),
        )

    def start_cutover(self, migration_id: str, actor: str) -> asyncio.Task:
        """Run a decided cutover (state cutting_over) as a tracked task (the click must answer at once), after
        whatever task here is still ending its work on the migration: refused, the decided cutover would sit
        in cutting_over until a restart fell it back (seen when a start-up recovery was still posting)."""
        return self.engine.runner.after(
            migration_id, self._guarded_cutover(migration_id, actor), f"cutover {migration_id}"
        )

    async def _guarded_cutover(self, migration_id: str, actor: str) -> None:
        try:
            ctx = self.engine.context(await self.engine.ledger.get(migration_id))
            await self.engine.runner.tidied(migration_id, run_cutover(ctx, actor, decided=True))
        except Exception:
            log.exception("cutover of %s could not run", migration_id)

    async def cutover(self, migration_id: str, actor: str) -> bool:
        """Switch a streaming migration to its target (flows/cutover.py); True when completed. Recovery (which
        finishes a released migration nobody here runs) leaves it alone meanwhile."""
        ctx = self.engine.context(await self.engine.ledger.get(migration_id))
        self._cutting.add(migration_id)
        try:
            return await self.engine.runner.tidied(migration_id, run_cutover(ctx, actor))
        finally:
            self._cutting.discard(migration_id)
