"""The ways of copying database `bench` from the source cluster to the (empty) target database.

Every method must leave the same tables, rows, primary keys and indexes on the target; run.py checks.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench import verify
from bench.common import DATABASE, Deadline, StepFailed, client_env, conn_args, pipeline, psql_cmd, run, tool
from bench.pgmig_worker import ELAPSED_FILE, UNAVAILABLE_EXIT
from bot.localpg import LocalCluster

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASSWORD_ENV = "PGMIG_BENCH_PASSWORD"


class Unavailable(RuntimeError):
    """The method cannot run here (tool missing or not working); reported, not fatal."""


@dataclass
class Context:
    source: LocalCluster
    target: LocalCluster
    jobs: int
    workdir: Path  # empty, private to this method, removed afterwards
    deadline: Deadline
    dataset: str = ""
    split_mb: int = 1024  # pgmig's split_table_bytes, and pgcopydb's --split-tables-larger-than on onebig

    @property
    def env(self) -> dict[str, str]:
        return client_env(self.source)  # both clusters share the password


@dataclass(frozen=True)
class Method:
    name: str
    label: Callable[[int], str]
    run: Callable[[Context], float | None]  # seconds when the method times itself (see measure)


def dump_restore(ctx: Context) -> None:
    """The textbook single stream: pg_dump -Fc | pg_restore, no temporary file."""
    pipeline(
        [tool(ctx.source, "pg_dump"), "-Fc", *conn_args(ctx.source)],
        [tool(ctx.target, "pg_restore"), "--exit-on-error", *conn_args(ctx.target)],
        env=ctx.env,
        deadline=ctx.deadline,
    )


def dump_dir(ctx: Context) -> None:
    """Directory-format dump and restore, both with N jobs (the usual "parallel pg_dump" advice)."""
    dump = ctx.workdir / "dump"
    run(
        [tool(ctx.source, "pg_dump"), "-Fd", "-j", str(ctx.jobs), "-f", str(dump), *conn_args(ctx.source)],
        env=ctx.env,
        deadline=ctx.deadline,
    )
    run(
        [tool(ctx.target, "pg_restore"), "-j", str(ctx.jobs), "--exit-on-error", *conn_args(ctx.target), str(dump)],
        env=ctx.env,
        deadline=ctx.deadline,
    )


def pgcopydb(ctx: Context) -> None:
    """pgcopydb clone with N table jobs and N index jobs (on onebig also splitting tables larger than
    pgmig's split size, by their integer key); any failure makes it "unavailable"."""
    program = shutil.which("pgcopydb")
    if program is None:
        raise Unavailable("pgcopydb is not installed (bench/ensure-tools.sh installs it on Debian)")
    cmd = [
        program,
        "clone",
        "--source",
        _uri(ctx.source),
        "--target",
        _uri(ctx.target),
        "--table-jobs",
        str(ctx.jobs),
        "--index-jobs",
        str(ctx.jobs),
        "--dir",
        str(ctx.workdir / "pgcopydb"),
    ]
    if ctx.dataset == "onebig":
        cmd += ["--split-tables-larger-than", f"{ctx.split_mb}MB"]  # units B, kB, MB, GB… (pgcopydb docs)
    try:
        run(cmd, env=ctx.env, deadline=ctx.deadline)
    except StepFailed as exc:
        raise Unavailable(str(exc)) from None


def raw_pipe(ctx: Context) -> None:
    """The practical limit: schema first, then N concurrent `psql COPY TO | psql COPY FROM` pipes (largest
    table first), then indexes and constraints with pg_restore -j N. No Python in the data path."""
    _schema_around(ctx, lambda: _copy_tables(ctx, verify.tables(ctx.source)))


def single_stream(ctx: Context) -> None:
    """What one unsplit table costs: the largest table through one `psql COPY TO | psql COPY FROM` pipe,
    the other tables meanwhile as raw-pipe copies them (N pipes), schema and post-data as raw-pipe."""

    def data() -> None:
        largest, *rest = verify.tables(ctx.source) or [None]
        with ThreadPoolExecutor(max_workers=1) as alone:
            big = alone.submit(_copy_table, ctx, largest) if largest else None
            _copy_tables(ctx, rest)
            if big:
                big.result()

    _schema_around(ctx, data)


def _schema_around(ctx: Context, copy_data: Callable[[], None]) -> None:
    """pre-data with pg_restore, `copy_data()`, then post-data with pg_restore -j N."""
    schema = ctx.workdir / "schema.dump"
    run(
        [tool(ctx.source, "pg_dump"), "-Fc", "--schema-only", "-f", str(schema), *conn_args(ctx.source)],
        env=ctx.env,
        deadline=ctx.deadline,
    )
    run(
        [tool(ctx.target, "pg_restore"), "--section=pre-data", "--exit-on-error", *conn_args(ctx.target), str(schema)],
        env=ctx.env,
        deadline=ctx.deadline,
    )
    copy_data()
    run(
        [
            tool(ctx.target, "pg_restore"),
            "--section=post-data",
            "-j",
            str(ctx.jobs),
            "--exit-on-error",
            *conn_args(ctx.target),
            str(schema),
        ],
        env=ctx.env,
        deadline=ctx.deadline,
    )


def _copy_tables(ctx: Context, tables: list[str]) -> None:
    """One pipe per table, N at a time, in the order given."""
    with ThreadPoolExecutor(max_workers=ctx.jobs) as pool:
        futures = [pool.submit(_copy_table, ctx, table) for table in tables]
        for future in futures:
            future.result()


def _copy_table(ctx: Context, table: str) -> None:
    pipeline(
        psql_cmd(ctx.source, f"COPY {table} TO STDOUT"),
        psql_cmd(ctx.target, f"COPY {table} FROM STDIN"),
        env=ctx.env,
        deadline=ctx.deadline,
    )


def pgmig(ctx: Context, mode: str = "offline") -> float | None:
    """pgmig's offline migration (or online initial copy), in a child Python process so its memory is
    measured like the others'. A whole migration (`migrate-*`) is timed by the child from the command
    to the state, as a running service would see it: Python's start-up and the engine's set-up, which a
    service pays once, not per migration, are left out (~0.4 s)."""
    env = {**ctx.env, PASSWORD_ENV: ctx.source.password}
    cmd = [
        sys.executable,
        "-m",
        "bench.pgmig_worker",
        "--source-port",
        str(ctx.source.port),
        "--target-port",
        str(ctx.target.port),
        "--jobs",
        str(ctx.jobs),
        "--workdir",
        str(ctx.workdir),
        "--database",
        DATABASE,
        "--password-env",
        PASSWORD_ENV,
        "--mode",
        mode,
        "--split-mb",
        str(ctx.split_mb),
    ]
    try:
        run(cmd, env=env, deadline=ctx.deadline, cwd=PROJECT_ROOT)
    except StepFailed as exc:
        if exc.returncode == UNAVAILABLE_EXIT:
            raise Unavailable(exc.stderr.splitlines()[-1] if exc.stderr else "offline API missing") from None
        raise
    timed = ctx.workdir / ELAPSED_FILE
    return float(timed.read_text()) if timed.exists() else None


def _uri(cluster: LocalCluster) -> str:
    return f"postgresql://postgres@127.0.0.1:{cluster.port}/{DATABASE}?sslmode=disable"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dump-restore", lambda n: "dump | restore", dump_restore),
        Method("dump-dir", lambda n: f"dump -Fd -j{n} + restore -j{n}", dump_dir),
        Method("pgcopydb", lambda n: f"pgcopydb clone (jobs {n})", pgcopydb),
        Method("raw-pipe", lambda n: f"raw COPY pipe (x{n})", raw_pipe),
        Method("single-stream", lambda n: "single COPY | COPY stream", single_stream),
        Method("pgmig", lambda n: f"pgmig offline (parallel {n})", pgmig),
        Method("pgmig-online", lambda n: f"pgmig online full load (x{n})", lambda ctx: pgmig(ctx, "online")),
        Method(
            "pgmig-e2e",
            lambda n: f"pgmig migrate → completed (x{n})",
            lambda ctx: pgmig(ctx, "migrate-offline"),
        ),
        Method(
            "pgmig-online-e2e",
            lambda n: f"pgmig migrate → ready (x{n})",
            lambda ctx: pgmig(ctx, "migrate-online"),
        ),
    )
}
