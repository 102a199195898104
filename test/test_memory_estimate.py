"""TensorRT device memory: the ONNX estimate against a graph counted by hand, and the read-from-plans path
against the fake ``tensorrt`` (test/fakes) on the versions whose attribute names differ."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_tensorrt_glue import gpu, install, make_gpu  # noqa: F401 - fixtures: the fake GPU and tensorrt

from perception_core.engines import memory_estimate as me


def chain_model(folder):
    """x[1,3,8,8] f32 -Conv(W1[4,3,3,3], B1[4], pad 1)-> y[1,4,8,8] -Relu-> z -Relu-> w -Conv(W2[2,4,1,1])->
    out[1,2,8,8]: activations and weights small enough to count by hand."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("W1", (4, 3, 3, 3)), ("B1", (4,)), ("W2", (2, 4, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["z"]), helper.make_node("Relu", ["z"], ["w"]),
             helper.make_node("Conv", ["w", "W2"], ["out"])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "chain.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("precision, weights", [
    ("fp16", (108 + 4 + 8) * 2),  # every float constant at 2 bytes
    ("int8", (108 + 8) * 1 + 4 * 2),  # the two conv weights at 1 byte, the bias at fp16
    ("fp32", (108 + 4 + 8) * 4),
])
def test_estimate_matches_the_graph_counted_by_hand(tmp_path, precision, weights):
    got = me.onnx_memory_estimate(chain_model(tmp_path), precision)
    act = 4 * 64 * (4 if precision == "fp32" else 2)  # y, z and w: 4 x 8 x 8 each
    assert got["weights_bytes"] == weights
    assert got["activations_peak_bytes"] == 2 * act  # y+z while the first Relu runs, z+w while the second does
    assert got["activations_sum_bytes"] == 3 * act
    assert got["io_bytes"] == (3 + 2) * 64 * 4  # x and out stay float32, as the network declares them
    assert got["device_bytes"] == weights + 2 * act + (3 + 2) * 64 * 4
    assert got["source"] == "estimate"


def test_a_dynamic_shape_is_refused_by_name(tmp_path):
    model = onnx.load(chain_model(tmp_path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, tmp_path / "dynamic.onnx")
    with pytest.raises(ValueError, match="no static shape"):
        me.onnx_memory_estimate(tmp_path / "dynamic.onnx")


def test_without_tensorrt_the_comparison_is_labelled_an_estimate(tmp_path, monkeypatch):
    from perception_core.engines import tensorrt_engine as te

    monkeypatch.setattr(te, "import_tensorrt", lambda: (_ for _ in ()).throw(ImportError("no tensorrt")))
    path = chain_model(tmp_path)
    got = me.tensorrt_memory({"multitask": path, "seg_only": path, "det_only": path})
    assert got["source"].startswith("estimate") and "CUDA context" in got["note"]
    assert set(got) >= {"fp16", "int8"}
    assert got["fp16"]["multitask_over_separate"] == pytest.approx(0.5)
    assert got["int8"]["engines"]["seg_only"]["weights_bytes"] == (108 + 8) + 4 * 2


@pytest.mark.parametrize("version, attribute", [("8.6.2", "device_memory_size"), ("10.3.0", "device_memory_size_v2"),
                                                ("11.1.0", "device_memory_size_v2")])
def test_where_tensorrt_imports_the_figures_are_read_from_the_built_plans(install, gpu, tmp_path,  # noqa: F811
                                                                         version, attribute):
    trt = install(version, gpu)
    path = chain_model(tmp_path)
    got = me.tensorrt_memory({"multitask": path, "seg_only": path, "det_only": path}, cache_dir=tmp_path / "plans")
    assert got["source"] == f"read from plans built by TensorRT {version}" and set(got) == {"source", "note", "fp16"}
    plans = sorted((tmp_path / "plans").glob("*.plan"))
    assert len(plans) == 1  # the three names share one ONNX file: one cached plan
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plans[0].read_bytes())
    read = got["fp16"]["engines"]["multitask"]
    assert read["context_device_bytes"] == getattr(engine, attribute) == 3 * 4 * 64 * 4  # the fake: y, z, w in fp32
    assert read["plan_bytes"] == plans[0].stat().st_size
    assert read["device_bytes"] == read["plan_bytes"] + read["context_device_bytes"] + (3 + 2) * 64 * 4
    assert got["fp16"]["multitask_over_separate"] == pytest.approx(0.5)
    if version.startswith("11."):
        assert not hasattr(engine, "device_memory_size")  # gone in 11: reading it would fail there
