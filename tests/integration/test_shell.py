"""The shell adapter and the CLI, run as a person runs them: `pgmig shell < script.txt`."""

from __future__ import annotations

import os
import subprocess
import sys

from bot.localpg import free_port
from tests.integration.clusters import PASSWORD, config_toml


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
        out = pgmig("run", "--user", "dana", stdin="check source target\n", env=env)
        assert out.returncode == 0, out.stderr
        assert "sandbox ready" in out.stdout and "No SLACK_BOT_TOKEN" in out.stdout
        assert "Pre-flight: source → target (online)" in out.stdout and "✅ Ready" in out.stdout
        assert "db shop" in out.stdout
        assert pgmig("sandbox", "status", env=env).stdout.count("stopped") == 2  # stopped when the shell ends
        again = pgmig("run", stdin="servers\n", env=env)  # a second start reuses the clusters and their data
        assert "sandbox running" in again.stdout and "• source" in again.stdout
        assert pgmig("sandbox", "up", env=env).returncode == 0
        assert pgmig("sandbox", "status", env=env).stdout.count("running") == 2
    finally:
        pgmig("sandbox", "down", env=env)
    assert "no sandbox" in pgmig("sandbox", "status", env=env).stdout


def test_shell_migration_runs_to_completion_before_the_script_ends(tmp_path, source_cluster, target_cluster):
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": source_cluster, "tgt": target_cluster}))
    env = {
        "PGMIG_CONFIG": str(config),
        "PGMIG_STATE": str(tmp_path / "state.sqlite"),
        "PGMIG_HOME": str(tmp_path / "home"),
    }
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
            "wait 8",
            "status mig-1",
            "cutover mig-1",
            "press Approve",
            "as UAPPROVER",
            "press Approve",
            "wait 10",
            "status mig-1",
        ]
    )
    try:
        out = pgmig("run", "--user", "dana", stdin=script + "\n", env=env, timeout=180)
        assert out.returncode == 0, out.stderr
        assert "ready_for_cutover" in out.stdout
        assert "Approve cutover of mig-1?" in out.stdout
        assert "someone else must approve it" in out.stdout  # dana asked; dana cannot approve
        assert "(you are now UAPPROVER)" in out.stdout
        assert "mig-1 completed" in out.stdout and "writes unavailable" in out.stdout
    finally:
        pgmig("sandbox", "down", env=env)
