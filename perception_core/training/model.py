"""The network: a MobileNetV2 pyramid backbone, an FPN neck, segmentation and CenterNet heads.

One builder makes the multitask model and the two single-task baselines, so they share every
line of backbone, neck and head code and differ only in which heads sit on the shared features.
Layout follows keras-hub: a task-agnostic ``Backbone`` with named ``pyramid_outputs`` ("Pn",
stride 2**n), a ``FeaturePyramid`` layer built from its input shapes, and a ``Task`` model.
"""

from __future__ import annotations

import keras
from keras import ops

from perception_core.types import DET_CLASSES, SEG_CLASSES

VARIANTS = ("multitask", "seg_only", "det_only")
HEADS = {"multitask": ("seg", "det"), "seg_only": ("seg",), "det_only": ("det",)}
DET_STRIDES = (4, 8)
BN_MOMENTUM = 0.9  # Keras' 0.999 lags far behind the weights in a ~1k-step training run.

# MobileNetV2 layers whose outputs are the strides 4/8/16/32; P5 skips the 1280-channel top layer.
_MOBILENET_V2_TAPS = {"P2": "block_3_expand_relu", "P3": "block_6_expand_relu", "P4": "block_13_expand_relu",
                      "P5": "block_16_project_BN"}

_register = keras.saving.register_keras_serializable(package="perception_core")


@_register
class MobileNetV2Backbone(keras.Model):
    """uint8 NHWC image -> {"P2","P3","P4","P5"} features; normalisation happens inside the graph."""

    def __init__(self, image_shape=(256, 320, 3), alpha=0.5, bn_momentum=BN_MOMENTUM, **kwargs):
        # === Layers ===
        inputs = keras.Input(shape=tuple(image_shape), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)
        base = keras.applications.MobileNetV2(input_tensor=x, alpha=alpha, include_top=False, weights=None)
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
        # === Functional Model ===
        pyramid = {key: base.get_layer(name).output for key, name in _MOBILENET_V2_TAPS.items()}
        super().__init__(inputs=inputs, outputs=pyramid, **kwargs)
        # === Config ===
        self.image_shape = tuple(image_shape)
        self.alpha = alpha
        self.bn_momentum = bn_momentum
        self.pyramid_outputs = pyramid

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "image_shape": list(self.image_shape),
                "alpha": self.alpha, "bn_momentum": self.bn_momentum}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_register
class ConvBlock(keras.layers.Layer):
    """3x3 conv + BatchNorm + ReLU, sized from its input."""

    def __init__(self, filters, kernel_size=3, bn_momentum=BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.bn_momentum = bn_momentum

    def build(self, input_shape):
        self.conv = keras.layers.Conv2D(self.filters, self.kernel_size, padding="same", use_bias=False, name="conv")
        self.conv.build(input_shape)
        self.bn = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="bn")
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        return ops.relu(self.bn(self.conv(x), training=training))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "bn_momentum": self.bn_momentum}


