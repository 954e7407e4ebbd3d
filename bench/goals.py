"""The goals pgmig is held to, as verdict lines under each dataset's table.

- Speed (onebig, reported only, never failing the run): pgmig's wall time ≤ 0.70× the single COPY | COPY
  stream's and ≤ 0.95× pgcopydb's (`--split-tables-larger-than` at the same split size).
- Memory (onebig and lobs, failing the run): pgmig's peak RSS < 200 MB while moving a big table or a
  1 GB large object. Measured on pgmig's largest process, its Python interpreter, which every row and
  large object passes through; the pg_dump/pg_restore it starts for the schema are in the table's RSS
  column, not in this goal (pg_restore -j N alone grows with N).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.report import MB, NAMES, Result

PGMIG = {"pgmig": "pgmig offline", "pgmig-online": "pgmig online"}
SPEED_GOALS = {"onebig": (("single-stream", 0.70), ("pgcopydb", 0.95))}
RSS_GOAL_DATASETS = ("onebig", "lobs")
RSS_LIMIT_MB = 200


@dataclass(frozen=True)
class Verdict:
    dataset: str
    text: str
    passed: bool | None  # None: not checked (a method did not run or did not succeed)
    binding: bool  # a failed binding goal makes the run's exit status non-zero

    @property
    def failed(self) -> bool:
        return self.binding and self.passed is False

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"{mark}  {self.text}" + ("" if self.binding else "  (speed goal: reported, not enforced)")


def verdicts(dataset: str, results: list[Result]) -> list[Verdict]:
    """Verdicts for one dataset's combined results (one Result per method)."""
    by_method = {r.method: r for r in results}
    out: list[Verdict] = []
    for method, name in PGMIG.items():
        r = by_method.get(method)
        if r is None:
            continue
        for base_method, factor in SPEED_GOALS.get(dataset, ()):
            out.append(_speed(dataset, name, r, by_method.get(base_method), base_method, factor))
        if dataset in RSS_GOAL_DATASETS:
            out.append(_memory(dataset, name, r))
    return out


def _speed(dataset: str, name: str, r: Result, base: Result | None, base_method: str, factor: float) -> Verdict:
    goal = f"{name} ≤ {factor:.2f}× {NAMES[base_method]}"
    if base is None:
        return Verdict(dataset, f"{goal}: {base_method} not run", None, False)
    for who in (r, base):
        if who.status != "ok" or who.seconds is None:
            return Verdict(dataset, f"{goal}: {who.method} {who.status.split(':')[0]}", None, False)
    ratio = r.seconds / base.seconds
    text = f"{goal}: {ratio:.2f}× ({r.seconds:.2f} s vs {base.seconds:.2f} s)"
    return Verdict(dataset, text, ratio <= factor, False)


def _memory(dataset: str, name: str, r: Result) -> Verdict:
    goal = f"{name} peak RSS < {RSS_LIMIT_MB} MB"
    if r.peak_process_rss_bytes is None:
        return Verdict(dataset, f"{goal}: not measured ({r.status.split(':')[0]})", None, True)
    mb = r.peak_process_rss_bytes / MB
    text = f"{goal}: {mb:.1f} MB (Python process; {r.peak_rss_mb:.1f} MB with the tools it started)"
    return Verdict(dataset, text, mb < RSS_LIMIT_MB, True)
