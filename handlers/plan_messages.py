"""The `/pgmig plan` reply (Block Kit only): the estimate first, then each database, then the pre-flight; and a
migration's own plan as the first section of its card and status, each phase's range beside what it took."""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, DividerBlock

from handlers.actions import Action
from handlers.context import Reply
from handlers.messages import context, esc, finding_line, fit_blocks, header, plural, section, sections
from migration_core.plan import DatabasePlan, MigrationPlan, range_text, seconds_text
from migration_core.plan.review import PhaseCheck, PlanReview, Verdict
from migration_core.preflight.checks import Status, pretty_bytes
from migration_core.state.models import Mode


def _bytes(low: float, high: float) -> str:
    a, b = pretty_bytes(int(low)), pretty_bytes(int(high))
    return a if a == b else f"{a} – {b}"


def _database_lines(db: DatabasePlan) -> list[str]:
    e = db.estimate
    lines = [
        f"*db {esc(db.name)}* — {pretty_bytes(db.size)}, {plural(db.tables, 'table')}, ~{db.rows:,} rows (statistics)",
        f"Copy {range_text(e.copy)} · indexes {range_text(e.indexes)} · verification {range_text(e.verify)} · "
        f"fixed overhead {range_text(e.overhead)} → *{range_text(e.total)}*",
    ]
    if db.largest:
        lines.append(
            "Largest: " + "; ".join(f"`{esc(t.name)}` {pretty_bytes(t.bytes)}, ~{t.rows:,} rows" for t in db.largest)
        )
    lines += [f"⚠️ `{esc(k.name)}` has no key — {esc(k.advice)}" for k in db.keyless]
    return lines


def plan_message(plan: MigrationPlan, rerun_text: str) -> Reply:
    until = plan.until + (" (then the cutover)" if plan.mode is Mode.ONLINE else "")
    summary = f"*Estimate: {range_text(plan.total)}* from the command to {until}, with {plan.parallel} parallel jobs"
    if plan.mode is Mode.ONLINE:
        summary += f"\nWAL the slot will hold during the copy: *{wal_text(plan)}*"
    blocks = [
        header(f"Plan: {plan.source} → {plan.target} ({plan.mode.value})"),
        section(summary),
        context("\n".join(f"• {esc(b)}" for b in plan.basis)),
    ]
    for db in plan.databases:
        blocks.append(DividerBlock().to_dict())
        blocks += sections(_database_lines(db))
    report = plan.preflight
    assert report is not None, "`/pgmig plan` always runs the pre-flight"
    fails, warns = len(report.blocking), len(report.warnings)
    verdict = "❌ Blocked" if fails else "⚠️ Ready, with warnings" if warns else "✅ Ready"
    blocks.append(DividerBlock().to_dict())
    blocks += sections(
        [
            f"*Pre-flight: {verdict}* — {fails} blocking, {plural(warns, 'warning')}, "
            f"{len(report.findings) - fails - warns} passed",
            *(f"_{esc(f.scope)}_ {finding_line(f)}" for f in report.findings if f.status is not Status.OK),
        ]
    )
    blocks = fit_blocks(blocks)
    blocks.append(
        ActionsBlock(
            elements=[ButtonElement(text="Re-run plan", action_id=Action.RERUN_CHECK.value, value=rerun_text[:2000])]
        ).to_dict()
    )
    return Reply(f"Plan {plan.source} → {plan.target}: {range_text(plan.total)}; pre-flight {verdict}", blocks)


def wal_text(plan: MigrationPlan) -> str:
    """WAL the slot will hold during the copy, at the source's WAL rate; or why it is not known."""
    held = plan.wal_held
    if held is not None and plan.wal_rate is not None:
        return f"{_bytes(held.low, held.high)} (the source writes {pretty_bytes(int(plan.wal_rate))}/s)"
    if plan.wal_pending:
        return "being measured beside the full load"
    return next((f"not known: {esc(note)}" for note in plan.notes if "WAL" in note), "not known")


MARKS = {Verdict.INSIDE: "✅ inside", Verdict.OVER: "⏫ over", Verdict.UNDER: "⏬ under"}


def check_text(c: PhaseCheck) -> str:
    """`copy 0.1 s – 0.3 s → took 0.2 s ✅ inside`; while it runs, `→ 12 s so far`."""
    said = f"{c.name} {range_text(c.estimate)}"
    if c.took is None:
        return f"{said} ({c.note})" if c.note else said
    took = f"{seconds_text(c.took)} so far" if c.running else f"took {seconds_text(c.took)}"
    mark = MARKS.get(c.verdict) if c.verdict else None
    if mark and c.verdict is not Verdict.INSIDE:
        mark += f" ×{c.estimate.ratio(c.took):.1f}"
    return f"{said} → {took}" + (f" {mark}" if mark else "")


def plan_section(review: PlanReview) -> list[str]:
    """A migration's plan, the first section of its card: the whole run's range (and what it took), WAL the slot
    will hold, where the numbers come from; then per database what it holds and each phase's range."""
    plan = review.plan
    first = f"📋 *Plan* · {check_text(review.whole)} · from {esc(plan.grounds)}"
    if plan.mode is Mode.ONLINE:
        first += f" · WAL the slot will hold {wal_text(plan)}"
    lines = [first]
    for d in review.databases:
        db = d.plan
        lines.append(
            f"`{esc(db.name)}` {pretty_bytes(db.size)}, {plural(db.tables, 'table')}, ~{db.rows:,} rows · "
            + " · ".join(check_text(c) for c in d.phases)
        )
    return lines


def plan_outcome(review: PlanReview) -> str:
    """One line for a finished migration: how many phases landed inside their range, and which did not."""
    judged = review.judged
    if not judged:
        return "📋 Plan vs actual: no phase measured"
    inside = sum(c.verdict is Verdict.INSIDE for _, c in judged)
    off = [
        f"{c.name}{f' of {esc(db)}' if db else ''} {c.verdict} ×{c.estimate.ratio(c.took or 0):.1f}"
        for db, c in judged
        if c.verdict is not Verdict.INSIDE
    ]
    return f"📋 Plan vs actual: {inside} of {plural(len(judged), 'phase')} inside the range" + (
        f" · {', '.join(off)}" if off else ""
    )
