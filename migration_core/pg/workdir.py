"""Where a migration keeps its files (export archives, SQL files): `WORKDIR/mig-N/<database>/`.

A database's folder name is a safe encoding of its name — letters, digits, `_` and `-` kept, anything
else (`/`, `..`, spaces, quotes, unicode) replaced, plus a digest of the real name so two names never
share a folder — so no name can reach outside its migration's folder. Folders are created 0700 (and
the tools write with umask 077, tools.py), so only pgmig's user can read what they hold.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path


def database_dir(migration_dir: Path, database: str) -> Path:
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", database)[:40] or "_"
    return migration_dir / f"{clean}-{hashlib.sha256(database.encode()).hexdigest()[:8]}"


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents, each readable by pgmig's user only."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700)
        os.chmod(p, 0o700)  # mkdir's mode is cut by the umask; this is exact
    return path


def remove(path: Path) -> None:
    """Blocking: run it off the event loop (an export may be gigabytes)."""
    shutil.rmtree(path, ignore_errors=True)
