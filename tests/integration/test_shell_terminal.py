"""The shell at a terminal, as a person sees it: `pgmig shell` on a pseudo-terminal, its screen read through
pyte (a terminal emulator), keys typed as a keyboard sends them."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

import asyncpg
import pyte

from bot.localpg import LocalCluster, free_port
from migration_core.state.models import Migration, Mode, State
from migration_core.store import Store
from tests.integration.clusters import config_toml, shell_env

CTRL_C, CTRL_D, TAB = "\x03", "\x04", "\t"


class _Emulator(pyte.Screen):
    """A screen that answers the cursor-position requests prompt_toolkit sends, as a terminal does."""

    def __init__(self, columns: int, lines: int, answer: Callable[[str], None]) -> None:
        super().__init__(columns, lines)
        self.answer = answer

    def write_process_input(self, data: str) -> None:
        self.answer(data)

    def draw(self, data: str) -> None:
        super().draw(data.replace("\ufe0f", ""))  # pyte stops a line at the emoji variation selector (⚠️)


class Screen:
    """pgmig's shell on a pseudo-terminal of its own, run by `sh` the way `make run` runs it: `sh` traps
    SIGINT, so a Ctrl-C that reached the process group would show. `raw` keeps every byte written."""

    ROWS, COLUMNS = 80, 160

    def __init__(self, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.ROWS, self.COLUMNS, 0, 0))
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
            env={**os.environ, "TERM": "xterm", **env},
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the terminal's Ctrl-C goes to this group
        )
        os.close(slave)
        self.screen = _Emulator(self.COLUMNS, self.ROWS, lambda data: os.write(self.master, data.encode()))
        self.stream = pyte.ByteStream(self.screen)
        self.raw = ""

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def cursor_line(self) -> str:
        return self.lines()[self.screen.cursor.y]

    def wait_for(self, what: str | Callable[[], bool], timeout: float = 30, seen: str = "") -> None:
        """Read the terminal until `what` is on the screen (or holds; `seen` says what that is)."""
        holds = what if callable(what) else lambda: what in self.text()
        seen = seen or repr(what)
        deadline = time.monotonic() + timeout
        while not holds():
            assert time.monotonic() < deadline, f"never {seen}; the screen:\n{self.text()}"
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the terminal closed: everything has been read
                    data = b""
                if not data:
                    assert holds(), f"never {seen}; the screen:\n{self.text()}"
                    return
                self.raw += data.decode(errors="replace")
                self.stream.feed(data)

    def at_prompt(self, typed: str = "", prompt: str = "pgmig> ") -> None:
        """Wait until the cursor's line is the prompt with `typed` after it."""
        line = (prompt + typed).rstrip()
        self.wait_for(lambda: self.cursor_line() == line, seen=f"the cursor on {line!r}")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def _under_the_interrupted_prompt(term: Screen) -> bool:
    """The cursor is on an empty prompt, and the line above it is the prompt that was interrupted (counting
    the prompts on the screen misses it when the terminal's redraw erased lines above: seen under load)."""
    y = term.screen.cursor.y
    return y > 0 and term.cursor_line() == "pgmig>" and term.lines()[y - 1] == "pgmig>"


async def _paused(state: str) -> None:
    """A migration waiting for its export files to be reviewed."""
    store = await Store.open(state)
    await store.create_migration(Migration("mig-1", "src", "tgt", ["shop"], Mode.OFFLINE, State.PAUSED, "U0BOB"))
    await store.close()


def test_ctrl_c_drops_the_line_or_stops_a_wait_and_never_reaches_make_run(tmp_path):
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port(), "tgt": free_port()}))
    term = Screen(shell_env(tmp_path, config))
    try:
        term.at_prompt()
        term.type("check sr")
        term.at_prompt("check sr")
        term.type(CTRL_C)  # as the keyboard sends it
        term.at_prompt()
        assert "pgmig> check sr" in term.lines()  # the dropped line stays in sight, a new prompt under it
        term.type("servers\r")  # a new line: nothing of the dropped one is left in it
        term.wait_for("• src — `postgres@127.0.0.1:")
        term.at_prompt()
        shell_pid = int(subprocess.run(["pgrep", "-P", str(term.proc.pid)], capture_output=True, text=True).stdout)
        os.kill(shell_pid, signal.SIGINT)  # a SIGINT from elsewhere at the prompt: a new prompt, too
        term.wait_for(lambda: _under_the_interrupted_prompt(term), seen="a new prompt under the interrupted one")
        term.type("wait 600\r")
        term.wait_for("⏳ 0:01 · Ctrl-C: back to the prompt")  # what the wait shows while it lasts
        term.type(CTRL_C)
        term.at_prompt()
        assert "Ctrl-C: back to the prompt" not in term.text()
        term.type("quit\r")
        term.wait_for("shell exited 0")
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
    assert "unknown server sr" not in term.raw and "check srservers" not in term.raw
    assert "SH-GOT-SIGINT" not in term.raw  # the Ctrl-C never reached the process group (`make run`)
    assert "Traceback" not in term.raw


