"""Finds PostgreSQL binaries: Debian's versioned directories first, then PATH."""
from __future__ import annotations

import re
import shutil
from pathlib import Path


class MissingBinaries(Exception):
    pass


def _version(path: Path) -> int:
    match = re.search(r"/(\d+)/bin$", str(path))
    return int(match.group(1)) if match else 0


def candidate_bindirs() -> list[Path]:
    """Every directory holding PostgreSQL programs, newest major version first."""
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
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
        "`apt-get install postgresql` (Debian/Ubuntu) or put their directory on PATH")
