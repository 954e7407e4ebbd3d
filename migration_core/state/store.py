"""The persistent state store: SQLite (embedded default) or PostgreSQL (several bot replicas).

It holds migrations, their steps, approvals, the audit log, provisioned servers and the journal of
every change pgmig made on a customer's server (journal.py). Every text a person will read back (a
migration's error, a step's detail and data, an audit entry) passes through `secrets.redact` on its way
in, whoever wrote it.

Both backends run the same SQL; it is written with asyncpg's `$n` placeholders, which SQLite also
understands as `?n`. Timestamps are ISO-8601 UTC text and structured fields JSON text, so a row reads
the same from either backend.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from migration_core.pg.secrets import redact
from migration_core.state.models import (
    Approval,
    AuditEntry,
    AuditPage,
    Change,
    JournalEntry,
    Mark,
    Migration,
    MigrationOptions,
    Mode,
    RetryChanges,
    State,
    Step,
    StepState,
    utcnow,
)

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

# A fenced write: only while the migration's fencing token is still the one the writer's claim got.
_HOLDS = "EXISTS (SELECT 1 FROM pgmig_migration WHERE id = $1 AND token = ${n})"


class LeaseLost(Exception):
    """A write by a process whose lease on the migration another one has taken over since (its fencing
    token is stale): refused, and the process must stop its work on that migration without another write."""

    def __init__(self, migration_id: str) -> None:
        super().__init__(f"{migration_id} was taken over by another pgmig process: this one stops its work on it")
        self.migration_id = migration_id


@dataclass(frozen=True)
class Lease:
    """A claim that succeeded: the fencing token every write under it carries, and whom it was taken from
    (another live process's stale lease; "" when it was free, ours, or our previous life's)."""

    token: int
    taken_from: str = ""


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

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            cur = await asyncio.to_thread(self._db.execute, self._sql(sql), args)
            return cur.rowcount

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self._lock:

            def run() -> list[dict[str, Any]]:
                return [dict(r) for r in self._db.execute(self._sql(sql), args).fetchall()]

            return await asyncio.to_thread(run)

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._db.close)

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


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _audit_entry(r: dict[str, Any]) -> AuditEntry:
    return AuditEntry(r["actor"], r["action"], r["detail"], r["migration_id"], r["channel"], _at(r["at"]))


def _at(value: str) -> datetime:
    """A timestamp that is always set."""
    return datetime.fromisoformat(value)


class Store:
    """Migrations, steps, approvals and audit entries; survives restarts; safe for concurrent replicas."""

    def __init__(self, backend: _Backend, url: str) -> None:
        self._db = backend
        self.url = url
        self.deployment = ""  # this state store's id: in every object name pgmig gives on a server

    @classmethod
    async def open(cls, url: str) -> "Store":
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

    async def next_migration_id(self) -> str:
        """Short typable ids (`mig-7`), allocated atomically so two replicas never share one."""
        return await self.next_id("migration", "mig")

    async def next_id(self, counter: str, prefix: str) -> str:
        rows = await self._db.fetch(
            "INSERT INTO pgmig_counter (name, value) VALUES ($1, 1) "
            "ON CONFLICT (name) DO UPDATE SET value = pgmig_counter.value + 1 RETURNING value",
            counter,
        )
        return f"{prefix}-{rows[0]['value']}"

    async def create_migration(self, m: Migration, owner: str = "") -> Migration:
        """Insert a new migration, leased to `owner` from the first moment (no other replica's recovery
        may pick up a migration its creator is still setting up)."""
        await self._db.execute(
            "INSERT INTO pgmig_migration (id, source, target, databases, mode, state, requested_by, channel, options, "
            "error, created_at, updated_at, message_channel, message_ts, owner, heartbeat, token) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,1)",
            m.id,
            m.source,
            m.target,
            json.dumps(m.databases),
            Mode(m.mode).value,
            m.state.value,
            m.requested_by,
            m.channel,
            json.dumps(m.options.as_dict()),
            m.error,
            _ts(m.created_at),
            _ts(m.updated_at),
            m.message_channel,
            m.message_ts,
            owner,
            _ts(utcnow()) if owner else "",  # a fresh lease (ISO text, as the store's clock writes it)
        )
        return m

    async def set_databases(self, migration_id: str, databases: list[str]) -> None:
        await self._db.execute(
            "UPDATE pgmig_migration SET databases = $1 WHERE id = $2", json.dumps(databases), migration_id
        )

    async def set_options(self, migration_id: str, options: MigrationOptions) -> None:
        await self._db.execute(
            "UPDATE pgmig_migration SET options = $1 WHERE id = $2", json.dumps(options.as_dict()), migration_id
        )

    async def claim(self, migration_id: str, owner: str, lease_seconds: float, previous_life: str = "") -> Lease | None:
        """Take a migration for this process unless another live one holds a fresh lease on it (atomic, on
        the store's clock); None when it does.

        Every change of holder increases the migration's fencing token: whatever the previous holder still
        writes with its token is refused (`LeaseLost`), however long it was frozen. `previous_life` is a
        prefix of owner ids that are provably this process's earlier lives (the same replica, started
        before): their leases are taken over at once, not after they go stale."""
        now, stale = self._db.clock(), self._db.clock("$3")
        rows = await self._db.fetch("SELECT owner, token FROM pgmig_migration WHERE id = $1", migration_id)
        if not rows:
            return None
        before, token = rows[0]["owner"], int(rows[0]["token"])
        claimed = await self._db.execute(
            f"UPDATE pgmig_migration SET owner = $2, heartbeat = {now}, "
            "token = CASE WHEN owner = $2 THEN token ELSE token + 1 END WHERE id = $1 AND token = $5 "
            f"AND (owner = '' OR owner = $2 OR heartbeat < {stale} "
            "OR ($4 <> '' AND substr(owner, 1, length($4)) = $4))",
            migration_id,
            owner,
            lease_seconds,
            previous_life,
            token,
        )
        if claimed != 1:
            return None
        if before == owner:
            return Lease(token)
        mine = before == "" or (previous_life != "" and before.startswith(previous_life))
        return Lease(token + 1, "" if mine else before)

    async def holds(self, migration_id: str, token: int) -> bool:
        """Whether `token` is still the migration's fencing token (nobody took it over since that claim)."""
        rows = await self._db.fetch("SELECT token FROM pgmig_migration WHERE id = $1", migration_id)
        return bool(rows) and int(rows[0]["token"]) == token

    async def take_budget(self, key: str, limit: int, window_seconds: float) -> bool:
        """One call of a rate budget shared by every replica (e.g. Slack's per-workspace limit of a Web API
        method): True when fewer than `limit` were taken in the current window and nobody was told to
        hold off; counted on the store's clock."""
        now = self._db.clock()
        await self._db.execute(f"INSERT INTO pgmig_budget VALUES ($1, {now}, 0, '') ON CONFLICT (key) DO NOTHING", key)
        await self._db.execute(
            f"UPDATE pgmig_budget SET window_start = {now}, used = 0 WHERE key = $1 "
            f"AND window_start < {self._db.clock('$2')}",
            key,
            window_seconds,
        )
        return (
            await self._db.execute(
                f"UPDATE pgmig_budget SET used = used + 1 WHERE key = $1 AND used < $2 AND held_until < {now}",
                key,
                limit,
            )
            == 1
        )

    async def hold_budget(self, key: str, seconds: float) -> None:
        """Nobody takes from the budget for `seconds` (the service said Retry-After)."""
        await self._db.execute(
            f"INSERT INTO pgmig_budget VALUES ($1, {self._db.clock()}, 0, '') ON CONFLICT (key) DO NOTHING", key
        )
        await self._db.execute(
            f"UPDATE pgmig_budget SET held_until = {self._db.clock_ahead('$2')} WHERE key = $1", key, seconds
        )

    async def owner(self, migration_id: str) -> tuple[str, datetime | None]:
        """Who holds the lease, and when it was last renewed."""
        rows = await self._db.fetch("SELECT owner, heartbeat FROM pgmig_migration WHERE id = $1", migration_id)
        return (rows[0]["owner"], _dt(rows[0]["heartbeat"])) if rows else ("", None)

    async def lease_alive(self, migration_id: str, lease_seconds: float) -> str:
        """The owner of a fresh lease on the migration; "" when nobody (alive) holds it."""
        rows = await self._db.fetch(
            f"SELECT owner FROM pgmig_migration WHERE id = $1 AND owner <> '' AND heartbeat >= {self._db.clock('$2')}",
            migration_id,
            lease_seconds,
        )
        return rows[0]["owner"] if rows else ""

    async def release(self, owner: str) -> None:
        """A clean shutdown: other replicas (or this one restarted) may pick the work up at once."""
        for table in ("pgmig_migration", "pgmig_provision"):
            await self._db.execute(f"UPDATE {table} SET owner = '' WHERE owner = $1", owner)

    async def let_go(self, migration_id: str, owner: str) -> None:
        """Give back one migration's lease (held only for a moment)."""
        await self._db.execute(
            "UPDATE pgmig_migration SET owner = '' WHERE id = $1 AND owner = $2", migration_id, owner
        )

    async def beat(self, owner: str) -> None:
        """Renew the lease on everything this process holds."""
        for table in ("pgmig_migration", "pgmig_provision"):
            await self._db.execute(f"UPDATE {table} SET heartbeat = {self._db.clock()} WHERE owner = $1", owner)

    # ---- commands for the replica that holds the work, and deliveries seen ---------------------

    async def enqueue(self, cid: str, subject: str, kind: str, actor: str, args: dict[str, Any]) -> None:
        await self._db.execute(
            "INSERT INTO pgmig_command VALUES ($1,$2,$3,$4,$5,'queued','',$6,$6)",
            cid,
            subject,
            kind,
            actor,
            json.dumps(args),
            _ts(utcnow()),
        )

    async def commands_for(self, owner: str) -> list[dict[str, Any]]:
        """Queued commands on work this process holds, oldest first."""
        rows = await self._db.fetch(
            "SELECT c.* FROM pgmig_command c JOIN pgmig_migration m ON m.id = c.subject "
            "WHERE c.state = 'queued' AND m.owner = $1 ORDER BY c.created_at",
            owner,
        )
        return [{**r, "args": json.loads(r["args"])} for r in rows]

    async def take_command(self, cid: str) -> bool:
        """Queued → running, for one process only."""
        return (
            await self._db.execute(
                "UPDATE pgmig_command SET state = 'running', updated_at = $2 WHERE id = $1 AND state = 'queued'",
                cid,
                _ts(utcnow()),
            )
            == 1
        )

    async def finish_command(self, cid: str, result: dict[str, Any]) -> None:
        await self._db.execute(
            "UPDATE pgmig_command SET state = 'done', result = $2, updated_at = $3 WHERE id = $1",
            cid,
            redact(json.dumps(result)),
            _ts(utcnow()),
        )

    async def command(self, cid: str) -> dict[str, Any] | None:
        rows = await self._db.fetch("SELECT * FROM pgmig_command WHERE id = $1", cid)
        if not rows:
            return None
        r = rows[0]
        return {**r, "args": json.loads(r["args"]), "result": json.loads(r["result"]) if r["result"] else None}

    async def listen(self, channel: str, wake: Callable[[], object]) -> None:
        """Call `wake` whenever another replica notifies `channel` (PostgreSQL stores only)."""
        await self._db.listen(channel, wake)

    async def notify(self, channel: str) -> None:
        await self._db.notify(channel)

    async def first_delivery(self, key: str) -> bool:
        """Whether this is the first time a Slack delivery (action id + action_ts + user) is seen."""
        return (
            await self._db.execute(
                "INSERT INTO pgmig_delivery VALUES ($1,$2) ON CONFLICT (key) DO NOTHING", key, _ts(utcnow())
            )
            == 1
        )

    async def set_message(self, migration_id: str, channel: str, ts: str) -> None:
        """Remember the live message so that every later update edits it in place, across restarts."""
        await self._db.execute(
            "UPDATE pgmig_migration SET message_channel = $1, message_ts = $2 WHERE id = $3", channel, ts, migration_id
        )

    async def get_migration(self, migration_id: str) -> Migration | None:
        rows = await self._db.fetch("SELECT * FROM pgmig_migration WHERE id = $1", migration_id)
        return self._migration(rows[0]) if rows else None

    async def list_migrations(self, active_only: bool = False) -> list[Migration]:
        rows = await self._db.fetch("SELECT * FROM pgmig_migration ORDER BY created_at, id")
        found = [self._migration(r) for r in rows]
        return [m for m in found if not m.state.finished] if active_only else found

    async def transition(
        self,
        migration_id: str,
        to: State,
        *,
        expect: tuple[State, ...] = (),
        error: str = "",
        round: str = "",
        retry_with: RetryChanges | None = None,
        token: int | None = None,
    ) -> bool:
        """Move to `to` only if the migration is in one of `expect` (any state when empty) and, with a
        `token`, only if that is still the migration's fencing token.

        The conditional UPDATE is what makes double clicks and racing replicas harmless. `round` is the
        approval round a move to awaiting_approval opens; any other move closes it. `retry_with` goes with
        a failure (what its fix asks a retry to change); any other move clears it.
        """
        sql = (
            "UPDATE pgmig_migration SET state = $1, error = $2, updated_at = $3, round = $4, retry_with = $5 "
            "WHERE id = $6"
        )
        retry = json.dumps((retry_with or RetryChanges()).to_dict())
        args: list[Any] = [to.value, redact(error), _ts(utcnow()), round, retry, migration_id]
        if token is not None:
            args.append(token)
            sql += f" AND token = ${len(args)}"
        if expect:
            marks = ",".join(f"${i}" for i in range(len(args) + 1, len(args) + 1 + len(expect)))
            sql += f" AND state IN ({marks})"
            args += [s.value for s in expect]
        return await self._db.execute(sql, *args) == 1

    async def save_step(self, step: Step, token: int | None = None) -> None:
        """Insert or update a step; with a `token`, only while it is the migration's fencing token."""
        fenced = f"WHERE {_HOLDS.format(n=8)} " if token is not None else "WHERE true "
        saved = await self._db.execute(
            f"INSERT INTO pgmig_step SELECT $1,$2,$3,$4,$5,$6,$7 {fenced}ON CONFLICT (migration_id, name) DO UPDATE "
            "SET state = excluded.state, detail = excluded.detail, started_at = excluded.started_at, "
            "finished_at = excluded.finished_at, data = excluded.data",
            step.migration_id,
            step.name,
            step.state,
            redact(step.detail),
            _ts(step.started_at),
            _ts(step.finished_at),
            redact(json.dumps(step.data)),
            *([token] if token is not None else []),
        )
        if saved != 1:
            raise LeaseLost(step.migration_id)

    async def steps(self, migration_id: str) -> list[Step]:
        rows = await self._db.fetch(
            "SELECT * FROM pgmig_step WHERE migration_id = $1 ORDER BY COALESCE(started_at, ''), name", migration_id
        )
        return [self._step(r) for r in rows]

    async def steps_named(self, name: str) -> list[Step]:
        """One kind of step across every migration or request (e.g. every `provision`)."""
        rows = await self._db.fetch("SELECT * FROM pgmig_step WHERE name = $1 ORDER BY migration_id", name)
        return [self._step(r) for r in rows]

    async def step(self, migration_id: str, name: str) -> Step | None:
        return next((s for s in await self.steps(migration_id) if s.name == name), None)

    async def add_approval(self, a: Approval) -> bool:
        """Record one decision per person per round, only while that round is open (the migration awaits
        approval in it, or the provisioning request waits in it); False for a repeated click or a closed
        round — in one statement, so no decision can slip in after another closed the round."""
        return (
            await self._db.execute(
                "INSERT INTO pgmig_approval SELECT $1,$2,$3,$4,$5,$6 WHERE "
                "EXISTS (SELECT 1 FROM pgmig_migration WHERE id = $1 AND state = 'awaiting_approval' AND round = $6) "
                "OR EXISTS (SELECT 1 FROM pgmig_provision WHERE id = $1 AND state = 'waiting' AND round = $6) "
                "ON CONFLICT (migration_id, round, approver) DO NOTHING",
                a.migration_id,
                a.approver,
                a.decision,
                a.reason,
                _ts(a.at),
                a.round,
            )
            == 1
        )

    async def approvals(self, migration_id: str, round: str | None = None) -> list[Approval]:
        rows = await self._db.fetch("SELECT * FROM pgmig_approval WHERE migration_id = $1 ORDER BY at", migration_id)
        found = [
            Approval(r["migration_id"], r["approver"], r["decision"], r["reason"], _at(r["at"]), r["round"])
            for r in rows
        ]
        return [a for a in found if round is None or a.round == round]

    async def audit(self, e: AuditEntry) -> None:
        await self._db.execute(
            "INSERT INTO pgmig_audit VALUES ($1,$2,$3,$4,$5,$6)",
            _ts(e.at),
            e.actor,
            e.action,
            redact(e.detail),
            e.migration_id,
            e.channel,
        )

    async def audit_log(self, migration_id: str | None = None, limit: int = 200) -> list[AuditEntry]:
        where, args = ("WHERE migration_id = $2", [limit, migration_id]) if migration_id else ("", [limit])
        rows = await self._db.fetch(f"SELECT * FROM pgmig_audit {where} ORDER BY at DESC LIMIT $1", *args)
        return [_audit_entry(r) for r in reversed(rows)]

    async def audit_page(self, subject: str, page: int = 1, size: int = 50, everything: bool = False) -> AuditPage:
        """A page of what was done to `subject`, read-only commands left out (and counted) unless
        `everything`: a script polling `status` must not push the decisions out of sight."""
        counts = await self._db.fetch(
            "SELECT count(*) AS total, coalesce(sum(CASE WHEN action = $2 THEN 1 ELSE 0 END), 0) AS reads "
            "FROM pgmig_audit WHERE migration_id = $1",
            subject,
            AuditEntry.READ_ONLY,
        )
        total, reads = int(counts[0]["total"]), int(counts[0]["reads"])
        shown = total if everything else total - reads
        rows = await self._db.fetch(
            "SELECT * FROM pgmig_audit WHERE migration_id = $1 AND ($2 OR action <> $3) "
            "ORDER BY at DESC LIMIT $4 OFFSET $5",
            subject,
            everything,
            AuditEntry.READ_ONLY,
            size,
            (page - 1) * size,
        )
        return AuditPage(
            [_audit_entry(r) for r in reversed(rows)], page, max(1, -(-shown // size)), 0 if everything else reads
        )

    async def save_server(self, name: str, data: dict[str, Any], created_by: str) -> None:
        """A server pgmig provisioned, usable as a migration target across restarts (no secret in `data`)."""
        await self._db.execute(
            "INSERT INTO pgmig_server VALUES ($1,$2,$3,$4) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            name,
            json.dumps(data),
            created_by,
            _ts(utcnow()),
        )

    async def saved_servers(self) -> dict[str, dict[str, Any]]:
        return {
            r["name"]: json.loads(r["data"]) for r in await self._db.fetch("SELECT * FROM pgmig_server ORDER BY name")
        }

    async def save_provision(
        self, pid: str, state: str, data: dict[str, Any], round: str = "", expect: tuple[str, ...] = ()
    ) -> bool:
        """A provisioning request (`prov-N`; its lifecycle is azure/provisioning.py's). With `expect` only if
        it is in one of those states (two approvers, two replicas: one wins), else created or replaced."""
        args: list[Any] = [pid, state, redact(json.dumps(data)), _ts(utcnow()), round]
        if not expect:
            return (
                await self._db.execute(
                    "INSERT INTO pgmig_provision (id, state, data, updated_at, round) VALUES ($1,$2,$3,$4,$5) "
                    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data, "
                    "updated_at = excluded.updated_at, round = excluded.round",
                    *args,
                )
                == 1
            )
        marks = ",".join(f"${i}" for i in range(6, 6 + len(expect)))
        return (
            await self._db.execute(
                f"UPDATE pgmig_provision SET state = $2, data = $3, updated_at = $4, round = $5 WHERE id = $1 "
                f"AND state IN ({marks})",
                *args,
                *expect,
            )
            == 1
        )

    async def claim_provision(self, pid: str, owner: str, lease_seconds: float, previous_life: str = "") -> bool:
        """The one process that runs a provisioning request (the same rules as a migration's lease)."""
        now, stale = self._db.clock(), self._db.clock("$3")
        return (
            await self._db.execute(
                f"UPDATE pgmig_provision SET owner = $2, heartbeat = {now} WHERE id = $1 "
                f"AND (owner = '' OR owner = $2 OR heartbeat < {stale} "
                "OR ($4 <> '' AND substr(owner, 1, length($4)) = $4))",
                pid,
                owner,
                lease_seconds,
                previous_life,
            )
            == 1
        )

    async def provision(self, pid: str) -> dict[str, Any] | None:
        rows = await self._db.fetch("SELECT data FROM pgmig_provision WHERE id = $1", pid)
        return json.loads(rows[0]["data"]) if rows else None

    async def provisions(self) -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in await self._db.fetch("SELECT data FROM pgmig_provision ORDER BY id")]

    async def save_journal(self, e: JournalEntry, token: int | None = None) -> None:
        """Insert or update a journal entry; with a `token`, only while it is the migration's fencing token
        (the entry is written before the change it records, so a refused entry means no change)."""
        fenced = f"WHERE {_HOLDS.format(n=10)} " if token is not None else "WHERE true "
        saved = await self._db.execute(
            f"INSERT INTO pgmig_journal SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9 {fenced}"
            "ON CONFLICT (migration_id, kind, server, database, name) DO UPDATE SET mark = excluded.mark, "
            "data = excluded.data, updated_at = excluded.updated_at",
            e.migration_id,
            e.kind.value,
            e.server,
            e.database,
            e.name,
            e.mark.value,
            json.dumps(e.data),
            _ts(e.at),
            _ts(e.updated_at),
            *([token] if token is not None else []),
        )
        if saved != 1:
            raise LeaseLost(e.migration_id)

    async def journal(self, migration_id: str | None = None) -> list[JournalEntry]:
        """One migration's journal in the order the changes were planned (every migration's with None)."""
        where, args = ("WHERE migration_id = $1", [migration_id]) if migration_id else ("", [])
        rows = await self._db.fetch(f"SELECT * FROM pgmig_journal {where} ORDER BY at, kind, database, name", *args)
        return [
            JournalEntry(
                r["migration_id"],
                Change(r["kind"]),
                r["server"],
                r["database"],
                r["name"],
                Mark(r["mark"]),
                json.loads(r["data"]),
                _at(r["at"]),
                _at(r["updated_at"]),
            )
            for r in rows
        ]

    @staticmethod
    def _step(r: dict[str, Any]) -> Step:
        return Step(
            r["migration_id"],
            r["name"],
            StepState(r["state"]),
            r["detail"],
            _dt(r["started_at"]),
            _dt(r["finished_at"]),
            json.loads(r["data"]),
        )

    @staticmethod
    def _migration(r: dict[str, Any]) -> Migration:
        return Migration(
            id=r["id"],
            source=r["source"],
            target=r["target"],
            databases=json.loads(r["databases"]),
            mode=Mode(r["mode"]),
            state=State(r["state"]),
            requested_by=r["requested_by"],
            channel=r["channel"],
            options=MigrationOptions.from_dict(json.loads(r["options"])),
            error=r["error"],
            created_at=_at(r["created_at"]),
            updated_at=_at(r["updated_at"]),
            message_channel=r["message_channel"],
            message_ts=r["message_ts"],
            retry_with=RetryChanges.from_dict(json.loads(r["retry_with"])),
        )
