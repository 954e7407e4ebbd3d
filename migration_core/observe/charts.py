"""Pictures of a migration, for its thread at the moments people look (the full load done, ready for cutover,
completed, an alert raised): replication lag, the apply rate against the source's WAL rate, the WAL the slot
holds, the copy's throughput per database, and after a cutover its write freeze as predicted and as measured.

They are drawn from the samples every progress tick keeps in the state store (`samples`, `Store.add_samples`),
so a restart or another replica draws the whole story, with matplotlib's Agg backend: PNG bytes, no display.
matplotlib rather than a hand-made drawing: axes, date ticks, legends and PNG encoding are its daily work.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from migration_core.flows.steps.cutover import WINDOW_STEPS
from migration_core.observe.progress import MigrationProgress
from migration_core.state.models import Migration, StepKind
from migration_core.store.metrics import Sample

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from migration_core.store import Store

UNITS = (("B", 1), ("kB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40))
LABEL_CHARS = 40  # a database name in a legend or under a bar is cut here
ALT_CHARS = 1000  # Slack's limit for an image's alt text
# matplotlib's text machinery (its font cache above all) is not thread-safe: one drawing at a time
_DRAWING = threading.Lock()
Span = tuple[datetime, datetime] | None  # from the first sample kept to the last


@dataclass(frozen=True)
class Chart:
    """A migration's picture at one moment, with the words a screen reader or a terminal gets for it."""

    migration_id: str
    moment: str  # "ready for cutover", "slot alert", …
    title: str
    png: bytes
    alt: str

    @property
    def filename(self) -> str:
        """`mig-3-ready-for-cutover.png`: letters, digits and dashes only, whatever the words were."""
        return re.sub(r"[^a-z0-9]+", "-", f"{self.migration_id} {self.moment}".lower()).strip("-") + ".png"


@dataclass(frozen=True)
class CutoverWindow:
    """One database's write freeze at its cutover: measured part by part (WINDOW_STEPS), and as predicted."""

    database: str
    measured: dict[str, float]
    predicted: float | None


def samples(progress: MigrationProgress, when: datetime) -> list[Sample]:
    """What a progress tick keeps: each database that has begun, as its progress stands."""
    return [
        Sample(
            p.database,
            when,
            p.lag_bytes,
            p.lag_seconds,
            p.apply_rate,
            p.wal_rate,
            p.retained_bytes,
            p.wal_limit,
            p.bytes_done,
            p.rows_done,
        )
        for p in progress.databases.values()
        if p.phase != "pending"
    ]


def began(progress: MigrationProgress) -> list[Sample]:
    """Each database's current phase at its start, when nothing was copied yet: so a copy shorter than a tick
    still shows its rate (kept with the moment's sample when a chart is drawn)."""
    return [
        Sample(p.database, datetime.fromtimestamp(p.started_at, UTC))
        for p in progress.databases.values()
        if p.started_at is not None
    ]


def cutover_windows(facts: dict[str, Any]) -> list[CutoverWindow]:
    """The windows a cutover saved with its release (flows/cutover.py: `timings` and `predicted` per database)."""
    predicted = facts.get("predicted", {})
    return [
        CutoverWindow(db, {k: float(v) for k, v in timings.items() if k in WINDOW_STEPS}, predicted.get(db))
        for db, timings in facts.get("timings", {}).items()
    ]


async def draw(store: Store, m: Migration, moment: str) -> Chart | None:
    """The migration's chart now; None while there is nothing to draw (nothing measured yet)."""
    kept = await store.samples(m.id)
    release = await store.step(m.id, StepKind.RELEASE)
    windows = cutover_windows(release.data) if release is not None else []
    title = f"{m.id}: {moment} · {m.source} → {m.target}"
    drawn = await asyncio.to_thread(picture, title, kept, windows)
    if drawn is None:
        return None
    png, panels = drawn
    return Chart(m.id, moment, title, png, f"Charts of {title}: {'; '.join(panels)}"[:ALT_CHARS])


