"""The multitask perception node: one engine per frame -> segmentation mask + 2D detections.

Frames arrive on the executor thread and are only parked in a one-slot mailbox; a worker thread
runs the Pipeline on the newest parked frame. Under overload a newer frame replaces an
unprocessed one, so no queue grows and latency stays bounded; every replaced frame is counted
as a drop and reported. Inference releases the GIL, so receiving never waits for the engine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from perception_core.codec import ImageDecodeError
from perception_core.engines import ENGINES
from perception_core.pipeline.pipeline import Pipeline
from perception_core.pipeline.timing import StageTimer
from perception_core.resources import package_file
from perception_core.visualize import draw_overlay
from perception_nodes.conversions import (
    array_to_image_msg,
    class_mask_to_image_msg,
    detections_to_msg,
    label_info_msg,
    msg_to_encoded,
)
from perception_nodes.params import RELIABILITY_CHOICES, declare_params, param, qos_from_params
from perception_nodes.runner import run_node

# Reliable keep-last outputs match both reliable and best-effort subscribers (rviz, echo, bags).
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
NODE_STAGES = ("publish", "overlay", "total")
COUNTERS = ("received", "processed", "dropped", "malformed", "errors", "overlays")


@dataclass(frozen=True)
class MultitaskNodeParams:
    model: str = param("", "Path to an ONNX model with its .json sidecar; empty = bundled multitask.onnx.")
    engine: str = param("onnxruntime", "Inference engine.", choices=ENGINES)
    threads: int = param(2, "Intra-op threads of the engine.", range=(1, 64))
    providers: tuple = param(("cpu",), "ONNX Runtime execution providers in order of preference: cpu, cuda, "
                             "tensorrt or full names (e.g. CUDAExecutionProvider); engine onnxruntime only.")
    delegate: str = param("", "LiteRT delegate library (e.g. libedgetpu.so.1 for a Coral Edge TPU); engine litert "
                          "only; empty = XNNPACK on the CPU.")
    score_threshold: float = param(0.3, "Detections below this score are not published.", range=(0.0, 1.0),
                                   live=True)
    max_detections: int = param(100, "At most this many detections per frame (best first).", range=(0, 1000),
                                live=True)
    transport: str = param("raw", "Subscribe to 'image' (raw) or 'image/compressed'.", choices=("raw", "compressed"))
    reliability: str = param("best_effort", "Input QoS reliability (best_effort matches every camera).",
                             choices=RELIABILITY_CHOICES)
    depth: int = param(1, "Input QoS history depth; 1 keeps only the newest frame.", range=(1, 100))
    overlay: bool = param(True, "Draw the overlay topic while someone subscribes; false never draws it.", live=True)
    diagnostics_period: float = param(1.0, "Seconds between /diagnostics reports.", range=(0.1, 60.0), live=True)
    cameras: tuple = param(("",), "Camera namespaces served by the one engine, e.g. ['front', 'rear'] -> "
                           "front/image -> front/segmentation, ...; [''] = topics without a prefix.")


class CameraStream:
    """One camera's topics, its one-slot mailbox and its counters; topics live under ``prefix``."""

    def __init__(self, node: MultitaskNode, prefix: str) -> None:
        p = node.params
        topic = (lambda name: f"{prefix}/{name}") if prefix else (lambda name: name)
        self.name = prefix or "camera"
        self.seg_pub = node.create_publisher(Image, topic("segmentation"), OUTPUT_QOS)
        self.det_pub = node.create_publisher(Detection2DArray, topic("detections"), OUTPUT_QOS)
        self.label_pub = node.create_publisher(LabelInfo, topic("segmentation/label_info"), LATCHED_QOS)
        self.overlay_pub = node.create_publisher(Image, topic("overlay"), OUTPUT_QOS)
        self.publish_label_info(node.pipeline.seg_classes, p.score_threshold)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.mailbox = None  # (message, perf_counter at arrival) of the newest unprocessed frame
        msg_type, image = (Image, "image") if p.transport == "raw" else (CompressedImage, "image/compressed")
        self.sub = node.create_subscription(msg_type, topic(image), lambda msg: node.on_image(self, msg),
                                            qos_from_params(p.reliability, p.depth))

    def publish_label_info(self, seg_classes, score_threshold: float) -> None:
        """Latched: a late subscriber gets the class names and the threshold in force."""
        self.label_pub.publish(label_info_msg(seg_classes, Header(), score_threshold))


class MultitaskNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("multitask_perception", **node_options)
        self.params = p = declare_params(self, MultitaskNodeParams, on_change=self._apply_params)
        if len(set(p.cameras)) != len(p.cameras):
            raise ValueError(f"parameter 'cameras' lists a camera twice: {list(p.cameras)}")
        model_path = p.model or str(package_file("models", "multitask.onnx"))
        self.pipeline = Pipeline.from_model_files([model_path], engine=p.engine, threads=p.threads,
                                                  providers=p.providers, delegate=p.delegate or None,
                                                  score_threshold=p.score_threshold, max_detections=p.max_detections)
        self.node_timer = StageTimer(NODE_STAGES)
        self.timings_pub = self.create_publisher(DiagnosticStatus, "~/stage_timings", OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.last_error = ""
        self._wake = threading.Condition()
        self._running = True
        self.streams = [CameraStream(self, prefix) for prefix in p.cameras]
        self._next = 0  # round-robin start, so a busy camera cannot starve the others
        self.last_counts = self.counts
        self._worker = threading.Thread(target=self._work, name="pipeline", daemon=True)
        self._worker.start()
        self.diag_timer = self.create_timer(p.diagnostics_period, self.publish_diagnostics)
        self.get_logger().info(
            f"{self.pipeline.model_names} on {self.pipeline.engine_name} ({self.pipeline.precision}, "
            f"{p.threads} threads), input {self.pipeline.input_hw}; listening on "
            f"{', '.join(s.sub.topic_name for s in self.streams)}")

    def _apply_params(self, new: MultitaskNodeParams) -> None:
        """Live parameters: thresholds apply from the next frame, the report period from now."""
        old, self.params = self.params, new
        self.pipeline.score_threshold = new.score_threshold
        self.pipeline.max_detections = new.max_detections
        if new.diagnostics_period != old.diagnostics_period:
            self.diag_timer.timer_period_ns = int(new.diagnostics_period * 1e9)
        if new.score_threshold != old.score_threshold:
            for stream in self.streams:
                stream.publish_label_info(self.pipeline.seg_classes, new.score_threshold)

    @property
    def counts(self) -> dict[str, int]:
        """Counters summed over cameras."""
        return {k: sum(s.counts[k] for s in self.streams) for k in COUNTERS}

    def on_image(self, stream: CameraStream, msg) -> None:
        """Park the newest frame for the worker; a frame it never got to is a drop."""
        with self._wake:
            stream.counts["received"] += 1
            if stream.mailbox is not None:
                stream.counts["dropped"] += 1
            stream.mailbox = (msg, time.perf_counter())
            self._wake.notify()

    def _take_next(self):
        """The next camera with a parked frame, round robin; call with the lock held."""
        for offset in range(len(self.streams)):
            stream = self.streams[(self._next + offset) % len(self.streams)]
            if stream.mailbox is not None:
                self._next = (self._next + offset + 1) % len(self.streams)
                parked, stream.mailbox = stream.mailbox, None
                return stream, parked
        return None

    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: not self._running or any(s.mailbox is not None for s in self.streams))
                if not self._running:
                    return
                stream, (msg, received) = self._take_next()
            try:
                self.process(stream, msg, received)
            except Exception as exc:  # keep serving frames; the failure is counted and reported
                if not self.context.ok():  # Ctrl-C / shutdown while a frame was in flight
                    return
                stream.counts["errors"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(f"frame failed: {self.last_error}", throttle_duration_sec=5.0)

    def process(self, stream: CameraStream, msg, received: float) -> None:
        try:
            result = self.pipeline.run(msg_to_encoded(msg))
        except ImageDecodeError as exc:
            stream.counts["malformed"] += 1
            self.last_error = f"{stream.name}: {exc}"
            self.get_logger().warning(f"dropped a malformed frame from {stream.name}: {exc}",
                                      throttle_duration_sec=5.0)
            return
        t = self.node_timer.start()
        self.publish_outputs(stream, msg.header, result)
        t = self.node_timer.lap("publish", t)
        self.node_timer.record("total", (t - received) * 1e3)
        if self.params.overlay and stream.overlay_pub.get_subscription_count() > 0:
            self.publish_overlay(stream, msg.header, result)
            self.node_timer.lap("overlay", t)
        stream.counts["processed"] += 1
        self.publish_stage_timings(msg.header, result.timings_ms)

    def publish_outputs(self, stream: CameraStream, header: Header, result) -> None:
        if result.class_mask is not None:
            stream.seg_pub.publish(class_mask_to_image_msg(result.class_mask, header, len(self.pipeline.seg_classes)))
        if result.detections is not None:
            stream.det_pub.publish(detections_to_msg(result.detections, header, self.pipeline.det_classes))

    def publish_overlay(self, stream: CameraStream, header: Header, result) -> None:
        """Drawn after the outputs are out, so a viewer never delays them."""
        picture = draw_overlay(result.image, result.class_mask, result.detections, self.pipeline.seg_colors_bgr,
                               self.pipeline.det_classes)
        stream.overlay_pub.publish(array_to_image_msg(picture, "bgr8", header))
        stream.counts["overlays"] += 1

    def publish_stage_timings(self, header: Header, timings_ms: dict[str, float]) -> None:
        status = DiagnosticStatus(name=self.get_fully_qualified_name(), hardware_id=header.frame_id,
                                  message=f"{header.stamp.sec}.{header.stamp.nanosec:09d}")
        values = {**timings_ms, **self.node_timer.last_ms}
        status.values = [KeyValue(key=f"{k}_ms", value=f"{v:.4f}") for k, v in values.items()]
        self.timings_pub.publish(status)

    def publish_diagnostics(self) -> None:
        counts, period = self.counts, self.params.diagnostics_period
        delta = {k: counts[k] - self.last_counts[k] for k in counts}
        self.last_counts = counts
        level, message = DiagnosticStatus.OK, "ok"
        if delta["dropped"] or delta["malformed"] or delta["errors"]:
            level = DiagnosticStatus.WARN
            message = (f"{delta['dropped']} dropped, {delta['malformed']} malformed, {delta['errors']} failed "
                       f"in the last {period:g} s")
        elif not delta["received"]:
            message = "waiting for images"
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: pipeline", message=message,
                                  hardware_id=self.pipeline.engine_name)
        values = {"engine": self.pipeline.engine_name, "precision": self.pipeline.precision,
                  "model": self.pipeline.model_names, "fps_in": f"{delta['received'] / period:.2f}",
                  "fps_out": f"{delta['processed'] / period:.2f}", **{k: str(v) for k, v in counts.items()},
                  "last_error": self.last_error}
        if len(self.streams) > 1:
            for stream in self.streams:
                values.update({f"{stream.name}_{k}": str(v) for k, v in stream.counts.items() if k != "overlays"})
        summaries = {**self.pipeline.timer.summary(), **self.node_timer.summary()}
        for stage, s in summaries.items():
            values.update({f"{stage}_p50_ms": f"{s.p50_ms:.3f}", f"{stage}_p95_ms": f"{s.p95_ms:.3f}",
                           f"{stage}_p99_ms": f"{s.p99_ms:.3f}"})
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args=None) -> int:
    return run_node(MultitaskNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
