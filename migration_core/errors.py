"""Failures worded for the person who must act on them."""

from __future__ import annotations

from migration_core import secrets


class MigrationError(Exception):
    """A step cannot proceed; the message names what is wrong and, with ``fix``, what to do."""

    def __init__(self, message: str, fix: str = "") -> None:
        self.message = secrets.redact(message)
        self.fix = secrets.redact(fix)
        super().__init__(self.message + (f" — fix: {self.fix}" if self.fix else ""))
