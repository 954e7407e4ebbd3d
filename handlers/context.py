"""What every handler receives (who asked, where, the services) and returns (a Reply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from handlers.authz import Directory, Policy
from migration_core.azure.provisioning import Provisioner
from migration_core.engine.api import Engine
from migration_core.observe.charts import Chart
from migration_core.pg.servers import ServerConfig


@dataclass
class Invocation:
    """Who typed or clicked, and where: the same for Slack and the shell."""

    user: str
    channel: str = ""
    transport: str = "slack"
    delivery: str = ""  # a click's identity (action id, action_ts, user): Slack may deliver one twice


@dataclass
class Services:
    """Long-lived things handlers use; built once by the bot at start-up. State, servers and Azure are reached
    through `engine` and `provisioner` only."""

    servers: dict[str, ServerConfig]
    policy: Policy
    directory: Directory
    engine: Engine
    poster: "Poster"
    provisioner: Provisioner


@dataclass
class Reply:
    """A message to show: `text` is the notification/fallback, `blocks` the Block Kit body."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    ephemeral: bool = True


@dataclass(frozen=True)
class Posted:
    """Where a message went: the channel's id as Slack answers it (a configured channel *name* is resolved
    to it, and chat.update only takes the id) and the message's ts; both empty when posting failed."""

    channel: str = ""
    ts: str = ""


class Poster(Protocol):
    """Posts to a channel and edits what it posted: Slack's chat.postMessage/chat.update, or the terminal; and
    shares a chart (Slack's files_upload_v2, or a file the terminal names)."""

    async def post(self, channel: str, reply: Reply, thread_ts: str | None = None) -> Posted:
        """Post; returns where it went (Slack's channel id and ts), empty when posting failed."""

    async def update(self, channel: str, ts: str, reply: Reply, *, final: bool = True) -> None:
        """Edit what was posted. `final=False`: a progress refresh, which may be skipped (a newer one follows)."""

    async def upload(self, channel: str, chart: Chart, thread_ts: str | None = None) -> None:
        """Share a chart in the channel (in the thread of `thread_ts`); a failure is logged, never raised."""
