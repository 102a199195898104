"""A label set that is not the simulator's, and a tiny model trained and exported on it.

``relabeled_sim_source(count)`` is the simulator's frames renamed into 12 segmentation and 5
detection classes through lookup tables (every class id moves, so a path that ignores the spec and
keeps the simulator's ids is caught); ``export_tiny_model(tmp_path, source)`` trains a tiny model a
few steps on a source and exports it to ONNX with its sidecar. Tests of the training/export side
and the end-to-end test of the nodes and the evaluator share them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception_core.datasets import DatasetSpec
from perception_core.datasets.cache import FrameCache
from perception_core.datasets.relabel import RelabeledSource
from perception_core.datasets.simulator import SimulatorSource

RELABELED_SPEC = DatasetSpec(
    seg_classes=("pedestrian", "bicycle", "car", "truck", "traffic_cone", "asphalt", "sidewalk", "lane_marking",
                 "vegetation", "terrain", "structure", "overhead"),
    det_classes=("car", "pedestrian", "truck", "cyclist", "traffic_cone"),
    name="relabeled-simulator",
)
# Simulator class name -> the relabeled set's name (looked up by name, so the tables follow the simulator's order).
SEG_RENAMES = {"sky": "overhead", "road": "asphalt", "grass": "vegetation", "building": "structure",
               "person": "pedestrian", "vehicle": "car", "cone": "traffic_cone"}
DET_RENAMES = {"person": "pedestrian", "vehicle": "car", "cone": "traffic_cone"}
TINY = {"alpha": 0.35, "neck_channels": 16, "head_channels": 16}
TINY_HW = (96, 128)  # 4:3 like the 640x480 camera: letterboxed without padding


def relabeled_sim_source(count: int, split: str = "train") -> RelabeledSource:
    """``count`` simulator frames of ``split`` at camera resolution, labelled in RELABELED_SPEC."""
    sim = SimulatorSource(split, count)
    seg_map = [RELABELED_SPEC.seg_classes.index(SEG_RENAMES[name]) for name in sim.spec.seg_classes]
    det_map = [RELABELED_SPEC.det_classes.index(DET_RENAMES[name]) for name in sim.spec.det_classes]
    return RelabeledSource(sim, RELABELED_SPEC, seg_map, det_map)


def export_tiny_model(tmp_path: Path, source, steps: int = 4) -> Path:
    """Train a tiny multitask model ``steps`` steps on ``source`` and export it; returns the ``.onnx`` path.

    It goes through the run directory (config.json -> load_trained -> export), the way a user's
    model does, so the sidecar's classes are the ones the run recorded.
    """
    from perception_core.training.export import export
    from perception_core.training.train import train

    run = train("multitask", steps=steps, batch=2, out=Path(tmp_path) / "run", image_hw=TINY_HW, crop_hw=TINY_HW,
                log_every=2, checkpoint_every=steps, threads=1, model_kwargs=TINY, source=source)
    return export(run, Path(tmp_path) / "tiny.onnx", top_k=20, verify_frames=3, eval_frames=0, threads=1,
                  class_map_stride=2)


def rectangle_frames(n: int, hw: tuple[int, int], seed: int = 0, background: int = 0, thing: int = 2,
                     labelled=None) -> FrameCache:
    """``n`` frames with one bright rectangle each: ``thing`` in the mask on ``background``, detection class 0.

    ``labelled``: per-task flags (segmentation, detection) given to every frame, or None (labelled for both).
    """
    rng = np.random.default_rng(seed)
    images = np.full((n, *hw, 3), 60, np.uint8)
    masks = np.full((n, *hw), background, np.uint8)
    boxes = []
    for i in range(n):
        x1, y1 = rng.integers(4, hw[1] - 30), rng.integers(4, hw[0] - 30)
        w, h = rng.integers(12, 24, size=2)
        images[i, y1:y1 + h, x1:x1 + w] = 220
        masks[i, y1:y1 + h, x1:x1 + w] = thing
        boxes.append([x1, y1, x1 + w, y1 + h])
    return FrameCache(images, masks, np.asarray(boxes, np.float32), np.zeros(n, np.int32),
                      np.arange(n + 1, dtype=np.int64), None if labelled is None else np.tile(labelled, (n, 1)))
