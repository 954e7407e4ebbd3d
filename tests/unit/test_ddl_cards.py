"""A schema change's card (handlers/ddl_messages.py) as Slack and the shell show it: its buttons carry the
`ddl …` command they stand for (parsed as typed), a decided card keeps only Pause cutover, and the Skip form's
reason follows the command."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.textrender import render
from handlers import ddl_messages as dm
from handlers.actions import Action
from handlers.ddl import read_skip, skip_form
from handlers.grammar import parse
from migration_core.observe.ddl import Captured, CutoverHold, SchemaCard
from tests.unit.test_settings import GOOD, load

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def captured(tag: str, statement: str, database: str = "shop", **decided: str) -> Captured:
    return Captured(database, 3, tag, ["table public.customer"], statement, AT, "app", **decided)


def buttons(card: SchemaCard, required: int = 1) -> list[dict]:
    reply = dm.card("mig-7", card, required)
    return [e for b in reply.blocks if b["type"] == "actions" for e in b["elements"]]


def test_a_pending_change_offers_apply_skip_and_pause_each_the_command_it_stands_for():
    c = captured("ALTER TABLE", "ALTER TABLE customer ADD COLUMN phone text")
    card = SchemaCard("shop", "3", c, waits_now=True)
    found = buttons(card)
    assert [b["action_id"] for b in found] == [Action.DDL_APPLY, Action.DDL_SKIP, Action.DDL_PAUSE]
    assert [b["value"] for b in found[:2]] == ["ddl mig-7 apply shop:3", "ddl mig-7 skip shop:3"]
    assert parse(found[2]["value"]).args == {
        "migration": "mig-7",
        "decision": "pause",
        "id": "schema change shop #3 (ALTER TABLE)",  # quoted: one word, which the handler takes as the reason
        "reason": None,
    }
    text, shown = render(*_parts(dm.card("mig-7", card, 1)))
    assert "waits at this change now" in text and "ALTER TABLE customer ADD COLUMN phone text" in text
    assert [b.label for b in shown] == ["Apply to target", "Skip", "Pause cutover"] and "[1: Apply to target]" in text


def test_a_database_name_is_data_in_the_buttons_command():
    c = captured("CREATE INDEX", "CREATE INDEX i ON t (a)", database="sales 'eu'; DROP")
    apply = buttons(SchemaCard(c.database, "3", c))[0]
    assert parse(apply["value"]).args["id"] == "sales 'eu'; DROP:3"


def test_a_destructive_change_is_confirmed_and_counts_approvals_and_a_decided_card_keeps_only_pause():
    c = captured("DROP TABLE", "DROP TABLE old_log")
    c.approvals = ["U0BOB"]
    apply = buttons(SchemaCard("shop", "3", c), required=2)[0]
    assert apply["style"] == "danger" and apply["confirm"]["confirm"]["text"] == "Approve applying it"
    text = dm.card("mig-7", SchemaCard("shop", "3", c), 2).text
    assert "(1 of 2 approvals)" in text
    done = captured("DROP TABLE", "DROP TABLE old_log", decision="apply", decided_by="U0BOB, U0CAROL")
    done.outcome = "applied"
    reply = dm.card("mig-7", SchemaCard("shop", "3", done), 2)
    assert [b["action_id"] for b in buttons(SchemaCard("shop", "3", done))] == [Action.DDL_PAUSE]
    assert "applied on the target (decided by <@U0BOB>, <@U0CAROL>)" in str(reply.blocks)
    assert reply.text.endswith("applied by U0BOB, U0CAROL")


def test_a_drift_card_lists_what_changed_and_offers_only_pause():
    card = SchemaCard("shop", "drift-1", drift=["new column public.customer.email (text)"])
    reply = dm.card("mig-7", card, 1)
    assert [b["action_id"] for b in buttons(card)] == [Action.DDL_PAUSE]
    assert "new column public.customer.email (text)" in reply.text and "make the same change" in str(reply.blocks)


def test_the_skip_form_sends_the_reason_after_the_command():
    form = skip_form("ddl mig-7 skip shop:3", "C0OPS", False)
    values = {dm.REASON: {dm.REASON: {"type": "plain_text_input", "value": "the target gets\nits own index"}}}
    sent = read_skip({**form, "state": {"values": values}})
    assert sent.channel == "C0OPS" and not sent.on_home
    assert parse(sent.command).args["reason"] == "the target gets its own index"


def test_the_hold_answers_offer_resume_while_it_is_on():
    hold = CutoverHold("U0BOB", "schema change shop #3", "2026-01-02T03:04:05+00:00")
    on = dm.held("mig-7", hold)
    assert "paused by U0BOB at 2026-01-02 03:04 UTC: schema change shop #3" in on.text
    assert [e["value"] for b in on.blocks if b["type"] == "actions" for e in b["elements"]] == ["ddl mig-7 resume"]
    hold.resumed_by = "U0CAROL"
    assert "may go ahead again" in dm.held("mig-7", hold).text


def test_capture_is_on_by_default(tmp_path):
    assert load(tmp_path, GOOD).online.capture_ddl is True


def _parts(reply):
    return reply.text, reply.blocks
