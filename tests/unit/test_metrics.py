"""The metrics behind the charts: bounded per series, thinned evenly over the whole migration with the averages
kept, kept across a restart; and the figure drawn from them, each panel with its axes labelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from migration_core.observe import charts
from migration_core.observe.charts import CutoverWindow
from migration_core.observe.progress import MigrationProgress
from migration_core.store import Store, metrics
from migration_core.store.metrics import Sample

START = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
RATE = 4096  # bytes a second the made-up copy moves


def sample(n: int, database: str = "shop", **numbers: float) -> Sample:
    """The n-th tick of a copy at RATE, one a second."""
    return Sample(database, START + timedelta(seconds=n), copied_bytes=n * RATE, copied_rows=n, **numbers)


@pytest.fixture
def small(monkeypatch):
    """A bound of 40 samples a series, so a test reaches it quickly."""
    monkeypatch.setattr(metrics, "MAX_SAMPLES", 40)
    return 40


async def test_a_series_stays_bounded_covering_its_whole_span_and_keeping_its_averages(tmp_path, small):
    store = await Store.open(str(tmp_path / "state.sqlite"))
    for n in range(500):
        await store.add_samples("mig-1", [sample(n)])
    kept = await store.samples("mig-1")
    ticks = [int((s.at - START).total_seconds()) for s in kept]
    assert len(kept) <= small
    assert ticks[0] == 0 and ticks[-1] == 499  # where it started and where it is
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    slice_ = 500 / (small // 2)
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) <= 3 * slice_  # no stretch of it lost
    # running totals: the rate between any two samples kept is still the copy's true rate
    assert {rate for _, rate in charts._throughput(kept)} == {RATE}

    for n in range(500, 505):  # the ticks after a thinning: every one
        await store.add_samples("mig-1", [sample(n)])
    assert [int((s.at - START).total_seconds()) for s in await store.samples("mig-1")][-6:] == list(range(499, 505))
    await store.close()


async def test_series_are_bounded_one_by_one_and_survive_a_restart(tmp_path, small):
    store = await Store.open(str(tmp_path / "state.sqlite"))
    for n in range(3 * small):
        await store.add_samples("mig-1", [sample(n, "shop"), sample(n, "pagila")])
    await store.add_samples("mig-2", [sample(n, "shop") for n in range(5)])
    await store.close()

    reopened = await Store.open(str(tmp_path / "state.sqlite"))
    kept = await reopened.samples("mig-1")
    shop = [s for s in kept if s.database == "shop"]
    assert 0 < len(shop) <= small and len([s for s in kept if s.database == "pagila"]) == len(shop)
    assert len(await reopened.samples("mig-2")) == 5  # another migration's series is its own
    assert shop[-1] == sample(3 * small - 1, "shop")  # every number as it was written
    await reopened.close()


def test_a_tick_keeps_each_database_that_has_begun():
    progress = MigrationProgress()
    shop = progress.of("shop")
    shop.begin("full load")
    shop.bytes_done, shop.rows_copied, shop.lag_bytes, shop.retained_bytes = 8192, 10, 300, 1 << 20
    progress.of("pagila")  # still pending: nothing to keep
    [kept] = charts.samples(progress, START)
    assert (kept.database, kept.at, kept.copied_bytes, kept.copied_rows, kept.lag_bytes, kept.wal_held) == (
        "shop",
        START,
        8192,
        10,
        300,
        1 << 20,
    )


def test_a_chart_keeps_where_each_phase_began_so_a_copy_shorter_than_a_tick_has_its_rate():
    progress = MigrationProgress()
    shop = progress.of("shop")
    shop.begin("full load")
    shop.started_at = START.timestamp()
    shop.bytes_done, shop.rows_copied = 5 * RATE, 5
    shop.finish("streaming")
    progress.of("pagila")  # not begun
    moment = START + timedelta(seconds=5)
    kept = charts.began(progress) + charts.samples(progress, moment)
    assert [(s.database, s.at, s.copied_bytes) for s in kept] == [("shop", START, 0), ("shop", moment, 5 * RATE)]
    assert charts._throughput(kept) == [(moment, RATE)]


def test_throughput_is_the_copys_only():
    """Bytes a phase marks done as it ends move no row: no copy; a restart of the totals: no rate at all."""
    verified = [
        sample(0),
        sample(4),
        Sample("shop", START + timedelta(seconds=5)),  # verifying: the totals start again
        Sample("shop", START + timedelta(seconds=9), copied_bytes=4 * RATE),  # verified: marked done, no row
    ]
    assert charts._throughput(verified) == [(START + timedelta(seconds=4), RATE), (START + timedelta(seconds=9), 0.0)]


def test_the_figure_labels_every_axis_and_names_are_only_text():
    streaming = {"lag_bytes": 3 << 20, "apply_rate": 2e5, "wal_rate": 1e5, "wal_held": 5 << 20, "wal_limit": 64 << 20}
    kept = [sample(n, name, **(streaming if n > 5 else {})) for n in range(12) for name in ("shop", "a$b$c")]
    windows = [CutoverWindow("a$b$c", {"fence": 0.02, "catch_up": 0.01, "counts": 0.04}, 0.06)]
    fig = charts.figure("mig-1: completed · onprem → azure", kept, windows)
    assert fig is not None
    labels = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    assert labels == [
        ("Replication lag", "time (UTC)", "lag (MB)"),
        ("Apply rate against the source's WAL rate", "time (UTC)", "rate (MB/min)"),
        ("WAL held by the slot on the source", "time (UTC)", "WAL held (MB)"),
        ("Copy throughput per database", "time (UTC)", "throughput (kB/s)"),
        ("Write freeze at the cutover: predicted against measured", "database", "writes unavailable (s)"),
    ]
    assert fig.get_suptitle() == "mig-1: completed · onprem → azure"
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == [r"a\$b\$c"]  # no math notation from a name
    png, panels = charts.picture("mig-1", kept, windows) or (b"", [])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and panels == [title for title, _, _ in labels]


def test_nothing_measured_draws_nothing():
    assert charts.figure("mig-1: full load done", [sample(0)], []) is None
    assert charts.figure("mig-1: full load done", [], []) is None
