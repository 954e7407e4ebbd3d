"""Schema changes on a streaming migration's source, as the team sees them (issue 26): each statement capture
recorded (changes/ddl.py) with its state — pending, applied, skipped, failed with the error — a thread post
for each new one awaiting a decision, the decision itself, and the cutover refused while any is pending.

Additive changes of the kinds `[online] ddl_auto_apply` names (ddl_kinds.py) are decided by pgmig itself, so
the stream never waits for them. Applying a destructive one takes `required_approvals` distinct approvers, by
the cutover's rules (state/approval.py), in an approval round of its own (`ddl:DB:ID`): the decision is written
only when the last approval needed comes. A table created while streaming is published once its CREATE ran on
the target (changes/ddl.publish).

Each change (and each drift found) is a card in the migration's thread (`SchemaCard`, drawn by the handlers):
the statement, the objects, whether the stream waits at it now, and the buttons that decide it; the card is
updated where it is when that changes. Anyone may pause the cutover from a card (`pause`): the cutover gate
(`require_decided`) refuses until someone resumes it.

Where pgmig may not create event triggers (not a superuser: Azure's own admin cannot), the tick falls back to
drift detection: a fingerprint of each database's schema (tables, columns and types, indexes, constraints)
taken at the first look and compared at every tick after it, each difference reported once. It names what
changed, not the statement, and changes nothing on either server. The baseline, what was reported and the
cards posted are kept in the state store (`WatchRecord`, step `schema_watch:DB`): a restart, on this replica
or another, compares with the baseline taken at the start and posts nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

import asyncpg

from migration_core.changes import ddl
from migration_core.changes.constraints import ConstraintsPayload
from migration_core.engine.context import MigrationContext
from migration_core.observe import ddl_kinds
from migration_core.pg.servers import ConnectionProblem
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident
from migration_core.state import approval
from migration_core.state.approval import ApprovalRequest, UnappliedChange, Verdict
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, TARGET, Change, Payload
from migration_core.state.models import AuditEntry, StepKind, StepState, utcnow

log = logging.getLogger(__name__)
VERBS = ("apply", "skip")
PGMIG = "pgmig"  # the decider of what [online] ddl_auto_apply lets pgmig apply
OPEN_FOR = timedelta(days=3650)  # a change's approval round never expires: the stream waits for its decision
RELATIONS = "('r', 'p', 'v', 'm', 'f')"
FINGERPRINT = f"""
SELECT 'table ' || c.oid::regclass::text AS k, c.relkind::text AS v
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN {RELATIONS} AND {USER_SCHEMA_FILTER}
UNION ALL
SELECT 'column ' || c.oid::regclass::text || '.' || quote_ident(a.attname),
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN {RELATIONS} AND a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMA_FILTER}
UNION ALL
SELECT 'index ' || c.oid::regclass::text, pg_get_indexdef(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('i', 'I') AND {USER_SCHEMA_FILTER}
UNION ALL
SELECT 'constraint ' || quote_ident(o.conname) || ' on ' || c.oid::regclass::text, pg_get_constraintdef(o.oid)
  FROM pg_constraint o JOIN pg_class c ON c.oid = o.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {USER_SCHEMA_FILTER}
"""


@dataclass
class Captured:
    """One statement captured on the source, with the team's decision and what the target made of it."""

    database: str
    id: int
    tag: str
    objects: list[str]
    statement: str
    at: datetime
    role: str
    decision: str | None = None
    reason: str | None = None
    decided_by: str | None = None
    outcome: str | None = None  # applied | skipped | failed: the target's gate reached it
    error: str | None = None
    approvals: list[str] = field(default_factory=list)  # destructive: who approved applying it so far

    @property
    def pending(self) -> bool:
        return self.decision is None

    @property
    def state(self) -> str:
        if self.outcome:
            return self.outcome
        return "pending" if self.decision is None else f"{self.decision} decided, the stream has not reached it yet"

    @cached_property
    def applies(self) -> str:
        """What Apply runs on the target: the statement, or the schema statements of a query string that held
        more; empty when pgmig cannot apply it by itself (made by code, ddl_kinds.applied says)."""
        return ddl_kinds.applied(self.statement)

    @property
    def unappliable(self) -> str:
        """Why Apply is refused (empty when it is not): the team makes the change on the target itself."""
        if self.applies:
            return ""
        return (
            "it was made by code (a DO block, a procedure, a function called in a query, or a BEGIN ATOMIC body "
            "among other statements): applying it would run that code's other work on the target again"
        )

    @property
    def destructive(self) -> bool:
        return ddl_kinds.destructive(self.tag, self.applies or self.statement)

    @property
    def kind(self) -> str:
        """add_column, create_index or create_table when plainly that (ddl_kinds.py); empty otherwise."""
        return ddl_kinds.kind(self.tag, self.applies)

    @property
    def round(self) -> str:
        """The approval round of applying it (destructive changes): one per database and change."""
        return f"ddl:{self.database}:{self.id}"

    @property
    def label(self) -> str:
        """`#3 ALTER TABLE (table public.customer)`."""
        return f"#{self.id} {self.tag} ({', '.join(self.objects[:3])}{' …' if len(self.objects) > 3 else ''})"

    def words(self, required: int = 1) -> str:
        """One line for a list: the statement, its state, who decided and why, the target's error, and for a
        pending destructive change how many of the `required` approvals it has."""
        said = f"{self.label} `{_short(self.statement)}` — {_state(self)}"
        if self.pending and not self.applies:
            said += " (pgmig cannot apply it: made by code; make it on the target yourself, then skip it)"
        if not (self.destructive and self.pending):
            return said
        got = f", {len(self.approvals)} of {required} approvals" + (
            f" ({', '.join(self.approvals)})" if self.approvals else ""
        )
        return said + " ⚠️ destructive" + (got if required > 1 else "")


@dataclass
class SchemaCard:
    """One post in the migration's thread about its schema (handlers/ddl_messages.py draws it): a captured
    change with its decision, or what drift detection found; whether the stream waits at it now; and where
    the post is once made (its updates go there)."""

    database: str
    key: str  # the change's id, or `drift-N`
    change: Captured | None = None
    drift: list[str] = field(default_factory=list)  # drift detection: what changed, in words
    before_capture: bool = False  # the drift is what changed on the source before capture began (the copy's time)
    waits_now: bool = False  # the first change of its database awaiting a decision: the stream stops there
    behind: int | None = None  # awaiting a decision too, behind this earlier change
    channel: str = ""
    ts: str = ""

    @property
    def look(self) -> str:
        """What the post shows, in one string: when it changes, the post is updated."""
        c = self.change
        if c is None:
            return "drift"
        shown = (c.state, c.decided_by, c.reason, c.error, ",".join(c.approvals), self.waits_now, self.behind)
        return "|".join(str(x) for x in shown)


@dataclass
class WatchRecord(Payload):
    """What the state store keeps of one database's watch (step `schema_watch:DB`), so that a restart — on
    this replica or another — carries on from it: drift detection's baseline, taken at the first look, and
    what was reported since; each card posted (key → [channel, ts]) and what it showed; the new tables
    published (change ids)."""

    baseline: dict[str, str] | None = None
    taken_at: str = ""
    drift: list[str] = field(default_factory=list)
    posted: dict[str, list[str]] = field(default_factory=dict)
    shown: dict[str, str] = field(default_factory=dict)
    published: list[int] = field(default_factory=list)
    gap_checked: bool = False  # capture's first look compared both sides' schemas (what changed before it began)


@dataclass
class CutoverHold(Payload):
    """The cutover paused by someone (a card's Pause cutover, `/pgmig ddl mig-N pause`), kept as the step
    `cutover_hold` so any replica sees it: the cutover gate refuses until someone resumes it."""

    by: str = ""
    reason: str = ""
    at: str = ""
    resumed_by: str = ""

    @property
    def on(self) -> bool:
        return bool(self.by) and not self.resumed_by

    def words(self) -> str:
        return f"paused by {self.by} at {self.at[:16].replace('T', ' ')} UTC" + (
            f": {self.reason}" if self.reason else ""
        )


@dataclass
class SchemaWatch:
    """One database's schema-change watch, kept with its progress (`DatabaseProgress.schema_changes`)."""

    capture: bool | None = None  # None: not looked yet; False: drift detection
    changes: list[Captured] = field(default_factory=list)
    record: WatchRecord | None = None  # None: not read from the state store yet
    hold: CutoverHold | None = None  # the migration's cutover paused, as the last look found it
    problem: str = ""  # the last look failed: why

    def summary(self) -> str:
        """One line for status and the live message."""
        paused = f" · ⏸ cutover {self.hold.words()}" if self.hold else ""
        if self.problem:
            return f"paused: {self.problem}{paused}"
        if self.capture is False:
            drift = self.record.drift if self.record else []
            head = "drift detection (pgmig may not create event triggers here)"
            return head + (f": changed since watching began: {'; '.join(drift[:5])}" if drift else "") + paused
        pending = [c.label for c in self.changes if c.pending]
        done = len(self.changes) - len(pending)
        said = f"captured {len(self.changes)}, decided {done}" if self.changes else "captured none"
        return said + (f" · ⏸ replication waits for a decision on {', '.join(pending)}" if pending else "") + paused

    @property
    def in_flight(self) -> bool:
        """Some change is decided `apply` and the stream has not reached it yet: what the target lacks now,
        it will have there."""
        return any(c.decision == "apply" and not c.outcome for c in self.changes)

    def waiting(self, mid: str) -> str:
        """What the stream waits for (the first pending change), with the commands that free it; empty: nothing."""
        first = next((c for c in self.changes if c.pending), None)
        if first is None:
            return ""
        return (
            f"schema change {first.label} captured on the source waits for a decision: "
            f"`/pgmig ddl {mid} apply {first.id}` or `/pgmig ddl {mid} skip {first.id} REASON`"
        )


def wanted(ctx: MigrationContext) -> bool:
    """Whether this migration's schema changes are watched: `--capture-ddl` or `--no-capture-ddl` said so when it
    was started, else `[online] capture_ddl` (every online migration's default)."""
    return ctx.m.options.capture_ddl.resolved(ctx.config.capture_ddl)


async def watch(ctx: MigrationContext) -> None:
    """The monitor's look: per database, capture made (or drift fingerprinted), captured changes read, a card
    posted for each new change and each new drift, and updated when what it shows changed."""
    hold = await held(ctx)
    for db in ctx.m.databases:
        p = ctx.progress.of(db)
        w = p.schema_changes = p.schema_changes or SchemaWatch()
        w.hold = hold
        try:
            if w.record is None:
                w.record = await _record(ctx, db)
            if w.capture is None:
                async with ctx.kept(ctx.source, db) as src:
                    w.capture = await ddl.possible(src)
            if w.capture:
                if await ddl.ensure(ctx.source, ctx.target, db, ctx.journal) is None:
                    continue  # the migration stopped streaming since this look began: nothing to watch
                w.changes = await captured(ctx, db)
                await _gap(ctx, db, w)
                await _auto_apply(ctx, w)
                await _publish_new_tables(ctx, db, w)
                await _show(ctx, db, w)
            else:
                await _drift(ctx, db, w)
            w.problem = ""
        except (asyncpg.PostgresError, ConnectionProblem, OSError) as exc:  # the next tick looks again
            w.problem = str(exc)
    watched = [ctx.progress.of(db).schema_changes for db in ctx.m.databases]
    await _follow_request(ctx, [c for w in watched if w is not None and w.capture for c in w.changes])


async def _follow_request(ctx: MigrationContext, changes: list[Captured]) -> None:
    """While a cutover request waits for approval, its card's list of the schema changes the target lacks
    follows what the watch now sees (a change captured since, one decided or applied): saved with the request
    only while its round is still open, in one conditional write (a decision may close it at any moment), then
    its card is redrawn. A request decided meanwhile is left as it was closed."""
    now = _unapplied(changes)
    step = await ctx.ledger.store.step(ctx.mid, StepKind.APPROVAL)
    if step is None or step.state != StepState.WAITING:
        return
    request = ApprovalRequest.from_dict(step.data)
    if not request.open or request.schema_changes is None or request.schema_changes == now:
        return
    request.schema_changes = now
    data = request.as_dict()
    if await ctx.ledger.save(ctx.mid, StepKind.APPROVAL, StepState.WAITING, step.detail, data, request.round):
        await ctx.ledger.events.request_changed(await ctx.ledger.get(ctx.mid), ctx.progress, request)


async def _record(ctx: MigrationContext, db: str) -> WatchRecord:
    step = await ctx.ledger.store.step(ctx.mid, StepKind.SCHEMA_WATCH.at(db))
    return WatchRecord.from_json(step.data) if step is not None else WatchRecord()


async def _keep(ctx: MigrationContext, db: str, w: SchemaWatch) -> None:
    """Save the watch's record (the lease holder's alone: only its watch writes it)."""
    assert w.record is not None
    await ctx.ledger.save(ctx.mid, StepKind.SCHEMA_WATCH.at(db), StepState.DONE, w.summary()[:500], w.record.to_json())


def _card(c: Captured, changes: list[Captured]) -> SchemaCard:
    """The card of `c`, one of its database's `changes` (the stream waits at the first pending one)."""
    first = next((x for x in changes if x.pending), None)
    behind = first.id if c.pending and first is not None and first.id != c.id else None
    return SchemaCard(c.database, str(c.id), c, waits_now=first is not None and first.id == c.id, behind=behind)


async def _tell(ctx: MigrationContext, card: SchemaCard) -> bool:
    """Post the card in the migration's thread, or update it where it is; False when the channel could not be
    told (the next look tries again). Telling the channel never breaks the watch."""
    try:
        card.channel, card.ts = await ctx.ledger.events.schema_change(ctx.m, ctx.progress, card)
    except Exception:
        log.exception("posting the schema-change card %s:%s of %s failed", card.database, card.key, ctx.mid)
        return False
    return bool(card.ts)


async def _show(ctx: MigrationContext, db: str, w: SchemaWatch) -> None:
    """A card for each change not posted yet (audited as captured), and each posted one updated when what it
    shows changed (a decision, an approval, the target's outcome, the stream now waiting at it)."""
    assert w.record is not None
    record, kept = w.record, False
    for c in w.changes:
        card = _card(c, w.changes)
        if record.shown.get(card.key) == card.look:
            continue
        card.channel, card.ts = (record.posted.get(card.key) or ["", ""])[:2]
        new = not card.ts
        if not await _tell(ctx, card):
            continue
        if new:
            await ctx.ledger.store.audit(
                AuditEntry("pgmig", "ddl.captured", f"{db} {c.label}: {c.statement[:1500]}", ctx.mid)
            )
        record.posted[card.key], record.shown[card.key], kept = [card.channel, card.ts], card.look, True
    if kept:
        await _keep(ctx, db, w)


async def _auto_apply(ctx: MigrationContext, w: SchemaWatch) -> None:
    """Decide `apply`, as pgmig, each pending change of a kind `[online] ddl_auto_apply` names (its card says
    so): the stream passes it without waiting for anyone."""
    for c in w.changes:
        if c.pending and c.kind and c.kind in ctx.config.ddl_auto_apply:
            await _write(ctx, c, "apply", PGMIG, f"[online] ddl_auto_apply: {c.kind}")


async def _publish_new_tables(ctx: MigrationContext, db: str, w: SchemaWatch) -> None:
    """Each table whose CREATE ran on the target: published on the source, its rows copied (once per change,
    kept in the watch's record; a restart that finds one half done finishes it, publish being idempotent)."""
    assert w.record is not None
    for c in w.changes:
        if ddl_kinds.of_tag(c.tag) != "create_table" or c.outcome != "applied" or c.id in w.record.published:
            continue
        tables = [o.removeprefix("table ") for o in c.objects if o.startswith("table ")]
        problems = [p for t in tables if (p := await ddl.publish(ctx.source, ctx.target, db, t, ctx.journal))]
        w.record.published.append(c.id)
        await _keep(ctx, db, w)
        said = (
            f"not published: {'; '.join(problems)}"
            if problems
            else "published on the source: its rows are copied to the target and stream from now"
        )
        await ctx.alerts.notice(ctx.m, f"ddl-publish:{db}:{c.id}", f"📦 new table {', '.join(tables)} ({db}) {said}")


async def _gap(ctx: MigrationContext, db: str, w: SchemaWatch) -> None:
    """Once capture is made: what changed on the source between the schema's export and capture's event trigger
    (during the copy), which no trigger recorded — the source's schema against the target's, less the foreign
    keys pgmig parked there until the cutover and the tables of changes captured (cards of their own). Posted
    as one card, and audited; nothing when both agree."""
    assert w.record is not None
    if w.record.gap_checked:
        return
    async with ctx.kept(ctx.source, db) as src:
        source = {r["k"]: r["v"] for r in await src.fetch(FINGERPRINT)}
    async with ctx.kept(ctx.target, db) as tgt:
        target = {r["k"]: r["v"] for r in await tgt.fetch(FINGERPRINT)}
    entry = await ctx.journal.find(Change.CONSTRAINTS, TARGET, db)
    parked = {fk.name for fk in ConstraintsPayload.of(entry).parked.foreign_keys} if entry else set()
    # read after the schemas: a change they show that the trigger recorded is in the capture table by now
    touched = {form for c in await captured(ctx, db) for o in c.objects for form in _table_forms(o)}

    def own(key: str) -> bool:  # pgmig's parked foreign key, or a table a captured change names
        name = key.removeprefix("constraint ").partition(" on ")[0]
        return (key.startswith("constraint ") and name.strip('"') in parked) or _table_of(key) in touched

    found = [f"new {k} ({v})" for k, v in source.items() if k not in target and not own(k)]
    found += [f"gone: {k}" for k in target if k not in source and not own(k)]
    found += [f"{k}: {target[k]} → {v}" for k, v in source.items() if k in target and target[k] != v and not own(k)]
    if found:
        key = f"drift-{sum(k.startswith('drift-') for k in w.record.posted) + 1}"
        card = SchemaCard(db, key, drift=found, before_capture=True)
        if not await _tell(ctx, card):
            return  # said at the next look
        said = f"{db} before capture: {'; '.join(found)[:1500]}"
        await ctx.ledger.store.audit(AuditEntry("pgmig", "ddl.drift", said, ctx.mid))
        w.record.posted[card.key], w.record.shown[card.key] = [card.channel, card.ts], card.look
    w.record.gap_checked = True
    await _keep(ctx, db, w)


def _table_forms(identity: str) -> set[str]:
    """A captured object's table (`table public.customer`, `column public.customer.phone`…) as the fingerprint may
    name it: qualified, and bare (regclass leaves out a schema on the search_path)."""
    kind, _, name = identity.partition(" ")
    if kind not in ("table", "column", "index"):
        return set()
    table = name.rsplit(".", 1)[0] if kind == "column" else name
    return {table, table.split(".", 1)[-1]}


def _table_of(key: str) -> str:
    """The table a fingerprint key is about (`column customer.phone` → customer)."""
    kind, _, rest = key.partition(" ")
    if kind == "constraint":
        return rest.partition(" on ")[2]
    return rest.rsplit(".", 1)[0] if kind == "column" else rest


async def _drift(ctx: MigrationContext, db: str, w: SchemaWatch) -> None:
    """Compare the schema with the baseline taken at the first look (kept in the state store) and post a card
    for what changed since, once."""
    assert w.record is not None
    record = w.record
    async with ctx.kept(ctx.source, db) as src:
        now = {r["k"]: r["v"] for r in await src.fetch(FINGERPRINT)}
    if record.baseline is None:
        record.baseline, record.taken_at = now, utcnow().isoformat()
        await _keep(ctx, db, w)
        return
    base = record.baseline
    found = [f"new {k} ({v})" for k, v in now.items() if k not in base]
    found += [f"gone: {k}" for k in base if k not in now]
    found += [f"{k}: {base[k]} → {v}" for k, v in now.items() if k in base and base[k] != v]
    if found == record.drift:
        return
    new = [x for x in found if x not in record.drift]
    if new:
        card = SchemaCard(db, f"drift-{sum(k.startswith('drift-') for k in record.posted) + 1}", drift=new)
        if not await _tell(ctx, card):
            return  # said at the next look
        await ctx.ledger.store.audit(AuditEntry("pgmig", "ddl.drift", f"{db}: {'; '.join(new)[:1500]}", ctx.mid))
        record.posted[card.key], record.shown[card.key] = [card.channel, card.ts], card.look
    record.drift = found
    await _keep(ctx, db, w)


async def captured(ctx: MigrationContext, db: str) -> list[Captured]:
    """Every statement captured in one database, oldest first, with its decision (empty: no capture there)."""
    entries = {e.server: e for e in await ctx.journal.entries(Change.DDL_CAPTURE, db)}
    if SOURCE not in entries or TARGET not in entries:
        return []
    s = ident(entries[SOURCE].name)
    async with ctx.kept(ctx.source, db) as src:
        if not await src.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.{ddl.CAPTURED}"):
            return []
        rows = await src.fetch(f"SELECT id, tag, objects, statement, stmt_at, role FROM {s}.{ddl.CAPTURED} ORDER BY id")
    async with ctx.kept(ctx.target, db) as tgt:
        made = await tgt.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.{ddl.DECISIONS}")
        query = f"SELECT id, decision, reason, decided_by, outcome, error FROM {s}.{ddl.DECISIONS}"
        decided = {r["id"]: r for r in await tgt.fetch(query)} if made else {}
    approved: dict[str, list[str]] = {}
    for a in await ctx.ledger.store.approvals(ctx.mid):
        if a.decision == "approve":
            approved.setdefault(a.round, []).append(a.approver)
    out = []
    for r in rows:
        d = decided.get(r["id"])
        objects = [o for o in r["objects"] if o]  # GRANT names no object identity
        c = Captured(db, r["id"], r["tag"], objects, r["statement"], r["stmt_at"], r["role"])
        c.approvals = approved.get(c.round, [])
        if d is not None:
            c.decision, c.reason, c.decided_by = d["decision"], d["reason"], d["decided_by"]
            c.outcome, c.error = d["outcome"], d["error"]
        out.append(c)
    return out


async def unseen(ctx: MigrationContext, db: str, w: SchemaWatch) -> bool:
    """Whether changes were captured since the watch last looked (what the target lacks may be one of them)."""
    return bool(w.capture) and len(await captured(ctx, db)) > len(w.changes)


async def listing(ctx: MigrationContext) -> dict[str, list[Captured]]:
    """Every database's captured changes, read from the servers now (any replica may answer)."""
    return {db: await captured(ctx, db) for db in ctx.m.databases}


async def expected(ctx: MigrationContext) -> dict[str, dict[tuple[str, str], str]]:
    """Per database, the tables a skipped schema change leaves unlike the source (created, altered or dropped
    there and not on the target), with why: verification reports what differs in them as expected, not as a
    fault. Empty once capture is gone (the cutover keeps what it found: its `release` step)."""
    out: dict[str, dict[tuple[str, str], str]] = {}
    for db, changes in (await listing(ctx)).items():
        for c in changes:
            if c.decision != "skip":
                continue
            why = f"schema change #{c.id} {c.tag} skipped by {c.decided_by}" + (f": {c.reason}" if c.reason else "")
            for o in c.objects:
                kind, _, name = o.partition(" ")
                if kind != "table":
                    continue
                column = name.startswith("column ")  # sql_drop's `table column public.t.c`
                parts = _identity_parts(name.removeprefix("column "))[: -1 if column else None]
                if len(parts) == 2:
                    out.setdefault(db, {})[(parts[0], parts[1])] = why
    return out


def _identity_parts(identity: str) -> list[str]:
    """An object identity's dotted parts, unquoted: `public."we.ird"` → public, we.ird."""
    parts, current, quoted, i = [], "", False, 0
    while i < len(identity):
        ch = identity[i]
        if ch == '"' and quoted and identity[i + 1 : i + 2] == '"':
            current, i = current + '"', i + 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    return [*parts, current]


async def decide(
    ctx: MigrationContext, which: str, verb: str, actor: str, reason: str, *, is_approver: bool, required: int
) -> Captured:
    """An operator's decision on one captured change (`3`, or `shop:3` when several databases have a #3),
    written on the target and audited; refused when there is no such change or it is decided already.
    Applying a destructive change is an approval (`is_approver`: the caller's policy says) counted by the
    cutover's rules; the decision is written when `required` distinct approvers have approved. The change's
    card is updated at once (the replica running the migration also does at its next look)."""
    if verb not in VERBS:
        raise MigrationError(f"`{verb}` is not a decision: apply or skip (or pause, resume the cutover)")
    db, _, number = which.rpartition(":")
    if not number.isdigit() or len(number) > 12:
        raise MigrationError(f"`{which}` is not a schema change id (like 3, or shop:3)")
    listed = await listing(ctx)
    found = [c for d, cs in listed.items() if db in ("", d) for c in cs if c.id == int(number)]
    if not found:
        raise MigrationError(f"{ctx.mid} has no captured schema change {which}", f"`/pgmig ddl {ctx.mid}` lists them")
    if len(found) > 1:
        raise MigrationError(
            f"several databases have a schema change #{number}: say which — "
            + ", ".join(f"`{c.database}:{c.id}`" for c in found)
        )
    c = found[0]
    if verb == "apply" and c.pending and c.unappliable:
        raise MigrationError(
            f"{c.label} cannot be applied by pgmig: {c.unappliable}",
            f"make the change on the target yourself, then `/pgmig ddl {ctx.mid} skip {which} applied by hand`",
        )
    if verb == "apply" and c.destructive and c.pending:
        request = ApprovalRequest(ctx.mid, "", utcnow() + OPEN_FOR, round=c.round)
        said = await approval.decide(
            ctx.ledger.store, "ddl", request, actor, "approve", is_approver=is_approver, required=required
        )
        c.approvals = said.approvers
        if said.verdict is Verdict.REFUSED:
            raise MigrationError(f"{c.label}: {said.reason}")
        if said.verdict is Verdict.RECORDED:
            await _refresh(ctx, c, listed[c.database])
            return c
        actor = ", ".join(said.approvers)
    if not await _write(ctx, c, verb, actor, reason):
        now = next(x for x in await captured(ctx, c.database) if x.id == c.id)
        raise MigrationError(f"{c.label} was decided already: {now.state} by {now.decided_by}")
    await _refresh(ctx, c, listed[c.database])
    return c


async def _refresh(ctx: MigrationContext, c: Captured, changes: list[Captured]) -> None:
    """Update the card of `c` where it was posted (read from the state store; nothing when not posted yet)."""
    where = (await _record(ctx, c.database)).posted.get(str(c.id))
    if where:
        card = _card(c, changes)
        card.channel, card.ts = where[0], where[1]
        await _tell(ctx, card)


async def _write(ctx: MigrationContext, c: Captured, verb: str, actor: str, reason: str) -> bool:
    """The decision on `c`, written on the target where its gate reads it, and audited; False when one was
    written already (the first stands)."""
    runs = c.applies if verb == "apply" and c.applies != c.statement.strip() else None
    async with ctx.kept(ctx.target, c.database) as tgt:
        if not await ddl.decide(tgt, ctx.journal.object_name(c.database), c.id, verb, actor, reason, runs):
            return False
    await ctx.ledger.store.audit(
        AuditEntry(actor, f"ddl.{verb}", f"{c.database} {c.label}: {c.statement[:1500]} {reason}".strip(), ctx.mid)
    )
    c.decision, c.decided_by, c.reason = verb, actor, reason or None
    return True


async def held(ctx: MigrationContext) -> CutoverHold | None:
    """The migration's cutover hold while it is on (any replica reads it from the state store)."""
    step = await ctx.ledger.store.step(ctx.mid, StepKind.CUTOVER_HOLD)
    hold = CutoverHold.from_json(step.data) if step is not None else None
    return hold if hold is not None and hold.on else None


async def pause(ctx: MigrationContext, actor: str, reason: str) -> CutoverHold:
    """Hold the cutover (a card's Pause cutover): refused by the cutover gate until `resume`. Audited and said
    in the thread; refused when it is held already, or when nothing watches this migration's schema."""
    if not wanted(ctx):
        raise MigrationError(
            f"{ctx.mid} does not watch schema changes (it was started with --no-capture-ddl, or without "
            "--capture-ddl while [online] capture_ddl is off): there is no schema-change gate to hold its cutover"
        )
    if (now := await held(ctx)) is not None:
        raise MigrationError(
            f"the cutover of {ctx.mid} is {now.words()}", f"`/pgmig ddl {ctx.mid} resume` lets it go ahead"
        )
    hold = CutoverHold(actor, " ".join(reason.split())[:500], utcnow().isoformat())
    await ctx.ledger.save(ctx.mid, StepKind.CUTOVER_HOLD, StepState.WAITING, f"cutover {hold.words()}", hold.to_json())
    await ctx.ledger.store.audit(AuditEntry(actor, "ddl.pause", hold.reason, ctx.mid))
    await ctx.alerts.notice(
        ctx.m,
        "cutover-hold",
        f"⏸ the cutover of {ctx.mid} is {hold.words()} — it is refused until `/pgmig ddl {ctx.mid} resume`",
    )
    return hold


async def resume(ctx: MigrationContext, actor: str) -> CutoverHold:
    """Let the cutover go ahead again (audited, said in the thread); refused when it is not held."""
    hold = await held(ctx)
    if hold is None:
        raise MigrationError(f"the cutover of {ctx.mid} is not paused")
    hold.resumed_by = actor
    detail = f"cutover {hold.words()}; resumed by {actor}"
    await ctx.ledger.save(ctx.mid, StepKind.CUTOVER_HOLD, StepState.DONE, detail, hold.to_json())
    await ctx.ledger.store.audit(AuditEntry(actor, "ddl.resume", f"was {hold.words()}", ctx.mid))
    await ctx.alerts.notice(
        ctx.m, "cutover-hold", f"▶️ the cutover of {ctx.mid} may go ahead again: resumed by {actor} (was {hold.words()})"
    )
    return hold


async def require_decided(ctx: MigrationContext, doing: str) -> None:
    """Refuse `doing` (a cutover) while the cutover is paused, or any captured schema change awaits a
    decision, naming each."""
    if (hold := await held(ctx)) is not None:
        raise MigrationError(
            f"{doing}: the cutover is {hold.words()}", f"`/pgmig ddl {ctx.mid} resume` lets it go ahead (operators)"
        )
    pending = [c for cs in (await listing(ctx)).values() for c in cs if c.pending]
    if pending:
        raise MigrationError(
            f"{doing}: schema changes captured on the source await a decision — "
            + "; ".join(f"{c.database} {c.label}" for c in pending),
            f"decide each (`/pgmig ddl {ctx.mid}` lists them; `apply ID` or `skip ID REASON`), then ask again",
        )


async def unapplied(ctx: MigrationContext) -> list[UnappliedChange]:
    """The captured changes the target does not have, for the cutover's approval card: pending (the stream waits
    at them), decided `apply` but not reached yet, skipped, failed."""
    return _unapplied([c for changes in (await listing(ctx)).values() for c in changes])


def _unapplied(changes: list[Captured]) -> list[UnappliedChange]:
    return [
        UnappliedChange(c.database, c.id, c.tag, _short(c.statement, 150), _state(c), c.pending)
        for c in changes
        if c.outcome != "applied"
    ]


async def outcomes(ctx: MigrationContext) -> list[str]:
    """The completion summary's lines on the schema changes captured while streaming: those applied on the target
    and those skipped (with why), and any that failed there. Read before the teardown takes capture away."""
    found = [c for changes in (await listing(ctx)).values() for c in changes]
    said = {
        "applied": "schema changes applied on the target",
        "skipped": "schema changes skipped (the target does not have them)",
        "failed": "schema changes that failed on the target",
    }
    lines = []
    for outcome, head in said.items():
        these = [c for c in found if c.outcome == outcome]
        if these:
            lines.append(f"{head}: " + "; ".join(f"{c.database} {c.label}{_decided(c)}" for c in these))
    return lines


def _state(c: Captured) -> str:
    """Where a change stands, with who decided and why (and the target's error)."""
    return c.state + _decided(c)


def _decided(c: Captured) -> str:
    said = f" by {c.decided_by}" + (f": {c.reason}" if c.reason else "") if c.decided_by else ""
    return said + (f" — error on the target: {c.error}" if c.error else "")


def _short(text: str, limit: int = 200) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
