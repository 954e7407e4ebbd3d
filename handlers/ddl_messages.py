"""Block Kit for schema changes captured while a migration streams (migration_core/observe/ddl.py): the card each
change (or drift found) gets in the migration's thread, `/pgmig ddl`'s list and answers, and the form Skip opens.

A card's buttons carry the `ddl mig-N …` command they stand for (the router runs it as typed: same parsing,
audit and authorization); Slack has no disabled buttons, so a decided card keeps only Pause cutover.
"""

from __future__ import annotations

import json
import shlex

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from handlers.actions import Action
from handlers.authz import Policy
from handlers.context import Reply
from handlers.messages import context, esc, header, reason_input, section, sections, shorten
from handlers.migration_messages import mention
from migration_core.observe.ddl import Captured, CutoverHold, SchemaCard

SKIP_FORM = "pgmig-ddl-skip"  # the callback id of the form Skip opens
REASON = "reason"  # its one field (block and action id)
SHOWN_DRIFT = 15  # differences listed on a drift card


def required_approvals(policy: Policy) -> int:
    """How many distinct approvers applying a destructive change takes: a cutover's count where approvers
    are configured; otherwise one operator's decision."""
    return policy.required_approvals if policy.approvers else 1


def _who(decided_by: str | None) -> str:
    """Who decided (`U1, U2` for a destructive change's approvers), mentioned; pgmig itself by name."""
    return ", ".join("pgmig" if u == "pgmig" else mention(u) for u in (decided_by or "").split(", ") if u)


def state_words(c: Captured, required: int) -> str:
    """Where the change stands, naming who decided (mrkdwn)."""
    why = f": {esc(c.reason)}" if c.reason else ""
    if c.outcome == "applied":
        return f"✅ applied on the target (decided by {_who(c.decided_by)}{why})"
    if c.outcome == "skipped":
        return f"⏭️ skipped by {_who(c.decided_by)}{why} — the target does not have it (verification may show it)"
    if c.outcome == "failed":
        return f"❌ failed on the target: {esc(c.error or '')} (decided by {_who(c.decided_by)}); replication went on"
    if c.decision:
        return f"{c.decision} decided by {_who(c.decided_by)}{why}; it takes effect where the stream reaches it"
    said = "awaiting a decision (operators)"
    if c.destructive and (required > 1 or c.approvals):
        given = f" ({', '.join(mention(a) for a in c.approvals)})" if c.approvals else ""
        said += f" · applying it takes {required} approvals: {len(c.approvals)} so far{given}"
    return said


def replication_words(card: SchemaCard) -> str:
    c = card.change
    db = esc(card.database)
    if c is None:
        return (
            "not held by pgmig — a row that needs what the target lacks stops the target's apply worker "
            "(the blocked alert says which, and the fix)"
        )
    if card.waits_now:
        return (
            f"⏸️ replication of {db} waits at this change now: nothing written after it reaches the target until "
            "it is decided (the lag grows)"
        )
    if card.behind is not None:
        return f"replication of {db} will wait here too, once #{card.behind} is decided"
    if c.decision and not c.outcome:
        return "goes on: the decision is carried out where the stream reaches the change"
    return "not held by this change"


def card(mid: str, found: SchemaCard, required: int) -> Reply:
    """A captured change's (or a drift's) card in the migration's thread."""
    if found.change is None:
        return _drift_card(mid, found)
    c = found.change
    key = f"{c.database}:{c.id}"
    typed = shlex.quote(key)
    statement = shorten(" ".join(c.statement.split()), 2500).replace("```", "` ` `")
    lines = [
        f"🛠️ *Schema change on the source* · {esc(c.database)} · *#{c.id} {esc(c.tag)}*"
        + (" ⚠️ destructive" if c.destructive else ""),
        f"```{esc(statement)}```",
        *_applies_words(c),
        f"*Objects*: {esc(', '.join(c.objects[:10]) + (' …' if len(c.objects) > 10 else '')) or 'none named'}"
        f" · by `{esc(c.role)}` at {c.at:%Y-%m-%d %H:%M:%S} UTC",
        f"*Replication*: {replication_words(found)}",
        f"*State*: {state_words(c, required)}",
    ]
    buttons = decision_buttons(mid, c, required) if c.pending else []
    buttons.append(_pause(mid, f"schema change {c.database} #{c.id} ({c.tag})"))
    blocks = [*sections(lines), ActionsBlock(elements=buttons).to_dict()]
    if c.pending:
        blocks.append(
            context(
                (f"or type `/pgmig ddl {mid} apply {esc(typed)}` · " if c.applies else "or type ")
                + f"`/pgmig ddl {mid} skip {esc(typed)} REASON`"
            )
        )
    by = f" by {c.decided_by}" if c.decided_by else ""
    approvals = f" ({len(c.approvals)} of {required} approvals)" if c.pending and c.approvals else ""
    return Reply(f"🛠️ {mid}: schema change {c.database} #{c.id} {c.tag} — {c.state}{by}{approvals}", blocks, False)


