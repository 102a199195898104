"""``python -m perception_core export``: trained weights -> ONNX (+ LiteRT) with a verified sidecar.

The exported graph is the inference wrapper: uint8 NHWC image in; class map (argmax in graph),
CenterNet peaks (3x3 max-pool) and top-K boxes/scores/classes out, all fixed-size. Export runs
ONNX Runtime against TensorFlow on real simulator frames and refuses to write a sidecar when they
differ, so a broken conversion never reaches models/.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from perception_core.model_spec import write_sidecar
from perception_core.types import DET_CLASSES, SEG_CLASSES, SEG_COLORS_BGR

OPSET = 17
MIN_CLASS_MAP_AGREEMENT = 0.999
OUTPUT_SHAPES = {"class_map": lambda h, w, k: ([h, w], "uint8"), "boxes": lambda h, w, k: ([k, 4], "float32"),
                 "scores": lambda h, w, k: ([k], "float32"), "classes": lambda h, w, k: ([k], "int32")}


class ExportMismatchError(RuntimeError):
    """ONNX Runtime disagrees with TensorFlow on real frames."""


def decode_detections(heatmap, wh, offset, top_k, stride):
    """CenterNet decoding for one image: 3x3 max-pool peaks, top-K over (cell, class), boxes in input pixels.

    Integer index arithmetic uses floor division and subtraction only (no Mod), which TensorRT parses.
    """
    import tensorflow as tf

    h, w, c = heatmap.shape
    pooled = tf.nn.max_pool2d(heatmap[None], ksize=3, strides=1, padding="SAME")[0]
    peaks = heatmap * tf.cast(tf.equal(heatmap, pooled), heatmap.dtype)
    scores, index = tf.math.top_k(tf.reshape(peaks, [-1]), k=top_k)
    cell = tf.math.floordiv(index, c)
    classes = index - cell * c
    ys = tf.math.floordiv(cell, w)
    xs = cell - ys * w
    size = tf.exp(tf.gather(tf.reshape(wh, [h * w, 2]), cell)) * (stride / 2.0)  # wh is log(size in cells)
    shift = tf.gather(tf.reshape(offset, [h * w, 2]), cell)
    cx = (tf.cast(xs, tf.float32) + shift[:, 0]) * stride
    cy = (tf.cast(ys, tf.float32) + shift[:, 1]) * stride
    boxes = tf.stack([cx - size[:, 0], cy - size[:, 1], cx + size[:, 0], cy + size[:, 1]], axis=1)
    limit = tf.constant([w * stride, h * stride, w * stride, h * stride], tf.float32)
    return tf.clip_by_value(boxes, 0.0, limit), scores, classes


def inference_function(model, top_k=100, class_map_stride=1):
    """tf.function (uint8 (1,H,W,3) -> dict of fixed-size outputs) that export and TFLite convert.

    ``class_map_stride`` > 1 takes the argmax on logits resized to (H/s, W/s) and repeats the class
    map s x s: the full-size logit resize + argmax is a fixed cost that INT8 does not shrink.
    """
    import keras
    import tensorflow as tf

    h, w = model.image_shape[:2]
    s = class_map_stride
    if h % s or w % s:
        raise ValueError(f"class_map_stride {s} must divide the input size {(h, w)}")
    names = [n for n in ("det_heatmap", "det_wh", "det_offset") if n in model.output]
    has_seg = "seg_logits" in model.output
    if has_seg:
        names.append("seg_trunk")
        classifier = model.get_layer("seg_logits").classifier
    features = keras.Model(model.inputs, {n: model.get_layer(n).output for n in names})

    @tf.function(input_signature=[tf.TensorSpec((1, h, w, 3), tf.uint8, name="image")])
    def serve(image):
        raw = features(image, training=False)
        out = {}
        if has_seg:
            logits = tf.image.resize(classifier(raw["seg_trunk"]), (h // s, w // s), method="bilinear")[0]
            # tf.argmax, not keras.ops.argmax (its extra ops break ONNX/TFLite/TensorRT)
            class_map = tf.argmax(logits, axis=-1, output_type=tf.int32)
            if s > 1:  # exact s-fold repeat: nearest resize, asymmetric coordinates (TensorRT and LiteRT take it)
                class_map = tf.compat.v1.image.resize_nearest_neighbor(
                    tf.cast(class_map[None, :, :, None], tf.float32), (h, w), align_corners=False,
                    half_pixel_centers=False)[0, :, :, 0]
            out["class_map"] = tf.cast(class_map, tf.uint8)
        if "det_heatmap" in raw:
            out["boxes"], out["scores"], out["classes"] = decode_detections(
                raw["det_heatmap"][0], raw["det_wh"][0], raw["det_offset"][0], top_k, model.det_stride)
        return out

    return serve


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def compare_outputs(reference: dict, candidate: dict, score_threshold=0.3, box_tol=1.0) -> dict:
    """Agreement of two engines' outputs on one frame: class-map fraction, matched confident boxes."""
    result = {}
    if "class_map" in reference:
        result["class_map_agreement"] = float(np.mean(reference["class_map"] == candidate["class_map"]))
    if "boxes" in reference:
        ref = reference["scores"] >= score_threshold
        cand = candidate["scores"] >= score_threshold
        matched = 0
        for box, cls in zip(reference["boxes"][ref], reference["classes"][ref]):
            same = (candidate["classes"][cand] == cls) & (
                np.abs(candidate["boxes"][cand] - box).max(axis=1) <= box_tol)
            matched += bool(same.any())
        result["boxes_reference"] = int(ref.sum())
        result["boxes_candidate"] = int(cand.sum())
        result["boxes_matched"] = matched
    return result


