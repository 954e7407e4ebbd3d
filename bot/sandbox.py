"""`pgmig sandbox up|down|stop|status|reset`: two throwaway local clusters and a config that points at them.

The source runs with `wal_level=logical` and sample data (a small built-in `shop` database, plus the
pagila sample when it is found: `PGMIG_PAGILA`, or `shared/datasets/pagila` beside the project or one of
its parent directories); the target starts empty. The generated config names them `source` and `target`,
so `/pgmig check source target` works on a fresh machine.

`down` and `reset` pull the servers from under whatever migrates on them, so they refuse while migrations
of the sandbox are active (read from the state store `make run` used with it); `--force` cancels them
first through the Engine, whose journal undoes what they made. `down` also removes the sandbox's own state
store: a new sandbox starts with no history of servers that are gone.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import os
import secrets as pysecrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.localpg import ClusterError, LocalCluster, reachable_by_server_user
from bot.replica import replica_id
from bot.settings import DEFAULT_STATE, load_settings, pgmig_command
from handlers.context import Posted, Reply
from handlers.publisher import ChannelPublisher
from migration_core.engine.api import Command, Engine, EngineConfig
from migration_core.observe.charts import Chart
from migration_core.pg.sql import ident, literal
from migration_core.state.models import Migration, State
from migration_core.store import Store

SOURCE_SETTINGS = {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}
SAMPLE_SQL = Path(__file__).with_name("sample_data.sql")
PAGILA_FILES = ("pagila-schema.sql", "pagila-data.sql")
PAGILA_ENV = ("PGMIG_PAGILA", "PGMIG_PAGILA_DIR")  # the second: the older name, still read
SERVERS = ("source", "target")  # the names the sandbox's config gives its clusters
Log = Callable[[str], None]


def project_roots() -> list[Path]:
    """Where this checkout is: the directory above the `bot` package, and the nearest directory at or above
    the working directory holding pgmig's pyproject.toml (`make` runs there; an installed pgmig has no
    checkout beside its package)."""
    roots = [Path(__file__).resolve().parents[1]]
    for d in [Path.cwd(), *Path.cwd().parents]:
        if (d / "pyproject.toml").exists() and (d / "bot" / "sandbox.py").exists():
            roots.append(d.resolve())
            break
    return list(dict.fromkeys(roots))


def pagila_candidates() -> list[Path]:
    """`shared/datasets/pagila` beside each project root or any directory above it (a clone at
    /work/main finds /work/shared/datasets/pagila; one at ~/src/team/pgmig finds ~/src/shared/…)."""
    found = []
    for root in project_roots():
        found += [base / "shared" / "datasets" / "pagila" for base in root.parents]
    return list(dict.fromkeys(found))


def find_pagila(env: dict[str, str] | None = None) -> tuple[Path | None, str]:
    """The pagila sample's directory, or None and why not (in words that say what to set)."""
    env = dict(os.environ) if env is None else env
    for name in PAGILA_ENV:
        if env.get(name):
            d = Path(env[name]).expanduser()
            if all((d / f).is_file() for f in PAGILA_FILES):
                return d, ""
            return None, f"{name}={d} holds no {' and '.join(PAGILA_FILES)}"
    for d in pagila_candidates():
        if all((d / f).is_file() for f in PAGILA_FILES):
            return d, ""
    return None, (
        "the pagila sample was not found (looked for shared/datasets/pagila beside "
        + ", ".join(str(r) for r in project_roots())
        + f" and the directories above): set PGMIG_PAGILA to the directory holding {' and '.join(PAGILA_FILES)}"
    )


def pagila_dir() -> Path | None:
    """The pagila sample's directory, when there is one (see `find_pagila`)."""
    return find_pagila()[0]


def load_pagila(cluster: LocalCluster, database: str = "pagila") -> bool:
    d = pagila_dir()
    if d is None:
        return False
    cluster.psql(f'CREATE DATABASE "{database}"')
    cluster.psql(database=database, file=d / "pagila-schema.sql")
    cluster.psql(database=database, file=d / "pagila-data.sql")
    return True


class SandboxBusy(Exception):
    """`down` or `reset` refused: migrations of the sandbox are active (the message names them)."""


