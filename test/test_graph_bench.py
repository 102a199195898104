"""The graph benchmark's helpers against a real camera process: the rate sweep changes the camera's rate live."""

from __future__ import annotations

import pytest

from perception_nodes.graph_bench import camera, in_node_figures, rate_sweep, set_camera_rate
from perception_nodes.observer import GraphObserver
from perception_nodes.processes import stop_nodes

pytestmark = pytest.mark.ros


def test_set_camera_rate_changes_the_running_camera():
    observer = GraphObserver("test_graph_bench")
    observer.watch_latency("ground_truth/detections")  # published with every frame
    processes = camera(2.0)
    try:
        assert observer.spin_until(lambda: observer.latencies_ms, timeout=60)
        observer.latencies_ms.clear()
        observer.spin_for(2.0)
        slow = len(observer.latencies_ms)
        set_camera_rate(observer, 40.0)
        observer.spin_for(0.5)
        observer.latencies_ms.clear()
        observer.spin_for(2.0)
        assert slow <= 6 and len(observer.latencies_ms) >= 40  # 2 Hz, then 40 Hz (half of it tolerates load)
        with pytest.raises(RuntimeError, match="did not take rate"):
            set_camera_rate(observer, 1000.0)  # above the camera's declared range: refused
    finally:
        failures = stop_nodes(processes)
        observer.close()
    assert failures == []


def test_rate_sweep_counts_what_arrives_at_each_live_rate():
    """Watching the camera's own ground truth (no node, so no drops): every rate is served, in increasing order."""
    observer = GraphObserver("test_rate_sweep")
    observer.watch_latency("ground_truth/detections")
    processes = camera(5.0)
    try:
        assert observer.spin_until(lambda: observer.latencies_ms, timeout=60)
        sweep = rate_sweep(observer, [20.0, 5.0], seconds=2.0, label="test")
    finally:
        failures = stop_nodes(processes)
        observer.close()
    assert [r["rate"] for r in sweep["rate_sweep"]] == [5.0, 20.0] and sweep["max_fps_without_drops"] == 20.0
    assert failures == []


def test_python_ms_is_node_total_minus_in_node_infer():
    status = {"total_p50_ms": "12.5", "infer_p50_ms": "11.0", "decode_p50_ms": "0.1", "preprocess_p50_ms": "0.4",
              "postprocess_seg_p50_ms": "0.2", "postprocess_det_p50_ms": "0.2", "publish_p50_ms": "0.5"}
    figures = in_node_figures(status, bare_infer_ms=10.0)
    assert figures["python_ms_640x480"] == pytest.approx(1.5)
    assert figures["overhead_ratio"] == pytest.approx(1.25)
    assert figures["pre_post_ms_640x480"] == pytest.approx(0.9)
    assert figures["stage_p50_ms_640x480"]["publish"] == 0.5
