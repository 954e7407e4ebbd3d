"""The sandbox `make run` starts: it keeps a streaming migration streaming across restarts, and can be
re-opened after a cutover fenced its source."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bot.localpg import LocalCluster
from tests.integration.test_shell import pgmig


def sandbox_env(tmp_path) -> dict[str, str]:
    return {
        "PGMIG_HOME": str(tmp_path / "home"),
        "PGMIG_STATE": str(tmp_path / "state.sqlite"),
        "SLACK_BOT_TOKEN": "",
        "PGMIG_CONFIG": "",
    }


def clusters(tmp_path) -> dict[str, LocalCluster]:
    home = tmp_path / "home"
    state = json.loads((home / "sandbox.json").read_text())
    password = (home / "sandbox.password").read_text().strip()
    return {r: LocalCluster(Path(v["root"]), v["port"], password) for r, v in state.items() if isinstance(v, dict)}


def test_a_streaming_migration_still_streams_after_the_sandbox_restarts(tmp_path):
    env = sandbox_env(tmp_path)
    try:
        first = pgmig(
            "run",
            stdin="migrate source target --mode online --db shop\nwait mig-1 ready_for_cutover 120\nstatus mig-1\n",
            env=env,
            timeout=180,
        )
        assert first.returncode == 0, first.stderr
        assert "ready_for_cutover" in first.stdout
        assert "mig-1 stops streaming" in first.stdout  # said when the shell ends with it active
        ports = {r: c.port for r, c in clusters(tmp_path).items()}
        again = pgmig("run", stdin="wait 3\nstatus mig-1\n", env=env, timeout=180)  # ports in TIME_WAIT now
        assert again.returncode == 0, again.stderr
        assert {r: c.port for r, c in clusters(tmp_path).items()} == ports
        assert "🟢" in again.stdout and "not streaming" not in again.stdout, again.stdout
        # and changes still arrive: start the clusters as the shell does, write, and look on the target
        pgmig("sandbox", "up", env=env)
        sandbox = clusters(tmp_path)
        sandbox["source"].psql(
            "INSERT INTO customer (full_name, email) VALUES ('after restart', 'r@x')", database="shop"
        )
        pgmig("run", stdin="wait 3\n", env=env, timeout=180)
        pgmig("sandbox", "up", env=env)
        assert (
            sandbox["target"].psql("SELECT count(*) FROM customer WHERE full_name = 'after restart'", database="shop")
            == "1"
        )
    finally:
        pgmig("sandbox", "down", "--force", env=env)


def test_sandbox_reset_reopens_a_source_a_cutover_fenced(tmp_path):
    env = sandbox_env(tmp_path)
    try:
        assert pgmig("sandbox", "up", env=env).returncode == 0
        source = clusters(tmp_path)["source"]
        source.psql("ALTER DATABASE shop SET default_transaction_read_only = on")  # as a cutover leaves it
        source.psql("REVOKE CONNECT ON DATABASE shop FROM PUBLIC")
        out = pgmig("sandbox", "reset", env=env)
        assert out.returncode == 0 and "sandbox source re-opened: shop" in out.stdout, out.stdout + out.stderr
        source.psql("CREATE TABLE written_again (id int)", database="shop")  # writable again
        assert source.psql("SELECT has_database_privilege('public', 'shop', 'CONNECT')") == "t"
        assert "nothing was fenced" in pgmig("sandbox", "reset", env=env).stdout
    finally:
        pgmig("sandbox", "down", "--force", env=env)
    start = time.monotonic()
    assert "no sandbox" in pgmig("sandbox", "reset", env=env).stdout and time.monotonic() - start < 30
