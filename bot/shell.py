"""The shell adapter: every `/pgmig` command in a terminal, no Slack workspace needed.

Type the same lines as in Slack (`/pgmig check source target`, or just `check source target`);
replies are rendered as text; buttons are numbered and pressed with `press 2` or `press Re-run check`.
`as USER` switches who you are (to approve a cutover someone else requested), `wait N` pauses a
script for N seconds; `help` lists these too. Reads a script from standard input when it is not a terminal.
At the terminal Ctrl-C drops the line being typed and prompts again (see :class:`Terminal`: the
interrupt then reaches neither `make run` nor a running migration's pg_dump); `quit` or Ctrl-D leaves.

`migrate` alone walks the migrate form (the Slack modal, handlers/modal.py) one numbered question at a
time, lists the source's databases once a source is chosen, and submits it through the modal's own
checks: a field they refuse is shown with the reason and asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import shlex
import signal
import sys
import termios
from collections.abc import Callable, Iterator

from bot.textrender import Button, Field, answer, chosen_value, form_items, question, render
from handlers import modal, router
from handlers.context import Invocation, Reply, Services
from handlers.grammar import normalize
from handlers.messages import outgoing
from migration_core.engine import MONITORED

PROMPT = "pgmig> "
BANNER = (
    "pgmig shell — type `help` for commands; `press N` clicks a button, `as USER` switches who you are, "
    "Ctrl-C clears the line, `quit` or Ctrl-D leaves."
)
# The shell's own commands (not Slack's): how each is typed, and what it does.
SHELL_COMMANDS = {
    "press": ("press N", "click button N of the last message (or `press LABEL`, e.g. `press Re-run check`)"),
    "as": ("as USER_ID", "act as another Slack user, e.g. `as U0APPROVER`"),
    "wait": ("wait N", "pause N seconds (at most 600), e.g. in a script while a migration runs"),
    "quit": ("quit", "leave the shell (also `exit` or Ctrl-D); Ctrl-C clears the line being typed"),
}
QUIT_WORDS = ("quit", "exit", "\\q")
CANCELLED = "\x03"  # what reading a line gives when Ctrl-C ended it


def _parts(reply: Reply) -> tuple[str, list]:
    """What the terminal shows goes through the same outgoing pass as what Slack receives."""
    safe = outgoing(reply)
    return safe.text, safe.blocks


class ShellPoster:
    """Channel posts shown in the terminal: a card when posted, again only when its text changes."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write
        self._ids = itertools.count(1)
        self._shown: dict[str, str] = {}
        self.on_buttons: Callable[[list[Button]], None] | None = None  # the shell makes them pressable

    async def post(self, channel: str, reply: Reply, thread_ts: str | None = None) -> str:
        ts = f"{next(self._ids)}"
        text, buttons = render(*_parts(reply))
        if buttons and self.on_buttons:
            self.on_buttons(buttons)
        prefix = f"[#{channel} thread]" if thread_ts else f"[#{channel}]"
        self.write(f"{prefix} {text}")
        self._shown[ts] = text
        return ts

    async def update(self, channel: str, ts: str, reply: Reply, *, final: bool = True) -> None:
        text, _ = render(*_parts(reply))
        if self._shown.get(ts) != text:
            self._shown[ts] = text
            self.write(f"[#{channel} ↻] {text}")


