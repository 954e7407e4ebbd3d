"""What several unit tests share."""

from __future__ import annotations

import pytest

from migration_core.store import Store


@pytest.fixture
async def store(tmp_path):
    """An empty state store (SQLite) of the test's own."""
    s = await Store.open(str(tmp_path / "state.sqlite"))
    yield s
    await s.close()
