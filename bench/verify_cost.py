"""What continuous verification costs the source: its CPU under a steady write rate, streaming alone against
streaming with continuous verification (issue 25: ≤ 10 % more).

A pgbench database (`--scale`, default 10 ≈ 160 MB) is migrated online with pgmig's engine (monitoring job at
its default interval, as in service) in two configurations: `EngineConfig.verify_chunk_rows = 0` (streaming
alone) and its default (streaming with continuous verification, verify/continuous.py). Each round starts a
fresh migration of the same database (the previous one cancelled, the target database dropped), waits until
ready_for_cutover and, with verification, until it covers every keyed table (`Verification.share()` 1.0),
then runs `pgbench -R --rate -c --clients` for `--seconds` and measures the CPU every cluster spent over
exactly that run. The configurations alternate for `--rounds` rounds each; medians are compared.

A cluster's CPU is all its processes': the postmaster's utime + stime, its cutime + cstime (the CPU of the
children it has reaped: a backend that exits during the run is counted whole there, and what it had spent
before the first reading is in that reading), and every live child's utime + stime. A reading is taken again
when the postmaster reaped a child while the children were being read, so no backend is counted twice or
missed. pgbench's backends are in the source's CPU, the same in both configurations, so the difference is
verification's; pgbench's own process is not counted. Their CPU is also sampled apart (every SAMPLE s while
they live) and the source's CPU without them shown as "rest": the same difference, with less of pgbench's
noise around it. pgmig's CPU is the bench's own process (the engine runs in it; `time.process_time()`).

    python -m bench.verify_cost [--scale 10] [--rate 100] [--clients 4] [--seconds 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.lag import DB, bench_pair, pgbench, servers
from bench.plan import launcher_pause
from bot.localpg import LocalCluster
from migration_core.engine.api import Engine, EngineConfig, MigrationRequest
from migration_core.state.events import NoEvents
from migration_core.state.models import State
from migration_core.store import Store

GOAL = 0.10  # verification's extra source CPU, as a share of streaming's alone
SETTLE = 2.0  # seconds between ready (or covered) and the measured run, in both configurations
SAMPLE = 0.2  # seconds between samples of pgbench's backends' CPU
TIMEOUT = 600.0  # longest wait for ready_for_cutover, and for coverage
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
CONFIGS = (("streaming", 0), ("verifying", EngineConfig(Path()).verify_chunk_rows))


def _stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields from the 3rd (state) on: field n is [n - 3]. None: the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def postmaster_pid(cluster: LocalCluster) -> int:
    return int((cluster.datadir / "postmaster.pid").read_text().split()[0])


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds the cluster's processes have spent so far (see the module's docstring)."""
    for _ in range(100):
        before = _stat(postmaster)
        if before is None:
            raise RuntimeError(f"postmaster {postmaster} is gone")
        live = 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (f := _stat(entry.name)) is not None and int(f[1]) == postmaster:
                live += int(f[11]) + int(f[12])  # utime, stime
        after = _stat(postmaster)
        if after is not None and after[13:15] == before[13:15]:  # cutime, cstime: nothing reaped meanwhile
            return (sum(int(x) for x in after[11:15]) + live) / CLOCK_TICK
    raise RuntimeError("the postmaster kept reaping children: no consistent reading")


def process_cpu(pid: int) -> float | None:
    """CPU seconds one process has spent; None: it is gone."""
    f = _stat(pid)
    return None if f is None else (int(f[11]) + int(f[12])) / CLOCK_TICK


async def sample_sessions(conn: asyncpg.Connection, clients: int, spent: dict[int, float]) -> None:
    """pgbench's backends on the source (application_name pgbench), each one's CPU sampled every SAMPLE s while
    it lives (the last sample before it exits stands for it: pgbench ends its sessions idle)."""
    while True:
        if len(spent) < clients:
            for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'"):
                spent.setdefault(r["pid"], 0.0)
        for pid in spent:
            if (seconds := process_cpu(pid)) is not None:
                spent[pid] = seconds
        await asyncio.sleep(SAMPLE)


