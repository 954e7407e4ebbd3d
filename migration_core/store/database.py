"""The connection to the state store and what every table group shares: opening SQLite (embedded default) or
PostgreSQL (several bot replicas), the dialect differences between them, the schema and its upgrades, and
the timestamp helpers.

Both backends run the same SQL; it is written with asyncpg's `$n` placeholders, which SQLite also
understands as `?n`. Timestamps are ISO-8601 UTC text and structured fields JSON text, so a row reads
the same from either backend.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import asyncpg

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS pgmig_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pgmig_migration (
        id TEXT PRIMARY KEY, source TEXT NOT NULL, target TEXT NOT NULL, databases TEXT NOT NULL,
        mode TEXT NOT NULL, state TEXT NOT NULL, requested_by TEXT NOT NULL, channel TEXT NOT NULL,
        options TEXT NOT NULL, error TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        message_channel TEXT NOT NULL DEFAULT '', message_ts TEXT NOT NULL DEFAULT '',
        owner TEXT NOT NULL DEFAULT '', heartbeat TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS pgmig_step (
        migration_id TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL,
        started_at TEXT, finished_at TEXT, data TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (migration_id, name))""",
    """CREATE TABLE IF NOT EXISTS pgmig_approval (
        migration_id TEXT NOT NULL, approver TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL,
        at TEXT NOT NULL, round TEXT NOT NULL DEFAULT '', PRIMARY KEY (migration_id, round, approver))""",
    """CREATE TABLE IF NOT EXISTS pgmig_audit (
        at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL,
        migration_id TEXT NOT NULL, channel TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS pgmig_audit_migration ON pgmig_audit (migration_id, at)""",
    """CREATE TABLE IF NOT EXISTS pgmig_server (name TEXT PRIMARY KEY, data TEXT NOT NULL, created_by TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pgmig_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pgmig_provision (id TEXT PRIMARY KEY, state TEXT NOT NULL, data TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pgmig_command (
        id TEXT PRIMARY KEY, subject TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL, args TEXT NOT NULL,
        state TEXT NOT NULL, result TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS pgmig_command_queued ON pgmig_command (state, subject)""",
    """CREATE TABLE IF NOT EXISTS pgmig_delivery (key TEXT PRIMARY KEY, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pgmig_budget (
        key TEXT PRIMARY KEY, window_start TEXT NOT NULL, used INTEGER NOT NULL, held_until TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pgmig_journal (
        migration_id TEXT NOT NULL, kind TEXT NOT NULL, server TEXT NOT NULL, database TEXT NOT NULL,
        name TEXT NOT NULL, mark TEXT NOT NULL, data TEXT NOT NULL, at TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (migration_id, kind, server, database, name))""",
    """CREATE TABLE IF NOT EXISTS pgmig_metric (
        migration_id TEXT NOT NULL, database TEXT NOT NULL, at TEXT NOT NULL, lag_bytes BIGINT,
        lag_seconds DOUBLE PRECISION, apply_rate DOUBLE PRECISION, wal_rate DOUBLE PRECISION, wal_held BIGINT,
        wal_limit BIGINT, copied_bytes BIGINT NOT NULL, copied_rows BIGINT NOT NULL,
        PRIMARY KEY (migration_id, database, at))""",
]


# Columns added after a table's first release (ADD COLUMN on an existing store; an error means it is there).
UPGRADES = [
    "ALTER TABLE pgmig_migration ADD COLUMN round TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE pgmig_provision ADD COLUMN round TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE pgmig_provision ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE pgmig_provision ADD COLUMN heartbeat TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE pgmig_migration ADD COLUMN retry_with TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE pgmig_migration ADD COLUMN token INTEGER NOT NULL DEFAULT 0",
]


T = TypeVar("T")


class _Backend(Protocol):
    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...
    async def listen(self, channel: str, wake: Callable[[], object]) -> None: ...
    async def notify(self, channel: str) -> None: ...
    def clock(self, seconds_ago: str | None = None) -> str:
        """SQL for the store's own clock (as ISO text), optionally minus the seconds in parameter `seconds_ago`:
        leases are compared on one clock, whichever replica's is off."""

    def clock_ahead(self, seconds: str) -> str:
        """The store's clock `seconds` (an SQL expression) from now."""


