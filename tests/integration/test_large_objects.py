"""Large objects between real clusters: content, oid, comment, owner and privileges arrive; big ones stream
in chunks with bounded memory, small ones go many per transaction; a stuck write fails readably."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tracemalloc
import uuid

import pytest

from migration_core.observe.progress import DatabaseProgress
from migration_core.pg.servers import ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.transfer import large_objects
from migration_core.transfer.limits import DataLimits
from tests.integration.clusters import server

# What a user compares on both sides, per object.
FACTS = (
    "SELECT m.oid, md5(lo_get(m.oid)) AS md5, octet_length(lo_get(m.oid)) AS size, "
    "pg_get_userbyid(m.lomowner) AS owner, obj_description(m.oid, 'pg_largeobject') AS comment, "
    "ARRAY(SELECT a::text FROM unnest(m.lomacl) a ORDER BY 1) AS acl "
    "FROM pg_largeobject_metadata m ORDER BY m.oid"
)


class Pair:
    def __init__(self, source: ServerConfig, target: ServerConfig, database: str, roles: dict[str, str]) -> None:
        self.source, self.target, self.database, self.roles = source, target, database, roles

    async def sql(self, server: ServerConfig, sql: str, *args) -> list:
        async with server.connection(self.database, data=True) as conn:
            return await conn.fetch(sql, *args)

    async def script(self, server: ServerConfig, sql: str) -> None:
        """Several statements at once (no arguments)."""
        async with server.connection(self.database, data=True) as conn:
            await conn.execute(sql)

    async def facts(self, server: ServerConfig) -> list[dict]:
        return [dict(r) for r in await self.sql(server, FACTS)]

    async def copy(self, **kw) -> int:
        return await large_objects.copy(self.source, self.target, self.database, **kw)


@pytest.fixture
def roles(source_cluster, target_cluster):
    """Roles on both clusters (roles are cluster-wide: unique names), dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"lo_{k}_{suffix}" for k in ("owner", "reader", "writer")}
    for c in (source_cluster, target_cluster):
        c.psql("; ".join(f"CREATE ROLE {n}" for n in names.values()))
    names["ghost"] = f"lo_ghost_{suffix}"  # on the source only
    source_cluster.psql(f"CREATE ROLE {names['ghost']}")
    yield names
    for c in (source_cluster, target_cluster):
        c.psql("; ".join(f"DROP ROLE IF EXISTS {n}" for n in names.values()))


@pytest.fixture
def pair(source_cluster, target_cluster, roles):
    """A fresh database of the same name on each cluster, dropped (before the roles) afterwards."""
    db = f"lo_{uuid.uuid4().hex[:10]}"
    for c in (source_cluster, target_cluster):
        c.psql(f'CREATE DATABASE "{db}"')
    yield Pair(server("src", source_cluster), server("tgt", target_cluster), db, roles)
    for c in (source_cluster, target_cluster):
        c.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def test_objects_arrive_with_content_oid_comment_owner_and_privileges(pair, monkeypatch):
    monkeypatch.setattr(large_objects, "CHUNK", 64 << 10)
    r = pair.roles
    big = os.urandom(300 << 10)  # several chunks, no two alike
    await pair.sql(
        pair.source,
        "SELECT lo_from_bytea(910001, 'a contract'::bytea), lo_from_bytea(910002, $1), "
        "lo_from_bytea(910003, ''::bytea), lo_from_bytea(910004, $2), lo_from_bytea(910005, 'public')",
        big,
        os.urandom(64 << 10),  # exactly one chunk
    )
    metadata = (
        "COMMENT ON LARGE OBJECT 910001 IS 'signed; by ''both'' \"parties\"'; "
        "COMMENT ON LARGE OBJECT 910002 IS 'scan'; "
        + "".join(f"ALTER LARGE OBJECT {oid} OWNER TO {r['owner']}; " for oid in (910001, 910002, 910004))
        + f"GRANT SELECT ON LARGE OBJECT 910001 TO {r['reader']}; "
        f"GRANT UPDATE ON LARGE OBJECT 910001 TO {r['writer']} WITH GRANT OPTION; "
        f"GRANT SELECT, UPDATE ON LARGE OBJECT 910002 TO {r['reader']}; "
        f"GRANT SELECT ON LARGE OBJECT 910002 TO {r['writer']} WITH GRANT OPTION; "
        "GRANT SELECT ON LARGE OBJECT 910005 TO PUBLIC"
    )
    await pair.script(pair.source, metadata)
    progress = DatabaseProgress(pair.database)

    copied = await pair.copy(progress=progress)

    assert copied == 5
    source, target = await pair.facts(pair.source), await pair.facts(pair.target)
    assert target == source
    by_oid = {f["oid"]: f for f in target}
    assert by_oid[910002]["md5"] == hashlib.md5(big).hexdigest() and by_oid[910002]["size"] == len(big)
    assert by_oid[910001]["owner"] == r["owner"] and by_oid[910001]["comment"] == "signed; by 'both' \"parties\""
    assert f"{r['writer']}=w*/{r['owner']}" in by_oid[910001]["acl"]
    assert f"{r['reader']}=rw/{r['owner']}" in by_oid[910002]["acl"]
    assert by_oid[910003]["size"] == 0
    assert progress.phase == "large objects 5/5"


