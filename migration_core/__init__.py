"""The migration brain: pure asyncio, no Slack imports."""
