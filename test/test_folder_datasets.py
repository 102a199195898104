"""Folder datasets: each format reads a small hand-written dataset as its files say, export-sim round-trips
the simulator's frames exactly, and evaluate --data scores a folder dataset through the one evaluation path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from perception_core.datasets import FrameSource
from perception_core.datasets.folder import DatasetError, open_dataset

H, W = 48, 64


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def write_yaml(path: Path, description: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return path


def test_png_masks_with_a_mapping_table_ignore_label_and_an_image_without_mask(tmp_path):
    """Cityscapes-like: raw label ids mapped to train ids, unlisted ids and 255 read as ignore."""
    for name in ("a", "b", "c"):
        write_png(tmp_path / "leftImg8bit" / "train" / "city" / f"{name}_leftImg8bit.png", image(ord(name)))
    raw = np.zeros((H, W), np.uint8)  # 0: unlisted -> ignore
    raw[:10], raw[10:20], raw[20:30], raw[30:32] = 7, 8, 26, 255
    write_png(tmp_path / "gtFine" / "train" / "city" / "a_gtFine_labelIds.png", raw)
    write_png(tmp_path / "gtFine" / "train" / "city" / "b_gtFine_labelIds.png", np.full((H, W), 26, np.uint8))
    yaml_path = write_yaml(tmp_path / "cfg" / "roads.yaml", {
        "name": "roads", "path": "..", "train": "leftImg8bit/train", "images": "leftImg8bit",
        "image_suffix": "_leftImg8bit.png", "ignore_label": 255,
        "segmentation": {"names": ["road", "sidewalk", "car"], "format": "masks", "masks": "gtFine",
                         "mask_suffix": "_gtFine_labelIds.png", "label_map": {7: "road", 8: "sidewalk", 26: 2}}})
    source = open_dataset(yaml_path, "train")
    assert isinstance(source, FrameSource)
    assert source.spec.seg_classes == ("road", "sidewalk", "car") and source.spec.det_classes == ()
    assert source.counts == {"images": 3, "segmentation": 2, "detection": 0}
    a, b, c = source[0], source[1], source[2]
    assert np.array_equal(a.image, image(ord("a"))) and a.key == "roads/train/city/a_leftImg8bit.png"
    expected = np.full((H, W), 255, np.uint8)
    expected[:10], expected[10:20], expected[20:30] = 0, 1, 2
    assert np.array_equal(a.class_mask, expected)
    assert np.array_equal(b.class_mask, np.full((H, W), 2, np.uint8))
    assert c.class_mask is None and c.tasks == frozenset()  # no mask: unlabelled, not "all ignore"
    assert a.tasks == frozenset({"segmentation"}) and a.detections is None
    assert [s.key for s in source] == [a.key, b.key, c.key]
    assert len(source.yaml_sha256) == 64


def test_identity_masks_keep_ids_and_palette_pngs_read_as_indices(tmp_path):
    from PIL import Image

    write_png(tmp_path / "images" / "val" / "x.png", image(1))
    mask = np.tile(np.arange(W, dtype=np.uint8) % 3, (H, 1))
    palette = Image.fromarray(mask, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    (tmp_path / "masks" / "val").mkdir(parents=True)
    palette.save(tmp_path / "masks" / "val" / "x.png")
    yaml_path = write_yaml(tmp_path / "d.yaml", {"val": "images/val", "segmentation": {"names": ["a", "b", "c"]}})
    sample = open_dataset(yaml_path, "val")[0]
    assert np.array_equal(sample.class_mask, mask)


def test_yolo_boxes_in_pixels_empty_file_means_no_objects_missing_file_unlabelled(tmp_path):
    for i in range(3):
        write_png(tmp_path / "images" / "train" / f"{i}.png", image(i))
    labels = tmp_path / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "0.txt").write_text("1 0.5 0.5 0.25 0.5\n\n0 0.125 0.25 0.25 0.5\n")
    (labels / "1.txt").write_text("")
    yaml_path = write_yaml(tmp_path / "data.yaml", {"path": ".", "train": "images/train",
                                                    "names": {0: "car", 1: "person"}})
    source = open_dataset(yaml_path)  # an Ultralytics data.yaml: top-level names, YOLO txt
    assert source.spec.det_classes == ("car", "person") and source.spec.seg_classes == ()
    assert source.counts == {"images": 3, "segmentation": 0, "detection": 2}
    first = source[0].detections
    np.testing.assert_array_equal(first.xyxy, [[24, 12, 40, 36], [0, 0, 16, 24]])
    np.testing.assert_array_equal(first.class_id, [1, 0])
    assert source[1].detections is not None and len(source[1].detections) == 0
    assert source[2].detections is None and source[2].class_mask is None


def test_yolo_label_map_drops_other_classes_and_a_bad_line_names_its_file_and_line(tmp_path):
    write_png(tmp_path / "images" / "a.png", image(0))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("3 0.5 0.5 0.5 0.5\n7 0.5 0.5 0.1 0.1\n")
    yaml_path = write_yaml(tmp_path / "d.yaml", {"train": "images", "detection": {
        "names": ["car"], "format": "yolo", "label_map": {3: "car"}}})
    dets = open_dataset(yaml_path)[0].detections
    np.testing.assert_array_equal(dets.xyxy, [[16, 12, 48, 36]])
    (tmp_path / "labels" / "a.txt").write_text("3 0.5 0.5 0.5 0.5\n3 0.5 oops 0.1\n")
    with pytest.raises(DatasetError, match=r"a\.txt:2: expected 'class cx cy w h'"):
        open_dataset(yaml_path)[0]


def coco_file(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, ann in enumerate(annotations, 1):
        ann.setdefault("id", i)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3] if "bbox" in ann else 0)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path.name


def test_coco_boxes_map_categories_by_name_and_leave_crowd_boxes_out(tmp_path):
    for name in ("a", "b", "c"):
        write_png(tmp_path / "images" / "train" / f"{name}.png", image(ord(name)))
    coco_file(tmp_path / "ann" / "train.json",
              images=[{"id": 10, "file_name": "a.png", "width": W, "height": H},
                      {"id": 11, "file_name": "train/b.png", "width": W, "height": H}],
              annotations=[{"image_id": 10, "category_id": 18, "bbox": [1.5, 2.0, 10.0, 20.0]},
                           {"image_id": 10, "category_id": 3, "bbox": [30, 5, 20, 10]},
                           {"image_id": 10, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 1},
                           {"image_id": 10, "category_id": 5, "bbox": [5, 5, 5, 5]}],  # not one of ours
              categories=[{"id": 3, "name": "car"}, {"id": 5, "name": "bus"}, {"id": 18, "name": "person"}])
    yaml_path = write_yaml(tmp_path / "d.yaml", {"train": "images/train", "detection": {
        "names": ["person", "car"], "format": "coco", "annotations": {"train": "ann/train.json"}}})
    source = open_dataset(yaml_path)
    assert source.counts == {"images": 3, "segmentation": 0, "detection": 2}
    a = source[0].detections
    np.testing.assert_array_equal(a.xyxy, [[1.5, 2, 11.5, 22], [30, 5, 50, 15]])
    np.testing.assert_array_equal(a.class_id, [0, 1])  # the crowd box is no ground truth, the bus no class
    assert source.coco["detection"].boxes(0)[2] == 1  # ... and is counted as left out
    assert len(source[1].detections) == 0  # in the file, no annotations: no objects
    assert source[2].detections is None  # not in the file: unlabelled


def test_coco_polygons_and_rle_rasterise_into_class_masks(tmp_path):
    from pycocotools import mask as mask_utils

    write_png(tmp_path / "images" / "val" / "p.png", image(5))
    blob = np.zeros((H, W), np.uint8)
    blob[30:40, 5:15] = 1
    rle = mask_utils.encode(np.asfortranarray(blob))
    coco_file(tmp_path / "seg_val.json",
              images=[{"id": 1, "file_name": "p.png", "width": W, "height": H}],
              annotations=[{"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 64, 0, 64, 20, 0, 20]],
                            "area": 1280, "bbox": [0, 0, 64, 20]},
                           {"image_id": 1, "category_id": 2, "segmentation": [[20, 4, 30, 4, 30, 12, 20, 12]],
                            "area": 80, "bbox": [20, 4, 10, 8]},  # painted over the larger road polygon
                           {"image_id": 1, "category_id": 2, "area": 100, "bbox": [5, 30, 10, 10],
                            "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}}],
              categories=[{"id": 1, "name": "road"}, {"id": 2, "name": "car"}])
    yaml_path = write_yaml(tmp_path / "d.yaml", {"val": "images/val", "segmentation": {
        "names": ["grass", "road", "car"], "format": "coco", "annotations": {"val": "seg_val.json"},
        "background": "grass"}})
    mask = open_dataset(yaml_path, "val")[0].class_mask
    assert mask.shape == (H, W)
    assert (mask[0:19, 0:19] == 1).all() and (mask[5:11, 21:29] == 2).all()
    assert (mask[30:40, 5:15] == 2).all() and mask[45, 60] == 0  # RLE region; uncovered pixels: background
    assert set(np.unique(mask)) == {0, 1, 2}


def test_a_yaml_that_names_nothing_usable_is_refused_with_its_path(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"train": "images", "segmentation": {"names": ["a"], "format": "voc"}})
    with pytest.raises(DatasetError, match="bad.yaml segmentation: format must be one of"):
        open_dataset(bad)
    missing = write_yaml(tmp_path / "missing.yaml", {"train": "nowhere", "segmentation": {"names": ["a"]}})
    with pytest.raises(DatasetError, match="train entry 'nowhere'"):
        open_dataset(missing)


@pytest.mark.parametrize("fmt", ["coco", "yolo", "masks"])
def test_export_sim_round_trip_is_exact(tmp_path, fmt):
    """Frames, masks and boxes read back are the simulator's, bit for bit (boxes: float32 equality)."""
    from perception_core.__main__ import main
    from perception_core.datasets.simulator import SimulatorSource

    out = tmp_path / fmt
    assert main(["dataset", "export-sim", "--out", str(out), "--frames", "3", "--start", "1", "--val-frames", "1",
                 "--format", fmt]) == 0
    expected = {"train": list(SimulatorSource("train", 4))[1:], "val": list(SimulatorSource("validation", 1))}
    for split, reference in expected.items():
        source = open_dataset(out / "dataset.yaml", split)
        assert source.spec.seg_classes == SimulatorSource.spec.seg_classes
        assert source.spec.det_classes == (() if fmt == "masks" else SimulatorSource.spec.det_classes)
        assert len(source) == len(reference)
        boxes = 0
        for got, ref in zip(source, reference):
            assert np.array_equal(got.image, ref.image)
            assert np.array_equal(got.class_mask, ref.class_mask)
            if fmt == "masks":
                assert got.detections is None
            else:
                assert np.array_equal(got.detections.xyxy, ref.detections.xyxy)
                assert np.array_equal(got.detections.class_id, ref.detections.class_id)
                boxes += len(ref.detections)
        assert fmt == "masks" or boxes > 0
    assert source.spec.seg_colors_bgr == SimulatorSource.spec.seg_colors_bgr


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_the_first_training_batch_from_an_exported_dataset_is_the_simulators(tmp_path, fmt):
    """Same seed, same frames: the batch a folder dataset feeds training is bit-exact with the simulator source's."""
    from perception_core.__main__ import main
    from perception_core.datasets.simulator import SimulatorSource
    from perception_core.training.data import BatchSampler
    from perception_core.training.loader import training_frames

    out = tmp_path / fmt
    assert main(["dataset", "export-sim", "--out", str(out), "--frames", "6", "--val-frames", "0",
                 "--format", fmt]) == 0
    folder, simulator = open_dataset(out / "dataset.yaml"), SimulatorSource("train", 6)
    hw, crop = (96, 128), (64, 96)
    batches = [BatchSampler(training_frames([source], hw, source.spec), 4, crop, 3, 4, seed=0)(0)
               for source in (folder, simulator)]
    assert batches[0].keys() == batches[1].keys()
    for key in batches[0]:
        assert np.array_equal(batches[0][key], batches[1][key]), key


