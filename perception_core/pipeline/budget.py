"""Latency budget: run a cheaper model while the node's p95 is over its budget, the primary when there is room.

:class:`LatencyBudget` is fed one number per frame, the node's total (arrival -> outputs published,
ms), with the time it was taken, and answers with a :class:`Switch` when the node should change
model. It is pure (the caller passes the clock), so synthetic latency sequences test it exactly.

The rule, with three kinds of hysteresis (a dead band, a dwell time, a back-off after a wrong
prediction) so that the node never flips at the boundary:

- **Window.** Decisions use the p95 of the last ``window`` frames of the model that runs now;
  the window is emptied at each switch, so no decision mixes the two models' frames.
- **Down** (primary -> fallback): the window's p95 > budget.
- **Up** (fallback -> primary): the fallback's p95 x ``cost_ratio`` (primary cost / fallback cost,
  measured side by side when the node starts: :func:`measure_cost_ratio`) is what the primary
  would cost now; the node goes back when that prediction < budget x ``margin`` (0.8): a primary
  predicted just under the budget stays off, the 20 % gap is the dead band.
- **Dwell.** Each model runs at least ``min_dwell_s`` before the node leaves it. If the
  prediction was wrong (the cost ratio under this load differs from the one measured at start)
  the primary comes back over the budget and the node switches down again within ``bounce_s``:
  a bounce. Each bounce doubles the stay in the fallback before the next try (up to
  ``max_dwell_s``), so a wrong ratio costs a short over-budget probe every 2, 4, 8 ... 32 s
  instead of a flip every window; a stay on the primary longer than ``bounce_s`` forgets them.
- **Off.** A budget of 0 switches back to the primary on the next frame and never leaves it.
  A new budget applies from the next frame, judged on the current window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Switch:
    """One decision: ``to_fallback`` (down) or back to the primary, at ``at_s``, and why."""

    to_fallback: bool
    at_s: float
    p95_ms: float  # the window p95 of the model that ran until now
    budget_ms: float
    reason: str  # e.g. "p95 14.20 ms > budget 12.00 ms"


@dataclass(frozen=True)
class BudgetState:
    """What /diagnostics shows of the governor."""

    budget_ms: float
    on_fallback: bool
    switches: int
    window_p95_ms: float  # nan until the window holds a frame of the model now running
    cost_ratio: float
    last_switch: str  # the latest Switch's reason, "" before the first


class LatencyBudget:
    """Decides, frame by frame, whether the primary or the fallback model runs (see the module docstring)."""

    def __init__(self, budget_ms: float, cost_ratio: float, *, window: int = 30, margin: float = 0.8,
                 min_dwell_s: float = 2.0, max_dwell_s: float = 32.0, bounce_s: float = 10.0) -> None:
        if budget_ms < 0 or window < 2 or not 0 < margin <= 1 or not 0 < min_dwell_s <= max_dwell_s:
            raise ValueError(f"need budget_ms >= 0, window >= 2, 0 < margin <= 1, 0 < min_dwell_s <= max_dwell_s; "
                             f"got {budget_ms}, {window}, {margin}, {min_dwell_s}, {max_dwell_s}")
        if not cost_ratio > 0:
            raise ValueError(f"cost_ratio must be > 0, got {cost_ratio}")
        self.budget_ms = float(budget_ms)
        # A fallback measured as dearer than the primary is still predicted to be no cheaper: a ratio
        # below 1 would call the primary back while the fallback itself is over the budget.
        self.cost_ratio = max(1.0, float(cost_ratio))
        self.margin, self.min_dwell_s, self.max_dwell_s, self.bounce_s = margin, min_dwell_s, max_dwell_s, bounce_s
        self.on_fallback = False
        self.switches = 0
        self.window_p95_ms = math.nan
        self.last_switch = ""
        self._window: deque[float] = deque(maxlen=window)
        self._switched_at = -math.inf
        self._up_at = -math.inf  # the latest switch back to the primary
        self._up_dwell_s = min_dwell_s  # the stay in the fallback before the next try; doubled per bounce

    def observe(self, total_ms: float, now_s: float) -> Optional[Switch]:
        """Add one frame's total; return the switch to make before the next frame, if any."""
        self._window.append(total_ms)
        self.window_p95_ms = p95 = _p95(self._window)
        budget = self.budget_ms
        if budget <= 0:
            return self._switch(False, now_s, p95, "budget off") if self.on_fallback else None
        if len(self._window) < self._window.maxlen:
            return None
        stayed = now_s - self._switched_at
        if not self.on_fallback:
            if p95 > budget and stayed >= self.min_dwell_s:
                bounce = now_s - self._up_at < self.bounce_s
                self._up_dwell_s = min(2 * self._up_dwell_s, self.max_dwell_s) if bounce else self.min_dwell_s
                return self._switch(True, now_s, p95, f"p95 {p95:.2f} ms > budget {budget:.2f} ms")
            return None
        predicted = p95 * self.cost_ratio
        if predicted < budget * self.margin and stayed >= self._up_dwell_s:
            self._up_at = now_s
            return self._switch(False, now_s, p95, f"p95 {p95:.2f} ms x cost ratio {self.cost_ratio:.2f} = "
                                                   f"{predicted:.2f} ms < {self.margin:g} x budget {budget:.2f} ms")
        return None

    def _switch(self, to_fallback: bool, now_s: float, p95: float, reason: str) -> Switch:
        self.on_fallback = to_fallback
        self.switches += 1
        self.last_switch = reason
        self._switched_at = now_s
        self._window.clear()
        self.window_p95_ms = math.nan
        return Switch(to_fallback, now_s, p95, self.budget_ms, reason)

    def state(self) -> BudgetState:
        """A consistent-enough snapshot for a report (plain attributes, readable from another thread)."""
        return BudgetState(self.budget_ms, self.on_fallback, self.switches, self.window_p95_ms, self.cost_ratio,
                           self.last_switch)


def _p95(values) -> float:
    """numpy's default (linear) 95th percentile in plain Python: ~3 us for 30 values, np.percentile ~90 us."""
    ordered = sorted(values)
    k = 0.95 * (len(ordered) - 1)
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def measure_cost_ratio(run_primary: Callable[[], object], run_fallback: Callable[[], object],
                       repeats: int = 10, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``run_primary`` / median of ``run_fallback``, called alternately (same load for both)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for samples, run in zip(times, (run_primary, run_fallback)):
            start = clock()
            run()
            samples.append(clock() - start)
    return float(np.median(times[0]) / np.median(times[1]))
