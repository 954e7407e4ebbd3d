"""Pictures at milestones: an online migration's chart reaches its thread (files_upload_v2 against the fake Slack's
external upload flow) when the full load is done, when it is ready for cutover and when the cutover completed —
a PNG that opens, drawn from metrics the state store keeps (both backends, across a restart); the shell writes
each to a file of its own."""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from matplotlib import image

from bot.shell import ShellPoster
from handlers.actions import Action
from migration_core.observe import charts
from migration_core.observe.charts import Chart
from migration_core.store import Store, metrics
from migration_core.store.metrics import Sample
from tests.integration.fake_slack import Upload
from tests.integration.slack_harness import team_on_own_pair

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's header chunk, its CRC checked."""
    assert data.startswith(PNG_SIGNATURE)
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    header, crc = data[16:29], struct.unpack(">I", data[29:33])[0]
    assert zlib.crc32(kind + header) == crc
    width, height = struct.unpack(">II", header[:8])
    return width, height


def opens(upload: Upload) -> None:
    """The bytes POSTed are the length announced, a PNG whose header and decoded pixels agree."""
    assert upload.data is not None and len(upload.data) == upload.length
    width, height = png_size(upload.data)
    pixels = image.imread(io.BytesIO(upload.data), format="png")
    assert pixels.shape[:2] == (height, width) and width >= 600 and height >= 300


@pytest.fixture
async def team(tmp_path, cluster_root):
    approvers = 'approvers = ["U0APPROVER1"]\nrequired_approvals = 1\n'
    async with team_on_own_pair(tmp_path, cluster_root, "charts", approvers) as app:
        yield app


async def test_each_milestone_puts_a_chart_that_opens_in_the_migrations_thread(team):
    slack = team
    titles = [f"mig-1: {moment} · onprem → azure" for moment in ("full load done", "ready for cutover", "completed")]
    await slack.command("migrate onprem azure --mode online --db app", user="U0ALICE", key="m")
    await slack.reply("m")
    await slack.fake.wait_for("files", lambda u: u.title == titles[1], timeout=60)

    await slack.command("cutover mig-1", user="U0ALICE", key="c")
    await slack.reply("c")
    await slack.press(Action.APPROVE_CUTOVER.value, user="U0APPROVER1", key="a")
    await slack.fake.wait_for("files", lambda u: u.title == titles[2], timeout=60)

    m = await slack.services.engine.find("mig-1")
    assert m is not None and m.message_channel == "C0NOTIFY" and m.message_ts
    assert [u.title for u in slack.fake.files if u.title in titles] == titles  # in the order they happened, once each
    shared = {u.title: u for u in slack.fake.files}
    for title in titles:
        upload = shared[title]
        assert (upload.channel_id, upload.thread_ts) == (m.message_channel, m.message_ts)  # the card's thread
        assert upload.filename.startswith("mig-1-") and upload.filename.endswith(".png")
        opens(upload)
    assert "Replication lag" in shared[titles[1]].alt_txt
    assert "Write freeze at the cutover: predicted against measured" in shared[titles[2]].alt_txt
    calls = [c.method for c in slack.fake.calls if c.method.startswith("files.")]
    assert calls.count("files.getUploadURLExternal") == calls.count("files.completeUploadExternal") == len(shared)

    # what the pictures are drawn from: kept in the store, every panel with both axes labelled
    kept = await slack.services.engine.store.samples("mig-1")
    assert {s.database for s in kept} == {"app"} and any(s.lag_bytes is not None for s in kept)
    fig = charts.figure(titles[2], kept, [])
    assert fig is not None and all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in fig.axes)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, target_cluster):
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    db = f"charts_{abs(hash(tmp_path)) % 10**8}"
    target_cluster.psql(f'CREATE DATABASE "{db}"')
    return target_cluster.dsn(db)


async def test_the_metrics_stay_bounded_and_survive_a_restart(store_url, monkeypatch):
    monkeypatch.setattr(metrics, "MAX_SAMPLES", 30)
    start = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    store = await Store.open(store_url)
    for n in range(100):
        tick = start + timedelta(seconds=n, microseconds=n % 2)  # a timestamp with and without microseconds
        await store.add_samples(
            "mig-7", [Sample("shop", tick, lag_bytes=n, apply_rate=2, wal_held=1 << 33, copied_bytes=n << 30)]
        )
    await store.close()

    reopened = await Store.open(store_url)
    kept = await reopened.samples("mig-7")
    assert len(kept) <= 30 and kept[0].lag_bytes == 0 and kept[-1].lag_bytes == 99
    assert [s.at for s in kept] == sorted(s.at for s in kept)
    assert kept[-1] == Sample(
        "shop", start + timedelta(seconds=99, microseconds=1), 99, None, 2.0, None, 1 << 33, None, 99 << 30
    )
    await reopened.close()


async def test_the_shell_writes_each_chart_to_a_file_of_its_own(tmp_path):
    said: list[str] = []
    directory = tmp_path / "work" / "charts"
    poster = ShellPoster(said.append, charts=directory)
    chart = Chart("mig-1", "../../etc/passwd $(x) shop", "mig-1: ready", b"\x89PNG picture", "alt")
    await poster.upload("shell", chart, thread_ts="1.0")
    await poster.upload("shell", chart, thread_ts="1.0")  # the same moment again: a second file, not over the first

    files = sorted(directory.iterdir())
    assert len(files) == 2 and all(f.read_bytes() == chart.png for f in files)
    assert all(f.name.startswith("mig-1-etc-passwd-x-shop-") and f.suffix == ".png" for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert sorted(said) == sorted(f"[#shell thread] 📈 mig-1: ready: {f}" for f in files)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked"
    os.symlink(elsewhere, linked)
    await ShellPoster(said.append, charts=linked).upload("shell", chart, thread_ts="1.0")
    assert "could not be saved" in said[-1] and not list(elsewhere.iterdir())
