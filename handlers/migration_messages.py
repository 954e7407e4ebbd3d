"""Block Kit for migrations: the live progress card, state notices, status, list and verification."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from handlers.actions import Action
from handlers.context import Reply
from handlers.messages import context, esc, header, plural, preflight_message, reason_input, section, sections, shorten
from handlers.plan_messages import plan_outcome, plan_section
from migration_core.azure.dms_backend import DmsBackend
from migration_core.azure.flex_backend import FlexBackend
from migration_core.changes.cleanup import CleanupReport
from migration_core.engine.api import MONITORED, CancelOutcome, CommandResult, MigrationStatus
from migration_core.flows.steps.cutover import WINDOW_STEPS
from migration_core.observe.progress import DatabaseProgress, MigrationProgress
from migration_core.plan.review import PlanReview
from migration_core.preflight.checks import PreflightReport, needs_new_migration, pretty_bytes
from migration_core.state.approval import ApprovalRequest
from migration_core.state.models import (
    AuditPage,
    Backend,
    Migration,
    Mode,
    RetryChanges,
    State,
    Step,
    StepKind,
    StepState,
)
from migration_core.verify.tables import VerifyResult

STATE_ICON = {
    State.CREATED: "🆕",
    State.PREFLIGHT: "🔎",
    State.EXPORTING: "📤",
    State.IMPORTING: "📥",
    State.SCHEMA: "📐",
    State.FULL_LOAD: "📥",
    State.CATCHING_UP: "🔄",
    State.READY_FOR_CUTOVER: "🟢",
    State.CUTTING_OVER: "✂️",
    State.RELEASED: "🚦",
    State.VERIFYING: "🔍",
    State.PAUSED: "⏸️",
    State.COMPLETED: "✅",
    State.FAILED: "❌",
    State.CANCELLED: "🚫",
}
REJECT_FORM = "pgmig-reject"  # the callback id of the form Reject opens
REASON = "reason"  # its one field (block and action id)
SHOWN_UNAPPLIED = 10  # schema changes listed on an approval card
STEP_ICON = {"done": "✅", "running": "⏳", "failed": "❌", "waiting": "⏸️", "dropped": "🗑️"}
BAR = 12


def icon(state: State) -> str:
    return STATE_ICON.get(state, "⏳")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h}:{m:02d}:{s:02d}" if h or d else f"{m}:{s:02d}"
    return f"{d} d {clock}" if d else clock


def people(users: list[str]) -> str:
    return ", ".join(mention(u) for u in users) or "nobody"


def bar(fraction: float) -> str:
    filled = round(fraction * BAR)
    return "▓" * filled + "░" * (BAR - filled)


def mention(user: str) -> str:
    return f"<@{user}>"


BACKEND_NAMES = {"flex": FlexBackend.label, "dms": DmsBackend.label}


def describe(m: Migration) -> str:
    backend = m.options.backend
    if backend is not Backend.NATIVE:
        return f"{esc(m.source)} → {esc(m.target)} · {m.mode} (data moved by {BACKEND_NAMES.get(backend, backend)})"
    how = f"{m.options.method}, " if m.mode is Mode.OFFLINE else ""
    return f"{esc(m.source)} → {esc(m.target)} · {m.mode} ({how}{plural(m.options.parallel, 'job')})"


def database_line(p: DatabaseProgress, now: float) -> str:
    parts = [f"`{esc(p.database)}` {esc(p.phase)}"]
    if p.fraction is not None and p.started_at is not None and p.lag_bytes is None:
        parts.append(f"{bar(p.fraction)} {p.fraction * 100:.0f}%")
    if p.tables_total and p.lag_bytes is None:
        parts.append(f"{p.tables_done}/{plural(p.tables_total, 'table')}")
    if p.ranges_total and p.lag_bytes is None:
        parts.append(f"{p.ranges_done}/{p.ranges_total} ranges of split tables")
    if p.rows_done and p.lag_bytes is None:
        parts.append(plural(p.rows_done, "row"))
    if p.bytes_total and p.lag_bytes is None:
        parts.append(f"{pretty_bytes(p.bytes_done)} of {pretty_bytes(p.bytes_total)} of table data")
    if p.started_at is not None and p.finished_at is None:  # a finished phase's clock has stopped: not shown
        parts.append(f"{duration(p.elapsed(now))} elapsed")
    eta = p.eta(now)
    if eta is not None and p.lag_bytes is None:
        parts.append(f"ETA {duration(eta)}")
    if p.lag_bytes is not None:
        seconds = f"{p.lag_seconds:.1f} s" if p.lag_seconds is not None else "unknown"
        parts.append(f"lag {seconds}, {pretty_bytes(p.lag_bytes)} behind")
    elif p.lag_seconds is not None:  # a managed service reports its latency, not bytes
        parts.append(f"latency {p.lag_seconds:.1f} s")
    if p.retained_bytes is not None:
        parts.append(f"slot holds {pretty_bytes(p.retained_bytes)} of WAL{slot_outlook(p)}")
    if p.apply_rate is not None and p.lag_bytes is not None:
        parts.append(f"applying {pretty_bytes(int(p.apply_rate * 60))}/min of the source's WAL")
    if p.forecast and p.forecast.window and p.lag_bytes is not None:
        parts.append(f"predicted write freeze {p.forecast.window.seconds:.2f} s")
    if p.verified:
        parts.append(f"verified while streaming: {esc(p.verified)}")
    if p.schema_changes:
        parts.append(f"schema changes: {esc(p.schema_changes.summary())}")
    if p.working:
        parts.append(f"🔧 {esc(p.working)}")
    if p.waiting:
        parts.append(f"⏳ {esc(p.waiting)}")
    return " · ".join(parts)


def slot_outlook(p: DatabaseProgress) -> str:
    """The slot guardian's words after the WAL held: how fast it grows and when it reaches the limit."""
    if p.wal_limit is None:  # not looked at yet (or not a native online migration)
        return ""
    said = f", growing {pretty_bytes(int(p.wal_rate * 60))}/min" if p.wal_rate else ", not growing"
    if p.wal_limit < 0:
        return said + ", max_slot_wal_keep_size unset"
    limit = f"max_slot_wal_keep_size {pretty_bytes(p.wal_limit)}"
    return said + (f", {limit} in about {duration(p.limit_in)}" if p.limit_in is not None else f", {limit}")


