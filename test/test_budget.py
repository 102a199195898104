"""The latency budget's decisions on synthetic per-frame totals, with a synthetic clock (no ROS, no sleeps)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception_core.pipeline.budget import LatencyBudget, _p95, measure_cost_ratio
from perception_core.pipeline.diagnostics import PipelineHealth
from perception_core.pipeline.scheduling import COUNTERS

RATE_HZ = 30.0


class Feed:
    """Feeds a governor frames at RATE_HZ on a synthetic clock; keeps every switch with its frame time."""

    def __init__(self, governor: LatencyBudget) -> None:
        self.governor, self.now, self.switches = governor, 0.0, []

    def frames(self, seconds: float, cost) -> None:
        """``cost(on_fallback) -> ms``: what the model that runs now costs under the current load."""
        for _ in range(round(seconds * RATE_HZ)):
            switch = self.governor.observe(cost(self.governor.on_fallback), self.now)
            if switch is not None:
                self.switches.append(switch)
            self.now += 1 / RATE_HZ

    def times(self) -> list[tuple[bool, float]]:
        return [(s.to_fallback, round(s.at_s, 2)) for s in self.switches]


def load(primary_ms: float, fallback_ms: float, jitter: float = 0.0):
    """A steady load; ``jitter`` adds a deterministic +-jitter sawtooth (so windows have a spread)."""
    frame = [0]

    def cost(on_fallback: bool) -> float:
        frame[0] += 1
        base = fallback_ms if on_fallback else primary_ms
        return base + jitter * ((frame[0] % 7) / 3.0 - 1.0)
    return cost


def test_switches_down_when_p95_exceeds_the_budget_and_back_when_there_is_room():
    governor = LatencyBudget(12.0, cost_ratio=1.5, window=30, min_dwell_s=2.0)
    feed = Feed(governor)
    feed.frames(5.0, load(9.0, 6.0, jitter=0.5))  # fp32 9 ms under a 12 ms budget: stays
    assert feed.switches == [] and not governor.on_fallback
    hog_start = feed.now
    feed.frames(10.0, load(18.0, 10.0, jitter=0.5))  # a hog doubles the primary's cost
    assert [s.to_fallback for s in feed.switches] == [True]
    down = feed.switches[0]
    assert down.at_s - hog_start == pytest.approx(1 / RATE_HZ, abs=0.01)  # 2 slow frames of 30 are over p95
    assert down.p95_ms > 12.0 and "> budget 12.00 ms" in down.reason
    # under the hog the fallback's 10 ms x 1.5 = 15 ms predicted > 0.8 x 12: it stays down, no probing
    hog_stop = feed.now
    feed.frames(5.0, load(9.0, 5.5, jitter=0.5))  # p95 6 x 1.5 = 9 < 9.6: back, one window after the hog
    assert [s.to_fallback for s in feed.switches] == [True, False]
    up = feed.switches[1]
    assert 27 / RATE_HZ <= up.at_s - hog_stop <= 30 / RATE_HZ  # once (almost) all the window is hog-free
    assert "cost ratio 1.50" in up.reason and "< 0.8 x budget 12.00 ms" in up.reason
    assert governor.state().switches == 2 and not governor.state().on_fallback


def test_no_oscillation_at_the_boundary():
    """A primary just over the budget and a fallback whose prediction sits in the dead band: one switch, held."""
    governor = LatencyBudget(10.0, cost_ratio=1.5, window=30, min_dwell_s=1.0)
    feed = Feed(governor)
    # primary 10.2 ms (over), fallback 6.8 ms -> predicted 10.2 > 0.8 x 10 = 8: no way back
    feed.frames(60.0, load(10.2, 6.8, jitter=0.1))
    assert feed.times() == [(True, round(29 / RATE_HZ, 2))]  # the first full window
    # primary right at the budget, never over it: never switches
    calm = Feed(LatencyBudget(10.0, cost_ratio=1.5, window=30))
    calm.frames(60.0, load(9.9, 6.6, jitter=0.1))
    assert calm.switches == []


def test_dwell_holds_each_model_at_least_the_minimum():
    governor = LatencyBudget(10.0, cost_ratio=1.2, window=10, min_dwell_s=3.0, bounce_s=0.1)
    feed = Feed(governor)
    feed.frames(2.0, load(20.0, 5.0))  # over at once: down after one window (no dwell before the first switch)
    feed.frames(10.0, load(5.0, 5.0))  # room at once (5 x 1.2 < 8), but the fallback stays its 3 s
    assert [s.to_fallback for s in feed.switches] == [True, False]
    assert feed.switches[1].at_s - feed.switches[0].at_s == pytest.approx(3.0, abs=1.01 / RATE_HZ)
    feed.frames(10.0, load(20.0, 5.0))  # over again right after coming back: the primary also stays 3 s
    assert feed.switches[2].to_fallback
    assert feed.switches[2].at_s - feed.switches[1].at_s >= 3.0


def test_a_wrong_cost_ratio_bounces_with_growing_stays_in_the_fallback():
    """The hog slows the primary 3x but the fallback barely: a ratio measured at start (1.2) predicts room
    that is not there. Each bounce doubles the stay in the fallback: probes at 2, 4, 8, 16 s, not every window."""
    governor = LatencyBudget(10.0, cost_ratio=1.2, window=30, min_dwell_s=2.0, max_dwell_s=16.0, bounce_s=10.0)
    feed = Feed(governor)
    feed.frames(120.0, load(24.0, 6.0))  # fallback 6 x 1.2 = 7.2 < 8: it keeps trying the primary
    ups = [s.at_s for s in feed.switches if not s.to_fallback]
    downs = [s.at_s for s in feed.switches if s.to_fallback]
    stays = [up - down for down, up in zip(downs, ups)]
    assert [round(s) for s in stays[:5]] == [2, 4, 8, 16, 16]  # min_dwell, doubled per bounce, capped
    assert len(feed.switches) < 20  # a flip every 2 s windows would be ~60
    # a long stay on the primary forgets the bounces: the next stay in the fallback is the minimum again
    feed.frames(30.0, load(9.0, 6.0))
    assert not governor.on_fallback
    feed.frames(1.5, load(24.0, 6.0))
    feed.frames(10.0, load(9.0, 6.0))
    last_down, last_up = feed.switches[-2], feed.switches[-1]
    assert last_down.to_fallback and not last_up.to_fallback
    assert last_up.at_s - last_down.at_s == pytest.approx(2.0, abs=1.01 / RATE_HZ)


def test_the_budget_changes_live():
    governor = LatencyBudget(20.0, cost_ratio=1.5, window=30, min_dwell_s=1.0)
    feed = Feed(governor)
    feed.frames(3.0, load(12.0, 8.0))
    assert feed.switches == []
    governor.budget_ms = 10.0  # lowered under the primary's cost: down on the next frames
    feed.frames(3.0, load(12.0, 8.0))
    assert feed.times()[-1][0] is True and feed.switches[-1].budget_ms == 10.0
    governor.budget_ms = 16.0  # 8 x 1.5 = 12 < 12.8: back, once the dwell has passed
    feed.frames(3.0, load(12.0, 8.0))
    assert [s.to_fallback for s in feed.switches] == [True, False]
    governor.budget_ms = 14.0  # 12 < 14: the primary stays
    feed.frames(5.0, load(12.0, 8.0))
    assert len(feed.switches) == 2


def test_off_never_switches_and_turning_it_off_comes_back_at_once():
    off = Feed(LatencyBudget(0.0, cost_ratio=1.5))
    off.frames(10.0, load(50.0, 5.0))
    assert off.switches == [] and off.governor.state().window_p95_ms == pytest.approx(50.0)
    governor = LatencyBudget(10.0, cost_ratio=1.5, window=30, min_dwell_s=5.0)
    feed = Feed(governor)
    feed.frames(2.0, load(50.0, 20.0))
    assert governor.on_fallback
    governor.budget_ms = 0.0  # off: back on the next frame, dwell or not
    feed.frames(1 / RATE_HZ, load(50.0, 20.0))
    assert [s.to_fallback for s in feed.switches] == [True, False] and feed.switches[1].reason == "budget off"
    feed.frames(10.0, load(50.0, 20.0))
    assert len(feed.switches) == 2


def test_the_window_restarts_at_each_switch():
    governor = LatencyBudget(10.0, cost_ratio=1.5, window=5, min_dwell_s=0.01)
    assert math.isnan(governor.state().window_p95_ms)
    for i in range(5):
        switch = governor.observe(30.0, i * 0.1)
    assert switch is not None and switch.to_fallback and math.isnan(governor.state().window_p95_ms)
    # four cheap fallback frames are not a full window: no decision yet
    assert [governor.observe(1.0, 1 + i * 0.1) for i in range(4)] == [None] * 4
    assert governor.observe(1.0, 2.0) is not None


@pytest.mark.parametrize("kwargs", [dict(budget_ms=-1.0), dict(window=1), dict(margin=0.0), dict(margin=1.5),
                                    dict(min_dwell_s=0.0), dict(min_dwell_s=5.0, max_dwell_s=1.0),
                                    dict(cost_ratio=0.0)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        LatencyBudget(**{"budget_ms": 10.0, "cost_ratio": 1.5, **kwargs})


def test_a_fallback_no_cheaper_than_the_primary_is_predicted_at_its_own_cost():
    assert LatencyBudget(10.0, cost_ratio=0.7).cost_ratio == 1.0


@pytest.mark.parametrize("n", [1, 2, 7, 30, 31])
def test_the_window_p95_is_numpys(n):
    values = np.random.default_rng(n).exponential(10.0, n).tolist()
    assert _p95(values) == pytest.approx(float(np.percentile(values, 95)), rel=1e-12)


def test_cost_ratio_is_measured_side_by_side():
    """Alternated calls, medians: one slow outlier (a burst of other load) does not move the ratio."""
    clock, calls = [0.0], []

    def work(name: str, costs: list[float]):
        def run():
            calls.append(name)
            clock[0] += costs[len([c for c in calls if c == name]) - 1]
        return run

    primary = work("primary", [3.0, 3.0, 30.0, 3.0, 3.0, 3.0, 3.0])
    ratio = measure_cost_ratio(primary, work("fallback", [1.0] * 7), repeats=7, clock=lambda: clock[0])
    assert calls == ["primary", "fallback"] * 7  # alternated: both see the same load
    assert ratio == 3.0


def test_diagnostics_show_the_budget_and_the_model_that_runs():
    health = PipelineHealth("onnxruntime", "fp32", "multitask")
    governor = LatencyBudget(12.0, cost_ratio=1.4, window=3)
    for i in range(3):
        switch = governor.observe(20.0, float(i))
    assert switch.to_fallback
    health.set_identity("onnxruntime", "int8", "multitask_int8")
    governor.observe(7.0, 3.0)
    values = health.report({"camera": dict.fromkeys(COUNTERS, 0)}, 1.0, budget=governor.state()).values
    assert {k: values[k] for k in ("model", "precision", "budget_ms", "budget_running", "budget_switches",
                                   "budget_window_p95_ms", "budget_cost_ratio")} == {
        "model": "multitask_int8", "precision": "int8", "budget_ms": "12", "budget_running": "fallback",
        "budget_switches": "1", "budget_window_p95_ms": "7.000", "budget_cost_ratio": "1.400"}
    assert values["budget_last_switch"] == "p95 20.00 ms > budget 12.00 ms"
    without = health.report({"camera": dict.fromkeys(COUNTERS, 0)}, 1.0).values
    assert not any(k.startswith("budget_") for k in without)