class Shell:
    def __init__(self, services: Services, user: str, write: Callable[[str], None] = print) -> None:
        self.services = services
        self.invocation = Invocation(user=user, channel="shell", transport="shell")
        self.write = write
        self.buttons: list[Button] = []
        self.interactive = False
        self.terminal: Terminal | None = None  # set by run() when the input is a terminal
        if isinstance(services.poster, ShellPoster):
            services.poster.on_buttons = self._offer

    def _offer(self, buttons: list[Button]) -> None:
        self.buttons = buttons

    async def execute(self, line: str) -> bool:
        """Run one line; False means the user asked to leave."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        word, _, rest = _first_word(line)
        if word in QUIT_WORDS:
            return not await self.may_leave()
        if word == "press":
            await self._press(rest)
            return True
        if word == "as":
            self._act_as(rest)
            return True
        if word == "wait":
            await self._wait(rest)
            return True
        if word == "help" and (topic := _shell_command(rest)):
            self.write(_usage(topic))
            return True
        text = line.removeprefix("/pgmig").strip() if line.startswith("/pgmig") else line
        if modal.wants_form(text):
            await self._form()
            return True
        working = router.ack_text(text)
        if working:
            self.write(f"⏳ {working}")
        self._show(await router.handle_command(text, self.invocation, self.services))
        if [w.lower() for w in text.split()] in ([], ["help"]):
            self.write(shell_help())
        return True

    async def may_leave(self) -> bool:
        """Whether `quit` (or Ctrl-D at the prompt) ends the session now. At a terminal, with migrations
        active, it asks first (a script just ends: `run` says what carries on)."""
        active = await self.services.engine.migrations(active_only=True)
        if not self.interactive or not active:
            return True
        listed = ", ".join(f"{m.id} ({m.state.value})" for m in active)
        self.write(
            f"⚠️ {listed} {'is' if len(active) == 1 else 'are'} still active. Running steps are finished first; "
            "streaming stops being watched until pgmig starts again, which carries every one of them on."
        )
        answer = await self._line("quit anyway? [y/N] ")
        return (answer or "").strip().lower() in ("y", "yes")

    async def _press(self, which: str) -> None:
        which = " ".join(_words(which))
        choices = ", ".join(f"{i}: {b.label}" for i, b in enumerate(self.buttons, 1)) or "none on screen"
        if not which:
            self.write(f"{_usage('press')} (buttons: {choices})")
            return
        button = self._find(which)
        if button is None:
            self.write(f"❌ no button `{_short(which)}` (buttons: {choices})")
            return
        self.write(f"(pressed {button.label})")
        reply = await router.handle_action(button.action_id, button.value, self.invocation, self.services)
        if reply is not None:
            self._show(reply)

    def _find(self, which: str) -> Button | None:
        if which.isascii() and which.isdigit() and len(which) < 6 and 1 <= int(which) <= len(self.buttons):
            return self.buttons[int(which) - 1]
        matches = [b for b in self.buttons if b.label.lower() == which.lower()]
        return matches[-1] if matches else None

    def _act_as(self, rest: str) -> None:
        words = _words(rest)
        if len(words) != 1 or len(words[0]) > 64 or not words[0].isprintable():
            self.write(_usage("as"))
            return
        self.invocation = Invocation(user=words[0], channel="shell", transport="shell")
        self.write(f"(you are now {self.invocation.user})")

    async def _wait(self, rest: str) -> None:
        try:
            seconds = float(rest)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            problem = f"❌ `{_short(rest)}` is not a number of seconds; " if rest else ""
            self.write(problem + _usage("wait"))
            return
        await asyncio.sleep(min(600.0, seconds))

    def _show(self, reply: Reply) -> None:
        text, buttons = render(*_parts(reply))
        if buttons:
            self.buttons = buttons
        self.write(text)

    async def _form(self) -> None:
        """The migrate modal as numbered questions, submitted through the modal's own checks."""
        svc = self.services
        view = modal.open_form(svc.servers, channel=self.invocation.channel)
        if isinstance(view, Reply):
            self._show(view)
            return
        self.write("📝 Migrate: answer each question (* = required); `cancel` leaves the form.")
        state: dict[str, dict] = {}
        shown: set[str] = set()  # notes already printed
        again: set[str] | None = None  # after refusals: the refused fields (and any new ones)
        while True:
            walked = await self._walk(view, state, again, shown)
            if walked is None:
                self.write("(form cancelled; nothing was started)")
                return
            view = walked
            form = modal.read({**view, "state": {"values": state}})
            errors = await modal.field_errors(form, self.invocation, svc)
            if not errors:
                break
            labels = {f.block_id: f.label for f in form_items(view) if isinstance(f, Field)}
            for block_id, message in errors.items():
                self.write(f"❌ {labels.get(block_id, block_id)}: {message}")
            again = set(errors)
        self.write(f"⏳ {modal.working()}")
        reply = await modal.submit(form, self.invocation, svc)
        if reply is not None:
            self._show(reply)

    async def _walk(self, view: dict, state: dict[str, dict], again: set[str] | None, shown: set[str]) -> dict | None:
        """Ask the fields in order (all of them, or those in `again` and any the form gained), keeping
        answers in `state` as Slack's view.state.values; a field that dispatches (the source) gets the
        form rebuilt with what it brings (the databases). Returns the final view; None when cancelled."""
        asked: set[str] = set()
        while True:
            items = form_items(view)
            fields = [f for f in items if isinstance(f, Field)]
            todo = next(
                (
                    f
                    for f in fields
                    if f.block_id not in asked and (again is None or f.block_id in again or f.block_id not in state)
                ),
                None,
            )
            for item in items:
                if item is todo:
                    break
                if isinstance(item, str) and item not in shown:
                    shown.add(item)
                    self.write(item)
            if todo is None:
                for f in fields:  # unasked fields count with what they show, as in Slack
                    kept = answer(f, "")
                    state.setdefault(f.block_id, {f.action_id: kept} if isinstance(kept, dict) else {})
                return view
            number = fields.index(todo) + 1
            while True:
                line = await self._line(question(todo, number) + "\n  > ", echo_blank=True)
                if line is None or line.strip().lower() == "cancel":
                    return None
                got = answer(todo, line)
                if isinstance(got, dict):
                    break
                self.write(f"❌ {got}")
            state[todo.block_id] = {todo.action_id: got}
            asked.add(todo.block_id)
            if todo.dispatch:
                self.write("⏳ listing its databases…")
                view = await modal.source_chosen(
                    self.services, {**view, "state": {"values": state}}, chosen_value(got), self.invocation
                )

    async def _line(self, prompt: str, echo_blank: bool = False) -> str | None:
        """The next line typed (or of the script); None at the end of input. At the terminal, Ctrl-C
        drops what was typed and asks again."""
        if self.interactive:
            while (line := await self._typed(prompt)) == CANCELLED:
                self.write("")  # after the ^C the terminal echoed: a fresh prompt on a line of its own
            return line
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return None
        if line.strip() or echo_blank:
            self.write(f"{prompt}{line.strip()}")
        return line

    async def _typed(self, prompt: str) -> str | None:
        """One line from the person at the prompt: CANCELLED when Ctrl-C ended it, None at Ctrl-D."""
        with self._prompt_signals(prompt):
            if self.terminal is not None:
                return await asyncio.to_thread(self.terminal.read_line, prompt)
            _prompt(prompt)
            return await asyncio.to_thread(sys.stdin.readline) or None

    @contextlib.contextmanager
    def _prompt_signals(self, prompt: str) -> Iterator[None]:
        """While the prompt waits, SIGINT (Ctrl-C where the terminal could not be taken over, or `kill -INT`)
        prompts again instead of stopping pgmig — the terminal itself drops the typed text — and SIGTERM
        first gives the terminal its settings back. Outside the prompt (a command running, the final wait
        for migrations) both keep their usual effect."""
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGINT: lambda: self._reprompt(prompt), signal.SIGTERM: self._terminated}
        previous = {sig: signal.getsignal(sig) for sig in handlers}
        installed = []
        try:
            for sig, handler in handlers.items():
                try:
                    loop.add_signal_handler(sig, handler)
                except (ValueError, RuntimeError, NotImplementedError):  # not the main thread: signals as they are
                    break
                installed.append(sig)
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
                if previous[sig] is not None:
                    signal.signal(sig, previous[sig])

    def _reprompt(self, prompt: str) -> None:
        self.write("")
        _prompt(prompt)

    def _terminated(self) -> None:
        if self.terminal is not None:
            self.terminal.restore()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # then end as SIGTERM always ended pgmig

    async def run(self, interactive: bool | None = None) -> None:
        interactive = sys.stdin.isatty() if interactive is None else interactive
        self.interactive = interactive
        self.terminal = Terminal.of(sys.stdin) if interactive else None
        if interactive:
            self.write(BANNER)
        await self._read(interactive)
        active = await self.services.engine.migrations(active_only=True)
        running = [m.id for m in active if self.services.engine.is_running(m.id)]
        if running:
            self.write(f"waiting for {', '.join(running)} to finish (Ctrl-C stops it; `retry` resumes it later)…")
            await self.services.engine.wait_all()
        for m in await self.services.engine.migrations(active_only=True):
            doing = "keeps streaming" if m.state in MONITORED else f"stays {m.state.value}"
            self.write(f"{m.id} {doing}: the next start (`make run`) watches it again")

    async def _read(self, interactive: bool) -> None:
        while True:
            line = await self._line(PROMPT)
            if line is None:  # the end of the script, or Ctrl-D at the prompt
                if not self.interactive:
                    return
                self.write("")  # what comes next starts on a line of its own
                if await self.may_leave():
                    return
                continue
            if not await self.execute(line):
                return


