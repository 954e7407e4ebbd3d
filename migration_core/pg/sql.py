"""SQL text helpers: identifiers are always quoted, values always go as asyncpg arguments."""

from __future__ import annotations

import re


def ident(name: str) -> str:
    """Quote one identifier the way PostgreSQL's quote_ident does, unconditionally."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


# Relations that belong to the user: not in system schemas, not members of an extension.
# pgmig's own schema on a streaming migration's servers (changes/watermarks.py) says so in its comment: it is
# not the customer's data, so no copy, check or count sees it
PGMIG_SCHEMA_MARK = "pgmig: continuous verification"
USER_SCHEMA_FILTER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
    "AND n.nspname NOT LIKE 'pg_temp%' "
    f"AND NOT (n.nspname LIKE 'pgmig%' AND obj_description(n.oid, 'pg_namespace') = '{PGMIG_SCHEMA_MARK}') "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
    "AND d.objid = c.oid AND d.deptype = 'e')"
)


def literal(value: str) -> str:
    """A string literal for the few statements that cannot take parameters (CREATE DATABASE, SET)."""
    return "'" + value.replace("'", "''") + "'"


def readable(schema: str, name: str) -> str:
    """A name as PostgreSQL prints it (`public.orders`, `"Sales".orders`): quoted only where needed."""

    def part(p: str) -> str:
        return p if re.fullmatch(r"[a-z_][a-z0-9_$]*", p) else ident(p)

    return f"{part(schema)}.{part(name)}"
