"""Whatever anyone types or whatever a click carries, pgmig answers one readable line and audits it:
the grammar only ever returns a command or a UsageError, the router never raises."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers import router
from handlers.actions import Action
from handlers.authz import Policy, StaticDirectory
from handlers.context import Invocation, Reply, Services
from handlers.grammar import COMMANDS, ParsedCommand, UsageError, normalize, parse
from handlers.publisher import ProvisioningPublisher
from migration_core.azure.clients import AzureClients
from migration_core.azure.config import AzureConfig
from migration_core.azure.provisioning import Provisioner
from migration_core.engine.api import Engine, EngineConfig
from migration_core.state.events import NoEvents
from migration_core.state.models import AuditEntry
from migration_core.store import Store

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOKENS = st.sampled_from(
    [
        *COMMANDS,
        *(o.flag for s in COMMANDS.values() for o in s.options),
        "mig-1",
        "prov-2",
        "—db",
        "“quoted”",
        "'",
        '"',
        "²",
        "٣",
        "9" * 5000,
        "-",
        "--",
        "=",
        "a,b",
        "\x00",
        "\n",
        # what chat clients and pastes make of typed text (normalized outside quotes)
        "–db",
        "—parallel",
        "-—mode",
        "—",
        "‘x’",
        "‘",
        "’",
        "o’brien",
        "„",
        "‟",
        "“a–b”",
        "“unclosed",
        "\u00a0",
        "\u202f",
        "\u2009",
        "\u200b",
        "\ufeff",
        "\u2028",
        "\\",
        "=“x”",
    ]
)
TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(TOKENS, st.text(max_size=12)), max_size=8).map(" ".join),
    st.lists(st.one_of(TOKENS, st.text(max_size=12)), max_size=8).map("".join),  # glued: `—db“x”`
)


@FUZZ
@given(TEXT)
def test_parse_returns_a_command_or_a_usage_error(text):
    try:
        assert isinstance(parse(text), ParsedCommand)
    except UsageError as err:
        assert str(err) and len(str(err)) < 1000 and "\n" not in str(err)  # one line, never an echo


QUOTES = set("\"\\'“”„‟‘’‚‛")


@FUZZ
@given(TEXT)
def test_normalize_never_raises_and_is_stable(text):
    once = normalize(text)
    assert isinstance(once, str) and normalize(once) == once  # what it makes is already plain


@FUZZ
@given(st.text(min_size=1, max_size=40).filter(lambda n: not QUOTES & set(n) and "," not in n))
def test_a_quoted_name_reaches_the_command_unchanged(name):
    """Inside quotes — ASCII or curly — dashes, no-break spaces and the rest are the name itself."""
    for quoted in (f'"{name}"', f"“{name}”", f"'{name}'"):
        try:
            cmd = parse(f"check a b —db {quoted}")
        except UsageError as err:  # only a name that is all spaces
            assert not name.strip() and "needs at least one name" in str(err)
        else:
            assert cmd.args["db"] == [name.strip()]


class Silent:
    async def post(self, channel: str, reply: Reply, thread_ts: str | None = None) -> str:
        return ""

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        return None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Services with no servers: every command either answers from the store or says what is missing."""
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(Store.open(str(tmp_path_factory.mktemp("fuzz") / "state.sqlite")))
    engine = Engine(store, {}, NoEvents(), EngineConfig(workdir=tmp_path_factory.mktemp("work")))
    policy = Policy(approvers=("U0APPROVER",))
    provisioner = Provisioner(
        engine,
        AzureClients(AzureConfig()),  # Azure not configured: its commands say what to set
        ProvisioningPublisher(Silent(), policy),
        required_approvals=1,
        approval_minutes=60,
    )
    svc = Services({}, policy, StaticDirectory(), engine, Silent(), provisioner)
    yield loop, svc
    loop.run_until_complete(engine.close())
    loop.run_until_complete(store.close())
    loop.close()


def answered(loop: asyncio.AbstractEventLoop, svc: Services, call) -> Reply | None:
    before = len(loop.run_until_complete(svc.engine.store.audit_log(limit=100000)))
    reply = loop.run_until_complete(call)
    assert len(loop.run_until_complete(svc.engine.store.audit_log(limit=100000))) > before  # every input is audited
    return reply


@FUZZ
@given(TEXT)
def test_any_command_text_gets_one_readable_answer(world, text):
    loop, svc = world
    reply = answered(loop, svc, router.handle_command(text, Invocation("U0FUZZ", "C0"), svc))
    assert isinstance(reply, Reply) and reply.text and "Traceback" not in reply.text + str(reply.blocks)


@FUZZ
@given(
    st.one_of(st.sampled_from([a.value for a in Action]), st.text(max_size=50)),
    st.one_of(st.text(max_size=200), st.sampled_from(["mig-1", "prov-1", "mig-" + "9" * 5000, ""])),
)
def test_any_click_gets_an_answer_or_a_quiet_card_update(world, action_id, value):
    loop, svc = world
    reply = answered(loop, svc, router.handle_action(action_id, value, Invocation("U0FUZZ", "C0"), svc))
    assert reply is None or (reply.text and "Traceback" not in reply.text)


