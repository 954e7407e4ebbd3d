"""Schema changes on a streaming migration's source, as the team sees them (issue 26): each statement capture
recorded (changes/ddl.py) with its state — pending, applied, skipped, failed with the error — a thread post
for each new one awaiting a decision, the decision itself, and the cutover refused while any is pending.

Additive changes of the kinds `[online] ddl_auto_apply` names (ddl_kinds.py) are decided by pgmig itself, so
the stream never waits for them. Applying a destructive one takes `required_approvals` distinct approvers, by
the cutover's rules (state/approval.py), in an approval round of its own (`ddl:DB:ID`): the decision is written
only when the last approval needed comes. A table created while streaming is published once its CREATE ran on
the target (changes/ddl.publish).

Where pgmig may not create event triggers (not a superuser: Azure's own admin cannot), the tick falls back to
drift detection: a fingerprint of each database's schema (tables, columns and types, indexes, constraints)
taken at the first look and compared at every tick after it, each difference reported once. It names what
changed, not the statement, and changes nothing on either server. The baseline is kept in memory: a restart
takes a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from migration_core.changes import ddl
from migration_core.engine.context import MigrationContext
from migration_core.observe import ddl_kinds
from migration_core.pg.servers import ConnectionProblem
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident
from migration_core.state import approval
from migration_core.state.approval import ApprovalRequest, Verdict
from migration_core.state.errors import MigrationError
from migration_core.state.journal import SOURCE, TARGET, Change
from migration_core.state.models import AuditEntry, utcnow

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

    @property
    def destructive(self) -> bool:
        return ddl_kinds.destructive(self.tag, self.statement)

    @property
    def kind(self) -> str:
        """add_column, create_index or create_table when plainly that (ddl_kinds.py); empty otherwise."""
        return ddl_kinds.kind(self.tag, self.statement)

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
        said = f"{self.label} `{_short(self.statement)}` — {self.state}"
        if self.decided_by:
            said += f" by {self.decided_by}" + (f": {self.reason}" if self.reason else "")
        if self.error:
            said += f" — error on the target: {self.error}"
        if not (self.destructive and self.pending):
            return said
        got = f", {len(self.approvals)} of {required} approvals" + (
            f" ({', '.join(self.approvals)})" if self.approvals else ""
        )
        return said + " ⚠️ destructive" + (got if required > 1 else "")


@dataclass
class SchemaWatch:
    """One database's schema-change watch, kept with its progress (`DatabaseProgress.schema_changes`)."""

    capture: bool | None = None  # None: not looked yet; False: drift detection
    changes: list[Captured] = field(default_factory=list)
    announced: set[int] = field(default_factory=set)
    published: set[int] = field(default_factory=set)  # CREATE TABLE changes whose tables were published (or refused)
    baseline: dict[str, str] | None = None  # drift detection: the first look's fingerprint
    drift: list[str] = field(default_factory=list)  # what changed since, in words
    problem: str = ""  # the last look failed: why

    def summary(self) -> str:
        """One line for status and the live message."""
        if self.problem:
            return f"paused: {self.problem}"
        if self.capture is False:
            head = "drift detection (pgmig may not create event triggers here)"
            return head + (f": changed since watching began: {'; '.join(self.drift[:5])}" if self.drift else "")
        pending = [c.label for c in self.changes if c.pending]
        done = len(self.changes) - len(pending)
        said = f"captured {len(self.changes)}, decided {done}" if self.changes else "captured none"
        return said + (f" · ⏸ replication waits for a decision on {', '.join(pending)}" if pending else "")

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
    """Whether this migration's schema changes are watched: `--capture-ddl` asked for it, or `[online]
    capture_ddl` makes it every online migration's default."""
    return ctx.m.options.capture_ddl or ctx.config.capture_ddl


