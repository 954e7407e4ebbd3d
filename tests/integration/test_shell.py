"""The shell adapter and the CLI, run as a person runs them: `pgmig shell < script.txt`."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time

from bot.localpg import free_port
from migration_core.models import Migration, Mode, State
from migration_core.store import Store
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
        "wait 8",  # ready for cutover within a second or two
        "cutover mig-1",
        "as UAPPROVER",
        "press Approve",
        "wait 8",
        "status mig-1",
        "audit mig-1",
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
    final = text[text.rindex("[#shell ↻] mig-1: src → tgt") :].split("\n[#", 1)[0]
    assert "completed in" in final and "writes unavailable" in final and "after release: validate" in final
    assert "streaming" not in final and "/pgmig cancel" not in final and "so far" not in final


def test_shell_commands_are_listed_and_explain_themselves(tmp_path):
    """No cluster needed: `help` lists the shell's own commands; a bare `as`/`press`/`wait` gets its usage;
    mistyped commands, options and server names get a "did you mean"; Slack's typography is read."""
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port(), "tgt": free_port()}))
    script = "\n".join(
        [
            "help",
            "as",
            "press",
            "wait",
            "wait soon",
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
    for usage in ("press N", "as USER_ID", "wait N", "quit"):
        assert f"  {usage} " in help_part
    assert "`/pgmig check` — Run the pre-flight checks" in help_part  # and the Slack commands, as before
    assert "usage: as USER_ID — act as another Slack user, e.g. `as U0APPROVER`" in text
    assert text.count("usage: press N — click button N of the last message") == 2  # `press`, `help press`
    assert "usage: wait N — pause N seconds" in text and "`soon` is not a number of seconds" in text
    assert "unknown command `stauts` — did you mean `status`?" in text
    assert "unknown server srcc; configured servers: src, tgt — did you mean `src`?" in text
    assert "`migrate` has no option `--paralel` — did you mean `--parallel`?" in text
    assert "❌ no button `99999999999` (buttons: none on screen)" in text
    assert "(you are now U0APPROVER)" in text
    assert "Traceback" not in text + out.stderr


class Terminal:
    """pgmig's shell on a pseudo-terminal of its own, run by `sh` the way `make run` runs it: `sh` traps
    SIGINT, so a Ctrl-C that reached the process group would show."""

    def __init__(self, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [
                "sh",
                "-c",
                'trap "echo SH-GOT-SIGINT" INT; "$0" -m bot.cli shell --user alice; echo "shell exited $?"',
                sys.executable,
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the terminal's Ctrl-C goes to this group
        )
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.seen.count(text) < count:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen!r}"
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the terminal closed: everything has been read
                    assert self.seen.count(text) >= count, f"no {text!r} in {self.seen!r}"

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_ctrl_c_at_the_prompt_cancels_the_line_and_the_shell_goes_on(tmp_path):
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port(), "tgt": free_port()}))
    term = Terminal({"PGMIG_CONFIG": str(config), "PGMIG_STATE": str(tmp_path / "state.sqlite")})
    try:
        term.expect("pgmig> ")
        term.type("check sr")
        term.expect("check sr")
        term.type("\x03")  # Ctrl-C, as the keyboard sends it
        term.expect("pgmig> ", count=2)
        term.type("servers\n")  # a new line: nothing of the cancelled one is left in it
        term.expect("Configured servers")
        term.expect("pgmig> ", count=3)
        shell_pid = int(subprocess.run(["pgrep", "-P", str(term.proc.pid)], capture_output=True, text=True).stdout)
        os.kill(shell_pid, signal.SIGINT)  # a SIGINT from elsewhere at the prompt: a new prompt, too
        term.expect("pgmig> ", count=4)
        term.type("quit\n")
        term.expect("shell exited 0")
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
    assert "unknown server sr" not in term.seen and "check srservers" not in term.seen
    assert "SH-GOT-SIGINT" not in term.seen  # the Ctrl-C never reached the process group (`make run`)
    assert "Traceback" not in term.seen


def test_ctrl_d_at_the_prompt_leaves_with_status_0(tmp_path):
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port()}))
    term = Terminal({"PGMIG_CONFIG": str(config), "PGMIG_STATE": str(tmp_path / "state.sqlite")})
    try:
        term.expect("pgmig> ")
        term.type("\x04")
        term.expect("shell exited 0")
    finally:
        term.close()
    assert "Traceback" not in term.seen


def test_quit_with_an_active_migration_asks_first_and_says_what_carries_on(tmp_path):
    state = tmp_path / "state.sqlite"

    async def paused() -> None:  # a migration waiting for its export files to be reviewed
        store = await Store.open(str(state))
        await store.create_migration(Migration("mig-1", "src", "tgt", ["shop"], Mode.OFFLINE, State.PAUSED, "U0BOB"))
        await store.close()

    asyncio.run(paused())
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port(), "tgt": free_port()}))
    term = Terminal({"PGMIG_CONFIG": str(config), "PGMIG_STATE": str(state)})
    try:
        term.expect("pgmig> ")
        term.type("quit\r")
        term.expect("mig-1 (paused) is still active")
        term.expect("quit anyway? [y/N] ")
        term.type("n\r")  # stays
        term.expect("pgmig> ", count=2)
        term.type("\x04")  # Ctrl-D asks too
        term.expect("quit anyway? [y/N] ", count=2)
        term.type("y\r")
        term.expect("mig-1 stays paused: the next start (`make run`) watches it again")
        term.expect("shell exited 0")
    finally:
        term.close()
    assert "Traceback" not in term.seen
