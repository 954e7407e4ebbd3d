"""A migration's plan beside what happened: each phase's estimated range and what it took (so far, while it
runs), and whether it landed inside. Pure: the engine hands it the plan, the steps, the live progress and when
the migration reached each state (Engine.plan_review)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from migration_core.observe.progress import DatabaseProgress, MigrationProgress
from migration_core.plan.estimate import Range
from migration_core.plan.survey import DatabasePlan, MigrationPlan
from migration_core.state.models import Method, Migration, Mode, State, Step, StepKind, StepState


class Verdict(StrEnum):
    INSIDE = "inside"
    OVER = "over"  # slower than the range
    UNDER = "under"  # faster than the range


@dataclass(frozen=True)
class PhaseCheck:
    """One phase: its estimate, and what it took (None: not measured, or not reached yet)."""

    name: str
    estimate: Range
    took: float | None = None
    running: bool = False  # still under way: `took` is so far
    note: str = ""  # why it is not measured

    @property
    def verdict(self) -> Verdict | None:
        """Only a finished phase lands inside or under; one under way is over as soon as it passes the range."""
        if self.took is None:
            return None
        if self.took > self.estimate.high:
            return Verdict.OVER
        if self.running:
            return None
        return Verdict.UNDER if self.took < self.estimate.low else Verdict.INSIDE


@dataclass(frozen=True)
class DatabaseReview:
    plan: DatabasePlan
    phases: list[PhaseCheck]  # copy, index builds, verification


@dataclass(frozen=True)
class PlanReview:
    plan: MigrationPlan
    databases: list[DatabaseReview]
    whole: PhaseCheck  # from the command to completed (offline) or ready for cutover (online)

    @property
    def judged(self) -> list[tuple[str, PhaseCheck]]:
        """Every phase with a verdict, named with its database ("" for the whole run)."""
        out = [(d.plan.name, c) for d in self.databases for c in d.phases] + [("", self.whole)]
        return [(db, c) for db, c in out if c.verdict is not None]


def review(
    plan: MigrationPlan,
    m: Migration,
    steps: Mapping[str, Step],
    progress: MigrationProgress,
    reached: Mapping[str, datetime],
    now: datetime,
) -> PlanReview:
    """The plan against what the steps recorded, the phases under way in this process, and `reached` (when the
    migration first moved to each state)."""
    dbs = [DatabaseReview(db, _phases(db, plan, m, steps, progress, now)) for db in plan.databases]
    return PlanReview(plan, dbs, _whole(plan, m, reached, now))


def _phases(
    db: DatabasePlan,
    plan: MigrationPlan,
    m: Migration,
    steps: Mapping[str, Step],
    progress: MigrationProgress,
    now: datetime,
) -> list[PhaseCheck]:
    e = db.estimate
    kind = StepKind.IMPORT if plan.mode is Mode.OFFLINE else StepKind.LOAD
    step = steps.get(kind.at(db.name))
    live = progress.databases.get(db.name)
    copy_phase = "loading data" if m.options.method is Method.DUMP and plan.mode is Mode.OFFLINE else "copying data"

    def timed(phase: str) -> tuple[float, bool] | None:
        if step is not None and step.state == StepState.DONE:
            seconds = step.data.get("phases", {}).get(phase)
            return (float(seconds), False) if seconds is not None else None
        if step is not None and step.state == StepState.RUNNING and live is not None:
            return live.spent(phase, now.timestamp())
        return None

    def check(name: str, estimate: Range, phase: str, note: str = "") -> PhaseCheck:
        took, running = timed(phase) or (None, False)
        return PhaseCheck(name, estimate, took, running, note)

    # the dump method's schema file builds the indexes before the rows arrive: no phase of their own
    unbuilt = "built with the schema (dump method)" if copy_phase == "loading data" else ""
    return [
        check("copy", e.copy, copy_phase),
        check("indexes", e.indexes, "building indexes", unbuilt),
        _verification(db, plan, steps, live, now),
    ]


def _verification(
    db: DatabasePlan, plan: MigrationPlan, steps: Mapping[str, Step], live: DatabaseProgress | None, now: datetime
) -> PhaseCheck:
    """Offline: the verify step (while it runs, this process's progress); online: the checksums after the
    cutover's release."""
    estimate = db.estimate.verify
    if plan.mode is Mode.ONLINE:
        cutover = steps.get(StepKind.CUTOVER.at(db.name))
        seconds = (cutover.data.get("timings") or {}).get("verify") if cutover is not None else None
        return PhaseCheck("verification", estimate, float(seconds) if seconds is not None else None)
    step = steps.get(StepKind.VERIFY.at(db.name))
    if step is not None and "seconds" in step.data:
        return PhaseCheck("verification", estimate, float(step.data["seconds"]))
    if live is not None and live.phase == "verifying" and live.started_at is not None:
        return PhaseCheck("verification", estimate, now.timestamp() - live.started_at, running=True)
    return PhaseCheck("verification", estimate)


def _whole(plan: MigrationPlan, m: Migration, reached: Mapping[str, datetime], now: datetime) -> PhaseCheck:
    """From the command to completed (offline) or ready for cutover (online), first time there; not compared
    once the run failed before it (a retry's time includes however long the failure waited)."""
    name = f"to {plan.until}"
    goal = State.COMPLETED if plan.mode is Mode.OFFLINE else State.READY_FOR_CUTOVER
    arrived, failed = reached.get(goal.value), reached.get(State.FAILED.value)
    if failed is not None and (arrived is None or failed < arrived):
        return PhaseCheck(name, plan.total, note="not compared: it failed on the way")
    if arrived is not None:
        return PhaseCheck(name, plan.total, (arrived - m.created_at).total_seconds())
    if m.state.finished:
        return PhaseCheck(name, plan.total, note=f"not reached: {m.state.value}")
    return PhaseCheck(name, plan.total, (now - m.created_at).total_seconds(), running=True)
