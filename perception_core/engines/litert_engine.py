"""LiteRT engine (CPU boards, Coral Edge TPU): a ``.tflite`` export on ai-edge-litert's interpreter.

On a CPU it runs on XNNPACK with ``threads`` threads. ``delegate`` names a delegate library to
hand the graph to instead, e.g. ``libedgetpu.so.1`` for a Coral Edge TPU (which needs the
full-integer model compiled by ``edgetpu_compiler``); what the delegate cannot take stays on the CPU.
Outputs are looked up by the model's signature names, which are the sidecar's output names: the
flatbuffer's own tensor names (``PartitionedCall:1`` ...) say nothing about which output is which.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Optional, Union

import numpy as np


class LiteRTEngine:
    """Runs a ``.tflite`` model: ``infer({"image": uint8 NHWC}) -> {output name: array}``.

    Tensors are allocated once; each frame is copied into the interpreter's own input buffer and
    the outputs are copied out (the interpreter refuses to run while views of its buffers live).
    """

    def __init__(self, model_path: Union[str, Path], *, outputs, threads: int = 2, delegate: Optional[str] = None,
                 precision: str = "fp32") -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"LiteRT model {self.model_path} not found")
        try:
            from ai_edge_litert.interpreter import Interpreter, load_delegate
        except ImportError as exc:
            raise ValueError(f"engine 'litert' needs the ai-edge-litert package ({exc}): pip install ai-edge-litert") \
                from exc
        delegates = None
        if delegate:
            try:  # opened here first: load_delegate on a missing library leaves an object whose __del__ raises
                ctypes.CDLL(delegate)
                delegates = [load_delegate(delegate)]
            except (OSError, ValueError) as exc:  # OSError: library not found; ValueError: it refused to start
                raise ValueError(f"cannot load the LiteRT delegate {delegate!r}: {exc}") from exc
        self.interpreter = Interpreter(model_path=str(self.model_path), num_threads=threads,
                                       experimental_delegates=delegates)
        self.interpreter.allocate_tensors()
        signatures = self.interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"{self.model_path} must have exactly one signature (export writes 'serving_default'), "
                             f"found {sorted(signatures)}")
        runner = self.interpreter.get_signature_runner()
        inputs, found = runner.get_input_details(), runner.get_output_details()
        missing = sorted(set(outputs) - set(found))
        if missing:
            raise ValueError(f"{self.model_path} lacks the outputs {missing} its sidecar declares; "
                             f"its signature has {sorted(found)}")
        self.input_spec = {name: (tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)
                           for name, d in inputs.items()}
        self._inputs = {name: d["index"] for name, d in inputs.items()}
        self._outputs = {name: found[name]["index"] for name in outputs}
        self.name = f"litert:{Path(delegate).name if delegate else 'xnnpack'}"
        self.precision = precision

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self.interpreter
        for name, index in self._inputs.items():
            interpreter.tensor(index)()[...] = inputs[name]  # into the allocated buffer; the view dies here
        interpreter.invoke()  # releases the GIL, like ONNX Runtime's run
        return {name: interpreter.get_tensor(index) for name, index in self._outputs.items()}

    def warmup(self, runs: int = 3) -> None:
        """Run zeros through the model so XNNPACK's first-call packing does not land in a timed frame."""
        feeds = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.input_spec.items()}
        for _ in range(runs):
            self.infer(feeds)
