"""The `/pgmig` command language: one spec per command, from which parsing, usage and help all come."""

from __future__ import annotations

import difflib
import re
import shlex
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from handlers.args import (
    AuditArgs,
    AzureCheckArgs,
    CheckArgs,
    CleanupArgs,
    ConfigureArgs,
    CreatedbArgs,
    DdlArgs,
    FirewallArgs,
    HelpArgs,
    MigrateArgs,
    MigrationArgs,
    PlanArgs,
    ProvisionArgs,
    RepairArgs,
    RetryArgs,
    StatusArgs,
    UndoArgs,
)
from handlers.authz import Role

A = TypeVar("A")


@dataclass(frozen=True)
class Option:
    flag: str  # "--db"
    help: str
    kind: str = "str"  # str | int | list | flag | choice
    choices: tuple[str, ...] = ()
    metavar: str = ""
    default: Any = None
    required: bool = False
    maximum: int = 64  # for an int: the largest value accepted
    contradicts: str = ""  # a flag it may not be given with (`--no-capture-ddl` and `--capture-ddl`)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def usage(self) -> str:
        if self.kind == "flag":
            return f"[{self.flag}]"
        meta = "|".join(self.choices) if self.kind == "choice" else (self.metavar or self.dest.upper())
        return f"{self.flag} {meta}" if self.required else f"[{self.flag} {meta}]"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    summary: str
    example: str
    positionals: tuple[str, ...] = ()
    optional_positionals: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    working: str = ""  # set for slow commands: what the immediate ack says
    reads_only: bool = False  # changes nothing: the audit folds it into a count
    changes_with: str = ""  # the flag that makes a read-only command change something (cleanup --yes)
    needs_azure: bool = False  # refused first (by the router) when Azure is not configured
    args: type | None = None  # the dataclass of its arguments (handlers/args.py); None: it takes none
    who: Role = Role.ANYONE  # who may run it when it changes something: the router checks, before the handler
    action: str = ""  # what a refusal says they may not do: "only operators may <action>"
    rest: bool = False  # the last optional positional takes the rest of the words (a reason)

    @property
    def usage(self) -> str:
        parts = ["/pgmig", self.name, *self.positionals, *(f"[{p}]" for p in self.optional_positionals)]
        return " ".join(parts + [o.usage for o in self.options])


@dataclass
class ParsedCommand:
    spec: CommandSpec
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def reads_only(self) -> bool:
        return self.spec.reads_only and not (self.spec.changes_with and self.args.get(self.spec.changes_with))

    @property
    def who(self) -> Role:
        """Who may run it as given: anyone, when this time it changes nothing (cleanup without --yes)."""
        return Role.ANYONE if self.reads_only else self.spec.who

    def of(self, kind: type[A]) -> A:
        """The arguments as `kind`, the spec's `args` dataclass: `cmd.of(MigrateArgs).mode`."""
        if kind is not self.spec.args:
            raise TypeError(f"`{self.name}` takes {self.spec.args}, not {kind.__name__}")
        return kind(**self.args)


class UsageError(Exception):
    """The text did not parse; ``spec`` is the command it was meant to be, when known."""

    def __init__(self, message: str, spec: CommandSpec | None = None) -> None:
        super().__init__(message)
        self.spec = spec