def _applies_words(c: Captured) -> list[str]:
    """What Apply would run, when it is not the captured text as it stands."""
    if not c.applies:
        return [f"⚠️ *pgmig cannot apply this change*: {esc(c.unappliable)}. Make it on the target yourself, then Skip"]
    if c.applies == c.statement.strip():
        return []
    shown = shorten(" ".join(c.applies.split()), 1500).replace("```", "` ` `")
    return [
        "*Apply runs only its schema statements* (the query string held others, whose data the stream carries):",
        f"```{esc(shown)}```",
    ]


def decision_buttons(mid: str, c: Captured, required: int) -> list[ButtonElement]:
    """Apply to target (confirmed when destructive) and Skip: each carries the `ddl mig-N …` command it stands for,
    on the change's card and on the Home tab alike."""
    typed = shlex.quote(f"{c.database}:{c.id}")
    apply = ButtonElement(
        text="Apply to target",
        action_id=Action.DDL_APPLY.value,
        value=f"ddl {mid} apply {typed}",
        style="danger" if c.destructive else "primary",
    )
    if c.destructive:
        apply.confirm = ConfirmObject(
            title="Apply a destructive change?",
            text=shorten(f"{c.tag} runs on the target of {mid}: {', '.join(c.objects)}", 290),
            confirm="Apply" if required <= 1 else "Approve applying it",
            deny="Not yet",
            style="danger",
        )
    skip = ButtonElement(text="Skip", action_id=Action.DDL_SKIP.value, value=f"ddl {mid} skip {typed}")
    return [apply, skip] if c.applies else [skip]


def awaiting_you(mid: str, c: Captured, required: int) -> list[dict]:
    """A destructive change waiting for an approval the reader may give (the Home tab): the migration, the change,
    its approvals so far, the statement, and its card's own buttons."""
    given = f" ({', '.join(mention(a) for a in c.approvals)})" if c.approvals else ""
    head = (
        f"*{esc(mid)}* · {esc(c.database)} *#{c.id} {esc(c.tag)}* ⚠️ destructive · "
        f"{len(c.approvals)} of {required} approval{'s' if required > 1 else ''}{given}"
    )
    statement = shorten(" ".join(c.statement.split()), 300).replace("```", "` ` `")
    return [
        section(f"{head}\n```{esc(statement)}```"),
        ActionsBlock(elements=decision_buttons(mid, c, required)).to_dict(),
        context(
            f"replication of {esc(c.database)} waits until it is decided · its card is in the thread of "
            f"{esc(mid)}'s live message · `/pgmig ddl {esc(mid)}` lists every change"
        ),
    ]


def _drift_card(mid: str, found: SchemaCard) -> Reply:
    db = esc(found.database)
    why = (
        "before capture began (while the copy ran: no event trigger recorded it, so pgmig can neither show the "
        "statement nor hold replication at it)"
        if found.before_capture
        else "(drift detection: pgmig may not create event triggers there, so it can neither show the statement "
        "nor hold replication at it)"
    )
    lines = [
        f"🛠️ *The schema of {db} changed on the source* {why}",
        *[f"• {esc(x)}" for x in found.drift[:SHOWN_DRIFT]],
        *([f"… and {len(found.drift) - SHOWN_DRIFT} more"] if len(found.drift) > SHOWN_DRIFT else []),
        f"*Replication*: {replication_words(found)}",
        "*Fix*: make the same change on the target (logical replication does not carry it); a new table is not "
        "published: it needs a new migration or a copy by hand",
    ]
    blocks = [*sections(lines), ActionsBlock(elements=[_pause(mid, f"schema drift in {found.database}")]).to_dict()]
    return Reply(
        f"🛠️ {mid}: the schema of {found.database} changed on the source: {'; '.join(found.drift[:3])}", blocks, False
    )


