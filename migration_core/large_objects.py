"""Large objects: copied by oid, since COPY of tables and logical replication both skip them, with
their comment, owner and privileges (pg_dump's BLOB entries carry the same three)."""

from __future__ import annotations

import asyncpg

from migration_core.sql import ident, literal

METADATA = (
    "SELECT m.oid, pg_get_userbyid(m.lomowner) AS owner, "
    "obj_description(m.oid, 'pg_largeobject') AS comment, "
    "ARRAY(SELECT (CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END) || '=' || "
    "      a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END "
    "      FROM aclexplode(m.lomacl) a WHERE a.grantee <> m.lomowner ORDER BY 1)::text[] AS grants "
    "FROM pg_largeobject_metadata m ORDER BY m.oid"
)


async def copy(source: asyncpg.Connection, target: asyncpg.Connection, keep_owners: bool = True) -> int:
    """Create (or replace) every source large object on the target with the same oid, content and comment;
    with `keep_owners` (the roles exist on the target) also its owner and privileges."""
    rows = await source.fetch(METADATA)
    for r in rows:
        oid = r["oid"]
        data = await source.fetchval("SELECT lo_get($1::oid)", oid)
        async with target.transaction():
            if await target.fetchval("SELECT 1 FROM pg_largeobject_metadata WHERE oid = $1::oid", oid):
                await target.execute("SELECT lo_unlink($1::oid)", oid)
            await target.execute("SELECT lo_from_bytea($1::oid, $2)", oid, data)
            await _metadata(target, r, keep_owners)
    return len(rows)


async def _metadata(target: asyncpg.Connection, r: asyncpg.Record, keep_owners: bool) -> None:
    oid = int(r["oid"])
    if r["comment"] is not None:
        await target.execute(f"COMMENT ON LARGE OBJECT {oid} IS {literal(r['comment'])}")
    if not keep_owners:
        return
    statements = [f"ALTER LARGE OBJECT {oid} OWNER TO {ident(r['owner'])}"]
    for grant in r["grants"]:
        grantee, privilege = grant.rsplit("=", 1)
        option = " WITH GRANT OPTION" if privilege.endswith("*") else ""
        who = "PUBLIC" if grantee == "PUBLIC" else ident(grantee)
        statements.append(f"GRANT {privilege.rstrip('*')} ON LARGE OBJECT {oid} TO {who}{option}")
    for sql in statements:
        # A role the target lacks, or one pgmig may not act for (a source superuser): as with pg_restore
        # --no-owner, the object stays pgmig's. A savepoint keeps the content whatever is refused.
        try:
            async with target.transaction():
                await target.execute(sql)
        except (asyncpg.UndefinedObjectError, asyncpg.InsufficientPrivilegeError):
            continue
