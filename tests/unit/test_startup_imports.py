"""What starting pgmig imports: every pgmig process (`python -m bot.cli ...`) pays for what `bot.cli` loads, and
most never touch Azure, so the Azure SDKs (about a third of the start-up CPU) load only where Azure is used;
nor Slack's web app (bolt, aiohttp's server) and web client (slack-sdk's async client, aiohttp), which only
`serve` uses: the shell, the sandbox and init never talk to Slack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loaded_by_the_entry_point() -> list[str]:
    listed = "import bot.cli, sys; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", listed], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_importing_the_entry_point_loads_no_azure_sdk():
    loaded = [m for m in loaded_by_the_entry_point() if m == "azure" or m.startswith("azure.")]
    assert not loaded, f"importing bot.cli loads {', '.join(loaded)}"


def test_importing_the_entry_point_loads_no_slack_web_app():
    loaded = [
        m
        for m in loaded_by_the_entry_point()
        if m.split(".")[0] in ("slack_bolt", "aiohttp") or m.startswith("slack_sdk.web.async")
    ]
    assert not loaded, f"importing bot.cli loads {', '.join(loaded[:5])}"
