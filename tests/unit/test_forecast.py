"""The predicted write freeze's arithmetic (observe/forecast.py), without servers."""

from __future__ import annotations

import pytest

from migration_core.flows.steps.cutover import WINDOW_STEPS
from migration_core.observe import forecast
from migration_core.observe.forecast import Measured, catch_up_seconds, fits_in, predict
from migration_core.observe.progress import DatabaseProgress
from migration_core.observe.slot_guard import windowed_rate
from migration_core.verify.continuous import Verification


def test_catch_up_is_the_lag_at_the_apply_rate_plus_the_fixed_cost():
    assert catch_up_seconds(0, None, 0.1) == 0.1
    assert catch_up_seconds(forecast.CAUGHT_UP_BYTES, 0.0, 0.1) == 0.1  # keepalive-sized lag: caught up
    assert catch_up_seconds(10 << 20, float(1 << 20), 0.1) == pytest.approx(10.1)
    assert catch_up_seconds(10 << 20, 0.0, 0.1) is None  # lag and nothing applied: no end in sight


def test_fits_in_follows_the_lags_trend():
    # 100 MB behind, applying 2 MB/s while the source writes 1 MB/s: 1 MB/s falling; 10 s spare hold 20 MB
    assert fits_in(100 << 20, 2.0 * (1 << 20), 1.0 * (1 << 20), 10.0) == pytest.approx(80.0)
    assert fits_in(100 << 20, 1.0 * (1 << 20), 2.0 * (1 << 20), 10.0) is None  # growing
    assert fits_in(1 << 20, 2.0 * (1 << 20), 0.0, 10.0) == 0.0  # fits already


def test_windowed_rate_keeps_the_last_window():
    samples, rate = windowed_rate([], 0.0, 0)
    assert rate is None
    samples, rate = windowed_rate(samples, 10.0, 1000)
    assert rate == 100.0
    samples, rate = windowed_rate(samples, 100.0, 10_000, window=60.0)
    assert samples == [(100.0, 10_000)] and rate is None  # older looks left the window


def measured(**kw) -> Measured:
    base = dict(source_trip=0.001, target_trip=0.001, source_connect=0.01, target_connect=0.01, confirm=0.15)
    return Measured(at=1.0, counts_seconds=0.2, counts_heap=1 << 20, heap_bytes=2 << 20, **{**base, **kw})


def test_predict_adds_the_measured_parts_and_says_where_each_comes_from():
    p = DatabaseProgress("shop", lag_bytes=0, apply_rate=None)
    w = predict(p, measured(sequences=10, parked=4, grantees=2), limit=0)
    assert w is not None and tuple(w.parts) == WINDOW_STEPS
    assert w.parts["counts"].seconds == pytest.approx(0.4)  # the timed counts, scaled by the tables' growth
    assert w.parts["sequences"].seconds == pytest.approx(0.012)
    assert w.seconds == pytest.approx(sum(x.seconds for x in w.parts.values()))
    assert "caught up" in w.words() and "10 sequences" in w.words() and w.fits_in is None


def test_predict_uses_an_earlier_cutover_and_says_when_it_fits():
    p = DatabaseProgress("shop", lag_bytes=100 << 20, apply_rate=2.0 * (1 << 20), wal_rate=1.0 * (1 << 20))
    f = measured(earlier=("mig-3", {"fence": 0.05, "catch_up": 0.2}))
    w = predict(p, f, limit=5.0)
    assert w is not None and w.parts["fence"].seconds == 0.05 and "mig-3" in w.parts["fence"].basis
    assert w.catch_up == pytest.approx(50.2)
    assert w.fits_in is not None and w.fits_in > 0
    assert forecast.trend(p) == "lag falling at 60.0 MB/min"
    assert predict(DatabaseProgress("shop", lag_bytes=100 << 20, apply_rate=0.0), f, 5.0) is None


def test_a_first_cutover_where_verification_runs_waits_for_the_fences_watermark_not_a_confirmed_commit():
    """Where continuous verification runs, the catch-up is the fence's watermark seen on the target: two
    logins and a few round trips, not the subscriber's confirmation after wal_writer_delay (a first cutover
    was predicted 0.28 s for 0.12 s seen)."""
    f = measured()
    plain = predict(DatabaseProgress("shop", lag_bytes=0), f, limit=0)
    verified = predict(DatabaseProgress("shop", lag_bytes=0, verification=Verification(schema="pgmig_x")), f, 0)
    assert plain is not None and verified is not None
    assert plain.catch_up == pytest.approx(0.02 + forecast.CATCH_UP_TRIPS * 0.001 + forecast.STORE_WRITE_SECONDS + 0.15)
    assert verified.catch_up == pytest.approx(0.02 + forecast.CATCH_UP_TRIPS * 0.001 + forecast.STORE_WRITE_SECONDS)
    assert "the fence's watermark seen on the target" in verified.parts["catch_up"].basis