def picture(title: str, kept: list[Sample], windows: list[CutoverWindow]) -> tuple[bytes, list[str]] | None:
    """The PNG and the titles of its panels; None when no panel has data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with _DRAWING:
        fig = figure(title, kept, windows)
        if fig is None:
            return None
        out = io.BytesIO()
        FigureCanvasAgg(fig).print_png(out)
        return out.getvalue(), [ax.get_title() for ax in fig.axes]


def figure(title: str, kept: list[Sample], windows: list[CutoverWindow]) -> Figure | None:
    """One panel above the other for each thing there are numbers for; None when there are none.

    matplotlib is imported here, not with the module: it takes most of a second, which every `pgmig` start
    would pay otherwise."""
    from matplotlib.figure import Figure

    series: dict[str, list[Sample]] = {}
    for s in sorted(kept, key=lambda s: s.at):
        series.setdefault(s.database, []).append(s)
    copy = {db: _throughput(points) for db, points in series.items()}
    span = (min(s.at for s in kept), max(s.at for s in kept)) if kept else None  # every panel over time: the same
    panels: list[Callable[[Axes], None]] = []
    if any(s.lag_bytes is not None for s in kept):
        panels.append(lambda ax: _lag(ax, series, span))
    if any(s.apply_rate is not None or s.wal_rate is not None for s in kept):
        panels.append(lambda ax: _rates(ax, series, span))
    if any(s.wal_held is not None for s in kept):
        panels.append(lambda ax: _held(ax, series, span))
    if any(rate > 0 for points in copy.values() for _, rate in points):
        panels.append(lambda ax: _copy(ax, copy, span))
    if windows:
        panels.append(lambda ax: _windows(ax, windows))
    if not panels:
        return None
    fig = Figure(figsize=(10, 0.8 + 2.9 * len(panels)), layout="constrained", dpi=100)
    fig.suptitle(_plain(title))
    for ax, panel in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels, strict=True):
        panel(ax)
    return fig


def _lag(ax: Axes, series: dict[str, list[Sample]], span: Span) -> None:
    size, unit = _unit(max((s.lag_bytes or 0) for points in series.values() for s in points))
    for db, points in series.items():
        _line(ax, [(s.at, s.lag_bytes / size) for s in points if s.lag_bytes is not None], _label(db))
    _over_time(ax, "Replication lag", f"lag ({unit})", span)


def _rates(ax: Axes, series: dict[str, list[Sample]], span: Span) -> None:
    largest = max(max(s.apply_rate or 0, s.wal_rate or 0) for points in series.values() for s in points)
    size, unit = _unit(largest * 60)
    for db, points in series.items():
        applied = _line(
            ax, [(s.at, s.apply_rate * 60 / size) for s in points if s.apply_rate is not None], f"{_label(db)}: applied"
        )
        same = {"color": applied.get_color()} if applied is not None else {}
        _line(
            ax,
            [(s.at, s.wal_rate * 60 / size) for s in points if s.wal_rate is not None],
            f"{_label(db)}: the source's WAL",
            linestyle="--",
            **same,
        )
    _over_time(ax, "Apply rate against the source's WAL rate", f"rate ({unit}/min)", span)


def _held(ax: Axes, series: dict[str, list[Sample]], span: Span) -> None:
    limits = [s.wal_limit or 0 for points in series.values() for s in points]
    size, unit = _unit(max([s.wal_held or 0 for points in series.values() for s in points] + limits))
    for db, points in series.items():
        line = _line(ax, [(s.at, s.wal_held / size) for s in points if s.wal_held is not None], _label(db))
        limit = max((s.wal_limit or 0 for s in points), default=0)
        if line is not None and limit > 0:
            ax.axhline(
                limit / size,
                linestyle=":",
                color=line.get_color(),
                label=f"{_label(db)}: max_slot_wal_keep_size",
            )
    _over_time(ax, "WAL held by the slot on the source", f"WAL held ({unit})", span)


def _copy(ax: Axes, copy: dict[str, list[tuple[datetime, float]]], span: Span) -> None:
    size, unit = _unit(max(rate for points in copy.values() for _, rate in points))
    for db, points in copy.items():
        _line(ax, [(when, rate / size) for when, rate in points], _label(db), drawstyle="steps-pre")
    _over_time(ax, "Copy throughput per database", f"throughput ({unit}/s)", span)


def _windows(ax: Axes, windows: list[CutoverWindow]) -> None:
    """Per database, the measured window stacked by part beside the predicted one."""
    import matplotlib as mpl

    colors = mpl.color_sequences["tab10"]
    for i, w in enumerate(windows):
        bottom = 0.0
        for n, part in enumerate(WINDOW_STEPS):
            seconds = w.measured.get(part, 0.0)
            label = f"measured: {part.replace('_', '-')}" if i == 0 else None
            ax.bar(i - 0.2, seconds, 0.4, bottom=bottom, color=colors[n % len(colors)], label=label)
            bottom += seconds
        if w.predicted is not None:
            label = "predicted" if not any(x.predicted is not None for x in windows[:i]) else None
            ax.bar(i + 0.2, w.predicted, 0.4, color="lightgray", edgecolor="dimgray", hatch="//", label=label)
    ax.set_xticks(range(len(windows)), [_label(w.database) for w in windows])
    ax.set_title("Write freeze at the cutover: predicted against measured")
    ax.set_xlabel("database")
    ax.set_ylabel("writes unavailable (s)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _throughput(points: list[Sample]) -> list[tuple[datetime, float]]:
    """Bytes a second the copy moved between each two samples, counted where rows moved too (a phase that ends
    marks its bytes done, moving no row: no copy); none across a restart of the running totals."""
    rates = []
    for before, after in zip(points, points[1:], strict=False):
        seconds = (after.at - before.at).total_seconds()
        moved, rows = after.copied_bytes - before.copied_bytes, after.copied_rows - before.copied_rows
        if seconds > 0 and moved >= 0 and rows >= 0:
            rates.append((after.at, moved / seconds if rows else 0.0))
    return rates


def _line(ax: Axes, points: list[tuple[datetime, float]], label: str = "", **style: Any) -> Line2D | None:
    """A series drawn (None when it has no point): dots too, so a series of one sample shows."""
    if not points:
        return None
    xs, ys = zip(*points, strict=True)
    (line,) = ax.plot(xs, ys, marker="." if len(points) < 30 else None, label=label or None, **style)
    return line


def _over_time(ax: Axes, title: str, ylabel: str, span: Span) -> None:
    from matplotlib import dates

    ax.set_title(title)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(ylabel)
    ticks = dates.AutoDateLocator(tz=UTC)  # seconds for a test run, days for a long migration
    ax.xaxis.set_major_locator(ticks)
    ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(ticks, tz=UTC))
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    if span is not None and span[0] < span[1]:
        ax.set_xlim(dates.date2num(span[0]), dates.date2num(span[1]))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")


def _unit(largest: float) -> tuple[int, str]:
    """The largest unit the biggest value is at least one of."""
    size, name = UNITS[0][1], UNITS[0][0]
    for unit, factor in UNITS:
        if largest >= factor:
            size, name = factor, unit
    return size, name


def _label(name: str) -> str:
    return _plain(name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…")


def _plain(text: str) -> str:
    """Names are data: a `$` would start matplotlib's math notation (and a bad formula fails the drawing)."""
    return text.replace("$", r"\$")