@dataclass
class Cpu:
    source: float
    target: float
    pgmig: float
    wall: float

    @classmethod
    def now(cls, source: int, target: int) -> Cpu:
        return cls(cluster_cpu(source), cluster_cpu(target), time.process_time(), time.perf_counter())

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.source - other.source, self.target - other.target, self.pgmig - other.pgmig, self.wall - other.wall
        )


@dataclass
class Round:
    n: int
    config: str
    loaded: float  # start → ready_for_cutover
    covered: float | None  # ready_for_cutover → every keyed table covered (verification only)
    walk: Cpu | None  # the CPU of that walk to coverage (no pgbench running)
    run: Cpu  # over the pgbench run
    sessions: float  # the CPU of pgbench's own backends on the source, within run.source
    tps: str
    rows_verified: int  # rows continuous verification compared equal during the run

    def share(self, seconds: float) -> float:
        return seconds / self.run.wall * 100


async def one_round(
    n: int,
    config: str,
    chunk_rows: int,
    store: Store,
    root: Path,
    source: LocalCluster,
    target: LocalCluster,
    args: argparse.Namespace,
) -> Round:
    engine = Engine(
        store, servers(source, target), NoEvents(), EngineConfig(workdir=root / "work", verify_chunk_rows=chunk_rows)
    )
    pids = postmaster_pid(source), postmaster_pid(target)
    m = None
    try:
        m = await engine.create(
            MigrationRequest("source", "target", "online", "bench", databases=[DB], replica_identity_full=True)
        )  # pgbench_history has no key
        assert not (await engine.preflight(m)).blocking
        started = time.perf_counter()
        engine.start(m.id)
        while (fresh := await store.get_migration(m.id)).state is not State.READY_FOR_CUTOVER:
            if fresh.state.finished or time.perf_counter() - started > TIMEOUT:
                raise RuntimeError(f"{m.id} is {fresh.state.value}, not ready for cutover: {fresh.error}")
            await asyncio.sleep(0.1)
        loaded = time.perf_counter() - started
        covered, walk = None, None
        if chunk_rows:
            before = Cpu.now(*pids)
            while ((v := engine.progress(m.id).of(DB).verification) is None or (v.share() or 0) < 1.0) and (
                time.perf_counter() - before.wall < TIMEOUT
            ):
                await asyncio.sleep(0.1)
            walk = Cpu.now(*pids) - before
            covered = walk.wall
        await asyncio.sleep(SETTLE)
        v = engine.progress(m.id).of(DB).verification
        verified = v.rows_verified if v else 0
        env = {**os.environ, **source.env, "PGPASSWORD": source.password}
        watching = await asyncpg.connect(source.dsn(DB))
        spent: dict[int, float] = {}
        before = Cpu.now(*pids)
        sampler = asyncio.create_task(sample_sessions(watching, args.clients, spent))
        try:
            writer = await asyncio.create_subprocess_exec(
                str(source.bindir / "pgbench"),
                *("-h", "127.0.0.1", "-p", str(source.port), "-U", "postgres", "-n", "-j", "1"),
                *("-c", str(args.clients), "-R", str(args.rate), "-T", str(args.seconds), DB),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            out, err = await writer.communicate()
            run = Cpu.now(*pids) - before
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await watching.close()
        if len(spent) != args.clients:
            raise RuntimeError(f"found {len(spent)} pgbench sessions on the source, not {args.clients}")
        if writer.returncode != 0:
            raise RuntimeError(f"pgbench failed: {err.decode().strip()}")
        lines = out.decode().splitlines()
        tps = next((f"{float(line.split('=')[1].split()[0]):.1f}" for line in lines if line.startswith("tps")), "?")
        verified = (v.rows_verified if v else 0) - verified
        return Round(n, config, loaded, covered, walk, run, sum(spent.values()), tps, verified)
    finally:
        if m is not None:
            await engine.cancel(m.id, "bench")
        await engine.close()


def reset(source: LocalCluster, target: LocalCluster) -> None:
    """Between rounds: the target database dropped, and nothing of the last migration left on the source."""
    target.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    target.psql("CHECKPOINT")
    left = source.psql("SELECT count(*) FROM pg_replication_slots") + source.psql(
        "SELECT count(*) FROM pg_publication", database=DB
    )
    if left != "00":
        raise RuntimeError(f"the cancelled migration left slots or publications on the source ({left})")


def show(r: Round) -> None:
    covered = f"{r.covered:7.1f}" if r.covered is not None else f"{'–':>7}"
    per_s = r.rows_verified / r.run.wall
    print(
        f"{r.n:>5} {r.config:<10} {r.loaded:7.1f} {covered} {r.tps:>7} "
        f"{r.run.source:8.2f} {r.share(r.run.source):6.1f} {r.sessions:9.2f} {r.run.source - r.sessions:6.2f} "
        f"{r.run.target:8.2f} {r.share(r.run.target):6.1f} "
        f"{r.run.pgmig:7.2f} {per_s:9.0f}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> int:
    rounds: list[Round] = []
    async with bench_pair("pgmig-verifycost-") as (root, source, target, store):
        pgbench(source, "-i", "-q", "-s", str(args.scale))
        print(
            f"pgbench scale {args.scale}, then pgbench -R {args.rate} -c {args.clients} for {args.seconds} s per "
            f"round; {args.rounds} round(s) of each configuration, alternating; CPU over the pgbench run\n"
        )
        print(
            f"{'round':>5} {'config':<10} {'ready s':>7} {'cover s':>7} {'tps':>7} "
            f"{'source s':>8} {'% core':>6} {'pgbench s':>9} {'rest s':>6} {'target s':>8} {'% core':>6} "
            f"{'pgmig s':>7} {'rows/s ✓':>9}"
        )
        for n in range(args.rounds):
            for config, chunk_rows in CONFIGS:
                if rounds:
                    reset(source, target)
                    await asyncio.sleep(launcher_pause(target))
                rounds.append(await one_round(n + 1, config, chunk_rows, store, root, source, target, args))
                show(rounds[-1])
    alone = [r for r in rounds if r.config == "streaming"]
    verifying = [r for r in rounds if r.config == "verifying"]
    print()
    for name, of in (("source", lambda c: c.source), ("target", lambda c: c.target), ("pgmig", lambda c: c.pgmig)):
        a, v = statistics.median(of(r.run) for r in alone), statistics.median(of(r.run) for r in verifying)
        print(
            f"{name:<7} CPU median: streaming {a:6.2f} s ({a / args.seconds * 100:5.1f} % of a core), "
            f"verifying {v:6.2f} s ({v / args.seconds * 100:5.1f} %): {(v - a) / a * 100:+.1f} %"
        )
    a = statistics.median(r.run.source for r in alone)
    rest_a = statistics.median(r.run.source - r.sessions for r in alone)
    rest_v = statistics.median(r.run.source - r.sessions for r in verifying)
    print(
        f"source CPU without pgbench's own backends, median: streaming {rest_a:.2f} s, verifying {rest_v:.2f} s: "
        f"{rest_v - rest_a:+.2f} s = {(rest_v - rest_a) / a * 100:+.1f} % of streaming's whole source CPU"
    )
    pairs = ", ".join(
        f"{(v.run.source - a.run.source) / a.run.source * 100:+.1f} %" for a, v in zip(alone, verifying, strict=True)
    )
    print(f"source overhead per round: {pairs}")
    walks = [r for r in verifying if r.walk is not None]
    if walks:
        covered = statistics.median(r.covered or 0.0 for r in walks)
        walk = statistics.median(r.walk.source / r.walk.wall * 100 for r in walks if r.walk and r.walk.wall)
        print(
            f"coverage: every keyed table {covered:.1f} s after ready_for_cutover (median), the source at "
            f"{walk:.0f} % of a core meanwhile (no pgbench)"
        )
    overhead = (statistics.median(r.run.source for r in verifying) - a) / a
    verdict = "MET" if overhead <= GOAL else "NOT MET"
    print(f"goal: verification ≤ {GOAL:.0%} more source CPU than streaming alone: {verdict} ({overhead:+.1%})")
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--rate", type=int, default=100, help="pgbench -R: transactions per second")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=int, default=60, help="the measured pgbench run of each round")
    p.add_argument("--rounds", type=int, default=2, help="of each configuration, alternating")
    raise SystemExit(asyncio.run(main_async(p.parse_args(argv))))


if __name__ == "__main__":
    main()