def agreement_summary(per_frame: list[dict]) -> dict:
    """Totals over frames; ``ok`` is False when class maps or confident boxes disagree."""
    summary = {"frames": len(per_frame)}
    if per_frame and "class_map_agreement" in per_frame[0]:
        summary["class_map_agreement"] = float(np.mean([f["class_map_agreement"] for f in per_frame]))
    if per_frame and "boxes_reference" in per_frame[0]:
        for key in ("boxes_reference", "boxes_candidate", "boxes_matched"):
            summary[key] = int(sum(f[key] for f in per_frame))
        summary["box_agreement"] = (summary["boxes_matched"] / summary["boxes_reference"]
                                    if summary["boxes_reference"] else 1.0)
    summary["ok"] = summary.get("class_map_agreement", 1.0) >= MIN_CLASS_MAP_AGREEMENT and summary.get(
        "box_agreement", 1.0) >= 0.98 and abs(summary.get("boxes_candidate", 0) - summary.get(
            "boxes_reference", 0)) <= max(2, 0.02 * summary.get("boxes_reference", 0))
    return summary


def verification_frames(image_hw, count):
    """``count`` validation frames letterboxed to the model input, as the node would feed them."""
    from perception_core.datasets.simulator import simulator_frames
    from perception_core.pipeline.letterbox import letterbox
    from perception_core.sim import VALIDATION_SEED

    frames = simulator_frames(VALIDATION_SEED, max(count, 1))
    return [letterbox(np.asarray(frames.images[i]), image_hw)[0] for i in range(count)]


def sidecar_fields(name, variant, precision, image_hw, outputs, top_k, stride, settings, metrics, extra=None):
    h, w = image_hw
    return {"name": name, "variant": variant, "precision": precision,
            "input": {"name": "image", "shape": [1, h, w, 3], "dtype": "uint8", "layout": "NHWC",
                      "color_order": "BGR", "normalization": "in graph: x / 127.5 - 1",
                      "preprocess": "perception_core.pipeline.letterbox.letterbox (centred, pad 114)"},
            "outputs": {k: dict(zip(("shape", "dtype"), OUTPUT_SHAPES[k](h, w, top_k))) for k in outputs},
            "seg_classes": list(SEG_CLASSES), "det_classes": list(DET_CLASSES),
            "seg_colors_bgr": [list(c) for c in SEG_COLORS_BGR], "stride": stride, "top_k": top_k,
            "boxes": "xyxy in model-input pixels", "training": settings, "git_commit": git_commit(),
            "command": " ".join(["python -m perception_core"] + sys.argv[1:]), "metrics": metrics, **(extra or {})}


