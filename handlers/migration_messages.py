"""Block Kit for migrations: the live progress card, state notices, status, list and verification."""

from __future__ import annotations

import time
from datetime import datetime

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ConfirmObject

from handlers.actions import Action
from handlers.context import Reply
from handlers.messages import context, esc, header, preflight_message, section, sections
from migration_core.approval import ApprovalRequest
from migration_core.azure.dms_backend import DmsBackend
from migration_core.azure.flex_backend import FlexBackend
from migration_core.cleanup import CleanupReport
from migration_core.engine import CancelOutcome, CommandResult, MigrationStatus
from migration_core.models import AuditPage, Backend, Migration, Mode, State
from migration_core.preflight import PreflightReport, pretty_bytes
from migration_core.progress import DatabaseProgress, MigrationProgress
from migration_core.verify import VerifyResult

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
STEP_ICON = {"done": "✅", "running": "⏳", "failed": "❌", "waiting": "⏸️", "dropped": "🗑️"}
BAR = 12


def icon(state: State) -> str:
    return STATE_ICON.get(state, "⏳")


def duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


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
    return f"{esc(m.source)} → {esc(m.target)} · {m.mode} ({how}{m.options.parallel} jobs)"


def database_line(p: DatabaseProgress, now: float) -> str:
    parts = [f"`{esc(p.database)}` {esc(p.phase)}"]
    if p.fraction is not None and p.started_at is not None and p.lag_bytes is None:
        parts.append(f"{bar(p.fraction)} {p.fraction * 100:.0f}%")
    if p.tables_total and p.lag_bytes is None:
        parts.append(f"{p.tables_done}/{p.tables_total} tables")
    if p.ranges_total and p.lag_bytes is None:
        parts.append(f"{p.ranges_done}/{p.ranges_total} ranges of split tables")
    if p.rows_done and p.lag_bytes is None:
        parts.append(f"{p.rows_done:,} rows")
    if p.bytes_total and p.lag_bytes is None:
        parts.append(f"{pretty_bytes(p.bytes_done)} of {pretty_bytes(p.bytes_total)}")
    if p.started_at is not None:
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
        parts.append(f"slot holds {pretty_bytes(p.retained_bytes)} of WAL")
    if p.waiting:
        parts.append(f"⏳ {esc(p.waiting)}")
    return " · ".join(parts)


def migration_card(m: Migration, progress: MigrationProgress) -> Reply:
    """The one live message per migration, edited in place as it runs."""
    now = time.time()
    head = f"{icon(m.state)} *{m.state.value}* · {describe(m)} · started by {mention(m.requested_by)}"
    lines = [head]
    for db in m.databases:
        lines.append(database_line(progress.of(db), now))
    if m.state is State.FAILED and m.error:
        lines.append(f"*Error:* {esc(m.error[:1500])}")
    blocks = [
        header(f"{m.id}: {m.source} → {m.target}"),
        *sections(lines),
        context(f"`/pgmig status {m.id}` · `/pgmig cancel {m.id}`"),
    ]
    return Reply(f"{m.id} {m.state.value}: {m.source} → {m.target}", blocks, ephemeral=False)


def state_notice(m: Migration, detail: str) -> Reply:
    """A thread reply on the live message when a migration completes, fails, pauses or is cancelled."""
    who = mention(m.requested_by)
    text = f"{who} {icon(m.state)} *{m.id} {m.state.value}*"
    if m.state is State.FAILED:
        text += (
            f" at *{esc(m.error.split(':', 1)[0])}*\n```{esc(detail[:2500])}```\nWhen the cause is fixed: "
            f"`/pgmig retry {m.id}`"
        )
    elif detail:
        text += f"\n{esc(detail[:2800])}"
    return Reply(f"{m.id} {m.state.value}", [section(text)], ephemeral=False)


