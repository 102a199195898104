"""The simulator's label set: what its scenes contain. Only sim/ and the simulator source know it."""

from perception_core.datasets.spec import DatasetSpec

SIM_SPEC = DatasetSpec(
    seg_classes=("sky", "road", "grass", "building", "person", "vehicle", "cone"),
    det_classes=("person", "vehicle", "cone"),
    seg_colors_bgr=((235, 206, 135), (128, 64, 128), (35, 142, 107), (70, 70, 70), (60, 20, 220), (142, 0, 0),
                    (0, 165, 255)),
    name="simulator",
)