async def watch(ctx: MigrationContext) -> None:
    """The monitor's look: per database, capture made (or drift fingerprinted), captured changes read, one
    thread post for each new change awaiting a decision and for each new drift."""
    for db in ctx.m.databases:
        p = ctx.progress.of(db)
        w = p.schema_changes = p.schema_changes or SchemaWatch()
        try:
            if w.capture is None:
                async with ctx.source.connection(db) as src:
                    w.capture = await ddl.possible(src)
            if w.capture:
                await ddl.ensure(ctx.source, ctx.target, db, ctx.journal)
                w.changes = await captured(ctx, db)
                await _auto_apply(ctx, w)
                await _publish_new_tables(ctx, db, w)
            else:
                await _drift(ctx, db, w)
            w.problem = ""
        except (asyncpg.PostgresError, ConnectionProblem, OSError) as exc:  # the next tick looks again
            w.problem = str(exc)
            continue
        for c in w.changes:
            if c.pending and c.id not in w.announced:
                w.announced.add(c.id)
                await ctx.alerts.notice(
                    ctx.m,
                    f"ddl:{db}:{c.id}",
                    f"🛠 schema change on the source ({db}): {c.label}\n`{_short(c.statement, 500)}`\n"
                    f"Replication of {db} waits here until an operator decides: `/pgmig ddl {ctx.mid} apply {c.id}`"
                    f" or `/pgmig ddl {ctx.mid} skip {c.id} REASON`"
                    + (
                        " — ⚠️ destructive: check it twice (applying it takes the approvals a cutover does)"
                        if c.destructive
                        else ""
                    ),
                )


async def _auto_apply(ctx: MigrationContext, w: SchemaWatch) -> None:
    """Decide `apply`, as pgmig, each pending change of a kind `[online] ddl_auto_apply` names, and say so in
    the thread: the stream passes it without waiting for anyone."""
    for c in w.changes:
        if not (c.pending and c.kind and c.kind in ctx.config.ddl_auto_apply):
            continue
        reason = f"[online] ddl_auto_apply: {c.kind}"
        if await _write(ctx, c, "apply", PGMIG, reason):
            w.announced.add(c.id)
            await ctx.alerts.notice(
                ctx.m,
                f"ddl:{c.database}:{c.id}",
                f"🛠 schema change on the source ({c.database}): {c.label}\n`{_short(c.statement, 500)}`\n"
                f"applied to the target by pgmig at its place in the stream ({reason})",
            )


async def _publish_new_tables(ctx: MigrationContext, db: str, w: SchemaWatch) -> None:
    """Each table whose CREATE ran on the target: published on the source, its rows copied (once per change)."""
    for c in w.changes:
        if ddl_kinds.of_tag(c.tag) != "create_table" or c.outcome != "applied" or c.id in w.published:
            continue
        tables = [o.removeprefix("table ") for o in c.objects if o.startswith("table ")]
        problems = [p for t in tables if (p := await ddl.publish(ctx.source, ctx.target, db, t, ctx.journal))]
        w.published.add(c.id)
        said = (
            f"not published: {'; '.join(problems)}"
            if problems
            else "published on the source: its rows are copied to the target and stream from now"
        )
        await ctx.alerts.notice(ctx.m, f"ddl-publish:{db}:{c.id}", f"📦 new table {', '.join(tables)} ({db}) {said}")


async def _drift(ctx: MigrationContext, db: str, w: SchemaWatch) -> None:
    async with ctx.source.connection(db) as src:
        now = {r["k"]: r["v"] for r in await src.fetch(FINGERPRINT)}
    if w.baseline is None:
        w.baseline = now
        return
    found = [f"new {k} ({v})" for k, v in now.items() if k not in w.baseline]
    found += [f"gone: {k}" for k in w.baseline if k not in now]
    found += [f"{k}: {w.baseline[k]} → {v}" for k, v in now.items() if k in w.baseline and w.baseline[k] != v]
    new = [x for x in found if x not in w.drift]
    w.drift = found
    if new:
        await ctx.alerts.notice(
            ctx.m,
            f"drift:{db}",
            f"🛠 the schema of {db} changed on the source: {'; '.join(new[:10])} — logical replication does not "
            "carry it: make the same change on the target (new tables are not published: they need a new "
            "migration or a manual copy)",
        )


