"""A fleet's bags on Ray: merged results equal one sequential pass, bad bags are named, nothing is lost.

Ray runs for real, locally: one local runtime started by the command (as `evaluate --bags` does on
a workstation), and one head started with `ray start` that the command joins by address (as on a
cluster). The model is the bundled, trained multitask model on ONNX Runtime. Every Ray run is the
real command in its own process: a Ray driver leaves threads behind in its process, and a later
test that forks this one (dataset check's worker pool) could then deadlock in the child.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perception_core.datasets.bag import BagSource, jazzy_typestore
from perception_core.datasets.source import ChainedSource
from perception_core.evaluation.bags import header, image_message
from perception_core.evaluation.evaluate import evaluate, evaluation_pipelines, merge_results
from perception_core.evaluation.fleet import INSTALL_HINT, FrameRange, find_bags
from perception_core.evaluation.record import record_simulation
from perception_core.resources import package_file

pytest.importorskip("ray")  # requirements/scale.txt: make setup installs it

MODEL = package_file("models", "multitask.onnx")
SMALL = {"width": 320, "height": 240}
START_NS = 1_700_000_000 * 10**9
RECORDINGS = {"robot_a": (5, 11), "robot_b": (7, 12), "robot_c": (4, 13)}  # name: (frames, seed)
NOT_COMPARED = {"latency_ms", "source", "seconds", "source_info"}  # timed, or said apart from the metrics


def record_with_a_corrupt_frame(path: Path) -> Path:
    """A 3-frame bag whose middle image's step is one byte short: a decode error, not a lost frame."""
    from rosbags.rosbag2 import Writer

    from perception_core.sim import VALIDATION_SEED, render_scene

    store = jazzy_typestore()
    good = [image_message(render_scene(VALIDATION_SEED, i, **SMALL).frame.image, "bgr8", header(START_NS + i, "cam"))
            for i in range(3)]
    short = good[1]
    good[1] = type(short)(header=short.header, height=short.height, width=short.width, encoding="bgr8",
                          is_bigendian=0, step=short.step - 1, data=short.data)
    with Writer(path, version=9) as writer:
        conn = writer.add_connection("/image", "sensor_msgs/msg/Image", typestore=store)
        for index, msg in enumerate(good):
            writer.write(conn, START_NS + index, store.serialize_cdr(msg, conn.msgtype))
    return path


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    """Three simulator recordings of different lengths, one bag with a corrupt frame, one that cannot be opened."""
    folder = tmp_path_factory.mktemp("fleet")
    for name, (frames, seed) in RECORDINGS.items():
        record_simulation(folder / name, frames, seed=seed, start_ns=START_NS, progress=False, **SMALL)
    record_with_a_corrupt_frame(folder / "robot_d")
    broken = folder / "robot_e"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")  # no files, no topics
    (folder / "notes.txt").write_text("not a bag")
    return folder


@pytest.fixture(scope="module")
def pipeline():
    return evaluation_pipelines([MODEL], threads=1)[MODEL.name]


def readable_bags(folder: Path) -> list[Path]:
    return [folder / name for name in (*RECORDINGS, "robot_d")]