def migration_card(
    m: Migration, progress: MigrationProgress, steps: list[Step] | None = None, plan: PlanReview | None = None
) -> Reply:
    """The one live message per migration, edited in place as it runs; once it is over, its outcome.
    The clock in the first line is the migration's (from the store), so it runs whatever phase each
    database is in and survives a restart; `steps` give a finished migration's facts (rows verified, the
    cutover's timings). Its own plan, when it has one, is the first section, each phase beside what it took."""
    now = time.time()
    if m.state.finished:
        lines = outcome(m, progress, {s.name: s for s in steps or []})
        if plan is not None:
            lines.insert(1, plan_outcome(plan))
    else:
        blocked = m.state is State.READY_FOR_CUTOVER and any(progress.of(db).blocked for db in m.databases)
        lines = [
            f"{'⚠️' if blocked else icon(m.state)} *{m.state.value}* · {describe(m)} · started by "
            f"{mention(m.requested_by)} · {duration(now - (progress.retried_at or m.created_at.timestamp()))} so far"
        ]
        lines += [database_line(progress.of(db), now) for db in m.databases]
    blocks = [
        header(f"{m.id}: {m.source} → {m.target}"),
        *(sections(plan_section(plan)) if plan is not None else []),
        *sections(lines),
        context(" · ".join(next_commands(m))),
    ]
    return Reply(f"{m.id} {m.state.value}: {m.source} → {m.target}", blocks, ephemeral=False)


def next_commands(m: Migration) -> list[str]:
    """The commands that still make sense: nothing to cancel once a migration is over (a failed one's
    cancel removes what it left on the servers), nothing to cancel once the target was released."""
    mid, state = m.id, m.state
    status = f"`/pgmig status {mid}`"
    if state is State.FAILED and needs_new_migration(m.error):
        new = "a new `/pgmig migrate` with the right `--db` (a retry keeps this list)"
        return [status, new, f"`/pgmig cancel {mid}` closes it"]
    if state is State.FAILED:
        closes = "closes it" if failed_at(m) == "preflight" else "removes what it left"
        return [status, f"`{m.retry_command}`", f"`/pgmig cancel {mid}` {closes}"]
    if state is State.COMPLETED:
        return [status, f"`/pgmig verify {mid}`", f"`/pgmig audit {mid}`"]
    if state is State.CANCELLED:
        return [status, f"`/pgmig audit {mid}`"]
    if state is State.RELEASED:
        return [status]
    then = {State.PAUSED: [f"`/pgmig resume {mid}`"], State.READY_FOR_CUTOVER: [f"`/pgmig cutover {mid}`"]}
    return [status, *then.get(state, []), f"`/pgmig cancel {mid}`"]


def failed_at(m: Migration) -> str:
    return m.error.split(":", 1)[0] if m.error else ""


