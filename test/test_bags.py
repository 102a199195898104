"""rosbag2 bags: simulator recordings read back exactly, foreign bags evaluate, nothing is lost on the way."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, Writer

from model_fixtures import make_geometry_model
from perception_core.__main__ import main as cli
from perception_core.codec import decode_compressed, decode_image, encode_compressed
from perception_core.datasets.bag import BagSource, jazzy_typestore
from perception_core.evaluation import record
from perception_core.evaluation.bags import bgr_to_encoding, detections_message, header, image_message
from perception_core.evaluation.evaluate import evaluate, evaluation_pipelines
from perception_core.evaluation.record import record_simulation
from perception_core.pipeline.letterbox import letterbox_boxes, letterbox_transform
from perception_core.sim import VALIDATION_SEED, render_scene
from perception_core.sim.classes import SIM_SPEC

START_NS = 1_700_000_000 * 10**9
SMALL = {"width": 320, "height": 240}



def expected_stamps(count: int, rate: float = 30.0) -> list[int]:
    return [START_NS + round(i * 1e9 / rate) for i in range(count)]


def evaluate_bag(path, model_path, **options) -> dict:
    """What ``evaluate --bag`` computes: the model's pipeline on the bag, read in the model's classes."""
    pipeline = evaluation_pipelines([model_path])[model_path.name]
    return evaluate(pipeline, BagSource(path, pipeline.spec), **options).as_dict()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_a_recording_reads_back_as_the_simulator_rendered_it(tmp_path, storage, transport):
    path = record_simulation(tmp_path / "bag", 3, storage=storage, transport=transport, start_ns=START_NS,
                             progress=False, **SMALL)
    with Reader(path) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == {
            "/image" if transport == "raw" else "/image/compressed": 3, "/camera_info": 3,
            "/ground_truth/segmentation": 3, "/ground_truth/detections": 3}
        bag_times = sorted({timestamp for _, timestamp, _ in reader.messages()})
    assert bag_times == expected_stamps(3), "bag timestamps are the header stamps"
    source = BagSource(path, SIM_SPEC)
    assert source.storage == storage and len(source) == 3
    frames = list(source)
    assert [f.stamp_ns for f in frames] == expected_stamps(3)
    for index, frame in enumerate(frames):
        assert frame.tasks == {"segmentation", "detection"} and frame.key == f"bag/{index}"
        scene = render_scene(VALIDATION_SEED, index, **SMALL)
        image = decode_image(frame.image)
        if transport == "raw":
            assert np.array_equal(image, scene.frame.image)
        else:  # the JPEG the recorder wrote, and close to the raw frame despite the simulator's sensor noise
            assert np.array_equal(image, decode_compressed(encode_compressed(scene.frame.image, "jpeg", 90), "jpeg"))
            mse = np.mean((image.astype(np.float64) - scene.frame.image) ** 2)
            assert 10 * np.log10(255**2 / mse) > 30.0, "PSNR in dB"
        assert np.array_equal(frame.class_mask, scene.class_mask)
        assert frame.detections == scene.detections
    assert source.truth_errors == []


def node_built_message(topic: str, scene, stamp_ns: int):
    """What the synthetic camera (through perception_nodes.conversions) publishes on ``topic`` for ``scene``."""
    from std_msgs.msg import Header

    from perception_nodes.conversions import (
        array_to_image_msg,
        bgr_to_compressed_msg,
        class_mask_to_image_msg,
        detections_to_msg,
        ns_to_stamp,
    )
    from perception_nodes.synthetic_camera_node import camera_info_msg

    msg_header = Header(stamp=ns_to_stamp(stamp_ns), frame_id="camera")
    if topic == "/image":
        return array_to_image_msg(scene.frame.image, "bgr8", msg_header)
    if topic == "/image/compressed":
        return bgr_to_compressed_msg(scene.frame.image, msg_header)
    if topic == "/ground_truth/segmentation":
        return class_mask_to_image_msg(scene.class_mask, msg_header, SIM_SPEC.num_seg_classes)
    if topic == "/ground_truth/detections":
        return detections_to_msg(scene.detections, msg_header, SIM_SPEC.det_classes)
    info = camera_info_msg(scene.class_mask.shape[1], scene.class_mask.shape[0], 90.0)
    info.header = msg_header
    return info


@pytest.mark.ros
@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_cdr_from_rosbags_deserializes_in_rclpy_into_the_messages_the_nodes_build(tmp_path, transport):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    path = record_simulation(tmp_path / "bag", 2, transport=transport, start_ns=START_NS, progress=False, **SMALL)
    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
               "sensor_msgs/msg/CameraInfo": CameraInfo, "vision_msgs/msg/Detection2DArray": Detection2DArray}
    with Reader(path) as reader:
        messages = [(c.topic, t, deserialize_message(bytes(raw), classes[c.msgtype]))
                    for c, t, raw in reader.messages()]
    assert len(messages) == 8
    for topic, timestamp, msg in messages:
        scene = render_scene(VALIDATION_SEED, expected_stamps(2).index(timestamp), **SMALL)
        assert msg == node_built_message(topic, scene, timestamp), topic


FOREIGN = {
    "rgb8": {"encoding": "rgb8"},
    "bgra8": {"encoding": "bgra8"},
    "odd step": {"step_padding": 3},
    "mono8": {"encoding": "mono8"},
    "compressed": {"transport": "compressed"},
}


@pytest.fixture(scope="module")
def bgr8_reference(tmp_path_factory, geometry_model):
    path = record_simulation(tmp_path_factory.mktemp("bags") / "bgr8", 2, start_ns=START_NS, progress=False, **SMALL)
    return evaluate_bag(path, geometry_model)


@pytest.mark.parametrize("case", FOREIGN)
def test_foreign_encodings_evaluate_every_frame(tmp_path, geometry_model, bgr8_reference, case):
    path = record_simulation(tmp_path / "bag", 2, start_ns=START_NS, progress=False, **SMALL, **FOREIGN[case])
    results = evaluate_bag(path, geometry_model)
    assert (results["frames"], results["evaluated"], results["decode_errors"]) == (2, 2, 0)
    assert results["latency_ms"]["total"]["count"] == 2
    if case in ("rgb8", "bgra8", "odd step"):  # lossless: the network sees exactly the bgr8 frames
        assert results["miou"] == bgr8_reference["miou"]
    else:
        assert results["miou"] is not None and results["map50"] is not None


def test_a_1080p_frame_evaluates(tmp_path, geometry_model):
    path = record_simulation(tmp_path / "bag", 1, width=1920, height=1080, progress=False)
    results = evaluate_bag(path, geometry_model)
    assert (results["frames"], results["evaluated"], results["decode_errors"]) == (1, 1, 0)
    assert results["scored_frames"] == {"segmentation": 1, "detection": 1}


def write_robot_bag(path, images, topic="/camera/color/image_raw"):
    """A bag as a robot records it: one camera topic, no ground truth; ``images`` are rosbags messages."""
    store = jazzy_typestore()
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for index, msg in enumerate(images):
            writer.write(conn, START_NS + index, store.serialize_cdr(msg, conn.msgtype))
    return path


def test_a_bag_without_ground_truth_reports_latency_only(tmp_path, geometry_model):
    bgr = render_scene(VALIDATION_SEED, 0, **SMALL).frame.image
    images = [image_message(bgr_to_encoding(bgr, "rgb8"), "rgb8", header(0, "camera")) for _ in range(3)]
    path = write_robot_bag(tmp_path / "robot", images)  # unstamped camera: every header stamp is 0
    results = evaluate_bag(path, geometry_model)
    assert results["source"] == "robot (/camera/color/image_raw)"
    assert (results["frames"], results["evaluated"], results["decode_errors"]) == (3, 3, 0)
    assert results["miou"] is None and results["map50"] is None
    assert results["latency_ms"]["total"]["count"] == 3


def test_frames_that_fail_to_decode_are_counted_and_listed(tmp_path, geometry_model):
    bgr = render_scene(VALIDATION_SEED, 0, **SMALL).frame.image
    good = image_message(bgr, "bgr8", header(START_NS, "camera"))
    image_type = jazzy_typestore().types["sensor_msgs/msg/Image"]
    short_step = image_type(header=header(START_NS + 1, "camera"), height=good.height, width=good.width,
                            encoding="bgr8", is_bigendian=0, step=good.step - 1, data=good.data)
    unknown = image_type(header=header(START_NS + 2, "camera"), height=good.height, width=good.width,
                         encoding="yuv422", is_bigendian=0, step=good.step, data=good.data)
    path = write_robot_bag(tmp_path / "bad", [good, short_step, unknown], topic="/image")
    results = evaluate_bag(path, geometry_model)
    assert (results["frames"], results["evaluated"], results["decode_errors"]) == (3, 1, 2)
    assert [e["index"] for e in results["decode_error_examples"]] == [1, 2]
    assert "step" in results["decode_error_examples"][0]["error"]


def test_ground_truth_pairs_by_stamp_not_by_order(tmp_path):
    """Truth written before its image or missing for a frame still pairs right; no frame is lost."""
    store = jazzy_typestore()
    scenes = [render_scene(VALIDATION_SEED, i, **SMALL) for i in range(3)]
    with Writer(tmp_path / "bag", version=9) as writer:
        image_conn = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
        mask_conn = writer.add_connection("/cam/ground_truth/segmentation", "sensor_msgs/msg/Image", typestore=store)
        for index in (2, 0, 1):  # masks first and out of order
            msg = image_message(scenes[index].class_mask, "mono8", header(START_NS + index, "cam"))
            writer.write(mask_conn, START_NS, store.serialize_cdr(msg, mask_conn.msgtype))
        for index in range(3):
            msg = image_message(scenes[index].frame.image, "bgr8", header(START_NS + index, "cam"))
            writer.write(image_conn, START_NS + 10 + index, store.serialize_cdr(msg, image_conn.msgtype))
        writer.write(image_conn, START_NS + 20, store.serialize_cdr(  # a fourth frame without ground truth
            image_message(scenes[0].frame.image, "bgr8", header(START_NS + 3, "cam")), image_conn.msgtype))
    source = BagSource(tmp_path / "bag", SIM_SPEC)
    assert source.image_topic == "/cam/image" and set(source.truth_topics) == {"mask"}
    frames = list(source)
    assert [f.stamp_ns - START_NS for f in frames] == [0, 1, 2, 3]
    for index in range(3):
        assert np.array_equal(frames[index].class_mask, scenes[index].class_mask)
        assert frames[index].detections is None
    assert frames[3].class_mask is None and frames[3].tasks == frozenset()


def test_boxes_found_exactly_score_map50_one(tmp_path):
    """The detection path end to end: a model that returns the bag's boxes through the letterbox scores 1."""
    scene = render_scene(VALIDATION_SEED, 0)
    assert len(scene.detections)
    boxes = letterbox_boxes(scene.detections.xyxy, letterbox_transform((480, 640), (256, 320)))
    model = make_geometry_model(tmp_path, boxes=boxes.tolist(), scores=[0.9] * len(boxes),
                                classes=scene.detections.class_id.tolist())
    path = record_simulation(tmp_path / "bag", 1, progress=False)
    results = evaluate_bag(path, model)
    assert results["map50"] == pytest.approx(1.0)


