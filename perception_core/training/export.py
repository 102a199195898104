"""``python -m perception_core export``: trained weights -> ONNX (+ LiteRT) with a verified sidecar.

The exported graph is the model's own inference graph (``PerceptionModel.inference_model``): uint8
NHWC image in; class map (argmax in graph), CenterNet peaks (3x3 max-pool) and top-K
boxes/scores/classes out, all fixed-size. Export runs ONNX Runtime against TensorFlow on real
simulator frames and refuses to write a sidecar when they differ, so a broken conversion never
reaches models/. The sidecar carries the DatasetSpec the model was trained on.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from perception_core.model_spec import write_sidecar
from perception_core.training.model import TOP_K

OPSET = 17  # TensorRT 8.6+/10, ONNX Runtime and tf2onnx all take it; newer opsets gain nothing here
VERIFY_FRAMES = 50  # validation frames on which the exported file must agree with TensorFlow
EVAL_FRAMES = 100  # validation frames for the sidecar's metrics when called from Python
# What "agree" means, on each verification frame:
MIN_CLASS_MAP_AGREEMENT = 0.999  # fraction of class-map pixels equal (float rounding flips a few ties)
MIN_BOX_AGREEMENT = 0.98  # fraction of confident reference boxes found again ...
BOX_TOLERANCE_PX = 1.0  # ... same class, every coordinate within this many input pixels
CONFIDENT_SCORE = 0.3  # boxes compared: those above this score (below it, peaks swap places freely)
BOX_COUNT_SLACK = (2, 0.02)  # confident box counts may differ by max(2, 2 %): scores straddling the cut
OUTPUT_SHAPES = {"class_map": lambda h, w, k: ([h, w], "uint8"), "boxes": lambda h, w, k: ([k, 4], "float32"),
                 "scores": lambda h, w, k: ([k], "float32"), "classes": lambda h, w, k: ([k], "int32")}


class ExportMismatchError(RuntimeError):
    """ONNX Runtime disagrees with TensorFlow on real frames."""


def serving_function(model, top_k=TOP_K, class_map_stride=1):
    """The model's inference graph as a tf.function over one uint8 (1,H,W,3) image, as tf2onnx and TFLite take it."""
    import tensorflow as tf

    inference = model.inference_model(top_k, class_map_stride)
    h, w = model.image_shape[:2]

    @tf.function(input_signature=[tf.TensorSpec((1, h, w, 3), tf.uint8, name="image")])
    def serve(image):
        return inference(image, training=False)

    return serve


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def compare_outputs(reference: dict, candidate: dict, score_threshold=CONFIDENT_SCORE,
                    box_tol=BOX_TOLERANCE_PX) -> dict:
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
    slack = max(BOX_COUNT_SLACK[0], BOX_COUNT_SLACK[1] * summary.get("boxes_reference", 0))
    summary["ok"] = (summary.get("class_map_agreement", 1.0) >= MIN_CLASS_MAP_AGREEMENT
                     and summary.get("box_agreement", 1.0) >= MIN_BOX_AGREEMENT
                     and abs(summary.get("boxes_candidate", 0) - summary.get("boxes_reference", 0)) <= slack)
    return summary


def verification_frames(image_hw, count):
    """``count`` simulator validation frames letterboxed to the model input, as the node would feed them.

    Only the images are used: whatever classes the model has, the two runtimes must agree on them.
    """
    from perception_core.datasets.simulator import SimulatorSource
    from perception_core.pipeline.letterbox import letterbox

    samples = iter(SimulatorSource("validation", max(count, 1)))
    return [letterbox(next(samples).image, image_hw)[0] for _ in range(count)]


def sidecar_metrics(model_path, frames, threads, source=None) -> dict:
    """The sidecar's ``metrics``: the model's pipeline scored on the first ``frames`` frames of ``source``
    (default: the simulator's validation split), by the one evaluation path. Empty (with a note) when no
    source is given and the model's classes are not the simulator's: its frames are not labelled in them."""
    from perception_core.datasets.simulator import SimulatorSource
    from perception_core.evaluation.evaluate import evaluate, evaluation_pipelines

    pipeline = evaluation_pipelines([model_path], threads)[Path(model_path).name]
    if source is None and not _simulator_classes(pipeline.spec):
        print(f"{model_path}: no sidecar metrics (the simulator's frames are not labelled in this model's classes); "
              f"score it on your validation data: python -m perception_core evaluate --model {model_path} "
              "--data VAL.yaml")
        return {}
    source = SimulatorSource("validation", frames) if source is None else source
    return {**evaluate(pipeline, source, count=frames).as_dict(), "threads": threads}


def _simulator_classes(spec) -> bool:
    """Whether a model in ``spec`` can be scored on simulator frames (same class lists)."""
    from perception_core.datasets.simulator import SimulatorSource

    sim = SimulatorSource.spec
    return spec.seg_classes == sim.seg_classes and spec.det_classes == sim.det_classes


def sidecar_fields(name, variant, precision, image_hw, outputs, top_k, stride, spec, settings, metrics,
                   extra=None):
    h, w = image_hw
    return {"name": name, "variant": variant, "precision": precision,
            "input": {"name": "image", "shape": [1, h, w, 3], "dtype": "uint8", "layout": "NHWC",
                      "color_order": "BGR", "normalization": "in graph: x / 127.5 - 1",
                      "preprocess": "perception_core.pipeline.letterbox.letterbox (centred, pad 114)"},
            "outputs": {k: dict(zip(("shape", "dtype"), OUTPUT_SHAPES[k](h, w, top_k))) for k in outputs},
            **spec.to_dict(), "stride": stride, "top_k": top_k,
            "boxes": "xyxy in model-input pixels", "training": settings, "git_commit": git_commit(),
            "command": " ".join(["python -m perception_core"] + sys.argv[1:]), "metrics": metrics, **(extra or {})}


def export(checkpoint, out, top_k=TOP_K, verify_frames=VERIFY_FRAMES, eval_frames=EVAL_FRAMES, tflite=None,
           threads=2, class_map_stride=1, image_hw=None, frames=None, model=None, settings=None, eval_source=None):
    """Export ``checkpoint`` (a run dir) to ``out``; tests pass ``model``/``settings``/``frames`` directly.

    The sidecar's classes are the model's: the DatasetSpec it was built for and trained on. Its
    metrics come from ``eval_frames`` frames of ``eval_source`` (default: the simulator's validation split,
    for a model in the simulator's classes; none for another label set). ``settings`` (the run's) carry
    its datasets, backbone and backbone weights into the sidecar's ``training``.
    """
    import tensorflow as tf
    import tf2onnx

    from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine
    from perception_core.training.train import load_trained

    if model is None:
        model, settings = load_trained(checkpoint, image_hw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_hw = tuple(model.image_shape[:2])
    serve = serving_function(model, top_k, class_map_stride)
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
                  stride=model.det_stride, spec=model.spec, settings=settings or {},
                  extra={"params": params, "verification": verification, "class_map_stride": class_map_stride})
    write_sidecar(out, sidecar_fields(precision="fp32", metrics={}, **fields))
    metrics = sidecar_metrics(out, eval_frames, threads, eval_source) if eval_frames else {}
    if metrics:
        write_sidecar(out, sidecar_fields(precision="fp32", metrics=metrics, **fields))
        print(f"{out}: mIoU {metrics['miou']} mAP50 {metrics['map50']} on {metrics['frames']} frames")
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
