"""The bookkeeping every flow shares: steps, state changes (through lifecycle.move), the audit log
and telling the channel.

A flow (offline, online, cutover, a managed Azure backend) only ever records its progress through
here, so that a restart finds every finished step and the channel hears about every state change.

Every write carries the fencing token this process's claim got (`tokens`): once another process has
taken a migration over, whatever this one still tries to write about it (a step, a move, a journal
entry, and so a change on a server) is refused with `LeaseLost`, and its work there stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from migration_core.observe.progress import MigrationProgress
from migration_core.pg import failpoints
from migration_core.state import approval, lifecycle
from migration_core.state.errors import MigrationError
from migration_core.state.events import MigrationEvents
from migration_core.state.journal import Journal
from migration_core.state.lifecycle import Superseded
from migration_core.state.models import AuditEntry, Migration, RetryChanges, State, Step, StepState, utcnow
from migration_core.store import Store

log = logging.getLogger(__name__)
DONE, RUNNING, FAILED, WAITING = StepState.DONE, StepState.RUNNING, StepState.FAILED, StepState.WAITING
ALERT_CHART_SECONDS = 600.0  # an alert's chart at most this often per migration (milestones' are not counted)
# The states whose arrival the migration's thread gets a picture of (events.chart), in its words
CHARTED = {
    State.CATCHING_UP: "full load done",
    State.READY_FOR_CUTOVER: "ready for cutover",
    State.COMPLETED: "completed",
}


class Ledger:
    def __init__(self, store: Store, events: MigrationEvents) -> None:
        self.store, self.events = store, events
        self._progress: dict[str, MigrationProgress] = {}
        self.tokens: dict[str, int] = {}  # migration → the fencing token of this process's lease on it
        self._charting: asyncio.Task | None = None  # the last chart being drawn and shared (they go in order)

    def chart(self, m: Migration, moment: str) -> None:
        """Draw and share the migration's chart at `moment` in the background, after the charts before it:
        a picture (a second of drawing, an upload to a slow Slack) never holds up the migration itself."""
        previous = self._charting

        async def draw() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await self.events.chart(m, self.progress(m.id), moment)
            except Exception:
                log.exception("sharing the chart of %s failed", m.id)

        self._charting = asyncio.get_running_loop().create_task(draw(), name=f"chart {m.id}")

    async def charted(self, within: float) -> None:
        """Wait (at most `within` seconds) for the charts still being drawn and shared; the rest is dropped."""
        if self._charting is not None and not self._charting.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._charting), within)
            except TimeoutError:
                self._charting.cancel()

    def progress(self, mid: str) -> MigrationProgress:
        return self._progress.setdefault(mid, MigrationProgress())

    async def get(self, mid: str) -> Migration:
        m = await self.store.get_migration(mid)
        if m is None:
            raise MigrationError(f"no migration {mid}")
        return m

    async def steps(self, mid: str) -> dict[str, Step]:
        return {s.name: s for s in await self.store.steps(mid)}

    def journal(self, mid: str) -> Journal:
        return Journal(self.store, mid, lambda: self.tokens.get(mid))

    async def save(
        self,
        mid: str,
        name: str,
        state: StepState,
        detail: str,
        data: dict | None = None,
        open_round: str | None = None,
    ) -> bool:
        """Save a step (fenced by this process's token). `open_round`: only while the migration awaits approval
        in that round (store.save_step); False when it no longer does."""
        existing = await self.store.step(mid, name)
        started = existing.started_at if existing and existing.started_at else utcnow()
        finished = utcnow() if state != RUNNING else None
        step = Step(mid, name, state, detail, started, finished, data or {})
        if not await self.store.save_step(step, self.tokens.get(mid), open_round):
            return False
        if state == DONE:
            failpoints.reached(f"step:{name}")
        return True

    async def move(
        self,
        mid: str,
        to: State,
        detail: str,
        *,
        expect: Iterable[State] | None = None,
        error: str = "",
        actor: str = "pgmig",
        action: str = "state",
        round: str = "",
        retry_with: RetryChanges | None = None,
        verdict: tuple[str, list[str]] | None = None,
    ) -> bool:
        """The guarded state change (lifecycle.move); False when the migration was not in a state that may
        be followed by `to` (another replica, click or cancel moved it first). `round`: the approval round a
        move to awaiting_approval opens; `retry_with`: what a failure's fix asks a retry to change;
        `verdict`: how this move ends an open cutover request (approved/rejected/expired, by whom). Any
        move out of awaiting_approval ends it, recorded before the move is announced."""

        async def emit(migration_id: str, told: str) -> None:
            closed = None
            if to is not State.AWAITING_APPROVAL:
                closed = await approval.close_cutover_request(self.store, migration_id, *(verdict or ("closed", [])))
            await self.emit_state(migration_id, told, closed)

        return await lifecycle.move(
            self.store,
            mid,
            to,
            detail,
            emit=emit,
            expect=expect,
            error=error,
            actor=actor,
            action=action,
            round=round,
            retry_with=retry_with,
            token=self.tokens.get(mid),
        )

    async def advance(
        self, mid: str, to: State, detail: str, *, expect: Iterable[State] | None = None, error: str = ""
    ) -> None:
        """A flow's move: when it is refused the flow has been superseded and must stop."""
        if not await self.move(mid, to, detail, expect=expect, error=error):
            raise Superseded(mid, to)

    async def emit_state(self, mid: str, detail: str, closed: approval.Closed | None = None) -> None:
        try:
            m = await self.get(mid)
            await self.events.state_changed(m, self.progress(mid), detail, closed)
            if m.state in CHARTED and closed is None:  # back after a rejected or expired approval: nothing new
                self.chart(m, CHARTED[m.state])
        except Exception:  # telling the channel must never break the migration itself
            log.exception("publishing the state of %s failed", mid)

    async def fail(self, mid: str, message: str, retry_with: RetryChanges | None = None) -> bool:
        """Any unfinished state → failed, with the state it failed in; False if it finished meanwhile."""
        m = await self.get(mid)
        step = m.state.value if m.state.running else "run"
        return await self.move(mid, State.FAILED, message, error=f"{step}: {message}", retry_with=retry_with)


class Alerts:
    """Post when a condition starts, and once more when it clears: never every tick. A raised alert brings the
    migration's chart, at most once per `chart_every` seconds per migration: an alert that comes and goes (lag
    around its threshold) does not fill the thread with pictures."""

    def __init__(self, ledger: Ledger, chart_every: float = ALERT_CHART_SECONDS) -> None:
        self.ledger, self.chart_every = ledger, chart_every
        self._raised: dict[tuple[str, str], int] = {}  # 0 clear, 1 raised, 2 raised offering cancel
        self._charted: dict[str, float] = {}  # migration → when its last alert chart was asked for (monotonic)

    async def alert(
        self, m: Migration, kind: str, raised: bool, text: str, offer_cancel: bool = False, *, chart: bool = True
    ) -> None:
        """`offer_cancel`: the way out is cancelling (the alert gets a button for it); a raised alert that
        comes to need it is said again, with it (and not again when it no longer does: the button stays good).
        `chart`: the alert's first saying is followed by the migration's chart (a one-off notice's is not)."""
        key = (m.id, kind)
        level, before = (2 if offer_cancel else 1) if raised else 0, self._raised.get(key, 0)
        if level == before or 0 < level < before:
            return
        self._raised[key] = level
        message = text if raised else f"✅ back to normal: {kind} ({m.id})"
        await self.ledger.store.audit(AuditEntry("pgmig", f"alert.{kind}", message[:2000], m.id))
        try:
            await self.ledger.events.alert(m, self.ledger.progress(m.id), message, offer_cancel and raised)
            if raised and not before and chart and self._chart_due(m.id):
                self.ledger.chart(m, f"{kind} alert")
        except Exception:
            log.exception("posting the %s alert of %s failed", kind, m.id)

    def _chart_due(self, mid: str) -> bool:
        now, last = time.monotonic(), self._charted.get(mid)
        if last is not None and now - last < self.chart_every:
            return False
        self._charted[mid] = now
        return True

    async def notice(self, m: Migration, kind: str, text: str) -> None:
        """A one-off post (not a condition that later clears)."""
        await self.alert(m, kind, True, text, chart=False)
        self._raised.pop((m.id, kind), None)