def outcome(m: Migration, progress: MigrationProgress, steps: dict[str, Step]) -> list[str]:
    """A finished migration: how it ended, how long it took, the rows it moved and, for a cutover, how
    long writes were unavailable — instead of progress bars, lag and ETAs that no longer mean anything."""
    took = duration(m.updated_at.timestamp() - (progress.retried_at or m.created_at.timestamp()))
    when = f"in {took}" if m.state is State.COMPLETED else f"after {took}"
    at = f" at *{esc(failed_at(m))}*" if m.state is State.FAILED and failed_at(m) else ""
    rows = {db: rows_moved(m, db, progress, steps) for db in m.databases}
    known = [n for n in rows.values() if n is not None]
    total = f" · {plural(sum(known), 'row')} moved" if len(m.databases) > 1 and known else ""
    lines = [
        f"{icon(m.state)} *{m.state.value}*{at} {when}{total} · {describe(m)} · started by {mention(m.requested_by)}"
    ]
    for db in m.databases:
        parts = [f"`{esc(db)}`"]
        if rows[db] is not None:
            parts.append(f"{plural(rows[db] or 0, 'row')} moved")
        elif not copy_started(db, steps):
            parts.append("nothing copied")
        if window := cutover_window(db, steps):
            parts.append(window)
        if len(parts) > 1:
            lines.append(" · ".join(parts))
    if m.state is State.FAILED and m.error:
        lines.append(f"*Error:* {esc(m.error[:1500])}")
    return lines


def copy_started(db: str, steps: dict[str, Step]) -> bool:
    return any(name in steps for name in (StepKind.IMPORT.at(db), StepKind.LOAD.at(db), StepKind.BACKEND.value))


def rows_moved(m: Migration, db: str, progress: MigrationProgress, steps: dict[str, Step]) -> int | None:
    """Rows copied, from COPY's own counts while this process ran it; else, for a completed migration,
    the rows its verification found equal on both sides; None when neither is known."""
    p = progress.databases.get(db)
    if p is not None and p.rows_done:
        return p.rows_done
    verified = steps.get(StepKind.VERIFY.at(db))
    if m.state is State.COMPLETED and verified is not None and isinstance(verified.data.get("rows"), int):
        return int(verified.data["rows"])
    return None


def cutover_window(db: str, steps: dict[str, Step]) -> str:
    """A cutover's timings for one database: from its cutover step, else from the release's record."""
    step = steps.get(StepKind.CUTOVER.at(db))
    timings = step.data.get("timings") if step is not None else None
    if not timings and (release := steps.get(StepKind.RELEASE.value)) is not None:
        timings = (release.data.get("timings") or {}).get(db)
    return window_breakdown(timings) if timings else ""


def window_breakdown(timings: dict[str, float]) -> str:
    """Writes unavailable: the steps inside the write freeze (cutover.WINDOW_STEPS); then, apart, those
    that ran after the target was released (validate, verify), while applications could already write."""

    def name(step: str) -> str:
        return step.replace("_", "-")

    inside = {k: v for k, v in timings.items() if k in WINDOW_STEPS}
    after = {k: v for k, v in timings.items() if k not in WINDOW_STEPS}
    text = (
        f"writes unavailable {sum(inside.values()):.2f} s ("
        + ", ".join(f"{name(k)} {v:.2f}" for k, v in inside.items())
        + ")"
    )
    if after:
        text += " · after release: " + ", ".join(f"{name(k)} {v:.2f} s" for k, v in after.items())
    return text


def state_notice(m: Migration, detail: str, decided: str = "") -> Reply:
    """A thread reply on the live message when a migration completes, fails, pauses or is cancelled.
    `decided`: a cutover request's outcome in words naming who decided (mrkdwn), told instead of `detail`."""
    who = mention(m.requested_by)
    text = f"{who} {icon(m.state)} *{m.id} {m.state.value}*"
    if m.state is State.FAILED:
        then = (
            new_migration_advice(m) if needs_new_migration(m.error) else f"When the cause is fixed: `{m.retry_command}`"
        )
        text += f" at *{esc(m.error.split(':', 1)[0])}*\n```{esc(detail[:2500])}```\n{then}"
    elif decided:
        text += f"\n{decided}"
    elif detail:
        text += f"\n{esc(detail[:2800])}"
    return Reply(f"{m.id} {m.state.value}", [section(text)], ephemeral=False)


def alert_notice(m: Migration, text: str, offer_cancel: bool = False) -> Reply:
    """An alert in the card's thread; `offer_cancel`: with a (confirmed) button that runs `/pgmig cancel`,
    for when cancelling — which drops the replication slots — is the way out."""
    blocks = [section(f"{mention(m.requested_by)} *{m.id}* {esc(text[:2900])}")]
    if offer_cancel:
        blocks.append(
            ActionsBlock(
                elements=[
                    ButtonElement(
                        text="Drop slot and cancel",
                        action_id=Action.DROP_SLOT_CANCEL.value,
                        value=f"cancel {m.id}",
                        style="danger",
                        confirm=ConfirmObject(
                            title=f"Cancel {m.id}?",
                            text=f"This cancels {m.id} and drops its replication slots on the source; "
                            "the migration cannot be resumed, only started again.",
                            confirm="Drop slot and cancel",
                            deny="Keep it",
                            style="danger",
                        ),
                    )
                ]
            ).to_dict()
        )
    return Reply(f"{m.id}: {text[:150]}", blocks, ephemeral=False)


