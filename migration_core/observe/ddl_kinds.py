"""What kind of schema change a captured statement is (issue 26), told from its command tag and its text:
whether it is additive — safe for pgmig to apply by itself where `[online] ddl_auto_apply` names its kind —
or destructive, needing `required_approvals` like a cutover.

Conservative on purpose: a statement is additive only when its whole text matches the plain form of its kind
(one statement, one ADD COLUMN whose default is a literal), since anything else may rewrite the table, give the
target other values than the source (a volatile or time-dependent default evaluated later, on the target) or
carry more statements than the tag says. Anything not recognised is left to the team.

The event trigger records `current_query()`: the whole query string the client sent, which may hold more than
the schema change (`BEGIN; ALTER TABLE …; INSERT …; COMMIT` in one `psql -c`), or a call whose function, procedure
or DO block made it. Logical replication carries that string's data changes itself: applying the whole string on
the target would write them twice. `applied` keeps the string's schema statements alone (split as the server's
lexer would: quotes, dollar quotes, comments), and nothing when the change came from inside code.
"""

from __future__ import annotations

import re

ADDITIVE = ("add_column", "create_index", "create_table")

_NAME = r'(?:"(?:[^"]|"")+"|[a-z_][\w$]*)'
_QUALIFIED = rf"{_NAME}(?:\s*\.\s*{_NAME})?"
_TYPE = (
    rf"{_QUALIFIED}(?:\s+(?:varying|precision))?(?:\s*\(\s*\d+(?:\s*,\s*\d+)?\s*\))?"
    r"(?:\s+with(?:out)?\s+time\s+zone)?(?:\s*\[\s*\d*\s*\])*"
)
_LITERAL = r"(?:'(?:[^']|'')*'(?:\s*::\s*[\w ]+)?|[-+]?\d+(?:\.\d+)?|true|false|null)"
_CLAUSE = rf"(?:\s+(?:NOT\s+)?NULL|\s+DEFAULT\s+{_LITERAL}|\s+COLLATE\s+{_QUALIFIED})"
_END = r"\s*;?\s*$"
_ADD_COLUMN = re.compile(
    rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_QUALIFIED}\s+ADD\s+(?:COLUMN\s+)?"
    rf"(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}\s+(?P<type>{_TYPE}){_CLAUSE}*{_END}",
    re.IGNORECASE,
)
_SERIAL = re.compile(r"^(?:small|big)?serial[248]?$", re.IGNORECASE)
_PLAIN = {  # of a create_index or create_table tag: one statement (a partition is left to the team)
    "create_index": re.compile(r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s[^;]*" + _END, re.IGNORECASE),
    "create_table": re.compile(r"^\s*CREATE\s+TABLE\s(?!.*\bPARTITION\s+OF\b)[^;]*" + _END, re.IGNORECASE | re.DOTALL),
}
# ALTER … TYPE, DROP …, RENAME, SET LOGGED/UNLOGGED: data or names the applications rely on change or go
_DESTRUCTIVE = re.compile(r"\b(DROP|TYPE|RENAME|SET\s+(UN)?LOGGED)\b", re.IGNORECASE)
# ADD COLUMN computed per row (a function-call default, GENERATED, serial): the whole table is rewritten
_REWRITE = re.compile(r"\bADD\b.*(\bDEFAULT\b[^,]*\(|\bGENERATED\b|\b(small|big)?serial[248]?\b)", re.IGNORECASE)


# statements a query string may carry beside its schema change that the stream brings (data) or that mean
# nothing on the target (transaction control, settings, reads)
_BESIDE = frozenset(
    "begin start commit end rollback abort savepoint release set reset select insert update delete merge copy "
    "with values table show explain lock notify listen unlisten discard fetch move close declare deallocate "
    "checkpoint vacuum analyze prepare".split()
)
# what a schema statement of its own begins with (DO, CALL, EXECUTE or a function in a SELECT run other code)
_SCHEMA = frozenset("create alter drop comment grant revoke security import reindex".split())
_DOLLAR = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$")


def _scan(text: str) -> list[tuple[str, str]]:
    """A query string in pieces, as the server's lexer sees them: ("code", …), ("comment", …) — nested block
    comments too — and (";", ";") where a statement ends; quoted names, strings (E'' with its backslashes) and
    dollar-quoted bodies stay inside their code piece."""
    out: list[tuple[str, str]] = []
    i, start, n = 0, 0, len(text)

    def cut(kind: str, end: int) -> None:
        nonlocal start
        if start < i:
            out.append(("code", text[start:i]))
        out.append((kind, text[i:end]))
        start = end

    while i < n:
        ch, two = text[i], text[i : i + 2]
        word_before = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        if two == "--":
            end = text.find("\n", i)
            cut("comment", n if end < 0 else end + 1)
        elif two == "/*":
            depth, end = 1, i + 2
            while end < n and depth:
                depth += {"/*": 1, "*/": -1}.get(text[end : end + 2], 0)
                end += 2 if text[end : end + 2] in ("/*", "*/") else 1
            cut("comment", end)
        elif ch == ";":
            cut(";", i + 1)
        elif ch in "'\"":
            backslashes = ch == "'" and i > 0 and text[i - 1] in "eE" and not (i > 1 and text[i - 2].isalnum())
            end = i + 1
            while end < n and not (text[end] == ch and text[end + 1 : end + 2] != ch):
                end += 2 if (backslashes and text[end] == "\\") or text[end : end + 2] == ch * 2 else 1
            i = end + 1
            continue
        elif ch == "$" and not word_before and (m := _DOLLAR.match(text, i)):
            end = text.find(m.group(), m.end())
            i = n if end < 0 else end + len(m.group())
            continue
        else:
            i += 1
            continue
        i = start
    if start < n:
        out.append(("code", text[start:]))
    return out


def statements(text: str) -> list[str]:
    """A query string's statements (those with more than comments), split at the semicolons outside quotes,
    dollar quotes and comments."""
    found, current = [], ""
    for kind, piece in [*_scan(text), (";", ";")]:
        if kind == ";":
            if _words(current):
                found.append(current.strip())
            current = ""
        else:
            current += piece
    return found


def _words(statement: str) -> list[str]:
    """A statement's words outside its comments, lower case (for telling what it is)."""
    code = " ".join(piece for kind, piece in _scan(statement) if kind == "code")
    return code.lower().replace("(", " ( ").split()


def applied(statement: str) -> str:
    """What applying a captured change runs on the target: the query string's schema statements, in their
    order; the string itself when it is one; empty when the change came from code (a DO block, a procedure, a
    function called in a query) whose other work applying would repeat, or from a SQL-standard function body
    (`BEGIN ATOMIC`, whose semicolons end nothing) among other statements."""
    parts = statements(statement)
    schema = [p for p in parts if _words(p)[0] not in _BESIDE]
    if not schema or any(_words(p)[0] not in _SCHEMA for p in schema):
        return ""
    if len(parts) == 1:
        return statement.strip()
    if re.search(r"\bBEGIN\s+ATOMIC\b", statement, re.IGNORECASE):
        return ""
    return ";\n".join(schema)


def of_tag(tag: str) -> str:
    """A command tag as a word: `CREATE TABLE` → create_table."""
    return "_".join(tag.lower().split())


def kind(tag: str, statement: str) -> str:
    """One of ADDITIVE when the statement is plainly that; empty otherwise."""
    word = of_tag(tag)
    if word == "alter_table" and (m := _ADD_COLUMN.match(statement)) and not _SERIAL.match(m["type"]):
        return "add_column"
    plain = _PLAIN.get(word)
    return word if plain and plain.match(statement) else ""


def destructive(tag: str, statement: str) -> bool:
    """Whether the change drops, retypes, renames or rewrites: it then needs the approvals a cutover does."""
    return tag.startswith("DROP") or (
        tag.startswith("ALTER") and bool(_DESTRUCTIVE.search(statement) or _REWRITE.search(statement))
    )
