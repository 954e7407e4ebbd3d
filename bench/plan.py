"""How close a migration's own plan comes to what then happens (issue 27), on a known dataset.

A dataset (`--dataset`, default pgbench at `--scale` 15 ≈ 230 MB) is migrated `--runs` times in a row between the
same two local clusters through pgmig's engine, offline to `completed` and/or online to `ready_for_cutover`
(`--mode`), the target database replaced between runs. One state store serves every run, so the first plan has
no history and each later one learns from the runs before it, as a running service's would. After each run the
migration's recorded plan is set beside what happened by `Engine.plan_review` (plan/record.py, plan/review.py),
and printed per phase and for the whole run: the range, its midpoint, what it took, actual / midpoint, and
whether it landed inside.

The goal is the whole run within 25 % of the midpoint (a verdict line per run, printed only); the assertion is a
factor of 2: a run whose actual / midpoint is below 0.5 or above 2 makes the exit status 1.

    python -m bench.plan [--dataset pgbench] [--scale 15] [--runs 2] [--mode offline|online|both] [--jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import datasets
from bench.common import DATABASE
from bot.localpg import LocalCluster
from migration_core.engine.api import Engine, EngineConfig, MigrationRequest
from migration_core.pg.servers import ServerConfig
from migration_core.plan.estimate import Range
from migration_core.plan.review import PhaseCheck, PlanReview
from migration_core.state.events import NoEvents
from migration_core.state.models import Mode, State
from migration_core.store import Store

PASSWORD_ENV = "PGMIG_PLAN_BENCH_PASSWORD"
# The copy benchmark's clusters (bench/run.py): the same settings, so the numbers can be read beside its table.
COMMON_SETTINGS = {"max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'", "maintenance_work_mem": "'256MB'"}
SOURCE_SETTINGS = {**COMMON_SETTINGS, "wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}
GOAL = 0.25  # |actual / midpoint − 1| within this: the goal (printed)
BOUND = 2.0  # actual / midpoint outside [1 / BOUND, BOUND] fails the run (the exit status)


@dataclass
class Run:
    n: int
    mode: Mode
    migration_id: str
    review: PlanReview | None  # None: the migration kept no plan
    seconds: float  # the bench's own clock, command → state (a cross-check of the review's)
    error: str = ""
    preflight: float = 0.0  # Engine.preflight as the bench timed it (the plan has its own record of it)
    timeline: list[str] = field(default_factory=list)  # --steps: each step and state arrival, from the command
    rows: list[tuple[str, PhaseCheck]] = field(default_factory=list)  # (label, check), the whole run first

    @property
    def whole(self) -> PhaseCheck | None:
        return self.review.whole if self.review is not None else None


def midpoint(r: Range) -> float:
    return (r.low + r.high) / 2


def ratio(check: PhaseCheck) -> float | None:
    """actual / midpoint; None when the phase was not measured (or its range is empty)."""
    mid = midpoint(check.estimate)
    return check.took / mid if check.took is not None and mid > 0 else None


def within(value: float | None, bound: float) -> bool:
    return value is not None and 1 / bound <= value <= bound


def rows_of(review: PlanReview) -> list[tuple[str, PhaseCheck]]:
    """The whole run, then each database's phases as review.py judges them, then the overhead: what the whole run
    took beyond the pre-flight, the plan's own measurements and the judged phases, against the estimate's overhead
    range (one PhaseCheck like review's, so its verdict is review's)."""
    plan = review.plan
    out: list[tuple[str, PhaseCheck]] = [(review.whole.name, review.whole)]
    spent = plan.preflight_seconds + plan.seconds
    measured = review.whole.took is not None
    for db in review.databases:
        many = len(review.databases) > 1
        for check in db.phases:
            out.append((f"{db.plan.name}: {check.name}" if many else check.name, check))
            if plan.mode is Mode.ONLINE and check.name == "verification":
                continue  # online, the checksums come with the cutover: not part of the run to ready
            if check.took is None:
                measured = False
            else:
                spent += check.took
    overhead = Range(0, 0)
    for db in review.databases:
        overhead += db.plan.estimate.overhead
    took = review.whole.took - spent if measured and review.whole.took is not None else None
    out.append(("overhead (the rest)", PhaseCheck("overhead", overhead, took)))
    return out


@asynccontextmanager
async def clusters(prefix: str) -> AsyncIterator[tuple[Path, LocalCluster, LocalCluster, Store]]:
    """A logical source, a target and one state store for every run; all removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    password = secrets.token_hex(12)
    source = target = None
    try:
        source = LocalCluster(root / "source", password=password, settings=SOURCE_SETTINGS).init().start()
        target = LocalCluster(root / "target", password=password, settings=COMMON_SETTINGS).init().start()
        os.environ[PASSWORD_ENV] = password
        store = await Store.open(str(root / "state.sqlite"))
        try:
            yield root, source, target, store
        finally:
            await store.close()
    finally:
        for cluster in (source, target):
            if cluster is not None:
                cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def launcher_pause(target: LocalCluster) -> float:
    """Seconds to wait after an online run before the next: PostgreSQL's logical replication launcher (15 and
    before) starts no apply worker sooner than wal_retrieve_retry_interval (5 s) after the last one it started,
    and a wake-up inside that interval restarts the wait, so a subscription created within it waits a full
    interval before it applies anything. Back-to-back runs would measure that wait, not the migration."""
    ms = int(target.psql("SELECT setting FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'"))
    return ms / 1000 + 0.5