@dataclass
class Sandbox:
    home: Path

    @classmethod
    def default(cls) -> "Sandbox":
        return cls(Path(os.environ.get("PGMIG_HOME") or ".pgmig").absolute())

    @property
    def state_file(self) -> Path:
        return self.home / "sandbox.json"

    @property
    def config_file(self) -> Path:
        return self.home / "sandbox.toml"

    @property
    def password_file(self) -> Path:
        return self.home / "sandbox.password"

    @property
    def pgpass_file(self) -> Path:
        """psql's password file for both clusters (`PGPASSFILE=…`), so connecting needs no password typed."""
        return self.home / "sandbox.pgpass"

    def _recorded(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def remember_state(self, state_url: str) -> None:
        """Note the state store a shell on this sandbox uses: `down` and `reset` read its migrations there."""
        recorded = self._recorded()
        if not recorded:
            return
        local = "://" not in state_url
        recorded["state"] = str(Path(state_url).absolute()) if local else "postgresql"
        self.state_file.write_text(json.dumps(recorded))

    def state_url(self) -> str:
        """The state store `make run` keeps the sandbox's migrations in: PGMIG_STATE when set, else the one a
        shell on this sandbox recorded, else the default (`.pgmig/state.sqlite`)."""
        recorded = self._recorded().get("state", "")
        if os.environ.get("PGMIG_STATE"):
            return os.environ["PGMIG_STATE"]
        return recorded if recorded and recorded != "postgresql" else DEFAULT_STATE

    def _cluster_root(self) -> Path:
        """Under root the clusters need a directory their unprivileged user can reach."""
        root = self.home / "clusters"
        if not reachable_by_server_user(self.home):
            digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
            root = Path("/var/tmp") / f"pgmig-sandbox-{digest}"
        return root

    def _load(self) -> tuple[LocalCluster, LocalCluster] | None:
        if not self.state_file.exists():
            return None
        state = json.loads(self.state_file.read_text())
        password = self.password_file.read_text().strip()
        return tuple(
            LocalCluster(
                Path(state[r]["root"]),
                state[r]["port"],
                password,  # type: ignore[return-value]
                SOURCE_SETTINGS if r == "source" else {},
            )
            for r in ("source", "target")
        )

    def _save(self, source: LocalCluster, target: LocalCluster) -> None:
        state = self._recorded()
        state.update({r: {"root": str(c.root), "port": c.port} for r, c in (("source", source), ("target", target))})
        self.state_file.write_text(json.dumps(state))
        self._write_pgpass(source, target)
        self.config_file.write_text(
            "# Written by the sandbox (`make run` without SLACK_BOT_TOKEN): two local throwaway clusters. Do not "
            "edit; `make sandbox-down` removes them.\n"
            "# In the shell, `as UAPPROVER` becomes the sandbox's approver (to approve a cutover).\n"
            "# psql: `make sandbox-status` prints a connection line for each cluster.\n"
            '\n[slack]\napprovers = ["UAPPROVER"]\nrequired_approvals = 1\n'
            "\n[online]\nfence_grace_seconds = 1\n"
            "\n[migration]\nprogress_interval_seconds = 2\n"
            + "".join(
                f'\n[servers.{r}]\nhost = "127.0.0.1"\nport = {c.port}\nuser = "postgres"\n'
                f'password_file = "{self.password_file}"\nsslmode = "disable"\n'
                for r, c in (("source", source), ("target", target))
            )
        )

    def reachable(self) -> list[tuple[str, int]]:
        """The sandbox's servers (name, port) when both clusters run; else none."""
        clusters = self._load() if self.state_file.exists() and self.password_file.exists() else None
        if not clusters or not all(c.running for c in clusters):
            return []
        return [(name, c.port) for name, c in zip(SERVERS, clusters, strict=True)]

    def _write_pgpass(self, source: LocalCluster, target: LocalCluster) -> None:
        escaped = source.password.replace("\\", "\\\\").replace(":", "\\:")
        self.pgpass_file.write_text("".join(f"127.0.0.1:{c.port}:*:postgres:{escaped}\n" for c in (source, target)))
        os.chmod(self.pgpass_file, 0o600)

    def up(self, log: Log = print) -> Path:
        """Create (first time) or start the clusters; returns the generated config path."""
        self.home.mkdir(parents=True, exist_ok=True)
        existing = self._load()
        if existing and all(c.initialized for c in existing):
            source, target = existing
            for c in existing:
                if not c.running:
                    c.start()
            self._save(source, target)
            log(f"sandbox running: source on 127.0.0.1:{source.port}, target on 127.0.0.1:{target.port}")
            return self.config_file
        self._remove()
        self.home.mkdir(parents=True, exist_ok=True)
        password = pysecrets.token_urlsafe(18)
        self.password_file.write_text(password + "\n")
        os.chmod(self.password_file, 0o600)
        root = self._cluster_root()
        source = LocalCluster(root / "source", password=password, settings=SOURCE_SETTINGS)
        target = LocalCluster(root / "target", password=password)
        try:
            log("creating the sandbox: two local PostgreSQL clusters…")
            source.init().start()
            target.init().start()
            source.psql("CREATE DATABASE shop")
            source.psql(database="shop", file=SAMPLE_SQL)
            pagila, why_not = find_pagila()
            extra = " and pagila" if load_pagila(source) else ""
        except ClusterError:
            source.destroy()
            target.destroy()
            raise
        self._save(source, target)
        log(
            f"sandbox ready: source on 127.0.0.1:{source.port} (databases shop{extra}), "
            f"target on 127.0.0.1:{target.port} (empty)"
        )
        if pagila is None:
            log(f"only shop: {why_not}, then `make sandbox-down` and `make run` to make a sandbox with it")
        return self.config_file

    def reset(self, force: bool = False, log: Log = print) -> None:
        """Re-open the source after a cutover fenced it (read-only default, CONNECT revoked), so the
        sandbox can be migrated again; the target and pgmig's state are left as they are. Refused while
        migrations of the sandbox are active (a cutover under way would lose its fence); `force` cancels them
        first."""
        clusters = self._load()
        if not clusters:
            log(f"no sandbox (`make run` makes one, or `{pgmig_command()} sandbox up`)")
            return
        self._settle(force, "reset", log)
        source = clusters[0]
        if not source.running:
            source.start()
        names = source.psql("SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'")
        reopened = []
        for db in names.splitlines() if names else []:
            fenced = source.psql(
                "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = "
                f"(SELECT oid FROM pg_database WHERE datname = {literal(db)}) "
                "AND c = 'default_transaction_read_only=on') "
                f"OR NOT has_database_privilege('public', {literal(db)}, 'CONNECT')"
            )
            if fenced == "t":
                source.psql(f"ALTER DATABASE {ident(db)} RESET default_transaction_read_only")
                source.psql(f"GRANT CONNECT ON DATABASE {ident(db)} TO PUBLIC")
                reopened.append(db)
        log(f"sandbox source re-opened: {', '.join(reopened)}" if reopened else "sandbox source: nothing was fenced")

    def stop(self) -> None:
        for c in self._load() or ():
            c.stop()

    def down(self, force: bool = False, log: Log = print) -> None:
        """Remove the clusters, their config and password, and the sandbox's own state store (its history of
        servers that are then gone). Refused while migrations of the sandbox are active; `force` cancels them
        first."""
        if self._load() is None:
            log("no sandbox to remove")
            return
        self._settle(force, "down", log)
        state = self.state_url()  # recorded beside the clusters: read before they go
        self._remove()
        shutil.rmtree(self._cluster_root(), ignore_errors=True)
        log("sandbox removed: both clusters, their config and password" + self._forget_history(state))

    def _remove(self) -> None:
        for c in self._load() or ():
            c.destroy()
        for f in (self.state_file, self.config_file, self.password_file, self.pgpass_file):
            f.unlink(missing_ok=True)

    def status(self) -> str:
        """The clusters, how to reach each with psql, and what migrates on them."""
        clusters = self._load()
        if not clusters:
            return f"no sandbox (`make run` makes one, or `{pgmig_command()} sandbox up`)"
        lines = [
            f"{r}: 127.0.0.1:{c.port} {'running' if c.running else 'stopped'} ({c.root})"
            for r, c in zip(SERVERS, clusters, strict=True)
        ]
        if not self.pgpass_file.exists():  # a sandbox made before the file was
            self._write_pgpass(*clusters)
        lines.append(f"psql (the password is read from {self.pgpass_file}, never shown):")
        lines += [
            f'  PGPASSFILE={self.pgpass_file} psql "host=127.0.0.1 port={c.port} user=postgres dbname={db}"'
            for c, db in zip(clusters, ("shop", "postgres"), strict=True)
        ]
        if not all(c.running for c in clusters):
            lines.append("stopped clusters start with `make run` (or `" + pgmig_command() + " sandbox up`)")
        url = self.state_url()
        where = url if "://" not in url else "the PostgreSQL store PGMIG_STATE names"
        try:
            listed = ", ".join(f"{m.id} ({m.state.value})" for m in asyncio.run(self.active())) or "none"
        except Exception as exc:  # status still shows the clusters
            listed = f"unknown (the state store cannot be read: {type(exc).__name__})"
        lines.append(f"state store: {where}; active migrations: {listed}")
        return "\n".join(lines)

    # ---- what migrates on the sandbox -------------------------------------------------------------

    async def active(self) -> list[Migration]:
        """The unfinished migrations of the sandbox's servers, from its state store (none when there is none)."""
        return [m for m in await self._migrations(self.state_url(), active_only=True) if _ours(m)]

    @staticmethod
    async def _migrations(url: str, active_only: bool = False) -> list[Migration]:
        if "://" not in url and not Path(url).exists():
            return []
        store = await Store.open(url)
        try:
            return await store.list_migrations(active_only=active_only)
        finally:
            await store.close()

    def _settle(self, force: bool, action: str, log: Log) -> None:
        """Nothing of the sandbox may be migrating when it is removed or reset: refuse, naming what is, or
        (`force`) cancel it through the Engine first. Raises SandboxBusy."""
        active = asyncio.run(self.active())
        if not active:
            return
        listed = ", ".join(f"{m.id} ({m.state.value})" for m in active)
        one = len(active) == 1
        harm = (
            f"removing the sandbox would pull the servers from under {'it' if one else 'them'}"
            if action == "down"
            else "re-opening its source would lift the fence a cutover relies on"
        )
        it, they = ("it", "it") if one else ("them", "they")
        if not force:
            raise SandboxBusy(
                f"{listed} {'is' if one else 'are'} active on the sandbox: {harm}. Cancel {it} in the shell "
                f"(`make run`, then `cancel {active[0].id}`), or `make sandbox-{action} FORCE=1` "
                f"(`{pgmig_command()} sandbox {action} --force`) cancels {it} first — the journal undoes what "
                f"{they} made on the servers."
            )
        log(f"cancelling {listed} first…")
        self.up(log=lambda _: None)  # undoing needs the servers
        problems = asyncio.run(self._cancel(active, log))
        if problems:
            raise SandboxBusy("; ".join(problems) + f". Nothing was {'removed' if action == 'down' else 're-opened'}.")

    async def _cancel(self, active: list[Migration], log: Log) -> list[str]:
        """Cancel each migration through the Engine, as `/pgmig cancel` does (the replica holding it runs it:
        a shell still open on the sandbox, or this process); returns what could not be cancelled."""
        env = {**os.environ, "PGMIG_CONFIG": str(self.config_file), "PGMIG_STATE": self.state_url()}
        settings = load_settings(env)
        store = await Store.open(settings.state_url)
        publisher = ChannelPublisher(_Quiet(), settings.policy)
        engine = Engine(
            store,
            settings.servers,
            publisher,
            EngineConfig(
                workdir=Path(settings.migration.workdir).absolute(),
                replica_id=replica_id(settings.home),
                lease_seconds=settings.migration.lease_seconds,
            ),
        )
        publisher.engine = engine
        problems = []
        try:
            for m in active:
                result = await engine.perform(Command.CANCEL, m.id, getpass.getuser())
                outcome = result.cancel
                if result.queued_on:
                    problems.append(f"{m.id}: its cancel waits for the pgmig running it (replica {result.queued_on})")
                elif outcome is None or outcome.state is not State.CANCELLED:
                    why = "; ".join(outcome.failed) if outcome else result.message
                    problems.append(f"{m.id} could not be cancelled: {why or 'it changed state meanwhile'}")
                else:
                    log(f"{m.id} cancelled" + (f": {'; '.join(outcome.done)}" if outcome.done else ""))
        finally:
            await engine.close()
            await store.close()
        return problems

    def _forget_history(self, url: str) -> str:
        """Remove the sandbox's own state store (a new sandbox must not inherit migrations of servers that
        are gone, nor their claims on databases); one that holds other servers' migrations too is kept."""
        if "://" in url:
            return "; its migrations stay in the PostgreSQL state store PGMIG_STATE names"
        path = Path(url).absolute()
        if not path.exists():
            return ""
        others = sorted({m.id for m in asyncio.run(self._migrations(str(path))) if not _ours(m)})
        if others:
            return (
                f"; its migrations stay in the state store {path}, which also holds migrations of other servers "
                f"({', '.join(others[:5])}{'…' if len(others) > 5 else ''})"
            )
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(self.home / "work", ignore_errors=True)
        return f"; and its migration history (the state store {path} and the export files)"


def _ours(m: Migration) -> bool:
    """A migration between the sandbox's servers (by the names its config gives them)."""
    return m.source in SERVERS or m.target in SERVERS


class _Quiet:
    """A poster for a command-line cancel: the outcome is printed, not posted as a card."""

    async def post(self, channel: str, reply: Reply, thread_ts: str | None = None) -> Posted:
        return Posted()

    async def update(self, channel: str, ts: str, reply: Reply, *, final: bool = True) -> None:
        return None

    async def upload(self, channel: str, chart: Chart, thread_ts: str | None = None) -> None:
        return None
