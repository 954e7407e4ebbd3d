"""Every Block Kit message pgmig sends, built with slack_sdk's block models. Nothing else lives here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)

from handlers.actions import Action
from handlers.context import Reply
from handlers.grammar import COMMANDS, CommandSpec, UsageError
from migration_core.pg.secrets import redact
from migration_core.pg.servers import ServerConfig
from migration_core.preflight.checks import Finding, PreflightReport, Status

ICON = {Status.OK: "✅", Status.WARN: "⚠️", Status.FAIL: "❌"}
SECTION_LIMIT = 2900  # Slack refuses section text over 3000 characters
MAX_BLOCKS = 48  # and messages over 50 blocks


def esc(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plural(n: int, word: str, many: str = "") -> str:
    """`1 job`, `2 jobs`, `1 mismatch`, `3 mismatches` (`many`: the plural when it is not word + s)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def outgoing(reply: Reply) -> Reply:
    """The one pass everything pgmig sends goes through, whatever built it: every known secret masked in
    the blocks and in the fallback text, and the fallback escaped for Slack (it is plain text, and a
    `<!channel>` in a table name must ping nobody; the blocks were escaped as they were built)."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return Reply(esc(redact(reply.text)), clean(reply.blocks), reply.ephemeral)


def section(text: str) -> dict:
    """A section; text past Slack's limit is cut (with a mark) rather than refused."""
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    return SectionBlock(text=MarkdownTextObject(text=text)).to_dict()


def context(text: str) -> dict:
    return ContextBlock(elements=[MarkdownTextObject(text=text)]).to_dict()


def header(text: str) -> dict:
    return HeaderBlock(text=text[:150]).to_dict()


def sections(lines: Iterable[str]) -> list[dict]:
    """Pack lines into as few sections as Slack's size limit allows."""
    blocks, chunk = [], ""
    for line in lines:
        line = line[:SECTION_LIMIT]
        if chunk and len(chunk) + len(line) + 1 > SECTION_LIMIT:
            blocks.append(section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    if chunk:
        blocks.append(section(chunk))
    return blocks


def fit_blocks(blocks: list[dict]) -> list[dict]:
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    return blocks[: MAX_BLOCKS - 1] + [context(f"… {len(blocks) - MAX_BLOCKS + 1} more blocks not shown")]


def help_message(specs: Iterable[CommandSpec] = COMMANDS.values()) -> Reply:
    lines = [f"*`/pgmig {s.name}`* — {esc(s.summary)}\n      e.g. `{esc(s.example)}`" for s in specs]
    blocks = [header("pgmig commands"), *sections(lines), context("`/pgmig help COMMAND` shows a command's options.")]
    return Reply("pgmig commands: " + ", ".join(s.name for s in COMMANDS.values()), blocks)


def command_help(spec: CommandSpec) -> Reply:
    lines = [f"*{esc(spec.summary)}*", f"`{esc(spec.usage)}`"]
    lines += [f"• `{o.flag}` — {esc(o.help)}" for o in spec.options]
    lines.append(f"Example: `{esc(spec.example)}`")
    return Reply(spec.usage, sections(lines))


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary and marked "…" when cut (never `1 session(s) ende`)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:—-") + "…"


def sentence(text: str) -> str:
    """Ends with a full stop, unless it already ends as a sentence (`did you mean `status`?`)."""
    return text if text.endswith(("?", ".", "!")) else text + "."


def usage_error(err: UsageError) -> Reply:
    if err.spec is not None:
        body = f"❌ {sentence(esc(str(err)))}\nUsage: `{esc(err.spec.usage)}`\nExample: `{esc(err.spec.example)}`"
    else:
        accepted = ", ".join(f"`{n}`" for n in COMMANDS)
        body = f"❌ {sentence(esc(str(err)))} Commands: {accepted}. Try `/pgmig help`."
    return Reply(body.replace("*", ""), [section(body)])


def error_message(text: str) -> Reply:
    return Reply(f"❌ {text}", [section(f"❌ {esc(text)}")])


def servers_message(servers: dict[str, ServerConfig]) -> Reply:
    if not servers:
        return Reply(
            "No servers configured",
            [section("No servers are configured. Add `[servers.NAME]` tables to the config file (see README).")],
        )
    lines = [
        f"• *{esc(s.name)}* — `{esc(s.user)}@{esc(s.host)}:{s.port}` sslmode={esc(s.sslmode)}"
        + (f" · Azure flexible server {esc(s.azure_resource_group or '')}/{esc(s.azure_name)}" if s.azure_name else "")
        for s in sorted(servers.values(), key=lambda s: s.name)
    ]
    return Reply(f"{len(servers)} configured server(s)", [header("Configured servers"), *sections(lines)])


def finding_line(f: Finding) -> str:
    line = f"{ICON[f.status]} *{esc(f.headline)}*"
    if f.detail:
        line += f" — {esc(f.detail)}"
    if f.fix and f.status is not Status.OK:
        line += f"\n        ↳ _Fix:_ {esc(f.fix)}"
    return line


def preflight_message(report: PreflightReport, rerun_text: str) -> Reply:
    fails, warns = len(report.blocking), len(report.warnings)
    oks = len(report.findings) - fails - warns
    verdict = "❌ Blocked" if fails else "⚠️ Ready, with warnings" if warns else "✅ Ready"
    summary = f"{verdict} — {fails} blocking, {warns} warning(s), {oks} passed"
    blocks = [
        header(f"Pre-flight: {report.source} → {report.target} ({report.mode.value})"),
        section(f"*{summary}*" + (f"\nDatabases: {esc(', '.join(report.databases))}" if report.databases else "")),
    ]
    scopes: dict[str, list[Finding]] = {}
    for f in report.findings:
        scopes.setdefault(f.scope, []).append(f)
    for scope, findings in scopes.items():
        blocks.append(DividerBlock().to_dict())
        blocks += sections([f"*{esc(scope)}*", *(finding_line(f) for f in findings)])
    blocks = fit_blocks(blocks)
    blocks.append(
        ActionsBlock(
            elements=[ButtonElement(text="Re-run check", action_id=Action.RERUN_CHECK.value, value=rerun_text[:2000])]
        ).to_dict()
    )
    text = f"Pre-flight {report.source} → {report.target}: {summary}"
    return Reply(text, blocks)


def reason_input(field: str, label: str, placeholder: str) -> InputBlock:
    """The one field of a form that asks why (a rejected cutover, a skipped schema change): `field` is its
    block and action id, the answer at most 500 characters."""
    return InputBlock(
        block_id=field,
        label=label,
        element=PlainTextInputElement(action_id=field, multiline=True, max_length=500, placeholder=placeholder),
    )
