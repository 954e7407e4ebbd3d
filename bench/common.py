"""Shared plumbing: the two clusters, libpq arguments, and shell-like pipes without a shell."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bot.localpg import SUPERUSER, LocalCluster

DATABASE = "bench"


class StepFailed(RuntimeError):
    """A program of a method exited non-zero; the message carries the tail of its stderr."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


@dataclass
class Deadline:
    """A per-method time limit, so one hung method cannot hang `make bench`."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.1, self.at - time.monotonic())


def conn_args(cluster: LocalCluster, database: str = DATABASE) -> list[str]:
    """libpq command-line arguments for psql/pg_dump/pg_restore (loopback only; password from env)."""
    return ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", SUPERUSER, "-d", database]


def tool(cluster: LocalCluster, name: str) -> str:
    """Use the client programs of the same PostgreSQL installation as the clusters."""
    return str(cluster.bindir / name)


def psql_cmd(cluster: LocalCluster, sql: str, database: str = DATABASE) -> list[str]:
    return [tool(cluster, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *conn_args(cluster, database), "-c", sql]


def client_env(cluster: LocalCluster) -> dict[str, str]:
    """Environment for client programs: both clusters share one password; no TLS on loopback."""
    return {
        **os.environ,
        "PGPASSWORD": cluster.password,
        "PGSSLMODE": "disable",
        "PATH": f"{cluster.bindir}:{os.environ.get('PATH', '')}",
    }


def pipeline(*cmds: list[str], env: dict[str, str], deadline: Deadline, cwd: Path | None = None) -> None:
    """Run `cmds` as `a | b | c`: the data flows through OS pipes, never through Python.

    Raises StepFailed naming every program that failed, with the tail of its stderr (a writer killed by
    SIGPIPE is usually the victim of its reader, so all of them are shown). Each program gets its own
    process group so a timeout or Ctrl-C also ends the workers it forked.
    """
    procs: list[subprocess.Popen] = []
    errs = [tempfile.TemporaryFile() for _ in cmds]
    try:
        for i, cmd in enumerate(cmds):
            stdin = procs[-1].stdout if procs else subprocess.DEVNULL
            stdout = subprocess.PIPE if i < len(cmds) - 1 else subprocess.DEVNULL
            procs.append(
                subprocess.Popen(
                    cmd, stdin=stdin, stdout=stdout, stderr=errs[i], env=env, cwd=cwd, start_new_session=True
                )
            )
            if stdin is not subprocess.DEVNULL:
                stdin.close()  # only the reader may hold the pipe, so the writer sees EPIPE if it dies
        for proc in procs:
            proc.wait(timeout=deadline.remaining())
        ran = zip(cmds, procs, errs, strict=True)
        failures = [(cmd, proc, _tail(err)) for cmd, proc, err in ran if proc.returncode]
        if failures:
            message = "; ".join(f"{Path(cmd[0]).name} exited {proc.returncode}: {tail}" for cmd, proc, tail in failures)
            raise StepFailed(message, failures[0][1].returncode, failures[-1][2])
    except subprocess.TimeoutExpired:
        raise StepFailed(f"timed out: {' | '.join(Path(c[0]).name for c in cmds)}") from None
    finally:
        for proc in procs:
            _kill_group(proc)
        for err in errs:
            err.close()


def _tail(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode(errors="replace").strip()[-600:]


def _kill_group(proc: subprocess.Popen) -> None:
    """End a program and anything it left running in its process group (a no-op when all exited)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(cmd: list[str], env: dict[str, str], deadline: Deadline, cwd: Path | None = None) -> None:
    """One program, failing like `pipeline`."""
    pipeline(cmd, env=env, deadline=deadline, cwd=cwd)