def test_tab_completes_commands_options_servers_and_migration_ids(tmp_path):
    state = tmp_path / "state.sqlite"
    asyncio.run(_paused(str(state)))
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port(), "tgt": free_port()}))
    term = Screen(shell_env(tmp_path, config))
    try:
        term.at_prompt()
        for keys, shown in [
            ("mig" + TAB, "migrate"),
            (" s" + TAB, "migrate src"),
            (" " + TAB, "migrate src tgt"),  # the source is not offered again
            (" --mo" + TAB, "migrate src tgt --mode"),
            (" of" + TAB, "migrate src tgt --mode offline"),
        ]:
            term.type(keys)
            term.at_prompt(shown)
        term.type(CTRL_C)
        term.at_prompt()
        term.type("stauts" + TAB)  # a mistyped word completes to what it most likely meant
        term.at_prompt("status")
        term.type(" " + TAB)
        term.at_prompt("status mig-1")
        term.type("\r")
        term.wait_for("mig-1: src → tgt")
        term.at_prompt()
        term.type("quit\r")
        term.wait_for("quit anyway? [y/N]")
        term.type("y\r")
        term.wait_for("shell exited 0")
    finally:
        term.close()
    assert "Traceback" not in term.raw


def test_quit_with_an_active_migration_asks_first_and_says_what_carries_on(tmp_path):
    state = tmp_path / "state.sqlite"
    asyncio.run(_paused(str(state)))
    config = tmp_path / "pgmig.toml"
    config.write_text(config_toml({"src": free_port(), "tgt": free_port()}))
    term = Screen(shell_env(tmp_path, config))
    try:
        term.at_prompt()
        term.type("quit\r")
        term.wait_for("mig-1 (paused) is still active")
        term.at_prompt(prompt="quit anyway? [y/N] ")
        term.type("n\r")  # stays
        term.at_prompt()
        term.type(CTRL_D)  # Ctrl-D asks too
        term.at_prompt(prompt="quit anyway? [y/N] ")
        term.type(CTRL_C)  # and Ctrl-C there is a no
        term.at_prompt()
        term.type("quit\r")
        term.at_prompt(prompt="quit anyway? [y/N] ")
        term.type("y\r")
        term.wait_for("mig-1 stays paused: the next start (`make run`) watches it again")
        term.wait_for("shell exited 0")
    finally:
        term.close()
    assert "SH-GOT-SIGINT" not in term.raw and "Traceback" not in term.raw


class TableLock:
    """A session holding a table ACCESS EXCLUSIVE: pg_dump waits for it, so a migration of its database stays
    in its export, running, until the lock is released."""

    def __init__(self, cluster: LocalCluster, database: str, table: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(cluster.dsn(database)))
        self.loop.run_until_complete(self.conn.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.conn.close())  # the transaction ends with the session
            self.loop.close()


def test_a_running_migration_prints_above_the_line_being_typed_and_ctrl_c_stops_waiting_for_it(
    tmp_path, source_cluster, target_cluster
):
    """Progress ticks print nothing; each state change is one line, above the prompt and what is typed on it;
    `quit` waits for the running migration and Ctrl-C goes back to the prompt; `watch` shows the live card."""
    source_cluster.psql("DROP DATABASE IF EXISTS held WITH (FORCE)")
    source_cluster.psql("CREATE DATABASE held")
    source_cluster.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)", "held")
    config = tmp_path / "pgmig.toml"
    ticks = "[migration]\nprogress_interval_seconds = 0.2\n"
    config.write_text(config_toml({"src": source_cluster, "tgt": target_cluster}, extra=ticks))
    lock = TableLock(source_cluster, "held", "t")
    term = Screen(shell_env(tmp_path, config))
    try:
        term.at_prompt()
        term.type("migrate src tgt --mode offline --db held --overwrite\r")
        term.wait_for("[#shell ↻] mig-1 exporting: src → tgt")  # a state change: one line
        term.at_prompt()
        term.type("quit\r")
        term.wait_for("mig-1 (exporting) is still active")
        term.at_prompt(prompt="quit anyway? [y/N] ")
        term.type("y\r")
        term.wait_for("waiting for mig-1 to finish (Ctrl-C: back to the prompt; the work goes on)…")
        term.wait_for("⏳ 0:02 · Ctrl-C: back to the prompt")  # ten progress ticks at least, none printed
        term.type(CTRL_C)
        term.wait_for("(back at the prompt: mig-1 goes on; `quit` leaves once done)")
        term.at_prompt()
        term.type("status mi")
        term.at_prompt("status mi")
        lock.release()  # the migration goes on, and says so while a line is being typed
        term.wait_for("[#shell thread] @alice ✅ mig-1 completed")
        term.wait_for("✅ completed in")  # its live card's last word, whole
        term.at_prompt("status mi")  # drawn again under the output, with what was typed
        lines = term.lines()[: term.screen.cursor.y + 1]
        below = lines[next(i for i, line in enumerate(lines) if "✅ mig-1 completed" in line) :]
        assert below[-1] == "pgmig> status mi"
        assert "pgmig> status mi" not in below[:-1]  # the prompt was moved below the output, not written over
        assert term.raw.count("so far") == 1  # the card once, as posted; never re-drawn on a tick
        term.type("g-1\r")
        term.wait_for("Steps")
        term.at_prompt()
        term.type("watch mig-1\r")
        term.wait_for("(watching mig-1: Enter or Ctrl-C stops)")
        term.type("\r")
        term.wait_for(lambda: (lines := term.lines())[lines.index("pgmig> watch mig-1") + 1] == "mig-1: src → tgt")
        term.at_prompt()  # the live card is left on the screen as it stood, and the prompt is back
        assert "(watching mig-1" not in term.text()
        term.type("quit\r")
        term.wait_for("shell exited 0")
    finally:
        lock.release()
        term.close()
        for cluster in (source_cluster, target_cluster):  # the session's clusters as other tests expect them
            cluster.psql("DROP DATABASE IF EXISTS held WITH (FORCE)")
    assert "SH-GOT-SIGINT" not in term.raw and "Traceback" not in term.raw
