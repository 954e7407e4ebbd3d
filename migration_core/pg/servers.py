"""Configured servers: connection parameters, secrets from the environment, readable failures."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from migration_core.pg import secrets

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6  # a vanished peer is noticed within 2 minutes
# The server probes pgmig too, so a pgmig that vanished mid-COPY does not hold its locks and snapshot for hours.
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
    "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
    "tcp_keepalives_count": str(KEEPALIVE_COUNT),
}


class ConnectionProblem(Exception):
    """A server could not be reached or logged into; ``str()`` is one readable line, ``fix`` says what to do."""

    def __init__(self, server: str, message: str, fix: str = "", missing_database: bool = False) -> None:
        super().__init__(secrets.redact(f"{server}: {message}"))
        self.server = server
        self.message = secrets.redact(message)
        self.fix = secrets.redact(fix)
        self.missing_database = missing_database  # the server answered: that database does not exist


@dataclass(frozen=True)
class ServerConfig:
    """One `[servers.NAME]` entry. The password is never stored here, only where to find it."""

    name: str
    host: str
    port: int = 5432
    user: str = "postgres"
    password_env: str | None = None
    password_file: str | None = None
    sslmode: str = "prefer"
    database: str = "postgres"
    connect_timeout: float = 10.0
    query_timeout: float = 60.0  # control queries (catalog reads, pings); work on data is bounded by progress
    replication_host: str | None = None  # how the target reaches this server, when not as pgmig does
    replication_port: int | None = None
    azure_resource_group: str | None = None  # an Azure flexible server: where it lives, for the Azure commands
    azure_server: str | None = None  # and backends (default: the host's first label)
    azure_runtime_server: str | None = None  # flex backend: the runtime server (resource id) for private networks

    @property
    def azure_name(self) -> str | None:
        """The flexible server's resource name, when this entry is one."""
        if not self.azure_resource_group:
            return None
        return self.azure_server or self.host.split(".", 1)[0]

    def as_dict(self) -> dict:
        """What the state store keeps for a server pgmig provisioned (no secret: only where it is)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def password(self) -> str | None:
        """Read the password from the named env var or file; a named but missing source is an error."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConnectionProblem(
                    self.name,
                    f"the password environment variable {self.password_env} is not set",
                    f"export {self.password_env}=… in the environment pgmig runs in",
                )
            secrets.register(value)
            return value
        if self.password_file:
            try:
                value = Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ConnectionProblem(
                    self.name,
                    f"cannot read password_file {self.password_file}: {exc.strerror}",
                    "check the path and that pgmig may read it",
                ) from None
            secrets.register(value)
            return value
        return None

    def _login(self, database: str) -> dict[str, Any]:
        """What every connection and pool of this server is opened with (the password read now)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password(),
            "database": database,
            "ssl": self.sslmode,
            "timeout": self.connect_timeout,
        }

    async def connect(self, database: str | None = None, *, data: bool = False) -> asyncpg.Connection:
        """Open a connection, turning every failure into a :class:`ConnectionProblem`.

        A control connection bounds each statement by `query_timeout`. A `data` connection (COPY,
        VALIDATE, REFRESH, ANALYZE, checksums, large objects) has no time limit: such work may rightly
        run for hours, and is watched for progress instead; TCP keepalives notice a peer that vanished.
        It renders values as RENDERING says, whatever the server's or the database's defaults."""
        dbname = database or self.database
        login = self._login(dbname)
        lifted = self.unbounded()
        try:
            conn = await asyncpg.connect(
                **login,
                command_timeout=None if data else self.query_timeout,
                server_settings={**SESSION, **lifted, **RENDERING} if data else {**SESSION, **lifted},
            )
        except Exception as exc:  # every driver/socket failure becomes one readable line
            raise self.explain(exc, dbname) from None
        keep_alive(conn)
        try:
            await self._lift_the_rest(conn, lifted)
        except Exception as exc:
            conn.terminate()
            raise self.explain(exc, dbname) from None
        return conn

    def unbounded(self) -> dict[str, str]:
        """The customer's limits pgmig's sessions on this server lift at login, as far as its version is known."""
        return unbounded(_versions.get((self.host, self.port)))

    async def _lift_the_rest(self, conn: asyncpg.Connection, lifted: dict[str, str]) -> None:
        """Remember the server's version; on a first login, lift what the login could not name yet."""
        version = conn.get_server_version()
        _versions[(self.host, self.port)] = (version.major, version.minor)
        rest = [name for name in self.unbounded() if name not in lifted]
        if rest:
            await conn.execute("; ".join(f"SET {name} = 0" for name in rest))

    async def version(self, database: str | None = None) -> tuple[int, int]:
        """The server's (major, minor) as its last login here said; a login to ask when none did yet."""
        if (self.host, self.port) not in _versions:
            await (await self.connect(database)).close()
        return _versions[(self.host, self.port)]

    async def pool(self, database: str, size: int, settings: dict[str, str] | None = None) -> asyncpg.Pool:
        """Up to `size` data connections (no time limit, keepalives, RENDERING), with `settings` for each session."""
        await self.version(database)  # each release runs RESET ALL, which undoes a SET: log in knowing the version
        login = self._login(database)
        try:
            return await asyncpg.create_pool(
                **login,
                min_size=1,
                max_size=size,
                command_timeout=None,
                server_settings={**SESSION, **self.unbounded(), **RENDERING, **(settings or {})},
                init=_init_pooled,
            )
        except Exception as exc:
            raise self.explain(exc, database) from None

    @asynccontextmanager
    async def connection(self, database: str | None = None, *, data: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """`async with server.connection(db) as conn:` a connection closed however the block ends."""
        conn = await self.connect(database, data=data)
        try:
            yield conn
        finally:
            await conn.close()

    def explain(self, exc: BaseException, dbname: str) -> ConnectionProblem:
        """Translate a driver or socket exception into what a person can act on."""
        where = f"{self.address}"
        if isinstance(exc, socket.gaierror):
            return ConnectionProblem(
                self.name,
                f"cannot resolve host '{self.host}' (DNS lookup failed)",
                f"check `host` in [servers.{self.name}] and this machine's DNS",
            )
        if isinstance(exc, ConnectionRefusedError):
            return ConnectionProblem(
                self.name,
                f"connection refused at {where}",
                "is PostgreSQL running and listening there? check `listen_addresses`, the port and firewalls",
            )
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return ConnectionProblem(
                self.name,
                f"no answer from {where} within {self.connect_timeout:g} s",
                "check the network path and firewall rules (on Azure: the server's firewall rules)",
            )
        if isinstance(exc, asyncpg.InvalidPasswordError):
            source = (
                f"env var {self.password_env}"
                if self.password_env
                else (f"file {self.password_file}" if self.password_file else "the server's config (no password set)")
            )
            return ConnectionProblem(
                self.name,
                f"password authentication failed for user '{self.user}'",
                f"check the password in {source}",
            )
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return ConnectionProblem(
                self.name,
                f"the server refused the login: {exc}",
                "add a pg_hba.conf entry for this client (or set sslmode=require if only hostssl entries exist)",
            )
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return ConnectionProblem(
                self.name,
                f"database '{dbname}' does not exist on {where}",
                "check the database name (`/pgmig check … --db`) or `database` in the server's config",
                missing_database=True,
            )
        if isinstance(exc, asyncpg.TooManyConnectionsError):
            return ConnectionProblem(
                self.name,
                f"too many connections: {exc}",
                "free connections or raise max_connections on the server",
            )
        if isinstance(exc, asyncpg.CannotConnectNowError):
            return ConnectionProblem(
                self.name,
                f"the server is not accepting connections: {exc}",
                "wait for it to finish starting up or recovering",
            )
        if isinstance(exc, ssl.SSLError) or "ssl" in str(exc).lower():
            return ConnectionProblem(
                self.name,
                f"SSL negotiation failed with {where}: {exc}",
                f"check `sslmode` (now '{self.sslmode}') against the server's ssl setting and certificates",
            )
        if isinstance(exc, asyncpg.PostgresError):
            return ConnectionProblem(self.name, f"{exc}", "")
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
            return ConnectionProblem(
                self.name, f"cannot connect to {where}: {reason}", "check host, port and the network path"
            )
        return ConnectionProblem(self.name, f"cannot connect to {where}: {type(exc).__name__}: {exc}")


# How data sessions write values as text, on both servers alike: what a COPY stream carries must read back
# as the same values on the other side (a source database with DateStyle 'SQL, DMY' would otherwise send
# 01/02/2024 for 1 February to a target reading it as 2 January; extra_float_digits 3 keeps every bit of a
# float on servers older than 12), and a value rendered by both servers must give the same text to compare.
RENDERING = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "TimeZone": "UTC",
}