def started(m: Migration, report: PreflightReport, channel: str) -> Reply:
    where = f" Live progress in <#{channel}>." if channel and channel != m.channel else ""
    lines = [
        f"🚀 *{m.id}* started by {mention(m.requested_by)}: {describe(m)}",
        f"Databases: {esc(', '.join(report.databases))}.{where}",
    ]
    lines += [f"⚠️ {esc(f.scope)}: {esc(f.headline)} — {esc(f.detail)}" for f in report.warnings]
    return Reply(f"{m.id} started", sections(lines), ephemeral=False)


def new_migration_advice(m: Migration, command: str = "") -> str:
    """What to do when a migration's database list is what the pre-flight refused: `retry` keeps the list."""
    example = f", e.g. `{esc(command)}`" if command else " (`/pgmig help migrate`)"
    return (
        f"a retry would ask for the same databases: start a new migration with the right `--db`{example}; "
        f"`/pgmig cancel {m.id}` closes this one."
    )


def refused(m: Migration, report: PreflightReport, command: str = "") -> Reply:
    """A migration the pre-flight stopped: it stays failed at `preflight` (nothing was changed on the servers)
    until it is retried or cancelled; when its database list is the problem, a new migration is the fix
    (`command`: that migration's command, with the databases the source has)."""
    reply = preflight_message(report, "")
    problems = plural(len(report.blocking), "blocking problem")
    if report.retryable:
        then = (
            f"Fix {'it' if len(report.blocking) == 1 else 'them'}, then "
            f"`{replace(m, retry_with=report.retry).retry_command}`, or `/pgmig cancel {m.id}` to close it."
        )
    else:
        advice = new_migration_advice(m, command)
        then = advice[0].upper() + advice[1:]
    blocks = [section(f"❌ *{m.id} stopped at pre-flight* ({problems}); nothing was changed on the servers. {then}")]
    blocks += [b for b in reply.blocks if b.get("type") != "actions"]
    return Reply(f"{m.id} stopped at pre-flight: {problems}", blocks)


def status(found: MigrationStatus) -> Reply:
    m, steps, leftovers = found.migration, found.steps, found.leftovers
    card = migration_card(m, found.progress, steps, found.plan)
    lines = ["*Steps*"]
    for s in steps:
        lines.append(step_line(s))
        parked = s.data.get("parked") if isinstance(s.data, dict) else None
        if parked:
            fks = [f"{fk['table']}.{fk['name']}" for fk in parked.get("foreign_keys", [])]
            triggers = [
                f"{t['table']}.{t['name']}" + (" (disabled on source too)" if t["enabled"] == "D" else "")
                for t in parked.get("triggers", [])
            ]
            lines.append(f"      foreign keys reinstated at cutover: {esc(', '.join(fks) or 'none')}")
            lines.append(f"      triggers restored at cutover: {esc(', '.join(triggers) or 'none')}")
    if found.holder and not m.state.finished:
        lines.append(f"Run by replica `{esc(found.holder)}`")
    lines += [f"🔁 {e.at:%Y-%m-%d %H:%M:%S} UTC — {esc(e.detail.removeprefix('🔁 '))}" for e in found.takeovers]
    if leftovers:
        lines.append("*Still on the servers* (pgmig made these and has not removed them)")
        lines += [f"• {esc(e.describe())}" for e in leftovers]
        if m.state is State.FAILED:
            lines.append(f"`/pgmig cancel {m.id}` removes them; `/pgmig retry {m.id}` carries on with them")
    return Reply(card.text, card.blocks[:-1] + sections(lines) + card.blocks[-1:])


def step_line(s: Step) -> str:
    """One step of `/pgmig status`: the approval says who asked and who decided; a cutover step separates
    the write freeze from what ran after release."""
    data = s.data if isinstance(s.data, dict) else {}
    if s.name == StepKind.APPROVAL.value and data.get("requested_by") and data.get("expires_at"):
        return approval_step_line(s)
    if s.name.startswith(f"{StepKind.CUTOVER.value}:") and data.get("timings"):
        return f"{STEP_ICON.get(s.state, '•')} `{esc(s.name)}` — {window_breakdown(data['timings'])}"
    detail = f" — {esc(s.detail[:600])}" if s.detail else ""
    return f"{STEP_ICON.get(s.state, '•')} `{esc(s.name)}`{detail}"


def approval_step_line(s: Step) -> str:
    request = ApprovalRequest.from_dict(s.data)
    verdict, by = s.data.get("decision", ""), list(s.data.get("decided_by", []))
    asked = f"`approval` — requested by {mention(request.requested_by)}"
    if verdict == "approved":
        return f"✅ {asked}; approved by {people(by)}"
    if verdict == "rejected":
        return f"🚫 {asked}; rejected by {people(by)}"
    if verdict == "expired" or (request.open and request.expired):
        return f"⌛ {asked}; expired without enough approvals" + (f" (approved by {people(by)})" if by else "")
    if request.open and s.state == StepState.WAITING:
        return f"⏸️ {asked}; waiting for the team until {request.expires_at:%Y-%m-%d %H:%M} UTC"
    why = s.detail if s.detail and not s.detail.startswith("requested by") else "without a decision"
    return f"{STEP_ICON.get(s.state, '•')} {asked}; closed {esc(why)}"


