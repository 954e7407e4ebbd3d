"""The `/pgmig plan` reply (Block Kit only): the estimate first, then each database, then the pre-flight."""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, DividerBlock

from handlers.actions import Action
from handlers.context import Reply
from handlers.messages import context, esc, finding_line, fit_blocks, header, section, sections
from migration_core.plan import DatabasePlan, MigrationPlan, range_text
from migration_core.preflight.checks import Status, pretty_bytes
from migration_core.state.models import Mode


def _bytes(low: float, high: float) -> str:
    a, b = pretty_bytes(int(low)), pretty_bytes(int(high))
    return a if a == b else f"{a} – {b}"


def _database_lines(db: DatabasePlan) -> list[str]:
    e = db.estimate
    lines = [
        f"*db {esc(db.name)}* — {pretty_bytes(db.size)}, {db.tables:,} table(s), ~{db.rows:,} rows (statistics)",
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
    until = "completed" if plan.mode is Mode.OFFLINE else "streaming (then catch-up and cutover)"
    summary = f"*Estimate: {range_text(plan.total)}* from the command to {until}, with {plan.parallel} parallel jobs"
    held = plan.wal_held
    if held is not None and plan.wal_rate is not None:
        summary += (
            f"\nWAL the slot will hold during the copy: *{_bytes(held.low, held.high)}* "
            f"(the source writes {pretty_bytes(int(plan.wal_rate))}/s)"
        )
    blocks = [
        header(f"Plan: {plan.source} → {plan.target} ({plan.mode.value})"),
        section(summary),
        context("\n".join(f"• {esc(b)}" for b in plan.basis)),
    ]
    for db in plan.databases:
        blocks.append(DividerBlock().to_dict())
        blocks += sections(_database_lines(db))
    report = plan.preflight
    fails, warns = len(report.blocking), len(report.warnings)
    verdict = "❌ Blocked" if fails else "⚠️ Ready, with warnings" if warns else "✅ Ready"
    blocks.append(DividerBlock().to_dict())
    blocks += sections(
        [
            f"*Pre-flight: {verdict}* — {fails} blocking, {warns} warning(s), "
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
