"""One writer: every SQL statement that changes a server, and every Azure call that changes a flexible server
(a database, a firewall rule, a parameter, a restart), lives in `migration_core/changes/`, where each change is
journaled before it is made and has its undo (issue 24).

The Python sources are read with `ast`: each string constant, f-string (a `{}` for each replacement
field) and `+` concatenation of them is one text. A text is a writing statement when, at its start or
after a `;`, it has the shape of one (an object name, a quoted name or a placeholder after the keyword),
or when it is SQL (starts with a statement keyword) calling a function that writes. Docstrings are
prose and not read; prose in messages (`ALTER SUBSCRIPTION … DISABLE`, "run: ALTER ROLE …") fails the
shape, and the self-tests below keep it that way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("migration_core", "handlers", "bot")
HOME = "migration_core/changes/"

# Files that write SQL to servers that are not a customer's, each with why.
ALLOWED = {
    "bot/sandbox.py": "sets up and re-opens the sandbox's own demo clusters, which pgmig created",
    "migration_core/store/database.py": "the state store's own tables (pgmig's database), not a migrated server",
}

_STRONG = r"""(?:\{\}|"(?:[^"]|"")+"|\$\d+|%s)"""  # a placeholder or a quoted name: never prose
_NAME = rf"(?:{_STRONG}|[a-z_][\w$]*|\d+)"
NAME = rf"{_NAME}(?:\s*\.\s*{_NAME})*"  # possibly qualified
_START = r"(?:^|;)\s*"
_KINDS = (
    r"TABLE|INDEX|DATABASE|ROLE|USER|GROUP|SCHEMA|EXTENSION|PUBLICATION|SUBSCRIPTION|TRIGGER|FUNCTION|PROCEDURE|"
    r"ROUTINE|AGGREGATE|SEQUENCE|VIEW|MATERIALIZED\s+VIEW|TYPE|DOMAIN|LARGE\s+OBJECT|POLICY|RULE|OPERATOR|COLLATION|"
    r"CONVERSION|TABLESPACE|SERVER|FOREIGN\s+TABLE|FOREIGN\s+DATA\s+WRAPPER|USER\s+MAPPING|LANGUAGE|CAST|STATISTICS|"
    r"TEXT\s+SEARCH\s+\w+|ACCESS\s+METHOD|EVENT\s+TRIGGER|TRANSFORM|DEFAULT\s+PRIVILEGES|OWNED"
)
_PRIVILEGES = rf"{NAME}(?:\s+PRIVILEGES)?(?:\s*\([^)]*\))?(?:\s*,\s*{NAME}(?:\s*\([^)]*\))?)*"
_ON = rf"ON\s+(?:\w+\s+)*?{NAME}(?:\s*,\s*{NAME})*\s+"
_FLAGS = re.IGNORECASE | re.DOTALL
STATEMENTS = [
    re.compile(_START + p, _FLAGS)
    for p in (
        # CREATE / ALTER / DROP of any object (the name may be appended later: a text may end there)
        rf"(?:CREATE(?:\s+OR\s+REPLACE)?(?:\s+(?:UNIQUE|TEMP|TEMPORARY|UNLOGGED|RECURSIVE|TRUSTED|PROCEDURAL|"
        rf"CONSTRAINT|DEFAULT))*|ALTER|DROP)\s+(?:{_KINDS})\b\s*"
        rf"(?:(?:IF\s+(?:NOT\s+)?EXISTS|CONCURRENTLY|ONLY|ALL|BY|IN|FOR)\s+)*(?:{NAME}|$)",
        r"ALTER\s+SYSTEM\s+(?:SET|RESET)\b",
        rf"GRANT\s+{_PRIVILEGES}\s+(?:{_ON})?TO\s+(?:{NAME}|$)",
        rf"REVOKE\s+(?:(?:GRANT|ADMIN|INHERIT|SET)\s+OPTION\s+FOR\s+)?{_PRIVILEGES}\s+(?:{_ON})?FROM\s+(?:{NAME}|$)",
        r"COMMENT\s+ON\s+[^;]*?\bIS\b",
        rf"SECURITY\s+LABEL\s+(?:FOR\s+{NAME}\s+)?ON\b",
        rf"REFRESH\s+MATERIALIZED\s+VIEW\s+(?:CONCURRENTLY\s+)?(?:{NAME}|$)",
        rf"TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?(?:{NAME}|$)",
        # a bare word after these reads as prose ("ANALYZE of …"): a placeholder, quoted or qualified name
        rf"(?:ANALYZE|VACUUM|REINDEX|CLUSTER)(?:\s+\([^)]*\)|\s+VERBOSE)*(?:\s+(?:TABLE|INDEX|DATABASE|SCHEMA))?"
        rf"\s+(?:{_STRONG}|{_NAME}\s*\.\s*{NAME})",
        r"(?:CREATE|DROP)_REPLICATION_SLOT\b",
    )
]
# Functions that write, inside a text that is SQL.
SQL = re.compile(r"^\s*\(?\s*(?:SELECT|WITH|VALUES|CALL|DO|PERFORM|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
WRITING_FUNCTIONS = re.compile(
    r"\b(?:pg_terminate_backend|pg_create_(?:logical|physical)_replication_slot|pg_drop_replication_slot|"
    r"pg_copy_(?:logical|physical)_replication_slot|pg_replication_origin_(?:advance|create|drop)|setval|"
    r"lo_(?:create|creat|import|unlink|put|from_bytea|truncate|truncate64)|lowrite|pg_reload_conf)\s*\(",
    re.IGNORECASE,
)


def writes(text: str) -> bool:
    """Whether `text` is (or starts building) SQL that changes a server."""
    if any(p.search(text) for p in STATEMENTS):
        return True
    return bool(SQL.match(text) and WRITING_FUNCTIONS.search(text))


def _text(node: ast.expr) -> str | None:
    """The text of a string expression (`{}` for each value put in), None for anything else."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "{}") + (right if right is not None else "{}")
    return None


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def statements(source: str) -> list[tuple[int, str]]:
    """(line, text) of every writing statement in a Python source."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if id(node) in skip:
            return
        if isinstance(node, ast.expr) and (text := _text(node)) is not None:
            if writes(text):
                found.append((node.lineno, " ".join(text.split())))
            return  # its parts were read with it
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def offenders(root: Path = ROOT) -> list[str]:
    """`file:line: statement` for each writing statement outside changes/ and the allowlist."""
    out = []
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(HOME) or rel in ALLOWED:
                continue
            out += [f"{rel}:{line}: {text[:160]}" for line, text in statements(path.read_text())]
    return out


def test_every_change_is_made_in_changes() -> None:
    found = offenders()
    assert not found, (
        "SQL that changes a server outside migration_core/changes/ (move it there, journaled, next to its undo):\n"
        + "\n".join(found)
    )


def test_allowlist_names_files_that_exist_and_write() -> None:
    for rel, why in ALLOWED.items():
        path = ROOT / rel
        assert path.is_file() and why, rel
        assert statements(path.read_text()), f"{rel} writes nothing any more: take it off the allowlist"


PLANTED = '''
"""Docstring prose: ALTER DATABASE x SET default_transaction_read_only = on is only words here."""
import asyncpg

FENCE = "ALTER DATABASE {} SET default_transaction_read_only = on"

async def planted(conn: asyncpg.Connection, db: str, name: str, me: str, pid: int) -> None:
    await conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {me}")
    await conn.execute(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC")
    await conn.execute("SET lock_timeout = 0; " f"drop table if exists {name}")
    await conn.execute("ALTER TABLE " + name + " REPLICA IDENTITY FULL")
    await conn.execute("SELECT pg_terminate_backend($1)", pid)
    await conn.execute("SELECT setval($1::regclass, $2, true)", name, 1)
    await conn.execute("SELECT lo_put($1::oid, $2::bigint, $3::bytea)", 1, 0, b"")
    await conn.execute(f"COMMENT ON LARGE OBJECT {pid} IS 'x'")
    await conn.execute(f"TRUNCATE ONLY {name}")
    await conn.execute(f"REFRESH MATERIALIZED VIEW {name}")
    await conn.execute("ALTER SYSTEM SET wal_level = logical")
    await conn.execute("CREATE_REPLICATION_SLOT s LOGICAL pgoutput")
    await conn.execute(f"GRANT {name} TO {me}")
    await conn.execute('create extension if not exists "uuid-ossp"')
    await conn.execute(f"ANALYZE {name}")
'''

PROSE = """
def messages(user: str, table: str, kind: str, database: str) -> list[str]:
    return [
        "drop it yourself (ALTER SUBSCRIPTION … DISABLE; SET (slot_name = NONE); DROP)",
        f'run as a superuser: ALTER ROLE "{user}" WITH REPLICATION;',
        f'grant it, e.g. GRANT USAGE ON SCHEMA … TO "{user}"; GRANT SELECT ON ALL TABLES IN SCHEMA … TO "{user}";',
        f"add it on the target (`ALTER TABLE {table} ADD COLUMN x {kind}`) and replication resumes",
        "drop unused slots (`SELECT pg_drop_replication_slot(name)`; see `pg_replication_slots`)",
        f"create it first (CREATE DATABASE \\"{database}\\") or grant CREATEDB to the target role",
        "Create the database, then drop the table by hand; grant them access to it",
        "SELECT pg_catalog.lo_get($1), setting FROM pg_settings",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'ALTER%'",
        "ANALYZE of",
        "analyze",
    ]
"""


def test_detector_catches_planted_statements() -> None:
    """A detector that finds nothing proves nothing: each planted writer is found, on its own line."""
    found = statements(PLANTED)
    lines = sorted({line for line, _ in found})
    planted = [i for i, text in enumerate(PLANTED.splitlines(), 1) if "conn.execute" in text or "FENCE =" in text]
    assert lines == planted, (lines, planted, found)


def test_detector_ignores_prose_and_reads() -> None:
    assert statements(PROSE) == []


# The Azure calls that change a flexible server, by operation group: made, journaled, only in changes/azure.py.
AZURE_WRITES = {
    "firewall_rules": {"begin_create_or_update", "begin_delete"},
    "databases": {"begin_create", "begin_delete"},
    "configurations": {"begin_update", "begin_put"},
    "servers": {"begin_create_or_update", "begin_update", "begin_delete", "begin_restart", "begin_start", "begin_stop"},
}
# Azure calls made elsewhere, each with why.
AZURE_ALLOWED = {
    ("migration_core/azure/provision.py", "servers.begin_create_or_update"): "the server itself: its provisioning "
    "request (prov-N) is its record, and pgmig never deletes a server",
    ("migration_core/azure/provision.py", "servers.begin_update"): "grows the storage of a server being provisioned "
    "again (prov-N records it; storage cannot shrink, so there is no undo)",
}


def azure_calls(source: str) -> list[tuple[int, str]]:
    """(line, `group.method`) of every call of a method in AZURE_WRITES on an operation group (`x.databases.…`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.attr in AZURE_WRITES.get(node.func.value.attr, ())
        ):
            found.append((node.lineno, f"{node.func.value.attr}.{node.func.attr}"))
    return sorted(found)


def azure_offenders(root: Path = ROOT) -> list[str]:
    out = []
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if not rel.startswith(HOME):
                out += [f"{rel}:{n}: {c}" for n, c in azure_calls(path.read_text()) if (rel, c) not in AZURE_ALLOWED]
    return out


def test_every_azure_change_is_made_in_changes() -> None:
    found = azure_offenders()
    assert not found, (
        "an Azure call that changes a flexible server outside migration_core/changes/ (move it to "
        "changes/azure.py, journaled, next to its undo):\n" + "\n".join(found)
    )


def test_azure_allowlist_names_calls_that_exist() -> None:
    for (rel, what), why in AZURE_ALLOWED.items():
        assert why and what in [c for _, c in azure_calls((ROOT / rel).read_text())], f"{rel} makes no {what} call"


AZURE_PLANTED = """
async def planted(client, group, name, rule, body):
    await client.firewall_rules.begin_create_or_update(group, name, rule, body)
    await client.databases.begin_delete(group, name, rule)
    await client.configurations.begin_update(group, name, rule, body)
    await client.servers.begin_restart(group, name)
    await client.firewall_rules.get(group, name, rule)
    await client.migrations.create(group, name, rule, body)
"""


def test_azure_detector_finds_writes_and_not_reads() -> None:
    assert azure_calls(AZURE_PLANTED) == [
        (3, "firewall_rules.begin_create_or_update"),
        (4, "databases.begin_delete"),
        (5, "configurations.begin_update"),
        (6, "servers.begin_restart"),
    ]


def test_detector_sees_an_offender_in_the_tree(tmp_path: Path) -> None:
    """The walk over the tree reports file and line of a statement outside changes/, and not inside it."""
    for rel in ("migration_core/flows/x.py", "migration_core/changes/x.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('import asyncpg\n\nSQL = "DROP PUBLICATION {}"\n')
    assert offenders(tmp_path) == ["migration_core/flows/x.py:3: DROP PUBLICATION {}"]
