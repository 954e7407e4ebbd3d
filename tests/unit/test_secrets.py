"""Secrets never reach logs, tracebacks included."""

from __future__ import annotations

import io
import logging

from migration_core.pg import secrets


def test_log_records_and_their_tracebacks_are_masked():
    secrets.register("hunter2-Secret")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(secrets.RedactingFilter())
    log = logging.getLogger("pgmig.test.secrets")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError("login failed with password hunter2-Secret")
        except RuntimeError:
            log.exception("connecting to postgresql://app:hunter2-Secret@db.internal/x failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "hunter2-Secret" not in text
    assert "postgresql://app:********@db.internal/x" in text and "RuntimeError: login failed" in text
