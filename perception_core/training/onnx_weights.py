"""Warm start from an exported ONNX model, for when the run that trained it is gone (``train --init-from M.onnx``).

The exporter keeps each Keras layer's scope in the ONNX names (``functional_1/backbone_1/block_3_expand_1/...``)
and folds every BatchNormalization into the conv before it: kernel W' = W * gamma / sqrt(var + eps) and bias
b' (a depthwise conv keeps its BN as a Mul and an Add after it). The original BN statistics are lost, so
the conv gets W' and its BN is rewritten as an identity plus b' around statistics measured on real
images: moving mean m and variance v of the conv's output, gamma = sqrt(v + eps), beta = m + b'. At
inference that BN computes exactly x + b'; in training its batch statistics are close to m and v, so the
first steps see the network the model was, not a re-normalised one. Calibrated where the conv's
output is reachable (the backbone, a functional model); elsewhere m = 0, v = 1 - eps.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

SCOPE = re.compile(r"^(.+)_1$")  # a Keras layer's scope in a traced name: "<layer name>_1"


def layer_path(name: str) -> tuple[str, ...]:
    """("functional", "backbone", "block_3_expand") from "functional_1/backbone_1/block_3_expand_1/convolution/...":
    the scopes of a traced name, the outer model's first (see :func:`_sublayer`)."""
    path = []
    for part in name.split("/"):
        match = SCOPE.match(part)
        if not match:
            break
        path.append(match.group(1))
    return tuple(path)


