"""Multiply-adds per part of an exported model, read from its ONNX graph: ``python -m perception_core macs``.

The parts are the Keras layer scopes that the exporter keeps in node and weight names: backbone, neck,
segmentation head, detection head. Conv, ConvTranspose, MatMul and Gemm are counted (one multiply-add
per weight per output position); the in-graph decoding (resize, argmax, max-pool peaks, top-k) and
elementwise ops do no multiply-adds and are not counted: their time shows in the stage timings instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# part -> substrings of node or weight names (first match wins, in this order)
PARTS = {
    "backbone": ("backbone",),
    "neck": ("neck",),
    "segmentation head": ("seg_", "classifier", "class_map"),
    "detection head": ("det_", "peaks"),
}
OTHER = "other"
COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def part_of(names: list[str]) -> str:
    for part, keys in PARTS.items():
        if any(key in name for name in names for key in keys):
            return part
    return OTHER


def _shape(value_info) -> tuple[int, ...]:
    return tuple(d.dim_value for d in value_info.type.tensor_type.shape.dim)


def node_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-adds of one Conv/ConvTranspose/MatMul/Gemm node from its weight and output shapes."""
    weight, out = shapes.get(node.input[1]), shapes.get(node.output[0])
    if weight is None or out is None or 0 in out or 0 in weight:
        raise ValueError(f"{node.op_type} {node.name or node.output[0]}: shapes unknown after shape inference "
                         f"(weight {weight}, output {out}); the count needs a model with a fixed input size")
    if node.op_type == "Conv":  # weight (M, C/group, kh, kw): each output element reads C/group x kh x kw weights
        return int(np.prod(out, dtype=np.int64) * np.prod(weight[1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":  # weight (C, M/group, kh, kw): each input element writes M/group x kh x kw
        inputs = shapes[node.input[0]]
        return int(np.prod(inputs, dtype=np.int64) * np.prod(weight[1:], dtype=np.int64))
    return int(np.prod(out, dtype=np.int64) * shapes[node.input[0]][-1])  # MatMul / Gemm: K per output element


def model_macs(path: str | Path) -> dict[str, int]:
    """{part: multiply-adds} of an ONNX model, every part of PARTS listed (0 if absent), plus "total"."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        shapes.setdefault(info.name, _shape(info))
    macs = dict.fromkeys([*PARTS, OTHER], 0)
    for node in graph.node:
        if node.op_type in COUNTED_OPS:
            macs[part_of([node.name, *node.input[1:]])] += node_macs(node, shapes)
    if not macs[OTHER]:
        del macs[OTHER]
    macs["total"] = sum(macs.values())
    return macs


def format_macs(table: dict[str, dict[str, int]]) -> str:
    """Markdown table: one column per model, millions of multiply-adds."""
    parts = list(dict.fromkeys(part for macs in table.values() for part in macs))
    rows = ["| part (M multiply-adds) | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
    rows += [f"| {part} | " + " | ".join(f"{macs.get(part, 0) / 1e6:.1f}" for macs in table.values()) + " |"
             for part in parts]
    return "\n".join(rows)