@_register
class FeaturePyramid(keras.layers.Layer):
    """Top-down FPN over {"P3".."P5"} that returns the fused finest level (all heads run at stride 8)."""

    def __init__(self, num_channels=64, min_level=3, max_level=5, bn_momentum=BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        if min_level > max_level:
            raise ValueError(f"min_level {min_level} must be <= max_level {max_level}")
        self.num_channels = num_channels
        self.min_level = min_level
        self.max_level = max_level
        self.bn_momentum = bn_momentum

    def build(self, input_shapes):
        missing = [f"P{lv}" for lv in range(self.min_level, self.max_level + 1) if f"P{lv}" not in input_shapes]
        if missing:
            raise ValueError(f"FeaturePyramid needs pyramid levels {missing}, got {sorted(input_shapes)}")
        self.lateral_convs = []  # index = level - min_level (a list: checkpoints need string dict keys)
        for level in range(self.min_level, self.max_level + 1):
            conv = keras.layers.Conv2D(self.num_channels, 1, name=f"lateral_conv_{level}")
            conv.build(input_shapes[f"P{level}"])
            self.lateral_convs.append(conv)
        self.sizes = {lv: tuple(input_shapes[f"P{lv}"][1:3]) for lv in range(self.min_level, self.max_level + 1)}
        fine = tuple(input_shapes[f"P{self.min_level}"][:3]) + (self.num_channels,)
        self.output_conv = ConvBlock(self.num_channels, bn_momentum=self.bn_momentum,
                                     name=f"output_conv_{self.min_level}")
        self.output_conv.build(fine)

    def call(self, inputs, training=None):
        x = self.lateral_convs[-1](inputs[f"P{self.max_level}"])
        for level in range(self.max_level - 1, self.min_level - 1, -1):
            # bilinear: TensorFlow's nearest resize becomes ONNX's deprecated tf_half_pixel_for_nn mode
            x = ops.image.resize(x, self.sizes[level], interpolation="bilinear")
            x = x + self.lateral_convs[level - self.min_level](inputs[f"P{level}"])
        return self.output_conv(x, training=training)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[f"P{self.min_level}"][:3]) + (self.num_channels,)

    def get_config(self):
        return {**super().get_config(), "num_channels": self.num_channels, "min_level": self.min_level,
                "max_level": self.max_level, "bn_momentum": self.bn_momentum}


@_register
class SegmentationLogits(keras.layers.Layer):
    """1x1 classifier from the input's channels, logits resized to the model input size."""

    def __init__(self, num_classes, output_size, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.output_size = tuple(output_size)

    def build(self, input_shape):
        self.classifier = keras.layers.Conv2D(self.num_classes, 1, name="classifier")
        self.classifier.build(input_shape)

    def call(self, x):
        return ops.image.resize(self.classifier(x), self.output_size, interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.output_size + (self.num_classes,)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "output_size": list(self.output_size)}


@_register
class DetailFusion(keras.layers.Layer):
    """Stride-8 head features upsampled onto the stride-4 backbone level, then one separable 3x3 block.

    Small objects (under 16 px) are one cell or less at stride 8, so their centres collide and their
    sizes are coarse; this gives the detection head stride-4 detail for ~4% of the model's cost.
    """

    def __init__(self, filters=32, bn_momentum=BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.bn_momentum = bn_momentum

    def build(self, input_shapes):
        coarse_shape, fine_shape = input_shapes
        self.fine_size = tuple(fine_shape[1:3])
        self.coarse_conv = keras.layers.Conv2D(self.filters, 1, name="coarse_conv")
        self.coarse_conv.build(coarse_shape)
        self.lateral_conv = keras.layers.Conv2D(self.filters, 1, name="lateral_conv")
        self.lateral_conv.build(fine_shape)
        fused = tuple(fine_shape[:3]) + (self.filters,)
        self.separable = keras.layers.SeparableConv2D(self.filters, 3, padding="same", use_bias=False,
                                                      name="separable")
        self.separable.build(fused)
        self.bn = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="bn")
        self.bn.build(fused)

    def call(self, inputs, training=None):
        coarse, fine = inputs
        x = ops.image.resize(self.coarse_conv(coarse), self.fine_size, interpolation="bilinear")
        x = x + self.lateral_conv(fine)
        return ops.relu(self.bn(self.separable(x), training=training))

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[1][:3]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "bn_momentum": self.bn_momentum}


