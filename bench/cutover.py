"""The write-unavailable window of a cutover, per step, with pgbench writing until the fence.

A pgbench database (`--scale`, default 30 ≈ 450 MB) is migrated online with pgmig's engine until it
is ready for cutover; pgbench then writes at `--rate` tps while the cutover runs (fence grace 0, so the
window is pgmig's own work). Prints each step's time and checks that every committed pgbench_history
row reached the target.

    python -m bench.cutover [--scale 30] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time

from bench.lag import DB, bench_pair, pgbench, servers
from migration_core.engine.api import Engine, EngineConfig, MigrationRequest
from migration_core.state.events import NoEvents
from migration_core.state.models import State


async def main_async(args: argparse.Namespace) -> None:
    async with bench_pair("pgmig-cutover-") as (root, source, target, store):
        pgbench(source, "-i", "-q", "-I", "dtgvpf", "-s", str(args.scale))  # with foreign keys
        engine = Engine(
            store,
            servers(source, target),
            NoEvents(),
            EngineConfig(workdir=root / "work", progress_interval=0.2, fence_grace_seconds=0.0),
        )
        m = await engine.create(
            MigrationRequest("source", "target", "online", "bench", databases=[DB], replica_identity_full=True)
        )
        assert not (await engine.preflight(m)).blocking
        await engine.start(m.id)
        while (await store.get_migration(m.id)).state is not State.READY_FOR_CUTOVER:
            await asyncio.sleep(0.1)
        env = {**os.environ, **source.env, "PGPASSWORD": source.password}
        writer = subprocess.Popen(
            [
                str(source.bindir / "pgbench"),
                "-h",
                "127.0.0.1",
                "-p",
                str(source.port),
                "-U",
                "postgres",
                "-n",
                "-c",
                "4",
                "-R",
                str(args.rate),
                "-T",
                "600",
                DB,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        await asyncio.sleep(3)
        started = time.perf_counter()
        ok = await engine.cutover(m.id, "bench")
        total = time.perf_counter() - started
        writer.terminate()
        writer.wait()
        if not ok:
            raise RuntimeError((await store.get_migration(m.id)).error)
        timings = (await store.step(m.id, f"cutover:{DB}")).data["timings"]
        history = source.psql("SELECT count(*) FROM pgbench_history", database=DB)
        on_target = target.psql("SELECT count(*) FROM pgbench_history", database=DB)
        print(f"cutover of pgbench scale {args.scale} with pgbench -R {args.rate} writing until the fence")
        for step, seconds in timings.items():
            print(f"  {step:<12} {seconds:7.3f} s")
        ready = sum(v for k, v in timings.items() if k not in ("validate", "verify"))
        print(
            f"  {'window':<12} {ready:7.3f} s  (fence → target released: sequences synced, FKs and triggers back,"
            " row counts equal)"
        )
        print(f"  {'total':<12} {total:7.3f} s  (with FK validation and checksums after release, and teardown)")
        print(
            f"  committed history rows: source {history}, target {on_target}"
            f" — {'all there' if history == on_target else 'MISMATCH'}"
        )
        await engine.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=30)
    p.add_argument("--rate", type=int, default=500)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