def test_record_and_evaluate_commands_write_bag_json_and_report(tmp_path, geometry_model, capsys):
    bag = tmp_path / "sim"
    assert record.main(["--out", str(bag), "--frames", "3", "--storage", "sqlite3", "--width", "320",
                        "--height", "240"]) == 0
    assert "wrote 3 frames" in capsys.readouterr().out
    report, metrics = tmp_path / "report", tmp_path / "metrics.json"
    assert cli(["evaluate", "--bag", str(bag), "--model", str(geometry_model), "--json", str(metrics),
                "--report", str(report), "--overlays", "2"]) == 0
    results = json.loads(metrics.read_text())
    assert {"frames", "decode_errors", "truth_errors", "miou", "map50", "map50_95", "latency_ms"} <= set(results)
    assert results["frames"] == 3 and set(results["latency_ms"]) == {
        "decode", "preprocess", "infer", "postprocess_seg", "postprocess_det", "total"}
    assert results["source_info"]["storage"] == "sqlite3" and results["threads"] == 2
    assert json.loads((report / "evaluation.json").read_text()) == results
    files = {"report.md", "evaluation.json", "confusion.png", "pr_curves.png", "latency_histogram.png",
             "overlay_1.png", "overlay_2.png"}
    assert files == {f.name for f in report.iterdir()}
    text = (report / "report.md").read_text()
    assert all(name in text for name in files - {"report.md", "evaluation.json"})
    assert set(results["by_size"]) == {"<8px", "8-16px", "16-32px", "32-64px", ">=64px"} and "| 8-16px |" in text