def folded_convs(onnx_path: str | Path) -> dict[tuple[str, ...], dict]:
    """{conv layer path: {"kernel": ONNX (M, C/g, kh, kw), "bias": b' or None, "bn": BN layer path or None,
    "group": g}} for every Conv of the graph, BN scales of depthwise convs multiplied into their kernels."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        kernel = weights[node.input[1]].astype(np.float32)
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        # the weight's name carries its layer, unless the exporter merged equal weights into one constant or
        # folded it (then the node's name does)
        shared = sum(n.op_type == "Conv" for n in consumers[node.input[1]]) > 1
        path = (not shared and layer_path(node.input[1])) or layer_path(node.name)
        bias, shift_scope = None, None
        if len(node.input) > 2 and node.input[2] in weights:
            bias, shift_scope = weights[node.input[2]].astype(np.float32), node.input[2]
        else:  # an unfolded BN right after: Mul by the scale, then Add the shift
            after = consumers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type == "Mul":
                scale_name = next((i for i in after[0].input if i in weights), None)
                add = consumers.get(after[0].output[0], [])
                shift_name = next((i for i in add[0].input if i in weights), None) if len(add) == 1 and \
                    add[0].op_type == "Add" else None
                if scale_name and shift_name:
                    kernel = kernel * weights[scale_name].reshape(-1, 1, 1, 1)
                    bias, shift_scope = weights[shift_name].astype(np.float32).reshape(-1), scale_name
        if bias is None:  # a BN whose shift folded to exactly zero leaves no bias input; the node keeps its name
            bias, shift_scope = np.zeros(kernel.shape[0], np.float32), node.name
        bn = layer_path(shift_scope)
        bn = bn if bn and bn != path else None
        if group > 1:  # the depthwise half of a separable conv has its own entry
            path = path + ("depthwise",)
        convs[path] = {"kernel": kernel, "bias": bias, "bn": bn, "group": group}
    return convs


def _sublayer(root, path: tuple[str, ...]):
    """The layer at ``path`` under ``root``, the path read with or without its first scope (the exported model's
    own name: "functional", "multitask_inference"); a one-name path that is not a child (a layer the inference
    graph calls outside its parent's scope, e.g. seg_logits' classifier) is found anywhere if its name is unique."""
    return _resolve(root, path)[0]


def _resolve(root, path: tuple[str, ...]):
    """(layer, its path under ``root``) or (None, ``path``); see :func:`_sublayer`."""
    layer = _find(root, path)
    if layer is None and len(path) > 1:
        path = path[1:]
        layer = _find(root, path)
    return layer, path


def _find(root, path: tuple[str, ...]):
    layer = root
    for name in path:
        children = {child.name: child for child in layer._flatten_layers(include_self=False, recursive=False)}
        if name not in children:
            if len(path) == 1:
                found = [child for child in root._flatten_layers(include_self=False) if child.name == name]
                return found[0] if len(found) == 1 else None
            return None
        layer = children[name]
    return layer


def _keras_kernel(conv, entry) -> list[np.ndarray]:
    """ONNX (M, C/g, kh, kw) -> Keras layout: Conv2D (kh, kw, C, M); DepthwiseConv2D (kh, kw, C, 1)."""
    kernel = entry["kernel"].transpose(2, 3, 1, 0)
    if entry["group"] > 1:
        kernel = kernel.transpose(0, 1, 3, 2)
    return [kernel] + ([entry["bias"]] if conv.use_bias else [])


def load_onnx_weights(onnx_path, model: keras.Model, calibration_images: np.ndarray) -> tuple[list[str], list[str]]:
    """Copy the convs of an exported model into ``model`` where layer path and shapes match; returns (copied,
    fresh) layer paths. ``calibration_images`` (N,H,W,3) uint8 set the BN statistics (see the module's doc)."""
    convs = folded_convs(onnx_path)
    targets, copied, bn_shift, set_layers = {}, [], {}, set()
    for path, entry in convs.items():
        if path[-1] == "depthwise":  # a SeparableConv2D's depthwise half, or a DepthwiseConv2D layer
            layer = _sublayer(model, path[:-1])
            if isinstance(layer, keras.layers.SeparableConv2D):
                targets.setdefault(path[:-1], {})["depthwise"] = entry
                continue
            layer, path = _sublayer(model, path[:-1]), path[:-1]
            if not isinstance(layer, keras.layers.DepthwiseConv2D):
                continue
        targets.setdefault(path, {})["conv"] = entry
    for path, parts in targets.items():
        layer, path = _resolve(model, path)
        if layer is None or "conv" not in parts:
            continue
        entry = parts["conv"]
        if isinstance(layer, keras.layers.SeparableConv2D):
            if "depthwise" not in parts:
                continue
            new = [parts["depthwise"]["kernel"].transpose(2, 3, 0, 1), entry["kernel"].transpose(2, 3, 1, 0)]
            new += [entry["bias"]] if layer.use_bias else []
        else:
            new = _keras_kernel(layer, entry)
        if [tuple(w.shape) for w in layer.weights] != [w.shape for w in new]:
            continue
        bn, bn_path = _resolve(model, entry["bn"]) if entry["bn"] else (None, None)
        if not isinstance(bn, keras.layers.BatchNormalization):  # a constant the exporter shared between layers
            bn = None
        elif bn.gamma.shape != entry["bias"].shape:
            continue
        if bn is None and not getattr(layer, "use_bias", False) and entry["bias"].any():
            continue  # a shift with nowhere to go
        layer.set_weights(new)
        copied.append("/".join(path))
        set_layers.add(id(layer))
        if bn is not None:
            bn_shift[bn] = entry["bias"]
            copied.append("/".join(bn_path))
            set_layers.add(id(bn))
    for bn, shift in bn_shift.items():  # identity + shift at inference, whatever the statistics
        bn.set_weights([np.ones_like(shift), shift, np.zeros_like(shift), np.full_like(shift, 1.0 - bn.epsilon)])
    _calibrate(model, bn_shift, calibration_images)
    fresh = [layer.name for layer in model.layers if layer.weights and not any(
        id(sub) in set_layers for sub in layer._flatten_layers(include_self=True))]
    return copied, fresh


def _calibrate(model, bn_shift: dict, images: np.ndarray) -> None:
    """Each reachable BN: statistics of its input on ``images``, then gamma/beta that keep it identity + shift."""
    backbone = getattr(model, "backbone", None)
    layers = [bn for bn in bn_shift if backbone is not None and bn in backbone.layers]
    if not layers:
        return
    probe = keras.Model(backbone.inputs, [bn.input for bn in layers])
    outputs = probe.predict(images, batch_size=8, verbose=0)
    for bn, x in zip(layers, outputs if isinstance(outputs, list) else [outputs], strict=True):
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        bn.set_weights([np.sqrt(var + bn.epsilon), mean + bn_shift[bn], mean, var])
