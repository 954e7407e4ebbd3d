"""Block Kit → readable terminal text, with numbered buttons the shell user can press."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from handlers.grammar import did_you_mean


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


# A modal as a numbered form: each input block becomes a question, answered with a line of text.

CHOICE = ("static_select", "radio_buttons")
CHOICES = ("multi_static_select", "checkboxes")


@dataclass
class Field:
    """One input block of a view, as the shell asks it."""

    block_id: str
    kind: str  # the element's type
    label: str
    options: list[tuple[str, str]]  # (text, value)
    optional: bool
    initial: list[str]  # values (a number input's text)
    dispatch: bool  # answering it changes the form (Slack's dispatch_action)
    hint: str
    action_id: str


def form_items(view: dict[str, Any]) -> list[Field | str]:
    """The view's input blocks as fields, and its other blocks as notes, in reading order."""
    items: list[Field | str] = []
    for block in view.get("blocks") or []:
        if block.get("type") != "input":
            text, _ = render("", [block])
            if text.strip():
                items.append(text)
            continue
        element = block.get("element") or {}
        kind = element.get("type", "")
        options = [(_text(o.get("text")), str(o.get("value", ""))) for o in element.get("options") or []]
        if element.get("initial_option"):
            initial = [str(element["initial_option"].get("value", ""))]
        elif element.get("initial_options"):
            initial = [str(o.get("value", "")) for o in element["initial_options"]]
        elif element.get("initial_value") not in (None, ""):
            initial = [str(element["initial_value"])]
        else:
            initial = []
        items.append(
            Field(
                block_id=block.get("block_id", ""),
                kind=kind,
                label=_text(block.get("label")),
                options=options,
                optional=bool(block.get("optional")),
                initial=initial,
                dispatch=bool(block.get("dispatch_action")),
                hint=_text(block.get("hint")),
                action_id=element.get("action_id", ""),
            )
        )
    return items


def question(f: Field, number: int) -> str:
    """The field as the terminal shows it: its label, numbered choices (✓ = chosen now), how to answer."""
    if f.kind in CHOICE:
        how = "one number or name"
    elif f.kind in CHOICES:
        how = "numbers or names, comma-separated" + (", or `none`" if f.optional else "") + ", or `all`"
    elif f.kind == "number_input":
        how = "a number"
    else:
        how = "text"
    if f.initial:
        how += "; Enter keeps " + ", ".join(_shown(f, v) for v in f.initial)
    elif f.optional:
        how += "; Enter leaves it empty"
    lines = [f"{number}. {f.label}{'' if f.optional else ' *'} ({how})"]
    lines += [f"     {i}) {text}{' ✓' if value in f.initial else ''}" for i, (text, value) in enumerate(f.options, 1)]
    if f.hint:
        lines.append(f"     {f.hint}")
    return "\n".join(lines)


def _shown(f: Field, value: str) -> str:
    return next((text.split(" — ")[0] for text, v in f.options if v == value), value)


def answer(f: Field, line: str) -> dict[str, Any] | str:
    """The field's state as Slack would send it in `view.state.values`, or what is wrong with the answer
    (only what Slack's own client would refuse; the rest is for the form's checks)."""
    line = line.strip()
    if not line:
        if f.initial or f.optional:
            return state_of(f, f.initial)
        return "an answer is needed"
    if f.kind == "number_input":
        if not (line.isascii() and line.isdigit()):
            return "a whole number"
        return {"type": f.kind, "value": line}
    if f.kind not in CHOICE + CHOICES:
        return {"type": f.kind, "value": line}
    if f.kind in CHOICES and line.lower() in ("all", "none"):
        chosen = [v for _, v in f.options] if line.lower() == "all" else []
        return "choose at least one" if not chosen and not f.optional else state_of(f, chosen)
    words = [w.strip() for w in line.split(",") if w.strip()] if f.kind in CHOICES else [line]
    chosen = []
    for word in words:
        value = _choice(f, word)
        if value is None:
            meant = did_you_mean(word, [v for _, v in f.options])
            return f"no choice `{word}` (1–{len(f.options)} or a name){meant}"
        chosen.append(value)
    return state_of(f, list(dict.fromkeys(chosen)))


def _choice(f: Field, word: str) -> str | None:
    # ASCII and short: str.isdigit() takes `²`, which int() refuses, and int() refuses 5,000 digits
    if word.isascii() and word.isdigit() and len(word) < 6 and 1 <= int(word) <= len(f.options):
        return f.options[int(word) - 1][1]
    for text, value in f.options:
        if word.lower() in (value.lower(), text.lower()):
            return value
    return None


def state_of(f: Field, values: list[str]) -> dict[str, Any]:
    """The field's state with `values` chosen (a number's or a text's first value), as Slack sends it."""
    if f.kind == "number_input" or f.kind not in CHOICE + CHOICES:
        return {"type": f.kind, "value": values[0] if values else None}
    texts = dict((v, t) for t, v in f.options)
    chosen = [{"text": {"type": "plain_text", "text": texts.get(v, v)}, "value": v} for v in values]
    if f.kind in CHOICES:
        return {"type": f.kind, "selected_options": chosen}
    return {"type": f.kind, "selected_option": chosen[0] if chosen else None}


def chosen_value(state: dict[str, Any]) -> str:
    """The value of a single choice's state ("" when none)."""
    option = state.get("selected_option") or {}
    return str(option.get("value") or "")