def servers(source: LocalCluster, target: LocalCluster) -> dict[str, ServerConfig]:
    return {
        name: ServerConfig(name, "127.0.0.1", c.port, password_env=PASSWORD_ENV, sslmode="disable")
        for name, c in (("source", source), ("target", target))
    }


async def one_run(engine: Engine, n: int, mode: Mode, jobs: int, timeout: float, steps: bool = False) -> Run:
    """A migration of DATABASE from the command to completed (offline) or ready for cutover (online, then
    cancelled: its replication removed), and its plan beside what happened."""
    online = mode is Mode.ONLINE
    started = time.perf_counter()  # the slash command arrives
    m = await engine.create(
        MigrationRequest(
            "source",
            "target",
            mode,
            "bench",
            databases=[DATABASE],
            parallel=jobs,
            replica_identity_full=online,  # pgbench_history has no key
        )
    )
    checking = time.perf_counter()
    report = await engine.preflight(m)
    checked = time.perf_counter() - checking
    if report.blocking:
        refused = "pre-flight refused: " + "; ".join(f.detail for f in report.blocking)
        return Run(n, mode, m.id, None, 0.0, refused, checked)
    engine.start(m.id)
    goal = State.READY_FOR_CUTOVER if online else State.COMPLETED
    error = ""
    while (state := (fresh := await engine.ledger.get(m.id)).state) is not goal:
        if state.finished:
            error = f"{state.value}: {fresh.error}"
            break
        if time.perf_counter() - started > timeout:
            error = f"not {goal.value} after {timeout:g} s (still {state.value})"
            break
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    if not online and not error:
        await engine.wait(m.id)  # the pipeline's last words after completed
    review = await engine.plan_review(m.id)
    if online or error:
        await engine.cancel(m.id, "bench")
    run = Run(n, mode, m.id, review, seconds, error or ("" if review else "no plan was kept"), checked)
    if review is not None:
        run.rows = rows_of(review)
    if steps:
        run.timeline = await timeline(engine, m.id)
    return run


async def timeline(engine: Engine, migration_id: str) -> list[str]:
    """Where the time went (`--steps`): each step's span and each state's first arrival, in seconds from the
    command, in order."""
    m = await engine.ledger.get(migration_id)
    at = m.created_at
    out = []
    for s in await engine.steps(migration_id):
        if s.started_at is not None and s.finished_at is not None:
            begin, end = (s.started_at - at).total_seconds(), (s.finished_at - at).total_seconds()
            out.append((begin, f"{begin:6.2f} – {end:6.2f} s  step {s.name} ({end - begin:.2f} s)"))
    for state, when in (await engine.store.reached(migration_id)).items():
        out.append(((when - at).total_seconds(), f"{(when - at).total_seconds():6.2f} s          state {state}"))
    return [line for _, line in sorted(out)]


def show(run: Run) -> None:
    print(f"\nrun {run.n} · {run.mode.value} · {run.migration_id}", end="")
    if run.review is None:
        print(f": {run.error}")
        return
    plan = run.review.plan
    print(f" · plan from {plan.grounds}")
    print(
        f"  the plan's measurements took {plan.seconds:.2f} s; the pre-flight {run.preflight:.2f} s "
        f"(the plan counts {plan.preflight_seconds:.2f} s of it)"
    )
    if run.error:
        print(f"  FAILED: {run.error}")
    print(f"  {'phase':<22} {'estimate s (low–high)':>22} {'mid s':>8} {'actual s':>9} {'act/mid':>8} {'inside':>7}")
    for label, check in run.rows:
        r, est = ratio(check), check.estimate
        took = f"{check.took:.2f}" if check.took is not None else "–"
        said = f"{r:.2f}" if r is not None else "–"
        verdict = check.verdict.value if check.verdict is not None else (check.note or "–")
        print(
            f"  {label:<22} {est.low:>10.2f} – {est.high:<9.2f} {midpoint(est):>8.2f} {took:>9} {said:>8} {verdict:>7}"
        )
    whole = run.whole
    if whole is not None and whole.took is not None:
        print(f"  (the bench's own clock, command → state: {run.seconds:.2f} s)")
    for line in run.timeline:
        print(f"    {line}")