def export(checkpoint, out, top_k=100, verify_frames=50, eval_frames=100, tflite=None, threads=2,
           class_map_stride=1, image_hw=None, frames=None, model=None, settings=None):
    """Export ``checkpoint`` (a run dir) to ``out``; tests pass ``model``/``settings``/``frames`` directly."""
    import tensorflow as tf
    import tf2onnx

    from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine
    from perception_core.training.train import load_trained

    if model is None:
        model, settings = load_trained(checkpoint, image_hw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_hw = tuple(model.image_shape[:2])
    serve = inference_function(model, top_k, class_map_stride)
    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET, output_path=str(out))

    engine = OnnxRuntimeEngine(out, intra_op_threads=threads)
    frames = verification_frames(image_hw, verify_frames) if frames is None else frames
    checks = []
    for x in frames:
        reference = {k: v.numpy() for k, v in serve(tf.constant(x[None])).items()}
        checks.append(compare_outputs(reference, engine.infer({"image": x[None]})))
    verification = agreement_summary(checks)
    print(f"ONNX Runtime vs TensorFlow on {len(frames)} frames: {verification}")
    if not verification["ok"]:
        raise ExportMismatchError(f"{out}: ONNX Runtime disagrees with TensorFlow: {verification}")
    outputs = engine.output_names
    params = int(model.count_params())
    fields = dict(name=out.stem, variant=model.variant, image_hw=image_hw, outputs=outputs, top_k=top_k,
                  stride=model.det_stride, settings=settings or {},
                  extra={"params": params, "verification": verification, "class_map_stride": class_map_stride})
    write_sidecar(out, sidecar_fields(precision="fp32", metrics={}, **fields))
    if eval_frames:
        from perception_core.metrics.evaluate import evaluate

        metrics = evaluate([out], frames=eval_frames, threads=threads)[out.name]
        write_sidecar(out, sidecar_fields(precision="fp32", metrics=metrics, **fields))
        print(f"{out}: mIoU {metrics['miou']} mAP50 {metrics['map50']} on {eval_frames} validation frames")
    if tflite:
        export_tflite(serve, frames, tflite, fields)
    return out


def export_tflite(serve, frames, path, fields):
    """LiteRT flatbuffer of the same inference function, checked against TensorFlow like the ONNX file."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Keras 3 variables survive the SavedModel route as TFLite resource variables that read as
    # garbage (NaN): freeze them into constants first, then restore the output names.
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    names = sorted(serve.get_concrete_function().structured_outputs)  # tf.nest flattens dicts by sorted key

    @tf.function(input_signature=serve.input_signature)
    def frozen_serve(image):
        return dict(zip(names, frozen(image)))

    path = Path(path)
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(tf.Module(), saved, signatures={"serving_default": frozen_serve.get_concrete_function()})
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(saved).convert())
    interpreter = Interpreter(model_path=str(path), num_threads=2)
    runner = interpreter.get_signature_runner()
    checks = []
    for x in frames:
        reference = {k: v.numpy() for k, v in serve(tf.constant(x[None])).items()}
        checks.append(compare_outputs(reference, runner(image=x[None])))
    verification = agreement_summary(checks)
    print(f"LiteRT vs TensorFlow on {len(frames)} frames: {verification}")
    if not verification["ok"]:
        raise ExportMismatchError(f"{path}: LiteRT disagrees with TensorFlow: {verification}")
    fields = {**fields, "extra": {**fields["extra"], "verification": verification, "runtime": "LiteRT"}}
    write_sidecar(path, sidecar_fields(precision="fp32", metrics={}, **fields))