# Inputs that once crashed the parser, and their neighbours: each is a UsageError a person can read.
@pytest.mark.parametrize(
    "text, message",
    [
        ("migrate a b --mode online --parallel ²", "`--parallel` needs a whole number from 1 to 64, not `²`"),
        ("migrate a b --parallel ²", "`--parallel` needs a whole number from 1 to 64, not `²`"),
        ("migrate a b --mode online --parallel ٣", "`--parallel` needs a whole number from 1 to 64, not `٣`"),
        ('migrate a b --mode online --parallel "5\n"', "`--parallel` needs a whole number from 1 to 64"),
        ("migrate a b --mode online --parallel 0", "`--parallel` needs a whole number from 1 to 64, not `0`"),
        ("migrate a b --mode online --parallel 65", "`--parallel` needs a whole number from 1 to 64, not `65`"),
        ("migrate a b --mode online --parallel 0064", "`--parallel` needs a whole number from 1 to 64"),
        ("status mig-" + "9" * 5000, "is not a migration id (like mig-3)"),
        ("status prov-" + "1" * 5000, "is not a migration id (like mig-3)"),
        ("cancel " + "7" * 10, "is not a migration id (like mig-3)"),
        ("status mig-٣", "is not a migration id (like mig-3)"),
        ('status "mig-3\n"', "is not a migration id (like mig-3)"),
        ("status mig-", "is not a migration id (like mig-3)"),
    ],
)
def test_input_that_once_crashed_the_parser_is_a_readable_usage_error(text, message):
    with pytest.raises(UsageError) as err:
        parse(text)
    assert message in str(err.value) and len(str(err.value)) < 200 and "\n" not in str(err.value)


def test_the_largest_ids_and_the_range_of_whole_numbers_still_parse():
    assert parse("status mig-" + "9" * 9).args["migration"] == "mig-999999999"
    assert parse("audit PROV-000000042").args["migration"] == "prov-42"
    assert parse("retry 3").args["migration"] == "mig-3"
    assert [parse(f"migrate a b --mode online --parallel={n}").args["parallel"] for n in ("1", "08", "64")] == [
        1,
        8,
        64,
    ]


def test_a_parser_bug_is_acked_quietly_then_answered_and_audited(world, monkeypatch):
    loop, svc = world

    def broken(text: str):
        raise RuntimeError("parser bug near postgresql://u:hunter2-pw@db/x")

    monkeypatch.setattr(router, "parse", broken)
    assert router.ack_text("check a b") is None
    before = len(loop.run_until_complete(svc.engine.store.audit_log(limit=100000)))
    reply = loop.run_until_complete(router.handle_command("check a b", Invocation("U0FUZZ", "C0"), svc))
    assert "could not read that command" in reply.text and "Traceback" not in reply.text
    new = loop.run_until_complete(svc.engine.store.audit_log(limit=100000))[before:]
    assert [e.action for e in new] == ["command.rejected"] and "hunter2-pw" not in new[0].detail


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("not even this")


@pytest.mark.parametrize(
    "exc, shown",
    [
        (
            RuntimeError("boom at postgresql://u:hunter2-pw@db/x\n  in a second line " + "x" * 5000),
            "RuntimeError: boom",
        ),
        (Unprintable(), "Unprintable"),
        (KeyError("k"), "KeyError"),
    ],
)
def test_a_handler_crash_is_one_redacted_line_and_audited(world, monkeypatch, exc, shown):
    loop, svc = world

    async def crashing(cmd, inv, svc):
        raise exc

    monkeypatch.setitem(router.HANDLERS, "list", crashing)
    before = len(loop.run_until_complete(svc.engine.store.audit_log(limit=100000)))
    reply = loop.run_until_complete(router.handle_command("list", Invocation("U0FUZZ", "C0"), svc))
    assert "`list` failed unexpectedly" in reply.text and shown in reply.text
    assert "hunter2-pw" not in reply.text + str(reply.blocks) and "Traceback" not in reply.text
    assert "\n" not in reply.text and len(reply.text) < 600
    new = loop.run_until_complete(svc.engine.store.audit_log(limit=100000))[before:]
    assert [e.action for e in new] == [AuditEntry.READ_ONLY, "command.failed"] and "hunter2-pw" not in new[1].detail


@pytest.mark.parametrize(
    "action_id, value",
    [
        (Action.APPROVE_CUTOVER.value, None),
        (Action.REJECT_PROVISION.value, 12),
        (Action.RERUN_CHECK.value, None),
        (None, None),
        (42, ["a"]),
        ("pgmig." + "ü" * 5000, "\x00" * 3000),
        ("", ""),
        (Action.RERUN_CHECK.value, "status mig-" + "9" * 5000),
    ],
)
def test_clicks_with_odd_payloads_are_answered_or_quiet(world, action_id, value):
    loop, svc = world
    reply = answered(loop, svc, router.handle_action(action_id, value, Invocation("U0FUZZ", "C0"), svc))
    assert reply is None or (reply.text and "Traceback" not in reply.text and len(reply.text) < 1000)


def test_a_click_handler_crash_is_audited_as_action_failed(world, monkeypatch):
    loop, svc = world

    async def crashing(*args):
        raise RuntimeError("decide broke")

    monkeypatch.setattr(router, "decide", crashing)
    before = len(loop.run_until_complete(svc.engine.store.audit_log(limit=100000)))
    reply = loop.run_until_complete(
        router.handle_action(Action.APPROVE_CUTOVER.value, "mig-1", Invocation("U0FUZZ", "C0"), svc)
    )
    assert reply is not None and "the click could not be handled (RuntimeError)" in reply.text
    new = loop.run_until_complete(svc.engine.store.audit_log(limit=100000))[before:]
    assert [e.action for e in new] == ["action.failed"] and "decide broke" in new[0].detail
