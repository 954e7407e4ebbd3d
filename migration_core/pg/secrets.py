"""Keeps secrets out of everything a person or a log reads.

Every secret pgmig learns (server passwords, tokens) is registered here once; text that leaves the
process (Slack replies, logs, a tool's stderr) passes through :func:`redact` first.
"""

from __future__ import annotations

import logging
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "********"


def register(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears."""
    if secret and len(secret) >= 3:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """Mask every registered secret and any password embedded in a connection URL."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", rf"\g<1>{MASK}@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that applies :func:`redact` to every record, tracebacks included, before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
