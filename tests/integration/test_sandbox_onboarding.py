"""Issue 22, the sandbox and the way from it to Slack, run as a new engineer runs them: `pgmig run` (what
`make run` runs) in a fresh directory, `pgmig sandbox status|down|reset`, `pgmig init`. What the README and the
messages promise must hold: pagila found wherever the clone lives (or a word on what to set), psql lines that
connect, a sandbox that is not pulled from under a streaming migration, a config to start Slack from."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot import sandbox as sandbox_module
from bot.sandbox import find_pagila

SCHEMA = "CREATE TABLE film (film_id int PRIMARY KEY, title text NOT NULL);\n"
DATA = "INSERT INTO film VALUES (1, 'ACADEMY DINOSAUR'), (2, 'ACE GOLDFINGER');\n"


def pgmig(cwd: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 240):
    """pgmig as `make` runs it, in `cwd`, with nothing of this machine's pgmig or Slack environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PGMIG_", "SLACK_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        timeout=timeout,
    )


def fake_pagila(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "pagila-schema.sql").write_text(SCHEMA)
    (where / "pagila-data.sql").write_text(DATA)
    return where


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A sandbox made by `pgmig run` in a fresh directory (defaults everywhere: `.pgmig`, its state store),
    with an online migration left streaming when the shell ended."""
    cwd = tmp_path_factory.mktemp("checkout")
    env = {"PGMIG_PAGILA": str(fake_pagila(cwd.parent / "elsewhere" / "pagila"))}
    out = {"cwd": cwd, "env": env}
    try:
        out["run"] = pgmig(
            cwd,
            "run",
            stdin="migrate source target --mode online --db shop --parallel 1\nwait mig-1 ready_for_cutover 120\n",
            env=env,
        )
        yield out
    finally:
        pgmig(cwd, "sandbox", "down", "--force", env=env)


def test_pagila_is_found_by_PGMIG_PAGILA_or_beside_the_clone_and_a_miss_says_what_to_set(made, tmp_path, monkeypatch):
    run = made["run"]
    assert run.returncode == 0, run.stderr
    assert "(databases shop and pagila)" in run.stdout, run.stdout
    # beside the clone, wherever it lives: /x/clone → /x/shared/datasets/pagila (or a directory above)
    clone = tmp_path / "a" / "team" / "clone"
    clone.mkdir(parents=True)
    fake_pagila(tmp_path / "a" / "shared" / "datasets" / "pagila")
    monkeypatch.setattr(sandbox_module, "project_roots", lambda: [clone])
    assert find_pagila({}) == (tmp_path / "a" / "shared" / "datasets" / "pagila", "")
    # a variable that points nowhere useful, and no pagila at all, say what to set
    found, why = find_pagila({"PGMIG_PAGILA": str(tmp_path / "empty")})
    assert found is None and f"PGMIG_PAGILA={tmp_path / 'empty'} holds no pagila-schema.sql" in why
    monkeypatch.setattr(sandbox_module, "project_roots", lambda: [tmp_path / "b" / "lonely" / "clone"])
    found, why = find_pagila({})
    assert found is None and "set PGMIG_PAGILA to the directory holding pagila-schema.sql" in why


def test_status_prints_a_psql_line_per_cluster_that_connects_and_never_the_password(made):
    cwd, env = made["cwd"], made["env"]
    assert pgmig(cwd, "sandbox", "up", env=env).returncode == 0  # the shell stopped the clusters when it ended
    status = pgmig(cwd, "sandbox", "status", env=env)
    assert status.returncode == 0, status.stderr
    password = (cwd / ".pgmig" / "sandbox.password").read_text().strip()
    assert password not in status.stdout + status.stderr
    lines = [line.strip() for line in status.stdout.splitlines() if line.strip().startswith("PGPASSFILE=")]
    assert len(lines) == 2, status.stdout
    assert "active migrations: mig-1 (ready_for_cutover)" in status.stdout, status.stdout
    for line, expected in zip(lines, ("source", "target"), strict=True):
        assignment, program, conninfo = shlex.split(line)
        name, _, passfile = assignment.partition("=")
        psql = subprocess.run(
            [program, conninfo, "-XAtc", "SELECT current_setting('port')"],
            capture_output=True,
            text=True,
            env={**os.environ, name: passfile, "PGCONNECT_TIMEOUT": "5"},
        )
        assert psql.returncode == 0, (expected, psql.stderr)
        assert f"port={psql.stdout.strip()}" in conninfo


def test_init_writes_a_commented_config_with_the_sandbox_and_never_overwrites(made):
    cwd, env = made["cwd"], made["env"]
    pgmig(cwd, "sandbox", "up", env=env)
    wrote = pgmig(cwd, "init", env=env)
    assert wrote.returncode == 0, wrote.stderr
    assert "wrote pgmig.toml with the sandbox's servers (source, target)" in wrote.stdout, wrote.stdout
    text = (cwd / "pgmig.toml").read_text()
    config = tomllib.loads(text)
    assert set(config["servers"]) == {"source", "target"} and config["slack"]["approvers"] == []
    for said in (
        "the ID is at the bottom of the About tab",  # the channel id
        "Copy member ID",  # a user id
        "`approvers = []` means nobody may approve",
        "`/invite @pgmig`",  # private channels
        "`chat:write.public` scope only reaches public channels",
        "`operators = []` means anyone",
    ):
        assert said in text, said
    again = pgmig(cwd, "init", env=env)
    assert again.returncode == 2 and "pgmig.toml exists and is left as it is" in again.stderr
    assert (cwd / "pgmig.toml").read_text() == text
    # serving Slack without a config points to `init`, by a path that exists
    missing = pgmig(cwd, "run", env={**env, "SLACK_BOT_TOKEN": "xoxb-test", "PGMIG_CONFIG": "nothing.toml"})
    assert missing.returncode == 2 and "nothing.toml does not exist" in missing.stderr, missing.stderr
    init = next(part for part in missing.stderr.split("`") if part.endswith(" init"))
    named = init.removesuffix(" init")  # the program the message names, e.g. …/.venv/bin/pgmig
    assert Path(named).exists() or named == "pgmig", missing.stderr


def test_the_shell_does_not_say_a_migration_keeps_streaming_while_the_sandbox_stops(made):
    run = made["run"]
    assert "mig-1 keeps streaming" not in run.stdout
    assert "mig-1 stops streaming: the sandbox's clusters stop with this shell" in run.stdout, run.stdout


def test_down_and_reset_refuse_while_a_migration_streams_and_force_cancels_it_first(made):
    cwd, env = made["cwd"], made["env"]
    state = cwd / ".pgmig" / "state.sqlite"
    assert state.exists()
    for action in ("down", "reset"):
        refused = pgmig(cwd, "sandbox", action, env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "mig-1 (ready_for_cutover) is active on the sandbox" in refused.stderr, refused.stderr
        assert f"`make sandbox-{action} FORCE=1`" in refused.stderr and f"sandbox {action} --force`" in refused.stderr
    assert "sandbox removed" not in refused.stdout
    assert state.exists() and (cwd / ".pgmig" / "sandbox.json").exists()
    forced = pgmig(cwd, "sandbox", "down", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert "cancelling mig-1 (ready_for_cutover) first…" in forced.stdout
    assert "mig-1 cancelled: dropped subscription" in forced.stdout and "dropped target database shop" in forced.stdout
    assert f"and its migration history (the state store {state}" in forced.stdout, forced.stdout
    assert not state.exists()
    assert "no sandbox" in pgmig(cwd, "sandbox", "status", env=env).stdout