COMMANDS: dict[str, CommandSpec] = {
    s.name: s
    for s in (
        CommandSpec(
            "help",
            "Show every command, or one command's usage",
            "/pgmig help check",
            optional_positionals=("COMMAND",),
            reads_only=True,
            args=HelpArgs,
        ),
        CommandSpec(
            "servers", "List the configured servers (never their passwords)", "/pgmig servers", reads_only=True
        ),
        CommandSpec(
            "check",
            "Run the pre-flight checks a migration from SOURCE to TARGET must pass",
            "/pgmig check source target --db shop",
            positionals=("SOURCE", "TARGET"),
            options=(
                Option(
                    "--db", "databases to check, comma-separated (default: every user database)", "list", metavar="a,b"
                ),
                Option(
                    "--mode", "the kind of migration to check for", "choice", ("online", "offline"), default="online"
                ),
                Option(
                    "--replica-identity-full",
                    "accept tables without a primary key (pgmig sets REPLICA IDENTITY FULL on them)",
                    "flag",
                    default=False,
                ),
            ),
            working="Running pre-flight checks…",
            reads_only=True,
            args=CheckArgs,
        ),
        CommandSpec(
            "plan",
            "What a migration from SOURCE to TARGET would move, its pre-flight, and how long it would take "
            "(measured on the servers; nothing is changed)",
            "/pgmig plan source target --db shop --mode offline",
            positionals=("SOURCE", "TARGET"),
            options=(
                Option(
                    "--db", "databases to plan, comma-separated (default: every user database)", "list", metavar="a,b"
                ),
                Option("--mode", "the kind of migration to plan", "choice", ("online", "offline"), default="online"),
                Option(
                    "--parallel", "parallel jobs the migration would run (default: as `migrate`)", "int", metavar="N"
                ),
            ),
            working="Measuring the servers for a plan…",
            reads_only=True,
            args=PlanArgs,
        ),
        CommandSpec(
            "migrate",
            "Start migrating databases from SOURCE to TARGET (runs in the background as mig-N)",
            "/pgmig migrate source target --mode offline --db shop",
            positionals=("SOURCE", "TARGET"),
            options=(
                Option(
                    "--mode",
                    "offline: a snapshot copy; online: copy, then keep in sync until cutover",
                    "choice",
                    ("online", "offline"),
                    required=True,
                ),
                Option(
                    "--method",
                    "offline method: restore (pg_dump/pg_restore, parallel) or dump (SQL files, editable)",
                    "choice",
                    ("restore", "dump"),
                    default="restore",
                ),
                Option(
                    "--db",
                    "databases to migrate, comma-separated (default: every user database)",
                    "list",
                    metavar="a,b",
                ),
                Option("--parallel", "parallel jobs (default: the machine's cores, 2–8)", "int", metavar="N"),
                Option(
                    "--pause-after-export",
                    "stop after export so the SQL files can be reviewed (dump method)",
                    "flag",
                    default=False,
                ),
                Option(
                    "--overwrite", "drop and recreate target databases that already hold data", "flag", default=False
                ),
                Option(
                    "--replica-identity-full",
                    "online: set REPLICA IDENTITY FULL on tables without a primary "
                    "key, so their updates and deletes replicate",
                    "flag",
                    default=False,
                ),
                Option(
                    "--capture-ddl",
                    "online: capture schema changes made on the source while streaming and hold each for a "
                    "decision (`/pgmig ddl`), whatever [online] capture_ddl says",
                    "flag",
                    default=False,
                    contradicts="--no-capture-ddl",
                ),
                Option(
                    "--no-capture-ddl",
                    "online: do not capture schema changes for this migration, whatever [online] capture_ddl says "
                    "(nothing holds replication at a schema change, and the cutover does not wait for decisions)",
                    "flag",
                    default=False,
                    contradicts="--capture-ddl",
                ),
                Option(
                    "--backend",
                    "who moves the data: pgmig itself (native), the flexible server's migration "
                    "service (flex; at most 8 databases online, batches offline) or Azure DMS classic "
                    "(dms: online only, sources 9.4–13; Microsoft recommends flex)",
                    "choice",
                    ("native", "flex", "dms"),
                    default="native",
                ),
                Option(
                    "--runtime-server",
                    "flex backend: the resource id of the runtime server the service runs on, for sources or "
                    "targets on private networks (default: the target's azure_runtime_server)",
                    metavar="ID",
                ),
            ),
            working="Running pre-flight checks before starting…",
            args=MigrateArgs,
            who=Role.OPERATOR,
            action="start migrations",
        ),
        CommandSpec(
            "provision",
            "Create an Azure Database for PostgreSQL flexible server (names as in `az postgres "
            "flexible-server create`); it then becomes a migration target",
            "/pgmig provision sales-prod --resource-group rg-data --region westeurope --version 16 --tier "
            "GeneralPurpose --sku Standard_D2ds_v5 --storage-gb 128 --admin-user pgadmin --admin-password-env "
            "SALES_ADMIN_PASSWORD --network public --firewall pgmig=198.51.100.7,office=203.0.113.1-203.0.113.20",
            positionals=("NAME",),
            options=(
                Option("--resource-group", "resource group (default: [azure] resource_group)", metavar="RG"),
                Option("--region", "Azure region, e.g. westeurope (default: [azure] region)", metavar="REGION"),
                Option("--version", "PostgreSQL major version", metavar="16", default="16"),
                Option(
                    "--tier", "Burstable, GeneralPurpose or MemoryOptimized", metavar="TIER", default="GeneralPurpose"
                ),
                Option("--sku", "compute SKU, e.g. Standard_D2ds_v5", metavar="SKU", default="Standard_D2ds_v5"),
                Option("--storage-gb", "storage in GB: 32, 64, 128 … 32768 (can only grow)", metavar="GB"),
                Option("--storage-size", "alias of --storage-gb", metavar="GB"),
                Option("--admin-user", "administrator login", metavar="USER", required=True),
                Option(
                    "--admin-password-env",
                    "environment variable (where pgmig runs) holding the admin password",
                    metavar="VAR",
                    required=True,
                ),
                Option("--ha", "high availability: zone-redundant or same-zone", metavar="MODE"),
                Option("--zone", "availability zone of the primary (1–3)", metavar="N"),
                Option("--standby-zone", "availability zone of the zone-redundant standby (1–3)", metavar="N"),
                Option(
                    "--network",
                    "how the server is reached: public (firewall rules) or vnet (private access in a delegated "
                    "subnet); one is required",
                    "choice",
                    ("public", "vnet"),
                ),
                Option("--subnet", "vnet: resource id of a subnet delegated to flexible servers", metavar="SUBNET_ID"),
                Option(
                    "--private-dns-zone",
                    "vnet: resource id of the private DNS zone linked to the VNet",
                    metavar="ZONE_ID",
                ),
                Option("--public-access", "same as --network public", "flag", default=False),
                Option("--allow-azure-services", "firewall rule letting Azure services connect", "flag", default=False),
                Option("--firewall", "firewall rules NAME=START-END, comma-separated", "list", metavar="n=a-b"),
                Option("--tags", "resource tags k=v,…", metavar="k=v,…"),
                Option("--source", "the server this one will receive: its version must not be newer", metavar="SERVER"),
            ),
            working="Validating the request…",
            needs_azure=True,
            args=ProvisionArgs,
            who=Role.CLOUD_OPERATOR,
            action="provision servers",
        ),
        CommandSpec(
            "azure-check",
            "Check what pgmig may do in Azure before depending on it: cloud settings and api-versions, the "
            "identity and its permissions, resource providers, a target's state and migration slot",
            "/pgmig azure-check sales-prod --backend flex --source onprem-sales",
            optional_positionals=("TARGET",),
            options=(
                Option("--backend", "the managed backend to check for", "choice", ("flex", "dms")),
                Option("--source", "the source it would migrate (DMS classic takes 9.4–13)", metavar="SERVER"),
                Option("--db", "the databases it would migrate", "list", metavar="a,b"),
                Option("--mode", "online or offline", "choice", ("online", "offline"), default="online"),
            ),
            working="Checking Azure…",
            reads_only=True,
            needs_azure=True,
            args=AzureCheckArgs,
        ),
        CommandSpec(
            "createdb",
            "Create a database on an Azure flexible server",
            "/pgmig createdb sales-prod sales",
            positionals=("SERVER", "DBNAME"),
            working="Creating the database…",
            needs_azure=True,
            args=CreatedbArgs,
            who=Role.CLOUD_OPERATOR,
            action="create databases",
        ),
        CommandSpec(
            "firewall",
            "Add firewall rules to an Azure flexible server",
            "/pgmig firewall sales-prod office=203.0.113.1-203.0.113.20",
            positionals=("SERVER", "RULES"),
            working="Adding firewall rules…",
            needs_azure=True,
            args=FirewallArgs,
            who=Role.CLOUD_OPERATOR,
            action="change firewall rules",
        ),
        CommandSpec(
            "undo",
            "List (and with --yes undo) what pgmig changed on an Azure flexible server through Azure: firewall "
            "rules, server parameters, databases it created — each only if it is still what pgmig made",
            "/pgmig undo sales-prod --yes",
            positionals=("SERVER",),
            options=(
                Option("--request", "a provisioning request's changes instead of the server's own", metavar="prov-N"),
                Option("--yes", "undo them (without it: list them)", "flag", default=False),
            ),
            working="Reading pgmig's journal of Azure changes…",
            reads_only=True,
            changes_with="yes",
            needs_azure=True,
            args=UndoArgs,
            who=Role.CLOUD_OPERATOR,
            action="undo Azure changes",
        ),
        CommandSpec(
            "configure",
            "Set server parameters of an Azure flexible server: allow-list the extensions a source "
            "uses, wal_level when it is to be a source itself; restart when a change needs it",
            "/pgmig configure sales-prod --extensions-from source --restart",
            positionals=("SERVER",),
            options=(
                Option(
                    "--extensions-from",
                    "allow (and preload where needed) every extension this server uses",
                    metavar="SOURCE",
                ),
                Option("--extensions", "extensions to allow, comma-separated", "list", metavar="a,b"),
                Option(
                    "--wal-level",
                    "replica or logical (logical: the server can be a migration source)",
                    "choice",
                    ("replica", "logical"),
                ),
                Option("--restart", "restart the server if a changed parameter needs it", "flag", default=False),
            ),
            working="Reading and setting server parameters…",
            needs_azure=True,
            args=ConfigureArgs,
            who=Role.CLOUD_OPERATOR,
            action="change server parameters",
        ),
        CommandSpec(
            "status",
            "Show a migration's state, steps and progress (or every active one; or a provisioning request prov-N)",
            "/pgmig status mig-3",
            optional_positionals=("MIGRATION",),
            reads_only=True,
            args=StatusArgs,
        ),
        CommandSpec("list", "List recent migrations", "/pgmig list", reads_only=True),
        CommandSpec(
            "cancel",
            "Stop a migration; half-imported target databases are dropped",
            "/pgmig cancel mig-3",
            positionals=("MIGRATION",),
            working="Cancelling…",
            args=MigrationArgs,
            who=Role.OPERATOR,
            action="cancel migrations",
        ),
        CommandSpec(
            "retry",
            "Run a failed migration again from the step that failed, with the options its fix asks for",
            "/pgmig retry mig-3 --overwrite",
            positionals=("MIGRATION",),
            options=(
                Option("--overwrite", "now drop and recreate target databases that hold data", "flag"),
                Option(
                    "--replica-identity-full",
                    "now set REPLICA IDENTITY FULL on tables without a primary key (online)",
                    "flag",
                ),
                Option("--parallel", "parallel jobs from now on", "int", metavar="N"),
            ),
            args=RetryArgs,
            who=Role.OPERATOR,
            action="retry migrations",
        ),
        CommandSpec(
            "resume",
            "Import a migration paused after export (with any edits to its files)",
            "/pgmig resume mig-3",
            positionals=("MIGRATION",),
            args=MigrationArgs,
            who=Role.OPERATOR,
            action="resume migrations",
        ),
        CommandSpec(
            "repair",
            "Re-copy the key ranges continuous verification found to differ, while the migration streams",
            "/pgmig repair mig-3 orders",
            positionals=("MIGRATION",),
            optional_positionals=("TABLE",),
            working="Repairing…",
            args=RepairArgs,
            who=Role.OPERATOR,
            action="repair migrations",
        ),
        CommandSpec(
            "verify",
            "Compare row counts, checksums and sequences of source and target now",
            "/pgmig verify mig-3",
            positionals=("MIGRATION",),
            working="Verifying…",
            reads_only=True,
            args=MigrationArgs,
        ),
        CommandSpec(
            "cutover",
            "Ask the team to approve switching a caught-up online migration to its target",
            "/pgmig cutover mig-3",
            positionals=("MIGRATION",),
            working="Verifying and posting the approval card…",
            args=MigrationArgs,
            who=Role.OPERATOR,
            action="request a cutover",
        ),
        CommandSpec(
            "ddl",
            "List the schema changes captured on a streaming migration's source; apply or skip one on the target "
            "(replication waits at each until it is decided; a destructive one needs required_approvals approvers; "
            "skip takes a reason); `pause [REASON]` holds the cutover until `resume`",
            "/pgmig ddl mig-3 apply 2",
            positionals=("MIGRATION",),
            optional_positionals=("DECISION", "ID", "REASON"),
            reads_only=True,
            changes_with="decision",
            args=DdlArgs,
            who=Role.OPERATOR,
            action="decide schema changes",
            rest=True,
        ),
        CommandSpec(
            "audit",
            "What was decided and done on a migration (or provisioning request prov-N): who, what, when, where; "
            "read-only commands are counted (--all lists them too)",
            "/pgmig audit mig-3 --page 2",
            positionals=("MIGRATION",),
            options=(
                Option("--all", "list read-only commands (status, verify…) too", "flag", default=False),
                Option(
                    "--page",
                    "older entries: page 2 is the 50 before the newest 50",
                    "int",
                    metavar="N",
                    default=1,
                    maximum=99999,
                ),
            ),
            reads_only=True,
            args=AuditArgs,
        ),
        CommandSpec(
            "cleanup",
            "List (and with --yes remove) replication slots, publications and subscriptions pgmig left on a server",
            "/pgmig cleanup source --yes",
            positionals=("SERVER",),
            options=(Option("--yes", "remove them (objects of running migrations are kept)", "flag", default=False),),
            working="Looking for pgmig's replication objects…",
            reads_only=True,
            changes_with="yes",
            args=CleanupArgs,
            who=Role.OPERATOR,
            action="remove replication objects",
        ),
    )
}

