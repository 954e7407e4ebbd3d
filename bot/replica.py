"""This replica's stable identity, so a restarted pgmig recognises the leases of its previous life and
carries their migrations on at once instead of waiting for them to go stale.

`PGMIG_REPLICA_ID` names it (give each replica its own, e.g. the pod name of a StatefulSet); without it
the id is kept in `$PGMIG_HOME/replica-id`, created on the first start. A lock on that file, held for
the process's life, makes sure two live processes never share an id (the second gets a fresh one and
behaves as another replica): a lease is only "my previous life's" when that life is provably over.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
_held: list[IO[str]] = []  # the lock lives as long as the process


def replica_id(home: Path, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    if env.get("PGMIG_REPLICA_ID"):
        return env["PGMIG_REPLICA_ID"]
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / "replica-id.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        fresh = uuid.uuid4().hex[:12]
        log.warning("another pgmig runs on %s: this one is replica %s", home, fresh)
        return fresh
    _held.append(lock)
    path = home / "replica-id"
    if not path.exists():
        path.write_text(uuid.uuid4().hex[:12] + "\n")
    return path.read_text().strip()
