"""Several `pgmig serve` processes behind one Slack app, on one PostgreSQL state store: a command works
whichever replica Slack reaches (it runs where the migration is held), and when the holder dies a
standby takes its migrations over within the lease, mid-load and mid-cutover alike."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bot.localpg import LocalCluster, free_port
from handlers.actions import Action
from migration_core.state.models import State
from migration_core.store import Store
from tests.integration.clusters import PASSWORD, TARGET, config_toml
from tests.integration.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers, text_of
from tests.integration.sample_data import PARENT_CHILD
from tests.integration.slack_harness import click_body, command_body
from tests.integration.waiting import wait_state, wait_until

LEASE = 2.0


class Replica:
    def __init__(self, name: str, root: Path, config: Path, state_url: str, fake: FakeSlack, kill_at: str = "") -> None:
        self.name, self.port, self.fake = name, free_port(), fake
        self.log = root / f"{name}.log"
        self.env = {
            **os.environ,
            "PGMIG_CONFIG": str(config),
            "PGMIG_STATE": state_url,
            "PGMIG_HOME": str(root / name),
            "PGMIG_REPLICA_ID": name,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.api_url,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "PGMIG_KILL_AT": kill_at,
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> "Replica":
        for _ in range(3):  # the free port found may be taken by another test's process before this one binds it
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "serve",
                stdout=open(self.log, "w"),
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=Path(__file__).parents[2],
                start_new_session=True,  # see freeze()
            )
            if await self._healthy():
                return self
            if self.proc.returncode is None or "address already in use" not in self.log.read_text():
                break
            self.port = free_port()
            self.env["PORT"] = str(self.port)
        raise AssertionError(f"{self.name} did not start:\n{self.log.read_text()[-2000:]}")

    async def _healthy(self) -> bool:
        """Whether it answers /healthz within 15 s (False at once when it exited)."""
        assert self.proc is not None
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                if self.proc.returncode is not None:
                    return False
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                        if resp.status == 200:
                            return True
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        return False

    async def post(self, body: str) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{self.port}/slack/events", data=body.encode(), headers=signed_headers(body)
            ) as resp:
                assert resp.status == 200, await resp.text()

    async def ask(self, text: str, key: str, user: str = "U0ALICE") -> str:
        await self.post(command_body(text, user, self.fake.response_url(key), key))
        return text_of(await self.fake.wait_for("responses", lambda r: r["key"] == key, 60))

    async def press(self, action_id: str, value: str, key: str, user: str) -> None:
        await self.post(click_body(action_id, value, user, self.fake.response_url(key), key))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or continue) the replica, as a VM pause does. It runs in a session of its own: in the test's
        process group, the kernel hangs up a stopped member (SIGHUP) when the group loses its last parent
        outside it (a detached run's), and the frozen replica died instead of waking (seen in a full run:
        ProcessLookupError at the SIGCONT)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except asyncio.TimeoutError:
                self.proc.kill()


@pytest.fixture
async def world(tmp_path, cluster_root, target_cluster):
    """A source with `app` (`busy` when a test makes it), a target, a PostgreSQL state store, a fake Slack."""
    src = (
        LocalCluster(
            cluster_root / f"rep-src-{tmp_path.name[-8:]}",
            password=PASSWORD,
            settings={"wal_level": "logical", "max_replication_slots": "10"},
        )
        .init()
        .start()
    )
    tgt = LocalCluster(cluster_root / f"rep-tgt-{tmp_path.name[-8:]}", password=PASSWORD, settings=TARGET)
    tgt.init().start()
    src.psql("CREATE DATABASE app")
    src.psql(PARENT_CHILD, database="app")
    state_db = f"state_{tmp_path.name[-8:].replace('-', '_')}"
    target_cluster.psql(f"CREATE DATABASE {state_db}")
    state_url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{target_cluster.port}/{state_db}"
    config = tmp_path / "pgmig.toml"
    config.write_text(
        config_toml(
            {"onprem": src, "azure": tgt},
            extra=(
                '[slack]\nnotify_channel = "C0NOTIFY"\napprovers = ["U0APPROVER"]\nrequired_approvals = 1\n'
                f"[migration]\nprogress_interval_seconds = 0.2\nlease_seconds = {LEASE}\n"
                "[online]\nfence_grace_seconds = 0.1\n"
            ),
        )
    )
    fake = await FakeSlack().start()
    store = await Store.open(state_url)
    replicas: list[Replica] = []

    def replica(name: str, kill_at: str = "") -> Replica:
        replicas.append(Replica(name, tmp_path, config, state_url, fake, kill_at))
        return replicas[-1]

    try:
        yield src, tgt, store, fake, replica
    finally:
        for r in replicas:
            await r.stop()
        await store.close()
        await fake.stop()
        src.destroy()
        tgt.destroy()
        target_cluster.psql(f"DROP DATABASE IF EXISTS {state_db} WITH (FORCE)")


async def until_verified(replica: Replica) -> None:
    """Until the replica's `/pgmig status` says continuous verification covers the database: a cutover
    request is refused before (`[online] require_verified_share`)."""
    seen: list[str] = []

    async def verified() -> bool:
        seen.append(await replica.ask("status mig-1", f"v{len(seen)}"))
        return "verified 100 %" in seen[-1]

    await wait_until(verified, 120, lambda: "the status to say verified 100 %: " + seen[-1])


BUSY_ROWS = 300_000  # about 100 MB: a full load that lasts long enough to act in the middle of it


def make_busy(src: LocalCluster) -> None:
    src.psql("CREATE DATABASE busy")
    src.psql(
        "CREATE TABLE ticket (id bigint PRIMARY KEY, body text); "
        f"INSERT INTO ticket SELECT g, repeat('x', 300) FROM generate_series(1, {BUSY_ROWS}) g",
        database="busy",
    )


async def loading(store: Store, mid: str, db: str) -> None:
    """Until the full load of `db` runs (the moment a test makes its holder die or freeze)."""
    for _ in range(300):
        step = await store.step(mid, f"load:{db}")
        if step is not None and step.state == "running":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the load of {db} never started")


async def holder(store: Store, mid: str) -> str:
    return (await store.owner(mid))[0].split("/", 1)[0]


def pgmig_objects(src: LocalCluster, tgt: LocalCluster) -> dict[str, str]:
    return {
        "slots": src.psql("SELECT count(*) FROM pg_replication_slots"),
        "roles": src.psql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgmig%'"),
        "subscriptions": tgt.psql("SELECT count(*) FROM pg_subscription"),
    }


async def approve(replica: Replica, fake: FakeSlack, key: str) -> None:
    """Press Approve on the newest approval card, through `replica`."""
    card = await fake.wait_for(
        "calls", lambda c: c.method == "chat.postMessage" and "Approve cutover of" in text_of(c.params)
    )
    card = [c for c in fake.calls if c.method == "chat.postMessage" and "Approve cutover of" in text_of(c.params)][-1]
    blocks = json.loads(card.params["blocks"]) if isinstance(card.params["blocks"], str) else card.params["blocks"]
    await replica.press(Action.APPROVE_CUTOVER.value, blocks[-1]["elements"][0]["value"], key, "U0APPROVER")


async def test_commands_reach_the_replica_holding_the_migration(world):
    src, tgt, store, fake, replica = world
    a, b = await asyncio.gather(replica("ra").start(), replica("rb").start())
    assert "mig-1" in await a.ask("migrate onprem azure --mode online --db app", "m1")
    await wait_state(store, "mig-1", State.READY_FOR_CUTOVER, fail_fast=False)
    assert await holder(store, "mig-1") == "ra"
    cancelled = await b.ask("cancel mig-1", "x1")  # Slack reached the other replica
    assert "cancelled" in cancelled, cancelled
    assert (await store.get_migration("mig-1")).state is State.CANCELLED
    assert pgmig_objects(src, tgt) == {"slots": "0", "roles": "0", "subscriptions": "0"}
    left = f"pgmig_{store.deployment}_m1_left"  # say a slot a failed teardown left; mig-1 is still ra's
    src.psql(f"SELECT pg_create_logical_replication_slot('{left}', 'pgoutput')", database="app")
    cleaned = await b.ask("cleanup onprem --yes", "cl1")  # removed by ra, which holds mig-1 (b cannot claim it)
    assert f"removed slot {left}" in cleaned and await holder(store, "mig-1") == "ra", cleaned
    assert pgmig_objects(src, tgt)["slots"] == "0"

    tgt.psql("CREATE DATABASE app")
    tgt.psql("CREATE TABLE someone_elses (id int)", database="app")
    assert "mig-2" in await b.ask("migrate onprem azure --mode online --db app", "m2")
    await wait_state(store, "mig-2", State.FAILED, fail_fast=False)  # not pgmig's database: refused
    tgt.psql("DROP DATABASE app")
    assert "retrying" in await a.ask("retry mig-2", "r2")  # run by the replica that holds mig-2
    await wait_state(store, "mig-2", State.READY_FOR_CUTOVER, fail_fast=False)

    src.psql("INSERT INTO child (parent_id) VALUES (2)", database="app")
    assert "approval card" in await random.choice([a, b]).ask("cutover mig-2", "c2")
    await approve(random.choice([a, b]), fake, "approve-2")
    await wait_state(store, "mig-2", State.COMPLETED, fail_fast=False)
    assert tgt.psql("SELECT count(*) FROM child", database="app") == "2"
    assert pgmig_objects(src, tgt) == {"slots": "0", "roles": "0", "subscriptions": "0"}
    assert [e.action for e in await store.audit_log("mig-2")].count("cutover.started") == 1


async def test_a_standby_takes_over_a_dead_replica_mid_load_and_mid_cutover(world):
    src, tgt, store, fake, replica = world
    make_busy(src)
    a = await replica("ra").start()
    b, c = await asyncio.gather(
        replica("rb", kill_at="fence:busy").start(), replica("rc", kill_at="fence:busy").start()
    )
    assert "mig-1" in await a.ask("migrate onprem azure --mode online --db busy", "m")
    await loading(store, "mig-1", "busy")
    a.kill()  # the holder dies in the middle of the full load, without a word
    killed = time.monotonic()
    while await holder(store, "mig-1") == "ra":
        await asyncio.sleep(0.1)
        assert time.monotonic() - killed < LEASE + 5, "no standby took the migration over"
    taken_over = time.monotonic() - killed
    assert taken_over <= LEASE + 3, taken_over
    await wait_state(store, "mig-1", State.READY_FOR_CUTOVER, fail_fast=False)
    assert src.psql("SELECT count(*) FROM pg_replication_slots") == "1"

    standby = b if await holder(store, "mig-1") == "rb" else c
    other = c if standby is b else b
    await until_verified(other)  # the standby's walk, journaled, read by the other replica too
    assert "approval card" in await other.ask("cutover mig-1", "c")
    await approve(other, fake, "approve")
    await asyncio.wait_for(standby.proc.wait(), 60)  # it died at the fence
    await wait_state(
        store, "mig-1", State.READY_FOR_CUTOVER, timeout=LEASE + 30, fail_fast=False
    )  # the last one rolled it back
    assert await holder(store, "mig-1") == other.name
    assert src.psql("SHOW default_transaction_read_only", database="busy") == "off"
    assert src.psql("SELECT has_database_privilege('public', 'busy', 'CONNECT')") == "t"
    assert src.psql("SELECT count(*) FROM pg_replication_slots") == "1"
    src.psql(f"INSERT INTO ticket VALUES ({BUSY_ROWS + 1}, 'after the takeovers')", database="busy")
    for _ in range(100):
        if tgt.psql(f"SELECT count(*) FROM ticket WHERE id = {BUSY_ROWS + 1}", database="busy") == "1":
            break
        await asyncio.sleep(0.2)
    assert tgt.psql("SELECT count(*) FROM ticket", database="busy") == str(BUSY_ROWS + 1)


class Application:
    """An application writing to the source every 100 ms as its own (non-superuser) role, one session a
    write as a pooler would: which writes the source accepted, and when."""

    def __init__(self, src: LocalCluster) -> None:
        src.psql("CREATE TABLE probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())", "app")
        src.psql("CREATE ROLE app_writer LOGIN PASSWORD 'app-Writer-pw'")
        src.psql("GRANT CONNECT ON DATABASE app TO app_writer")
        src.psql(
            "GRANT INSERT, SELECT ON probe TO app_writer; GRANT USAGE ON SEQUENCE probe_id_seq TO app_writer", "app"
        )
        self.port, self.stopped = src.port, asyncio.Event()
        self.accepted: list[tuple[int, float]] = []  # (id, when the source said it was committed)
        self.refused: list[str] = []

    async def run(self) -> None:
        import asyncpg

        while not self.stopped.is_set():
            try:
                conn = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user="app_writer", password="app-Writer-pw", database="app"
                )
                try:
                    written = await conn.fetchval("INSERT INTO probe DEFAULT VALUES RETURNING id")
                    self.accepted.append((written, time.monotonic()))
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError) as exc:
                self.refused.append(str(exc))  # fenced: refused, as it should be from the fence on
            await asyncio.sleep(0.1)


async def test_a_shutdown_while_the_release_is_announced_never_reopens_the_source(world):
    """SIGTERM (a rolling deploy) while Slack is slow to take the `released` post: the migration stays
    released, the source stays fenced, a restart completes it, and every write the source took is there."""
    src, tgt, store, fake, replica = world
    app = Application(src)
    a = await replica("ra").start()
    assert "mig-1" in await a.ask("migrate onprem azure --mode online --db app", "m")
    await wait_state(store, "mig-1", State.READY_FOR_CUTOVER, fail_fast=False)
    writing = asyncio.create_task(app.run())
    try:
        await asyncio.sleep(0.5)
        assert "approval card" in await a.ask("cutover mig-1", "c")
        fake.slow.update({"chat.update": 3.0, "chat.postMessage": 3.0})
        await approve(a, fake, "approve")
        await wait_state(store, "mig-1", State.RELEASED, timeout=60, fail_fast=False)
        released = time.monotonic()
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)  # while the release is being announced
        await asyncio.wait_for(a.proc.wait(), 60)
        assert (await store.get_migration("mig-1")).state is State.RELEASED
        await asyncio.sleep(1.0)  # the application keeps trying
        fake.slow.clear()
        assert src.psql("SHOW default_transaction_read_only", database="app") == "on"
        assert src.psql("SELECT has_database_privilege('app_writer', 'app', 'CONNECT')") == "f"
        await replica("ra").start()  # the same replica restarted finishes it forward
        await wait_state(store, "mig-1", State.COMPLETED, timeout=60)
    finally:
        app.stopped.set()
        await writing
    late = [i for i, at in app.accepted if at > released]
    assert not late, f"the source accepted writes after the release: {late}"
    accepted = [i for i, _ in app.accepted]
    assert accepted, f"the application never wrote: {app.refused[:3]}"
    on_target = tgt.psql(f"SELECT count(*) FROM probe WHERE id IN ({','.join(map(str, accepted))})", database="app")
    assert on_target == str(len(accepted))


async def test_a_frozen_replica_that_wakes_after_a_takeover_writes_nothing(world):
    """A replica frozen (SIGSTOP: a VM pause) mid-load past its lease: another takes the migration over and
    brings it to ready_for_cutover; the frozen one thawed is fenced out by its stale token (its failing
    sessions fail nothing), the takeover is shown in status, and the migration completes."""
    src, tgt, store, fake, replica = world
    make_busy(src)
    a, b = await asyncio.gather(replica("ra").start(), replica("rb").start())
    assert "mig-1" in await a.ask("migrate onprem azure --mode online --db busy", "m")
    await loading(store, "mig-1", "busy")
    assert a.proc is not None
    a.freeze()
    try:
        await wait_state(store, "mig-1", State.READY_FOR_CUTOVER, timeout=LEASE + 90, fail_fast=False)
        assert await holder(store, "mig-1") == "rb"
    finally:
        a.freeze(False)
    assert a.proc.returncode is None, "the frozen replica died instead of waking"
    await asyncio.sleep(LEASE * 2)  # it wakes, its sessions fail, its lease tick runs
    m = await store.get_migration("mig-1")
    assert m.state is State.READY_FOR_CUTOVER and await holder(store, "mig-1") == "rb", m.error
    assert not [e for e in await store.audit_log("mig-1") if e.detail.startswith("failed")]
    status = await b.ask("status mig-1", "s")
    assert "took mig-1 over from replica ra" in status and "Run by replica `rb`" in status, status
    assert src.psql("SELECT count(*) FROM pg_replication_slots") == "1"
    assert tgt.psql("SELECT count(*) FROM pg_subscription") == "1"
    await until_verified(b)  # the replica that took over verifies while streaming, then the team may ask
    assert "approval card" in await b.ask("cutover mig-1", "c")
    await approve(b, fake, "approve")
    await wait_state(store, "mig-1", State.COMPLETED, timeout=90)
    assert tgt.psql("SELECT count(*) FROM ticket", database="busy") == str(BUSY_ROWS)
