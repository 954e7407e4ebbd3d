"""The one outgoing pass: secrets masked everywhere in a message, Slack's control characters escaped."""

from __future__ import annotations

import json

from handlers import migration_messages as mm
from handlers.messages import outgoing
from migration_core.observe.progress import DatabaseProgress, MigrationProgress
from migration_core.pg import secrets
from migration_core.state.models import Migration, State


def test_secrets_are_masked_in_blocks_and_fallback_and_names_ping_nobody():
    secrets.register("hunter2-Secret-Value")
    m = Migration(
        "mig-1",
        "src",
        "tgt",
        ["<!channel>"],
        "online",
        State.FAILED,
        "U1",
        error="import of <!channel> failed: password hunter2-Secret-Value rejected",
    )
    for reply in (
        mm.migration_card(m, MigrationProgress()),
        mm.alert_notice(m, "table <!channel> differs; hunter2-Secret-Value"),
        mm.state_notice(m, m.error),
    ):
        sent = outgoing(reply)
        everything = sent.text + json.dumps(sent.blocks)
        assert "hunter2-Secret-Value" not in everything and secrets.MASK in everything
        assert "<!channel>" not in everything, everything
        assert "&lt;!channel&gt;" in everything


def test_the_fallback_text_is_escaped_even_when_a_builder_forgot():
    from handlers.context import Reply

    sent = outgoing(Reply("<!here> & <@U1|x>", [{"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}]))
    assert sent.text == "&lt;!here&gt; &amp; &lt;@U1|x&gt;"


def test_what_a_server_reports_of_a_long_statement_is_shown_and_escaped():
    """Index builds and ANALYZE say how far they are; a table's name is data, even one that looks like
    a Slack mention."""
    p = DatabaseProgress(
        "shop",
        phase="building indexes",
        working='index on public."<!channel>": building index: scanning table 45%',
        waiting="building indexes: waiting for Lock/relation held by pid 42 (idle in transaction) (12 s)",
    )
    line = mm.database_line(p, 0.0)
    assert '🔧 index on public."&lt;!channel&gt;": building index: scanning table 45%' in line
    assert "⏳ building indexes: waiting for Lock/relation held by pid 42" in line
    assert "<!channel>" not in line