# pgmig's own sessions: recognisable, never bound by the write fence pgmig sets itself, probed by the server
SESSION = {"application_name": "pgmig", "default_transaction_read_only": "off", **SERVER_KEEPALIVES}

# The customer's limits are for the customer's sessions. A statement_timeout set on a database or a role would
# cancel a COPY that rightly takes hours, an idle timeout end the session holding the snapshot the copy reads
# under, a lock_timeout fail DDL that would have waited its turn. A setting sent at login outranks the
# database's and the role's, and a SET of pgmig's own (the cutover's lock_timeout) still outranks it. Each
# comes with the first version that knows it: a setting the server does not know refuses the login.
LIMITS = (
    ("statement_timeout", (0, 0)),
    ("lock_timeout", (0, 0)),
    ("idle_in_transaction_session_timeout", (9, 6)),
    ("idle_session_timeout", (14, 0)),
    ("transaction_timeout", (17, 0)),
)
_versions: dict[tuple[str, int], tuple[int, int]] = {}  # (host, port) → (major, minor), as its last login said


def unbounded(version: tuple[int, int] | None) -> dict[str, str]:
    """Every limit a server of `version` knows, lifted (an unknown version: those every version knows)."""
    return {name: "0" for name, since in LIMITS if since <= (version or (0, 0))}