async def captured(ctx: MigrationContext, db: str) -> list[Captured]:
    """Every statement captured in one database, oldest first, with its decision (empty: no capture there)."""
    entries = {e.server: e for e in await ctx.journal.entries(Change.DDL_CAPTURE, db)}
    if SOURCE not in entries or TARGET not in entries:
        return []
    s = ident(entries[SOURCE].name)
    async with ctx.source.connection(db) as src:
        if not await src.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.{ddl.CAPTURED}"):
            return []
        rows = await src.fetch(f"SELECT id, tag, objects, statement, stmt_at, role FROM {s}.{ddl.CAPTURED} ORDER BY id")
    async with ctx.target.connection(db) as tgt:
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
        c = Captured(db, r["id"], r["tag"], list(r["objects"]), r["statement"], r["stmt_at"], r["role"])
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


async def decide(
    ctx: MigrationContext, which: str, verb: str, actor: str, reason: str, *, is_approver: bool, required: int
) -> Captured:
    """An operator's decision on one captured change (`3`, or `shop:3` when several databases have a #3),
    written on the target and audited; refused when there is no such change or it is decided already.
    Applying a destructive change is an approval (`is_approver`: the caller's policy says) counted by the
    cutover's rules; the decision is written when `required` distinct approvers have approved."""
    if verb not in VERBS:
        raise MigrationError(f"`{verb}` is not a decision: apply or skip")
    db, _, number = which.rpartition(":")
    if not number.isdigit() or len(number) > 12:
        raise MigrationError(f"`{which}` is not a schema change id (like 3, or shop:3)")
    found = [c for d, cs in (await listing(ctx)).items() if db in ("", d) for c in cs if c.id == int(number)]
    if not found:
        raise MigrationError(f"{ctx.mid} has no captured schema change {which}", f"`/pgmig ddl {ctx.mid}` lists them")
    if len(found) > 1:
        raise MigrationError(
            f"several databases have a schema change #{number}: say which — "
            + ", ".join(f"`{c.database}:{c.id}`" for c in found)
        )
    c = found[0]
    if verb == "apply" and c.destructive and c.pending:
        request = ApprovalRequest(ctx.mid, "", utcnow() + OPEN_FOR, round=c.round)
        said = await approval.decide(
            ctx.ledger.store, "ddl", request, actor, "approve", is_approver=is_approver, required=required
        )
        c.approvals = said.approvers
        if said.verdict is Verdict.REFUSED:
            raise MigrationError(f"{c.label}: {said.reason}")
        if said.verdict is Verdict.RECORDED:
            return c
        actor = ", ".join(said.approvers)
    if not await _write(ctx, c, verb, actor, reason):
        now = next(x for x in await captured(ctx, c.database) if x.id == c.id)
        raise MigrationError(f"{c.label} was decided already: {now.state} by {now.decided_by}")
    return c


async def _write(ctx: MigrationContext, c: Captured, verb: str, actor: str, reason: str) -> bool:
    """The decision on `c`, written on the target where its gate reads it, and audited; False when one was
    written already (the first stands)."""
    async with ctx.target.connection(c.database) as tgt:
        if not await ddl.decide(tgt, ctx.journal.object_name(c.database), c.id, verb, actor, reason):
            return False
    await ctx.ledger.store.audit(
        AuditEntry(actor, f"ddl.{verb}", f"{c.database} {c.label}: {c.statement[:1500]} {reason}".strip(), ctx.mid)
    )
    c.decision, c.decided_by, c.reason = verb, actor, reason or None
    return True


async def require_decided(ctx: MigrationContext, doing: str) -> None:
    """Refuse `doing` (a cutover) while any captured schema change awaits a decision, naming each."""
    pending = [c for cs in (await listing(ctx)).values() for c in cs if c.pending]
    if pending:
        raise MigrationError(
            f"{doing}: schema changes captured on the source await a decision — "
            + "; ".join(f"{c.database} {c.label}" for c in pending),
            f"decide each (`/pgmig ddl {ctx.mid}` lists them; `apply ID` or `skip ID REASON`), then ask again",
        )


def _short(text: str, limit: int = 200) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
