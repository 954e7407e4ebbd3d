"""Real PostgreSQL clusters shared by the whole session: a source with wal_level=logical, a target, and a
source as most on-premises servers start out (wal_level=replica, too few slots)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bot.localpg import LocalCluster
from migration_core.store import Store
from tests.conftest import PASSWORD, SCRATCH
from tests.integration.clusters import TARGET


@pytest.fixture(scope="session")
def cluster_root():
    root = Path(tempfile.mkdtemp(prefix="pgmig-tests-", dir=SCRATCH))
    os.chmod(root, 0o755)  # under root the clusters run as an unprivileged user who must reach this
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _cluster(root: Path, name: str, **settings: str) -> LocalCluster:
    return LocalCluster(root / name, password=PASSWORD, settings=settings).init().start()


@pytest.fixture(scope="session")
def source_cluster(cluster_root):
    c = _cluster(cluster_root, "source", wal_level="logical", max_replication_slots="10", max_wal_senders="10")
    c.psql("CREATE DATABASE shop")
    c.psql(database="shop", file=Path(__file__).parents[2] / "bot" / "sample_data.sql")
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def target_cluster(cluster_root):
    c = _cluster(cluster_root, "target", **TARGET)
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


@pytest.fixture
async def store(tmp_path):
    """A fresh SQLite state store for one test (the embedded default)."""
    s = await Store.open(str(tmp_path / "state.sqlite"))
    yield s
    await s.close()
