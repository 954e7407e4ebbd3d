"""What every test gets: a clean environment (the test password, no Azure of the machine's) and a guard
that fails a test whose event loop saw an exception nobody handled (as asyncpg's test base does): a
background task that died silently is a bug the test must show."""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
from pathlib import Path

import pytest

from bot.localpg import INITDB_CACHE

PASSWORD = "s3cret-Pw-for-tests"


def scratch_dir() -> Path:
    """Where test clusters live: memory (/dev/shm) when it has room — a cluster's files never need to
    outlive the run, and a disk's write costs were a third of the suite's CPU time — else the temp dir."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > 4 << 30 and os.access(shm, os.W_OK):
            return shm
    except OSError:
        pass
    return Path(tempfile.gettempdir())


SCRATCH = scratch_dir()
# every cluster the tests make is a copy of one initdb (bot/localpg.py), shared by the test processes
os.environ.setdefault(INITDB_CACHE, str(SCRATCH / f"pgmig-initdb-{os.getuid()}"))


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


def pytest_collection_finish(session: pytest.Session) -> None:
    """What is loaded once collected (pgmig, the SDKs, the tests) lives for the session: the collection each test
    ends with (below) need not walk it again."""
    gc.freeze()


@pytest.fixture(autouse=True)
async def _no_unhandled_task_exceptions():
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    gc.collect()  # a task that failed and was dropped reports when it is collected
    loop.set_exception_handler(previous)
    assert not seen, "the event loop saw unhandled exceptions: " + "; ".join(
        f"{c.get('message')}: {c.get('exception')!r}" for c in seen
    )
