"""The results table (stdout) and bench/results/latest.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MB = 1024 * 1024
# Column names of the baselines a dataset's ratios are taken against (datasets.BASELINES).
SHORT = {"raw-pipe": "raw", "pgcopydb": "pgc", "single-stream": "one", "dump-restore": "dump"}
NAMES = {
    "raw-pipe": "raw COPY pipe",
    "pgcopydb": "pgcopydb",
    "single-stream": "single COPY | COPY stream",
    "dump-restore": "pg_dump | pg_restore",
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    dataset: str
    method: str
    label: str
    status: str  # "ok", "MISMATCH", "failed: …" or "unavailable: …"
    size_bytes: int
    seconds: float | None = None
    peak_rss_bytes: int | None = None  # all the method's processes, summed
    peak_process_rss_bytes: int | None = None  # its largest single process (pgmig: the Python process)
    details: list[str] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)  # every measured wall time; `seconds` is their median

    @property
    def measured(self) -> bool:
        return self.seconds is not None

    @property
    def mb_per_s(self) -> float | None:
        return self.size_bytes / MB / self.seconds if self.seconds else None

    @property
    def peak_rss_mb(self) -> float | None:
        return None if self.peak_rss_bytes is None else self.peak_rss_bytes / MB

    @property
    def peak_process_rss_mb(self) -> float | None:
        return None if self.peak_process_rss_bytes is None else self.peak_process_rss_bytes / MB


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value is not None and base else "–"


def legend(baselines: tuple[str, str] = ("raw-pipe", "pgcopydb")) -> str:
    return "ratios: this method / " + ", / ".join(f"{NAMES[m]} ({SHORT[m]})" for m in baselines)


def table(results: list[Result], baselines: tuple[str, str] = ("raw-pipe", "pgcopydb")) -> str:
    """One dataset's results; ratios are against its two baselines (by default the raw COPY pipe and
    pgcopydb) when those succeeded."""
    base = {r.method: r for r in results if r.method in baselines and r.status == "ok"}
    raw, pgc = base.get(baselines[0]), base.get(baselines[1])
    a, b = (SHORT[m] for m in baselines)
    header = (
        f"{'method':<32} {'wall s':>8} {'range s':>11} {'MB/s':>7} {'RSS MB':>7} {'t/' + a:>6} {'t/' + b:>6} "
        f"{'rss/' + a:>8} {'rss/' + b:>8}  check"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if not r.measured:
            lines.append(f"{r.label:<32} {r.status}")
            continue
        rss = r.peak_rss_mb
        spread = f"{min(r.runs):.2f}–{max(r.runs):.2f}" if len(r.runs) > 1 else ""
        lines.append(
            f"{r.label:<32} {r.seconds:>8.2f} {spread:>11} {r.mb_per_s:>7.1f} {rss:>7.1f} "
            f"{_ratio(r.seconds, raw and raw.seconds):>6} {_ratio(r.seconds, pgc and pgc.seconds):>6} "
            f"{_ratio(rss, raw and raw.peak_rss_mb):>8} {_ratio(rss, pgc and pgc.peak_rss_mb):>8}  {r.status}"
        )
        lines += [f"    {d}" for d in r.details]
    return "\n".join(lines)


def write_json(results: list[Result], meta: dict, path: Path = RESULTS_DIR / "latest.json") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            **asdict(r),
            "mb_per_s": r.mb_per_s,
            "peak_rss_mb": r.peak_rss_mb,
            "peak_process_rss_mb": r.peak_process_rss_mb,
        }
        for r in results
    ]
    path.write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
    return path
