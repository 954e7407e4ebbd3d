"""Compare ways of copying a PostgreSQL database between two local clusters.  Usage: see bench/README.md."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, goals, verify  # noqa: E402
from bench.common import DATABASE, Deadline, StepFailed  # noqa: E402
from bench.measure import measure  # noqa: E402
from bench.methods import METHODS, Context, Unavailable  # noqa: E402
from bench.report import Result, legend, table, write_json  # noqa: E402
from bot.localpg import ClusterError, LocalCluster  # noqa: E402

COMMON_SETTINGS = {"max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'", "maintenance_work_mem": "'256MB'"}
SOURCE_SETTINGS = {**COMMON_SETTINGS, "wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}
TARGET_SETTINGS = dict(COMMON_SETTINGS)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--scale", type=int, default=30, help="pgbench scale; `wide` is sized to match (30 ≈ 450 MB each). Default 30"
    )
    parser.add_argument(
        "--dataset",
        choices=[*datasets.DATASETS, *datasets.GROUPS],
        default="both",
        help="both = pgbench and wide; all = all four. Default both",
    )
    parser.add_argument(
        "--onebig-gb", type=float, default=4.0, help="GiB of onebig's big table (0.2 for a quick run). Default 4"
    )
    parser.add_argument("--lobs-count", type=int, default=20_000, help="small (1–64 kB) large objects. Default 20000")
    parser.add_argument(
        "--lob-big-mb", type=float, default=1024, help="MiB of lobs' one big large object. Default 1024"
    )
    parser.add_argument(
        "--split-mb",
        type=int,
        default=1024,
        help="tables larger than this many MiB are split: pgmig's DataLimits.split_table_bytes, and on onebig "
        "pgcopydb's --split-tables-larger-than. Default 1024",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=os.cpu_count() or 2,
        help="parallelism N for every parallel method. Default: CPU count",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated subset of: {','.join(METHODS)}, run on every dataset in that order. "
        "Default: each dataset's own list (see bench/README.md)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of every method, interleaved; the median wall time is reported. Default 3",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per method. Default 3600")
    args = parser.parse_args(argv)
    if args.methods is not None:
        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in args.methods if m not in METHODS]
        if unknown:
            parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.onebig_gb <= 0 or args.lob_big_mb <= 0 or args.lobs_count < 0 or args.split_mb < 1:
        parser.error("--onebig-gb and --lob-big-mb must be positive, --lobs-count ≥ 0, --split-mb ≥ 1")
    args.datasets = list(datasets.GROUPS.get(args.dataset, (args.dataset,)))
    args.sizes = datasets.Sizes(args.scale, args.onebig_gb, args.lobs_count, args.lob_big_mb)
    return args


def methods_for(dataset: str, args: argparse.Namespace) -> list[str]:
    return list(args.methods) if args.methods is not None else list(datasets.DEFAULT_METHODS[dataset])


def start_clusters(root: Path) -> tuple[LocalCluster, LocalCluster]:
    password = secrets.token_hex(12)
    source = LocalCluster(root / "source", password=password, settings=SOURCE_SETTINGS).init().start()
    target = LocalCluster(root / "target", password=password, settings=TARGET_SETTINGS).init().start()
    return source, target


def reset_target(target: LocalCluster) -> None:
    """Every method starts from the same empty database and a quiet checkpointer."""
    target.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    target.psql(f"CREATE DATABASE {DATABASE}")
    target.psql("CHECKPOINT")


def run_method(
    name: str,
    dataset: str,
    size: int,
    expected: verify.Shape,
    source: LocalCluster,
    target: LocalCluster,
    args: argparse.Namespace,
    root: Path,
) -> Result:
    method = METHODS[name]
    result = Result(dataset, name, method.label(args.jobs), "ok", size)
    reset_target(target)
    workdir = Path(tempfile.mkdtemp(prefix=f"work-{name}-", dir=root))
    ctx = Context(source, target, args.jobs, workdir, Deadline.after(args.timeout), dataset, args.split_mb)
    try:
        measurement = measure(lambda: method.run(ctx))
    except Unavailable as exc:
        result.status = f"unavailable: {exc}"
        return result
    except (StepFailed, ClusterError) as exc:
        result.status = f"failed: {exc}"
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds, result.peak_rss_bytes = measurement.seconds, measurement.peak_rss_bytes
    result.peak_process_rss_bytes = measurement.peak_process_rss_bytes
    try:
        result.details = verify.differences(expected, verify.shape(target))
    except ClusterError as exc:
        result.details = [str(exc)]
    if result.details:
        result.status = "MISMATCH"
    return result


def run_dataset(
    dataset: str, source: LocalCluster, target: LocalCluster, args: argparse.Namespace, root: Path
) -> list[Result]:
    say(f"[{dataset}] loading {args.sizes.describe(dataset)} …")
    datasets.create(source, dataset, args.sizes)
    size = int(source.psql(f"SELECT pg_database_size('{DATABASE}')"))
    expected = verify.shape(source)
    los = (
        f", {expected.large_objects} large objects of {expected.large_object_bytes / 2**20:.1f} MB"
        if expected.large_objects
        else ""
    )
    say(
        f"[{dataset}] {size / 2**20:.0f} MB, {len(expected.rows)} tables, {sum(expected.rows.values())} rows, "
        f"{expected.indexes} indexes{los}"
    )
    names = methods_for(dataset, args)
    rounds: dict[str, list[Result]] = {name: [] for name in names}
    for round_no in range(1, args.repeat + 1):
        # Interleaved rounds: drift in the machine (caches, checkpoints) falls on every method alike.
        for name in names:
            say(f"[{dataset}] {METHODS[name].label(args.jobs)} (round {round_no}/{args.repeat}) …")
            result = run_method(name, dataset, size, expected, source, target, args, root)
            say(f"[{dataset}]   {result.status}" + (f" in {result.seconds:.2f} s" if result.measured else ""))
            rounds[name].append(result)
    return [combine(rounds[name]) for name in names]


def combine(results: list[Result]) -> Result:
    """One row per method: the median wall time, the largest peak RSSes, the first problem if any."""
    bad = [r for r in results if r.status != "ok"]
    if bad:
        return bad[0]
    first = results[0]
    first.runs = sorted(r.seconds for r in results if r.seconds is not None)
    first.seconds = statistics.median(first.runs)
    first.peak_rss_bytes = max(r.peak_rss_bytes or 0 for r in results)
    first.peak_process_rss_bytes = max(r.peak_process_rss_bytes or 0 for r in results)
    return first


def metadata(args: argparse.Namespace, source: LocalCluster, sizes: dict[str, int]) -> dict:
    return {
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scale": args.scale,
        "onebig_gb": args.onebig_gb,
        "lobs_count": args.lobs_count,
        "lob_big_mb": args.lob_big_mb,
        "split_mb": args.split_mb,
        "jobs": args.jobs,
        "methods": {d: methods_for(d, args) for d in args.datasets},
        "dataset_bytes": sizes,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "postgres": source.psql("SHOW server_version"),
        "pgcopydb": _pgcopydb_version(),
    }


def _pgcopydb_version() -> str | None:
    program = shutil.which("pgcopydb")
    if program is None:
        return None
    out = subprocess.run([program, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else None


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = Path(tempfile.mkdtemp(prefix="pgmig-bench-"))
    os.chmod(root, 0o755)  # the servers run as `postgres` when we are root
    results: list[Result] = []
    verdicts: list[goals.Verdict] = []
    try:
        source, target = start_clusters(root)
        try:
            for dataset in args.datasets:
                results += run_dataset(dataset, source, target, args, root)
            meta = metadata(args, source, {r.dataset: r.size_bytes for r in results})
        finally:
            target.destroy()
            source.destroy()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    say(f"\njobs {args.jobs}, split at {args.split_mb} MiB; MB = 2^20 bytes")
    for dataset in args.datasets:
        rows = [r for r in results if r.dataset == dataset]
        baselines = datasets.BASELINES[dataset]
        say(
            f"\n{dataset}: {args.sizes.describe(dataset)} ({rows[0].size_bytes / 2**20:.0f} MB on source); "
            f"{legend(baselines)}\n{table(rows, baselines)}"
        )
        found = goals.verdicts(dataset, rows)
        verdicts += found
        for verdict in found:
            say(f"  {verdict.line()}")
    meta["goals"] = [{"dataset": v.dataset, "goal": v.text, "passed": v.passed, "binding": v.binding} for v in verdicts]
    say(f"\nwritten {write_json(results, meta)}")
    methods_ok = all(r.status == "ok" or r.status.startswith("unavailable") for r in results)
    failed_goals = [v for v in verdicts if v.failed]
    if failed_goals:
        say(f"{len(failed_goals)} memory goal(s) failed")
    return 0 if methods_ok and not failed_goals else 1


if __name__ == "__main__":
    sys.exit(main())
