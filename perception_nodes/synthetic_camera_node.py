"""A camera that films the simulator: frames plus pixel-exact ground truth, same stamps.

Rendering a scene costs tens of milliseconds, more than a 30 Hz frame period, so the node
renders a loop of ``loop_frames`` scenes at startup, converts each to ready messages once,
and then only stamps and publishes them from a wall timer (like cam2image's burger mode).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from perception_core.codec import from_bgr
from perception_core.message_fields import pinhole_camera_info_fields
from perception_core.sim import VALIDATION_SEED, render_scene
from perception_core.sim.classes import SIM_SPEC
from perception_nodes.conversions import (
    array_to_image_msg,
    bgr_to_compressed_msg,
    class_mask_to_image_msg,
    detections_to_msg,
    diagnostic_array,
    diagnostic_status,
)
from perception_nodes.params import RELIABILITY_CHOICES, declare_params, param, qos_from_params
from perception_nodes.runner import run_node

CAMERA_ENCODINGS = ("bgr8", "rgb8", "bgra8", "rgba8", "mono8")


@dataclass(frozen=True)
class SyntheticCameraParams:
    rate: float = param(30.0, "Frames per second.", range=(0.1, 240.0), live=True)
    width: int = param(640, "Image width in pixels.", range=(16, 4096))
    height: int = param(480, "Image height in pixels.", range=(16, 4096))
    encoding: str = param("bgr8", "Raw image encoding.", choices=CAMERA_ENCODINGS)
    transport: str = param("raw", "'raw' publishes image, 'compressed' publishes image/compressed (JPEG).",
                           choices=("raw", "compressed"))
    jpeg_quality: int = param(90, "JPEG quality for the compressed transport.", range=(1, 100))
    seed: int = param(VALIDATION_SEED, "Simulator seed; the default is the held-out validation split.",
                      range=(0, 2**31 - 1))
    loop_frames: int = param(30, "Scenes rendered at startup and replayed in a loop.", range=(1, 10000))
    frame_id: str = param("camera", "frame_id of every published header.", live=True)
    horizontal_fov_deg: float = param(90.0, "Horizontal field of view for camera_info.", range=(10.0, 170.0),
                                      live=True)
    reliability: str = param("best_effort", "Reliability of the image publisher (sensor-data style).",
                             choices=RELIABILITY_CHOICES)
    depth: int = param(5, "History depth of the publishers.", range=(1, 100))


def camera_info_msg(width: int, height: int, horizontal_fov_deg: float) -> CameraInfo:
    """The simulator's pinhole as CameraInfo (the bag recorder fills its own from the same fields)."""
    return CameraInfo(**pinhole_camera_info_fields(width, height, horizontal_fov_deg))


class SyntheticCamera(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("synthetic_camera", **node_options)
        self.params = p = declare_params(self, SyntheticCameraParams, on_change=self._apply_params)
        image_qos = qos_from_params(p.reliability, p.depth)
        if p.transport == "raw":
            self.image_pub = self.create_publisher(Image, "image", image_qos)
        else:
            self.image_pub = self.create_publisher(CompressedImage, "image/compressed", image_qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", image_qos)
        self.gt_mask_pub = self.create_publisher(Image, "ground_truth/segmentation", p.depth)
        self.gt_det_pub = self.create_publisher(Detection2DArray, "ground_truth/detections", p.depth)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.info = camera_info_msg(p.width, p.height, p.horizontal_fov_deg)
        self.loop = self._render_loop()
        self.published = 0
        self.started = time.monotonic()
        self.timer = self.create_timer(1.0 / p.rate, self.publish_frame)
        self.diag_timer = self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(
            f"publishing {p.width}x{p.height} {p.encoding if p.transport == 'raw' else 'jpeg'} at {p.rate:g} Hz "
            f"on {self.image_pub.topic_name} (+ camera_info, ground_truth/*), seed {p.seed}")

    def _apply_params(self, new: SyntheticCameraParams) -> None:
        """Live parameters: the rate, frame_id and field of view apply from the next frame."""
        old, self.params = self.params, new
        if new.rate != old.rate:
            self.timer.timer_period_ns = int(1e9 / new.rate)
        self.info = camera_info_msg(new.width, new.height, new.horizontal_fov_deg)

    def _render_loop(self) -> list[tuple]:
        """Render every scene of the loop once and keep its ready-to-publish messages."""
        p = self.params
        started = time.monotonic()
        loop = []
        for index in range(p.loop_frames):
            scene = render_scene(p.seed, index, p.width, p.height)
            loop.append((self._image_msg(scene.frame.image),
                         class_mask_to_image_msg(scene.class_mask, Header(), SIM_SPEC.num_seg_classes),
                         detections_to_msg(scene.detections, Header(), SIM_SPEC.det_classes)))
        self.get_logger().info(f"rendered {p.loop_frames} scenes in {time.monotonic() - started:.1f} s")
        return loop

    def _image_msg(self, bgr):
        p = self.params
        if p.transport == "compressed":
            return bgr_to_compressed_msg(bgr, Header(), "jpeg", p.jpeg_quality)
        return array_to_image_msg(from_bgr(bgr, p.encoding), p.encoding, Header())

    def publish_frame(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.params.frame_id)
        image, gt_mask, gt_dets = self.loop[self.published % len(self.loop)]
        for msg in (image, self.info, gt_mask, gt_dets):
            msg.header = header
        self.image_pub.publish(image)
        self.info_pub.publish(self.info)
        self.gt_mask_pub.publish(gt_mask)
        self.gt_det_pub.publish(gt_dets)
        self.published += 1

    def publish_diagnostics(self) -> None:
        elapsed = time.monotonic() - self.started
        values = {"frames_published": str(self.published), "fps": f"{self.published / max(elapsed, 1e-9):.2f}",
                  "target_fps": f"{self.params.rate:g}"}
        self.diag_pub.publish(diagnostic_array(self.get_clock().now(), diagnostic_status(
            f"{self.get_name()}: output", values, message="publishing", hardware_id=self.params.frame_id)))


def main(args=None) -> int:
    return run_node(SyntheticCamera, args)


if __name__ == "__main__":
    raise SystemExit(main())
