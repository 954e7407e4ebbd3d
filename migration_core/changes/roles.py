"""Roles the databases need (owners and grantees), recreated on the target without passwords or
superuser powers — Azure refuses those. Roles the target will not let us create are reported, and
the restore then runs without owners and privileges rather than failing.

pg_dumpall --globals-only holds the same facts as pg_roles; reading the catalog avoids parsing SQL.
Each role and membership pgmig adds is journaled before it is made, so a cancel can take it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import ident, literal
from migration_core.state.journal import TARGET, Change, Journal, JournalEntry, Mark, Payload

NEEDED = """
SELECT DISTINCT r.rolname FROM pg_roles r
WHERE r.rolname NOT LIKE 'pg\\_%' AND (
    r.oid IN (SELECT refobjid FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass
              AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()))
    OR r.oid = (SELECT datdba FROM pg_database WHERE datname = current_database()))
"""


@dataclass
class RolesPayload(Payload):
    """The journal's record of the roles pgmig created on the target and the memberships it granted,
    each saved before it is made."""

    SPARSE = ("oids", "memberships")

    roles: list[str] = field(default_factory=list)
    oids: dict[str, int] = field(default_factory=dict)  # each created role's identity: a later namesake is not pgmig's
    memberships: list[list[str]] = field(default_factory=list)  # [group, member]


@dataclass
class RolePlan:
    needed: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # not creatable, or not usable: restore without owners

    @property
    def keep_owners(self) -> bool:
        return not self.missing

    @property
    def restore_flags(self) -> list[str]:
        """pg_dump/pg_restore flags: owners and privileges only where every role they name is usable."""
        return [] if self.keep_owners else ["--no-owner", "--no-privileges"]

    def describe(self) -> str:
        parts = [f"roles needed: {', '.join(self.needed) or 'none'}"]
        if self.created:
            parts.append(f"created {', '.join(self.created)} (no passwords: set them on the target)")
        if self.missing:
            parts.append(
                f"missing on target and not creatable, or not usable by its role: {', '.join(self.missing)} — "
                "restored without owners and privileges"
            )
        return "; ".join(parts)


async def needed_roles(source: ServerConfig, databases: list[str]) -> list[str]:
    names: set[str] = set()
    for db in databases:
        async with source.connection(db) as conn:
            names |= {r["rolname"] for r in await conn.fetch(NEEDED)}
    return sorted(names)


async def copy_roles(source: ServerConfig, target: ServerConfig, databases: list[str], journal: Journal) -> RolePlan:
    plan = RolePlan(needed=await needed_roles(source, databases))
    async with source.connection() as src, target.connection() as tgt:
        existing = {r["rolname"] for r in await tgt.fetch("SELECT rolname FROM pg_roles")}
        me = await tgt.fetchrow("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")
        entry = await journal.find(Change.ROLES, TARGET, "") or await journal.plan(
            Change.ROLES, TARGET, "", data=RolesPayload()
        )
        data = RolesPayload.of(entry)
        for name in plan.needed:
            if name in existing:
                if not me["rolsuper"] and not await tgt.fetchval(
                    "SELECT pg_has_role(current_user, $1, 'MEMBER')", name
                ):
                    plan.missing.append(name)  # exists, but pgmig's role may not hand objects to it
                continue
            attrs = await src.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", name)
            data.roles.append(name)
            await journal.note(entry, data)
            try:
                await tgt.execute(f"CREATE ROLE {ident(name)} {_attributes(attrs)}")
            except asyncpg.PostgresError:
                data.roles.remove(name)
                await journal.note(entry, data)
                plan.missing.append(name)
                continue
            plan.created.append(name)
            data.oids[name] = await tgt.fetchval("SELECT oid FROM pg_roles WHERE rolname = $1", name)
            await journal.note(entry, data)
            if not me["rolsuper"]:  # to hand objects to the role, a non-superuser must be a member of it
                try:
                    await tgt.execute(f"GRANT {ident(name)} TO {ident(me['rolname'])}")
                except asyncpg.PostgresError:
                    plan.missing.append(name)
        await _memberships(src, tgt, set(plan.needed) - set(plan.missing), journal, entry, data)
        if data.roles or data.memberships:
            await journal.done(entry)
        elif entry.mark is not Mark.DONE:
            await journal.undone(entry)  # nothing was created: nothing to take back
    return plan


def _attributes(r: asyncpg.Record) -> str:
    """Everything but SUPERUSER, REPLICATION, BYPASSRLS and the password."""
    words = [
        "NOSUPERUSER",
        "LOGIN" if r["rolcanlogin"] else "NOLOGIN",
        "INHERIT" if r["rolinherit"] else "NOINHERIT",
        "CREATEDB" if r["rolcreatedb"] else "NOCREATEDB",
        "CREATEROLE" if r["rolcreaterole"] else "NOCREATEROLE",
        f"CONNECTION LIMIT {int(r['rolconnlimit'])}",
    ]
    if r["rolvaliduntil"] is not None:
        words.append(f"VALID UNTIL {literal(r['rolvaliduntil'].isoformat())}")
    return " ".join(words)


async def _memberships(
    src: asyncpg.Connection,
    tgt: asyncpg.Connection,
    roles: set[str],
    journal: Journal,
    entry: JournalEntry,
    data: RolesPayload,
) -> None:
    """The source's memberships among the roles the databases need; each one added is journaled first."""
    rows = await src.fetch(
        "SELECT g.rolname AS grp, m.rolname AS member FROM pg_auth_members a "
        "JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
    )
    present = {
        (r["grp"], r["member"])
        for r in await tgt.fetch(
            "SELECT g.rolname AS grp, m.rolname AS member FROM pg_auth_members a "
            "JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
        )
    }
    for row in rows:
        pair = (row["grp"], row["member"])
        if pair[0] in roles and pair[1] in roles and pair not in present:
            data.memberships.append(list(pair))
            await journal.note(entry, data)
            try:
                await tgt.execute(f"GRANT {ident(pair[0])} TO {ident(pair[1])}")
            except asyncpg.PostgresError:
                data.memberships.remove(list(pair))
                await journal.note(entry, data)


