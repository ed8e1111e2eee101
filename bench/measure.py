"""Shared measuring for benchmarks: per-stage wall time and rate, ratio to a floor, peak memory."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StageTiming:
    """One measured stage: how many records in how many seconds."""

    name: str
    records: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Records per second (0 when nothing was timed)."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BenchReport:
    """Collects stages and floors and prints one table at the end."""

    title: str
    stages: dict[str, StageTiming] = field(default_factory=dict)
    floors: dict[str, StageTiming] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, records: int = 0, floor: bool = False) -> Iterator[StageTiming]:
        """Time a block; set ``.records`` on the yielded timing if the count is known only afterwards."""
        book = self.floors if floor else self.stages
        timing = book.setdefault(name, StageTiming(name))
        timing.records += records
        start = time.perf_counter()
        try:
            yield timing
        finally:
            timing.seconds += time.perf_counter() - start

    def print(self, ratios: dict[str, str] | None = None, out=sys.stdout) -> None:
        """Print records/s per stage, each floor, ratios stage/floor and peak memory."""
        ratios = ratios or {}
        print(f"\n== {self.title} ==", file=out)
        print(f"{'stage':<28}{'records':>12}{'seconds':>10}{'records/s':>14}{'vs floor':>10}", file=out)
        for t in self.stages.values():
            ratio = ""
            floor = self.floors.get(ratios.get(t.name, ""))
            if floor and floor.rate:
                ratio = f"{t.rate / floor.rate:.2f}"
            print(f"{t.name:<28}{t.records:>12,}{t.seconds:>10.2f}{t.rate:>14,.0f}{ratio:>10}", file=out)
        for t in self.floors.values():
            print(f"{'floor: ' + t.name:<28}{t.records:>12,}{t.seconds:>10.2f}{t.rate:>14,.0f}", file=out)
        print(f"peak memory (RSS): {peak_rss_mib():,.0f} MiB", file=out)
        for note in self.notes:
            print(note, file=out)