class _SQLite:
    """sqlite3 on a worker thread: every statement is short, and one lock keeps them in order. One process
    at a time uses a SQLite store, so there is nobody to notify: listen and notify do nothing."""

    def __init__(self, path: str) -> None:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(Path(path).expanduser()), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._lock = asyncio.Lock()

    @staticmethod
    def _sql(sql: str) -> str:
        return re.sub(r"\$(\d+)", r"?\1", sql)

    def clock(self, seconds_ago: str | None = None) -> str:
        shift = f", '-' || {seconds_ago} || ' seconds'" if seconds_ago else ""
        return f"strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'{shift})"

    def clock_ahead(self, seconds: str) -> str:
        return f"strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '+' || {seconds} || ' seconds')"

    async def _run(self, call: Callable[[], T]) -> T:
        """`call` on the worker thread, holding the lock until it returned even when the caller is cancelled:
        the thread cannot be stopped, and a statement still running when the next one (or `close`) began on
        the same connection from another thread crashed the process (a segmentation fault in sqlite3)."""
        async with self._lock:
            running = asyncio.ensure_future(asyncio.to_thread(call))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                while not running.done():
                    try:
                        await asyncio.wait([running])
                    except asyncio.CancelledError:
                        continue
                raise

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(lambda: self._db.execute(self._sql(sql), args).rowcount)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await self._run(lambda: [dict(r) for r in self._db.execute(self._sql(sql), args).fetchall()])

    async def close(self) -> None:
        await self._run(self._db.close)

    async def listen(self, channel: str, wake: Callable[[], object]) -> None:
        return None

    async def notify(self, channel: str) -> None:
        return None


class _Postgres:
    """A pool for statements, plus one connection kept for LISTEN (replicas wake each other with NOTIFY)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._listener: asyncpg.Connection | None = None

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._pool.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(sql, *args)]

    async def close(self) -> None:
        if self._listener is not None:
            await self._pool.release(self._listener)
        await self._pool.close()

    async def listen(self, channel: str, wake: Callable[[], object]) -> None:
        if self._listener is None:
            self._listener = await self._pool.acquire()
        await self._listener.add_listener(channel, lambda *_: wake())

    async def notify(self, channel: str) -> None:
        await self._pool.execute("SELECT pg_notify($1, '')", channel)

    def clock(self, seconds_ago: str | None = None) -> str:
        when = "clock_timestamp()" + (f" - make_interval(secs => {seconds_ago}::float8)" if seconds_ago else "")
        return f"to_char(({when}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"

    def clock_ahead(self, seconds: str) -> str:
        return self.clock(f"(0 - {seconds}::float8)")


def ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def at(value: str) -> datetime:
    """A timestamp that is always set."""
    return datetime.fromisoformat(value)


def placeholders(first: int, count: int) -> str:
    """`$first,…` for `count` parameters (an `IN (…)` list)."""
    return ",".join(f"${i}" for i in range(first, first + count))


class Database:
    """The open connection every table group's repository writes through (the base of `Store`)."""

    def __init__(self, backend: _Backend, url: str) -> None:
        self._db = backend
        self.url = url
        self.deployment = ""  # this state store's id: in every object name pgmig gives on a server

    @classmethod
    async def open(cls, url: str) -> Self:
        """`postgresql://…` opens a pool on that database; anything else is a SQLite file path."""
        if url.startswith(("postgres://", "postgresql://")):
            backend: _Backend = _Postgres(await asyncpg.create_pool(url, min_size=1, max_size=4))
        else:
            path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
            backend = _SQLite(path)
        store = cls(backend, url)
        for ddl in SCHEMA:
            await backend.execute(ddl)
        for ddl in UPGRADES:
            try:
                await backend.execute(ddl)
            except (sqlite3.OperationalError, asyncpg.DuplicateColumnError):
                pass
        await backend.execute(
            "INSERT INTO pgmig_meta VALUES ('deployment', $1) ON CONFLICT (key) DO NOTHING", secrets.token_hex(3)
        )
        store.deployment = (await backend.fetch("SELECT value FROM pgmig_meta WHERE key = 'deployment'"))[0]["value"]
        return store

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> bool:
        return bool(await self._db.fetch("SELECT 1 AS ok"))
