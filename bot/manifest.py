"""`pgmig manifest`: the Slack app manifest (manifest.yml) made ready to paste for one way of serving:
HTTP at a public URL, or Socket Mode (no public URL: `socket_mode_enabled: true`, no request URLs), so
nobody has to edit the YAML by hand."""

from __future__ import annotations

import re
from pathlib import Path

from bot.settings import SettingsError

MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yml"
PLACEHOLDER = "https://pgmig.example.com"


def render(url: str | None = None, socket_mode: bool = False, source: Path = MANIFEST) -> str:
    """The manifest for HTTP at `url` (its scheme and host; `/slack/events` is appended) or for Socket Mode."""
    if not socket_mode and not url:
        raise SettingsError("say where pgmig serves: --url https://your.host, or --socket-mode")
    if url and not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d+)?(/[\w./-]*)?", url.rstrip("/")):
        raise SettingsError(f"--url must be the public https:// address of `pgmig serve`, not {url!r}")
    out = []
    for line in source.read_text().splitlines():
        if line.startswith("#"):
            continue  # the instructions for editing by hand
        if socket_mode:
            if re.match(r"\s*(request_url|url): ", line):
                continue  # Socket Mode delivers everything over the websocket: no public URL
            line = line.replace("socket_mode_enabled: false", "socket_mode_enabled: true")
        else:
            line = line.replace(PLACEHOLDER, str(url).rstrip("/"))
        out.append(line)
    mode = "Socket Mode (`pgmig serve --socket-mode`, SLACK_APP_TOKEN)" if socket_mode else f"HTTP at {url}"
    return f"# pgmig's Slack app manifest for {mode}: api.slack.com/apps → Create New App → From a manifest\n" + (
        "\n".join(out) + "\n"
    )
