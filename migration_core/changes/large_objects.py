"""Large objects written on the target (transfer/large_objects.py moves them): each replaced by oid,
its content written, then its comment, owner and grants. Only in a target database this migration
prepared (journaled there; emptying it again unlinks them all)."""

from __future__ import annotations

from typing import Any

import asyncpg

from migration_core.pg.sql import ident, literal

UNLINK = "SELECT lo_unlink(m.oid) FROM pg_largeobject_metadata m WHERE m.oid = ANY($1::oid[])"
CREATE = "SELECT lo_create($1::oid)"
CREATE_MANY = "SELECT lo_from_bytea(u.o, u.d) FROM unnest($1::oid[], $2::bytea[]) AS u(o, d)"
WRITE_CHUNK = "SELECT lo_put($1::oid, $2::bigint, $3::bytea)"
# What the target may refuse of an object's metadata: a role it lacks, or one pgmig may not act for.
REFUSED = (asyncpg.UndefinedObjectError, asyncpg.InsufficientPrivilegeError)


async def unlink(conn: asyncpg.Connection, oids: list[int]) -> None:
    """Those of the objects that exist, removed (to be created afresh)."""
    await conn.execute(UNLINK, oids)


async def create(conn: asyncpg.Connection, oid: int) -> None:
    await conn.execute(CREATE, oid)


async def create_many(conn: asyncpg.Connection, oids: list[int], contents: list[bytes]) -> None:
    await conn.execute(CREATE_MANY, oids, contents)


async def write(conn: asyncpg.Connection, oid: int, offset: int, data: bytes) -> None:
    await conn.execute(WRITE_CHUNK, oid, offset, data)


def metadata(r: Any, keep_owners: bool) -> list[str]:
    """What gives the object its comment and, with `keep_owners`, its owner and grants."""
    return _comment(r) + (_ownership(r) if keep_owners else [])


def _comment(r: Any) -> list[str]:
    return [f"COMMENT ON LARGE OBJECT {int(r['oid'])} IS {literal(r['comment'])}"] if r["comment"] is not None else []


def _ownership(r: Any) -> list[str]:
    oid = int(r["oid"])
    statements = [f"ALTER LARGE OBJECT {oid} OWNER TO {ident(r['owner'])}"]
    for grant in r["grants"]:
        grantee, privilege = grant.rsplit("=", 1)
        option = " WITH GRANT OPTION" if privilege.endswith("*") else ""
        who = "PUBLIC" if grantee == "PUBLIC" else ident(grantee)
        statements.append(f"GRANT {privilege.rstrip('*')} ON LARGE OBJECT {oid} TO {who}{option}")
    return statements


async def apply_together(conn: asyncpg.Connection, statements: list[str]) -> None:
    """All of `statements` in one round trip under a savepoint; raises one of REFUSED when the target
    refuses any, and `roll_back_together` then undoes the rest."""
    await conn.execute("SAVEPOINT pgmig_lo; " + "; ".join(statements) + "; RELEASE SAVEPOINT pgmig_lo")


async def roll_back_together(conn: asyncpg.Connection) -> None:
    await conn.execute("ROLLBACK TO SAVEPOINT pgmig_lo; RELEASE SAVEPOINT pgmig_lo")


async def apply_each(target: asyncpg.Connection, r: asyncpg.Record, keep_owners: bool) -> None:
    """One object's metadata statement by statement, skipping what the target refuses."""
    for sql in _comment(r):
        await target.execute(sql)
    if not keep_owners:
        return
    for sql in _ownership(r):
        # A role the target lacks, or one pgmig may not act for (a source superuser): as with pg_restore
        # --no-owner, the object stays pgmig's. A savepoint keeps the content whatever is refused.
        try:
            async with target.transaction():
                await target.execute(sql)
        except REFUSED:
            continue
