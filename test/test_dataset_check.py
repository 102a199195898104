"""dataset check: every kind of problem planted in a broken dataset is found and names its file (and line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_folder_datasets import H, W, coco_file, image, write_png, write_yaml

from perception_core.datasets.check import check_dataset


@pytest.fixture
def broken_masks_yolo(tmp_path) -> Path:
    """Segmentation PNG masks + YOLO boxes, one planted problem per file."""
    for name in ("good", "badsize", "badvalues", "nomask", "yolo"):
        write_png(tmp_path / "images" / "train" / f"{name}.png", image(len(name)))
    (tmp_path / "images" / "train" / "corrupt.png").write_bytes(b"\x89PNG not really")
    masks = tmp_path / "masks" / "train"
    write_png(masks / "good.png", np.zeros((H, W), np.uint8))
    write_png(masks / "badsize.png", np.zeros((H // 2, W), np.uint8))
    bad = np.ones((H, W), np.uint8)
    bad[0, :3] = (7, 9, 255)  # 7 and 9 are no class of 3; 255 is the ignore label
    write_png(masks / "badvalues.png", bad)
    write_png(masks / "yolo.png", np.full((H, W), 2, np.uint8))
    write_png(tmp_path / "masks" / "stray.png", np.zeros((H, W), np.uint8))  # no image has it
    labels = tmp_path / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "yolo.txt").write_text("0 0.5 0.5 0.5 0.5\n"  # fine: 32 x 24 px
                                     "1 0.95 0.5 0.3 0.2\n"  # right edge at 1.1 * W: outside (clipped: small)
                                     "0 0.5 0.5 0 0.2\n"  # zero width: degenerate
                                     "5 0.5 0.5 0.1 0.1\n"  # class 5 of 2
                                     "1 0.5 0.5\n")  # too few fields
    (labels / "good.txt").write_text("1 0.05 0.05 0.1 0.1\n")  # 6.4 x 4.8 px: small
    return write_yaml(tmp_path / "dataset.yaml", {
        "train": "images/train", "segmentation": {"names": ["a", "b", "c"], "require_all": True},
        "detection": {"names": ["car", "person"], "format": "yolo"}})


def found(report, kind: str) -> list[tuple[str, int]]:
    return [(Path(p.file).name, p.line) for p in report.problems if p.kind == kind]


def test_each_planted_problem_is_found_and_named(broken_masks_yolo):
    report = check_dataset(broken_masks_yolo)
    assert found(report, "unreadable-image") == [("corrupt.png", None)]
    assert found(report, "mask-size") == [("badsize.png", None)]
    assert found(report, "mask-values") == [("badvalues.png", None)]
    assert "[7, 9]" in next(p.message for p in report.problems if p.kind == "mask-values")
    assert found(report, "missing-mask") == [("nomask.png", None)]  # require_all: an error, not unlabelled
    assert found(report, "box-outside") == [("yolo.txt", 2)]
    assert found(report, "box-degenerate") == [("yolo.txt", 3)]
    assert sorted(found(report, "yolo-syntax")) == [("yolo.txt", 4), ("yolo.txt", 5)]
    assert found(report, "orphan-label") == [("stray.png", None)]
    assert {p.severity for p in report.problems if p.kind == "orphan-label"} == {"warning"}
    assert len(report.errors) == 8
    stats = report.splits["train"]
    assert stats.images == 6 and stats.labelled["segmentation"] == 4 and stats.labelled["detection"] == 2
    assert stats.image_sizes == {(W, H): 5}
    assert stats.boxes == {0: 1, 1: 2} and stats.small_share() == pytest.approx(2 / 3)
    text = report.text()
    assert "yolo.txt:2" in text and "% under 16 px" in text and "8 errors" in text


def test_the_check_command_exits_non_zero_and_draws_its_histograms(broken_masks_yolo, tmp_path, capsys):
    from perception_core.__main__ import main

    plots = tmp_path / "plots" / "check.png"
    assert main(["dataset", "check", str(broken_masks_yolo), "--plots", str(plots), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "ERROR [box-outside]" in out and "yolo.txt:2" in out
    assert plots.stat().st_size > 10_000


def test_a_label_map_reads_unlisted_values_as_ignore_with_a_warning(tmp_path):
    write_png(tmp_path / "images" / "a.png", image(1))
    raw = np.full((H, W), 7, np.uint8)
    raw[0, 0] = 3
    write_png(tmp_path / "masks" / "a.png", raw)
    report = check_dataset(write_yaml(tmp_path / "d.yaml", {"train": "images", "segmentation": {
        "names": ["road"], "label_map": {7: "road"}}}))
    assert not report.errors
    assert [(p.kind, Path(p.file).name) for p in report.warnings] == [("mask-unmapped", "a.png")]
    assert report.splits["train"].ignore_pixels == 1


def test_coco_problems_name_the_annotation_file(tmp_path):
    for name in ("a", "b"):
        write_png(tmp_path / "images" / "val" / f"{name}.png", image(3))
    coco_file(tmp_path / "det_val.json",
              images=[{"id": 1, "file_name": "a.png", "width": W, "height": H},
                      {"id": 2, "file_name": "b.png", "width": 2 * W, "height": H},  # not b.png's size
                      {"id": 3, "file_name": "gone.png", "width": W, "height": H}],  # no such image
              annotations=[{"image_id": 1, "category_id": 1, "bbox": [60, 10, 20, 10]},  # outside
                           {"image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5]},  # degenerate
                           {"image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1},
                           {"image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]},  # not our class
                           {"image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5]}],  # no image 9
              categories=[{"id": 1, "name": "car"}, {"id": 2, "name": "tram"}])
    report = check_dataset(write_yaml(tmp_path / "d.yaml", {"val": "images/val", "detection": {
        "names": ["car"], "format": "coco", "annotations": {"val": "det_val.json"}}}))
    kinds = sorted((p.severity, p.kind) for p in report.problems)
    assert kinds == [("error", "box-degenerate"), ("error", "box-outside"), ("error", "coco-image-size"),
                     ("error", "coco-missing-image"), ("error", "coco-unknown-image"), ("warning", "coco-category")]
    assert all(Path(p.file).name == "det_val.json" for p in report.problems)
    assert "annotation 1 (a.png)" in next(p.message for p in report.problems if p.kind == "box-outside")
    assert report.splits["val"].crowd_boxes == 1


def test_a_clean_export_passes_and_an_unreadable_yaml_is_one_error(tmp_path):
    from perception_core.datasets.export_sim import export_sim

    path = export_sim(tmp_path / "sim", 2, "yolo", val_frames=1)
    report = check_dataset(path)
    assert report.problems == [] and report.splits["train"].labelled["detection"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"train": "images"}))
    report = check_dataset(bad)
    assert [p.kind for p in report.errors] == ["yaml"] and "bad.yaml" in str(report.errors[0])