def alert_notice(m: Migration, text: str) -> Reply:
    return Reply(
        f"{m.id}: {text[:150]}", [section(f"{mention(m.requested_by)} *{m.id}* {esc(text[:2900])}")], ephemeral=False
    )


def started(m: Migration, report: PreflightReport, channel: str) -> Reply:
    where = f" Live progress in <#{channel}>." if channel and channel != m.channel else ""
    lines = [
        f"🚀 *{m.id}* started by {mention(m.requested_by)}: {describe(m)}",
        f"Databases: {esc(', '.join(report.databases))}.{where}",
    ]
    lines += [f"⚠️ {esc(f.scope)}: {esc(f.title)} — {esc(f.detail)}" for f in report.warnings]
    return Reply(f"{m.id} started", sections(lines), ephemeral=False)


def refused(m: Migration, report: PreflightReport) -> Reply:
    reply = preflight_message(report, "")
    blocks = [
        section(
            f"❌ *{m.id} was not started*: the pre-flight checks found "
            f"{len(report.blocking)} blocking problem(s). Fix them, then `/pgmig retry {m.id}`."
        )
    ]
    blocks += [b for b in reply.blocks if b.get("type") != "actions"]
    return Reply(f"{m.id} not started: {len(report.blocking)} blocking problem(s)", blocks)


def status(found: MigrationStatus) -> Reply:
    m, steps, leftovers = found.migration, found.steps, found.leftovers
    card = migration_card(m, found.progress)
    lines = ["*Steps*"]
    for s in steps:
        detail = f" — {esc(s.detail[:600])}" if s.detail else ""
        lines.append(f"{STEP_ICON.get(s.state, '•')} `{esc(s.name)}`{detail}")
        parked = s.data.get("parked") if isinstance(s.data, dict) else None
        if parked:
            fks = [f"{fk['table']}.{fk['name']}" for fk in parked.get("foreign_keys", [])]
            triggers = [
                f"{t['table']}.{t['name']}" + (" (disabled on source too)" if t["enabled"] == "D" else "")
                for t in parked.get("triggers", [])
            ]
            lines.append(f"      foreign keys reinstated at cutover: {esc(', '.join(fks) or 'none')}")
            lines.append(f"      triggers restored at cutover: {esc(', '.join(triggers) or 'none')}")
    if leftovers:
        lines.append("*Still on the servers* (pgmig made these and has not removed them)")
        lines += [f"• {esc(e.describe())}" for e in leftovers]
        if m.state is State.FAILED:
            lines.append(f"`/pgmig cancel {m.id}` removes them; `/pgmig retry {m.id}` carries on with them")
    return Reply(card.text, card.blocks[:-1] + sections(lines) + card.blocks[-1:])


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


