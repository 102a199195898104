"""Times every pipeline stage on its own, for several model configurations, on one fixed frame set.

Frames come from the simulator (``source: sim``) or are captured live from the camera topic
(``source: live``). Every configuration then sees the same frames, threads, warm-up and repeats
(perception_core.profiling). Prints a table, writes JSON/CSV/PNG to ``out_dir`` and exits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from perception_core.pipeline.pipeline import Pipeline
from perception_core.profiling import (
    FrameSet,
    bag_frames,
    format_table,
    profile_stages,
    simulator_frames,
    write_report,
)
from perception_nodes.conversions import msg_to_encoded
from perception_nodes.params import declare_params, param
from perception_nodes.ros_env import package_file
from perception_nodes.runner import run_node


@dataclass(frozen=True)
class StageProfilerParams:
    source: str = param("sim", "'sim' renders validation frames, 'live' captures them from the camera topic, "
                        "'bag' reads them from the rosbag2 bag at 'bag'.", choices=("sim", "live", "bag"))
    bag: str = param("", "Bag folder for source 'bag' (mcap or sqlite3).")
    frames: int = param(100, "Frames in the set.", range=(1, 10000))
    width: int = param(640, "Simulator frame width.", range=(16, 4096))
    height: int = param(480, "Simulator frame height.", range=(16, 4096))
    encoding: str = param("bgr8", "Simulator frame encoding.", choices=("bgr8", "jpeg"))
    transport: str = param("raw", "Live source: 'image' (raw) or 'image/compressed'.", choices=("raw", "compressed"))
    configurations: tuple = param(("multitask.onnx", "seg_only.onnx+det_only.onnx", "multitask_int8.onnx"),
                                 "Model sets to compare; '+' joins models that run on the same frame. "
                                 "Bare names are looked up in the package's models/.")
    threads: int = param(2, "Intra-op threads of every engine.", range=(1, 64))
    warmup: int = param(5, "Untimed frames per stage before timing.", range=(0, 1000))
    repeats: int = param(3, "Timed passes over the frame set.", range=(1, 1000))
    out_dir: str = param("stage_profile", "Where stage_timings.{json,csv,png} go.")


def resolve_model(name: str) -> str:
    return name if "/" in name else str(package_file("models", name))


class StageProfiler(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("stage_profiler", **node_options)
        self.params = p = declare_params(self, StageProfilerParams)
        self.pipelines = {"+".join(Path(m).stem for m in config.split("+")): Pipeline.from_model_files(
            [resolve_model(m) for m in config.split("+")], threads=p.threads) for config in p.configurations}
        self.captured = []
        if p.source == "live":
            msg_type, topic = (Image, "image") if p.transport == "raw" else (CompressedImage, "image/compressed")
            self.sub = self.create_subscription(msg_type, topic, self.on_image, qos_profile_sensor_data)
            self.get_logger().info(f"capturing {p.frames} frames from {self.sub.topic_name}")
        else:
            self.frames = (bag_frames(p.bag, p.frames) if p.source == "bag"
                           else simulator_frames(p.frames, p.width, p.height, p.encoding))
            self.timer = self.create_timer(0.01, self.run_once)

    def on_image(self, msg) -> None:
        if len(self.captured) < self.params.frames:
            self.captured.append(msg_to_encoded(msg))
            if len(self.captured) == self.params.frames:
                self.frames = FrameSet(self.captured, [None] * len(self.captured),
                                       f"{len(self.captured)} frames captured from {self.sub.topic_name}")
                self.destroy_subscription(self.sub)
                self.timer = self.create_timer(0.01, self.run_once)

    def run_once(self) -> None:
        self.timer.cancel()
        p = self.params
        self.get_logger().info(f"profiling {len(self.pipelines)} configurations on {self.frames.description}, "
                               f"{p.threads} threads, warm-up {p.warmup}, {p.repeats} repeats")
        results = {}
        for config, pipeline in self.pipelines.items():
            results[config] = profile_stages(pipeline, self.frames, p.warmup, p.repeats)
            self.get_logger().info(f"  {config}: total p50 {results[config]['total'].p50_ms:.2f} ms")
        print(format_table(results), flush=True)
        paths = write_report(results, Path(p.out_dir), f"stage timings: {self.frames.description}",
                             {"threads": p.threads, "warmup": p.warmup, "repeats": p.repeats})
        self.get_logger().info("wrote " + ", ".join(str(v) for v in paths.values()))
        self.context.try_shutdown()


def main(args=None) -> int:
    return run_node(StageProfiler, args)


if __name__ == "__main__":
    raise SystemExit(main())
