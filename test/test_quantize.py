"""The CPU INT8 form keeps the stem (leading convs + normalisation) in float, the TensorRT form quantizes
every conv (real ONNX Runtime quantization of a small MobileNet-like graph; no TensorFlow, a few seconds)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from perception_core.training.quantize import float_stem, quantize_onnx

RNG = np.random.default_rng(0)
HW = (32, 48)


def conv(name, x, out_channels, in_per_group, kernel=1, stride=1, group=1):
    """A conv node with its weight and bias initializers (He-scaled), followed by a ReLU."""
    weight = numpy_helper.from_array(
        (RNG.standard_normal((out_channels, in_per_group, kernel, kernel)) * np.sqrt(2 / (in_per_group * kernel ** 2)))
        .astype(np.float32), f"{name}_w")
    bias = numpy_helper.from_array(RNG.standard_normal(out_channels).astype(np.float32) * 0.1, f"{name}_b")
    pad = kernel // 2
    node = helper.make_node("Conv", [x, weight.name, bias.name], [f"{name}_out"], name=name, group=group,
                            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
    relu = helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu")
    return [node, relu], [weight, bias], f"{name}_relu"


def stem_model(channels) -> onnx.ModelProto:
    """uint8 NHWC image -> normalise -> convs of (out, in per group, kernel, stride, group) -> float output."""
    scale = numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale")
    shift = numpy_helper.from_array(np.array(-1.0, np.float32), "shift")
    nodes = [helper.make_node("Cast", ["image"], ["x0"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["x0", "scale"], ["x1"], name="normalize_mul"),
             helper.make_node("Add", ["x1", "shift"], ["x2"], name="normalize_add"),
             helper.make_node("Transpose", ["x2"], ["x"], perm=[0, 3, 1, 2], name="to_nchw")]
    inits, x = [scale, shift], "x"
    for index, spec in enumerate(channels):
        more_nodes, more_inits, x = conv(f"conv{index}", x, *spec)
        nodes += more_nodes
        inits += more_inits
    nodes.append(helper.make_node("Identity", [x], ["features"], name="out"))
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, *HW, 3])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MOBILENET = [(16, 3, 3, 2, 1), (16, 1, 3, 1, 16), (8, 16, 1, 1, 1), (48, 8, 1, 1, 1), (48, 1, 3, 2, 48),
             (16, 48, 1, 1, 1)]
NO_BOTTLENECK = [(16, 3, 3, 2, 1), (32, 16, 3, 1, 1), (64, 32, 3, 2, 1), (64, 64, 3, 1, 1), (32, 64, 1, 1, 1)]


NORMALISATION = ["cast", "normalize_mul", "normalize_add", "to_nchw"]


def test_the_float_stem_ends_at_the_first_narrowing_conv_and_takes_the_normalisation():
    assert float_stem(stem_model(MOBILENET)) == [*NORMALISATION, "conv0", "conv0_relu", "conv1", "conv1_relu", "conv2"]
    assert float_stem(stem_model(NO_BOTTLENECK)) == []  # narrows only at the 5th conv: past the stem
    assert float_stem(stem_model(MOBILENET), 1) == [*NORMALISATION, "conv0"]
    assert float_stem(stem_model(MOBILENET), 0) == []


def quantized_convs(path) -> dict[str, bool]:
    """Conv name -> whether its weight is int8 (dequantized by a DequantizeLinear) in a QDQ model."""
    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {n.name: n.input[1] in dequantized for n in graph.node if n.op_type == "Conv"}


@pytest.mark.parametrize("stem,expected_float", [(None, {"conv0", "conv1", "conv2"}), (0, set()), (1, {"conv0"})])
def test_cpu_form_keeps_the_stem_float_and_the_tensorrt_form_quantizes_every_conv(tmp_path, stem, expected_float):
    model = tmp_path / "stem.onnx"
    onnx.save(stem_model(MOBILENET), str(model))
    frames = RNG.integers(0, 256, (8, *HW, 3), dtype=np.uint8)
    cpu, trt = tmp_path / "cpu.onnx", tmp_path / "trt.onnx"
    cpu_settings = quantize_onnx(model, cpu, "cpu", frames, stem=stem)
    trt_settings = quantize_onnx(model, trt, "tensorrt", frames, stem=stem)

    assert {name for name, q in quantized_convs(cpu).items() if not q} == expected_float
    assert {n for n in cpu_settings["float_stem"] if n.startswith("conv") and "relu" not in n} == expected_float
    assert cpu_settings["form"] == "cpu"
    graph = onnx.load(str(cpu)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    normalize = next(n for n in graph.node if n.name == "normalize_mul")
    assert (normalize.input[0] in dequantized) == (not expected_float)  # float in front of a float stem
    assert all(quantized_convs(trt).values()) and trt_settings["float_stem"] == []
    reference = ort.InferenceSession(str(model)).run(None, {"image": frames[:1]})[0]
    for path in (cpu, trt):
        out = ort.InferenceSession(str(path)).run(None, {"image": frames[:1]})[0]
        assert out.shape == reference.shape
        assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.98, path.name  # still the same function