def retrying(m: Migration) -> Reply:
    return Reply(
        f"{m.id} retrying",
        [
            section(
                f"🔁 *{m.id}* retrying from the step that failed (`{esc(m.error.split(':', 1)[0])}`); "
                "finished databases are not redone."
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
                f"({required} approval(s) needed)."
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
        lines.append(f"`/pgmig cleanup {name} --yes` removes these {len(report.loose)}.")
    return Reply(f"cleanup {report.server}: {len(report.loose)} left behind", sections(lines))


def cancelled(m: Migration, outcome: CancelOutcome) -> Reply:
    """The answer to `/pgmig cancel`: what was undone, what was left on purpose, what could not be undone."""
    if outcome.state is State.FAILED:
        lines = [f"⚠️ *{m.id}* could not be cancelled completely; it stays failed. Could not undo:"]
        lines += [f"• {esc(x)}" for x in outcome.failed]
        lines.append(f"Once the servers are reachable, `/pgmig cancel {m.id}` tries again.")
    else:
        lines = [f"🚫 *{m.id}* {outcome.state.value}."]
        lines += [f"• {esc(x)}" for x in outcome.done]
    if outcome.kept:
        lines.append(
            f"Target database(s) left in place: {esc(', '.join(outcome.kept))} (finished imports, or "
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


def verification(m: Migration, results: list[VerifyResult]) -> Reply:
    lines = []
    for r in results:
        if r.ok:
            lines.append(f"✅ `{esc(r.database)}`: {r.tables} tables, {r.rows:,} rows, {r.sequences} sequences equal")
        else:
            lines.append(f"❌ `{esc(r.database)}`: {len(r.mismatches)} mismatch(es)")
            rows = [f"{x.kind:<17} {x.name:<40} source {x.source:<24} target {x.target}" for x in r.mismatches[:30]]
            lines.append("```" + esc("\n".join(rows)) + "```")
    ok = all(r.ok for r in results)
    return Reply(
        f"{m.id} verification {'passed' if ok else 'found mismatches'}",
        [header(f"Verification of {m.id}: {'pass' if ok else 'mismatches'}"), *sections(lines)],
    )


def digest(migrations: list[Migration], progress: dict[str, MigrationProgress]) -> Reply:
    now = time.time()
    lines = []
    for m in migrations:
        lines.append(f"{icon(m.state)} *{m.id}* {m.state.value} · {describe(m)} · by {mention(m.requested_by)}")
        lines += [f"      {database_line(progress[m.id].of(db), now)}" for db in m.databases]
    return Reply(
        f"Digest: {len(migrations)} active migration(s)",
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


def approvals_line(approvers: list[str], required: int, expires_at: datetime) -> str:
    return (
        f"*Approvals*: {len(approvers)} of {required}"
        + (": " + ", ".join(mention(a) for a in approvers) if approvers else "")
        + f" · the requester cannot approve · expires {expires_at:%Y-%m-%d %H:%M} UTC"
    )


def decision(
    closed: str, what: str, approve: Action, reject: Action, value: str, approving: str, rejecting: str
) -> dict:
    """Approve / Reject buttons (each confirmed) until decided; then what was decided (Slack has no disabled
    buttons)."""
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
                confirm=confirm(f"Reject {what}?", rejecting, "Reject", "danger"),
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
) -> Reply:
    """The team's decision: what will happen, the state of the replica, who approved; buttons until decided."""
    now = time.time()
    lines = [
        f"*Cutover requested by {mention(request.requested_by)}*: {describe(m)}",
        f"Databases: {esc(', '.join(m.databases))}",
    ]
    lines += [database_line(progress.of(db), now) for db in m.databases]
    lines += [
        f"Last verification (tables, while streaming): {esc(request.verification)}",
        what_happens(m),
        approvals_line(approvers, required, request.expires_at),
    ]
    blocks = [
        header(f"Approve cutover of {m.id}?"),
        *sections(lines),
        decision(
            closed,
            "cutover",
            Action.APPROVE_CUTOVER,
            Action.REJECT_CUTOVER,
            f"{m.id}:{request.round}",  # a click answers this round, and no later one
            f"Approve switching {m.id} to {m.target}.",
            f"{m.id} goes back to ready for cutover.",
        ),
    ]
    return Reply(f"Approve cutover of {m.id}? {len(approvers)} of {required} approvals", blocks, ephemeral=False)


def audit_log(subject: str, found: AuditPage, everything: bool) -> Reply:
    """Decisions and changes, a page at a time; read-only commands are one line saying how many."""
    lines = [
        f"`{e.at:%Y-%m-%d %H:%M:%S}` {mention(e.actor) if e.actor != 'pgmig' else 'pgmig'} "
        f"*{esc(e.action)}*"
        + (f" in <#{e.channel}>" if e.channel and e.channel != "shell" else "")
        + (f" — {esc(e.detail[:300])}" if e.detail else "")
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
            f"{found.read_only} read-only command(s) (status, verify…) not listed: `/pgmig audit {subject} --all`"
        )
    return Reply(
        f"audit of {subject}: {len(found.entries)} entries",
        [header(f"Audit of {subject}"), *sections(lines), *([context(" · ".join(more))] if more else [])],
    )
