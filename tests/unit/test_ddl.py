"""`/pgmig ddl`'s words and a captured change's state and danger (observe/ddl.py)."""

from __future__ import annotations

from datetime import datetime, timezone

from handlers.grammar import parse
from migration_core.observe.ddl import Captured


def change(tag: str, statement: str, **decided: str) -> Captured:
    return Captured("shop", 1, tag, ["table public.t"], statement, datetime.now(timezone.utc), "app", **decided)


def test_a_reason_takes_the_rest_of_the_words_and_only_a_decision_changes_something():
    cmd = parse("ddl mig-3 skip 2 the target gets its own index")
    assert cmd.args == {"migration": "mig-3", "decision": "skip", "id": "2", "reason": "the target gets its own index"}
    assert not cmd.reads_only and parse("ddl 3").reads_only


def test_destructive_changes_are_told_apart():
    assert change("DROP TABLE", "DROP TABLE t").destructive
    assert change("ALTER TABLE", "ALTER TABLE t ALTER COLUMN a TYPE bigint").destructive
    assert change("ALTER TABLE", "alter table t rename column a to b").destructive
    assert not change("ALTER TABLE", "ALTER TABLE t ADD COLUMN typed text").destructive
    assert not change("CREATE INDEX", "CREATE INDEX i ON t (a)").destructive


def test_state_follows_the_decision_then_the_targets_outcome():
    assert change("ALTER TABLE", "x").state == "pending"
    assert change("ALTER TABLE", "x", decision="apply").state.startswith("apply decided")
    failed = change("ALTER TABLE", "x", decision="apply", outcome="failed", error="boom", decided_by="U1")
    assert failed.state == "failed" and "error on the target: boom" in failed.words()
