"""The stage profiler as a process: same frames for every configuration, table + JSON/CSV/PNG, then exit."""

import json

import pytest

from perception_core.evaluation.record import record_simulation
from perception_core.pipeline.pipeline import STAGES, TOTAL
from perception_nodes.processes import NodeProcess

pytestmark = pytest.mark.ros
PROFILER = "perception_nodes.stage_profiler_node"



def read_report(out_dir):
    report = json.loads((out_dir / "stage_timings.json").read_text())
    assert (out_dir / "stage_timings.csv").read_text().startswith("configuration,stage")
    assert (out_dir / "stage_timings.png").stat().st_size > 1000
    return report


@pytest.mark.parametrize("source", ["sim", "bag"])
def test_offline_sources(tmp_path, geometry_model, source):
    model = geometry_model
    params = [f"configurations:=[{model}, {model}+{model}]", "frames:=4", "repeats:=2", "warmup:=1",
              f"out_dir:={tmp_path}", f"source:={source}"]
    if source == "bag":
        record_simulation(tmp_path / "bag", frames=4, progress=False)
        params.append(f"bag:={tmp_path / 'bag'}")
    code, output = NodeProcess(PROFILER, *params).run_to_exit()
    assert code == 0, output
    report = read_report(tmp_path)
    results = report["results"]
    assert set(results) == {"geometry", "geometry+geometry"}
    assert set(results["geometry"]) == {*STAGES, TOTAL}
    assert results["geometry"]["infer"]["count"] == 8  # 4 frames x 2 repeats, identical for each configuration
    assert "geometry+geometry" in output and "p50 ms" in output
    # the same frames scored by the evaluation path: both configurations run the same model
    accuracy = report["accuracy"]
    assert accuracy["geometry"]["scored_frames"] == {"segmentation": 4, "detection": 4}
    assert accuracy["geometry"]["miou"] == accuracy["geometry+geometry"]["miou"] > 0


def test_live_capture_from_the_camera(tmp_path, geometry_model):
    with NodeProcess("perception_nodes.synthetic_camera_node", "rate:=20.0", "loop_frames:=2"):
        code, output = NodeProcess(PROFILER, f"configurations:=[{geometry_model}]", "source:=live", "frames:=3",
                                   "repeats:=1", "warmup:=0", f"out_dir:={tmp_path}").run_to_exit(timeout=90)
    assert code == 0, output
    report = read_report(tmp_path)
    assert report["results"]["geometry"]["decode"]["count"] == 3 and report["accuracy"] == {}
    assert "captured from /image" in (tmp_path / "stage_timings.json").read_text()
