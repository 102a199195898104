"""Times every pipeline stage on its own, for several model configurations, on one fixed frame set.

Frames come from a FrameSource, the simulator's validation split (``source: sim``) or a rosbag2
bag (``source: bag``), or are captured live from the camera topic (``source: live``). Every
configuration then sees the same frames, threads, warm-up and repeats (perception_core.profiling);
on labelled frames each configuration is also scored by the one evaluation path. Prints a table,
writes JSON/CSV/PNG to ``out_dir`` and exits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from perception_core.evaluation.evaluate import SCORE_FLOOR, evaluate
from perception_core.pipeline.pipeline import TOTAL, Pipeline
from perception_core.profiling import camera_payloads, format_table, profile_stages, write_stage_timings
from perception_core.resources import package_file
from perception_nodes.conversions import msg_to_encoded
from perception_nodes.params import declare_params, param
from perception_nodes.runner import run_node


@dataclass(frozen=True)
class StageProfilerParams:
    source: str = param("sim", "'sim' renders validation frames, 'live' captures them from the camera topic, "
                        "'bag' reads them from the rosbag2 bag at 'bag'.", choices=("sim", "live", "bag"))
    bag: str = param("", "Bag folder for source 'bag' (mcap or sqlite3).")
    frames: int = param(100, "Frames in the set.", range=(1, 10000))
    width: int = param(640, "Simulator frame width (other than 640x480: the render letterboxed to it).",
                       range=(16, 4096))
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
        # Every peak down to SCORE_FLOOR, so the same pipelines can be scored on labelled frames.
        self.pipelines = {"+".join(Path(m).stem for m in config.split("+")): Pipeline.from_model_files(
            [resolve_model(m) for m in config.split("+")], threads=p.threads, score_threshold=SCORE_FLOOR)
            for config in p.configurations}
        self.captured = []
        self.source = None
        if p.source == "live":
            msg_type, topic = (Image, "image") if p.transport == "raw" else (CompressedImage, "image/compressed")
            self.sub = self.create_subscription(msg_type, topic, self.on_image, qos_profile_sensor_data)
            self.get_logger().info(f"capturing {p.frames} frames from {self.sub.topic_name}")
            return
        if p.source == "bag":
            from perception_core.datasets.bag import BagSource

            self.source = BagSource(p.bag, next(iter(self.pipelines.values())).spec)
        else:
            from perception_core.datasets.simulator import CAMERA_HW, SimulatorSource

            hw = (p.height, p.width)
            self.source = SimulatorSource("validation", p.frames, None if hw == CAMERA_HW else hw)
        self.frames = camera_payloads(self.source, p.frames, p.encoding)
        self.description = f"{len(self.frames)} frames of {self.source.name}"
        self.timer = self.create_timer(0.01, self.run_once)

    def on_image(self, msg) -> None:
        if len(self.captured) < self.params.frames:
            self.captured.append(msg_to_encoded(msg))
            if len(self.captured) == self.params.frames:
                self.frames = self.captured
                self.description = f"{len(self.captured)} frames captured from {self.sub.topic_name}"
                self.destroy_subscription(self.sub)
                self.timer = self.create_timer(0.01, self.run_once)

    def run_once(self) -> None:
        self.timer.cancel()
        p = self.params
        self.get_logger().info(f"profiling {len(self.pipelines)} configurations on {self.description}, "
                               f"{p.threads} threads, warm-up {p.warmup}, {p.repeats} repeats")
        results, accuracy = {}, {}
        for config, pipeline in self.pipelines.items():
            results[config] = profile_stages(pipeline, self.frames, p.warmup, p.repeats)
            line = f"  {config}: total p50 {results[config][TOTAL].p50_ms:.2f} ms"
            if self.source is not None:  # the same frames, labelled
                scores = evaluate(pipeline, self.source, count=len(self.frames)).as_dict()
                accuracy[config] = {key: scores[key] for key in ("miou", "map50", "map50_95", "scored_frames")}
                line += f", mIoU {scores['miou']}, mAP50 {scores['map50']}"
            self.get_logger().info(line)
        print(format_table(results), flush=True)
        paths = write_stage_timings(results, Path(p.out_dir), f"stage timings: {self.description}",
                                    {"threads": p.threads, "warmup": p.warmup, "repeats": p.repeats,
                                     "score_threshold": SCORE_FLOOR, "accuracy": accuracy})
        self.get_logger().info("wrote " + ", ".join(str(v) for v in paths.values()))
        self.context.try_shutdown()


def main(args=None) -> int:
    return run_node(StageProfiler, args)


if __name__ == "__main__":
    raise SystemExit(main())
