"""`/pgmig` text → commands; every malformed input becomes a UsageError naming what was wrong."""

from __future__ import annotations

from dataclasses import fields

import pytest

from handlers.args import MigrateArgs
from handlers.grammar import COMMANDS, UsageError, close_match, did_you_mean, normalize, parse
from handlers.migrations import migrate_text
from migration_core.engine.config import MigrationRequest
from migration_core.state.errors import MigrationError
from migration_core.state.models import DdlCapture, MigrationOptions, Mode


def test_check_with_every_option():
    cmd = parse('check onprem azure --db "sales, billing" --mode=offline --replica-identity-full')
    assert cmd.name == "check"
    assert cmd.args == {
        "source": "onprem",
        "target": "azure",
        "db": ["sales", "billing"],
        "mode": "offline",
        "replica_identity_full": True,
    }


def test_defaults_and_empty_text_is_help():
    assert parse("check a b").args == {
        "source": "a",
        "target": "b",
        "db": None,
        "mode": "online",
        "replica_identity_full": False,
    }
    assert parse("").name == "help"
    assert parse("HELP check").args == {"command": "check"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("frobnicate", "unknown command `frobnicate`"),
        ("check onlyone", "`check` needs TARGET"),
        ("check", "`check` needs SOURCE TARGET"),
        ("check a b c", "does not take `c`"),
        ("check a b --db", "`--db` needs a value"),
        ("check a b --db ,", "needs at least one name"),
        ("check a b --mode sideways", "must be one of online, offline"),
        ("check a b --force", "has no option `--force`"),
        ('check a "b', "could not read the command"),
        ("servers extra", "does not take `extra`"),
        ("check a b --mode online --mode=offline", "`--mode` is given twice"),
        ("status prov-x", "is not a migration id"),
    ],
)
def test_malformed_commands(text, message):
    with pytest.raises(UsageError) as err:
        parse(text)
    assert message in str(err.value)


def test_usage_is_derived_from_the_spec():
    assert COMMANDS["check"].usage == (
        "/pgmig check SOURCE TARGET [--db a,b] [--mode online|offline] [--replica-identity-full]"
    )


# What Slack, a phone or a paste makes of what was typed: normalized outside quotes, never inside.
@pytest.mark.parametrize(
    "text, db",
    [
        ("check a b —db shop", ["shop"]),  # em dash: Slack's `--`
        ("check a b –db shop", ["shop"]),  # en dash
        ("check a b -—db shop", ["shop"]),
        ("check a b --db “shop”", ["shop"]),
        ("check a b --db ”shop“", ["shop"]),  # curly quotes the wrong way round still pair up
        ("check a b --db ‘shop’", ["shop"]),
        ("check a b —db=“sales, billing”", ["sales", "billing"]),
        ("check a b --db=‘x’,‘y’", ["x", "y"]),
        ("check\u00a0a\u202fb\u2009--db\u00a0shop", ["shop"]),  # no-break, narrow no-break, thin spaces
        ("\ufeffcheck a b\u200b--db shop", ["shop"]),  # byte-order mark, zero-width space
        # names are data: inside quotes only the quote marks change
        ('check a b --db "sales–2024"', ["sales–2024"]),
        ("check a b --db 'sales—2024'", ["sales—2024"]),
        ("check a b --db “sales–2024”", ["sales–2024"]),
        ('check a b --db "—db"', ["—db"]),
        ("check a b --db “–x”", ["–x"]),
        ("check a b --db “a\u00a0b”", ["a\u00a0b"]),
        ('check a b --db "“shop”"', ["“shop”"]),
        ("check a b --db “it’s”", ["it’s"]),
        ("check a b --db “back\\slash”", ["back\\slash"]),
        ("check a b --db o’brien", ["o’brien"]),  # an apostrophe in a word is not a quote
        ("check a b --db ‘it’s’", ["it’s"]),
        ("check a b --db sales—2024", ["sales—2024"]),  # a dash inside a word stays
    ],
)
def test_chat_typography_is_normalized_outside_quotes_only(text, db):
    assert parse(text).args["db"] == db


def test_normalize_changes_only_what_lies_outside_quotes():
    assert normalize("check a b —db shop –mode offline") == "check a b --db shop --mode offline"
    assert normalize("x \"—db\" '–y' “–z”\u00a0") == 'x "—db" \'–y\' "–z" '
    assert normalize("") == ""