MIGRATION_ID = re.compile(r"(?:mig-)?([0-9]{1,9})", re.IGNORECASE)  # fullmatch: ASCII digits only, few of them
PROVISION_ID = re.compile(r"prov-([0-9]{1,9})", re.IGNORECASE)
WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")


# What chat clients make of what was typed: Slack (like macOS and Word) turns `--` into an em dash and
# quotes into curly ones, and pastes bring no-break spaces.
DASHES = "\u2012\u2013\u2014\u2015"  # figure dash, en dash, em dash, horizontal bar
DOUBLE_QUOTES = "\u201c\u201d\u201e\u201f"  # “ ” „ ‟
SINGLE_QUOTES = "\u2018\u2019\u201a\u201b"  # ‘ ’ ‚ ‛ (’ is also the apostrophe of o’brien)
INVISIBLE_SPACES = "\u200b\ufeff"  # zero-width space, byte-order mark
SINGLE_DASH_OPTION = re.compile(r"-[A-Za-z][A-Za-z-]*")


def normalize(text: str) -> str:
    """Typed (or chat-mangled) text → what :func:`shlex.split` reads, changing only what lies outside quotes.

    Outside quotes: any Unicode space becomes a space; an em or en dash starting a word becomes `--`
    (`—db`, `–db`); curly double quotes, and curly single quotes around a word, delimit a quoted string
    like ASCII ones (a ’ inside a word stays an apostrophe). Inside quotes — ASCII or curly — nothing
    changes but the quote marks themselves: names are data, and a database may well be called
    "sales–2024". A backslash keeps the character after it as it is, as in shlex."""
    out: list[str] = []
    i, n = 0, len(text)
    word_start = True
    while i < n:
        ch = text[i]
        start, word_start = word_start, False
        if ch == "\\":  # shlex's escape: the next character is taken literally
            out.append(text[i : i + 2])
            i += 2
        elif ch == "'":  # shlex single quotes: no escapes inside
            end = text.find("'", i + 1)
            end = n if end < 0 else end + 1  # not closed: shlex says so
            out.append(text[i:end])
            i = end
        elif ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif ch in DOUBLE_QUOTES:  # closed by any curly double quote, or an ASCII one
            j = i + 1
            while j < n and text[j] not in DOUBLE_QUOTES and text[j] != '"':
                j += 1
            out.append(_quoted(text[i + 1 : j], closed=j < n))
            i = j + 1
        elif ch in SINGLE_QUOTES and (start or text[i - 1] in "=,") and (j := _closing(text, i)) > 0:
            out.append(_quoted(text[i + 1 : j], closed=True))
            i = j + 1
        elif ch.isspace() or ch in INVISIBLE_SPACES:
            out.append(" ")
            word_start = True
            i += 1
        elif start and (ch in DASHES or ch == "-"):
            j = i
            while j < n and (text[j] in DASHES or text[j] == "-"):
                j += 1
            run = text[i:j]
            out.append("--" if any(c in DASHES for c in run) else run)
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _closing(text: str, opening: int) -> int:
    """Where the curly single quote opened at `opening` closes: the next curly single quote that ends a
    word (`‘it’s’` closes at the last one); -1 when none does (then the first was an apostrophe)."""
    for j in range(opening + 1, len(text)):
        if text[j] in SINGLE_QUOTES and (j + 1 == len(text) or not text[j + 1].isalnum()):
            return j
    return -1


