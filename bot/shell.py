"""The shell adapter: every `/pgmig` command in a terminal, no Slack workspace needed.

Type the same lines as in Slack (`/pgmig check source target`, or just `check source target`);
replies are rendered as text; buttons are numbered and pressed with `press 2` or `press Re-run check`.
`as USER` switches who you are (to approve a cutover someone else requested), `watch mig-N` shows a
migration's live card, `wait N` pauses a script for N seconds and `wait mig-N STATE` until a migration is in
that state (or has ended); `help` lists these too. Reads a script
from standard input when it is not a terminal.

Channel posts print as they come: a new message whole; a live card's progress refresh as one line, and
only when its state changes — the card is edited on every progress tick, which would be a block of lines
every few seconds; its last word (a decision, an outcome) whole. `watch` shows the card itself.

At a terminal, prompt_toolkit carries the screen and keyboard (see :class:`Terminal`): output goes above
the line being typed, Tab completes, Ctrl-C drops the line at the prompt and stops any wait (a command,
`wait`, `watch`, `quit` waiting for migrations) — without ever becoming a signal for the process group,
which holds `make run` — and `quit` or Ctrl-D leaves (with migrations active it asks first).

`migrate` alone walks the migrate form (the Slack modal, handlers/modal.py) one numbered question at a
time. Each answer goes through the modal's own checks as it is given, so a refused one is asked again at
once with the reason; choices the checks refuse are not offered, a question with nothing left to decide
(the method of an online migration) is not asked, and the command the form makes is shown before it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import os
import shlex
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import FormattedTextControl, Layout, Window
from prompt_toolkit.patch_stdout import patch_stdout

from bot.textrender import (
    CHOICE,
    CHOICES,
    Button,
    Field,
    answer,
    chosen_value,
    form_items,
    mrkdwn_to_text,
    question,
    render,
    state_of,
)
from handlers import modal, router
from handlers.authz import is_group
from handlers.context import Invocation, Posted, Reply, Services
from handlers.grammar import COMMANDS, MIGRATION_ID, UsageError, close_match, normalize
from handlers.messages import outgoing
from migration_core.engine.api import MONITORED
from migration_core.observe.charts import Chart
from migration_core.state.models import State

log = logging.getLogger(__name__)

PROMPT = "pgmig> "
BANNER = (
    "pgmig shell — type `help` for commands; Tab completes; `press N` clicks a button, `as USER` switches who "
    "you are, `watch mig-N` shows a live card; Ctrl-C clears the line or stops a wait; `quit` or Ctrl-D leaves."
)
# The shell's own commands (not Slack's): how each is typed, and what it does ({approver}: a configured one).
SHELL_COMMANDS = {
    "press": ("press N", "click button N of the last message (or `press LABEL`, e.g. `press Re-run check`)"),
    "as": ("as USER_ID", "act as another Slack user, e.g. `as {approver}` to approve a cutover"),
    "watch": ("watch mig-N", "show a migration's live card; at a terminal it stays up to date until Enter or Ctrl-C"),
    "wait": (
        "wait N, or wait mig-N STATE [N]",
        "pause N seconds (at most 600); or until mig-N is STATE (e.g. ready_for_cutover) or has ended, at most N "
        "seconds (600 if not said), e.g. in a script before a cutover",
    ),
    "quit": ("quit", "leave the shell (also `exit` or Ctrl-D); Ctrl-C clears the line being typed or stops a wait"),
}
QUIT_WORDS = ("quit", "exit", "\\q")
WAIT_LIMIT = 600.0  # the longest `wait`, in seconds
WAIT_POLL = 0.2  # how often `wait mig-N STATE` reads the migration's state
CANCELLED = "\x03"  # what reading a line gives when Ctrl-C dropped it
EXAMPLE_APPROVER = "UAPPROVER"  # the sandbox's approver, for a configuration that names none
SERVER_METAVARS = ("SOURCE", "TARGET", "SERVER")  # positionals and option values that name a configured server


def _parts(reply: Reply) -> tuple[str, list]:
    """What the terminal shows goes through the same outgoing pass as what Slack receives."""
    safe = outgoing(reply)
    return safe.text, safe.blocks


class ShellPoster:
    """Channel posts shown in the terminal: a message whole when posted; an edit only when the message's own
    summary (its notification text: a live card's state) changes, never on every tick — as one line, or
    whole when it is final (a decision, an outcome). Every message is kept as it stands now, for `watch`. A
    chart is written to a file in `charts`, whose path is printed: a terminal shows no pictures."""

    def __init__(self, write: Callable[[str], None] = print, *, charts: Path) -> None:
        self.write = write
        self.charts = charts
        self._last = 0
        self._cards: dict[str, tuple[str, str]] = {}  # ts → (summary, text) as it stands now
        self.on_buttons: Callable[[list[Button]], None] | None = None  # the shell makes them pressable

    def _ts(self) -> str:
        """A reference like Slack's ts (seconds.microseconds), unique across sessions too: the store keeps a
        card's ts, and a later session must not take an earlier one's card for its own."""
        self._last = max(time.time_ns() // 1000, self._last + 1)
        return f"{self._last // 1_000_000}.{self._last % 1_000_000:06d}"

    async def post(self, channel: str, reply: Reply, thread_ts: str | None = None) -> Posted:
        ts = self._ts()
        summary, blocks = _parts(reply)
        text, buttons = render(summary, blocks)
        if buttons and self.on_buttons:
            self.on_buttons(buttons)
        prefix = f"[#{channel} thread]" if thread_ts else f"[#{channel}]"
        self.write(f"{prefix} {text}")
        self._cards[ts] = (mrkdwn_to_text(summary), text)
        return Posted(channel, ts)

    async def update(self, channel: str, ts: str, reply: Reply, *, final: bool = True) -> None:
        """Printed only when the summary changes (a card of an earlier session's once, to say where it
        stands): as that one line for a progress refresh (`final=False`); whole otherwise — a decision, an
        outcome, which matters on its own and comes once."""
        summary, blocks = _parts(reply)
        text, _ = render(summary, blocks)
        summary = mrkdwn_to_text(summary)
        before = self._cards.get(ts)
        self._cards[ts] = (summary, text)
        if before is None or before[0] != summary:
            self.write(f"[#{channel} ↻] {text if final else summary}")

    async def upload(self, channel: str, chart: Chart, thread_ts: str | None = None) -> None:
        prefix = f"[#{channel} thread]" if thread_ts else f"[#{channel}]"
        try:
            path = await asyncio.to_thread(keep_chart, self.charts, chart)
        except OSError as exc:
            self.write(f"{prefix} the chart of {chart.migration_id} ({chart.moment}) could not be saved: {exc}")
            return
        self.write(f"{prefix} 📈 {chart.title}: {path}")

    def card(self, ts: str) -> str | None:
        """The message as it stands now; None when this session has not seen it."""
        found = self._cards.get(ts)
        return found[1] if found else None


def keep_chart(directory: Path, chart: Chart) -> Path:
    """The PNG in a new file only this user may read (0600), in a directory of this user's (made 0700), named
    from the chart's own name (letters, digits, dashes: no database name reaches a path) and the time."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = directory.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
        raise PermissionError(f"{directory} is not a directory of this user's")
    stem = chart.filename.removesuffix(".png") + time.strftime("-%Y%m%dT%H%M%SZ", time.gmtime())
    n = 1
    while True:
        path = directory / f"{stem}{f'-{n}' if n > 1 else ''}.png"
        try:  # O_EXCL: never over an earlier chart, nor through a link someone put there
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(chart.png)
        return path.absolute()


class Completions(Completer):
    """Tab completes what the grammar knows: commands (and the shell's own), a command's options and an
    option's choices, configured servers where a server goes and migration ids where one goes. A word
    that starts no choice is offered its "did you mean"."""

    def __init__(self, servers: Iterable[str]) -> None:
        self.servers = sorted(servers)
        self.migrations: list[str] = []  # refreshed before each prompt

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = text.split()
        word = "" if not words or text[-1].isspace() else words.pop()
        if words and words[0].lower() == "/pgmig":
            words.pop(0)
        choices = self._choices(words, word)
        found = [c for c in choices if c.lower().startswith(word.lower())]
        if not found and (meant := close_match(word, choices)):
            found = [meant]
        for choice in found:
            yield Completion(choice, start_position=-len(word))

    def _choices(self, words: list[str], word: str) -> list[str]:
        """What may stand after `words`."""
        if not words:
            return [*COMMANDS, *SHELL_COMMANDS]
        name = words[0].lower()
        if name == "watch":
            return self.migrations if len(words) == 1 else []
        spec = COMMANDS.get(name)
        if spec is None:
            return []
        options = {o.flag: o for o in spec.options}
        if len(words) > 1 and (option := options.get(words[-1].lower())) and option.kind != "flag":
            return list(option.choices) or (self.servers if option.metavar in SERVER_METAVARS else [])
        unused = [flag for flag in options if flag not in (w.lower() for w in words)]
        if word.startswith("-"):
            return unused
        given = 0  # positionals typed so far: the words that are neither options nor their values
        for before, current in itertools.pairwise(["", *words[1:]]):
            taking = options.get(before.lower())
            given += not current.startswith("-") and not (taking is not None and taking.kind != "flag")
        names = spec.positionals + spec.optional_positionals
        if given >= len(names):
            return unused
        by_name = {"MIGRATION": self.migrations, "COMMAND": [*COMMANDS, *SHELL_COMMANDS]}
        if names[given] in SERVER_METAVARS:
            return [s for s in self.servers if s not in words]  # not the source again as the target
        return by_name.get(names[given], [])


class Terminal:
    """The person at the keyboard, through prompt_toolkit rather than hand-written terminal code: a
    PromptSession reads lines (history, completion, editing) with the terminal in raw mode, so Ctrl-C is a
    key — it drops the line — and never a SIGINT, which the kernel would send to the whole foreground
    process group: `make run` (it would end with "Interrupt") and the tools of running migrations. While
    the shell waits, a one-line Application takes the keyboard the same way, so Ctrl-C there ends the wait.
    The shell's output meanwhile goes above the line being typed (`patch_stdout`, set up by the shell). An
    error in the background stays a log line: prompt_toolkit's own handler would print its traceback."""

    def __init__(self, completer: Completer) -> None:
        self.commands: PromptSession[str] = PromptSession(completer=completer, complete_while_typing=False)
        self.answers: PromptSession[str] = PromptSession()  # form answers and yes/no: their own history

    async def read(self, prompt: str, command: bool) -> str | None:
        """One line: CANCELLED when Ctrl-C (or a SIGINT from elsewhere) dropped it, None at Ctrl-D."""
        try:
            session = self.commands if command else self.answers
            return await session.prompt_async(prompt, set_exception_handler=False)
        except KeyboardInterrupt:
            return CANCELLED
        except EOFError:
            return None

    async def attend(self, work: asyncio.Future[Any], show: Callable[[], str], enter: bool = False) -> bool:
        """show() below the output, kept fresh, until `work` is done: True; or until Ctrl-C (or Enter, with
        `enter`) ends the waiting first: False. `work` itself is left as it is: its caller decides."""
        keys = KeyBindings()

        def stop(event: KeyPressEvent) -> None:
            if not event.app.is_done:  # (two Ctrl-C in one read)
                event.app.exit(result=False)

        for key in ("c-c", "<sigint>", *(("enter",) if enter else ())):
            keys.add(key)(stop)
        app: Application[bool] = Application(
            layout=Layout(Window(FormattedTextControl(show), dont_extend_height=True)),
            key_bindings=keys,
            refresh_interval=0.5,
            erase_when_done=True,
        )

        def done(_: object) -> None:
            if not app.is_done:
                app.exit(result=True)

        try:
            return await app.run_async(pre_run=lambda: work.add_done_callback(done), set_exception_handler=False)
        finally:
            work.remove_done_callback(done)


@dataclass
class _Walk:
    """The migrate form as the shell walks it: the view, the answers as Slack's `view.state.values`, the
    notes already printed and each question's number (in the order first asked)."""

    view: dict
    state: dict[str, dict] = field(default_factory=dict)
    shown: set[str] = field(default_factory=set)
    numbers: dict[str, int] = field(default_factory=dict)

    def viewed(self, state: dict[str, dict] | None = None) -> dict:
        """The view with these answers (or the walk's own), as Slack sends it."""
        return {**self.view, "state": {"values": self.state if state is None else state}}


class Shell:
    def __init__(
        self, services: Services, user: str, write: Callable[[str], None] = print, servers_stop_on_exit: bool = False
    ) -> None:
        """`servers_stop_on_exit`: the servers are the sandbox's, which `make run` stops when the shell ends
        (so what the shell says carries on must say that nothing streams until the next start)."""
        self.services = services
        self.servers_stop_on_exit = servers_stop_on_exit
        self.invocation = Invocation(user=user, channel="shell", transport="shell")
        self.write = write
        self.buttons: list[Button] = []
        self.completer = Completions(services.servers)
        self.terminal: Terminal | None = None  # set by run() when a person types at a terminal
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
        if word == "watch":
            await self._watch(rest)
            return True
        if word == "wait":
            await self._wait(rest)
            return True
        if word == "help" and (topic := _shell_command(rest)):
            self.write(self._usage(topic))
            return True
        text = line.removeprefix("/pgmig").strip() if line.startswith("/pgmig") else line
        if modal.wants_form(text):
            await self._form()
            return True
        working = router.ack_text(text)
        if working:
            self.write(f"⏳ {working}")
        reply = await self._answer(router.handle_command(text, self.invocation, self.services))
        if reply is not None:
            self._show(reply)
        if [w.lower() for w in text.split()] in ([], ["help"]):
            self.write(self.shell_help())
        return True

    async def may_leave(self) -> bool:
        """Whether `quit` (or Ctrl-D at the prompt) ends the session now. At a terminal, with migrations
        active, it asks first (a script just ends: `run` says what carries on)."""
        active = await self.services.engine.migrations(active_only=True)
        if self.terminal is None or not active:
            return True
        listed = ", ".join(f"{m.id} ({m.state.value})" for m in active)
        self.write(
            f"⚠️ {listed} {'is' if len(active) == 1 else 'are'} still active. Running steps are finished first; "
            + (
                "the sandbox's clusters stop with this shell, so nothing streams until the next `make run` starts "
                "them and carries every one of them on."
                if self.servers_stop_on_exit
                else "streaming stops being watched until pgmig starts again, which carries every one of them on."
            )
        )
        answer = await self._line("quit anyway? [y/N] ")
        return (answer or "").strip().lower() in ("y", "yes")

    async def _answer(self, work: Awaitable[Reply | None]) -> Reply | None:
        """A command's answer. At the terminal Ctrl-C returns the prompt at once: the command goes on (cut
        short it could leave half a change behind) and its answer is printed when it comes."""
        task = asyncio.ensure_future(work)
        if await self._until_done(task):
            return task.result()
        self.write("(back at the prompt: that command goes on, and its answer is printed when it comes)")
        task.add_done_callback(self._late)
        return None

    def _late(self, task: asyncio.Future[Reply | None]) -> None:
        if task.cancelled():  # the session ended first
            return
        if (exc := task.exception()) is not None:
            log.error("a command answered after Ctrl-C failed", exc_info=exc)
        elif (reply := task.result()) is not None:
            self._show(reply)

    async def _until_done(self, work: asyncio.Future[Any]) -> bool:
        """Wait for `work`: True once it is done; False when Ctrl-C at the terminal ended the waiting first."""
        if self.terminal is None:
            await asyncio.wait({work})
            return True
        began = time.monotonic()
        return await self.terminal.attend(
            work, lambda: f"⏳ {_clock(time.monotonic() - began)} · Ctrl-C: back to the prompt"
        )

    async def _press(self, which: str) -> None:
        which = " ".join(_words(which))
        choices = ", ".join(f"{i}: {b.label}" for i, b in enumerate(self.buttons, 1)) or "none on screen"
        if not which:
            self.write(f"{self._usage('press')} (buttons: {choices})")
            return
        button = self._find(which)
        if button is None:
            self.write(f"❌ no button `{_short(which)}` (buttons: {choices})")
            return
        self.write(f"(pressed {button.label})")
        reply = await self._answer(router.handle_action(button.action_id, button.value, self.invocation, self.services))
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
            self.write(self._usage("as"))
            return
        self.invocation = Invocation(user=words[0], channel="shell", transport="shell")
        self.write(f"(you are now {self.invocation.user})")

    async def _watch(self, rest: str) -> None:
        """The migration's live card: once in a script; at the terminal kept up to date below the output
        until Enter or Ctrl-C, then left on the screen as it stood."""
        words = _words(rest)
        number = MIGRATION_ID.fullmatch(words[0]) if len(words) == 1 else None
        if number is None:
            self.write(self._usage("watch"))
            return
        mid = f"mig-{int(number.group(1))}"
        m = await self.services.engine.find(mid)
        poster = self.services.poster
        card = poster.card(m.message_ts) if m and isinstance(poster, ShellPoster) else None
        if m is None:
            self.write(_no_such(mid))
        elif card is None or not isinstance(poster, ShellPoster):
            self.write(f"{mid} is {m.state.value}; its card was not shown in this session: `status {mid}` shows it")
        elif self.terminal is None:
            self.write(card)
        else:
            ts = m.message_ts
            forever = asyncio.get_running_loop().create_future()
            await self.terminal.attend(
                forever, lambda: f"{poster.card(ts)}\n(watching {mid}: Enter or Ctrl-C stops)", enter=True
            )
            forever.cancel()
            self.write(poster.card(ts) or card)

    async def _wait(self, rest: str) -> None:
        words = _words(rest)
        if len(words) > 1:
            await self._wait_for(words)
            return
        seconds = _seconds(rest)
        if seconds is None:
            problem = f"❌ `{_short(rest)}` is not a number of seconds; " if rest else ""
            self.write(problem + self._usage("wait"))
            return
        sleep = asyncio.ensure_future(asyncio.sleep(seconds))
        if not await self._until_done(sleep):
            sleep.cancel()

    async def _wait_for(self, words: list[str]) -> None:
        """`wait mig-N STATE [N]`: until the migration is in STATE or has ended, or N seconds passed — what a
        script waits on before its next step, instead of a guessed number of seconds."""
        number = MIGRATION_ID.fullmatch(words[0])
        wanted = next((s for s in State if s.value == words[1].lower()), None)
        seconds = _seconds(words[2]) if len(words) == 3 else WAIT_LIMIT
        if number is None or wanted is None or seconds is None or len(words) > 3:
            bad = words[0] if number is None else words[1] if wanted is None else " ".join(words[2:])
            states = ", ".join(s.value for s in State)
            self.write(f"❌ `{_short(bad)}`: {self._usage('wait')} (states: {states})")
            return
        mid, engine = f"mig-{int(number.group(1))}", self.services.engine
        if await engine.find(mid) is None:
            self.write(_no_such(mid))
            return

        async def reached() -> State:
            while True:
                m = await engine.find(mid)
                if m is None or m.state is wanted or m.state.finished:
                    return m.state if m is not None else State.CANCELLED
                await asyncio.sleep(WAIT_POLL)

        began = time.monotonic()
        waiting = asyncio.ensure_future(asyncio.wait_for(reached(), seconds))
        if not await self._until_done(waiting):
            waiting.cancel()
            return
        took = f"after {_clock(time.monotonic() - began)}"
        try:
            state = waiting.result()
        except asyncio.TimeoutError:
            m = await engine.find(mid)
            now = m.state.value if m is not None else "gone"
            self.write(f"⏱ {mid} is still {now} {took}, not {wanted.value}")
            return
        if state is wanted:
            self.write(f"{mid} is {state.value} ({took})")
        else:
            self.write(f"⚠️ {mid} ended {state.value} {took}, never {wanted.value}")

    def _show(self, reply: Reply) -> None:
        text, buttons = render(*_parts(reply))
        if buttons:
            self.buttons = buttons
        self.write(text)

    async def _form(self) -> None:
        """The migrate modal as numbered questions, each answer checked as it is given, and then run
        through the modal's own submission (the same audit, authorization and pre-flight as typed)."""
        svc = self.services
        view = modal.open_form(svc.servers, channel=self.invocation.channel)
        if isinstance(view, Reply):
            self._show(view)
            return
        self.write("📝 Migrate: answer each question (* = required); `cancel` or Ctrl-C leaves the form.")
        walk = _Walk(view)
        again: set[str] | None = None  # after refusals: the refused fields (and any new ones)
        while True:
            if not await self._ask_all(walk, again):
                self.write("(form cancelled; nothing was started)")
                return
            form = modal.read(walk.viewed())
            errors = await modal.field_errors(form, self.invocation, svc)
            if not errors:
                break
            labels = {f.block_id: f.label for f in form_items(walk.view) if isinstance(f, Field)}
            for block_id, message in errors.items():
                self.write(f"❌ {labels.get(block_id, block_id)}: {message}")
            again = set(errors)
        self.write(f"The form runs: /pgmig {modal.command(form)[1]}")
        self.write(f"⏳ {modal.working()}")
        reply = await self._answer(modal.submit(form, self.invocation, svc))
        if reply is not None:
            self._show(reply)

    async def _ask_all(self, walk: _Walk, again: set[str] | None) -> bool:
        """Ask the fields in order (all of them, or those in `again` and any the form gained), printing the
        notes between them; a field with nothing to decide gets its answer without a question. False when
        the person left the form."""
        asked: set[str] = set()
        while True:
            items = form_items(walk.view)
            fields = [f for f in items if isinstance(f, Field)]
            todo = next(
                (
                    f
                    for f in fields
                    if f.block_id not in asked
                    and (again is None or f.block_id in again or f.block_id not in walk.state)
                ),
                None,
            )
            for item in items:
                if item is todo:
                    break
                if isinstance(item, str) and item not in walk.shown:
                    walk.shown.add(item)
                    self.write(item)
            if todo is None:
                for f in fields:  # unasked fields count with what they show, as in Slack
                    kept = answer(f, "")
                    walk.state.setdefault(f.block_id, {f.action_id: kept} if isinstance(kept, dict) else {})
                return True
            asked.add(todo.block_id)
            fitting = await self._fitting(walk, todo)
            if fitting is not None and not await self._ask(walk, fitting):
                return False

    async def _ask(self, walk: _Walk, f: Field) -> bool:
        """One question, until an answer passes the form's checks; False when the person left the form."""
        number = walk.numbers.setdefault(f.block_id, len(walk.numbers) + 1)
        while True:
            line = await self._line(question(f, number) + "\n  > ", echo_blank=True)
            if line is None or line == CANCELLED or line.strip().lower() == "cancel":
                return False
            got = answer(f, line)
            if isinstance(got, str):
                self.write(f"❌ {got}")
                continue
            walk.state[f.block_id] = {f.action_id: got}
            explained = False
            if f.dispatch:
                self.write("⏳ listing its databases…")
                listing = asyncio.ensure_future(
                    modal.source_chosen(self.services, walk.viewed(), chosen_value(got), self.invocation)
                )
                if not await self._until_done(listing):
                    listing.cancel()
                    return False
                walk.view = listing.result()
                for note in (i for i in form_items(walk.view) if isinstance(i, str) and i not in walk.shown):
                    walk.shown.add(note)  # what the new view says at once: why it lists no databases
                    self.write(note)
                    explained = True
            problem = (await self._errors(walk)).get(f.block_id)
            if problem is None:
                return True
            if not explained:
                self.write(f"❌ {problem}")
            if problem == modal.OPERATORS_ONLY:  # no other answer changes that
                return False

    async def _fitting(self, walk: _Walk, f: Field) -> Field | None:
        """`f` offering only the choices the form's checks accept with the answers so far (not the source as
        the target; pause-after-export only for offline by dump). None when there is nothing to ask: no choice
        fits an optional field, or every fitting one (and none) makes the same command — the method of an
        online migration; the answer is then set as Slack would send it."""
        if f.kind not in CHOICE + CHOICES or f.dispatch:
            return f
        fitting: list[tuple[str, str]] = []
        commands = {_command_text(walk, {**walk.state, f.block_id: {f.action_id: state_of(f, [])}})}
        for text, value in f.options:
            trial = {**walk.state, f.block_id: {f.action_id: state_of(f, [value])}}
            if f.block_id not in await self._errors(walk, trial):
                fitting.append((text, value))
                commands.add(_command_text(walk, trial))
        values = [v for _, v in fitting]
        if not fitting and not f.optional:
            return f  # asked as it is: the checks say what is wrong
        if not fitting or (len(commands) == 1 and None not in commands):  # (None: no command yet, so no telling)
            walk.state[f.block_id] = {f.action_id: state_of(f, [v for v in f.initial if v in values])}
            return None
        if len(fitting) == len(f.options):
            return f
        initial = [v for v in f.initial if v in values] or (values if len(values) == 1 and f.kind in CHOICE else [])
        return dataclasses.replace(f, options=fitting, initial=initial)

    async def _errors(self, walk: _Walk, state: dict[str, dict] | None = None) -> dict[str, str]:
        """The modal's own checks on the form with these answers (or the walk's), by block id."""
        return await modal.field_errors(modal.read(walk.viewed(state)), self.invocation, self.services)

    async def _line(self, prompt: str, echo_blank: bool = False, command: bool = False) -> str | None:
        """The next line typed (or of the script); None at the end of input, CANCELLED when Ctrl-C dropped
        it. `command`: the shell's prompt (its history and completion), rather than a question."""
        if self.terminal is not None:
            if command:
                self.completer.migrations = [m.id for m in await self.services.engine.migrations(newest=200)]
            return await self.terminal.read(prompt, command)
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return None
        if line.strip() or echo_blank:
            self.write(f"{prompt}{line.strip()}")
        return line

    async def run(self) -> None:
        """Read commands until `quit`, Ctrl-D or the end of the script; then running migrations are waited
        for (at the terminal Ctrl-C goes back to the prompt instead) and what carries on is said."""
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            await self._read()
            await self._leave()
            return
        with patch_stdout(), _logs_to(sys.stderr):
            self.terminal = Terminal(self.completer)
            self.write(BANNER)
            while True:
                await self._read()
                if await self._leave():
                    return

    async def _read(self) -> None:
        while True:
            line = await self._line(PROMPT, command=True)
            if line == CANCELLED:
                continue
            if line is None:  # the end of the script, or Ctrl-D at the prompt
                if await self.may_leave():
                    return
                continue
            for each in line.splitlines():  # a paste of several lines runs them in turn
                if not await self.execute(each):
                    return

    async def _leave(self) -> bool:
        """Wait for the migrations running here (their steps end cleanly), then say what carries on. False
        when Ctrl-C at the terminal ended the wait: the shell goes on."""
        engine = self.services.engine
        running = [m.id for m in await engine.migrations(active_only=True) if engine.is_running(m.id)]
        if running:
            names = ", ".join(running)
            if self.terminal is None:
                self.write(f"waiting for {names} to finish (Ctrl-C stops it; `retry` resumes it later)…")
            else:
                self.write(f"waiting for {names} to finish (Ctrl-C: back to the prompt; the work goes on)…")
            waiting = asyncio.ensure_future(engine.wait_all())  # never cancelled: that would cancel the migrations
            if not await self._until_done(waiting):
                goes = "goes" if len(running) == 1 else "go"
                self.write(f"(back at the prompt: {names} {goes} on; `quit` leaves once done)")
                return False
        for m in await engine.migrations(active_only=True):
            if self.servers_stop_on_exit and m.state in MONITORED:
                self.write(
                    f"{m.id} stops streaming: the sandbox's clusters stop with this shell; the next `make run` "
                    "starts them and it catches up"
                )
                continue
            doing = "keeps streaming" if m.state in MONITORED else f"stays {m.state.value}"
            self.write(f"{m.id} {doing}: the next start (`make run`) watches it again")
        return True

    def shell_help(self) -> str:
        """The shell's own commands, listed after `help`."""
        width = max(len(usage) for usage, _ in SHELL_COMMANDS.values())
        lines = [f"  {usage:<{width}}  {self._what(what)}" for usage, what in SHELL_COMMANDS.values()]
        return "\n".join(["In this shell (not in Slack):", *lines])

    def _usage(self, command: str) -> str:
        usage, what = SHELL_COMMANDS[command]
        return f"usage: {usage} — {self._what(what)}"

    def _what(self, what: str) -> str:
        """A shell command's description, its example naming a user the configuration makes an approver."""
        people = [a for a in self.services.policy.approvers if not is_group(a)]
        return what.format(approver=people[0] if people else EXAMPLE_APPROVER)


def _command_text(walk: _Walk, state: dict[str, dict]) -> str | None:
    """The command the form makes with these answers; None when they make none yet."""
    try:
        return modal.command(modal.read(walk.viewed(state)))[1]
    except UsageError:
        return None


@contextlib.contextmanager
def _logs_to(stream: Any) -> Iterator[None]:
    """Log lines meant for the terminal go to `stream` meanwhile (prompt_toolkit's stderr, printed above the
    line being typed instead of into it)."""
    moved = [
        h
        for h in logging.getLogger().handlers
        if type(h) is logging.StreamHandler and h.stream in (sys.__stderr__, sys.__stdout__)
    ]
    before = [h.setStream(stream) for h in moved]
    try:
        yield
    finally:
        for h, old in zip(moved, before, strict=True):
            h.setStream(old)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _shell_command(word: str) -> str | None:
    """`press`, `as`, `watch`, `wait` or `quit` (for any of its names), or None."""
    word = word.strip().lower()
    return "quit" if word in QUIT_WORDS else word if word in SHELL_COMMANDS else None


def _first_word(line: str) -> tuple[str, str, str]:
    """The line's first word (lower case) and the rest; any Unicode space separates them."""
    parts = line.split(None, 1)
    return parts[0].lower(), " ", parts[1].strip() if len(parts) > 1 else ""


def _no_such(mid: str) -> str:
    return f"❌ there is no {mid}; `list` shows the migrations"


def _seconds(text: str) -> float | None:
    """A number of seconds to wait (at most WAIT_LIMIT), or None when `text` is not one."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return min(WAIT_LIMIT, seconds) if math.isfinite(seconds) and seconds >= 0 else None


def _words(text: str) -> list[str]:
    """Words as the grammar reads them (quotes, also curly ones, group), or split on spaces if unreadable."""
    try:
        return shlex.split(normalize(text))
    except ValueError:
        return text.split()


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "…"