@_register
class PerceptionModel(keras.Model):
    """Task model: backbone -> FPN -> the heads of one variant, outputs as a dict by head name.

    Outputs: ``seg_logits`` (B,H,W,S) at input size; at s = ``det_stride``: ``det_heatmap``
    (B,H/s,W/s,D) sigmoid, ``det_wh`` (B,H/s,W/s,2) log(box size in cells), ``det_offset`` sub-cell centre.
    ``det_stride`` 8 is the original head; 4 adds a ``DetailFusion`` with the stride-4 features.
    """

    def __init__(self, backbone, variant="multitask", num_seg_classes=len(SEG_CLASSES),
                 num_det_classes=len(DET_CLASSES), neck_channels=64, head_channels=64, det_stride=8,
                 detail_channels=32, **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if det_stride not in DET_STRIDES:
            raise ValueError(f"det_stride must be one of {DET_STRIDES}, got {det_stride!r}")
        # === Layers ===
        neck = FeaturePyramid(neck_channels, name="neck")
        # === Functional Model ===
        inputs = backbone.inputs[0]
        pyramid = backbone(inputs)
        features = neck(pyramid)
        outputs = {}
        if "seg" in HEADS[variant]:
            x = ConvBlock(head_channels, name="seg_trunk")(features)
            outputs["seg_logits"] = SegmentationLogits(num_seg_classes, backbone.image_shape[:2], name="seg_logits")(x)
        if "det" in HEADS[variant]:
            x = ConvBlock(head_channels, name="det_trunk")(features)
            if det_stride == 4:
                x = DetailFusion(detail_channels, name="det_detail")([x, pyramid["P2"]])
            # Small kernels and bias -2.19 start every heatmap cell at p=0.1 (CenterNet, RetinaNet), so
            # the first focal losses are moderate even on a warm-started trunk with large activations.
            small = {"kernel_initializer": keras.initializers.RandomNormal(stddev=0.01)}
            outputs["det_heatmap"] = keras.layers.Conv2D(
                num_det_classes, 1, activation="sigmoid", name="det_heatmap",
                bias_initializer=keras.initializers.Constant(-2.19), **small)(x)
            outputs["det_wh"] = keras.layers.Conv2D(2, 1, name="det_wh", **small)(x)
            outputs["det_offset"] = keras.layers.Conv2D(2, 1, name="det_offset", **small)(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.variant = variant
        self.num_seg_classes = num_seg_classes
        self.num_det_classes = num_det_classes
        self.neck_channels = neck_channels
        self.head_channels = head_channels
        self.det_stride = det_stride
        self.detail_channels = detail_channels

    @property
    def image_shape(self):
        return self.backbone.image_shape

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "backbone": keras.layers.serialize(self.backbone),
                "variant": self.variant, "num_seg_classes": self.num_seg_classes,
                "num_det_classes": self.num_det_classes, "neck_channels": self.neck_channels,
                "head_channels": self.head_channels, "det_stride": self.det_stride,
                "detail_channels": self.detail_channels}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def build_model(variant="multitask", image_shape=(256, 320, 3), alpha=0.5, neck_channels=64, head_channels=64,
                det_stride=8, detail_channels=32):
    """The one builder for all variants: same backbone, neck and heads, different head sets.

    The defaults rebuild runs saved before the stride-4 head (their model_kwargs are empty);
    ``train`` passes the bundled models' ``det_stride=4``.
    """
    backbone = MobileNetV2Backbone(image_shape=image_shape, alpha=alpha, name="backbone")
    return PerceptionModel(backbone, variant=variant, neck_channels=neck_channels, head_channels=head_channels,
                           det_stride=det_stride, detail_channels=detail_channels, name=variant)


def copy_matching_weights(source, target):
    """Warm start: copy each layer's weights from ``source`` where name and shapes match (nested models too).

    Returns (copied, skipped) layer paths, so a caller can say what was initialised fresh.
    """
    copied, skipped = [], []

    def walk(src, dst, prefix):
        src_layers = {layer.name: layer for layer in src.layers}
        for layer in dst.layers:
            path = prefix + layer.name
            if not layer.weights:
                continue
            match = src_layers.get(layer.name)
            if isinstance(layer, keras.Model) and isinstance(match, keras.Model):
                walk(match, layer, path + "/")
            elif match is not None and [w.shape for w in match.weights] == [w.shape for w in layer.weights]:
                layer.set_weights(match.get_weights())
                copied.append(path)
            else:
                skipped.append(path)

    walk(source, target, "")
    return copied, skipped


def with_image_shape(model, image_shape):
    """The same architecture and weights at another input size (train on crops, export at full size)."""
    config = model.get_config()
    config["backbone"] = {**config["backbone"], "config": {**config["backbone"]["config"],
                                                           "image_shape": list(image_shape)}}
    clone = PerceptionModel.from_config(config)
    clone.set_weights(model.get_weights())
    return clone
