"""The network: a keras.applications pyramid backbone (BACKBONES), an FPN neck, segmentation and CenterNet heads.

One builder makes the multitask model and the two single-task baselines, so they share every
line of backbone, neck and head code and differ only in which heads sit on the shared features.
Layout follows keras-hub: a task-agnostic ``Backbone`` with named ``pyramid_outputs`` ("Pn",
stride 2**n), a ``FeaturePyramid`` layer built from its input shapes, and a ``Task`` model whose
heads are sized from the DatasetSpec it trains on and which builds its own inference graph.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import tensorflow as tf
from keras import ops

from perception_core.datasets.spec import DatasetSpec
from perception_core.training.backbones import BACKBONES, DEFAULT_BACKBONE, HEAD_BLOCK, HEAD_BLOCKS, LEGACY_HEAD_BLOCK

VARIANTS = ("multitask", "seg_only", "det_only")
HEADS = {"multitask": ("seg", "det"), "seg_only": ("seg",), "det_only": ("det",)}
DET_STRIDES = (4, 8)
DET_STRIDE = 4  # the bundled models' head: stride-4 detail finds objects under 16 px that stride 8 merges
BN_MOMENTUM = 0.9  # Keras' 0.999 lags far behind the weights in a ~1k-step training run.
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) = 0.1: every heatmap cell starts at p=0.1 (CenterNet, RetinaNet)
HEAD_INIT_STDDEV = 0.01  # small head kernels keep the first focal losses moderate on a warm-started trunk
TOP_K = 100  # peaks the inference graph returns per frame (fixed-size outputs; callers threshold)


_register = keras.saving.register_keras_serializable(package="perception_core")


class BackboneWeightsError(RuntimeError):
    """Pretrained backbone weights that cannot be had: the message is one line saying what to do."""


def _keras_cache_dir():
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


@_register
class Backbone(keras.Model):
    """uint8 NHWC image -> {"P2","P3","P4","P5"} features of a BACKBONES entry; normalisation is in the graph.

    ``weights`` "imagenet" loads Keras's pretrained weights (its own download and cache); a path
    loads a backbone's ``.weights.h5`` (as ``save_weights`` wrote it); None or "none" starts fresh.
    """

    def __init__(self, image_shape=(256, 320, 3), arch=DEFAULT_BACKBONE, alpha=None, bn_momentum=BN_MOMENTUM,
                 weights=None, **kwargs):
        if arch not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {arch!r}")
        entry = BACKBONES[arch]
        alpha = entry.alpha if alpha is None else alpha
        weights = None if weights in (None, "none") else weights
        # === Layers ===
        inputs = keras.Input(shape=tuple(image_shape), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)
        application = getattr(keras.applications, entry.application)
        try:
            base = application(input_tensor=x, alpha=alpha, include_top=False,
                               weights="imagenet" if weights == "imagenet" else None, **entry.options)
        except Exception as exc:  # Keras's download failure is a bare Exception naming the URL
            url = re.search(r"https?://\S+?\.h5", str(exc))
            if weights != "imagenet" or url is None:
                raise
            name = url.group(0).rsplit("/", 1)[-1]
            reason = str(exc).rsplit(" -- ", 1)[-1]
            raise BackboneWeightsError(
                f"--backbone-weights imagenet: Keras could not download {name} ({reason}); on a "
                f"machine without internet, copy {name} from a connected machine's Keras cache into "
                f"{_keras_cache_dir()}/") from None
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
        # === Functional Model ===
        pyramid = {key: base.get_layer(name).output for key, name in entry.taps.items()}
        super().__init__(inputs=inputs, outputs=pyramid, **kwargs)
        if weights not in (None, "imagenet"):
            if not Path(weights).is_file():
                raise BackboneWeightsError(f"--backbone-weights {weights}: no such file (expected a backbone's "
                                           f".weights.h5, e.g. a run's backbone.weights.h5)")
            self.load_weights(weights)
        # === Config ===
        self.image_shape = tuple(image_shape)
        self.arch = arch
        self.alpha = alpha
        self.bn_momentum = bn_momentum
        self.pyramid_outputs = pyramid

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "image_shape": list(self.image_shape),
                "arch": self.arch, "alpha": self.alpha, "bn_momentum": self.bn_momentum}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_register
class MobileNetV2Backbone(Backbone):
    """The MobileNetV2 entries. Keras weight files name a model's layers by class, so this name keeps
    every run saved before the backbone table loadable."""


def backbone_class(arch):
    return MobileNetV2Backbone if BACKBONES[arch].application == "MobileNetV2" else Backbone


@_register
class ConvBlock(keras.layers.Layer):
    """3x3 conv + BatchNorm + ReLU, sized from its input; ``separable`` makes the conv depthwise 3x3 + pointwise 1x1."""

    def __init__(self, filters, kernel_size=3, bn_momentum=BN_MOMENTUM, separable=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.bn_momentum = bn_momentum
        self.separable = separable

    def build(self, input_shape):
        conv = keras.layers.SeparableConv2D if self.separable else keras.layers.Conv2D
        self.conv = conv(self.filters, self.kernel_size, padding="same", use_bias=False, name="conv")
        self.conv.build(input_shape)
        self.bn = keras.layers.BatchNormalization(momentum=self.bn_momentum, name="bn")
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        return ops.relu(self.bn(self.conv(x), training=training))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "bn_momentum": self.bn_momentum, "separable": self.separable}


@_register
class FeaturePyramid(keras.layers.Layer):
    """Top-down FPN over {"P3".."P5"} that returns the fused finest level (all heads run at stride 8)."""

    def __init__(self, num_channels=64, min_level=3, max_level=5, bn_momentum=BN_MOMENTUM, separable=False, **kwargs):
        super().__init__(**kwargs)
        if min_level > max_level:
            raise ValueError(f"min_level {min_level} must be <= max_level {max_level}")
        self.num_channels = num_channels
        self.min_level = min_level
        self.max_level = max_level
        self.bn_momentum = bn_momentum
        self.separable = separable

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
        self.output_conv = ConvBlock(self.num_channels, bn_momentum=self.bn_momentum, separable=self.separable,
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
                "max_level": self.max_level, "bn_momentum": self.bn_momentum, "separable": self.separable}


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
class ClassMap(keras.layers.Layer):
    """Segmentation logits (1,h,w,S) -> uint8 class map (H,W), argmax in the graph.

    ``stride`` > 1 takes the argmax on logits resized to (H/s, W/s) and repeats the class map s x s:
    the full-size logit resize + argmax is a fixed cost that INT8 does not shrink.
    """

    def __init__(self, output_size, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.output_size = tuple(output_size)
        self.stride = stride

    def call(self, logits):
        (h, w), s = self.output_size, self.stride
        logits = tf.image.resize(logits, (h // s, w // s), method="bilinear")[0]
        # tf.argmax, not keras.ops.argmax (its extra ops break ONNX/TFLite/TensorRT)
        class_map = tf.argmax(logits, axis=-1, output_type=tf.int32)
        if s > 1:  # exact s-fold repeat: nearest resize, asymmetric coordinates (TensorRT and LiteRT take it)
            class_map = tf.compat.v1.image.resize_nearest_neighbor(
                tf.cast(class_map[None, :, :, None], tf.float32), (h, w), align_corners=False,
                half_pixel_centers=False)[0, :, :, 0]
        return tf.cast(class_map, tf.uint8)

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size), "stride": self.stride}


@_register
class CenterNetPeaks(keras.layers.Layer):
    """CenterNet decoding of one image: 3x3 max-pool peaks, top-K over (cell, class), boxes in input pixels.

    Takes [heatmap, wh, offset] at stride ``stride``; returns boxes (K,4), scores (K,), classes (K,).
    Integer index arithmetic uses floor division and subtraction only (no Mod), which TensorRT parses.
    """

    def __init__(self, top_k, stride, **kwargs):
        super().__init__(**kwargs)
        self.top_k = top_k
        self.stride = stride

    def call(self, inputs):
        heatmap, wh, offset = (t[0] for t in inputs)
        h, w, c = heatmap.shape
        stride = self.stride
        pooled = tf.nn.max_pool2d(heatmap[None], ksize=3, strides=1, padding="SAME")[0]
        peaks = heatmap * tf.cast(tf.equal(heatmap, pooled), heatmap.dtype)
        scores, index = tf.math.top_k(tf.reshape(peaks, [-1]), k=self.top_k)
        cell = tf.math.floordiv(index, c)
        classes = index - cell * c
        ys = tf.math.floordiv(cell, w)
        xs = cell - ys * w
        half_size = tf.exp(tf.gather(tf.reshape(wh, [h * w, 2]), cell)) * (stride / 2.0)  # wh: log(size in cells)
        shift = tf.gather(tf.reshape(offset, [h * w, 2]), cell)
        cx = (tf.cast(xs, tf.float32) + shift[:, 0]) * stride
        cy = (tf.cast(ys, tf.float32) + shift[:, 1]) * stride
        boxes = tf.stack([cx - half_size[:, 0], cy - half_size[:, 1], cx + half_size[:, 0], cy + half_size[:, 1]],
                         axis=1)
        limit = tf.constant([w * stride, h * stride, w * stride, h * stride], tf.float32)
        return tf.clip_by_value(boxes, 0.0, limit), scores, classes

    def get_config(self):
        return {**super().get_config(), "top_k": self.top_k, "stride": self.stride}


@_register
class PerceptionModel(keras.Model):
    """Task model: backbone -> FPN -> the heads of one variant, outputs as a dict by head name.

    Outputs: ``seg_logits`` (B,H,W,S) at input size; at s = ``det_stride``: ``det_heatmap``
    (B,H/s,W/s,D) sigmoid, ``det_wh`` (B,H/s,W/s,2) log(box size in cells), ``det_offset`` sub-cell centre.
    S and D are the class counts of ``spec``, the label set it is trained on (kept in its config).
    ``det_stride`` 8 is the original head; 4 adds a ``DetailFusion`` with the stride-4 features.
    ``head_block`` "separable" makes the FPN output conv and both task trunks depthwise-separable, so the shared
    backbone dominates the cost; "dense" is the 3x3 conv of the models trained before it.
    """

    def __init__(self, backbone, spec, variant="multitask", neck_channels=64, head_channels=64,
                 det_stride=DET_STRIDE, detail_channels=32, head_block=LEGACY_HEAD_BLOCK, **kwargs):
        spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.from_dict(spec)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if det_stride not in DET_STRIDES:
            raise ValueError(f"det_stride must be one of {DET_STRIDES}, got {det_stride!r}")
        if head_block not in HEAD_BLOCKS:
            raise ValueError(f"head_block must be one of {HEAD_BLOCKS}, got {head_block!r}")
        separable = head_block == "separable"
        for head, count in (("seg", spec.num_seg_classes), ("det", spec.num_det_classes)):
            if head in HEADS[variant] and not count:
                raise ValueError(f"variant {variant} has a {head} head but {spec.name or 'the spec'} has no "
                                 f"{'segmentation' if head == 'seg' else 'detection'} classes")
        # === Layers ===
        neck = FeaturePyramid(neck_channels, separable=separable, name="neck")
        # === Functional Model ===
        inputs = backbone.inputs[0]
        pyramid = backbone(inputs)
        features = neck(pyramid)
        outputs = {}
        if "seg" in HEADS[variant]:
            x = ConvBlock(head_channels, separable=separable, name="seg_trunk")(features)
            outputs["seg_logits"] = SegmentationLogits(spec.num_seg_classes, backbone.image_shape[:2],
                                                       name="seg_logits")(x)
        if "det" in HEADS[variant]:
            x = ConvBlock(head_channels, separable=separable, name="det_trunk")(features)
            if det_stride == 4:
                x = DetailFusion(detail_channels, name="det_detail")([x, pyramid["P2"]])
            small = {"kernel_initializer": keras.initializers.RandomNormal(stddev=HEAD_INIT_STDDEV)}
            outputs["det_heatmap"] = keras.layers.Conv2D(
                spec.num_det_classes, 1, activation="sigmoid", name="det_heatmap",
                bias_initializer=keras.initializers.Constant(HEATMAP_PRIOR_BIAS), **small)(x)
            outputs["det_wh"] = keras.layers.Conv2D(2, 1, name="det_wh", **small)(x)
            outputs["det_offset"] = keras.layers.Conv2D(2, 1, name="det_offset", **small)(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.spec = spec
        self.variant = variant
        self.neck_channels = neck_channels
        self.head_channels = head_channels
        self.det_stride = det_stride
        self.detail_channels = detail_channels
        self.head_block = head_block

    @property
    def image_shape(self):
        return self.backbone.image_shape

    def inference_model(self, top_k=TOP_K, class_map_stride=1):
        """The graph that ships: uint8 (1,H,W,3) image -> fixed-size outputs, decoding in the graph.

        ``class_map`` (H,W) uint8 and CenterNet peaks as ``boxes`` (K,4) xyxy input pixels, ``scores``
        (K,), ``classes`` (K,) int32. The segmentation classifier's logits are resized once, straight
        to the class map's size (see :class:`ClassMap`), instead of to the input size and again.
        """
        h, w = self.image_shape[:2]
        if h % class_map_stride or w % class_map_stride:
            raise ValueError(f"class_map_stride {class_map_stride} must divide the input size {(h, w)}")
        outputs = {}
        if "seg_logits" in self.output:
            logits = self.get_layer("seg_logits").classifier(self.get_layer("seg_trunk").output)
            outputs["class_map"] = ClassMap((h, w), class_map_stride, name="class_map")(logits)
        if "det_heatmap" in self.output:
            heads = [self.output[name] for name in ("det_heatmap", "det_wh", "det_offset")]
            outputs["boxes"], outputs["scores"], outputs["classes"] = CenterNetPeaks(
                top_k, self.det_stride, name="peaks")(heads)
        return keras.Model(self.inputs, outputs, name=f"{self.name}_inference")

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "backbone": keras.layers.serialize(self.backbone),
                "spec": self.spec.to_dict(), "variant": self.variant, "neck_channels": self.neck_channels,
                "head_channels": self.head_channels, "det_stride": self.det_stride,
                "detail_channels": self.detail_channels, "head_block": self.head_block}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def build_model(variant, image_shape, spec, backbone=DEFAULT_BACKBONE, alpha=None, neck_channels=64, head_channels=64,
                det_stride=DET_STRIDE, detail_channels=32, head_block=HEAD_BLOCK, backbone_weights=None):
    """The one builder for all variants: same backbone, neck and heads, different head sets, sized from ``spec``.

    ``backbone`` names a BACKBONES entry (``alpha`` overrides its width, e.g. for tiny test models);
    ``backbone_weights`` is "imagenet", a backbone ``.weights.h5`` path, or None/"none" (fresh).
    """
    backbone = backbone_class(backbone)(image_shape=image_shape, arch=backbone, alpha=alpha, weights=backbone_weights,
                                        name="backbone")
    return PerceptionModel(backbone, spec, variant=variant, neck_channels=neck_channels, head_channels=head_channels,
                           det_stride=det_stride, detail_channels=detail_channels, head_block=head_block,
                           name=variant)


def synchronize_batch_norm(model):
    """Every BatchNormalization layer of ``model`` (nested ones too) takes its training statistics over the whole
    global batch, all-reduced across the replicas of a tf.distribute step, instead of over its replica's slice.

    Without it the step is not the one-device step, and the replicas' moving averages drift apart (Keras makes
    them without an aggregation: each replica keeps its own). For more than one replica only: on one device
    Keras's synchronized path still runs (the default replica context) and computes the variance as
    E[x^2] - E[x]^2 instead of tf.nn.moments' E[(x - mean)^2], which rounds differently. Inference, the weights
    and the model's config are unchanged (our layers' configs do not carry their BatchNormalization sublayers),
    so a run trained so loads and exports as any other.
    """
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


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