async def test_a_role_the_target_lacks_is_left_out_and_everything_else_kept(pair):
    r = pair.roles
    await pair.sql(
        pair.source,
        "SELECT lo_from_bytea(920001, 'one'::bytea), lo_from_bytea(920002, 'two'::bytea), "
        "lo_from_bytea(920003, 'three'::bytea)",
    )
    grants = (
        f"ALTER LARGE OBJECT 920001 OWNER TO {r['ghost']}; COMMENT ON LARGE OBJECT 920001 IS 'haunted'; "
        f"ALTER LARGE OBJECT 920002 OWNER TO {r['owner']}; "
        f"GRANT SELECT ON LARGE OBJECT 920002 TO {r['ghost']}; GRANT SELECT ON LARGE OBJECT 920002 TO {r['reader']}; "
        f"ALTER LARGE OBJECT 920003 OWNER TO {r['owner']}; COMMENT ON LARGE OBJECT 920003 IS 'plain'"
    )
    await pair.script(pair.source, grants)

    assert await pair.copy() == 3

    source = {f["oid"]: f for f in await pair.facts(pair.source)}
    target = {f["oid"]: f for f in await pair.facts(pair.target)}
    assert [target[o]["md5"] for o in sorted(target)] == [source[o]["md5"] for o in sorted(source)]
    assert target[920001]["owner"] == "postgres" and target[920001]["comment"] == "haunted"
    assert target[920002]["owner"] == r["owner"] and target[920002]["acl"] == sorted(
        [f"{r['owner']}=rw/{r['owner']}", f"{r['reader']}=r/{r['owner']}"]
    )
    assert target[920003] == source[920003]


async def test_many_small_objects_are_copied_many_per_transaction(pair):
    count = 2000
    await pair.sql(  # 1–4 kB each, every one different
        pair.source,
        "SELECT lo_from_bytea(0, convert_to(repeat(md5(i::text), 32 + i % 96), 'SQL_ASCII')) "
        "FROM generate_series(1, $1::int) i",
        count,
    )
    first = (await pair.sql(pair.source, "SELECT min(oid) FROM pg_largeobject_metadata"))[0][0]
    await pair.script(pair.source, f"COMMENT ON LARGE OBJECT {first} IS 'first'")
    progress = DatabaseProgress(pair.database)

    assert await pair.copy(parallel=2, progress=progress) == count

    source, target = await pair.facts(pair.source), await pair.facts(pair.target)
    assert len(target) == count and target == source
    assert {f["size"] for f in target} <= set(range(1024, 4097))
    # Each page of content carries the id of the transaction that wrote it: one per batch, not per object.
    writers = await pair.sql(pair.target, "SELECT count(DISTINCT xmin::text) FROM pg_largeobject")
    assert writers[0][0] <= 4
    assert progress.phase == f"large objects {count}/{count}"


