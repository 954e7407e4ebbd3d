"""pg_dump, pg_restore and psql as asyncio subprocesses.

Passwords reach them through PGPASSWORD in the child's environment, never the command line; a database
name reaches them through PGDATABASE or inside a quoted connection string (`conninfo`), never as a bare
argument a name like `dbname=x host=evil` or `-h` could hijack. Children run with umask 077, so what
they write (export files) only pgmig's user can read. stderr is captured, secrets are masked, and a
failure is summarized to the lines that say what went wrong. Cancelling the awaiting task terminates the
child, so a cancelled migration leaves no tool running.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from migration_core.pg import secrets
from migration_core.pg.servers import ServerConfig

MAX_SUMMARY_LINES = 8


class ToolError(Exception):
    """A tool failed; ``summary`` holds its own error lines with secrets removed."""

    def __init__(self, program: str, returncode: int, summary: str) -> None:
        self.program = program
        self.returncode = returncode
        self.summary = summary
        super().__init__(f"{program} exited with code {returncode}: {summary}")


PRIVATE = 0o077  # umask of every child: files readable by pgmig's user only
NO_PUBSUB = ["--no-publications", "--no-subscriptions"]  # pg_dump/pg_restore: a copied publication breaks replication


def conninfo(**fields: str) -> str:
    """A libpq connection string from key/value pairs, every value quoted as libpq reads it ('…' with
    backslash and quote escaped), so no value can add or change a key."""
    return " ".join(
        f"{k}='{v.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'" for k, v in fields.items()
    )


def connection_env(server: ServerConfig, database: str) -> dict[str, str]:
    """libpq environment for one server and database; the only place tool passwords appear."""
    env = {
        **os.environ,
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGDATABASE": database,
        "PGSSLMODE": server.sslmode,
        "PGCONNECT_TIMEOUT": str(int(server.connect_timeout)),
        "PGAPPNAME": "pgmig",
    }
    password = server.password()
    if password is not None:
        env["PGPASSWORD"] = password
    else:
        env.pop("PGPASSWORD", None)
    # pg_dump and pg_restore SET most limits to 0 themselves (so do the dump method's SQL files), but never
    # idle_session_timeout, and psql (the walsender session holding the slot's snapshot) sets none: every
    # tool's session lifts them all at login, as pgmig's own do.
    return with_options(env, server.unbounded())


def with_options(env: dict[str, str], settings: dict[str, str]) -> dict[str, str]:
    """`env` whose PGOPTIONS also sets `settings` at login, after what it already held (the last one wins)."""
    added = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return {**env, "PGOPTIONS": f"{env.get('PGOPTIONS', '')} {added}".strip()}


def summarize(stderr: str) -> str:
    """The error lines a person needs: errors and fatals first, else the last lines."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    important = [ln for ln in lines if any(w in ln for w in ("error", "ERROR", "FATAL", "fatal", "could not"))]
    chosen = (important or lines)[-MAX_SUMMARY_LINES:]
    return secrets.redact(" | ".join(chosen)) or "(no error output)"


@dataclass
class Tool:
    """One client program from the chosen directory."""

    bindir: Path
    program: str

    @property
    def path(self) -> str:
        return str(self.bindir / self.program)

    async def run(
        self,
        args: list[str],
        env: dict[str, str],
        on_line: Callable[[str], None] | None = None,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = asyncio.subprocess.DEVNULL,
    ) -> str:
        """Run to completion; returns stderr. `on_line` sees each stderr line as it arrives (progress)."""
        # A session of its own: a Ctrl-C typed in pgmig's terminal is pgmig's to handle (it stops its tools
        # itself, on cancel); it must not kill a pg_restore half-way through the target.
        proc = await asyncio.create_subprocess_exec(
            self.path,
            *args,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            umask=PRIVATE,
            start_new_session=True,
        )
        return await self.wait(proc, on_line)

    async def wait(self, proc: asyncio.subprocess.Process, on_line: Callable[[str], None] | None = None) -> str:
        lines: list[str] = []
        try:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if on_line:
                    on_line(line)
            code = await proc.wait()
        except asyncio.CancelledError:
            await terminate(proc)
            raise
        stderr = "\n".join(lines)
        if code != 0:
            raise ToolError(self.program, code, summarize(stderr))
        return stderr


async def terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 5)
        except ProcessLookupError:
            pass
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