def _pause(mid: str, why: str) -> ButtonElement:
    return ButtonElement(
        text="Pause cutover",
        action_id=Action.DDL_PAUSE.value,
        value=f"ddl {mid} pause {shlex.quote(why)}",
        confirm=ConfirmObject(
            title="Pause the cutover?",
            text=f"The cutover of {mid} is refused until someone resumes it (`/pgmig ddl {mid} resume`); "
            "replication keeps running.",
            confirm="Pause cutover",
            deny="Keep going",
        ),
    )


def schema_changes(mid: str, found: dict[str, list[Captured]], required: int) -> Reply:
    """Each database's captured changes, oldest first, with their state."""
    lines = []
    for db, changes in found.items():
        lines.append(f"*{esc(db)}*")
        lines += [f"• {esc(c.words(required))}" for c in changes] or ["• none captured"]
    pending = sum(c.pending for cs in found.values() for c in cs)
    hint = (
        f"{pending} await a decision — replication waits at the first: "
        f"`/pgmig ddl {mid} apply ID` or `/pgmig ddl {mid} skip ID REASON` (operators)"
        if pending
        else "nothing awaits a decision"
    )
    text = f"schema changes of {mid}: {hint}"
    return Reply(text, [header(f"Schema changes of {mid}"), *sections(lines), context(hint)])


def decided(mid: str, c: Captured, required: int) -> Reply:
    if c.pending:  # a destructive change's approval, not the last one needed
        text = (
            f"👍 your approval of {c.database} {c.label} is recorded: {len(c.approvals)} of {required} approvals "
            f"({', '.join(c.approvals)}); it is applied when {required - len(c.approvals)} more approve"
        )
        return Reply(text, [section(esc(text))])
    what = (
        "will run on the target at its place in the stream; replication goes on from there"
        if c.decision == "apply"
        else "is skipped: the target will not have it (verification may show the difference)"
    )
    text = f"✅ {c.database} {c.label} {what}. `/pgmig ddl {mid}` shows its outcome."
    return Reply(text, [section(esc(text))])


def skip_needs_reason(mid: str, which: str) -> Reply:
    text = (
        f"say why it is skipped: `/pgmig ddl {mid} skip {shlex.quote(which)} REASON` — the reason goes on the "
        "change's card and into the audit"
    )
    return Reply(text, [section(esc(text))])


def held(mid: str, hold: CutoverHold) -> Reply:
    """The answer to pause or resume."""
    if hold.on:
        text = f"⏸️ the cutover of {mid} is {hold.words()}; replication keeps running."
        button = ButtonElement(
            text="Resume cutover", action_id=Action.DDL_RESUME.value, value=f"ddl {mid} resume", style="primary"
        )
        return Reply(text, [section(esc(text)), ActionsBlock(elements=[button]).to_dict()])
    text = f"▶️ the cutover of {mid} may go ahead again (it was {hold.words()})."
    return Reply(text, [section(esc(text))])


def skip_form(command: str, metadata: str) -> dict:
    """The modal Skip opens: the reason, which the card and the audit then show. `metadata` (the button's
    command and where to answer) travels in the view's private_metadata."""
    which = command.split(" ", 3)[-1]
    return View(
        type="modal",
        callback_id=SKIP_FORM,
        private_metadata=metadata,
        title="Skip schema change",
        submit="Skip",
        close="Cancel",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"Skip schema change `{esc(which)}`? The target will not have it; replication goes on past it."
                )
            ),
            reason_input(
                REASON,
                "Why? (shown on the card and in the audit)",
                "e.g. the target gets its own index after the cutover",
            ),
        ],
    ).to_dict()


def skip_metadata(command: str, channel: str, on_home: bool) -> str:
    return json.dumps({"command": command[:500], "channel": channel, "home": on_home})
