"""Throwaway local PostgreSQL clusters on loopback: the sandbox, the tests and the benchmarks use them.

PostgreSQL refuses to run as root, so under root every server program runs as an unprivileged user
(`postgres` when it exists, else `nobody`) and the data directory is made for that user.

With `PGMIG_INITDB_CACHE` set to a directory (the test suite does), `initdb` runs once per server version,
password and user into that directory and each new cluster is a copy of it: a copy takes a tenth of an
initdb's time, and the suites make a hundred clusters.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from migration_core.pg.pgbin import find_bindir

SUPERUSER = "postgres"
INITDB_CACHE = "PGMIG_INITDB_CACHE"


def port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on `port`: bound the way it binds (SO_REUSEADDR), so connections of
    a stopped server still in TIME_WAIT do not count as someone else's."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_as_user() -> str | None:
    """The unprivileged account server programs run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) exists to run PostgreSQL")


def reachable_by_server_user(path: Path) -> bool:
    """Whether the account server programs run as can reach `path` (always true when not root)."""
    user = run_as_user()
    return user is None or _traversable_by(path, pwd.getpwnam(user).pw_uid)


def _traversable_by(path: Path, uid: int) -> bool:
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue
        if st.st_uid != uid and not st.st_mode & 0o001:
            return False
    return True


class ClusterError(RuntimeError):
    pass


SYSTEM_LIBS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")


def _private_libs(program: Path) -> list[Path]:
    """Shared libraries a program loads from outside the system directories (wheel-vendored ones)."""
    out = subprocess.run(["ldd", str(program)], capture_output=True, text=True).stdout
    paths = [Path(m.group(1)) for m in re.finditer(r"=>\s+(/\S+)", out)]
    return [p for p in paths if not str(p.resolve()).startswith(SYSTEM_LIBS)]


def reachable_install(bindir: Path) -> tuple[Path, dict[str, str]]:
    """Server programs the server user can execute, and the environment they need.

    An install under a private directory (a venv in a 0700 home or temp dir) is copied once to
    /var/tmp, with the libraries it loads from outside the system directories; PostgreSQL installs
    are relocatable, and LD_LIBRARY_PATH finds the copied libraries.
    """
    if reachable_by_server_user(bindir):
        return bindir, {}
    install = bindir.parent
    copy = Path("/var/tmp") / f"pgmig-pgbin-{hashlib.sha256(str(install).encode()).hexdigest()[:12]}"
    libs = copy / "_libs"
    if not (copy / bindir.name / "postgres").exists():
        staging = copy.with_name(f"{copy.name}.{os.getpid()}")
        shutil.copytree(install, staging, symlinks=True, dirs_exist_ok=True)
        (staging / "_libs").mkdir(exist_ok=True)
        for program in ("postgres", "initdb", "pg_ctl", "psql"):
            for lib in _private_libs(bindir / program):
                shutil.copy2(lib, staging / "_libs" / lib.name)
        for root, _dirs, _files in os.walk(staging):
            os.chmod(root, 0o755)
        if copy.exists():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.replace(copy)
    return copy / bindir.name, {"LD_LIBRARY_PATH": str(libs)} if any(libs.iterdir()) else {}


@dataclass
class LocalCluster:
    """One initdb'd cluster: `init()` once, `start()`/`stop()` as needed, `destroy()` at the end."""

    root: Path
    port: int = field(default_factory=free_port)
    password: str = "pgmig-local"
    settings: dict[str, str] = field(default_factory=dict)
    bindir: Path | None = None  # server programs of a specific version; default: the newest installed

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()
        found = Path(self.bindir) if self.bindir else find_bindir("initdb", "pg_ctl", "postgres", "psql")
        self.bindir, self.env = reachable_install(found)
        self.user = run_as_user()
        if not reachable_by_server_user(self.root.parent):
            raise ClusterError(
                f"{self.root} is not reachable by user {self.user}: choose a directory under "
                "/tmp or /var/tmp, or make its parents traversable (chmod o+x)"
            )

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.user, "--"] if self.user else []) + list(args)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, cwd="/", env={**os.environ, **self.env})
        if check and proc.returncode != 0:
            raise ClusterError(f"{Path(args[0]).name} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> "LocalCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        os.chmod(self.root, 0o755)
        cache = os.environ.get(INITDB_CACHE)
        if cache:
            template = self._template(Path(cache))
            self._run("cp", "-a", str(template), str(self.datadir))
        else:
            self._initdb(self.root, self.datadir)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "128MB",
        }
        conf.update(self.settings)
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# pgmig local cluster\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        return self

    def _own(self, path: Path) -> None:
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(path, account.pw_uid, account.pw_gid)

    def _initdb(self, workdir: Path, datadir: Path) -> None:
        pwfile = workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._own(pwfile)
        os.chmod(pwfile, 0o600)
        try:
            self._run(
                self._program("initdb"),
                "-D",
                str(datadir),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()

    def _template(self, cache: Path) -> Path:
        """The initdb'd data directory new clusters copy (made once: in a staging directory, then renamed
        into place, so concurrent makers never see half of one)."""
        key = hashlib.sha256(f"{self.bindir}\0{self.password}\0{self.user}".encode()).hexdigest()[:16]
        template = cache / key / "data"
        if (template / "PG_VERSION").exists():
            return template
        cache.mkdir(parents=True, exist_ok=True)
        os.chmod(cache, 0o755)
        staging = cache / f"{key}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self._own(staging)
        os.chmod(staging, 0o755)
        self._initdb(staging, staging / "data")
        try:
            staging.rename(cache / key)
        except OSError:  # another process made it first
            self._run("rm", "-rf", str(staging))
        return template

    def start(self) -> "LocalCluster":
        self._set_port()
        self._run(self._program("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start")
        return self

    def _set_port(self) -> None:
        """A restarted cluster keeps its port unless something else took it meanwhile."""
        conf = self.datadir / "postgresql.conf"
        text = conf.read_text()
        if port_free(self.port):
            return
        self.port = free_port()
        conf.write_text(text + f"port = {self.port}\n")

    def _program(self, name: str) -> str:
        assert self.bindir is not None  # set when the cluster is made
        return str(self.bindir / name)

    def stop(self) -> None:
        if self.running:
            self._run(self._program("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False)

    @property
    def running(self) -> bool:
        return (
            self.initialized
            and self._run(self._program("pg_ctl"), "-D", str(self.datadir), "status", check=False).returncode == 0
        )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        return f"postgresql://{user}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str = "", database: str = "postgres", file: Path | None = None) -> str:
        """Run SQL (or a file) with psql, stopping at the first error."""
        args = [
            self._program("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
        ]
        args += ["-f", str(file)] if file else ["-c", sql]
        proc = subprocess.run(
            args, capture_output=True, text=True, env={**os.environ, **self.env, "PGPASSWORD": self.password}
        )
        if proc.returncode != 0:
            raise ClusterError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout.strip()
