"""The budget bench's bookkeeping on known series: phases, switch delays, the plot (the run itself is `make bench`)."""

from __future__ import annotations

import numpy as np
import pytest

from perception_nodes.budget_bench import phase_summaries, plot, switch_delays


def run(hog_s: float = 4.0) -> dict:
    times = np.arange(-2.0, hog_s + 3.0, 0.05)
    totals = np.where((times >= 0) & (times < hog_s), 30.0, 10.0)
    totals[(times >= 0.1) & (times < hog_s)] = 14.0  # on the fallback from 0.1 s
    return {"hog_s": hog_s, "series": {"t_s": times.tolist(), "total_ms": totals.tolist()},
            "switches": [{"at_s": -1.5, "to": "fallback"}, {"at_s": -1.0, "to": "primary"},
                         {"at_s": 0.1, "to": "fallback"}, {"at_s": hog_s + 0.8, "to": "primary"}]}


def test_phases_split_the_series_at_the_hog():
    r = run()
    phases = phase_summaries(np.array(r["series"]["t_s"]), np.array(r["series"]["total_ms"]), 2.0, 4.0, 3.0)
    assert phases["calm_before"]["frames"] == 40 and phases["calm_before"]["p95_ms"] == pytest.approx(10.0)
    assert phases["hog"]["frames"] == 80 and phases["hog"]["p50_ms"] == pytest.approx(14.0)
    assert phases["hog"]["p99_ms"] > 14.0  # the two frames before the switch
    assert phases["calm_after"]["frames"] == 60 and phases["calm_after"]["p50_ms"] == pytest.approx(10.0)


def test_switch_delays_count_from_the_hog_start_and_stop_not_from_earlier_switches():
    assert switch_delays(run()["switches"], 4.0) == (pytest.approx(0.1), pytest.approx(0.8))
    assert switch_delays([{"at_s": -1.5, "to": "fallback"}], 4.0) == (None, None)


def test_the_plot_is_written(tmp_path):
    path = tmp_path / "budget.png"
    plot(run(), run(), 12.0, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
