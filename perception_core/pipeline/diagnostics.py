"""What the perception node reports on /diagnostics, computed without ROS: level, message, key/values.

Each report covers one period: the counters' change since the previous report sets the level
(any drop, malformed frame or failure warns) and the rates; the totals, the per-stage
percentiles, the engine and the last error travel as strings, the form DiagnosticStatus carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from perception_core.pipeline.budget import BudgetState

OK, WARN = "ok", "warn"


@dataclass(frozen=True)
class HealthReport:
    level: str  # OK or WARN
    message: str
    values: dict[str, str]


def percentile_values(summaries: Mapping) -> dict[str, str]:
    """``{stage}_p50_ms`` / ``_p95_ms`` / ``_p99_ms`` strings from stage -> LatencySummary."""
    values = {}
    for stage, s in summaries.items():
        values.update({f"{stage}_p50_ms": f"{s.p50_ms:.3f}", f"{stage}_p95_ms": f"{s.p95_ms:.3f}",
                       f"{stage}_p99_ms": f"{s.p99_ms:.3f}"})
    return values


def stage_timing_values(timings_ms: Mapping[str, float]) -> dict[str, str]:
    """One frame's stage times as ``{stage}_ms`` strings (the node's ~/stage_timings)."""
    return {f"{stage}_ms": f"{ms:.4f}" for stage, ms in timings_ms.items()}


def budget_values(state: BudgetState) -> dict[str, str]:
    """The latency budget's keys: budget, which model runs (primary|fallback), switches, window p95, cost ratio."""
    return {"budget_ms": f"{state.budget_ms:g}", "budget_running": "fallback" if state.on_fallback else "primary",
            "budget_switches": str(state.switches), "budget_window_p95_ms": f"{state.window_p95_ms:.3f}",
            "budget_cost_ratio": f"{state.cost_ratio:.3f}", "budget_last_switch": state.last_switch}


class PipelineHealth:
    """Turns counter snapshots into one HealthReport per period; remembers the previous snapshot.

    ``timers`` (StageTimers) give the per-stage percentiles, read at each report. ``engine``,
    ``precision`` and ``model`` name what runs now: :meth:`set_identity` changes them when a latency
    budget switches model.
    """

    def __init__(self, engine: str, precision: str, model: str, timers: Sequence = ()) -> None:
        self.identity = {"engine": engine, "precision": precision, "model": model}
        self.timers = tuple(timers)
        self._previous: dict[str, int] = {}

    def set_identity(self, engine: str, precision: str, model: str) -> None:
        """Called from the pipeline's thread: one reference swap, so a report never sees half of it."""
        self.identity = {"engine": engine, "precision": precision, "model": model}

    def report(self, per_camera: Mapping[str, Mapping[str, int]], period_s: float,
               last_error: str = "", budget: Optional[BudgetState] = None) -> HealthReport:
        """``per_camera``: camera name -> counters; per-camera keys appear only with several cameras.

        ``budget``: the latency budget's state, if the node runs one (budget_* keys).
        """
        totals = {k: sum(c[k] for c in per_camera.values()) for k in next(iter(per_camera.values()))}
        delta = {k: v - self._previous.get(k, 0) for k, v in totals.items()}
        self._previous = totals
        level, message = OK, "ok"
        if delta["dropped"] or delta["malformed"] or delta["errors"]:
            level = WARN
            message = (f"{delta['dropped']} dropped, {delta['malformed']} malformed, {delta['errors']} failed "
                       f"in the last {period_s:g} s")
        elif not delta["received"]:
            message = "waiting for images"
        values = {**self.identity, "fps_in": f"{delta['received'] / period_s:.2f}",
                  "fps_out": f"{delta['processed'] / period_s:.2f}", **{k: str(v) for k, v in totals.items()},
                  "last_error": last_error}
        if len(per_camera) > 1:
            for name, counts in per_camera.items():
                values.update({f"{name}_{k}": str(v) for k, v in counts.items() if k != "overlays"})
        for timer in self.timers:
            values.update(percentile_values(timer.summary()))
        if budget is not None:
            values.update(budget_values(budget))
        return HealthReport(level, message, values)

