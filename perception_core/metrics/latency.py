"""Latency and rate over a sliding window (the monitors' view), summarised like every other timing."""

from __future__ import annotations

from collections import deque

from perception_core.pipeline.timing import LatencySummary, summarize_ms


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
