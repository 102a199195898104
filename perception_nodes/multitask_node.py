"""The multitask perception node: one engine per frame -> segmentation mask + 2D detections.

ROS glue only: frames wait in perception_core.pipeline.scheduling's one-slot mailboxes (newest wins,
drops counted), /diagnostics carries perception_core.pipeline.diagnostics' report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from perception_core.codec import ImageDecodeError
from perception_core.engines import ENGINES
from perception_core.pipeline.budget import LatencyBudget, measure_cost_ratio
from perception_core.pipeline.diagnostics import PipelineHealth, stage_timing_values
from perception_core.pipeline.letterbox import PAD_VALUE
from perception_core.pipeline.pipeline import Pipeline
from perception_core.pipeline.scheduling import MailboxScheduler, Parcel
from perception_core.pipeline.timing import StageTimer
from perception_core.resources import package_file
from perception_core.visualize import draw_overlay
from perception_nodes import conversions as conv
from perception_nodes.params import RELIABILITY_CHOICES, declare_params, param, qos_from_params
from perception_nodes.runner import run_node

# Reliable keep-last outputs match both reliable and best-effort subscribers (rviz, echo, bags).
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The latency budget's default fallback per engine: the bundled int8 model in the form that engine runs.
FALLBACK_MODELS = {"onnxruntime": "multitask_int8.onnx", "tensorrt": "multitask_int8_trt.onnx",
                   "litert": "multitask_int8.tflite"}
# The bundled model that `precision` picks when `model` is empty, per engine.
BUNDLED_MODELS = {"fp32": {"onnxruntime": "multitask.onnx", "tensorrt": "multitask.onnx", "litert": "multitask.tflite"},
                  "int8": FALLBACK_MODELS}


@dataclass(frozen=True)
class MultitaskNodeParams:
    model: str = param("", "Path to an ONNX model with its .json sidecar; empty = the bundled model of precision.")
    engine: str = param("onnxruntime", "Inference engine.", choices=ENGINES)
    precision: str = param("fp32", "Which bundled model runs when model is empty: fp32 = multitask.onnx (.tflite on "
                           "litert), int8 = the INT8 model in the engine's form; ignored when model is set.",
                           choices=tuple(BUNDLED_MODELS))
    threads: int = param(2, "Intra-op threads of the engine.", range=(1, 64))
    providers: tuple = param(("cpu",), "ONNX Runtime execution providers in order of preference: cpu, cuda, "
                             "tensorrt or full names (e.g. CUDAExecutionProvider); engine onnxruntime only.")
    delegate: str = param("", "LiteRT delegate library (e.g. libedgetpu.so.1 for a Coral Edge TPU); engine litert "
                          "only; empty = XNNPACK on the CPU.")
    score_threshold: float = param(0.3, "Detections below this score are not published.", range=(0, 1.0), live=True)
    max_detections: int = param(100, "At most this many detections per frame, best first.", range=(0, 1000), live=True)
    transport: str = param("raw", "Subscribe to 'image' (raw) or 'image/compressed'.", choices=("raw", "compressed"))
    reliability: str = param("best_effort", "Input QoS reliability (best_effort matches every camera).",
                             choices=RELIABILITY_CHOICES)
    depth: int = param(1, "Input QoS history depth; 1 keeps only the newest frame.", range=(1, 100))
    overlay: bool = param(True, "Draw the overlay topic while someone subscribes; false never draws it.", live=True)
    diagnostics_period: float = param(1.0, "Seconds between /diagnostics reports.", range=(0.1, 60.0), live=True)
    cameras: tuple = param(("",), "Camera namespaces served by the one engine, e.g. ['front', 'rear'] -> "
                           "front/image -> front/segmentation, ...; [''] = topics without a prefix.")
    latency_budget_ms: float = param(0.0, "When the p95 of the node's total (arrival -> published) over the last 30 "
                                     "frames exceeds this, run fallback_model until there is room again; 0 = off. "
                                     "Live, but a node started with 0 has no fallback loaded and refuses a budget.",
                                     range=(0.0, 10000.0), live=True)
    fallback_model: str = param("", "The cheaper model of the latency budget (same classes as model), loaded at "
                                "start beside it when latency_budget_ms > 0; empty = the bundled int8 model.")

    @property
    def model_path(self) -> str:
        return self.model or str(package_file("models", BUNDLED_MODELS[self.precision][self.engine]))


class CameraTopics:
    """One camera's publishers and image subscription, under ``prefix``; its frames go to mailbox ``index``."""

    def __init__(self, node: MultitaskNode, index: int, prefix: str) -> None:
        topic = (lambda name: f"{prefix}/{name}") if prefix else (lambda name: name)
        self.seg_pub = node.create_publisher(Image, topic("segmentation"), OUTPUT_QOS)
        self.det_pub = node.create_publisher(Detection2DArray, topic("detections"), OUTPUT_QOS)
        self.label_pub = node.create_publisher(LabelInfo, topic("segmentation/label_info"), LATCHED_QOS)
        self.overlay_pub = node.create_publisher(Image, topic("overlay"), OUTPUT_QOS)
        p = node.params
        msg_type, image = (Image, "image") if p.transport == "raw" else (CompressedImage, "image/compressed")
        self.sub = node.create_subscription(msg_type, topic(image), lambda msg: node.scheduler.put(index, msg),
                                            qos_from_params(p.reliability, p.depth))


class MultitaskNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("multitask_perception", **node_options)
        self.params = p = declare_params(self, MultitaskNodeParams, on_change=self._apply_params)
        self.scheduler = MailboxScheduler([prefix or "camera" for prefix in p.cameras], self.process,
                                          self._log_failure, (ImageDecodeError,), running=self.context.ok)
        self.pipeline = pipe = Pipeline.from_model_files(
            [p.model_path], engine=p.engine, threads=p.threads,
            providers=p.providers, delegate=p.delegate or None, score_threshold=p.score_threshold,
            max_detections=p.max_detections)
        self.primary = pipe
        self.fallback, self.governor = self._load_fallback(p) if p.latency_budget_ms > 0 else (None, None)
        self.node_timer = StageTimer(("publish", "overlay", "total"))  # the node's own stages
        self.health = PipelineHealth(pipe.engine_name, pipe.precision, pipe.model_names, (pipe.timer, self.node_timer))
        self.timings_pub = self.create_publisher(DiagnosticStatus, "~/stage_timings", OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.cameras = [CameraTopics(self, index, prefix) for index, prefix in enumerate(p.cameras)]
        self.publish_label_info(p.score_threshold)
        self.scheduler.start()
        self.diag_timer = self.create_timer(p.diagnostics_period, self.publish_diagnostics)
        self.get_logger().info(
            f"{pipe.model_names} on {pipe.engine_name} ({pipe.precision}, {p.threads} threads), input "
            f"{pipe.input_hw}; listening on {', '.join(c.sub.topic_name for c in self.cameras)}")

    def _load_fallback(self, p: MultitaskNodeParams) -> tuple[Pipeline, LatencyBudget]:
        """The latency budget's cheaper pipeline, loaded now so that a switch never waits for a model.

        It must answer in the primary's classes (same topics, same label_info); its stage times go
        to the primary's StageTimer, so /diagnostics' percentiles cover the frames the node ran.
        """
        pipe = self.primary
        path = p.fallback_model or package_file("models", FALLBACK_MODELS[p.engine])
        if Path(path).resolve() in {spec.model_path.resolve() for _, spec in pipe.models}:
            raise ValueError(f"fallback_model {path} is the model itself: the latency budget needs a cheaper one")
        fallback = Pipeline.from_model_files(
            [path], engine=p.engine, threads=p.threads, providers=p.providers, delegate=p.delegate or None,
            score_threshold=p.score_threshold, max_detections=p.max_detections)
        theirs, ours = (fallback.seg_classes, fallback.det_classes), (pipe.seg_classes, pipe.det_classes)
        if theirs != ours:
            raise ValueError(f"fallback_model {path} cannot stand in for {pipe.model_names}: its classes differ "
                             f"(segmentation, detection: {theirs} vs {ours})")
        frame = np.full((*pipe.input_hw, 3), PAD_VALUE, np.uint8)
        ratio = measure_cost_ratio(lambda: pipe.run_bgr(frame), lambda: fallback.run_bgr(frame))
        fallback.timer = pipe.timer
        pipe.timer.reset()  # the measurement's frames are not the camera's
        self.get_logger().info(
            f"latency budget {p.latency_budget_ms:g} ms: fallback {fallback.model_names} ({fallback.precision}) "
            f"loaded beside {pipe.model_names}, cost ratio {ratio:.2f} measured side by side")
        return fallback, LatencyBudget(p.latency_budget_ms, ratio)

    def _apply_params(self, new: MultitaskNodeParams) -> None:
        """Live parameters: thresholds and the latency budget apply from the next frame, the report period from now."""
        if new.latency_budget_ms > 0 and self.governor is None:
            raise ValueError("no fallback model is loaded (the node started with latency_budget_ms 0): set the "
                             "budget in the parameter file and restart")
        old, self.params = self.params, new
        for pipe in filter(None, (self.primary, self.fallback)):
            pipe.score_threshold, pipe.max_detections = new.score_threshold, new.max_detections
        if self.governor is not None:
            self.governor.budget_ms = new.latency_budget_ms
        if new.diagnostics_period != old.diagnostics_period:
            self.diag_timer.timer_period_ns = int(new.diagnostics_period * 1e9)
        if new.score_threshold != old.score_threshold:
            self.publish_label_info(new.score_threshold)

    def publish_label_info(self, score_threshold: float) -> None:
        """Latched: a late subscriber gets the class names and the threshold in force."""
        for camera in self.cameras:
            camera.label_pub.publish(conv.label_info_msg(self.pipeline.seg_classes, Header(), score_threshold))

    def _log_failure(self, camera: str, counter: str, exc: Exception) -> None:
        log = self.get_logger().warning if counter == "malformed" else self.get_logger().error
        log(f"frame from {camera} not processed ({counter}): {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def process(self, parcel: Parcel) -> None:
        """On the scheduler's worker: outputs first, then the overlay, so that a viewer never delays them."""
        camera, header, pipe = self.cameras[parcel.camera], parcel.item.header, self.pipeline
        result = pipe.run(conv.msg_to_encoded(parcel.item))
        t = self.node_timer.start()
        if result.class_mask is not None:
            camera.seg_pub.publish(conv.class_mask_to_image_msg(result.class_mask, header, len(pipe.seg_classes)))
        if result.detections is not None:
            camera.det_pub.publish(conv.detections_to_msg(result.detections, header, pipe.det_classes))
        t = self.node_timer.lap("publish", t)
        self.node_timer.record("total", (t - parcel.arrived) * 1e3)
        self._keep_budget(t)
        if self.params.overlay and camera.overlay_pub.get_subscription_count() > 0:
            picture = draw_overlay(result.image, result.class_mask, result.detections, pipe.seg_colors_bgr,
                                   pipe.det_classes)
            camera.overlay_pub.publish(conv.array_to_image_msg(picture, "bgr8", header))
            self.scheduler.count(parcel.camera, "overlays")
            self.node_timer.lap("overlay", t)
        if self.timings_pub.get_subscription_count() > 0:  # ~0.1 ms a frame: built only for a listener
            self.timings_pub.publish(conv.diagnostic_status(
                self.get_fully_qualified_name(), stage_timing_values({**result.timings_ms, **self.node_timer.last_ms}),
                message=conv.stamp_text(header.stamp), hardware_id=header.frame_id))

    def _keep_budget(self, now: float) -> None:
        """On the worker, after each frame's outputs: the governor may move the next frame to the other model."""
        switch = self.governor.observe(self.node_timer.last_ms["total"], now) if self.governor else None
        if switch is None:
            return
        old, self.pipeline = self.pipeline, self.fallback if switch.to_fallback else self.primary
        new = self.pipeline
        self.health.set_identity(new.engine_name, new.precision, new.model_names)
        line = f"latency budget: {old.model_names} -> {new.model_names}: {switch.reason}"
        if switch.to_fallback:  # rclpy refuses two severities from one call site
            self.get_logger().warning(line)
        else:
            self.get_logger().info(line)

    def publish_diagnostics(self) -> None:
        report = self.health.report(self.scheduler.snapshot(), self.params.diagnostics_period,
                                    self.scheduler.last_error, self.governor.state() if self.governor else None)
        self.diag_pub.publish(conv.diagnostic_array(self.get_clock().now(), conv.diagnostic_status(
            f"{self.get_fully_qualified_name()}: pipeline", report.values, report.level, report.message,
            self.pipeline.engine_name)))

    def destroy_node(self) -> None:
        self.scheduler.close()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(MultitaskNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