def verdict(run: Run) -> tuple[str, bool]:
    """The run's verdict line, and whether it stays within a factor of BOUND."""
    whole = run.whole
    r = ratio(whole) if whole is not None else None
    if whole is None or whole.took is None or r is None:
        return f"run {run.n} ({run.mode.value}): NOT MEASURED ({run.error or 'no time for the whole run'})", False
    off = abs(r - 1)
    goal = f"within {GOAL:.0%}" if off <= GOAL else f"NOT within {GOAL:.0%}"
    bound = f"within a factor of {BOUND:g}" if within(r, BOUND) else f"OUTSIDE a factor of {BOUND:g}"
    line = (
        f"run {run.n} ({run.mode.value}): actual {whole.took:.2f} s / midpoint {midpoint(whole.estimate):.2f} s "
        f"= {r:.2f} ({off:.0%} off): {goal}; {bound}"
    )
    return line, within(r, BOUND) and not run.error


async def main_async(args: argparse.Namespace) -> int:
    modes = [Mode.OFFLINE, Mode.ONLINE] if args.mode == "both" else [Mode(args.mode)]
    sizes = datasets.Sizes(scale=args.scale, onebig_gb=args.onebig_gb)
    runs: list[Run] = []
    async with clusters("pgmig-plan-") as (root, source, target, store):
        loading = time.perf_counter()
        datasets.create(source, args.dataset, sizes)
        size = int(source.psql(f"SELECT pg_database_size('{DATABASE}')"))
        print(
            f"{args.dataset} {sizes.describe(args.dataset)}: {size / 2**20:.0f} MB, "
            f"loaded in {time.perf_counter() - loading:.1f} s; "
            f"{args.runs} run(s) of {', '.join(m.value for m in modes)}, {args.jobs} jobs",
            flush=True,
        )
        engine = Engine(
            store, servers(source, target), NoEvents(), EngineConfig(workdir=root / "work", default_parallel=args.jobs)
        )
        try:
            for mode in modes:
                for _ in range(args.runs):
                    target.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")  # the previous run's target
                    target.psql("CHECKPOINT")
                    if runs and runs[-1].mode is Mode.ONLINE:
                        await asyncio.sleep(launcher_pause(target))
                    run = await one_run(engine, len(runs) + 1, mode, args.jobs, args.timeout, args.steps)
                    runs.append(run)
                    show(run)
                    sys.stdout.flush()
        finally:
            await engine.close()
    print()
    ok = True
    for run in runs:
        line, inside = verdict(run)
        ok = ok and inside
        print(line)
    ratios = [r for run in runs if run.whole is not None and (r := ratio(run.whole)) is not None]
    if ratios:
        worst = max(ratios, key=lambda r: abs(math.log(r)))
        near = sum(abs(r - 1) <= GOAL for r in ratios)
        print(f"worst actual/midpoint {worst:.2f}; {near} of {len(runs)} runs within {GOAL:.0%}")
    print("PASS: every run within a factor of 2" if ok else "FAIL: a run outside a factor of 2 (or not measured)")
    return 0 if ok else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=datasets.DATASETS, default="pgbench")
    p.add_argument("--scale", type=int, default=15, help="pgbench scale (wide matches it); 15 ≈ 230 MB")
    p.add_argument("--onebig-gb", type=float, default=0.2, help="onebig's table in GiB (default 0.2)")
    p.add_argument("--runs", type=int, default=2, help="migrations in a row per mode (default 2)")
    p.add_argument("--mode", choices=("offline", "online", "both"), default="offline")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 2, help="parallel streams (default: CPUs)")
    p.add_argument("--steps", action="store_true", help="also print each run's steps and states, timed")
    p.add_argument("--timeout", type=float, default=900, help="seconds a run may take (default 900)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.scale < 1 or args.jobs < 1:
        p.error("--runs, --scale and --jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(main_async(parse(argv))))


if __name__ == "__main__":
    main()
