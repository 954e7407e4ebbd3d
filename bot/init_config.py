"""`pgmig init`: a commented pgmig.toml to start from, so going from the shell to Slack needs no guessing.

It lists the servers pgmig can reach now (the sandbox's clusters, while they run) and says in comments
where Slack shows the IDs the file needs and what an empty list means. It never overwrites a file.
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

from bot.sandbox import Sandbox
from bot.settings import SettingsError, parse_config, pgmig_command

SLACK = """\
# pgmig configuration, written by `{cmd} init` on {day}. README.md (Configuration) explains every key.
# Secrets never live here: each server names the environment variable (or file) holding its password;
# the Slack tokens come from the environment (SLACK_BOT_TOKEN, SLACK_APP_TOKEN or SLACK_SIGNING_SECRET).

[slack]
# Where live progress cards and approval requests go: a channel ID (C…), not its name. In Slack, click the
# channel's name at the top: the ID is at the bottom of the About tab (a copied link to the channel ends
# with it too: …/archives/C0123456789). A private channel must have the bot in it first (type
# `/invite @pgmig` there): the `chat:write.public` scope only reaches public channels. Empty: progress goes
# to the channel each migration was started from.
notify_channel = ""

# Who may approve a cutover: member IDs (U…/W…) or user-group IDs (S…). A person's member ID: open their
# profile, then ⋮ (More) → Copy member ID. `approvers = []` means nobody may approve, so every
# `/pgmig cutover` is refused until someone is listed here.
approvers = []
required_approvals = 1                  # distinct approvers needed; whoever asked or started the migration never counts
# Who may start, cancel, retry and cut over migrations (IDs as above). `operators = []` means anyone in the
# workspace may, and nobody may run the Azure commands that change something (provision, createdb, firewall,
# configure): those need someone listed here.
operators = []
approval_timeout_minutes = 60           # an approval request expires after this
"""

SANDBOX = """
# The local sandbox (`make run` without SLACK_BOT_TOKEN made it; `make sandbox-status` shows it and how to
# reach it with psql). Its password is in a file on this machine only. Replace these with your own servers
# before migrating anything that matters.
"""

NO_SANDBOX = """
# No server was found running here: the local sandbox is not up. `make run` without SLACK_BOT_TOKEN starts it
# (or `{cmd} sandbox up`); `{cmd} init --path other.toml` then writes a file that lists it.
"""

EXAMPLES = """
# Your servers: a source or target each, referred to by NAME in commands (`/pgmig check onprem-sales azure-sales`).
# [servers.onprem-sales]
# host = "10.0.0.5"
# port = 5432
# user = "migrator"
# password_env = "ONPREM_SALES_PASSWORD"   # the environment variable pgmig reads the password from
# sslmode = "prefer"
#
# [servers.azure-sales]
# host = "mysrv.postgres.database.azure.com"
# user = "pgadmin"
# password_env = "AZURE_SALES_PASSWORD"
# sslmode = "require"
"""


def config_text(sandbox: Sandbox) -> tuple[str, list[str]]:
    """The file's text and the servers it names."""
    cmd = pgmig_command()
    text = SLACK.format(cmd=cmd, day=date.today().isoformat())
    servers = sandbox.reachable()
    if servers:
        text += SANDBOX + "".join(
            f'\n[servers.{name}]\nhost = "127.0.0.1"\nport = {port}\nuser = "postgres"\n'
            f'password_file = "{sandbox.password_file}"\nsslmode = "disable"\n'
            for name, port in servers
        )
    else:
        text += NO_SANDBOX.format(cmd=cmd)
    return text + EXAMPLES, [name for name, _ in servers]


def write_config(path: str | Path, sandbox: Sandbox) -> str:
    """Write the file (refusing to replace one); returns what to do next."""
    path = Path(path)
    text, servers = config_text(sandbox)
    parse_config(tomllib.loads(text))  # what is written is what pgmig reads
    try:
        with open(path, "x") as f:
            f.write(text)
    except FileExistsError:
        raise SettingsError(
            f"{path} exists and is left as it is; `{pgmig_command()} init --path OTHER.toml` writes another"
        ) from None
    except OSError as exc:
        raise SettingsError(f"cannot write {path}: {exc.strerror}") from None
    named = f"with the sandbox's servers ({', '.join(servers)})" if servers else "with no servers yet"
    return (
        f"wrote {path} {named}. Next: set notify_channel and approvers (its comments say where Slack shows the "
        "IDs), invite the bot to that channel, then start pgmig with your tokens, e.g. "
        "`SLACK_BOT_TOKEN=xoxb-… SLACK_APP_TOKEN=xapp-… make run` (README: Slack app setup)."
    )
