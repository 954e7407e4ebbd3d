"""Azure's `azure.extensions` allow-list, read from a real target that sets it (as flexible server does)."""

from __future__ import annotations

import pytest

from bot.localpg import LocalCluster
from migration_core.preflight.checks import PreflightRequest, Status, run_preflight
from tests.integration.clusters import PASSWORD, server


@pytest.fixture(scope="module")
def azure_like_target(cluster_root):
    c = (
        LocalCluster(cluster_root / "azure-like", password=PASSWORD, settings={"azure.extensions": "'hstore'"})
        .init()
        .start()
    )
    yield c
    c.destroy()


async def test_extension_not_in_allow_list_is_named_with_the_az_command(source_cluster, azure_like_target):
    source_cluster.psql("CREATE DATABASE trigrams")
    source_cluster.psql("CREATE EXTENSION pg_trgm; CREATE EXTENSION hstore", database="trigrams")
    try:
        report = await run_preflight(
            PreflightRequest(server("src", source_cluster), server("azure", azure_like_target), databases=["trigrams"])
        )
        ext = next(f for f in report.findings if f.title == "extensions available on target")
        assert ext.status is Status.FAIL
        assert "allow-list: pg_trgm" in ext.detail and "hstore" not in ext.detail
        assert "azure.extensions --value hstore,pg_trgm" in ext.fix and "/pgmig configure" not in ext.fix
        known = await run_preflight(
            PreflightRequest(  # a target pgmig knows as a flexible server
                server("src", source_cluster),
                server("azure", azure_like_target, azure_resource_group="rg"),
                databases=["trigrams"],
            )
        )
        ext = next(f for f in known.findings if f.title == "extensions available on target")
        assert "`/pgmig configure azure --extensions-from src --restart`" in ext.fix
    finally:
        source_cluster.psql("DROP DATABASE trigrams")
