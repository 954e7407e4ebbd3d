"""Failures worded for the person who must act on them."""

from __future__ import annotations

from migration_core.pg import secrets
from migration_core.state.models import RetryChanges


class MigrationError(Exception):
    """A step cannot proceed; the message names what is wrong and, with ``fix``, what to do; ``retry``:
    the options a retry needs when the fix is one (a retry with `--overwrite`)."""

    def __init__(self, message: str, fix: str = "", retry: RetryChanges | None = None) -> None:
        self.message = secrets.redact(message)
        self.fix = secrets.redact(fix)
        self.retry = retry or RetryChanges()
        super().__init__(self.message + (f" — fix: {self.fix}" if self.fix else ""))