def approval_decided(m: Migration, verdict: str, by: list[str]) -> str:
    """What became of a cutover request, in words, naming the people who decided."""
    if verdict == "approved":
        return f"✅ *Approved* by {people(by)}: {m.id} is cutting over"
    if verdict == "rejected":
        why = rejection_reason(m)
        said = f": “{esc(why)}”" if why else ""
        return f"🚫 *Cutover rejected* by {people(by)}{said}; replication keeps running"
    if verdict == "expired":
        return (
            "⌛ *The cutover request expired* without enough approvals"
            + (f" (approved by {people(by)})" if by else "")
            + "; replication keeps running"
        )
    return f"Closed without a decision: {m.id} is {m.state.value.replace('_', ' ')}"


def rejection_reason(m: Migration) -> str:
    """The reason a rejected cutover was given (the engine records `cutover rejected by ACTOR: REASON`)."""
    head = "cutover rejected by "
    return m.error[len(head) :].partition(": ")[2] if m.error.startswith(head) else ""


def command_pending(m: Migration, result: CommandResult) -> Reply:
    """A command another replica holds the migration for (and has not answered yet), or one that could
    not be carried out."""
    if result.queued_on:
        return Reply(
            f"{m.id}: {result.kind} queued",
            [
                section(
                    f"⏳ *{m.id}* runs on another pgmig replica (`{esc(result.queued_on)}`): "
                    f"your `{result.kind}` is queued there and the channel hears when it is done."
                )
            ],
            ephemeral=False,
        )
    return Reply(
        f"{m.id}: {result.kind} refused",
        [
            section(
                f"❌ `{result.kind}` of *{m.id}* could not be done"
                + (f": {esc(result.message)}" if result.message else f" ({m.id} changed state meanwhile)")
            )
        ],
    )


def retrying(m: Migration, changes: RetryChanges) -> Reply:
    now = f", now with `{changes}`" if changes else ""
    return Reply(
        f"{m.id} retrying",
        [
            section(
                f"🔁 *{m.id}* retrying from the step that failed (`{esc(m.error.split(':', 1)[0])}`){now}; "
                "finished databases are not redone."
            )
        ],
        ephemeral=False,
    )


def repaired(m: Migration, ranges: list[str]) -> Reply:
    """What `/pgmig repair` re-copied; continuous verification compares each range again."""
    listed = "\n".join(f"• {esc(r)}" for r in ranges)
    return Reply(
        f"{m.id}: {plural(len(ranges), 'range')} re-copied",
        [
            section(
                f"🩹 *{m.id}*: re-copied from the source while replication runs, each at one point of the stream:\n"
                f"{listed}\nContinuous verification compares them again; `/pgmig status {m.id}` shows the result."
            )
        ],
        ephemeral=False,
    )


def resumed(m: Migration) -> Reply:
    return Reply(
        f"{m.id} resumed", [section(f"▶️ *{m.id}* importing the export files as they are now.")], ephemeral=False
    )


def cutover_requested(request: ApprovalRequest, required: int) -> Reply:
    return Reply(
        f"{request.subject}: cutover requested",
        [
            section(
                f"🗳️ Cutover of *{request.subject}* requested: the approval card is in <#{request.channel}> "
                f"({plural(required, 'approval')} needed)."
            )
        ],
        ephemeral=False,
    )


def cleanup_report(report: CleanupReport) -> Reply:
    name = esc(report.server)
    lines = [f"*pgmig's replication objects on {name}*"]
    lines += [f"• {esc(x.describe())} — kept: {x.migration_id} is {state}" for x, state in report.kept]
    if not report.loose:
        lines.append("Nothing left behind." if not report.kept else "Nothing else.")
    elif report.removed is not None:
        lines += [f"🗑️ removed {esc(r)}" for r in report.removed]
    else:
        lines += [f"• {esc(x.describe())}" for x in report.loose]
        these = "it" if len(report.loose) == 1 else f"these {len(report.loose)}"
        lines.append(f"`/pgmig cleanup {name} --yes` removes {these}.")
    return Reply(f"cleanup {report.server}: {len(report.loose)} left behind", sections(lines))