def cli(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m perception_core ARGS`` in a fresh process (see the module's docstring)."""
    run = subprocess.run([sys.executable, "-m", "perception_core", *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    return run


def comparable(result: dict) -> dict:
    """A result's JSON form without what is timed or named per run."""
    return {k: v for k, v in json.loads(json.dumps(result)).items() if k not in NOT_COMPARED}


def test_find_bags_takes_a_folder_a_glob_or_one_bag(fleet_dir):
    names = lambda paths: [[p.name for p in part] for part in paths]  # noqa: E731
    assert names(find_bags(fleet_dir)) == [["robot_a", "robot_b", "robot_c", "robot_d", "robot_e"], ["notes.txt"]]
    assert names(find_bags(f"{fleet_dir}/robot_[ab]")) == [["robot_a", "robot_b"], []]
    assert names(find_bags(fleet_dir / "robot_c")) == [["robot_c"], []]
    with pytest.raises(FileNotFoundError, match="no rosbag2 bags"):
        find_bags(fleet_dir / "nothing*")


def test_merged_results_equal_one_pass_over_the_bags_in_sequence(fleet_dir, pipeline):
    """merge_results without Ray: the merge itself, frame for frame, against one FrameScorer over all frames."""
    bags = readable_bags(fleet_dir)
    per_bag = [evaluate(pipeline, BagSource(bag, pipeline.spec)) for bag in bags]
    merged = merge_results(per_bag, "merged")
    sequential = evaluate(pipeline, ChainedSource([BagSource(bag, pipeline.spec) for bag in bags]))
    assert comparable(merged.as_dict()) == comparable(sequential.as_dict())
    assert merged.frames == 19 and merged.evaluated == 18
    assert [e["index"] for e in merged.decode_errors] == [17]  # robot_d's second frame, after 5 + 7 + 4 frames
    np.testing.assert_array_equal(merged.segmentation.confusion, sequential.segmentation.confusion)
    # The equality means something: mAP is not the average of the bags' mAPs.
    labelled = [r.detection.map50 for r in per_bag if r.detection is not None]
    assert abs(np.mean(labelled) - merged.detection.map50) > 1e-6


def record_with_unknown_box_names(path: Path, frames: int, bad: set[int], class_names) -> Path:
    """A simulator recording with its boxes named ``class_names``, except in the frames ``bad``, where they name a
    class the model lacks: truth errors."""
    from rosbags.rosbag2 import Writer

    from perception_core.evaluation.bags import detections_message
    from perception_core.sim import VALIDATION_SEED, render_scene

    store = jazzy_typestore()
    with Writer(path, version=9) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in (
            ("/image", "sensor_msgs/msg/Image"), ("/ground_truth/detections", "vision_msgs/msg/Detection2DArray"))}
        for index in range(frames):
            scene, stamp = render_scene(VALIDATION_SEED, index, **SMALL), header(START_NS + index, "cam")
            names = ("forklift",) * len(class_names) if index in bad else class_names
            for topic, msg in (("/image", image_message(scene.frame.image, "bgr8", stamp)),
                               ("/ground_truth/detections", detections_message(scene.detections, stamp, names))):
                writer.write(conns[topic], START_NS + index, store.serialize_cdr(msg, conns[topic].msgtype))
    return path


@pytest.mark.parametrize("cuts", [(1,), (2, 3), (1, 2, 3)])
def test_chunks_of_a_bag_merge_into_the_bag(tmp_path, fleet_dir, pipeline, cuts):
    """Frame ranges cut anywhere, truth errors and decode errors included, merge into the whole bag's result."""
    named = record_with_unknown_box_names(tmp_path / "named", 4, {1, 3}, pipeline.spec.det_classes)
    bags = [named, fleet_dir / "robot_d"]
    for bag in bags:
        whole = evaluate(pipeline, BagSource(bag, pipeline.spec))
        bounds = [0, *(cut for cut in cuts if cut < whole.frames), whole.frames]
        parts = [evaluate(pipeline, FrameRange(BagSource(bag, pipeline.spec), start, stop))
                 for start, stop in zip(bounds, bounds[1:])]
        merged = merge_results(parts, whole.source)
        assert comparable(merged.as_dict()) == comparable(whole.as_dict()), (bag.name, cuts)
        assert merged.truth_errors == whole.truth_errors and merged.decode_errors == whole.decode_errors
    assert [e["key"] for e in whole.decode_errors] == ["robot_d/1"]
    truth_errors = evaluate(pipeline, BagSource(named, pipeline.spec)).truth_errors
    assert [e["key"] for e in truth_errors] == ["named/1", "named/3"]


def test_merging_results_of_different_pipelines_is_refused(fleet_dir, pipeline, geometry_model):
    other = evaluation_pipelines([geometry_model])[geometry_model.name]
    bag = fleet_dir / "robot_a"
    a = evaluate(pipeline, BagSource(bag, pipeline.spec))
    b = evaluate(other, BagSource(bag, other.spec))
    with pytest.raises(ValueError, match="different pipelines"):
        merge_results([a, b], "mixed")


@pytest.fixture(scope="module")
def fleet_run(fleet_dir, tmp_path_factory, pipeline):
    """``evaluate --bags DIR --workers 2 --chunk-frames 3 --json OUT`` once, on a local Ray runtime: bags of 3 to 7
    frames in chunks of 3, so that per-bag results are themselves merged from chunks."""
    folder = tmp_path_factory.mktemp("fleet_out")
    out = folder / "fleet.json"
    run = cli(["evaluate", "--bags", str(fleet_dir), "--workers", "2", "--chunk-frames", "3", "--json", str(out),
               "--report", str(folder / "report")])
    return run.returncode, json.loads(out.read_text()), folder / "report", run


def test_the_fleet_run_merges_exactly_what_one_process_computes(fleet_run, fleet_dir, pipeline):
    code, report, *_ = fleet_run
    sequential = evaluate(pipeline, ChainedSource([BagSource(bag, pipeline.spec) for bag in readable_bags(fleet_dir)]))
    assert comparable(report["merged"]) == comparable(sequential.as_dict())
    for bag in readable_bags(fleet_dir):
        alone = evaluate(pipeline, BagSource(bag, pipeline.spec)).as_dict()
        assert comparable(report["per_bag"][bag.name]) == comparable(alone), bag.name
    assert report["workers"] == 2 and report["threads_per_worker"] == 1 and report["ray_address"] == "local"
    assert report["per_bag"]["robot_a"]["source_info"]["image_topic"] == "/image"


def test_the_merged_result_gets_the_one_report(fleet_run):
    report_md = (fleet_run[2] / "report.md").read_text()
    assert "# Evaluation on 4 bags" in report_md and "confusion" in report_md.lower()


def test_a_bag_that_cannot_be_read_is_named_and_the_rest_go_on(fleet_run):
    code, report, *_ = fleet_run
    assert code == 1  # something failed: scripts see it
    assert [f["bag"].rsplit("/", 1)[-1] for f in report["failed_bags"]] == ["robot_e"]
    assert report["failed_bags"][0]["frames"] is None and report["failed_bags"][0]["error"]
    assert sorted(report["per_bag"]) == ["robot_a", "robot_b", "robot_c", "robot_d"]
    assert [Path(p).name for p in report["not_bags"]] == ["notes.txt"]  # skipped, but said


def test_every_frame_in_the_bags_is_evaluated_or_rejected(fleet_run):
    frames = fleet_run[1]["frames"]
    assert frames == {"in_bags": 19, "evaluated": 18, "rejected": 1, "decode_errors": 1, "in_failed_bags": 0}
    assert frames["evaluated"] + frames["rejected"] == frames["in_bags"]


def test_ray_start_and_shutdown_are_timed_apart_from_the_evaluation(fleet_run):
    timing = fleet_run[1]["timing_s"]
    assert set(timing) == {"plan", "ray_start", "actors_ready", "evaluate", "ray_shutdown", "merge"}
    assert all(value > 0 for value in timing.values())
    assert "ray: start" in fleet_run[3].stdout and "shutdown" in fleet_run[3].stdout


def test_the_progress_bar_counts_every_frame_across_workers(fleet_run):
    bar = fleet_run[3].stderr.replace("\r", "\n")
    assert "19/19" in bar  # every frame of the bags that opened (robot_e did not), from both workers


def test_without_ray_bags_says_how_to_install_it(tmp_path):
    """Ray hidden from the interpreter, as in an environment without requirements/scale.txt."""
    code = ("import sys; sys.modules['ray'] = None\n"
            "from perception_core.__main__ import main\n"
            f"sys.exit(main(['evaluate', '--bags', {str(tmp_path)!r}]))")
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert INSTALL_HINT in run.stderr and "Traceback" not in run.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_existing_cluster_is_joined_by_address_and_left_running(fleet_dir, tmp_path, pipeline):
    """A head started with `ray start` (a one-node cluster): the command ships the package, evaluates, and leaves."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # as the README says: the head, its nodes and the driver
    start = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2",
                            "--object-store-memory=100000000", "--include-dashboard=false", "--disable-usage-stats"],
                           capture_output=True, text=True, timeout=180, env=env)
    assert start.returncode == 0, start.stderr
    address = f"127.0.0.1:{port}"
    try:
        out = tmp_path / "cluster.json"
        run = cli(["evaluate", "--bags", f"{fleet_dir}/robot_[ab]", "--workers", "2", "--ray-address", address,
                   "--json", str(out)], env=env)
        assert run.returncode == 0, run.stderr[-4000:]
        report = json.loads(out.read_text())
        assert run.returncode == 0 and report["ray_address"] == address and not report["failed_bags"]
        bags = [fleet_dir / "robot_a", fleet_dir / "robot_b"]
        sequential = evaluate(pipeline, ChainedSource([BagSource(bag, pipeline.spec) for bag in bags]))
        assert comparable(report["merged"]) == comparable(sequential.as_dict())
        status = subprocess.run([ray_cli, "status", f"--address={address}"], capture_output=True, text=True,
                                timeout=120, env=env)
        assert status.returncode == 0, status.stderr  # the cluster outlives the command
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_the_fleet_projection_scales_the_measured_figures():
    from perception_core.fleet_bench import project

    read = {"frames_per_s": 600.0, "bytes_per_frame": 2**20}
    paper = project(per_worker_fps=30.0, read=read, merge_s_per_frame=0.01, result_bytes_per_frame=1024)
    assert paper["frames"] == 1000 * 3600 * 30 and paper["needed_frames_per_s"] == 3000
    assert paper["workers_needed"] == 100  # 3000 / 30
    assert paper["storage_read_mib_per_s"] == 3000 and paper["storage_read_per_worker_share"] == 0.05
    assert paper["merge_hours_one_process"] == 1000 * 3600 * 30 * 0.01 / 3600


def test_an_address_without_a_cluster_is_a_clear_error(fleet_dir):
    run = cli(["evaluate", "--bags", str(fleet_dir / "robot_a"), "--ray-address", "auto"])
    assert run.returncode == 2 and "Could not find any running Ray instance" in run.stderr
