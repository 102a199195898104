"""StageTimer: always-on per-stage timing with ring buffers and percentiles.

Cheap enough to leave on in production (one ``perf_counter`` call and one array store per
stage, a few microseconds), so the numbers in diagnostics are the numbers of the real run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from perception_core.metrics.latency import LatencySummary, summarize_ms


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
