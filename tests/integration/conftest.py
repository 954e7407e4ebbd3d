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

# The integration modules that take longest (measured on the 2-core reference machine, `-n 6`, longest
# first). pytest-xdist hands whole modules to its workers (`--dist loadscope`: a module's clusters are made in
# one worker, once) in collection order, so these go first and the run does not end with one long module
# running while the other workers idle (under the default order the last 30 s of a run were mostly idle).
# A module not listed runs after them, in file order; the list only orders, it asserts nothing.
LONGEST_FIRST = [
    "test_azure_backends", "test_continuous_verify", "test_replicas", "test_online", "test_offline",
    "test_ddl_capture", "test_crash_recovery", "test_shell", "test_ownership", "test_sandbox",
    "test_approval_races", "test_hostile_names", "test_sandbox_onboarding", "test_azure_provision",
    "test_waits_export", "test_large_work", "test_slack_rate_limits", "test_waits_online", "test_session_rules",
    "test_slack_cutover", "test_live_message", "test_kept_sessions", "test_plan", "test_slack_migrations",
    "test_azure_journal", "test_charts", "test_slack_modal", "test_slack_home", "test_subscription_secrets",
    "test_shell_terminal", "test_true_words_shell", "test_forecast", "test_slack_http", "test_replication_login",
    "test_large_objects",
]  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (LONGEST_FIRST); a module's tests stay together and in their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


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
