"""Wall time and peak memory of one method.

Memory is the peak, sampled every 0.1 s, of the summed RSS of every process this benchmark started for
the method (children, recursively). The benchmark's own process is left out, and so are the PostgreSQL
servers (they are daemons, not our children, and the same for every method). pgmig runs in a child
Python process for the same reason. Summed RSS counts shared pages once per process, so forking tools
look somewhat bigger than they are; very short spikes between samples are missed.

The peak RSS of the largest single process is kept too: for pgmig that is its Python process, where rows
and large objects pass through (bench/goals.py holds it under 200 MB). That one misses no spike: on Linux
each sample reads the kernel's high-water mark of the process (VmHWM in /proc/PID/status), so a peak
between samples is still seen at the next one (only one in a process's last 0.1 s could be missed).
Elsewhere it falls back to the sampled RSS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

INTERVAL = 0.1


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_bytes: int  # all processes of the method, summed
    peak_process_rss_bytes: int  # the largest single one


class RssSampler(threading.Thread):
    """Background thread tracking the peak summed RSS of this process's descendants."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.me = psutil.Process()
        self.peak = 0
        self.peak_process = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        total = 0
        for child in self.me.children(recursive=True):
            try:
                rss = child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += rss
            self.peak_process = max(self.peak_process, rss, _high_water_mark(child.pid))
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while not self._stop_event.wait(INTERVAL):
            self.sample()

    def stop(self) -> tuple[int, int]:
        self._stop_event.set()
        self.join()
        return self.peak, self.peak_process


def _high_water_mark(pid: int) -> int:
    """The process's peak RSS so far (Linux), 0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(work: Callable[[], float | None]) -> Measurement:
    """Time `work` with perf_counter and sample its processes' memory meanwhile. A `work` that times
    itself (returns seconds: what a user waits for, measured inside it) is reported by that time."""
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    timed = None
    try:
        timed = work()
    finally:
        seconds = time.perf_counter() - started
        peak, peak_process = sampler.stop()
    return Measurement(seconds if timed is None else timed, peak, peak_process)
