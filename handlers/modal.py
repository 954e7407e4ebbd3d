"""The migrate form: `/pgmig migrate` with no arguments, as a Slack modal (and as the shell's numbered form).

The form is built from configuration alone (Slack accepts `views.open` only within 3 s of the command), so
the source's databases are filled in once a source is chosen (`source_chosen`, through the same core
call `/pgmig check` uses), for operators only: anyone else gets the refusal there instead. A submission
becomes the very `ParsedCommand` the grammar makes of the typed command and runs through the router (audit,
authorization, pre-flight, start); what cannot be right is answered on the fields (`field_errors`, Slack's
`response_action: errors`). Block Kit only: the transports (bot/app.py, bot/shell.py) open, update and
submit it.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    CheckboxesElement,
    ContextBlock,
    InputBlock,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
    StaticMultiSelectElement,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from handlers import messages, router
from handlers.authz import operators_only, refusal
from handlers.context import Invocation, Reply, Services
from handlers.grammar import COMMANDS, ParsedCommand, UsageError, parse
from migration_core.engine.config import MigrationRequest
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.preflight.checks import pretty_bytes
from migration_core.state.models import AuditEntry, DdlCapture, Method, Mode

log = logging.getLogger(__name__)

FORM = "pgmig.migrate.form"  # the modal's callback_id
OPEN = "pgmig-form.open"  # a button that opens the form (App Home); not under `pgmig.` (those are router clicks)
PREFIX = "pgmig-form."  # action ids of the form's own elements

SOURCE, TARGET, MODE, METHOD, PARALLEL, OPTIONS = "source", "target", "mode", "method", "parallel", "options"
DATABASES = "databases@"  # + the source whose databases the block offers: a new source, a fresh block
SOURCE_ACTION = PREFIX + SOURCE  # dispatched at once (block_actions): the source's databases are listed
FLAGS = {
    "overwrite": ("--overwrite", "Overwrite target databases that hold data (drop and recreate)"),
    "replica_identity_full": ("--replica-identity-full", "Replica identity full for tables without a key (online)"),
    "pause_after_export": ("--pause-after-export", "Pause after export to review the files (offline, dump)"),
    "capture_ddl": ("--capture-ddl", "Capture schema changes made while streaming (online)"),
    "no_capture_ddl": ("--no-capture-ddl", "Do not capture schema changes (online)"),
}
MAX_OPTIONS = 100  # Slack's limit for a select's options
MIGRATE = COMMANDS["migrate"]  # what the form runs: its rules (who may, which options go together) are the command's
OPERATORS_ONLY = operators_only(MIGRATE.action)  # the refusal no other answer changes (the shell stops on it)
MIN_PARALLEL, MAX_PARALLEL = 1, 64
# A conflict of the options (MigrationRequest.conflicts) as the form tells it: under which field, in its words.
CONFLICTS = {
    "method": (METHOD, "dump is an offline method: an online migration streams its data (choose restore)"),
    "replica_identity_full": (OPTIONS, "replica identity full is for online migrations"),
    "pause_after_export": (OPTIONS, "pause after export goes with an offline migration by the dump method"),
    "target": (TARGET, "the target must be another server than the source"),
    "capture_ddl": (OPTIONS, "capturing schema changes (or not) is for online migrations"),
}


def wants_form(text: str) -> bool:
    """`/pgmig migrate` and nothing else: the form instead of usage help."""
    return text.strip().lower() == "migrate"


@dataclass
class Listing:
    """The databases a source offers (name, what the pre-flight says of its size), or why none."""

    source: str
    databases: list[tuple[str, str]] = field(default_factory=list)
    problem: str = ""


@dataclass
class Form:
    """What the form holds: the fields as chosen, and what the view says of itself."""

    source: str = ""
    target: str = ""
    databases: list[str] = field(default_factory=list)
    mode: str = ""
    method: str = "restore"
    parallel: str = ""  # as entered: Slack sends number inputs as text
    flags: list[str] = field(default_factory=list)  # keys of FLAGS
    offered: list[str] = field(default_factory=list)  # the databases the view offers…
    listed_for: str = ""  # …and whose they are ("" while none are listed)
    channel: str = ""  # where the command came from (private_metadata)
    response_url: str = ""  # the command's response_url: the answer goes where the typed one would
    view_id: str = ""

    @property
    def databases_block(self) -> str:
        return DATABASES + self.listed_for

    @property
    def capture(self) -> DdlCapture:
        """Schema-change capture as chosen (both boxes ticked is refused by `field_errors`)."""
        if "no_capture_ddl" in self.flags:
            return DdlCapture.OFF
        return DdlCapture.ON if "capture_ddl" in self.flags else DdlCapture.DEFAULT


def _plain(text: str, limit: int = 75) -> PlainTextObject:
    return PlainTextObject(text=text if len(text) <= limit else text[: limit - 1] + "…")


def _option(value: str, text: str, description: str = "") -> Option:
    return Option(value=value, text=_plain(text), description=_plain(description) if description else None)


def _pick(options: list[Option], values: list[str]) -> list[Option]:
    by_value = {o.value: o for o in options}
    return [by_value[v] for v in values if v in by_value]


def open_form(servers: dict[str, ServerConfig], channel: str = "", response_url: str = "") -> dict | Reply:
    """The empty form (configuration only, no round trip: it must be open within Slack's 3 s), or why there
    can be none."""
    if len(servers) < 2:
        return messages.error_message(
            "a migration needs a source and a target: configure at least two servers ([servers.NAME])"
        )
    return form_view(servers, Form(channel=channel, response_url=response_url))


def form_view(servers: dict[str, ServerConfig], form: Form, listing: Listing | None = None) -> dict:
    """The modal, showing `form`'s choices; `listing` fills the databases of the chosen source."""
    names = sorted(servers)[:MAX_OPTIONS]
    server_options = [_option(n, n, f"{servers[n].user}@{servers[n].address}") for n in names]
    blocks: list[Any] = [
        SectionBlock(
            text=MarkdownTextObject(
                text="Start a migration, as `/pgmig migrate SOURCE TARGET …` would: pgmig runs the pre-flight "
                "checks first and starts only if nothing blocks."
            )
        ),
        InputBlock(
            block_id=SOURCE,
            label="Source server",
            dispatch_action=True,
            element=StaticSelectElement(
                action_id=SOURCE_ACTION,
                placeholder="Migrate from…",
                options=server_options,
                initial_option=next(iter(_pick(server_options, [form.source])), None),
            ),
        ),
        InputBlock(
            block_id=TARGET,
            label="Target server",
            element=StaticSelectElement(
                action_id=PREFIX + TARGET,
                placeholder="Migrate to…",
                options=server_options,
                initial_option=next(iter(_pick(server_options, [form.target])), None),
            ),
        ),
    ]
    blocks += _databases_blocks(form, listing)
    modes = [
        _option("offline", "offline", "a consistent snapshot copy; stop writes first"),
        _option("online", "online", "copy, then stream changes until the cutover"),
    ]
    methods = [
        _option("restore", "restore", "pg_dump/pg_restore schema, parallel COPY of the rows"),
        _option("dump", "dump", "SQL files you can review and edit"),
    ]
    flags = [_option(key, text) for key, (_, text) in FLAGS.items()]
    blocks += [
        InputBlock(
            block_id=MODE,
            label="Mode",
            element=RadioButtonsElement(
                action_id=PREFIX + MODE, options=modes, initial_option=next(iter(_pick(modes, [form.mode])), None)
            ),
        ),
        InputBlock(
            block_id=METHOD,
            label="Method (offline only)",
            element=RadioButtonsElement(
                action_id=PREFIX + METHOD,
                options=methods,
                initial_option=next(iter(_pick(methods, [form.method or "restore"])), None),
            ),
        ),
        InputBlock(
            block_id=PARALLEL,
            label="Parallel jobs",
            optional=True,
            hint=f"{MIN_PARALLEL}–{MAX_PARALLEL}; empty: the machine's cores, 2–8",
            element=NumberInputElement(
                action_id=PREFIX + PARALLEL,
                is_decimal_allowed=False,
                min_value=MIN_PARALLEL,
                max_value=MAX_PARALLEL,
                initial_value=form.parallel or None,
            ),
        ),
        InputBlock(
            block_id=OPTIONS,
            label="Options",
            optional=True,
            element=CheckboxesElement(
                action_id=PREFIX + OPTIONS, options=flags, initial_options=_pick(flags, form.flags) or None
            ),
        ),
    ]
    meta = {"channel": form.channel, "response_url": form.response_url}
    return View(
        type="modal",
        callback_id=FORM,
        title="Migrate PostgreSQL",
        submit="Check and start",
        close="Cancel",
        private_metadata=json.dumps(meta),
        blocks=blocks,
    ).to_dict()


def _databases_blocks(form: Form, listing: Listing | None) -> list[Any]:
    def note(text: str) -> list[Any]:
        return [ContextBlock(elements=[MarkdownTextObject(text=text)])]

    if listing is None:
        return note("_Databases: choose a source, and its databases are listed here._")
    source = messages.esc(listing.source)
    if listing.problem:
        return note(f"❌ The databases of *{source}* could not be listed: {messages.esc(listing.problem)}")
    if not listing.databases:
        return note(f"❌ *{source}* has no user databases to migrate.")
    options = [_option(name, f"{name} — {size}" if size else name) for name, size in listing.databases[:MAX_OPTIONS]]
    chosen = form.databases if form.listed_for == listing.source and form.databases else [o.value for o in options]
    more = len(listing.databases) - MAX_OPTIONS
    hint = "postgres, azure_maintenance and azure_sys are not offered (name them in a typed `--db`)"
    if more > 0:
        hint = f"{more} more not shown: name them in a typed `/pgmig migrate … --db`; " + hint
    return [
        InputBlock(
            block_id=DATABASES + listing.source,
            label=f"Databases on {listing.source}",
            hint=hint,
            element=StaticMultiSelectElement(
                action_id=PREFIX + "databases",
                placeholder="Databases to migrate",
                options=options,
                initial_options=_pick(options, chosen) or None,
            ),
        )
    ]


async def list_databases(svc: Services, source: str) -> Listing:
    """The source's user databases (what `--db` defaults to), each with its size: one catalog query."""
    if source not in svc.servers:
        return Listing(source, problem=f"unknown server {source}")
    try:
        found = await svc.engine.databases(source)
    except ConnectionProblem as problem:
        return Listing(source, problem=f"{problem.message}" + (f" ({problem.fix})" if problem.fix else ""))
    return Listing(source, [(db, pretty_bytes(size)) for db, size in found])


async def source_chosen(svc: Services, view: dict, source: str, inv: Invocation) -> dict:
    """The form again after a source was picked: everything as chosen, and that source's databases — for an
    operator: who may not start a migration is told so at once and learns nothing of the server from the form
    (it opens for everyone, as Slack needs it within 3 s and the policy may have to ask Slack for a group)."""
    form = read(view)
    form.source = source
    if denied := await _refusal(inv, svc):
        return form_view(svc.servers, form, Listing(source, problem=denied))
    return form_view(svc.servers, form, await list_databases(svc, source))


async def _refusal(inv: Invocation, svc: Services) -> str | None:
    """Why this person may not start a migration (as the router would refuse the typed command), or None."""
    return await refusal(MIGRATE.who, MIGRATE.action, inv.user, svc.policy, svc.directory)


def _values(view: dict) -> dict[str, Any]:
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    return values if isinstance(values, dict) else {}


def _entry(values: dict[str, Any], block_id: str) -> dict[str, Any]:
    """The one element's state in an input block (whatever its action id)."""
    block = values.get(block_id)
    if isinstance(block, dict):
        for entry in block.values():
            if isinstance(entry, dict):
                return entry
    return {}


def _selected(entry: dict[str, Any]) -> list[str]:
    chosen = entry.get("selected_options")
    if chosen is None:
        chosen = [entry["selected_option"]] if entry.get("selected_option") else []
    if not isinstance(chosen, list):
        return []
    return [str(o["value"]) for o in chosen if isinstance(o, dict) and isinstance(o.get("value"), str)]


def read(view: dict) -> Form:
    """The form as submitted (or as it stands at a block action): Slack's `view.state.values`, the
    view's own blocks (which databases it offers) and its private_metadata. Whatever the payload holds."""
    values = _values(view)
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except (TypeError, ValueError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    form = Form(
        channel=str(meta.get("channel") or ""),
        response_url=str(meta.get("response_url") or ""),
        view_id=str(view.get("id") or ""),
    )
    for block in view.get("blocks") or []:
        block_id = block.get("block_id", "") if isinstance(block, dict) else ""
        if isinstance(block_id, str) and block_id.startswith(DATABASES):
            form.listed_for = block_id.removeprefix(DATABASES)
            form.offered = [str(o.get("value")) for o in (block.get("element") or {}).get("options") or []]
    first = {name: (_selected(_entry(values, name)) or [""])[0] for name in (SOURCE, TARGET, MODE, METHOD)}
    form.source, form.target, form.mode, form.method = first[SOURCE], first[TARGET], first[MODE], first[METHOD]
    if form.listed_for:
        form.databases = list(dict.fromkeys(_selected(_entry(values, form.databases_block))))
    number = _entry(values, PARALLEL).get("value")
    form.parallel = number.strip() if isinstance(number, str) else ""
    form.flags = [f for f in _selected(_entry(values, OPTIONS)) if f in FLAGS]
    return form


def command(form: Form) -> tuple[ParsedCommand, str]:
    """The ParsedCommand the grammar makes of the typed command, and that command's text. The databases are
    set as a list (a name may hold a comma, which a typed `--db` cannot say). Raises UsageError."""
    head = ["migrate", form.source, form.target, "--mode", form.mode]
    if form.mode == "offline":
        head += ["--method", form.method or "restore"]
    tail = ["--parallel", form.parallel] if form.parallel else []
    tail += [FLAGS[f][0] for f in FLAGS if f in form.flags]
    cmd = parse(" ".join(shlex.quote(p) for p in head + tail))
    cmd.args["db"] = list(form.databases)
    return cmd, " ".join(shlex.quote(p) for p in [*head, "--db", ",".join(form.databases), *tail])


async def field_errors(form: Form, inv: Invocation, svc: Services) -> dict[str, str]:
    """What is wrong, by block id (Slack shows each under its field); empty when the form may be run. Quick:
    no server is contacted (it runs before the submission's ack)."""
    if denied := await _refusal(inv, svc):
        return {SOURCE: denied}
    errors: dict[str, str] = {}
    known = ", ".join(sorted(svc.servers))
    if form.source not in svc.servers:
        errors[SOURCE] = f"unknown server {form.source}; configured: {known}" if form.source else "choose a source"
    if form.target not in svc.servers:
        errors[TARGET] = f"unknown server {form.target}; configured: {known}" if form.target else "choose a target"
    if SOURCE not in errors:
        if form.listed_for != form.source:
            errors[SOURCE] = (
                f"the databases of {form.source} are not listed (yet): wait a moment, or see the note under the source"
            )
        elif not form.databases:
            errors[form.databases_block] = "choose at least one database"
        elif stray := [d for d in form.databases if d not in form.offered]:
            errors[form.databases_block] = f"not on {form.source}: {', '.join(stray)[:200]}"
    if form.mode not in ("online", "offline"):
        errors[MODE] = "choose online or offline"
    if form.method not in ("restore", "dump"):
        errors[METHOD] = "choose restore or dump"
    # the typed command's rules; a mode or method not chosen (told above) counts as offline by restore here,
    # so that the target is checked while they are still open (the shell's form asks them later)
    request = MigrationRequest(
        form.source,
        form.target,
        Mode(form.mode) if MODE not in errors else Mode.OFFLINE,
        inv.user,
        method=Method(form.method) if METHOD not in errors else Method.RESTORE,
        pause_after_export="pause_after_export" in form.flags,
        replica_identity_full="replica_identity_full" in form.flags,
        capture_ddl=form.capture,
    )
    if "capture_ddl" in form.flags and "no_capture_ddl" in form.flags:
        errors[OPTIONS] = "capture schema changes, or do not: choose one of the two"
    for conflict in request.conflicts():
        errors.setdefault(*CONFLICTS[conflict.option])
    number = form.parallel
    whole = len(number) <= 2 and number.isascii() and number.isdigit()
    if number and not (whole and MIN_PARALLEL <= int(number) <= MAX_PARALLEL):
        errors[PARALLEL] = f"a whole number from {MIN_PARALLEL} to {MAX_PARALLEL}, or empty for the default"
    if not errors:
        try:
            command(form)
        except UsageError as err:  # the grammar's own rules, should the form ever allow more than they do
            errors[SOURCE] = str(err)
    return errors


async def opened(inv: Invocation, svc: Services) -> None:
    """The form was opened: counted in the audit like the other read-only commands."""
    try:
        await svc.engine.record(
            AuditEntry(actor=inv.user, action=AuditEntry.READ_ONLY, detail="/pgmig migrate (form)", channel=inv.channel)
        )
    except Exception:  # an audit hiccup must not break the form
        log.exception("could not audit the opened migrate form")


def working() -> str:
    """What the typed command's ack says while its pre-flight runs."""
    return COMMANDS["migrate"].working


async def submit(form: Form, inv: Invocation, svc: Services) -> Reply | None:
    """Run a form that passed `field_errors` as the typed command would run. None when this very form was
    already run (Slack delivered its submission twice): one form starts one migration."""
    if inv.delivery and not await svc.engine.first_delivery(inv.delivery):
        return None
    try:
        cmd, text = command(form)
    except UsageError as err:
        return messages.usage_error(err)
    return await router.handle_parsed(cmd, text, inv, svc)
