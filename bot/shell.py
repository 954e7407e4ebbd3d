"""The shell adapter: every `/pgmig` command in a terminal, no Slack workspace needed.

Type the same lines as in Slack (`/pgmig check source target`, or just `check source target`);
replies are rendered as text; buttons are numbered and pressed with `press 2` or `press Re-run check`.
`as USER` switches who you are (to approve a cutover someone else requested), `wait N` pauses a
script for N seconds. Reads a script from standard input when it is not a terminal.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable

from bot.textrender import Button, render
from handlers import router
from handlers.context import Invocation, Reply, Services
from handlers.messages import outgoing

PROMPT = "pgmig> "
BANNER = (
    "pgmig shell — type `help` for commands; `press N` clicks a button, `as USER` switches who you are, `quit` leaves."
)


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

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
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
        if isinstance(services.poster, ShellPoster):
            services.poster.on_buttons = self._offer

    def _offer(self, buttons: list[Button]) -> None:
        self.buttons = buttons

    async def execute(self, line: str) -> bool:
        """Run one line; False means the user asked to leave."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        if line.lower() in ("quit", "exit", "\\q"):
            return False
        if line.lower().startswith("press"):
            await self._press(line[5:].strip())
            return True
        if line.lower().startswith("as "):
            self.invocation = Invocation(user=line[3:].strip(), channel="shell", transport="shell")
            self.write(f"(you are now {self.invocation.user})")
            return True
        if line.lower().startswith("wait "):
            try:
                await asyncio.sleep(min(600.0, float(line[5:].strip())))
            except ValueError:
                self.write("❌ `wait N` takes a number of seconds")
            return True
        text = line.removeprefix("/pgmig").strip() if line.startswith("/pgmig") else line
        working = router.ack_text(text)
        if working:
            self.write(f"⏳ {working}")
        self._show(await router.handle_command(text, self.invocation, self.services))
        return True

    async def _press(self, which: str) -> None:
        button = self._find(which)
        if button is None:
            choices = ", ".join(f"{i}: {b.label}" for i, b in enumerate(self.buttons, 1)) or "none on screen"
            self.write(f"❌ no button `{which}` (buttons: {choices})")
            return
        self.write(f"(pressed {button.label})")
        reply = await router.handle_action(button.action_id, button.value, self.invocation, self.services)
        if reply is not None:
            self._show(reply)

    def _find(self, which: str) -> Button | None:
        if which.isdigit() and 1 <= int(which) <= len(self.buttons):
            return self.buttons[int(which) - 1]
        matches = [b for b in self.buttons if b.label.lower() == which.lower()]
        return matches[-1] if matches else None

    def _show(self, reply: Reply) -> None:
        text, buttons = render(*_parts(reply))
        if buttons:
            self.buttons = buttons
        self.write(text)

    async def run(self, interactive: bool | None = None) -> None:
        interactive = sys.stdin.isatty() if interactive is None else interactive
        if interactive:
            self.write(BANNER)
        await self._read(interactive)
        running = await self.services.engine.migrations(active_only=True)
        running = [m.id for m in running if self.services.engine.is_running(m.id)]
        if running:
            self.write(f"waiting for {', '.join(running)} to finish (Ctrl-C stops it; `retry` resumes it later)…")
            await self.services.engine.wait_all()

    async def _read(self, interactive: bool) -> None:
        while True:
            try:
                if interactive:
                    line = await asyncio.to_thread(input, PROMPT)
                else:
                    line = await asyncio.to_thread(sys.stdin.readline)
                    if not line:
                        return
            except EOFError:
                return
            if not interactive and line.strip():
                self.write(f"{PROMPT}{line.strip()}")
            if not await self.execute(line):
                return