def shell_help() -> str:
    """The shell's own commands, listed after `help`."""
    width = max(len(usage) for usage, _ in SHELL_COMMANDS.values())
    lines = [f"  {usage:<{width}}  {what}" for usage, what in SHELL_COMMANDS.values()]
    return "\n".join(["In this shell (not in Slack):", *lines])


def _usage(command: str) -> str:
    usage, what = SHELL_COMMANDS[command]
    return f"usage: {usage} — {what}"


def _shell_command(word: str) -> str | None:
    """`press`, `as`, `wait` or `quit` (for any of its names), or None."""
    word = word.strip().lower()
    return "quit" if word in QUIT_WORDS else word if word in SHELL_COMMANDS else None


def _first_word(line: str) -> tuple[str, str, str]:
    """The line's first word (lower case) and the rest; any Unicode space separates them."""
    parts = line.split(None, 1)
    return parts[0].lower(), " ", parts[1].strip() if len(parts) > 1 else ""


def _words(text: str) -> list[str]:
    """Words as the grammar reads them (quotes, also curly ones, group), or split on spaces if unreadable."""
    try:
        return shlex.split(normalize(text))
    except ValueError:
        return text.split()


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "…"


def _prompt(prompt: str) -> None:
    sys.stdout.write(prompt)
    sys.stdout.flush()


