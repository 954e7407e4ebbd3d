"""Azure's long-running operations (server create, restart, …: minutes), awaited while the channel is
told every so often that they still run; failures come back as one readable MigrationError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from migration_core.azure.errors import explain

Progress = Callable[[str], Awaitable[None]]

T = TypeVar("T")


async def run_lro(
    poller_coro: Awaitable[Any], what: str, on_progress: Progress | None = None, every: float = 15.0
) -> Any:
    from azure.core.exceptions import AzureError

    started = time.monotonic()
    try:
        poller = await poller_coro
        task = asyncio.ensure_future(poller.result())
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            if on_progress is not None:
                await on_progress(f"{what}: {poller.status()} after {time.monotonic() - started:.0f} s")
    except AzureError as exc:
        raise explain(exc, what) from None


async def call(coro: Awaitable[T], what: str) -> T:
    """One plain ARM request, its failure explained."""
    from azure.core.exceptions import AzureError

    try:
        return await coro
    except AzureError as exc:
        raise explain(exc, what) from None
