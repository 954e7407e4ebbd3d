"""Block Kit → readable terminal text, with numbered buttons the shell user can press."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass
class Button:
    label: str
    action_id: str
    value: str


def mrkdwn_to_text(text: str) -> str:
    text = re.sub(r"<([^|>]+)\|([^>]+)>", r"\2", text)
    text = re.sub(r"<([^>]+)>", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", text)
    text = re.sub(r"(?<![\w_])_([^_\n]+)_(?![\w_])", r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text(obj: dict[str, Any] | None) -> str:
    if not obj:
        return ""
    return mrkdwn_to_text(obj.get("text", "")) if obj.get("type") == "mrkdwn" else obj.get("text", "")


def render(text: str, blocks: list[dict[str, Any]], first_number: int = 1) -> tuple[str, list[Button]]:
    """The message as lines of text; buttons are numbered from `first_number` in reading order."""
    if not blocks:
        return mrkdwn_to_text(text), []
    lines: list[str] = []
    buttons: list[Button] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            title = _text(block.get("text"))
            lines += [title, "=" * min(len(title), 72)]
        elif kind == "section":
            if block.get("text"):
                lines.append(_text(block["text"]))
            lines += [_text(f) for f in block.get("fields", [])]
        elif kind == "context":
            lines.append("  " + " · ".join(_text(e) for e in block.get("elements", [])))
        elif kind == "divider":
            lines.append("-" * 40)
        elif kind == "actions":
            labels = []
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    buttons.append(
                        Button(_text(element.get("text")), element.get("action_id", ""), element.get("value", ""))
                    )
                    labels.append(f"[{first_number + len(buttons) - 1}: {buttons[-1].label}]")
            lines.append("  ".join(labels) + "   (type `press N` or `press LABEL`)")
    return "\n".join(lines), buttons
