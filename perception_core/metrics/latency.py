"""Latency and rate over a sliding window: the numbers every timing report prints."""

from __future__ import annotations

from collections import deque
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


class LatencyWindow:
    """Keeps the latest ``capacity`` (arrival_s, latency_ms) samples; update / summary / reset."""

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._arrivals: deque[float] = deque(maxlen=capacity)
        self._latencies: deque[float] = deque(maxlen=capacity)

    def update(self, arrival_s: float, latency_ms: float) -> LatencyWindow:
        self._arrivals.append(arrival_s)
        self._latencies.append(latency_ms)
        return self

    def reset(self) -> None:
        self._arrivals.clear()
        self._latencies.clear()

    def summary(self) -> LatencySummary:
        """Percentiles of the window; rate from the span of arrivals inside it."""
        n = len(self._arrivals)
        span = self._arrivals[-1] - self._arrivals[0] if n > 1 else 0.0
        return summarize_ms(self._latencies, (n - 1) / span if span > 0 else 0.0)
