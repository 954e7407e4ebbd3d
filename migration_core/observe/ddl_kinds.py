"""What kind of schema change a captured statement is (issue 26), told from its command tag and its text:
whether it is additive — safe for pgmig to apply by itself where `[online] ddl_auto_apply` names its kind —
or destructive, needing `required_approvals` like a cutover.

Conservative on purpose: a statement is additive only when its whole text matches the plain form of its kind
(one statement, one ADD COLUMN whose default is a literal), since anything else may rewrite the table, give the
target other values than the source (a volatile or time-dependent default evaluated later, on the target) or
carry more statements than the tag says. Anything not recognised is left to the team.
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