async def drop_roles(target: ServerConfig, entry: JournalEntry, journal: Journal) -> str:
    """Undo a Change.ROLES: memberships pgmig granted taken back; roles pgmig created dropped (by identity:
    the OID recorded when it made them) unless something on the target still owns or uses them."""
    data = RolesPayload.of(entry)
    dropped, kept, left = [], [], []
    async with target.connection() as conn:
        for grp, member in data.memberships:
            if await conn.fetchval("SELECT count(*) = 2 FROM pg_roles WHERE rolname = ANY($1::text[])", [grp, member]):
                await conn.execute(f"REVOKE {ident(grp)} FROM {ident(member)}")
        data.memberships = []
        for name in data.roles:
            now = await conn.fetchval("SELECT oid FROM pg_roles WHERE rolname = $1", name)
            if now is None:
                continue  # dropped since: nothing to do
            if name in data.oids and now != data.oids[name]:
                left.append(name)  # another role of that name now: not pgmig's
                continue
            try:
                await conn.execute(f"DROP ROLE IF EXISTS {ident(name)}")
                dropped.append(name)
            except asyncpg.DependentObjectsStillExistError:
                kept.append(name)
    data.roles = kept
    if kept:
        await journal.note(entry, data)
    else:
        await journal.undone(entry, data)
    said = [f"dropped role(s) {', '.join(dropped)} on the target"] if dropped else []
    said += [f"kept role(s) {', '.join(kept)}: objects on the target still depend on them"] if kept else []
    said += [f"left role(s) {', '.join(left)}: no longer the one(s) pgmig created"] if left else []
    return "; ".join(said)