async def test_an_object_already_on_the_target_is_replaced(pair, monkeypatch):
    monkeypatch.setattr(large_objects, "CHUNK", 64 << 10)
    new_big, old_big = os.urandom(200 << 10), os.urandom(500 << 10)
    await pair.sql(pair.source, "SELECT lo_from_bytea(930001, 'new'::bytea), lo_from_bytea(930002, $1)", new_big)
    await pair.sql(
        pair.target,
        "SELECT lo_from_bytea(930001, 'old and longer'::bytea), lo_from_bytea(930002, $1), "
        "lo_from_bytea(930009, 'only here'::bytea)",
        old_big,
    )
    await pair.sql(pair.target, "COMMENT ON LARGE OBJECT 930001 IS 'stale'")

    assert await pair.copy() == 2

    target = {f["oid"]: f for f in await pair.facts(pair.target)}
    assert target[930001]["md5"] == hashlib.md5(b"new").hexdigest() and target[930001]["comment"] is None
    assert target[930002]["md5"] == hashlib.md5(new_big).hexdigest() and target[930002]["size"] == len(new_big)
    assert target[930009]["md5"] == hashlib.md5(b"only here").hexdigest()  # not pgmig's to remove


async def test_a_large_object_streams_in_bounded_memory(pair, monkeypatch):
    chunk = 256 << 10
    monkeypatch.setattr(large_objects, "CHUNK", chunk)
    await pair.sql(pair.source, "SELECT lo_from_bytea(940001, $1)", os.urandom(5 << 20))
    expected = await pair.facts(pair.source)

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        assert await pair.copy() == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert await pair.facts(pair.target) == expected
    assert peak - baseline < 2 << 20, f"pgmig held {(peak - baseline) >> 10} kB for a 5 MB object"


async def test_a_write_that_stops_moving_fails_readably_and_leaves_no_session(pair):
    await pair.sql(pair.source, "SELECT lo_from_bytea(950001, 'waits'::bytea)")
    async with pair.target.connection(pair.database, data=True) as blocker:
        await blocker.execute("BEGIN; SELECT lo_create(950001)")  # the copy's create waits on this
        with pytest.raises(MigrationError) as failure:
            await pair.copy(limits=DataLimits(stall_seconds=1))
        await blocker.execute("ROLLBACK")
    assert re.match(r"large object 950001: no progress for 1 s writing to the target", failure.value.message)
    for _ in range(50):  # the copy's sessions were ended, not left waiting
        left = await pair.sql(
            pair.target,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pgmig' "
            "AND pid <> pg_backend_pid()",
            pair.database,
        )
        if left[0][0] == 0:
            break
        await asyncio.sleep(0.1)
    assert left[0][0] == 0


async def test_no_large_objects_copies_nothing(pair):
    progress = DatabaseProgress(pair.database)
    assert await pair.copy(progress=progress) == 0
    assert progress.phase == "pending"
    assert await pair.facts(pair.target) == []


async def test_an_object_that_grew_after_it_was_listed_arrives_whole(pair, monkeypatch):
    monkeypatch.setattr(large_objects, "CHUNK", 64 << 10)
    grown = os.urandom(150 << 10)
    await pair.sql(pair.source, "SELECT lo_from_bytea(960001, $1), lo_from_bytea(960002, 'ab'::bytea)", grown)
    listing = large_objects._listing

    async def stale(conn):  # as if both were written to after the listing: it says one byte each
        return [{**dict(r), "size": 1} for r in await listing(conn)]

    monkeypatch.setattr(large_objects, "_listing", stale)

    assert await pair.copy() == 2

    assert await pair.facts(pair.target) == await pair.facts(pair.source)
