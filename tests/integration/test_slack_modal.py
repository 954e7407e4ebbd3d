"""`/pgmig migrate` alone: the migrate modal over signed HTTP (views.open right after the ack, the source's
databases by views.update, field errors in the submission's ack, a submission that starts the migration as
the typed command would), and the same form walked in the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from handlers import modal
from handlers.authz import Policy
from migration_core.state.models import Method, Mode
from tests.integration.clusters import TARGET, config_toml, shell_env
from tests.integration.fake_slack import signed_headers, text_of
from tests.integration.slack_harness import on_pair, running, view_submission_body


@pytest.fixture(scope="module")
def own_target(cluster_root):
    """This module's own target: its migrations leave the session's target as other tests expect it."""
    from bot.localpg import LocalCluster
    from tests.conftest import PASSWORD

    c = LocalCluster(cluster_root / "modal-tgt", password=PASSWORD, settings=TARGET).init().start()
    yield c
    c.destroy()


@pytest.fixture
async def slack(tmp_path, source_cluster, own_target):
    target_cluster = own_target
    async with on_pair(tmp_path, source_cluster, target_cluster) as app:
        yield app


def block(view: dict, block_id: str) -> dict:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


def option_values(b: dict) -> list[str]:
    return [o["value"] for o in b["element"]["options"]]


def chosen(value: str) -> dict:
    return {"text": {"type": "plain_text", "text": value}, "value": value}


def state(
    source: str = "onprem",
    target: str = "azure",
    databases: list[str] | None = None,
    mode: str | None = "offline",
    method: str = "restore",
    parallel: str | None = None,
    flags: tuple[str, ...] = (),
) -> dict:
    """view.state.values as Slack sends them for the form."""
    values = {
        "source": {modal.SOURCE_ACTION: {"type": "static_select", "selected_option": chosen(source)}},
        "target": {"pgmig-form.target": {"type": "static_select", "selected_option": chosen(target)}},
        "mode": {"pgmig-form.mode": {"type": "radio_buttons", "selected_option": chosen(mode) if mode else None}},
        "method": {"pgmig-form.method": {"type": "radio_buttons", "selected_option": chosen(method)}},
        "parallel": {"pgmig-form.parallel": {"type": "number_input", "value": parallel}},
        "options": {"pgmig-form.options": {"type": "checkboxes", "selected_options": [chosen(f) for f in flags]}},
    }
    if databases is not None:
        values[f"databases@{source}"] = {
            "pgmig-form.databases": {"type": "multi_static_select", "selected_options": [chosen(d) for d in databases]}
        }
    return values


async def the_modal(fake, opened: int = 1) -> dict:
    """The newest modal as Slack holds it (Home tabs are VH…), once `opened` forms were opened in all: the
    form opens after the ack, in its own task."""
    await fake.wait_for("calls", lambda _: sum(c.method == "views.open" for c in fake.calls) >= opened)
    return [v for k, v in fake.views.items() if not k.startswith("VH")][-1]


def pick_source(name: str) -> dict:
    return {"type": "static_select", "action_id": modal.SOURCE_ACTION, "selected_option": chosen(name)}


async def open_and_list(slack, key: str = "f") -> dict:
    """`/pgmig migrate`, then onprem chosen as the source: the form as Slack holds it after views.update."""
    await slack.command("migrate", key=key)
    view = await the_modal(slack.fake)
    await slack.in_view(view, state(mode=None), "source", pick_source("onprem"))
    await slack.fake.wait_for("calls", lambda c: c.method == "views.update" and c.params["view_id"] == view["id"])
    return slack.fake.views[view["id"]]


async def test_migrate_alone_acks_at_once_then_opens_the_form(slack):
    slack.fake.slow["views.open"] = 2.0  # a slow views.open must not push the ack past Slack's 3 s
    started = time.monotonic()
    resp = await slack.command("migrate", key="f")
    assert resp.status == 200 and resp.body == ""  # an empty ack: the modal is the answer
    assert time.monotonic() - started < 1.5
    await slack.fake.wait_for("calls", lambda c: c.method == "views.open")
    opened = [c for c in slack.fake.calls if c.method == "views.open"]
    assert len(opened) == 1  # opened right after the ack, with the command's trigger_id
    assert opened[0].params["trigger_id"] == "trig.f"
    view = opened[0].params["view"]
    assert view["type"] == "modal" and view["callback_id"] == modal.FORM
    assert option_values(block(view, "source")) == ["azure", "onprem"] == option_values(block(view, "target"))
    assert block(view, "source")["dispatch_action"] is True
    assert [o["value"] for o in block(view, "mode")["element"]["options"]] == ["offline", "online"]
    assert block(view, "parallel")["element"]["min_value"] == "1" and block(view, "parallel")["element"]["max_value"]
    assert option_values(block(view, "options")) == [
        "overwrite",
        "replica_identity_full",
        "pause_after_export",
        "capture_ddl",
        "no_capture_ddl",
    ]
    assert not any(b.get("block_id", "").startswith("databases@") for b in view["blocks"])  # no round trip yet
    meta = json.loads(view["private_metadata"])
    assert meta == {"channel": "C0OPS", "response_url": slack.fake.response_url("f")}
    assert slack.fake.responses == []
    await slack.tasks.drain(10)
    log = await slack.services.engine.store.audit_log()
    assert ("U0ALICE", "query", "/pgmig migrate (form)", "C0OPS") in [
        (e.actor, e.action, e.detail, e.channel) for e in log
    ]


async def test_choosing_the_source_lists_its_databases(slack):
    view = await open_and_list(slack)
    update = [c for c in slack.fake.calls if c.method == "views.update"][-1]
    assert update.params["view_id"] == view["id"]
    dbs = block(view, "databases@onprem")
    assert "shop" in option_values(dbs) and "postgres" not in option_values(dbs)
    assert "shop" in [o["value"] for o in dbs["element"]["initial_options"]]  # like a typed migrate without --db
    assert any(o["value"] == "shop" and " MB" in o["text"]["text"] for o in dbs["element"]["options"])  # its size
    assert block(view, "source")["element"]["initial_option"]["value"] == "onprem"  # the choice is kept
    assert json.loads(view["private_metadata"])["channel"] == "C0OPS"


async def test_only_operators_get_a_servers_databases_from_the_form(slack):
    """The form opens for anyone (Slack's 3 s), but choosing a source lists its databases for operators only:
    anyone else is told why there, as the typed `/pgmig migrate` would tell them."""
    slack.services.policy = Policy(operators=("U0OPS",))
    await slack.command("migrate", user="U0MALLORY", key="f")
    view = await the_modal(slack.fake)
    await slack.in_view(view, state(mode=None), "source", pick_source("onprem"), user="U0MALLORY")
    await slack.fake.wait_for("calls", lambda c: c.method == "views.update" and c.params["view_id"] == view["id"])
    refused = slack.fake.views[view["id"]]
    assert "only operators may start migrations: ask one of the people or groups in [slack] operators" in text_of(
        refused
    )
    assert "shop" not in text_of(refused)
    assert not any(b.get("block_id", "").startswith("databases@") for b in refused["blocks"])
    resp = await slack.submit(refused, state(databases=["shop"]), user="U0MALLORY")
    assert json.loads(resp.body)["errors"]["source"].startswith("only operators may start migrations")

    await slack.command("migrate", user="U0OPS", key="ops")
    mine = await the_modal(slack.fake, opened=2)
    await slack.in_view(mine, state(mode=None), "source", pick_source("onprem"), user="U0OPS", key="ops-va")
    await slack.fake.wait_for("calls", lambda c: c.method == "views.update" and c.params["view_id"] == mine["id"])
    assert "shop" in option_values(block(slack.fake.views[mine["id"]], "databases@onprem"))
    await slack.tasks.drain(10)
    assert await slack.services.engine.store.list_migrations() == []


async def test_an_unreachable_source_is_said_in_the_form(tmp_path, source_cluster):
    from bot.localpg import free_port

    async with running(tmp_path, config_toml({"down": free_port(), "onprem": source_cluster})) as slack:
        await slack.command("migrate", key="f")
        view = await the_modal(slack.fake)
        await slack.in_view(view, {}, "source", pick_source("down"))
        await slack.fake.wait_for("calls", lambda c: c.method == "views.update")
        updated = slack.fake.views[view["id"]]
        assert "could not be listed" in text_of(updated) and "connection refused" in text_of(updated)
        resp = await slack.submit(updated, state(source="down", target="onprem", databases=None))
        assert json.loads(resp.body)["errors"] == {
            "source": "the databases of down are not listed (yet): wait a moment, or see the note under the source"
        }


async def test_field_errors_are_answered_on_the_fields_and_start_nothing(slack):
    view = await open_and_list(slack)
    resp = await slack.submit(view, state(target="onprem", databases=[]))
    assert resp.status == 200
    answer = json.loads(resp.body)
    assert answer["response_action"] == "errors"
    assert answer["errors"] == {
        "target": "the target must be another server than the source",
        "databases@onprem": "choose at least one database",
    }
    resp = await slack.submit(
        view,
        state(
            databases=["shop", "nosuchdb"], mode="online", method="dump", parallel="65", flags=("pause_after_export",)
        ),
    )
    errors = json.loads(resp.body)["errors"]
    assert set(errors) == {"databases@onprem", "method", "parallel", "options"}
    assert "not on onprem: nosuchdb" in errors["databases@onprem"] and "offline method" in errors["method"]
    resp = await slack.submit(view, state(target="nowhere", databases=["shop"]))
    assert json.loads(resp.body)["errors"] == {"target": "unknown server nowhere; configured: azure, onprem"}

    slack.services.policy = Policy(operators=("U0OPS",))
    resp = await slack.submit(view, state(databases=["shop"]), user="U0MALLORY")
    assert json.loads(resp.body)["errors"]["source"].startswith("only operators may start migrations")
    await slack.tasks.drain(10)
    assert await slack.services.engine.store.list_migrations() == []
    assert slack.fake.responses == []


async def test_a_valid_form_starts_the_migration_as_the_typed_command_would(slack):
    view = await open_and_list(slack)
    body = view_submission_body(view, state(databases=["shop"], parallel="2", flags=("overwrite",)), "U0ALICE", "sub")
    resp = await slack.post(body, signed_headers(body))
    assert resp.status == 200 and resp.body == ""  # closes the modal
    working = await slack.fake.wait_for("responses", lambda r: r["key"] == "f")
    assert "Running pre-flight checks before starting" in text_of(working)
    started = await slack.fake.wait_for("responses", lambda r: r["key"] == "f" and "mig-1" in text_of(r))
    assert started["response_type"] == "in_channel" and "started by" in text_of(started)

    again = await slack.post(body, signed_headers(body))  # the same submission delivered twice
    assert again.status == 200
    [m] = await slack.services.engine.store.list_migrations()
    assert (m.id, m.source, m.target, m.databases, m.mode, m.requested_by, m.channel) == (
        "mig-1",
        "onprem",
        "azure",
        ["shop"],
        Mode.OFFLINE,
        "U0ALICE",
        "C0OPS",
    )
    assert m.options.method is Method.RESTORE and m.options.parallel == 2 and m.options.overwrite
    assert not m.options.pause_after_export and not m.options.replica_identity_full
    await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and "completed" in text_of(c.params),
        timeout=60,
    )
    await slack.tasks.drain(10)
    assert len(await slack.services.engine.store.list_migrations()) == 1  # the replay started nothing
    log = [(e.actor, e.action, e.detail) for e in await slack.services.engine.store.audit_log()]
    typed = "/pgmig migrate onprem azure --mode offline --method restore --db shop --parallel 2 --overwrite"
    assert ("U0ALICE", "command", typed) in log  # audited as the command it stands for
    assert sum(1 for e in log if e[1] == "command") == 1


async def test_a_forged_submission_is_refused_and_starts_nothing(slack):
    view = await open_and_list(slack)
    body = view_submission_body(view, state(databases=["shop"], flags=("overwrite",)), "U0ALICE", "forged")
    resp = await slack.post(body, signed_headers(body, secret="not-the-signing-secret"))
    assert resp.status == 401
    stale = await slack.post(body, signed_headers(body, timestamp=int(time.time()) - 6 * 60))
    assert stale.status == 401
    await slack.tasks.drain(5)
    assert await slack.services.engine.store.list_migrations() == [] and slack.fake.responses == []


async def test_the_form_from_the_home_tab_answers_in_a_direct_message(slack):
    await slack.event({"type": "app_home_opened", "user": "U0ALICE", "tab": "home", "channel": "D0ALICE"})
    home = await slack.fake.wait_for("calls", lambda c: c.method == "views.publish")
    home_view = slack.fake.views[slack.fake.homes["U0ALICE"]]
    assert modal.OPEN in text_of(home.params["view"])
    await slack.in_view(home_view, {}, "b", {"type": "button", "action_id": modal.OPEN}, key="home-open")
    opened = await slack.fake.wait_for("calls", lambda c: c.method == "views.open")
    assert opened.params["trigger_id"] == "trig.home-open"
    view = await the_modal(slack.fake)
    assert json.loads(view["private_metadata"]) == {"channel": "", "response_url": ""}
    await slack.in_view(view, {}, "source", pick_source("onprem"))
    await slack.fake.wait_for("calls", lambda c: c.method == "views.update")
    resp = await slack.submit(slack.fake.views[view["id"]], state(databases=["shop"], flags=("overwrite",)))
    assert resp.body == ""
    dm = await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params["channel"] == "U0ALICE" and "mig-1" in text_of(c.params),
    )
    assert "started by" in text_of(dm.params)
    await slack.fake.wait_for(
        "calls",
        lambda c: c.method == "chat.postMessage" and c.params.get("thread_ts") and "completed" in text_of(c.params),
        timeout=60,
    )


def test_the_shell_walks_the_form_and_starts_the_migration(tmp_path, source_cluster, own_target):
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": source_cluster, "tgt": own_target}))
    env = shell_env(tmp_path, config)
    answers = [
        "migrate",
        "1",  # source: src
        "src",  # target: the source is not offered (refused at once, asked again)
        "1",  # target: tgt
        "shop",  # databases
        "9",  # mode: no such choice
        "²",  # a digit to str.isdigit(), not to int()
        "offline",
        "2",  # method: dump
        "",  # parallel: the default
        "overwrite,2",  # options: overwrite, pause after export (replica identity full is not offered offline)
        "status mig-1",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "bot.cli", "shell", "--user", "erin"],
        input="\n".join(answers) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "1. Source server *" in text and "1) src" in text and "2) tgt" in text
    assert "⏳ listing its databases…" in text
    assert "3. Databases on src *" in text and "shop — " in text and "MB ✓" in text
    assert "❌ no choice `9`" in text and "❌ no choice `²`" in text
    assert "❌ no choice `src` (1–1 or a name)" in text  # the target is never the source
    assert "The form runs: /pgmig migrate src tgt --mode offline --method dump --db shop --overwrite" in text
    assert "🚀 mig-1 started by @erin" in text
    assert "paused" in text  # pause after export, by the dump method
    assert "Traceback" not in text + out.stderr
