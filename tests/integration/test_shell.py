"""The shell adapter and the CLI, run as a person runs them: `pgmig shell < script.txt`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bot.localpg import free_port
from tests.integration.clusters import PASSWORD, config_toml, shell_env


def pgmig(*args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_shell_round_trip_with_button_press(tmp_path, source_cluster, target_cluster, replica_level_cluster):
    target_cluster.psql('DROP DATABASE IF EXISTS "shop" WITH (FORCE)')  # a target that holds shop is not ready
    config = tmp_path / "pgmig.toml"
    config.write_text(
        config_toml({"src": source_cluster, "tgt": target_cluster, "old": replica_level_cluster, "down": free_port()})
    )
    script = "\n".join(
        [
            "# a comment line is ignored",
            "/pgmig help",
            "servers",
            "check old tgt",
            "press Re-run check",
            "check src tgt --db shop --mode offline",
            "press 1",
            "press 7",
            "check down tgt",
            "check src",
            "bogus",
            "quit",
            "servers",  # never reached: quit ends the session
        ]
    )
    env = {"PGMIG_CONFIG": str(config), "PGMIG_STATE": str(tmp_path / "state.sqlite")}
    out = pgmig("shell", "--user", "alice", stdin=script, env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "`/pgmig check` — Run the pre-flight checks" in text
    assert "• src — `postgres@127.0.0.1:" in text and PASSWORD not in text
    assert text.count("wal_level is 'replica'") == 2  # once typed, once by pressing the button
    assert "(pressed Re-run check)" in text
    assert "Pre-flight: src → tgt (offline)" in text and "✅ Ready" in text
    assert "[1: Re-run check]" in text
    assert "❌ no button `7` (buttons: 1: Re-run check)" in text
    assert "connection refused at 127.0.0.1:" in text
    assert "Usage: `/pgmig check SOURCE TARGET" in text
    assert "unknown command `bogus`" in text
    assert text.count("pgmig> servers") == 1
    assert "Traceback" not in text + out.stderr


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    out = pgmig("shell", env={"PGMIG_CONFIG": str(tmp_path / "missing.toml")})
    assert out.returncode == 2 and "config file" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[servers.x]\nhost = "h"\nport = "five"\n')
    out = pgmig("serve", env={"PGMIG_CONFIG": str(bad)})
    assert out.returncode == 2 and "servers.x.port: expected an integer" in out.stderr
    good = tmp_path / "good.toml"
    good.write_text('[servers.x]\nhost = "h"\n')
    out = pgmig("serve", env={"PGMIG_CONFIG": str(good), "SLACK_BOT_TOKEN": "", "SLACK_SIGNING_SECRET": ""})
    assert out.returncode == 2 and "set SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET" in out.stderr


def test_help_lists_subcommands():
    out = pgmig("--help")
    for sub in ("serve", "shell", "sandbox", "run"):
        assert sub in out.stdout


def test_make_run_path_sandbox_then_shell(tmp_path):
    """What `make run` does on a fresh machine: local clusters with sample data, then the shell on them."""
    home = tmp_path / "home"
    env = {
        "PGMIG_HOME": str(home),
        "PGMIG_STATE": str(tmp_path / "state.sqlite"),
        "SLACK_BOT_TOKEN": "",
        "PGMIG_CONFIG": "",
    }
    try:
        out = pgmig("run", "--user", "dana", stdin="check source target\nhelp\n", env=env)
        assert out.returncode == 0, out.stderr
        assert "sandbox ready" in out.stdout and "No SLACK_BOT_TOKEN" in out.stdout
        assert "e.g. `as UAPPROVER` to approve a cutover" in out.stdout  # the sandbox's own approver
        assert "Pre-flight: source → target (online)" in out.stdout and "Ready" in out.stdout
        assert "— 0 blocking" in out.stdout and "db shop" in out.stdout
        assert pgmig("sandbox", "status", env=env).stdout.count(" stopped (") == 2  # stopped when the shell ends
        again = pgmig("run", stdin="servers\n", env=env)  # a second start reuses the clusters and their data
        assert "sandbox running" in again.stdout and "• source" in again.stdout
        assert pgmig("sandbox", "up", env=env).returncode == 0
        assert pgmig("sandbox", "status", env=env).stdout.count(" running (") == 2
    finally:
        pgmig("sandbox", "down", env=env)
    assert "no sandbox" in pgmig("sandbox", "status", env=env).stdout


def test_shell_migration_runs_to_completion_before_the_script_ends(tmp_path, source_cluster, target_cluster):
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": source_cluster, "tgt": target_cluster}))
    env = shell_env(tmp_path, config)
    out = pgmig(
        "shell",
        "--user",
        "erin",
        env=env,
        stdin="migrate src tgt --mode offline --method dump --db shop --overwrite\nstatus mig-1\n",
    )
    assert out.returncode == 0, out.stderr
    assert "🚀 mig-1 started by @erin" in out.stdout
    assert "[#shell]" in out.stdout and "waiting for mig-1 to finish" in out.stdout
    assert "[#shell thread] @erin ✅ mig-1 completed" in out.stdout
    assert "[#shell ↻] mig-1 importing: src → tgt\n[#shell ↻] mig-1 verifying: src → tgt\n" in out.stdout  # a line each
    assert "[#shell ↻] mig-1: src → tgt\n" in out.stdout and "completed in" in out.stdout  # its last word, whole
    listing = pgmig("shell", env=env, stdin="list\n")
    assert "mig-1 completed" in listing.stdout


def test_sandbox_online_migration_and_cutover_from_one_shell(tmp_path):
    """The whole online story on a fresh machine: migrate, wait until ready, request, approve, done."""
    home = tmp_path / "home"
    env = {
        "PGMIG_HOME": str(home),
        "PGMIG_STATE": str(tmp_path / "state.sqlite"),
        "SLACK_BOT_TOKEN": "",
        "PGMIG_CONFIG": "",
    }
    script = "\n".join(
        [
            "migrate source target --mode online --db shop --overwrite",
            "wait mig-1 ready_for_cutover 120",
            "status mig-1",
            "repair mig-1",
            "cutover mig-1",
            "press Approve",
            "as UAPPROVER",
            "press Approve",
            "wait mig-1 completed 120",
            "status mig-1",
        ]
    )
    try:
        out = pgmig("run", "--user", "dana", stdin=script + "\n", env=env, timeout=180)
        assert out.returncode == 0, out.stderr
        assert "mig-1 is ready_for_cutover (after " in out.stdout and "mig-1 is completed (after " in out.stdout
        assert "verified while streaming: verified " in out.stdout  # ranges compared at one point of the stream
        assert "no range of mig-1 differs as far as continuous verification has found" in out.stdout
        assert "Approve cutover of mig-1?" in out.stdout
        assert "someone else must approve it" in out.stdout  # dana asked; dana cannot approve
        assert "(you are now UAPPROVER)" in out.stdout
        assert "mig-1 completed" in out.stdout and "writes unavailable" in out.stdout
    finally:
        pgmig("sandbox", "down", env=env)


def test_shell_cutover_card_and_status_name_people_and_end_with_the_outcome(tmp_path, cluster_root):
    """In the terminal too: who decided is a person (`@UAPPROVER`), never `approved by UAPPROVER` in the actor's
    place; the live card ends with the outcome and the write freeze, without streaming lines or a cancel."""
    from tests.integration.sample_data import online_pair

    src, tgt = online_pair(cluster_root, "shell-live")
    config = tmp_path / "pgmig.toml"
    config.write_text(
        config_toml(
            {"src": src, "tgt": tgt},
            extra='[slack]\napprovers = ["UAPPROVER"]\n[migration]\nprogress_interval_seconds = 0.2\n'
            "[online]\nfence_grace_seconds = 0.2\n",
        )
    )
    env = shell_env(tmp_path, config)
    script = [
        "migrate src tgt --mode online --db app --parallel 1",
        "wait mig-1 ready_for_cutover 120",
        "cutover mig-1",
        "as UAPPROVER",
        "press Approve",
        "wait mig-1 completed 120",
        "status mig-1",
        "audit mig-1",
        "watch mig-1",
    ]
    try:
        out = pgmig("shell", "--user", "dana", env=env, stdin="\n".join(script) + "\n", timeout=180)
    finally:
        src.destroy()
        tgt.destroy()
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "(1 job)" in text and "1 jobs" not in text
    assert "Approved by @UAPPROVER: mig-1 is cutting over" in text
    assert "`approval` — requested by @dana; approved by @UAPPROVER" in text
    assert "@approved" not in text and "started by approved" not in text
    assert "cutover.approved — cutting_over: cutover approved by @UAPPROVER" in text  # the audit names a person
    # the live card is edited on every tick (0.2 s): the terminal shows it as posted, then a line per state
    # change, each once, and its last word whole (as `watch` shows it too)
    assert text.count("so far") == 1
    changes = [line for line in text.splitlines() if line.startswith("[#shell ↻] mig-1 ")]
    assert len(changes) == len(set(changes))  # each state once, however many ticks
    for state in ("full_load", "ready_for_cutover", "awaiting_approval", "cutting_over", "released"):
        assert f"[#shell ↻] mig-1 {state}: src → tgt" in changes
    for final in (text[text.rindex("[#shell ↻] mig-1: src → tgt") :], text[text.rindex("pgmig> watch mig-1") :]):
        final = final.split("\n[#", 1)[0].split("\npgmig>", 1)[0]
        assert "completed in" in final and "writes unavailable" in final and "after release: validate" in final
        assert "streaming" not in final and "/pgmig cancel" not in final and "so far" not in final


def test_shell_commands_are_listed_and_explain_themselves(tmp_path):
    """No cluster needed: `help` lists the shell's own commands, its examples naming a configured approver; a
    bare `as`/`press`/`watch`/`wait` gets its usage; mistyped commands, options and server names get a "did you
    mean"; Slack's typography is read."""
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port(), "tgt": free_port()}, extra='[slack]\napprovers = ["U0LEAD"]\n'))
    script = "\n".join(
        [
            "help",
            "as",
            "press",
            "watch",
            "watch mig-9",
            "wait",
            "wait soon",
            "wait mig-9 ready_for_cutover",
            "wait mig-9 done 5",
            "help press",
            "stauts",
            "check srcc tgt —mode offline",
            "migrate src tgt --mode online --paralel 4",
            "press 99999999999",
            "as  “U0APPROVER”",
            "quit",
        ]
    )
    env = {"PGMIG_CONFIG": str(config), "PGMIG_STATE": str(tmp_path / "state.sqlite")}
    out = pgmig("shell", "--user", "alice", stdin=script, env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    help_part = text.split("pgmig> as")[0]
    for usage in ("press N", "as USER_ID", "watch mig-N", "wait N, or wait mig-N STATE [N]", "quit"):
        assert f"  {usage} " in help_part
    assert "`/pgmig check` — Run the pre-flight checks" in help_part  # and the Slack commands, as before
    assert re.search(r"as USER_ID +act as another Slack user, e\.g\. `as U0LEAD` to approve a cutover", help_part)
    assert "usage: as USER_ID — act as another Slack user, e.g. `as U0LEAD` to approve a cutover" in text
    assert "usage: watch mig-N — show a migration's live card" in text
    assert "❌ there is no mig-9; `list` shows the migrations" in text
    assert text.count("usage: press N — click button N of the last message") == 2  # `press`, `help press`
    assert "usage: wait N, or wait mig-N STATE [N] — pause N seconds" in text
    assert "`soon` is not a number of seconds" in text
    assert text.count("❌ there is no mig-9; `list` shows the migrations") == 2  # `watch`, `wait … STATE`
    assert "❌ `done`: usage: wait N, or wait mig-N STATE [N]" in text and "(states: created, preflight," in text
    assert "unknown command `stauts` — did you mean `status`?" in text
    assert "unknown server srcc; configured servers: src, tgt — did you mean `src`?" in text
    assert "`migrate` has no option `--paralel` — did you mean `--parallel`?" in text
    assert "❌ no button `99999999999` (buttons: none on screen)" in text
    assert "(you are now U0APPROVER)" in text
    assert "Traceback" not in text + out.stderr


def test_shell_form_checks_each_answer_and_asks_only_what_applies(tmp_path, source_cluster, target_cluster):
    """`migrate` alone: a refused answer is asked again at once with the reason (a choice's with a "did you
    mean"); the target is not offered the source; an online migration is asked no method and not offered
    pause-after-export; the command the form makes is shown before it starts."""
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": source_cluster, "tgt": target_cluster}))
    answers = [
        "migrate",
        "1",  # source: src
        "src",  # target: not offered
        "",  # target: Enter keeps tgt, the only other server
        "shop",
        "onlin",
        "online",
        "99",  # parallel jobs: out of range
        "",
        "5",  # options: an online migration has four
        "cancel",
        "migrate",
        "src",
        "",
        "shop",
        "offline",
        "dump",  # the method: asked for an offline migration
        "",
        "1,2",  # overwrite, pause after export
        "status mig-1",
    ]
    out = pgmig("shell", "--user", "erin", stdin="\n".join(answers) + "\n", env=shell_env(tmp_path, config))
    assert out.returncode == 0, out.stderr
    online, offline = out.stdout.split("(form cancelled; nothing was started)")
    assert "1. Source server * (one number or name)\n     1) src\n     2) tgt\n  > 1\n" in online
    target = "2. Target server * (one number or name; Enter keeps tgt)\n     1) tgt ✓\n"
    assert target + "  > src\n❌ no choice `src` (1–1 or a name)\n" + target + "  > \n3. Databases on src *" in online
    assert "  > onlin\n❌ no choice `onlin` (1–2 or a name) — did you mean `online`?\n4. Mode *" in online
    assert "  > 99\n❌ a whole number from 1 to 64, or empty for the default\n5. Parallel jobs" in online
    assert "6. Options (" in online and "2) Replica identity full" in online
    assert "3) Capture schema changes" in online and "4) Do not capture schema changes" in online
    assert "  > 5\n❌ no choice `5` (1–4 or a name)\n6. Options" in online
    assert "Method" not in online and "Pause after export" not in online
    assert "5. Method (offline only) *" in offline and "Replica identity full" not in offline
    assert "Capture schema changes" not in offline and "capture schema changes" not in offline
    assert "7. Options (" in offline and "2) Pause after export" in offline
    command = "/pgmig migrate src tgt --mode offline --method dump --db shop --overwrite --pause-after-export"
    assert f"  > 1,2\nThe form runs: {command}\n⏳ Running pre-flight checks before starting…\n" in offline
    assert "🚀 mig-1 started by @erin" in offline and "mig-1 stays paused" in offline
    assert "Traceback" not in out.stdout + out.stderr
