"""The backbones a model can be built on: keras.applications models and their pyramid layers, and the blocks of
its neck and heads (no TensorFlow import, so the command line can list them).

Each entry's taps are the layers whose outputs are the strides 4/8/16/32 (P2..P5), found by building
the model with ``weights=None`` and reading its layer names and output sizes (test_backbones.py checks
the strides); only names the application sets itself are used, never Keras's global counters
(``re_lu_15``), which change with the number of models built before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEAD_BLOCKS = ("separable", "dense")  # the FPN output conv and the task trunks (3x3, 64 channels, stride 8)
HEAD_BLOCK = "separable"  # depthwise 3x3 + pointwise 1x1: 14 M MACs at 384x512 where the dense 3x3 costs 113 M
LEGACY_HEAD_BLOCK = "dense"  # what runs and configs saved before head_block existed were built with


@dataclass(frozen=True)
class BackboneEntry:
    """One keras.applications model: its constructor, width and the layers tapped as pyramid levels."""

    application: str  # keras.applications constructor
    alpha: float
    taps: dict  # "Pn" (stride 2**n) -> layer name; names the application sets itself (no global counters)
    options: dict = field(default_factory=dict)  # extra constructor arguments


# Levels are the last layer at each stride: MobileNetV2's expansion of the first block at the next
# stride (P5 skips the 1280-channel top layer), MobileNetV3's last block output at that stride.
_MOBILENET_V2_TAPS = {"P2": "block_3_expand_relu", "P3": "block_6_expand_relu", "P4": "block_13_expand_relu",
                      "P5": "block_16_project_BN"}
# include_preprocessing=False: the backbone normalises (x / 127.5 - 1, what MobileNetV3's own layer does)
_V3 = {"include_preprocessing": False}
BACKBONES = {
    "mobilenet_v2_0.5": BackboneEntry("MobileNetV2", 0.5, _MOBILENET_V2_TAPS),
    "mobilenet_v2_1.0": BackboneEntry("MobileNetV2", 1.0, _MOBILENET_V2_TAPS),
    "mobilenet_v3_small": BackboneEntry("MobileNetV3Small", 1.0, {
        "P2": "expanded_conv_project_bn", "P3": "expanded_conv_2_add", "P4": "expanded_conv_7_add",
        "P5": "expanded_conv_10_add"}, _V3),
    "mobilenet_v3_large": BackboneEntry("MobileNetV3Large", 1.0, {
        "P2": "expanded_conv_2_add", "P3": "expanded_conv_5_add", "P4": "expanded_conv_11_add",
        "P5": "expanded_conv_14_add"}, _V3),
}
DEFAULT_BACKBONE = "mobilenet_v2_0.5"  # the bundled models' backbone