def cancelled(m: Migration, outcome: CancelOutcome) -> Reply:
    """The answer to `/pgmig cancel`: what was undone, what was left on purpose, what could not be undone."""
    if outcome.state is State.FAILED:
        lines = [f"⚠️ *{m.id}* could not be cancelled completely; it stays failed. Could not undo:"]
        lines += [f"• {esc(x)}" for x in outcome.failed]
        lines.append(
            f"If they come back, `/pgmig cancel {m.id}` finishes the job; "
            "a server gone for good keeps nothing to clean."
        )
    else:
        lines = [f"🚫 *{m.id}* {outcome.state.value}."]
        lines += [f"• {esc(x)}" for x in outcome.done]
    if outcome.kept:
        lines.append(
            f"{'Target database' if len(outcome.kept) == 1 else 'Target databases'} left in place: "
            f"{esc(', '.join(outcome.kept))} (finished imports, or "
            "databases pgmig did not create)"
        )
    return Reply(f"{m.id} {outcome.state.value}", sections(lines), ephemeral=False)


def migration_list(migrations: list[Migration], title: str) -> Reply:
    if not migrations:
        return Reply(f"{title}: none", [section(f"{title}: none. Start one with `/pgmig migrate`.")])
    lines = [
        f"{icon(m.state)} *{m.id}* {m.state.value} · {describe(m)} · {esc(', '.join(m.databases))} · "
        f"by {mention(m.requested_by)} · {m.created_at:%Y-%m-%d %H:%M} UTC"
        for m in migrations
    ]
    return Reply(f"{title}: {len(migrations)}", [header(title), *sections(lines)])


def verification(
    m: Migration,
    results: list[VerifyResult],
    steps: list[Step] | None = None,
    progress: MigrationProgress | None = None,
) -> Reply:
    """`/pgmig verify`: each database compared now. Differences the migration itself expected (export files
    edited before the import, as its steps recorded) are said to be expected again; a database nothing was
    copied to is not "equal", it has nothing to verify yet. While a migration streams the target trails the
    source by the rows in flight: those differences are shown as such (≈, with the lag), not as failures —
    the cutover compares exactly with writes frozen; a table missing on the target is no row in flight."""
    if not results:
        at = f" at *{esc(failed_at(m))}*" if m.state is State.FAILED and failed_at(m) else ""
        return Reply(
            f"{m.id}: nothing to verify yet",
            [
                header(f"Verification of {m.id}: nothing to verify yet"),
                section(
                    f"ℹ️ *{m.id}* is *{m.state.value}*{at} and none of its data is on the target "
                    f"({esc(', '.join(m.databases))}): there is nothing to verify yet."
                ),
            ],
        )
    by_step = {s.name: s for s in steps or []}
    streaming = m.mode is Mode.ONLINE and m.state in MONITORED
    lines, expected, moving = [], [], []
    for r in results:
        edited = edited_files(r.database, by_step)
        if r.ok:
            what = f"{plural(r.tables, 'table')}, {plural(r.rows, 'row')}"
            what += (
                " equal (sequences are brought over at cutover)"
                if streaming
                else f", {plural(r.sequences, 'sequence')} equal"
            )
            lines.append(f"✅ `{esc(r.database)}`: {what}")
            continue
        count = plural(len(r.mismatches), "mismatch", "mismatches")
        in_flight = [x for x in r.mismatches if x.target != "missing"] if streaming else []
        if in_flight:
            moving.append(r.database)
            p = progress.databases.get(r.database) if progress is not None else None
            lag = (
                f" (lag {p.lag_seconds or 0:.1f} s, {pretty_bytes(p.lag_bytes)} behind)"
                if p is not None and p.lag_bytes is not None
                else ""
            )
            lines.append(
                f"≈ `{esc(r.database)}`: {len(in_flight)} of {plural(r.tables, 'table')} differ by rows still in "
                f"flight{lag}; the cutover compares them exactly, with writes frozen"
            )
            absent = [x.name for x in r.mismatches if x.target == "missing"]
            if absent:
                lines.append(
                    f"❌ `{esc(r.database)}`: {plural(len(absent), 'table')} missing on the target "
                    f"({esc(', '.join(absent[:20]))}): tables made on the source after the copy "
                    "are not replicated"
                )
            rows = [f"{x.kind:<17} {x.name:<40} source {x.source:<24} target {x.target}" for x in r.mismatches[:30]]
            lines.append("```" + esc("\n".join(rows)) + "```")
            continue
        if edited:
            expected.append(r.database)
            lines.append(
                f"⚠️ `{esc(r.database)}`: {count}, expected: its export files were edited before the import "
                f"({esc(', '.join(edited))})"
            )
        else:
            lines.append(f"❌ `{esc(r.database)}`: {count}")
        rows = [f"{x.kind:<17} {x.name:<40} source {x.source:<24} target {x.target}" for x in r.mismatches[:30]]
        lines.append("```" + esc("\n".join(rows)) + "```")
    verified = {r.database for r in results}
    missing = [db for db in m.databases if db not in verified]
    lines += [f"• `{esc(db)}`: nothing copied to the target yet, so nothing to compare" for db in missing]
    unexpected = [
        r
        for r in results
        if not r.ok
        and r.database not in expected
        and (r.database not in moving or any(x.target == "missing" for x in r.mismatches))
    ]
    verdict = (
        "mismatches"
        if unexpected
        else "differences expected (edited export files)"
        if expected
        else "rows in flight, as expected while streaming"
        if moving
        else "pass"
    )
    if missing:
        verdict += f" ({plural(len(missing), 'database')} not copied yet)"
    return Reply(
        f"{m.id} verification: {verdict}",
        [header(f"Verification of {m.id}: {verdict}"), *sections(lines)],
    )


