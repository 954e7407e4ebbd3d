"""Named points where a test may have pgmig die, to prove that every state recovers.

`PGMIG_KILL_AT=fence:shop,release` makes the process SIGKILL itself the moment it reaches one of those
points (a journal entry planned is `plan-KIND:DATABASE`, marked done `KIND:DATABASE`, its undo
`undo-KIND:DATABASE`, a finished step `step:NAME`; an extension created before its entry says so
`create-extension:DATABASE`; an Azure change made and not yet marked done `made-KIND:DATABASE`; a
table captured by schema-change capture added to the publication `ddl-published:DATABASE`). Nothing
is cleaned up, exactly as when the machine loses power. Unset, this costs one environment lookup per
point.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "PGMIG_KILL_AT"
log = logging.getLogger(__name__)


def reached(point: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted and point in wanted.split(","):
        log.warning("failpoint %s reached: killing pgmig (%s)", point, ENV)
        os.kill(os.getpid(), signal.SIGKILL)
