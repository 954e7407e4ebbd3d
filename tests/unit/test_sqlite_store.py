"""The SQLite state store's one connection, used from a worker thread: a statement whose caller was cancelled
runs on, and nothing else (closing included) starts on the connection until it ended."""

from __future__ import annotations

import asyncio
import sqlite3
import time

from migration_core.store import Store


async def test_a_cancelled_statement_holds_the_connection_until_it_ended_so_close_waits(tmp_path):
    store = await Store.open(str(tmp_path / "state.sqlite"))
    connection = store._db._db  # type: ignore[attr-defined]  # noqa: SLF001 - the sqlite3 connection itself
    rows: list[int] = []

    def row(cursor: sqlite3.Cursor, values: tuple) -> sqlite3.Row:  # between two steps of the statement
        rows.append(values[0])
        time.sleep(0.2)
        return sqlite3.Row(cursor, values)

    connection.row_factory = row
    asking = asyncio.create_task(store._db.fetch("SELECT column1 AS x FROM (VALUES (1), (2))"))  # noqa: SLF001
    while not rows:
        await asyncio.sleep(0.01)
    asking.cancel()  # a tick cancelled while its statement runs (a stop, a lost lease)
    await asyncio.sleep(0)
    # before: closed while the statement was between two rows on the other thread, whose next step then ran
    # on a closed connection ("Cannot operate on a closed database", or sqlite3 crashed the process)
    await store.close()
    assert rows == [1, 2]
    assert asking.cancelled()
