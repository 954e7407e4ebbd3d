"""Environment + TOML config → one typed Settings object, validated at start-up.

Every problem names the offending key (`servers.onprem.port: …`). Secrets never live in the file:
servers name the environment variable (or file) that holds their password.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handlers.authz import Policy
from migration_core.azure.config import AzureConfig, from_environment
from migration_core.observe.ddl_kinds import ADDITIVE
from migration_core.pg import secrets
from migration_core.pg.servers import SSLMODES, ServerConfig
from migration_core.state.models import DEFAULT_PARALLEL

DEFAULT_CONFIG = "pgmig.toml"
DEFAULT_STATE = ".pgmig/state.sqlite"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class SettingsError(Exception):
    """A configuration problem, worded for the person who must fix the file or the environment."""


def pgmig_command() -> str:
    """How to run pgmig from here, as a person would type it: `pgmig` when that is on the PATH, else the
    program's path (`.venv/bin/pgmig` in a checkout, where `make` installed it), so every message names a
    command that exists."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    program = argv0 if argv0.name == "pgmig" else Path(sys.prefix) / "bin" / "pgmig"
    if not program.exists():
        return "pgmig"
    on_path = shutil.which("pgmig")
    if on_path and Path(on_path).resolve() == program.resolve():
        return "pgmig"
    try:
        return str(program.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(program.absolute())


@dataclass
class Settings:
    config_path: Path
    servers: dict[str, ServerConfig] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    state_url: str = DEFAULT_STATE
    port: int = 3000
    host: str = "0.0.0.0"  # where `pgmig serve` listens (HOST)
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_app_token: str = ""
    slack_api_url: str = DEFAULT_SLACK_API_URL
    home: Path = Path(".pgmig")
    migration: "MigrationSettings" = field(default_factory=lambda: MigrationSettings())
    online: "OnlineSettings" = field(default_factory=lambda: OnlineSettings())
    azure: AzureConfig = field(default_factory=AzureConfig)


@dataclass
class MigrationSettings:
    """[migration]: where export files go, which client programs to use, how often progress is posted."""

    workdir: str = ""  # default: $PGMIG_HOME/work
    pg_bindir: str | None = None  # default: the newest fitting PostgreSQL client programs found
    parallel: int = DEFAULT_PARALLEL
    progress_interval_seconds: float = 15.0
    digest: str = "off"  # off | hourly | daily (09:00 UTC)
    lease_seconds: float = 60.0  # several replicas: how long a silent owner keeps its migrations
    keep_exports: bool = False  # keep export files after a migration completes or is cancelled
    stall_seconds: float = 300.0  # a data stream that moves no byte this long has stalled
    split_table_mb: float = 1024.0  # tables larger than this are copied as ranges in parallel


@dataclass
class OnlineSettings:
    """[online]: when a streaming migration counts as ready for cutover, and when to raise the alarm."""

    ready_lag_seconds: float = 5.0
    ready_lag_mb: float = 8.0
    lag_alert_seconds: float = 60.0
    lag_alert_mb: float = 256.0
    wal_retention_alert_mb: float = 1024.0
    slot_warn_share: float = 0.5
    slot_warn_minutes: float = 60.0
    max_window_seconds: float = 0.0  # refuse a cutover whose predicted write freeze is longer; 0: no limit
    fence_grace_seconds: float = 5.0
    catch_up_timeout_seconds: float = 30.0
    verify_chunk_rows: int = 10_000  # continuous verification: rows in one key range; 0 turns it off
    require_verified_share: float = 1.0  # a cutover request waits until this share is verified while streaming
    capture_ddl: bool = True  # capture schema changes on the source and gate them on the target (issue 26)
    ddl_auto_apply: list[str] = field(default_factory=list)  # additive kinds pgmig applies without asking


_SLACK_KEYS = {
    "notify_channel": str,
    "approvers": list,
    "required_approvals": int,
    "operators": list,
    "approval_timeout_minutes": int,
}
_SERVER_KEYS = {
    "host": str,
    "port": int,
    "user": str,
    "password_env": str,
    "password_file": str,
    "sslmode": str,
    "database": str,
    "connect_timeout": (int, float),
    "query_timeout": (int, float),
    "replication_host": str,
    "replication_port": int,
    "azure_resource_group": str,
    "azure_server": str,
    "azure_runtime_server": str,
}
_MIGRATION_KEYS = {
    "workdir": str,
    "pg_bindir": str,
    "parallel": int,
    "progress_interval_seconds": (int, float),
    "digest": str,
    "lease_seconds": (int, float),
    "keep_exports": bool,
    "stall_seconds": (int, float),
    "split_table_mb": (int, float),
}
_ONLINE_KEYS = {
    k: (int, float)
    for k in (
        "ready_lag_seconds",
        "ready_lag_mb",
        "lag_alert_seconds",
        "lag_alert_mb",
        "wal_retention_alert_mb",
        "slot_warn_share",
        "slot_warn_minutes",
        "max_window_seconds",
        "fence_grace_seconds",
        "catch_up_timeout_seconds",
        "require_verified_share",
    )
} | {"verify_chunk_rows": (int,), "capture_ddl": bool, "ddl_auto_apply": list}
_AZURE_KEYS = {
    "subscription_id": str,
    "arm_endpoint": str,
    "resource_group": str,
    "region": str,
    "provision_requires_approval": bool,
    "poll_seconds": (int, float),
    "progress_seconds": (int, float),
    "dms_service": str,
    "dms_sku": str,
    "dms_subnet": str,
    "authority_host": str,
    "credential_scope": str,
    "pg_api_version": str,
    "dms_api_version": str,
    "ca_file": str,
    "admin_password_envs": list,
}
_SECTIONS = {"slack", "servers", "migration", "online", "azure"}


def _unknown(key: str, allowed: set[str] | dict, where: str) -> SettingsError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return SettingsError(f"{where}{key}: unknown key{hint}; allowed: {', '.join(sorted(allowed))}")


def _typed(table: Mapping[str, Any], schema: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in schema:
            raise _unknown(key, schema, where)
        expected = schema[key]
        if (isinstance(value, bool) != (expected is bool)) or not isinstance(value, expected):
            name = {
                str: "a string",
                int: "an integer",
                list: "a list",
                (int, float): "a number",
                bool: "true or false",
            }[expected]
            raise SettingsError(f"{where}{key}: expected {name}, got {value!r}")
        out[key] = value
    return out


def _server(name: str, table: Any) -> ServerConfig:
    where = f"servers.{name}."
    if not SERVER_NAME.match(name):
        raise SettingsError(
            f"servers.{name}: a server name is letters, digits, '-', '_' or '.', so that it can be typed in a command"
        )
    if not isinstance(table, dict):
        raise SettingsError(f"servers.{name}: expected a table of settings")
    values = _typed(table, _SERVER_KEYS, where)
    if "host" not in values:
        raise SettingsError(f"{where}host: required (the server's address)")
    for key in ("port", "replication_port"):
        if not 1 <= values.get(key, 5432) <= 65535:
            raise SettingsError(f"{where}{key}: expected 1–65535, got {values[key]}")
    if values.get("sslmode", "prefer") not in SSLMODES:
        raise SettingsError(f"{where}sslmode: expected one of {', '.join(SSLMODES)}, got {values['sslmode']!r}")
    if "password_env" in values and "password_file" in values:
        raise SettingsError(f"{where}password_env: give password_env or password_file, not both")
    for key in ("connect_timeout", "query_timeout"):
        if values.get(key, 10) <= 0:
            raise SettingsError(f"{where}{key}: expected seconds > 0")
    return ServerConfig(name=name, **values)


def _policy(table: Any) -> Policy:
    if not isinstance(table, dict):
        raise SettingsError("slack: expected a table of settings")
    values = _typed(table, _SLACK_KEYS, "slack.")
    for key in ("approvers", "operators"):
        for item in values.get(key, []):
            if not isinstance(item, str) or not re.match(r"^[USW][A-Z0-9]+$", item):
                raise SettingsError(f"slack.{key}: {item!r} is not a Slack user (U…/W…) or user-group (S…) id")
        values[key] = tuple(values.get(key, ()))
    if values.get("required_approvals", 1) < 1:
        raise SettingsError("slack.required_approvals: expected at least 1")
    if values.get("approval_timeout_minutes", 60) < 1:
        raise SettingsError("slack.approval_timeout_minutes: expected at least 1")
    return Policy(**values)


def _migration(table: Any) -> MigrationSettings:
    if not isinstance(table, dict):
        raise SettingsError("migration: expected a table of settings")
    values = _typed(table, _MIGRATION_KEYS, "migration.")
    if not 1 <= values.get("parallel", 1) <= 64:
        raise SettingsError("migration.parallel: expected 1–64")
    for key in ("progress_interval_seconds", "stall_seconds", "split_table_mb"):
        if values.get(key, 1) <= 0:
            raise SettingsError(f"migration.{key}: expected a number > 0")
    if values.get("digest", "off") not in ("off", "hourly", "daily"):
        raise SettingsError(f"migration.digest: expected off, hourly or daily, got {values['digest']!r}")
    if "pg_bindir" in values and not Path(values["pg_bindir"], "pg_dump").exists():
        raise SettingsError(f"migration.pg_bindir: no pg_dump in {values['pg_bindir']}")
    return MigrationSettings(**values)


def _online(table: Any) -> OnlineSettings:
    if not isinstance(table, dict):
        raise SettingsError("online: expected a table of settings")
    values = _typed(table, _ONLINE_KEYS, "online.")
    if unknown := [k for k in values.get("ddl_auto_apply", []) if k not in ADDITIVE]:
        raise SettingsError(f"online.ddl_auto_apply: {unknown!r} — expected kinds among {', '.join(ADDITIVE)}")
    for key, value in values.items():
        if key != "ddl_auto_apply" and value < 0:
            raise SettingsError(f"online.{key}: expected a number ≥ 0")
    if values.get("slot_warn_share", 0) > 1:
        raise SettingsError("online.slot_warn_share: expected a share of max_slot_wal_keep_size, 0–1")
    if values.get("require_verified_share", 0) > 1:
        raise SettingsError("online.require_verified_share: expected a share of the tables' rows, 0–1 (1: all)")
    return OnlineSettings(**values)


def _azure(table: Any, env: Mapping[str, str]) -> AzureConfig:
    """[azure], with AZURE_SUBSCRIPTION_ID and PGMIG_ARM_ENDPOINT from the environment on top."""
    if not isinstance(table, dict):
        raise SettingsError("azure: expected a table of settings")
    try:
        config = from_environment(_typed(table, _AZURE_KEYS, "azure."), env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if not config.arm_endpoint.startswith("https://"):
        raise SettingsError(f"azure.arm_endpoint: expected an https:// URL, got {config.arm_endpoint!r}")
    if config.poll_seconds < 0 or config.progress_seconds <= 0:
        raise SettingsError("azure.poll_seconds, azure.progress_seconds: expected seconds > 0")
    if config.ca_file and not Path(config.ca_file).exists():
        raise SettingsError(f"azure.ca_file: {config.ca_file} does not exist")
    return config


def parse_config(data: dict[str, Any]) -> tuple[dict[str, ServerConfig], Policy]:
    for section in data:
        if section not in _SECTIONS:
            raise _unknown(section, _SECTIONS, "")
    servers_table = data.get("servers", {})
    if not isinstance(servers_table, dict):
        raise SettingsError("servers: expected tables like [servers.NAME]")
    servers = {name: _server(name, table) for name, table in servers_table.items()}
    policy = _policy(data.get("slack", {}))
    return servers, policy


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read PGMIG_CONFIG (default ./pgmig.toml) and the environment; raise SettingsError on any problem."""
    env = os.environ if env is None else env
    path = Path(env.get("PGMIG_CONFIG") or DEFAULT_CONFIG)
    if not path.exists():
        raise SettingsError(
            f"config file {path} not found: `{pgmig_command()} init` writes a commented one (with the local "
            "sandbox's servers while it runs), or set PGMIG_CONFIG to yours; without Slack, `make run` needs no "
            "config (it opens the shell on the sandbox)"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        servers, policy = parse_config(data)
        migration = _migration(data.get("migration", {}))
        online = _online(data.get("online", {}))
        azure = _azure(data.get("azure", {}), env)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    home = Path(env.get("PGMIG_HOME") or ".pgmig")
    if not migration.workdir:
        migration.workdir = str(home / "work")
    try:
        port = int(env.get("PORT", "3000"))
    except ValueError:
        raise SettingsError(f"PORT: expected a number, got {env.get('PORT')!r}") from None
    settings = Settings(
        config_path=path,
        servers=servers,
        policy=policy,
        state_url=env.get("PGMIG_STATE") or DEFAULT_STATE,
        port=port,
        host=env.get("HOST") or "0.0.0.0",
        slack_bot_token=env.get("SLACK_BOT_TOKEN", ""),
        slack_signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
        slack_app_token=env.get("SLACK_APP_TOKEN", ""),
        slack_api_url=env.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL,
        home=home,
        migration=migration,
        online=online,
        azure=azure,
    )
    for secret in (settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token):
        secrets.register(secret)
    secrets.register(_url_password(settings.state_url))
    return settings


def _url_password(url: str) -> str | None:
    match = re.match(r"^postgres(?:ql)?://[^:/@]+:([^@]+)@", url)
    return match.group(1) if match else None


def require_slack(settings: Settings, socket_mode: bool) -> None:
    """Serving Slack needs its credentials; say exactly which are missing."""
    missing = [
        name
        for name, value in (
            ("SLACK_BOT_TOKEN", settings.slack_bot_token),
            ("SLACK_SIGNING_SECRET", settings.slack_signing_secret),
        )
        if not value
    ]
    if socket_mode:
        missing = [m for m in missing if m != "SLACK_SIGNING_SECRET"]
        if not settings.slack_app_token.startswith("xapp-"):
            missing.append("SLACK_APP_TOKEN (an app-level token, xapp-…)")
    if missing:
        raise SettingsError(
            "to serve Slack set "
            + ", ".join(missing)
            + f" (see README: Slack app setup); without them use `{pgmig_command()} shell`"
        )
