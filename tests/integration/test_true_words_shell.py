"""Issue 22, in the shell (`pgmig shell < script`, as a person runs it): a refused pre-flight, a failed check,
a cancel, `list` and `audit` say only what is true, and name commands that exist and would help."""

from __future__ import annotations

import asyncio
import re

from migration_core.store import Store
from tests.integration.clusters import config_toml, shell_env
from tests.integration.test_shell import pgmig


def run(tmp_path, config, *lines: str, timeout: float = 180) -> str:
    out = pgmig(
        "shell", "--user", "alice", env=shell_env(tmp_path, config), stdin="\n".join(lines) + "\n", timeout=timeout
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    return out.stdout


def answer_to(text: str, command: str) -> str:
    """What the shell printed after `command`, up to the next prompt."""
    return text.split(f"pgmig> {command}\n", 1)[1].split("\npgmig> ", 1)[0]


def test_refusals_cancels_list_and_audit_say_what_is_true(tmp_path, source_cluster, target_cluster):
    target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": source_cluster, "tgt": target_cluster}))
    try:
        text = run(
            tmp_path,
            config,
            "migrate src tgt --mode offline --db shop,nosuchdb",
            "retry mig-1",
            "cancel mig-1",
            "migrate src tgt --mode online --db shop --parallel 1",
            "wait mig-2 ready_for_cutover 120",
            "wait mig-2 completed 0.5",
            "cancel mig-2",
            "wait mig-2 ready_for_cutover 5",
            "list",
            "audit mig-1",
            "audit mig-2",
        )
        refused = answer_to(text, "migrate src tgt --mode offline --db shop,nosuchdb")
        # the words are true: it stopped, it is not "not started" (it waits, failed, to be retried or cancelled)
        assert "was not started" not in refused
        assert "mig-1 stopped at pre-flight (1 blocking problem); nothing was changed on the servers." in refused
        # and the fix is a new migration: retry keeps the database list (and takes no --db)
        assert (
            "A retry would ask for the same databases: start a new migration with the right `--db`, e.g. "
            "`/pgmig migrate src tgt --mode offline --method restore --db shop`; `/pgmig cancel mig-1` closes "
            "this one." in refused
        ), refused
        said = text.split("pgmig> audit mig-1")[0].replace("pgmig> retry mig-1", "")  # the card and thread too
        assert "retry mig-1`" not in said, said
        assert "❌ databases missing on the source — nosuchdb" in refused
        retried = answer_to(text, "retry mig-1")
        assert "a retry would ask for the same databases" in retried and "retrying" not in retried
        # cancel: neither `shop` (never created by mig-1, and not on the target) nor `nosuchdb` is "left in place"
        cancelled = answer_to(text, "cancel mig-1")
        assert "🚫 mig-1 cancelled." in cancelled and "left in place" not in cancelled, cancelled
        assert "left in place" not in answer_to(text, "cancel mig-2")
        # a script's wait on a state says how it ended: reached, still elsewhere, or ended another way
        assert "\nmig-2 is ready_for_cutover (after 0:" in answer_to(text, "wait mig-2 ready_for_cutover 120")
        assert "⏱ mig-2 is still ready_for_cutover after 0:00, not completed" in answer_to(
            text, "wait mig-2 completed 0.5"
        )
        assert "⚠️ mig-2 ended cancelled after 0:00, never ready_for_cutover" in answer_to(
            text, "wait mig-2 ready_for_cutover 5"
        )
        # list: the most recent first, as documented
        listed = answer_to(text, "list")
        assert "Recent migrations (newest first)" in listed and listed.index("mig-2") < listed.index("mig-1")
        # audit: the command as typed, from where, no Python reprs, long details cut at a word with "…"
        audit1 = answer_to(text, "audit mig-1")
        assert (
            "@alice migration.created in the shell — /pgmig migrate src tgt --mode offline --method restore "
            "--db shop,nosuchdb" in audit1
        ), audit1
        audit2 = answer_to(text, "audit mig-2")
        assert "migration.created in the shell — /pgmig migrate src tgt --mode online --db shop --parallel 1" in audit2
        assert "{'" not in audit1 + audit2 and "<Method." not in audit1 + audit2 and "method" not in audit2
        shown = next(line for line in audit2.splitlines() if "state — cancelled: " in line)
        detail = shown.split(" — ", 1)[1].replace("@alice", "alice")
        assert detail.endswith("…"), shown
        full = next(e.detail for e in asyncio.run(entries(tmp_path, "mig-2")) if e.detail.startswith("cancelled: "))
        kept = detail[:-1]
        assert full.startswith(kept) and full[len(kept)] in " ,;", (kept, full)  # cut between words, not in one

        # a target that holds shop: the check's line does not contradict itself, and the retry it names helps
        target_cluster.psql("CREATE DATABASE shop")
        target_cluster.psql("CREATE TABLE kept (id int)", database="shop")
        text = run(
            tmp_path, config, "check src tgt --db shop --mode offline", "migrate src tgt --mode offline --db shop"
        )
        check = answer_to(text, "check src tgt --db shop --mode offline")
        assert "❌ target database shop is not empty — it holds 1 tables" in check, check
        assert "❌ target database is empty" not in text
        assert (
            "mig-3 stopped at pre-flight (1 blocking problem); nothing was changed on the servers. Fix it, then "
            "`/pgmig retry mig-3 --overwrite`, or `/pgmig cancel mig-3` to close it." in text
        ), text
        assert re.search(r"When the cause is fixed: `/pgmig retry mig-3 --overwrite`", text), text
    finally:
        target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')


async def entries(tmp_path, subject: str) -> list:
    store = await Store.open(str(tmp_path / "state.sqlite"))
    try:
        return await store.audit_log(subject)
    finally:
        await store.close()
