"""`pgmig sandbox up|down|status`: two throwaway local clusters and a config that points at them.

The source runs with `wal_level=logical` and sample data (a small built-in `shop` database, plus the
pagila sample when ../shared/datasets/pagila is present); the target starts empty. The generated
config names them `source` and `target`, so `/pgmig check source target` works on a fresh machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path

from bot.localpg import ClusterError, LocalCluster, reachable_by_server_user
from migration_core.sql import ident, literal

SOURCE_SETTINGS = {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}
SAMPLE_SQL = Path(__file__).with_name("sample_data.sql")


def pagila_dir() -> Path | None:
    """The shared pagila dataset, from PGMIG_PAGILA_DIR or beside the project checkout."""
    configured = os.environ.get("PGMIG_PAGILA_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pagila")
    for d in candidates:
        if (d / "pagila-schema.sql").exists() and (d / "pagila-data.sql").exists():
            return d
    return None


def load_pagila(cluster: LocalCluster, database: str = "pagila") -> bool:
    d = pagila_dir()
    if d is None:
        return False
    cluster.psql(f'CREATE DATABASE "{database}"')
    cluster.psql(database=database, file=d / "pagila-schema.sql")
    cluster.psql(database=database, file=d / "pagila-data.sql")
    return True


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
        self.state_file.write_text(
            json.dumps({r: {"root": str(c.root), "port": c.port} for r, c in (("source", source), ("target", target))})
        )
        self.config_file.write_text(
            "# Written by `pgmig sandbox up`: two local throwaway clusters. Do not edit; "
            "`pgmig sandbox down` removes them.\n"
            "# In the shell, `as UAPPROVER` becomes the sandbox's approver (to approve a cutover).\n"
            '\n[slack]\napprovers = ["UAPPROVER"]\nrequired_approvals = 1\n'
            "\n[online]\nfence_grace_seconds = 1\n"
            "\n[migration]\nprogress_interval_seconds = 2\n"
            + "".join(
                f'\n[servers.{r}]\nhost = "127.0.0.1"\nport = {c.port}\nuser = "postgres"\n'
                f'password_file = "{self.password_file}"\nsslmode = "disable"\n'
                for r, c in (("source", source), ("target", target))
            )
        )

    def up(self, log=print) -> Path:
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
        self.down(quiet=True)
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
        return self.config_file

    def reset(self, log=print) -> None:
        """Re-open the source after a cutover fenced it (read-only default, CONNECT revoked), so the
        sandbox can be migrated again; the target and pgmig's state are left as they are."""
        clusters = self._load()
        if not clusters:
            log("no sandbox (run `make run` or `pgmig sandbox up`)")
            return
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

    def down(self, quiet: bool = False, log=print) -> None:
        for c in self._load() or ():
            c.destroy()
        for f in (self.state_file, self.config_file, self.password_file):
            f.unlink(missing_ok=True)
        if not quiet:
            log("sandbox removed")

    def status(self) -> str:
        clusters = self._load()
        if not clusters:
            return "no sandbox (run `pgmig sandbox up`)"
        return "\n".join(
            f"{r}: 127.0.0.1:{c.port} {'running' if c.running else 'stopped'} ({c.root})"
            for r, c in zip(("source", "target"), clusters, strict=True)
        )