def test_evaluate_data_scores_a_folder_dataset_like_the_simulator_source(tmp_path, geometry_model):
    """The same frames through --data and through the simulator source give the same metrics."""
    from perception_core.__main__ import main
    from perception_core.datasets.simulator import SimulatorSource
    from perception_core.evaluation.evaluate import evaluate, evaluation_pipelines

    main(["dataset", "export-sim", "--out", str(tmp_path / "d"), "--frames", "1", "--val-frames", "3",
          "--format", "coco"])
    assert main(["evaluate", "--model", str(geometry_model), "--data", str(tmp_path / "d" / "dataset.yaml"),
                 "--json", str(tmp_path / "eval.json"), "--threads", "1"]) == 0
    got = json.loads((tmp_path / "eval.json").read_text())
    assert got["source_info"]["split"] == "val" and len(got["source_info"]["yaml_sha256"]) == 64
    pipeline = next(iter(evaluation_pipelines([geometry_model], threads=1).values()))
    reference = evaluate(pipeline, SimulatorSource("validation", 3)).as_dict()
    assert got["frames"] == 3 and got["scored_frames"] == {"segmentation": 3, "detection": 3}
    assert got["miou"] == reference["miou"] and got["map50"] == reference["map50"]
    assert got["iou"] == reference["iou"]
