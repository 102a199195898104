"""Multiply-adds per part, counted on hand-built ONNX graphs and checked against the counts by hand."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from perception_core.macs import format_macs, model_macs, part_of


def conv(name, x, out, weight_shape, group=1, stride=1):
    weight = numpy_helper.from_array(np.zeros(weight_shape, np.float32), f"{name}/kernel:0")
    k = weight_shape[2]
    node = helper.make_node("Conv", [x, weight.name], [out], name=name, group=group, strides=[stride, stride],
                            pads=[k // 2] * 4, kernel_shape=[k, k])
    return node, weight


def write(tmp_path, nodes_weights, out_name, out_channels, hw):
    nodes, weights = zip(*nodes_weights)
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                [1, 8, 32, 48])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1, out_channels, *hw])],
                              list(weights))
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_counts_match_the_hand_count(tmp_path):
    path = write(tmp_path, [
        conv("functional_1/backbone_1/stem_1/Conv", "image", "a", (16, 8, 3, 3), stride=2),  # 16x24 out
        conv("functional_1/neck_1/dw_1/depthwise", "a", "b", (16, 1, 3, 3), group=16),
        conv("functional_1/seg_trunk_1/pw_1/Conv", "b", "c", (4, 16, 1, 1)),
        conv("functional_1/det_heatmap_1/BiasAdd", "c", "d", (2, 4, 1, 1)),
    ], "d", 2, (16, 24))
    macs = model_macs(path)
    cells = 16 * 24
    assert macs == {"backbone": cells * 16 * 8 * 9, "neck": cells * 16 * 9, "segmentation head": cells * 4 * 16,
                    "detection head": cells * 2 * 4, "total": cells * (16 * 8 * 9 + 16 * 9 + 4 * 16 + 2 * 4)}
    table = format_macs({"m.onnx": macs})
    assert "| backbone | 0.4 |" in table and table.count("\n") == 6


def test_a_part_named_nowhere_is_other_and_a_dynamic_shape_is_refused(tmp_path):
    assert part_of(["Conv__12", "const_fold_opt__3"]) == "other"
    assert part_of(["Conv__12", "functional_1/backbone_1/Conv1_1/convolution/merged_input:0"]) == "backbone"
    node, weight = conv("x", "image", "y", (4, 8, 3, 3))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                          [1, 8, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "d.onnx"))
    with pytest.raises(ValueError, match="fixed input size"):
        model_macs(tmp_path / "d.onnx")


def test_the_bundled_models_parts_add_up():
    from perception_core.resources import package_file

    macs = {name: model_macs(package_file("models", f"{name}.onnx")) for name in ("multitask", "seg_only", "det_only")}
    multitask, seg, det = macs["multitask"], macs["seg_only"], macs["det_only"]
    assert "other" not in multitask and multitask["total"] == sum(v for k, v in multitask.items() if k != "total")
    assert multitask["backbone"] == seg["backbone"] == det["backbone"] > 0
    assert seg["detection head"] == 0 == det["segmentation head"]
    assert multitask["segmentation head"] == seg["segmentation head"] and multitask["detection head"] == det[
        "detection head"]
