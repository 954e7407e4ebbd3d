"""Wall time and peak memory of one method.

Memory is the peak, sampled every 0.1 s, of the summed RSS of every process this benchmark started for
the method (children, recursively). The benchmark's own process is left out, and so are the PostgreSQL
servers (they are daemons, not our children, and the same for every method). pgmig runs in a child
Python process for the same reason. Summed RSS counts shared pages once per process, so forking tools
look somewhat bigger than they are; very short spikes between samples are missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

INTERVAL = 0.1


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_bytes: int


class RssSampler(threading.Thread):
    """Background thread tracking the peak summed RSS of this process's descendants."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.me = psutil.Process()
        self.peak = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        total = 0
        for child in self.me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while not self._stop_event.wait(INTERVAL):
            self.sample()

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def measure(work: Callable[[], None]) -> Measurement:
    """Time `work` with perf_counter and sample its processes' memory meanwhile."""
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    try:
        work()
    finally:
        seconds = time.perf_counter() - started
        peak = sampler.stop()
    return Measurement(seconds, peak)
