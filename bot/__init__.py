"""Transport: turns Slack (HTTP, Socket Mode) or a terminal into calls to the handlers."""
