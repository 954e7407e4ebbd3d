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
from handlers.grammar import COMMANDS, ParsedCommand, UsageError, parse
from migration_core.engine import Engine, EngineConfig
from migration_core.events import NoEvents
from migration_core.store import Store

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOKENS = st.sampled_from([*COMMANDS, *(o.flag for s in COMMANDS.values() for o in s.options), "mig-1", "prov-2",
                          "—db", "“quoted”", "'", '"', "²", "٣", "9" * 5000, "-", "--", "=", "a,b", "\x00", "\n"])
TEXT = st.one_of(st.text(max_size=300), st.lists(st.one_of(TOKENS, st.text(max_size=12)), max_size=8).map(" ".join))


@FUZZ
@given(TEXT)
def test_parse_returns_a_command_or_a_usage_error(text):
    try:
        assert isinstance(parse(text), ParsedCommand)
    except UsageError as err:
        assert str(err) and len(str(err)) < 1000


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
    svc = Services({}, store, Policy(approvers=("U0APPROVER",)), StaticDirectory(), engine, Silent())
    yield loop, svc
    loop.run_until_complete(engine.close())
    loop.run_until_complete(store.close())
    loop.close()


def answered(loop: asyncio.AbstractEventLoop, svc: Services, call) -> Reply | None:
    before = len(loop.run_until_complete(svc.store.audit_log(limit=100000)))
    reply = loop.run_until_complete(call)
    assert len(loop.run_until_complete(svc.store.audit_log(limit=100000))) > before  # every input is audited
    return reply


@FUZZ
@given(TEXT)
def test_any_command_text_gets_one_readable_answer(world, text):
    loop, svc = world
    reply = answered(loop, svc, router.handle_command(text, Invocation("U0FUZZ", "C0"), svc))
    assert isinstance(reply, Reply) and reply.text and "Traceback" not in reply.text + str(reply.blocks)


@FUZZ
@given(st.one_of(st.sampled_from([a.value for a in Action]), st.text(max_size=50)),
       st.one_of(st.text(max_size=200), st.sampled_from(["mig-1", "prov-1", "mig-" + "9" * 5000, ""])))
def test_any_click_gets_an_answer_or_a_quiet_card_update(world, action_id, value):
    loop, svc = world
    reply = answered(loop, svc, router.handle_action(action_id, value, Invocation("U0FUZZ", "C0"), svc))
    assert reply is None or (reply.text and "Traceback" not in reply.text)