class Terminal:
    """The terminal the shell reads from. While it waits for a line, the terminal's interrupt character
    (Ctrl-C) is made to end the line instead of sending SIGINT: the kernel sends SIGINT to the whole
    foreground process group, which holds `make run` (it would end with "Interrupt" when pgmig does) and
    the pg_dump/pg_restore/psql of running migrations (they would die), not only pgmig. The line so
    ended reads back as CANCELLED. Ctrl-Z and Ctrl-\\ keep their effect; while a command runs the
    terminal is as it was, so Ctrl-C there stops pgmig as before."""

    def __init__(self, fd: int, encoding: str, disabled: bytes) -> None:
        self.fd = fd
        self.encoding = encoding
        self.disabled = disabled  # the terminal's "no character" (_POSIX_VDISABLE)
        self._saved: list | None = None

    @classmethod
    def of(cls, stream: object) -> Terminal | None:
        """The stream's terminal, if it is one that reads line by line and has an interrupt character."""
        try:
            fd = stream.fileno()  # type: ignore[attr-defined]
            attrs = termios.tcgetattr(fd)
            disabled = bytes([os.fpathconf(fd, "PC_VDISABLE")])
        except (AttributeError, OSError, ValueError, termios.error):
            return None
        if not attrs[3] & termios.ICANON or attrs[6][termios.VINTR] == disabled:
            return None
        return cls(fd, getattr(stream, "encoding", None) or "utf-8", disabled)

    def read_line(self, prompt: str) -> str | None:
        """Prompt, then one line (CANCELLED when Ctrl-C ended it); None at Ctrl-D on an empty line. The
        prompt shows once Ctrl-C is taken over, so a Ctrl-C right after it is never a signal."""
        saved = termios.tcgetattr(self.fd)
        interrupt = saved[6][termios.VINTR]
        ours = [*saved[:6], list(saved[6])]
        ours[6][termios.VEOL] = interrupt  # Ctrl-C ends the line at once, without a signal
        ours[6][termios.VINTR] = self.disabled
        self._saved = saved
        termios.tcsetattr(self.fd, termios.TCSANOW, ours)
        try:
            _prompt(prompt)
            data = b""
            while True:
                chunk = os.read(self.fd, 4096)
                if not chunk:  # Ctrl-D: the end of input, or (after some text) of this line
                    return data.decode(self.encoding, errors="replace") if data else None
                data += chunk
                if interrupt in data:
                    return CANCELLED
                if data.endswith(b"\n"):
                    return data.decode(self.encoding, errors="replace")
        finally:
            self.restore()

    def restore(self) -> None:
        """The terminal's own settings back (also from a signal handler, while a read waits)."""
        saved, self._saved = self._saved, None
        if saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSANOW, saved)
