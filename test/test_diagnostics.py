"""The node's /diagnostics values without ROS: level and message per period, counters, rates, percentiles."""

from __future__ import annotations

import pytest

from perception_core.pipeline.diagnostics import OK, WARN, PipelineHealth, stage_timing_values
from perception_core.pipeline.scheduling import COUNTERS
from perception_core.pipeline.timing import StageTimer


def counts(**values) -> dict[str, int]:
    return {**dict.fromkeys(COUNTERS, 0), **values}


@pytest.fixture
def health():
    timer = StageTimer(("infer", "total"))
    for ms in range(1, 101):
        timer.record("infer", float(ms))
    return PipelineHealth("onnxruntime", "fp32", "multitask", (timer,))


def test_no_frames_yet_is_ok_and_says_it_waits(health):
    report = health.report({"camera": counts()}, 1.0)
    assert (report.level, report.message) == (OK, "waiting for images")
    assert report.values["fps_in"] == "0.00" and report.values["received"] == "0"


def test_a_clean_period_is_ok_with_rates_over_the_period(health):
    report = health.report({"camera": counts(received=30, processed=30)}, 2.0)
    assert (report.level, report.message) == (OK, "ok")
    assert (report.values["fps_in"], report.values["fps_out"]) == ("15.00", "15.00")
    assert {k: report.values[k] for k in ("engine", "precision", "model")} == {
        "engine": "onnxruntime", "precision": "fp32", "model": "multitask"}


def test_drops_malformed_and_failures_warn_for_their_period_only(health):
    health.report({"camera": counts(received=10, processed=10)}, 1.0)
    report = health.report({"camera": counts(received=20, processed=16, dropped=2, malformed=1, errors=1)}, 1.0,
                           last_error="camera: truncated data")
    assert report.level == WARN
    assert report.message == "2 dropped, 1 malformed, 1 failed in the last 1 s"
    assert report.values["dropped"] == "2" and report.values["last_error"] == "camera: truncated data"
    assert (report.values["fps_in"], report.values["fps_out"]) == ("10.00", "6.00")  # this period's change
    calm = health.report({"camera": counts(received=30, processed=26, dropped=2, malformed=1, errors=1)}, 1.0)
    assert calm.level == OK and calm.values["dropped"] == "2"  # totals stay, the warning does not


def test_per_camera_counters_appear_with_several_cameras(health):
    one = health.report({"camera": counts(received=1)}, 1.0)
    assert not any(k.startswith("camera_") for k in one.values)
    two = health.report({"front": counts(received=3, dropped=1, overlays=2), "rear": counts(received=2)}, 1.0)
    assert two.values["received"] == "5" and two.values["overlays"] == "2"
    assert (two.values["front_received"], two.values["front_dropped"], two.values["rear_received"]) == ("3", "1", "2")
    assert "front_overlays" not in two.values


def test_stage_percentiles_come_from_the_timers(health):
    values = health.report({"camera": counts()}, 1.0).values
    assert float(values["infer_p50_ms"]) == pytest.approx(50.5)
    assert float(values["infer_p99_ms"]) == pytest.approx(99.01)
    assert values["total_p50_ms"] == "nan"  # a stage with no samples yet


def test_stage_timing_values_per_frame():
    assert stage_timing_values({"decode": 0.12345, "total": 12.0}) == {"decode_ms": "0.1235", "total_ms": "12.0000"}
