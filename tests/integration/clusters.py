"""How integration tests name real servers: the test password, a ServerConfig or a pgmig.toml for local clusters."""

from __future__ import annotations

from pathlib import Path

from bot.localpg import LocalCluster
from migration_core.pg.servers import ServerConfig
from tests.conftest import PASSWORD

__all__ = ["PASSWORD", "TARGET", "server", "config_toml"]

# A target's subscription workers start (and restart after a failure) at most once per
# wal_retrieve_retry_interval, 5 s by default: tests make subscriptions one after the other on one cluster.
TARGET = {"wal_retrieve_retry_interval": "200ms"}


def server(name: str, cluster: LocalCluster, **overrides) -> ServerConfig:
    values = dict(
        name=name,
        host="127.0.0.1",
        port=cluster.port,
        user="postgres",
        password_env="PGMIG_TEST_PASSWORD",
        sslmode="disable",
        connect_timeout=5.0,
    )
    values.update(overrides)
    return ServerConfig(**values)


def config_toml(servers: dict[str, LocalCluster | int], extra: str = "") -> str:
    """A pgmig.toml naming clusters (or bare ports, for servers nobody listens on)."""
    out = extra
    for name, c in servers.items():
        port = c if isinstance(c, int) else c.port
        out += (
            f'\n[servers.{name}]\nhost = "127.0.0.1"\nport = {port}\nuser = "postgres"\n'
            f'password_env = "PGMIG_TEST_PASSWORD"\nsslmode = "disable"\nconnect_timeout = 5\n'
        )
    return out


def shell_env(tmp_path: Path, config: Path) -> dict[str, str]:
    """The environment of a `pgmig shell` run on `config`, its state and home in `tmp_path`."""
    return {
        "PGMIG_CONFIG": str(config),
        "PGMIG_STATE": str(tmp_path / "state.sqlite"),
        "PGMIG_HOME": str(tmp_path / "home"),
    }