def keep_alive(conn: asyncpg.Connection) -> None:
    """Client-side TCP keepalives, so a long statement on a peer that vanished fails instead of waiting forever.
    asyncpg has no option for it: set them on its socket."""
    sock = conn._transport.get_extra_info("socket") if conn._transport else None  # noqa: SLF001
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: the peer is this machine
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):  # Linux has all three; macOS names TCP_KEEPIDLE differently
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _init_pooled(conn: asyncpg.Connection) -> None:
    keep_alive(conn)


async def server_major(server: ServerConfig) -> int:
    """The server's PostgreSQL major version (16 for 16.4), without a login when one told it already."""
    return (await server.version())[0]


async def column_per_database(server: ServerConfig, databases: list[str], sql: str) -> dict[str, list]:
    """The first column of `sql` run in each database: facts that live per database (slots, extensions)."""
    found: dict[str, list] = {}
    for db in databases:
        async with server.connection(db) as conn:
            found[db] = [r[0] for r in await conn.fetch(sql)]
    return found


async def user_databases(server: ServerConfig, skipped: set[str]) -> list[tuple[str, int]]:
    """The databases a migration can take from `server` (none of `skipped`), each with its size in bytes."""
    async with server.connection() as conn:
        rows = await conn.fetch(
            "SELECT datname, pg_database_size(oid) AS size FROM pg_database "
            "WHERE NOT datistemplate AND datallowconn AND has_database_privilege(datname, 'CONNECT') ORDER BY 1"
        )
    return [(r["datname"], r["size"]) for r in rows if r["datname"] not in skipped]