def _quoted(content: str, closed: bool) -> str:
    """`content` as a shlex double-quoted string, unchanged once read back."""
    escaped = content.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"' if closed else f'"{escaped}'


def close_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice a mistyped word most likely meant (difflib, ignoring case and leading dashes), or None."""
    by_key = {c.lower().lstrip("-"): c for c in choices}
    key = word.lower().lstrip("-")
    if not key or len(key) > 64:  # no choice is that long; and difflib is quadratic
        return None
    found = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.6)
    return by_key[found[0]] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` — did you mean `x`?` for a mistyped word, or "" when nothing is close."""
    match = close_match(word, choices)
    return f" — did you mean `{match}`?" if match else ""


def parse(text: str) -> ParsedCommand:
    """Parse the text after `/pgmig`. Raises :class:`UsageError` with a message that names what was wrong."""
    try:
        tokens = shlex.split(normalize(text))
    except ValueError as exc:
        problem = {
            "No closing quotation": "a quotation mark is not closed",
            "No escaped character": "it ends with a backslash",
        }.get(str(exc), str(exc))
        raise UsageError(f"could not read the command: {problem}") from None
    if not tokens:
        return ParsedCommand(COMMANDS["help"])
    name = tokens[0].lower()
    spec = COMMANDS.get(name)
    if spec is None:
        raise UsageError(f"unknown command `{_shown(tokens[0])}`{did_you_mean(name, COMMANDS)}")
    args: dict[str, Any] = {o.dest: o.default for o in spec.options}
    options = {o.flag: o for o in spec.options}
    positionals: list[str] = []
    seen: set[str] = set()
    rest = tokens[1:]
    i = 0
    while i < len(rest):
        token = rest[i]
        if token.startswith("--"):
            flag, eq, inline = token.partition("=")
            opt = options.get(flag.lower())
            if opt is None:
                raise UsageError(f"`{spec.name}` has no option `{_shown(flag)}`{did_you_mean(flag, options)}", spec)
            if opt.flag in seen:
                raise UsageError(f"`{opt.flag}` is given twice", spec)
            seen.add(opt.flag)
            if opt.contradicts in seen:
                raise UsageError(f"`{opt.contradicts}` and `{opt.flag}` contradict each other: give one", spec)
            if opt.kind == "flag":
                if eq:
                    raise UsageError(f"`{flag}` takes no value", spec)
                args[opt.dest] = True
                i += 1
                continue
            if eq:
                value = inline
            elif i + 1 < len(rest):
                value, i = rest[i + 1], i + 1
            else:
                raise UsageError(f"`{flag}` needs a value", spec)
            args[opt.dest] = _convert(opt, value, spec)
        else:
            if SINGLE_DASH_OPTION.fullmatch(token) and (meant := close_match(token, options)):  # `-db` for `--db`
                raise UsageError(f"`{spec.name}` has no option `{_shown(token)}` — did you mean `{meant}`?", spec)
            positionals.append(token)
        i += 1
    allowed = len(spec.positionals) + len(spec.optional_positionals)
    if spec.rest and len(positionals) > allowed:
        positionals[allowed - 1 :] = [" ".join(positionals[allowed - 1 :])]
    if len(positionals) < len(spec.positionals):
        missing = " ".join(spec.positionals[len(positionals) :])
        raise UsageError(f"`{spec.name}` needs {missing}", spec)
    if len(positionals) > allowed:
        extra = " ".join(positionals[allowed:])
        raise UsageError(f"`{spec.name}` does not take `{_shown(extra)}`", spec)
    for opt in spec.options:
        if opt.required and args[opt.dest] is None:
            raise UsageError(f"`{spec.name}` needs `{opt.flag}` ({'|'.join(opt.choices) or opt.dest})", spec)
    names = spec.positionals + spec.optional_positionals
    given: list[str | None] = [*positionals, *[None] * (allowed - len(positionals))]
    for meta, positional in zip(names, given, strict=True):
        if meta == "MIGRATION" and positional is not None:
            if provision := PROVISION_ID.fullmatch(positional):  # status and audit also answer for provisioning
                positional = f"prov-{int(provision.group(1))}"
            elif number := MIGRATION_ID.fullmatch(positional):
                positional = f"mig-{int(number.group(1))}"
            else:
                raise UsageError(f"`{_shown(positional)}` is not a migration id (like mig-3)", spec)
        args[meta.lower()] = positional
    topic = args.get("command") if spec.name == "help" else None
    if topic is not None and topic.lower() not in COMMANDS:
        raise UsageError(f"unknown command `{_shown(topic)}`{did_you_mean(topic, COMMANDS)}", spec)
    return ParsedCommand(spec, args)


def _shown(value: str) -> str:
    """Bad input quoted back to its author on one line (control characters spelled out), but not a
    5,000-character echo."""
    value = value if len(value) <= 40 else value[:40] + "…"
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in value
    )


def _convert(opt: Option, value: str, spec: CommandSpec) -> Any:
    if opt.kind == "int":
        too_long = len(value) > len(str(opt.maximum))  # `0064` for at most 64 is a typo, not 64
        if too_long or not WHOLE_NUMBER.fullmatch(value) or not 1 <= int(value) <= opt.maximum:
            raise UsageError(f"`{opt.flag}` needs a whole number from 1 to {opt.maximum}, not `{_shown(value)}`", spec)
        return int(value)
    if opt.kind == "choice":
        if value.lower() not in opt.choices:
            hint = did_you_mean(value, opt.choices)
            raise UsageError(f"`{opt.flag}` must be one of {', '.join(opt.choices)}, not `{_shown(value)}`{hint}", spec)
        return value.lower()
    if opt.kind == "list":
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise UsageError(f"`{opt.flag}` needs at least one name", spec)
        return items
    return value
