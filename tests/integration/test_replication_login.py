"""The subscription's login on the source replicates what the subscription needs, and cannot copy the cluster.

Every walsender needs REPLICATION, logical ones too (PostgreSQL 15, 16 and 17 alike: InitPostgres refuses
a walsender to a role without it), so the login keeps it. What REPLICATION adds beyond logical decoding,
physical replication (pg_basebackup: every database), is refused by two pg_hba.conf lines naming the
group every login joins; the pre-flight says whether they are in effect and, when not, which lines to add.
pg_basebackup here runs only against this module's 127.0.0.1 cluster, into a temp dir, with a timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from bot.localpg import LocalCluster
from migration_core.changes import replication
from migration_core.changes.replication import LOGIN_GROUP, HbaRule, login_hba_lines, physical_opening
from migration_core.engine.api import MigrationRequest
from migration_core.preflight.checks import Finding, PreflightReport, PreflightRequest, Status, run_preflight
from migration_core.state.models import State
from tests.integration import factories
from tests.integration.clusters import PASSWORD, server
from tests.integration.sample_data import PARENT_CHILD
from tests.integration.waiting import wait_state, wait_until

DB = "replogin"  # the session's shared target has a database of this name only while this module runs


@pytest.fixture(scope="module")
def source(cluster_root):
    settings = {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"}
    c = LocalCluster(cluster_root / "login-src", password=PASSWORD, settings=settings).init().start()
    c.psql(f"CREATE DATABASE {DB}")
    c.psql(PARENT_CHILD, database=DB)
    yield c
    c.destroy()


@pytest.fixture
def target(target_cluster):
    yield target_cluster
    target_cluster.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def reload(cluster: LocalCluster) -> None:
    """pg_reload_conf() only signals the server: wait until new sessions see the reload."""
    before = cluster.psql("SELECT pg_conf_load_time()")
    cluster.psql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while cluster.psql("SELECT pg_conf_load_time()") == before:
        assert time.monotonic() < deadline, "the server did not reload its configuration"
        time.sleep(0.05)  # poll interval: a sync fixture helper, so no event loop to wait on


@pytest.fixture
def dba_lines(source):
    """What the DBA does once, as the pre-flight says: the group, and its two lines at the top of pg_hba.conf."""
    hba = source.datadir / "pg_hba.conf"
    before = hba.read_text()
    source.psql(f"CREATE ROLE {LOGIN_GROUP} NOLOGIN")
    hba.write_text("".join(line + "\n" for line in login_hba_lines()) + before)
    reload(source)
    yield
    hba.write_text(before)
    reload(source)
    source.psql(f"DROP ROLE {LOGIN_GROUP}")


def program(cluster: LocalCluster, name: str) -> str:
    assert cluster.bindir is not None  # set when the cluster is made
    return str(cluster.bindir / name)


def pg_basebackup(cluster: LocalCluster, user: str, password: str, into: Path) -> subprocess.CompletedProcess:
    """A physical copy of the whole cluster, as anyone holding the login's password would take it (the
    password in the environment, never in argv)."""
    env = {**os.environ, **cluster.env, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    args = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", user, "-w", "-D", str(into)]
    return subprocess.run(
        [program(cluster, "pg_basebackup"), *args, "-Ft", "-X", "none", "-c", "fast", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def logical_session(cluster: LocalCluster, user: str, password: str, command: str) -> subprocess.CompletedProcess:
    """One replication command over a logical (replication=database) connection, as the subscription makes."""
    env = {**os.environ, **cluster.env, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    conninfo = f"host=127.0.0.1 port={cluster.port} dbname={DB} user={user} replication=database"
    return subprocess.run(
        [program(cluster, "psql"), "-X", "-At", "-c", command, conninfo],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def login_finding(report: PreflightReport) -> Finding:
    [found] = [f for f in report.findings if f.title == "replication login"]
    return found


async def test_without_the_lines_the_preflight_warns_and_the_login_could_copy_the_cluster(
    tmp_path, source, target_cluster
):
    report = await run_preflight(PreflightRequest(server("src", source), server("tgt", target_cluster), databases=[DB]))
    login = login_finding(report)
    assert login.status is Status.WARN
    assert f"LOGIN REPLICATION, CONNECT on {DB} and through PUBLIC on postgres" in login.detail
    opening = "`host replication all 127.0.0.1/32 scram-sha-256` lets it take a base backup of the whole cluster"
    assert opening in login.detail
    assert login.fix == (
        f'as a superuser on the source: CREATE ROLE "{LOGIN_GROUP}" NOLOGIN; and put '
        f"`local  replication  +{LOGIN_GROUP}  reject` and `host  replication  +{LOGIN_GROUP}  all  reject` "
        "at the top of pg_hba.conf, then SELECT pg_reload_conf()"
    )

    # no false alarm: a login made as pgmig makes it, with its password, copies the whole cluster
    probe = "pgmig_probe_rep_login"
    conn = await asyncpg.connect(source.dsn(DB))
    try:
        password = await replication.create_replication_role(conn, probe, DB)
        copied = pg_basebackup(source, probe, password, tmp_path / "copy")
        assert copied.returncode == 0, copied.stderr
        assert (tmp_path / "copy" / "base.tar").stat().st_size > 1_000_000
    finally:
        await replication.drop_replication_role(conn, probe, DB)
        await conn.close()

    # the lines written but not loaded: the pre-flight does not take the file's word for what the server does
    hba = source.datadir / "pg_hba.conf"
    before = hba.read_text()
    source.psql(f"CREATE ROLE {LOGIN_GROUP} NOLOGIN")
    try:
        await asyncio.sleep(1.1)  # a file's modification time is in whole seconds: past the second the server loaded it
        hba.write_text("".join(line + "\n" for line in login_hba_lines()) + before)
        report = await run_preflight(
            PreflightRequest(server("src", source), server("tgt", target_cluster), databases=[DB])
        )
        stale = login_finding(report)
        assert stale.status is Status.WARN and "pg_hba.conf changed since the server loaded it" in stale.detail
        assert stale.fix == "SELECT pg_reload_conf() on the source"
    finally:
        hba.write_text(before)
        reload(source)
        source.psql(f"DROP ROLE {LOGIN_GROUP}")


async def test_a_role_that_cannot_read_pg_hba_says_it_cannot_tell(source, dba_lines):
    source.psql("CREATE ROLE hba_blind LOGIN PASSWORD 'hba-Blind-pw'")
    conn = await asyncpg.connect(source.dsn(DB, user="hba_blind", password="hba-Blind-pw"))
    try:
        plan = await replication.login_plan(conn, [DB])
    finally:
        await conn.close()
        source.psql("DROP ROLE hba_blind")
    assert plan.refused is None and "pg_hba_file_rules is for superusers" in plan.detail
    assert "its replication commands logged" not in plan.detail and LOGIN_GROUP not in plan.detail
    assert plan.fix.startswith(f'GRANT "{LOGIN_GROUP}" TO "hba_blind" WITH ADMIN OPTION; and, if not there yet, put')
    assert "hba_blind" not in source.logfile.read_text()  # no permission error logged on the source


async def test_a_streaming_subscriptions_login_cannot_take_a_base_backup(tmp_path, store, source, target, dba_lines):
    engine = factories.engine(store, source, target, tmp_path)
    try:
        m = await engine.create(
            MigrationRequest(
                source="onprem", target="azure", mode="online", requested_by="U1", databases=[DB], overwrite=True
            )
        )
        report = await engine.preflight(m)
        assert not report.blocking, report.blocking
        login = login_finding(report)
        assert login.status is Status.OK, login
        assert f"member of {LOGIN_GROUP}" in login.detail and "its replication commands logged" in login.detail
        assert login.detail.endswith("physical replication (pg_basebackup, pg_receivewal) refused by pg_hba.conf")
        engine.start(m.id)
        await wait_state(store, m.id, State.READY_FOR_CUTOVER)

        # the subscription's own login, and the password the target holds (as its superuser reads it)
        subconninfo = target.psql("SELECT subconninfo FROM pg_subscription", database=DB)
        login_match = re.search(r"user='([^']+)'.*password='([^']+)'", subconninfo)
        assert login_match is not None
        role, password = login_match.groups()
        assert source.psql("SELECT usename FROM pg_stat_replication") == role  # it streams as that login
        attributes = "rolsuper, rolreplication, rolconnlimit, rolconfig"
        member = f"pg_has_role(oid, '{LOGIN_GROUP}', 'MEMBER')"
        found = source.psql(f"SELECT {attributes}, {member} FROM pg_roles WHERE rolname = '{role}'")
        assert found == "f|t|4|{log_replication_commands=on}|t"

        refused = pg_basebackup(source, role, password, tmp_path / "copy")
        assert refused.returncode != 0
        assert f'pg_hba.conf rejects replication connection for host "127.0.0.1", user "{role}"' in refused.stderr
        assert not list((tmp_path / "copy").glob("*.tar"))

        # logical replication with that login still works: a new row arrives, a logical session opens
        source.psql("INSERT INTO parent DEFAULT VALUES", database=DB)
        rows = "SELECT count(*) FROM parent"
        await wait_until(lambda: target.psql(rows, database=DB) == "3", 30, "the change never arrived on the target")
        session = logical_session(source, role, password, "READ_REPLICATION_SLOT pgmig_login_probe")
        assert session.returncode == 0, session.stderr
        # and what it ran is in the source's log
        logged = "replication command: READ_REPLICATION_SLOT pgmig_login_probe"
        await wait_until(lambda: logged in source.logfile.read_text(), 10, "the login's command was not logged")

        assert (await engine.cancel(m.id, "U1")).state is State.CANCELLED
        assert source.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == "0"
        assert source.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{LOGIN_GROUP}'") == "1"  # the DBA's
    finally:
        await engine.close()


def rule(line: int, kind: str, users: str, address: str | None, method: str, db: str = "replication") -> HbaRule:
    return HbaRule(line, kind, [db], users.split(","), address, None, method)


ROLE = "pgmig_0a1b2c_rep_m7_deadbeef"


@pytest.mark.parametrize(
    ("rules", "groups", "opening"),
    [
        ([], set(), None),  # no replication line at all: refused
        ([rule(1, "host", "all", "all", "scram-sha-256", db="all")], set(), None),  # `all` is never physical
        ([rule(1, "host", "all", "10.0.0.0", "md5")], set(), 1),
        # the DBA's lines, first: they decide for members of the group, and only for them
        (
            [
                rule(1, "local", f"+{LOGIN_GROUP}", None, "reject"),
                rule(2, "host", f"+{LOGIN_GROUP}", "all", "reject"),
                rule(3, "local", "all", None, "md5"),
                rule(4, "host", "all", "0.0.0.0", "md5"),
            ],
            {LOGIN_GROUP},
            None,
        ),
        (
            [
                rule(1, "local", f"+{LOGIN_GROUP}", None, "reject"),
                rule(2, "host", f"+{LOGIN_GROUP}", "all", "reject"),
                rule(3, "local", "all", None, "md5"),
            ],
            set(),
            3,
        ),
        # below a line that lets it in, they come too late
        (
            [rule(1, "host", "all", "127.0.0.1", "scram-sha-256"), rule(2, "host", f"+{LOGIN_GROUP}", "all", "reject")],
            {LOGIN_GROUP},
            1,
        ),
        # a reject for some addresses or only SSL leaves the others open
        ([rule(1, "host", "all", "10.0.0.0", "reject"), rule(2, "host", "all", "all", "md5")], set(), 2),
        ([rule(1, "hostssl", "all", "all", "reject"), rule(2, "hostnossl", "all", "all", "scram-sha-256")], set(), 2),
        # methods a password does not get through decide too
        (
            [
                rule(1, "local", "all", None, "peer"),
                rule(2, "local", "all", None, "md5"),
                rule(3, "host", "all", "all", "cert"),
                rule(4, "host", "all", "all", "md5"),
            ],
            set(),
            None,
        ),
        ([rule(1, "host", "all", "all", "trust")], set(), 1),
        # exact names and PostgreSQL 16's regular expressions
        ([rule(1, "host", "replicator", "all", "md5")], set(), None),
        ([rule(1, "host", "/^pgmig_.*_rep_", "all", "reject"), rule(2, "host", "all", "all", "md5")], set(), None),
        ([rule(1, "host", "/^other_", "all", "reject"), rule(2, "host", "all", "all", "md5")], set(), 2),
    ],
)
def test_which_pg_hba_line_would_let_the_login_replicate_physically(
    rules: list[HbaRule], groups: set[str], opening: int | None
):
    found = physical_opening(rules, ROLE, groups)
    assert (found.line if found else None) == opening
