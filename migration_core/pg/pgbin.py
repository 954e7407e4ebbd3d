"""Finds PostgreSQL programs: servers for local clusters, and client tools new enough for the servers.

pg_dump refuses a server newer than itself, so the client programs must be at least as new as the
newest server a migration touches. A configured directory wins; otherwise Debian's versioned
directories and PATH are searched and the newest fitting one is used.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")


class MissingBinaries(Exception):
    pass


def _dir_version(path: Path) -> int:
    match = re.search(r"/(\d+)/bin$", str(path))
    return int(match.group(1)) if match else 0


def candidate_bindirs() -> list[Path]:
    """Every directory holding PostgreSQL programs, newest major version first."""
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_dir_version, reverse=True)
    for program in ("pg_ctl", "pg_dump", "psql"):
        found = shutil.which(program)
        if found:
            dirs.append(Path(found).resolve().parent)
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def find_bindir(*programs: str) -> Path:
    """The newest directory holding all of `programs`; the error says how to install them."""
    for d in candidate_bindirs():
        if all((d / p).exists() for p in programs):
            return d
    raise MissingBinaries(
        f"PostgreSQL programs not found: {', '.join(programs)}. Install them with "
        "`apt-get install postgresql` (Debian/Ubuntu) or put their directory on PATH"
    )


@functools.lru_cache(maxsize=None)
def tool_major(path: Path) -> int:
    """The major version a program reports (`pg_dump (PostgreSQL) 16.2` → 16)."""
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else 0


def client_bindir(newest_server_major: int, configured: str | None = None) -> Path:
    """The directory whose pg_dump/pg_restore/psql can handle every server involved."""
    need = ", ".join(CLIENT_TOOLS)
    if configured:
        d = Path(configured)
        if not all((d / t).exists() for t in CLIENT_TOOLS):
            raise MissingBinaries(f"[migration] pg_bindir = {configured} does not hold {need}")
        found = tool_major(d / "pg_dump")
        if found < newest_server_major:
            raise MissingBinaries(
                f"pg_dump {found} in {configured} is older than the newest server involved "
                f"(PostgreSQL {newest_server_major}) and would refuse it: point [migration] pg_bindir at "
                f"PostgreSQL {newest_server_major}+ client programs (postgresql-client-{newest_server_major})"
            )
        return d
    usable = [d for d in candidate_bindirs() if all((d / t).exists() for t in CLIENT_TOOLS)]
    fitting = sorted(
        (d for d in usable if tool_major(d / "pg_dump") >= newest_server_major), key=lambda d: tool_major(d / "pg_dump")
    )
    if fitting:
        return fitting[0]  # the oldest that fits: closest to the servers' own versions
    listed = ", ".join(f"{tool_major(d / 'pg_dump')} ({d})" for d in usable) or "none"
    raise MissingBinaries(
        f"no PostgreSQL {newest_server_major}+ client programs found (pg_dump refuses newer servers); "
        f"found: {listed}. Install postgresql-client-{newest_server_major} or set [migration] pg_bindir"
    )
