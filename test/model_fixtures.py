"""Small real ONNX models with known outputs, for testing the pipeline's geometry exactly.

The geometry model marks every pixel whose red channel is >= 128 as class 1 and always returns
the same boxes, so where its outputs must land in camera pixels is known in closed form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from perception_core.model_spec import write_sidecar
from perception_core.sim.classes import SIM_SPEC


def make_geometry_model(folder: Path, input_hw=(256, 320), boxes=((10, 18, 50, 58), (100, 60, 140, 120)),
                        scores=(0.9, 0.2), classes=(0, 2)) -> Path:
    """Write ``geometry.onnx`` + sidecar into ``folder``; return the ONNX path."""
    h, w = input_hw
    k = len(boxes)
    const = lambda name, array, dtype: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name + "_v", dtype, np.shape(array), np.ravel(array)))
    nodes = [
        const("starts", [2], TensorProto.INT64), const("ends", [3], TensorProto.INT64),
        const("axes", [3], TensorProto.INT64), const("sq_axes", [0, 3], TensorProto.INT64),
        const("half", [1.0 / 128.0], TensorProto.FLOAT),
        # Cast first: TensorRT takes a UINT8 network input only straight into a cast to FLOAT/HALF.
        helper.make_node("Cast", ["image"], ["imagef"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["imagef", "starts", "ends", "axes"], ["red"]),
        helper.make_node("Squeeze", ["red", "sq_axes"], ["redf"]),
        helper.make_node("Mul", ["redf", "half"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["floored"]),
        helper.make_node("Cast", ["floored"], ["class_map"], to=TensorProto.UINT8),
        const("boxes", np.asarray(boxes, np.float32), TensorProto.FLOAT),
        const("scores", np.asarray(scores, np.float32), TensorProto.FLOAT),
        const("classes", np.asarray(classes, np.int32), TensorProto.INT32),
    ]
    graph = helper.make_graph(
        nodes, "geometry", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, h, w, 3])],
        [helper.make_tensor_value_info("class_map", TensorProto.UINT8, [h, w]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [k, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [k]),
         helper.make_tensor_value_info("classes", TensorProto.INT32, [k])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(folder) / "geometry.onnx"
    onnx.save(model, path)
    write_sidecar(path, {
        "name": "geometry", "variant": "multitask", "precision": "fp32",
        "input": {"name": "image", "shape": [1, h, w, 3], "dtype": "uint8", "layout": "NHWC"},
        "outputs": {"class_map": {"shape": [h, w], "dtype": "uint8"}, "boxes": {"shape": [k, 4], "dtype": "float32"},
                    "scores": {"shape": [k], "dtype": "float32"}, "classes": {"shape": [k], "dtype": "int32"}},
        **SIM_SPEC.to_dict(), "stride": 8, "top_k": k})
    return path