def edited_files(database: str, steps: dict[str, Step]) -> list[str]:
    """The export files of `database` edited before its import, as the migration recorded them (the files
    themselves are removed once it ends)."""
    for name in (StepKind.VERIFY.at(database), StepKind.IMPORT.at(database)):
        step = steps.get(name)
        if step is not None and isinstance(step.data, dict) and step.data.get("edited"):
            return [str(f) for f in step.data["edited"]]
    return []


def digest(migrations: list[Migration], progress: dict[str, MigrationProgress]) -> Reply:
    now = time.time()
    lines = []
    for m in migrations:
        lines.append(f"{icon(m.state)} *{m.id}* {m.state.value} · {describe(m)} · by {mention(m.requested_by)}")
        lines += [f"      {database_line(progress[m.id].of(db), now)}" for db in m.databases]
    return Reply(
        f"Digest: {plural(len(migrations), 'active migration')}",
        [header(f"Active migrations: {len(migrations)}"), *sections(lines)],
        ephemeral=False,
    )


def what_happens(m: Migration) -> str:
    """What the approvers agree to, for this migration's backend."""
    fence = (
        "*What happens*: writes on the source are fenced (read-only, CONNECT revoked, sessions ended after "
        "a grace period); the target catches up; "
    )
    after = (
        "sequences are synced; foreign keys and triggers are put back; row counts are compared and the "
        "target is released (applications may switch); then foreign keys are validated and checksums "
        "compared"
    )
    backend = m.options.backend
    if backend is Backend.NATIVE:
        return (
            fence + after + "; replication is removed. A failure before the release falls back: the source "
            "becomes writable again and replication keeps running. After the release there is no way back: "
            "problems are reported as an incident and the source stays fenced."
        )
    return (
        fence
        + f"the {BACKEND_NAMES.get(backend, backend)} is told to complete its cutover; then "
        + after
        + ". A failure before the service's cutover falls back (source writable, replication running); after "
        "it, the source is made writable again and the migration fails: the service's replication has ended."
    )


def approvals_line(
    approvers: list[str], required: int, expires_at: datetime, barred: str = "the requester cannot approve"
) -> str:
    """Who approved so far, who may not (approval.py's rules), and until when."""
    return (
        f"*Approvals*: {len(approvers)} of {required}"
        + (": " + ", ".join(mention(a) for a in approvers) if approvers else "")
        + f" · {barred} · expires {expires_at:%Y-%m-%d %H:%M} UTC"
    )


def decision(
    closed: str,
    what: str,
    approve: Action,
    reject: Action,
    value: str,
    approving: str,
    rejecting: str,
    reject_asks_why: bool = False,
) -> dict:
    """Approve / Reject buttons (each confirmed) until decided; then what was decided (Slack has no disabled
    buttons). `reject_asks_why`: Reject opens a form asking the reason (`reject_form`), which is its
    confirmation too, so it gets no confirm dialog of its own (a confirm dialog cannot take text)."""
    if closed:
        return section(esc(closed))

    def confirm(title: str, text: str, yes: str, style: str | None = None) -> ConfirmObject:
        return ConfirmObject(title=title, text=text, confirm=yes, deny="Cancel", style=style)

    return ActionsBlock(
        elements=[
            ButtonElement(
                text="Approve",
                action_id=approve.value,
                value=value,
                style="primary",
                confirm=confirm(f"Approve {what}?", approving, "Approve"),
            ),
            ButtonElement(
                text="Reject",
                action_id=reject.value,
                value=value,
                style="danger",
                confirm=None if reject_asks_why else confirm(f"Reject {what}?", rejecting, "Reject", "danger"),
            ),
        ]
    ).to_dict()


