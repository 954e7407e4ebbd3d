"""Real PostgreSQL clusters for the whole session (source with wal_level=logical, target, a misconfigured one)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from bot.localpg import LocalCluster
from migration_core.servers import ServerConfig

PASSWORD = "s3cret-Pw-for-tests"


@pytest.fixture(scope="session")
def cluster_root():
    root = Path(tempfile.mkdtemp(prefix="pgmig-tests-"))
    os.chmod(root, 0o755)  # under root the clusters run as an unprivileged user who must reach this
    yield root


def _cluster(root: Path, name: str, **settings: str) -> LocalCluster:
    return LocalCluster(root / name, password=PASSWORD, settings=settings).init().start()


@pytest.fixture(scope="session")
def source_cluster(cluster_root):
    c = _cluster(cluster_root, "source", wal_level="logical", max_replication_slots="10", max_wal_senders="10")
    c.psql("CREATE DATABASE shop")
    c.psql(database="shop", file=Path(__file__).parents[1] / "bot" / "sample_data.sql")
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def target_cluster(cluster_root):
    c = _cluster(cluster_root, "target")
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def replica_level_cluster(cluster_root):
    """A source as most on-premises servers start out: wal_level=replica, too few slots and senders."""
    c = _cluster(cluster_root, "replica", wal_level="replica", max_replication_slots="2", max_wal_senders="4")
    c.psql("CREATE DATABASE app")
    c.psql("CREATE TABLE t (id int PRIMARY KEY)", database="app")
    yield c
    c.destroy()


@pytest.fixture(autouse=True)
def _passwords(monkeypatch):
    monkeypatch.setenv("PGMIG_TEST_PASSWORD", PASSWORD)
    monkeypatch.setenv("PGMIG_WRONG_PASSWORD", "not-the-Right-one")


@pytest.fixture(autouse=True)
def _no_real_azure(monkeypatch):
    """Whatever the machine has set, no test reaches a real Azure endpoint or identity service."""
    for name in (
        "AZURE_SUBSCRIPTION_ID",
        "PGMIG_ARM_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)


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
