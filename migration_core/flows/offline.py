"""The offline pipeline: export → [paused for review] → import → verify → completed.

Each database's export, import and verification is its own step, so a retry redoes only what did
not finish; export files are hashed, so edits made while paused are reported, not mistaken for loss.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict
from pathlib import Path

from migration_core.engine.context import MigrationContext
from migration_core.flows.steps.offline import OfflineDatabase
from migration_core.plan import record
from migration_core.state.errors import MigrationError
from migration_core.state.ledger import DONE, FAILED, RUNNING, WAITING
from migration_core.state.models import State, StepKind
from migration_core.verify import early as early_checks
from migration_core.verify.tables import VerifyResult, matview_note, verify_database

MAX_LISTED_MISMATCHES = 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mismatch_lines(results: list[VerifyResult]) -> list[str]:
    return [
        f"{m.database} {m.kind} {m.name}: source {m.source}, target {m.target}" for r in results for m in r.mismatches
    ]


def shown_mismatches(lines: list[str]) -> str:
    more = len(lines) - MAX_LISTED_MISMATCHES
    return "\n".join(lines[:MAX_LISTED_MISMATCHES]) + (f"\n… and {more} more" if more > 0 else "")


async def run_offline(ctx: MigrationContext) -> None:
    ledger, mid, m, options = ctx.ledger, ctx.mid, ctx.m, ctx.options

    def job(db: str) -> OfflineDatabase:
        return OfflineDatabase(ctx, db, verify_early=True)

    await record.make(ctx)  # the migration's plan, measured before anything moves
    exports = [db for db in m.databases if not ctx.done(StepKind.EXPORT.at(db))]
    for db in m.databases:
        if db not in exports:
            ctx.progress.of(db).finish(job(db).exported)
    if exports:
        await ledger.advance(mid, State.EXPORTING, f"exporting {', '.join(exports)} ({options.method})")
    for db in exports:
        await ledger.save(mid, StepKind.EXPORT.at(db), RUNNING, "")
        files = await job(db).export()
        digests = {str(f): await asyncio.to_thread(file_digest, f) for f in files}  # GBs: off the loop
        await ledger.save(mid, StepKind.EXPORT.at(db), DONE, ", ".join(str(f) for f in files), {"files": digests})
    await ctx.reload()

    if options.pause_after_export and not ctx.done(StepKind.REVIEW):
        shown = [str(f) for db in m.databases for f in ctx.steps[StepKind.EXPORT.at(db)].data["files"]]
        await ledger.save(mid, StepKind.REVIEW, WAITING, "\n".join(shown))
        await ledger.advance(
            mid,
            State.PAUSED,
            "export files ready to review and edit:\n"
            + "\n".join(shown)
            + f"\n`/pgmig resume {mid}` imports whatever they then contain",
        )
        return

    imports = [db for db in m.databases if not ctx.done(StepKind.IMPORT.at(db))]
    # which export files differ from what was exported: recorded with each import, since the files are
    # removed once the migration ends and `/pgmig verify` must still know the differences are expected
    edited_in = {
        db: sorted(
            [
                f
                for f, digest in ctx.steps[StepKind.EXPORT.at(db)].data["files"].items()
                if Path(f).exists() and await asyncio.to_thread(file_digest, Path(f)) != digest
            ]
        )
        if db in imports
        else list(ctx.steps[StepKind.IMPORT.at(db)].data.get("edited", []))
        for db in m.databases
    }
    edited = sorted(f for files in edited_in.values() for f in files)
    for db in m.databases:
        if db not in imports:
            ctx.progress.of(db).finish("imported")
    if imports:
        note = f"; edited after export: {', '.join(edited)}" if edited else ""
        await ledger.advance(mid, State.IMPORTING, f"importing {', '.join(imports)}{note}")
    for db in imports:
        await ledger.save(mid, StepKind.IMPORT.at(db), RUNNING, "")
        importing = job(db)
        summary = await importing.import_()
        data = {
            "edited": edited_in[db],
            "checked": early_checks.encode(importing.checked),
            # how long it, its copy and its index builds took (this run's): plan/review.py, survey.history
            "seconds": ctx.progress.of(db).elapsed(),
            "phases": dict(ctx.progress.of(db).timed),
        }
        await ledger.save(mid, StepKind.IMPORT.at(db), DONE, summary, data)

    await verify_and_complete(ctx, edited_in)


async def verify_and_complete(ctx: MigrationContext, edited_in: dict[str, list[str]] | None = None) -> None:
    """Counts + checksums of every database; mismatches fail the migration unless files were edited
    (`edited_in`: each database's export files edited before import, kept in its verify step's data)."""
    ledger, mid, m = ctx.ledger, ctx.mid, ctx.m
    edited_in = edited_in or {}
    edited = sorted(f for files in edited_in.values() for f in files)
    await ledger.advance(mid, State.VERIFYING, f"verifying {', '.join(m.databases)}")
    results = []
    for db in m.databases:
        ctx.progress.of(db).begin("verifying")
        imported = await ledger.store.step(mid, StepKind.IMPORT.at(db))
        known = early_checks.decode(imported.data.get("checked")) if imported else {}  # compared during the copy
        result = await verify_database(
            ctx.source, ctx.target, db, ctx.options.parallel, limits=ctx.config.limits, known=known
        )
        ctx.progress.of(db).finish("verified" if result.ok else "mismatch")
        await ledger.save(
            mid,
            StepKind.VERIFY.at(db),
            DONE if result.ok else FAILED,
            f"{result.tables} tables, {result.rows} rows, {result.sequences} sequences, "
            f"{len(result.mismatches)} mismatch(es)",
            # how long it took (this run's, whatever an earlier attempt's step began): plan/review.py
            {**asdict(result), "edited": edited_in.get(db, []), "seconds": ctx.progress.of(db).elapsed()},
        )
        results.append(result)
    lines = mismatch_lines(results)
    if lines and not edited:
        raise MigrationError(
            f"verification found {len(lines)} mismatch(es):\n{shown_mismatches(lines)}",
            f"`/pgmig retry {mid}` re-verifies; `/pgmig verify {mid}` shows them again",
        )
    detail = (
        f"{len(m.databases)} database(s), {sum(r.tables for r in results)} tables, "
        f"{sum(r.rows for r in results)} rows and {sum(r.sequences for r in results)} sequences verified equal"
    )
    if lines:
        detail = (
            f"completed; {len(lines)} difference(s) from the source, expected because export files "
            f"were edited ({', '.join(edited or [])}):\n{shown_mismatches(lines)}"
        )
    notes = [matview_note(w) for r in results for w in r.warnings]
    if notes:
        detail += "\n⚠️ " + "\n⚠️ ".join(notes[:MAX_LISTED_MISMATCHES])
    await ledger.advance(mid, State.COMPLETED, detail)
