"""What integration tests build, each built one way (the habit of Netflix Dispatch's tests/factories.py):
an engine migrating a source cluster to a target one, the servers it names, a state store. A keyword
names what a test varies; everything else is the one default all of them share."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.localpg import LocalCluster
from migration_core.engine.api import Engine, EngineConfig, MigrationRequest
from migration_core.state.events import MigrationEvents
from migration_core.store import Store
from tests.integration.clusters import server
from tests.integration.sample_data import RecordingEvents, pg16_bindir

SOURCE, TARGET = "onprem", "azure"  # the server names the engine knows: what requests say as source and target
DEFAULTS: dict[str, Any] = {
    "progress_interval": 0.2,  # ticks (alerts, the live message) often enough for a test to see them
    "fence_grace_seconds": 0.1,  # a cutover does not wait on sessions no test keeps open
}


async def store(directory: Path) -> Store:
    """A fresh SQLite state store in `directory`, for a test that needs more than the `store` fixture's."""
    return await Store.open(str(directory / "state.sqlite"))


def engine(
    store: Store,
    source: LocalCluster,
    target: LocalCluster,
    tmp_path: Path,
    *,
    events: MigrationEvents | None = None,
    bindir: Path | None = None,
    source_server: Mapping[str, Any] | None = None,
    target_server: Mapping[str, Any] | None = None,
    query_timeout: float | None = None,
    extra: Mapping[str, LocalCluster] | None = None,
    **config: Any,
) -> Engine:
    """An engine migrating `source` (server SOURCE) to `target` (TARGET), its files under tmp_path/work.

    `events`: what keeps its announcements (a RecordingEvents by default); `bindir`: its client programs
    (PostgreSQL 16's by default, new enough for every cluster here); `source_server`, `target_server`:
    ServerConfig fields one server differs in (an unreachable port, another login, a replication port);
    `query_timeout`: both servers' limit on control queries; `extra`: more servers, by name; `config`:
    EngineConfig fields the test varies (lease, stall limits, alert thresholds…)."""
    both = {} if query_timeout is None else {"query_timeout": query_timeout}
    servers = {
        SOURCE: server(SOURCE, source, **{**both, **(source_server or {})}),
        TARGET: server(TARGET, target, **{**both, **(target_server or {})}),
        **{name: server(name, cluster) for name, cluster in (extra or {}).items()},
    }
    settings = EngineConfig(workdir=tmp_path / "work", pg_bindir=str(bindir or pg16_bindir()), **{**DEFAULTS, **config})
    return Engine(store, servers, RecordingEvents() if events is None else events, settings)


async def start_online(engine: Engine, databases: list[str], **request: Any) -> str:
    """An online migration of `databases` from SOURCE to TARGET, created and started as `/pgmig migrate`
    would (its pipeline runs the pre-flight); `request`: MigrationRequest fields the test varies."""
    m = await engine.create(
        MigrationRequest(
            source=SOURCE,
            target=TARGET,
            mode="online",
            requested_by="U0ALICE",
            channel="C0OPS",
            databases=databases,
            **request,
        )
    )
    engine.start(m.id)
    return m.id
