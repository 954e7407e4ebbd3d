"""Every state recovers: pgmig runs as a process (the shell adapter, as a person would run it), is
SIGKILLed right after each journaled step of an online migration and of its cutover, and is started
again on the same state store and home (so it knows it is the same replica), while applications keep
writing to the source the whole time.

After every restart: the source is writable unless the migration completed, and fenced once it was
released; at most one slot per database, none once the migration is over; every row an application
committed on the source arrives on the target.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from bot.localpg import LocalCluster
from migration_core.state.models import State
from migration_core.store import Store
from tests.integration.clusters import PASSWORD, TARGET, config_toml

DBS = ("app1", "app2")
SCHEMA = """
CREATE TABLE parent (id serial PRIMARY KEY, name text);
CREATE TABLE child (id bigserial PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, note text);
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := upper(NEW.note); RETURN NEW; END $$;
CREATE TRIGGER child_shout BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION shout();
INSERT INTO parent (name) SELECT 'p' || g FROM generate_series(1, 10) g;
INSERT INTO child (parent_id, note) SELECT 1 + g % 10, 'n' || g FROM generate_series(1, 2000) g;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO app_user;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_user;
"""
APP_PASSWORD = "App-writer-pw-1"
PIPELINE_KILLS = [
    "database:app1",
    "publication:app1",
    "slot:app1",
    "constraints:app1",
    "subscription:app1",
    "step:load:app1",
    "slot:app2",
    "subscription:app2",
]
CUTOVER_KILLS = [
    "fence:app1",
    "fence:app2",
    "caught_up:app1",
    "sequences:app2",
    "undo-constraints:app1",
    "state:released",
    "undo-subscription:app2",
]


@pytest.fixture(scope="module")
def pair(cluster_root):
    src = (
        LocalCluster(
            cluster_root / "crash-src",
            password=PASSWORD,
            settings={"wal_level": "logical", "max_replication_slots": "10"},
        )
        .init()
        .start()
    )
    tgt = LocalCluster(cluster_root / "crash-tgt", password=PASSWORD, settings=TARGET).init().start()
    src.psql(f"CREATE ROLE app_user LOGIN PASSWORD '{APP_PASSWORD}'")
    for db in DBS:
        src.psql(f"CREATE DATABASE {db}")
        src.psql(SCHEMA, database=db)
    yield src, tgt
    src.destroy()
    tgt.destroy()


@dataclass
class Application:
    """Writes to the source as an application would (a non-superuser, so the fence applies to it), and
    remembers every row whose commit it saw."""

    src: LocalCluster
    committed: dict[str, list[int]] = field(default_factory=lambda: {db: [] for db in DBS})
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, db: str) -> None:
        while not self.stop.is_set():
            try:
                conn = await asyncpg.connect(self.src.dsn(db, user="app_user", password=APP_PASSWORD), timeout=2)
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)  # fenced: CONNECT revoked
                continue
            try:
                while not self.stop.is_set():
                    self.committed[db].append(
                        await conn.fetchval("INSERT INTO child (parent_id, note) VALUES (1, 'live') RETURNING id")
                    )
                    await asyncio.sleep(0.005)
            except Exception:  # noqa: BLE001 - fenced: read-only, or the session ended mid-statement
                await asyncio.sleep(0.05)
            finally:
                if not conn.is_closed():
                    conn.terminate()


class Pgmig:
    """One life of pgmig: the shell on stdin, its output in a file, dying where PGMIG_KILL_AT says."""

    def __init__(self, home: Path, config: Path, life: int, kill_at: str | None) -> None:
        self.out = home.parent / f"life-{life}.log"
        self.env = {
            **os.environ,
            "PGMIG_CONFIG": str(config),
            "PGMIG_STATE": str(home.parent / "state.sqlite"),
            "PGMIG_HOME": str(home),
            "PGMIG_KILL_AT": kill_at or "",
        }
        self.kill_at = kill_at
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> "Pgmig":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "shell",
            "--user",
            "U0ALICE",
            stdin=asyncio.subprocess.PIPE,
            stdout=open(self.out, "w"),
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            cwd=Path(__file__).parents[2],
        )
        return self

    async def type(self, *lines: str) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        await self.proc.stdin.drain()

    async def killed(self, timeout: float = 90) -> None:
        assert self.proc
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            raise AssertionError(f"pgmig never reached {self.kill_at}:\n{self.out.read_text()[-3000:]}") from None
        assert code == -signal.SIGKILL, (
            f"pgmig exited {code}, not killed at {self.kill_at}:\n" + self.out.read_text()[-3000:]
        )

    async def quit(self) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 60)

    def log(self) -> str:
        return self.out.read_text()


def fenced(src: LocalCluster, db: str) -> bool:
    read_only = src.psql(
        "SELECT coalesce((SELECT split_part(c, '=', 2) FROM pg_db_role_setting s, unnest(s.setconfig) c "
        f"WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = '{db}') "
        "AND c LIKE 'default_transaction_read_only=%'), 'off')"
    )
    return read_only == "on" or src.psql(f"SELECT has_database_privilege('app_user', '{db}', 'CONNECT')") == "f"


def pgmig_slots(src: LocalCluster) -> list[tuple[str, str]]:
    out = src.psql("SELECT database || ' ' || slot_name FROM pg_replication_slots WHERE slot_name LIKE 'pgmig%'")
    return [tuple(line.split(" ", 1)) for line in out.splitlines()] if out else []  # type: ignore[misc]


async def state_of(store: Store) -> State:
    m = await store.get_migration("mig-1")
    return m.state if m else State.CREATED


async def wait_for(store: Store, *states: State, timeout: float = 60, life: Pgmig | None = None) -> State:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = await state_of(store)
        if now in states:
            return now
        assert now not in (State.FAILED, State.CANCELLED), (await store.get_migration("mig-1")).error
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"mig-1 is {now.value}, not {[s.value for s in states]}" + (f":\n{life.log()[-3000:]}" if life else "")
    )


async def assert_invariants(store: Store, src: LocalCluster) -> State:
    """What must hold whenever pgmig is not in the middle of a cutover."""
    state = await state_of(store)
    released = state in (State.RELEASED, State.COMPLETED)
    for db in DBS:
        assert fenced(src, db) == released, f"{db}: fenced={fenced(src, db)} while mig-1 is {state.value}"
    slots = pgmig_slots(src)
    for db in DBS:
        assert len([s for s in slots if s[0] == db]) <= 1, slots
    if state.finished:
        assert not slots, f"slots left after mig-1 {state.value}: {slots}"
    return state


async def assert_rows_arrive(app: Application, tgt: LocalCluster, timeout: float = 30) -> None:
    """Every row an application saw committed on the source is on the target (streamed, or copied)."""
    deadline = time.monotonic() + timeout
    for db in DBS:
        wanted = list(app.committed[db])
        conn = await asyncpg.connect(tgt.dsn(db))
        try:
            while True:
                found = await conn.fetchval("SELECT count(*) FROM child WHERE id = ANY($1::bigint[])", wanted)
                if found == len(wanted):
                    break
                assert time.monotonic() < deadline, f"{db}: {len(wanted) - found} committed rows missing on the target"
                await asyncio.sleep(0.2)
        finally:
            await conn.close()


async def approve_cutover(life: Pgmig) -> None:
    await life.type("cutover mig-1", "as UAPPROVER", "press Approve")


async def test_pgmig_killed_after_every_journaled_step_recovers(tmp_path, pair):
    src, tgt = pair
    home = tmp_path / "home"
    config = tmp_path / "pgmig.toml"
    config.write_text(
        config_toml(
            {"source": src, "target": tgt},
            extra=(
                '[slack]\napprovers = ["UAPPROVER"]\nrequired_approvals = 1\n'
                "[migration]\nprogress_interval_seconds = 0.2\nlease_seconds = 30\n"
                "[online]\nfence_grace_seconds = 0.2\ncatch_up_timeout_seconds = 20\n"
            ),
        )
    )
    app = Application(src)
    writers = [asyncio.create_task(app.write(db)) for db in DBS]
    store = await Store.open(str(tmp_path / "state.sqlite"))
    lives = 0

    async def life(kill_at: str | None) -> Pgmig:
        nonlocal lives
        lives += 1
        return await Pgmig(home, config, lives, kill_at).start()

    try:
        await asyncio.sleep(0.3)
        # the online migration, killed after each change it makes on a server
        first = await life(PIPELINE_KILLS[0])
        await first.type(f"migrate source target --mode online --db {','.join(DBS)}")
        await first.killed()
        for point in PIPELINE_KILLS[1:]:
            current = await life(point)
            await current.killed()  # the restarted pgmig carried the migration on, up to the next point
            assert await assert_invariants(store, src) in (State.SCHEMA, State.FULL_LOAD, State.CATCHING_UP)
        # the cutover, killed after each of its steps
        current = await life(CUTOVER_KILLS[0])
        await wait_for(store, State.READY_FOR_CUTOVER, life=current)
        await assert_rows_arrive(app, tgt)
        for point in CUTOVER_KILLS[1:]:
            await approve_cutover(current)
            await current.killed()
            current = await life(point)
            if await state_of(store) is State.RELEASED:
                break  # from here on pgmig only goes forward
            await wait_for(store, State.READY_FOR_CUTOVER, life=current)  # rolled back at start-up
            assert await assert_invariants(store, src) is State.READY_FOR_CUTOVER
            await assert_rows_arrive(app, tgt)
            assert "pgmig stopped in the middle of the cutover" in (await store.get_migration("mig-1")).error
        await current.killed()  # finishing forward after the release, killed again during the teardown
        assert await state_of(store) is State.RELEASED
        last = await life(None)
        await wait_for(store, State.COMPLETED, life=last)
        await assert_invariants(store, src)
        app.stop.set()
        await asyncio.gather(*writers)
        await assert_rows_arrive(app, tgt)
        for db in DBS:  # the target is whole: foreign keys valid, triggers back, sequences ahead of every row
            assert tgt.psql("SELECT bool_and(convalidated) FROM pg_constraint WHERE contype = 'f'", database=db) == "t"
            assert tgt.psql("SELECT tgenabled FROM pg_trigger WHERE tgname = 'child_shout'", database=db) == "O"
            assert int(tgt.psql("SELECT last_value FROM child_id_seq", database=db)) >= max(app.committed[db])
        assert tgt.psql("SELECT count(*) FROM pg_subscription") == "0"
        assert lives == len(PIPELINE_KILLS) + len(CUTOVER_KILLS) + 1
        assert sum(len(c) for c in app.committed.values()) > 100
        await last.quit()
    finally:
        app.stop.set()
        await asyncio.gather(*writers, return_exceptions=True)
        await store.close()
        drop_leftovers(src, tgt)


def drop_leftovers(src: LocalCluster, tgt: LocalCluster) -> None:
    """After a failed run too, without hiding its failure: subscriptions (which keep their database
    from being dropped), the target databases and the source's slots."""
    subscriptions = "SELECT s.subname, d.datname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
    for line in tgt.psql(subscriptions).splitlines():
        name, db = line.split("|")
        tgt.psql(
            f'ALTER SUBSCRIPTION "{name}" DISABLE; ALTER SUBSCRIPTION "{name}" SET (slot_name = NONE); '
            f'DROP SUBSCRIPTION "{name}"',
            database=db,
        )
    for db in DBS:
        tgt.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    src.psql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")
