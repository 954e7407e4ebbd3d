"""Turning any exception a migration step raises into one readable reason for the channel."""

from __future__ import annotations

import logging

import asyncpg

from migration_core.errors import MigrationError
from migration_core.models import RetryChanges
from migration_core.secrets import redact
from migration_core.servers import ConnectionProblem

log = logging.getLogger(__name__)


def first_cause(exc: BaseException) -> BaseException:
    """Parallel work fails as an exception group, whose first cause is the story."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failure_retry(exc: BaseException) -> RetryChanges:
    """The options a retry needs to get past this failure (none when the fix is elsewhere)."""
    cause = first_cause(exc)
    return cause.retry if isinstance(cause, MigrationError) else RetryChanges()


def failure_reason(exc: BaseException, migration_id: str) -> str:
    exc = first_cause(exc)
    if isinstance(exc, MigrationError):
        return str(exc)
    if isinstance(exc, ConnectionProblem):
        return f"{exc}" + (f" — fix: {exc.fix}" if exc.fix else "")
    if isinstance(exc, asyncpg.PostgresError):
        return f"the server said: {exc}"
    log.error("migration %s failed unexpectedly", migration_id, exc_info=exc)
    return redact(f"{type(exc).__name__}: {exc}")
