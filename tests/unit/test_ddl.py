"""`/pgmig ddl`'s words and a captured change's state and danger (observe/ddl.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bot.settings import SettingsError
from handlers.grammar import parse
from migration_core.engine.config import MigrationRequest
from migration_core.observe.ddl import Captured
from migration_core.observe.ddl_kinds import kind
from migration_core.state.models import Mode
from tests.unit.test_settings import GOOD, load


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


def test_only_plain_additive_statements_have_a_kind_pgmig_may_apply_by_itself():
    assert kind("ALTER TABLE", "ALTER TABLE customer ADD COLUMN phone text") == "add_column"
    assert kind("ALTER TABLE", "alter table s.t add email varchar(80) NOT NULL DEFAULT ''") == "add_column"
    assert kind("ALTER TABLE", "ALTER TABLE t ADD COLUMN n numeric(10, 2) DEFAULT 0;") == "add_column"
    assert kind("CREATE INDEX", "CREATE INDEX CONCURRENTLY i ON t (a)") == "create_index"
    assert kind("CREATE TABLE", "CREATE TABLE x (id int PRIMARY KEY, v text)") == "create_table"
    for tag, statement in (
        ("ALTER TABLE", "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now()"),  # the target's now, not the source's
        ("ALTER TABLE", "ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid()"),  # volatile: a rewrite
        ("ALTER TABLE", "ALTER TABLE t ADD COLUMN id bigserial"),
        ("ALTER TABLE", "ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS (b * 2) STORED"),
        ("ALTER TABLE", "ALTER TABLE t ADD COLUMN a int, DROP COLUMN b"),
        ("ALTER TABLE", "ALTER TABLE t ADD COLUMN a int; DROP TABLE x"),  # current_query() of several statements
        ("CREATE TABLE", "CREATE TABLE x (id int); INSERT INTO x VALUES (1)"),
        ("CREATE TABLE", "CREATE TABLE x PARTITION OF y FOR VALUES IN (1)"),
        ("CREATE TABLE AS", "CREATE TABLE x AS SELECT 1"),
    ):
        assert kind(tag, statement) == "", statement
    assert change("ALTER TABLE", "ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid()").destructive
    assert not change("ALTER TABLE", "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT 'epoch'").destructive


def test_a_pending_destructive_change_shows_its_approvals_when_more_than_one_is_needed():
    c = change("DROP TABLE", "DROP TABLE t")
    c.approvals = ["U0BOB"]
    assert "⚠️ destructive, 1 of 2 approvals (U0BOB)" in c.words(2)
    assert "approvals" not in c.words(1) and c.round == "ddl:shop:1"


def test_capture_ddl_is_an_online_option_typed_or_configured(tmp_path):
    cmd = parse("migrate a b --mode online --capture-ddl")
    assert cmd.args["capture_ddl"] is True and parse("migrate a b --mode online").args["capture_ddl"] is False
    offline = MigrationRequest("a", "b", Mode.OFFLINE, "U1", capture_ddl=True)
    assert [c.option for c in offline.conflicts()] == ["capture_ddl"]
    assert not MigrationRequest("a", "b", Mode.ONLINE, "U1", capture_ddl=True).conflicts()
    good = load(tmp_path, GOOD + '[online]\nddl_auto_apply = ["add_column", "create_table"]\n')
    assert good.online.ddl_auto_apply == ["add_column", "create_table"]
    with pytest.raises(SettingsError, match="ddl_auto_apply.*drop_table"):
        load(tmp_path, GOOD + '[online]\nddl_auto_apply = ["drop_table"]\n')


def test_a_query_string_is_split_as_the_servers_lexer_would_and_only_its_schema_statements_are_applied():
    from migration_core.observe.ddl_kinds import applied, statements

    tricky = (
        "ALTER TABLE \"we;ird\" ADD c text DEFAULT 'a;b'; insert into x select $$;$$, $q$ ; $q$, E'\\';' -- ; no\n"
        "; /* ; /* nested ; */ ; */ update t set a = 1;"
    )
    assert len(statements(tricky)) == 3 and statements(tricky)[0].endswith("DEFAULT 'a;b'")
    assert applied(tricky) == "ALTER TABLE \"we;ird\" ADD c text DEFAULT 'a;b'"
    psql_c = "BEGIN; SET search_path = app; ALTER TABLE t ADD COLUMN a int; INSERT INTO t VALUES (1); COMMIT"
    assert applied(psql_c) == "ALTER TABLE t ADD COLUMN a int"
    assert change("ALTER TABLE", psql_c).kind == "add_column"  # what is applied is plainly additive
    assert (
        applied("CREATE INDEX i ON t (a); CREATE TABLE z (id int)")
        == "CREATE INDEX i ON t (a);\nCREATE TABLE z (id int)"
    )
    assert applied("ALTER TABLE t ADD a int; -- a comment") == "ALTER TABLE t ADD a int; -- a comment"
    # made by code: applying it would repeat the code's other work, so pgmig does not
    for code in ("DO $$ BEGIN EXECUTE 'ALTER TABLE t ADD b int'; END $$", "SELECT make_it()", "CALL p()"):
        assert applied(code) == "" and change("ALTER TABLE", code).unappliable
    with_body = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; INSERT INTO t VALUES (2)"
    assert applied(with_body) == ""
    assert "cannot apply it" in change("CREATE INDEX", "SELECT make_it()").words()
