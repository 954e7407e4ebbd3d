"""The offline pipeline: export → [paused for review] → import → verify → completed.

Each database's export, import and verification is its own step, so a retry redoes only what did
not finish; export files are hashed, so edits made while paused are reported, not mistaken for loss.
"""
from __future__ import annotations

import asyncio
import hashlib
import shutil
from dataclasses import asdict
from pathlib import Path

from migration_core.errors import MigrationError
from migration_core.flow import Flow
from migration_core.ledger import DONE, FAILED, RUNNING, WAITING
from migration_core.models import State
from migration_core.offline import OfflineDatabase
from migration_core.verify import VerifyResult, verify_database

MAX_LISTED_MISMATCHES = 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mismatch_lines(results: list[VerifyResult]) -> list[str]:
    return [f"{m.database} {m.kind} {m.name}: source {m.source}, target {m.target}"
            for r in results for m in r.mismatches]


def shown_mismatches(lines: list[str]) -> str:
    more = len(lines) - MAX_LISTED_MISMATCHES
    return "\n".join(lines[:MAX_LISTED_MISMATCHES]) + (f"\n… and {more} more" if more > 0 else "")


async def run_offline(flow: Flow) -> None:
    ledger, mid, m, options = flow.ledger, flow.mid, flow.m, flow.options

    def job(db: str) -> OfflineDatabase:
        return OfflineDatabase(flow.source, flow.target, db, options, flow.workdir, flow.bindir, flow.progress.of(db))

    exports = [db for db in m.databases if not flow.done(f"export:{db}")]
    for db in m.databases:
        if db not in exports:
            flow.progress.of(db).finish("exported")
    if exports:
        await ledger.set_state(mid, State.EXPORTING, f"exporting {', '.join(exports)} ({options.method})")
    for db in exports:
        await ledger.save(mid, f"export:{db}", RUNNING, "")
        files = await job(db).export(flow.roles)
        digests = {str(f): await asyncio.to_thread(file_digest, f) for f in files}  # GBs: off the loop
        await ledger.save(mid, f"export:{db}", DONE, ", ".join(str(f) for f in files), {"files": digests})
    await flow.reload()

    if options.pause_after_export and not flow.done("review"):
        files = [f for db in m.databases for f in flow.steps[f"export:{db}"].data["files"]]
        await ledger.save(mid, "review", WAITING, "\n".join(files))
        await ledger.set_state(mid, State.PAUSED, "export files ready to review and edit:\n" + "\n".join(files) +
                               f"\n`/pgmig resume {mid}` imports whatever they then contain")
        return

    edited = sorted([f for db in m.databases for f, digest in flow.steps[f"export:{db}"].data["files"].items()
                     if Path(f).exists() and await asyncio.to_thread(file_digest, Path(f)) != digest])
    imports = [db for db in m.databases if not flow.done(f"import:{db}")]
    for db in m.databases:
        if db not in imports:
            flow.progress.of(db).finish("imported")
    if imports:
        note = f"; edited after export: {', '.join(edited)}" if edited else ""
        await ledger.set_state(mid, State.IMPORTING, f"importing {', '.join(imports)}{note}")
    for db in imports:
        claimed = f"import:{db}" in flow.steps  # an earlier attempt created or emptied it: ours to replace
        await ledger.save(mid, f"import:{db}", RUNNING, "")
        summary = await job(db).import_(flow.roles, claimed)
        await ledger.save(mid, f"import:{db}", DONE, summary)

    await verify_and_complete(flow, edited)
    if options.method == "restore":
        await asyncio.to_thread(shutil.rmtree, flow.workdir, True)


async def verify_and_complete(flow: Flow, edited: list[str] | None = None) -> None:
    """Counts + checksums of every database; mismatches fail the migration unless files were edited."""
    ledger, mid, m = flow.ledger, flow.mid, flow.m
    await ledger.set_state(mid, State.VERIFYING, f"verifying {', '.join(m.databases)}")
    results = []
    for db in m.databases:
        flow.progress.of(db).begin("verifying")
        result = await verify_database(flow.source, flow.target, db, flow.options.parallel)
        flow.progress.of(db).finish("verified" if result.ok else "mismatch")
        await ledger.save(mid, f"verify:{db}", DONE if result.ok else FAILED,
                          f"{result.tables} tables, {result.rows} rows, {result.sequences} sequences, "
                          f"{len(result.mismatches)} mismatch(es)", asdict(result))
        results.append(result)
    lines = mismatch_lines(results)
    if lines and not edited:
        raise MigrationError(f"verification found {len(lines)} mismatch(es):\n{shown_mismatches(lines)}",
                             f"`/pgmig retry {mid}` re-verifies; `/pgmig verify {mid}` shows them again")
    detail = (f"{len(m.databases)} database(s), {sum(r.tables for r in results)} tables, "
              f"{sum(r.rows for r in results)} rows and {sum(r.sequences for r in results)} sequences verified equal")
    if lines:
        detail = (f"completed; {len(lines)} difference(s) from the source, expected because export files "
                  f"were edited ({', '.join(edited or [])}):\n{shown_mismatches(lines)}")
    await ledger.set_state(mid, State.COMPLETED, detail)
