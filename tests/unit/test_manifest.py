"""`pgmig manifest`: the Slack app manifest ready to paste, for HTTP or Socket Mode."""

from __future__ import annotations

import pytest

from bot import manifest
from bot.settings import SettingsError


def test_socket_mode_turns_it_on_and_drops_every_public_url():
    text = manifest.render(socket_mode=True)
    assert "socket_mode_enabled: true" in text and "socket_mode_enabled: false" not in text
    assert "request_url" not in text and "url:" not in text and "example.com" not in text
    assert "command: /pgmig" in text and "chat:write" in text and "app_home_opened" in text


def test_http_mode_points_every_url_at_the_server():
    text = manifest.render(url="https://pgmig.corp.example.org/")
    assert text.count("https://pgmig.corp.example.org/slack/events") == 3
    assert "socket_mode_enabled: false" in text and "pgmig.example.com" not in text


@pytest.mark.parametrize("url", [None, "http://plain.example.org", "https://x.org/ evil", "javascript:alert(1)"])
def test_a_missing_or_unsafe_url_is_refused_with_the_fix(url):
    with pytest.raises(SettingsError, match="--url|--socket-mode"):
        manifest.render(url=url)