@pytest.mark.parametrize(
    "text, message",
    [
        ("stauts", "unknown command `stauts` — did you mean `status`?"),
        ("STAUTS mig-1", "unknown command `STAUTS` — did you mean `status`?"),
        ("chek a b", "unknown command `chek` — did you mean `check`?"),
        ("help stauts", "unknown command `stauts` — did you mean `status`?"),
        ("migrate a b --mode online --paralel 4", "`migrate` has no option `--paralel` — did you mean `--parallel`?"),
        ("migrate a b --mode online —paralel=4", "`migrate` has no option `--paralel` — did you mean `--parallel`?"),
        ("check a b -db shop", "`check` has no option `-db` — did you mean `--db`?"),
        ("check a b --mode onlin", "not `onlin` — did you mean `online`?"),
        ("check a “b", "could not read the command: a quotation mark is not closed"),
    ],
)
def test_a_mistyped_word_gets_a_did_you_mean(text, message):
    with pytest.raises(UsageError) as err:
        parse(text)
    assert message in str(err.value)


def test_no_suggestion_when_nothing_is_close():
    for text in ("frobnicate", "check a b --force", "check a b --mode sideways"):
        with pytest.raises(UsageError) as err:
            parse(text)
        assert "did you mean" not in str(err.value)
    assert close_match("x" * 5000, COMMANDS) is None
    assert close_match("SRC", ["src", "tgt"]) == "src"
    assert did_you_mean("tgtt", ["src", "tgt"]) == " — did you mean `tgt`?"


def test_option_names_are_not_case_sensitive():
    assert parse("check a b --DB shop --Mode=offline").args["db"] == ["shop"]


@pytest.mark.parametrize("spec", COMMANDS.values(), ids=lambda s: s.name)
def test_each_command_reads_its_arguments_as_its_own_dataclass(spec):
    names = {p.lower() for p in spec.positionals + spec.optional_positionals} | {o.dest for o in spec.options}
    assert ({f.name for f in fields(spec.args)} if spec.args else set()) == names


@pytest.mark.parametrize(
    "flags, capture",
    [("", DdlCapture.DEFAULT), ("--capture-ddl", DdlCapture.ON), ("--NO-capture-ddl", DdlCapture.OFF)],
)
def test_schema_change_capture_is_three_way_per_migration(flags, capture):
    """Neither flag: as `[online] capture_ddl` says; either one overrides it for this migration, and the canonical
    command (the audit's, and a retry's advice) says the same."""
    a = parse(f"migrate a b --mode online {flags}").of(MigrateArgs)
    assert a.capture is capture
    assert parse(migrate_text(a).removeprefix("/pgmig ")).of(MigrateArgs) == a
    assert capture.resolved(True) is (capture is not DdlCapture.OFF)
    assert capture.resolved(False) is (capture is DdlCapture.ON)


@pytest.mark.parametrize("text", ["--capture-ddl --no-capture-ddl", "--no-capture-ddl --capture-ddl"])
def test_capturing_and_not_capturing_together_is_refused(text):
    with pytest.raises(UsageError, match="contradict each other: give one"):
        parse(f"migrate a b --mode online {text}")


@pytest.mark.parametrize("capture, flag", [(DdlCapture.ON, "--capture-ddl"), (DdlCapture.OFF, "--no-capture-ddl")])
def test_either_capture_flag_is_refused_for_an_offline_migration(capture, flag):
    offline = MigrationRequest("a", "b", Mode.OFFLINE, "U1", capture_ddl=capture)
    assert [c.option for c in offline.conflicts()] == ["capture_ddl"]
    with pytest.raises(MigrationError, match=f"`{flag}` is for online migrations"):
        offline.validate()
    assert not MigrationRequest("a", "b", Mode.ONLINE, "U1", capture_ddl=capture).conflicts()
    assert not MigrationRequest("a", "b", Mode.OFFLINE, "U1").conflicts()


def test_the_choice_is_stored_with_the_migration_and_older_rows_read_as_the_default():
    for capture in DdlCapture:
        stored = MigrationOptions(capture_ddl=capture).as_dict()
        assert MigrationOptions.from_dict(stored).capture_ddl is capture
    # before the opt-out, a bool: true was --capture-ddl, false "as configured"
    assert MigrationOptions.from_dict({"capture_ddl": True}).capture_ddl is DdlCapture.ON
    assert MigrationOptions.from_dict({"capture_ddl": False}).capture_ddl is DdlCapture.DEFAULT
