"""StageTimer: always-on per-stage timing with ring buffers, and the one percentile summary (summarize_ms).

Cheap enough to leave on in production (one ``perf_counter`` call and one array store per
stage, a few microseconds), so the numbers in diagnostics are the numbers of the real run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles in milliseconds over the window, plus the event rate."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rate_hz: float

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms,
                "max_ms": self.max_ms, "rate_hz": self.rate_hz}


def summarize_ms(samples_ms, rate_hz: float = 0.0) -> LatencySummary:
    """Percentiles of ``samples_ms``; ``rate_hz`` is passed through (0 when the caller has no rate)."""
    values = np.asarray(samples_ms, np.float64)
    if values.size == 0:
        return LatencySummary(0, float("nan"), float("nan"), float("nan"), float("nan"), 0.0)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return LatencySummary(int(values.size), float(p50), float(p95), float(p99), float(values.max()), float(rate_hz))


class StageTimer:
    """Times named stages frame after frame: ``t = timer.start(); ...; t = timer.lap("decode", t)``."""

    def __init__(self, stages: Sequence[str], capacity: int = 1000) -> None:
        if not stages or len(set(stages)) != len(stages):
            raise ValueError(f"stages must be distinct names, got {list(stages)}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.stages = tuple(stages)
        self._index = {name: i for i, name in enumerate(self.stages)}
        self._samples = np.zeros((len(self.stages), capacity), np.float64)
        self._counts = np.zeros(len(self.stages), np.int64)
        self.last_ms = dict.fromkeys(self.stages, 0.0)

    @staticmethod
    def start() -> float:
        return time.perf_counter()

    def lap(self, stage: str, since: float) -> float:
        """Record the time from ``since`` to now under ``stage``; return now for the next stage."""
        now = time.perf_counter()
        self.record(stage, (now - since) * 1e3)
        return now

    def record(self, stage: str, ms: float) -> None:
        i = self._index[stage]
        self._samples[i, self._counts[i] % self._samples.shape[1]] = ms
        self._counts[i] += 1
        self.last_ms[stage] = ms

    def count(self, stage: str) -> int:
        return int(self._counts[self._index[stage]])

    def samples(self, stage: str) -> np.ndarray:
        """The stage's retained samples in ms (oldest order not guaranteed)."""
        i = self._index[stage]
        return self._samples[i, :min(self._counts[i], self._samples.shape[1])].copy()

    def summary(self) -> dict[str, LatencySummary]:
        return {name: summarize_ms(self.samples(name)) for name in self.stages}

    def reset(self) -> None:
        self._counts[:] = 0
