"""Real, tiny ONNX models for tests, built with onnx.helper (no torch needed).

The "green model" averages each colour channel over the image and scores
`sigmoid(gain * (G - (R + B) / 2) + bias)` as aurora: a saturated green photo scores near 1,
grey or red near 0. It follows the metadata contract exactly, so the daemon cannot tell it
from an exported model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nordlys.daemon.contract import INPUT_NAME, OUTPUT_NAME, ModelMeta, to_metadata


def make_green_model(path: Path, *, size: int = 32, threshold: float = 0.5, version: str = "green-test-1",
                     resize: str = "squash", gain: float = 20.0, bias: float = -2.0,
                     labels: tuple[str, ...] = ("other", "aurora"),
                     metadata: dict[str, str] | None = None) -> Path:
    """Write the green model to `path` and return it. `metadata` replaces the contract's props."""
    aurora = labels.index("aurora") if "aurora" in labels else 1
    weight = np.zeros((3, len(labels)), dtype=np.float32)  # Gemm: (N,3) @ (3,C)
    weight[:, aurora] = [-gain / 2, gain, -gain / 2]
    bias_vec = np.zeros(len(labels), dtype=np.float32)
    bias_vec[aurora] = bias
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], [OUTPUT_NAME]),
        ],
        "green",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(labels)])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias_vec, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is None:
        metadata = to_metadata(ModelMeta(labels=labels, input_size=size, mean=(0.0, 0.0, 0.0),
                                         std=(1.0, 1.0, 1.0), threshold=threshold, version=version,
                                         resize=resize, backbone="green-test"))
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_nan_model(path: Path, *, size: int = 32) -> Path:
    """A contract-following model that loads but scores nothing: its logits are multiplied by
    infinity, so every probability comes out NaN (the start-up probe must refuse it)."""
    good = onnx.load(str(make_green_model(path, size=size, version="nan-test-1")))
    graph = good.graph
    graph.node[-1].output[0] = "finite"
    graph.node.append(helper.make_node("Mul", ["finite", "INF"], [OUTPUT_NAME]))
    graph.initializer.append(numpy_helper.from_array(np.array([np.inf], dtype=np.float32), "INF"))
    onnx.checker.check_model(good)
    onnx.save(good, str(path))
    return path