def approval_card(
    m: Migration,
    progress: MigrationProgress,
    request: ApprovalRequest,
    approvers: list[str],
    required: int,
    closed: str = "",
    decided: str = "",
) -> Reply:
    """The team's decision: what will happen, the state of the replica, who approved; buttons until decided
    (`closed`: why it closed, as plain text; `decided`: what was decided, as mrkdwn naming the people)."""
    now = time.time()
    lines = [
        f"*Cutover requested by {mention(request.requested_by)}*: {describe(m)}",
        f"Databases: {esc(', '.join(m.databases))}",
    ]
    lines += [database_line(progress.of(db), now) for db in m.databases]
    lines.append(f"Last verification (tables, while streaming): {esc(request.verification)}")
    if request.forecast:
        lines.append(f"*Predicted write freeze* (when requested): {esc(request.forecast)}")
    lines += unapplied_lines(m, request)
    lines.append(what_happens(m))
    if not (decided or closed):
        lines.append(
            approvals_line(
                approvers, required, request.expires_at, "neither the requester nor the migration's starter may approve"
            )
        )
    elif approvers and not all(mention(a) in decided for a in approvers):  # a decided card: no countdown
        lines.append(f"*Approvals given before*: {people(approvers)}")
    blocks = [
        header(f"Approve cutover of {m.id}?" if not (decided or closed) else f"Cutover request for {m.id}: decided"),
        *sections(lines),
        section(decided)
        if decided
        else decision(
            closed,
            "cutover",
            Action.APPROVE_CUTOVER,
            Action.REJECT_CUTOVER,
            f"{m.id}:{request.round}",  # a click answers this round, and no later one
            f"Approve switching {m.id} to {m.target}.",
            f"{m.id} goes back to ready for cutover.",
            reject_asks_why=True,
        ),
    ]
    if decided or closed:
        return Reply(f"Cutover request for {m.id}: decided", blocks, ephemeral=False)
    return Reply(f"Approve cutover of {m.id}? {len(approvers)} of {required} approvals", blocks, ephemeral=False)


def unapplied_lines(m: Migration, request: ApprovalRequest) -> list[str]:
    """The schema changes captured while streaming that the target did not have when the cutover was asked for
    (nothing when its schema is not watched)."""
    found = request.schema_changes
    if found is None:
        return []
    if not found:
        return ["*Schema changes* (when requested): the target lacks none of those captured while streaming"]
    shown = [
        f"• {esc(c.database)} #{c.id} {esc(c.tag)} `{esc(c.statement)}` — {esc(c.state)} · "
        + ("⏸️ replication waits at it" if c.blocks_replication else "replication not held by it")
        for c in found[:SHOWN_UNAPPLIED]
    ]
    more = [f"… and {len(found) - SHOWN_UNAPPLIED} more: `/pgmig ddl {m.id}`"] if len(found) > SHOWN_UNAPPLIED else []
    return [f"*Schema changes the target does not have* (when requested; `/pgmig ddl {m.id}`):", *shown, *more]


def reject_form(m: Migration, metadata: str) -> dict:
    """The modal Reject opens: the reason, which the card, the thread and the audit then show. `metadata`
    (the button's `mig-N:round` and where to answer) travels in the view's private_metadata."""
    return View(
        type="modal",
        callback_id=REJECT_FORM,
        private_metadata=metadata,
        title="Reject cutover",
        submit="Reject",
        close="Cancel",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"Reject the cutover of *{esc(m.id)}* ({describe(m)})? It goes back to ready for "
                    "cutover; replication keeps running."
                )
            ),
            reason_input(
                REASON,
                "Why? (shown on the card, in the thread and in the audit)",
                "e.g. the nightly batch is still running; try after 02:00",
            ),
        ],
    ).to_dict()


def named_people(users: set[str]) -> Callable[[str], str]:
    """Mentions each of `users` (ids the audit knows as actors) where an escaped text names them as a word."""
    if not users:
        return lambda text: text
    pattern = re.compile(
        r"(?<![\w@])(" + "|".join(re.escape(u) for u in sorted(users, key=len, reverse=True)) + r")(?![\w])"
    )
    return lambda text: pattern.sub(lambda found: mention(found.group(1)), text)


def audit_log(subject: str, found: AuditPage, everything: bool) -> Reply:
    """Decisions and changes, a page at a time; read-only commands are one line saying how many. The
    actor is always a person (or pgmig); the people a detail names ("requested by U…") are mentioned too."""
    named = named_people({e.actor for e in found.entries if e.actor != "pgmig"})

    def where(channel: str) -> str:
        return "" if not channel else " in the shell" if channel == "shell" else f" in <#{channel}>"

    lines = [
        f"`{e.at:%Y-%m-%d %H:%M:%S}` {mention(e.actor) if e.actor != 'pgmig' else 'pgmig'} "
        f"*{esc(e.action)}*"
        + where(e.channel)
        + (f" — {named(esc(shorten(' '.join(e.detail.split()), 300)))}" if e.detail else "")
        for e in found.entries
    ]
    if not lines:
        lines = [f"page {found.page} is past the end: there are {found.pages}" if found.page > 1 else "nothing yet"]
    more = []
    if found.pages > 1:
        more.append(f"page {found.page} of {found.pages}")
    if found.page < found.pages:
        more.append(f"older: `/pgmig audit {subject} --page {found.page + 1}{' --all' if everything else ''}`")
    if found.read_only:
        more.append(
            f"{plural(found.read_only, 'read-only command')} (status, verify…) not listed: "
            f"`/pgmig audit {subject} --all`"
        )
    return Reply(
        f"audit of {subject}: {plural(len(found.entries), 'entry', 'entries')}",
        [header(f"Audit of {subject}"), *sections(lines), *([context(" · ".join(more))] if more else [])],
    )
