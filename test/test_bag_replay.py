"""Bag replay through real processes: online evaluator metrics equal the offline bag evaluation.

``ros2 bag play --clock`` is not installable here, so a small player stands in for it: it reads
the bag's serialized messages with rosbags and publishes the bytes through rclpy, with /clock
from the bag timestamps. The multitask node (replay parameters) and the evaluator run as
processes with use_sim_time, exactly as replay.launch.xml starts them.
"""

from __future__ import annotations

import importlib
from itertools import groupby
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from graph_utils import spin_until
from model_fixtures import make_geometry_model
from perception_core.datasets.bag import BagSource
from perception_core.evaluation.evaluate import evaluate, evaluation_pipelines
from perception_core.evaluation.record import record_simulation
from perception_core.pipeline.letterbox import letterbox_boxes, letterbox_transform
from perception_core.sim import VALIDATION_SEED, render_scene
from perception_nodes.conversions import ns_to_stamp, stamp_to_ns
from perception_nodes.processes import NodeProcess

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = ROOT / "models" / "multitask.onnx"
FRAMES = 8
# Deep and reliable like `ros2 bag play`'s default, so no message is lost to the QoS.
PLAYER_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Topics the node and the evaluator subscribe to (camera_info is played but nobody listens here).
REPLAYED_TO_NODES = ("/image", "/ground_truth/segmentation", "/ground_truth/detections")
AGREEMENT = 1e-3  # the evaluator publishes its metrics with 4 decimals


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> sensor_msgs.msg.Image."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class BagPlayer:
    """``ros2 bag play --clock`` in miniature: one frame (all messages of one bag timestamp) at a time."""

    def __init__(self, node, bag_path: Path) -> None:
        with Reader(bag_path) as reader:
            self.publishers = {c.topic: node.create_publisher(message_class(c.msgtype), c.topic, PLAYER_QOS)
                               for c in reader.connections}
            messages = [(timestamp, c.topic, bytes(raw)) for c, timestamp, raw in reader.messages()]
        self.frames = [(timestamp, [(topic, raw) for _, topic, raw in group])
                       for timestamp, group in groupby(messages, key=lambda m: m[0])]
        self.clock_pub = node.create_publisher(Clock, "/clock", PLAYER_QOS)

    def publish_clock(self, timestamp_ns: int) -> None:
        self.clock_pub.publish(Clock(clock=ns_to_stamp(timestamp_ns)))

    def play_frame(self, timestamp_ns: int, messages: list[tuple[str, bytes]]) -> None:
        self.publish_clock(timestamp_ns)
        for topic, raw in messages:
            self.publishers[topic].publish(raw)  # rclpy publishes already-serialized CDR as is


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory):
    return record_simulation(tmp_path_factory.mktemp("replay") / "sim", FRAMES, progress=False)


def replay_and_collect_online_metrics(ros_peer, bag: Path, model: Path) -> dict[str, str]:
    """Play ``bag`` through the node and the evaluator; return the evaluator's accuracy status once all are scored."""
    node, executor = ros_peer
    outputs: dict[str, set[int]] = {"detections": set(), "segmentation": set()}
    node.create_subscription(Detection2DArray, "detections",
                             lambda m: outputs["detections"].add(stamp_to_ns(m.header.stamp)), 10)
    node.create_subscription(Image, "segmentation", lambda m: outputs["segmentation"].add(stamp_to_ns(m.header.stamp)),
                             10)
    accuracy: list[dict[str, str]] = []
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: accuracy.extend(
        {kv.key: kv.value for kv in s.values} for s in m.status if s.name == "evaluator: accuracy"), 10)
    player = BagPlayer(node, bag)
    multitask = NodeProcess("perception_nodes.multitask_node", f"model:={model}", "use_sim_time:=true",
                            params_file=ROOT / "config" / "multitask_node_replay.param.yaml")
    evaluator = NodeProcess("perception_nodes.evaluator_node", "use_sim_time:=true", "report_period:=0.5",
                            params_file=ROOT / "config" / "evaluator.param.yaml")
    with multitask, evaluator:
        ready = lambda: (all(player.publishers[t].get_subscription_count() >= 1 for t in REPLAYED_TO_NODES)  # noqa: E731
                         and player.clock_pub.get_subscription_count() >= 2
                         and all(node.count_subscribers(f"/{t}") >= 2 and node.count_publishers(f"/{t}") >= 1
                                 for t in outputs))
        assert spin_until(executor, ready, timeout=60), f"graph not ready:\n{multitask.cmd}"
        paired = lambda: int(accuracy[-1]["paired"]) if accuracy else 0  # noqa: E731
        for index, (timestamp, messages) in enumerate(player.frames):
            player.play_frame(timestamp, messages)  # paced: the next frame only once the node answered this one
            assert spin_until(executor, lambda t=timestamp: all(t in o for o in outputs.values()), timeout=30), \
                f"no outputs for the frame at {timestamp}"
            # The graph can show every endpoint before each publisher has matched each subscriber, so the
            # first frame may not reach the evaluator: play it again until the evaluator has scored it.
            for _ in range(5 if index == 0 else 0):
                if spin_until(executor, lambda: paired() >= 1, timeout=3):
                    break
                player.play_frame(timestamp, messages)
        # The bag's clock has stopped; the evaluator reports on a wall-clock timer all the same.
        spin_until(executor, lambda: paired() == len(player.frames), timeout=30)
    assert accuracy and int(accuracy[-1]["paired"]) == len(player.frames), (accuracy[-1:], evaluator.output[-2000:])
    return accuracy[-1]


def assert_online_equals_offline(ros_peer, bag: Path, model: Path) -> None:
    online = replay_and_collect_online_metrics(ros_peer, bag, model)
    pipeline = evaluation_pipelines([model])[model.name]
    offline = evaluate(pipeline, BagSource(bag, pipeline.spec)).as_dict()
    assert offline["frames"] == FRAMES and offline["decode_errors"] == 0
    assert int(online["unpaired"]) == 0 and int(online["malformed"]) == 0
    differences = {key: float(online[key]) - offline[key] for key in ("miou", "map50", "map50_95")}
    print(f"online - offline on {bag.name} with {model.name}: {differences} (offline {offline['miou']:.4f} mIoU, "
          f"{offline['map50']:.4f} mAP50)")
    assert all(abs(d) <= AGREEMENT for d in differences.values()), (online, offline)


def test_online_metrics_during_replay_equal_the_offline_evaluation(ros_peer, sim_bag, tmp_path):
    # A geometry model whose constant boxes are frame 0's objects: mAP is neither 0 nor 1, so it is compared.
    scene = render_scene(VALIDATION_SEED, 0)
    boxes = letterbox_boxes(scene.detections.xyxy, letterbox_transform((480, 640), (256, 320)))
    model = make_geometry_model(tmp_path, boxes=boxes.tolist(), scores=[0.9 - 0.1 * i for i in range(len(boxes))],
                                classes=scene.detections.class_id.tolist())
    assert_online_equals_offline(ros_peer, sim_bag, model)


@pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="models/multitask.onnx is not bundled yet (still training)")
def test_online_metrics_equal_offline_with_the_bundled_model(ros_peer, sim_bag):
    assert_online_equals_offline(ros_peer, sim_bag, BUNDLED_MODEL)
