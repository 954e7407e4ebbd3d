"""`/pgmig` text → commands; every malformed input becomes a UsageError naming what was wrong."""

from __future__ import annotations

import pytest

from handlers.grammar import COMMANDS, UsageError, parse


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