def test_ground_truth_outside_the_spec_is_counted_not_fatal(tmp_path, geometry_model):
    """A box named outside the model's classes, a mask id beyond them: counted per frame, the frame still runs."""
    store = jazzy_typestore()
    scene = render_scene(VALIDATION_SEED, 0, **SMALL)
    mask = scene.class_mask.copy()
    mask[0, :4] = 255  # unlabelled pixels: the ignore label is fine
    bad_mask = scene.class_mask.copy()
    bad_mask[0, 0] = len(SIM_SPEC.seg_classes)
    truth = [(mask, detections_message(scene.detections, header(START_NS, "camera"), ("forklift",) * 3)),
             (bad_mask, detections_message(scene.detections, header(START_NS + 1, "camera"), SIM_SPEC.det_classes))]
    with Writer(tmp_path / "bag", version=9) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in (
            ("/image", "sensor_msgs/msg/Image"), ("/ground_truth/segmentation", "sensor_msgs/msg/Image"),
            ("/ground_truth/detections", "vision_msgs/msg/Detection2DArray"))}
        for index, (class_mask, dets) in enumerate(truth):
            stamp = header(START_NS + index, "camera")
            for topic, msg in (("/image", image_message(scene.frame.image, "bgr8", stamp)),
                               ("/ground_truth/segmentation", image_message(class_mask, "mono8", stamp)),
                               ("/ground_truth/detections", dets)):
                writer.write(conns[topic], START_NS + index, store.serialize_cdr(msg, conns[topic].msgtype))
    results = evaluate_bag(tmp_path / "bag", geometry_model)
    assert (results["frames"], results["evaluated"], results["truth_errors"]) == (2, 2, 2)
    assert results["scored_frames"] == {"segmentation": 1, "detection": 1}
    first, second = results["truth_error_examples"]
    assert first["key"] == "bag/0" and "forklift" in first["error"] and "detections" in first["error"]
    assert second["key"] == "bag/1" and "segmentation" in second["error"]


def test_a_spec_without_detection_classes_leaves_the_detection_topic_unread(tmp_path):
    path = record_simulation(tmp_path / "bag", 1, start_ns=START_NS, progress=False, **SMALL)
    source = BagSource(path, SIM_SPEC.relabeled(SIM_SPEC.seg_classes, ()))
    assert set(source.truth_topics) == {"mask"}
    (sample,) = list(source)
    assert sample.tasks == {"segmentation"} and source.truth_errors == []


def test_reading_part_of_a_bag(tmp_path, geometry_model):
    path = record_simulation(tmp_path / "bag", 3, start_ns=START_NS, progress=False, **SMALL)
    results = evaluate_bag(path, geometry_model, count=2)
    assert results["frames"] == 2 and results["latency_ms"]["total"]["count"] == 2
