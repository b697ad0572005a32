"""Small, checked edits of ONNX graphs the runtime needs (the converters proper live in export/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def make_dynamic(model: onnx.ModelProto, batch: bool = True, hw: bool = False) -> onnx.ModelProto:
    """Rename fixed input/output dims to symbolic ones so ONNX Runtime runs any batch (and size).

    Only the graph's declared I/O shapes change; stale intermediate shape annotations are dropped
    so that they cannot contradict the new shapes.
    """
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            continue
        if batch:
            dims[0].dim_param = "N"
        if hw:
            dims[2].dim_param = "H"
            dims[3].dim_param = "W"
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def io_summary(model: onnx.ModelProto) -> dict:
    """{'inputs': [(name, dims)], 'outputs': [...]} with symbolic dims as strings."""

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    init = {i.name for i in model.graph.initializer}
    return {
        "inputs": [(v.name, dims(v)) for v in model.graph.input if v.name not in init],
        "outputs": [(v.name, dims(v)) for v in model.graph.output],
    }


def conv_flops(path: str | Path, size_hw: tuple[int, int], batch: int = 1) -> float:
    """FLOPs (2 x multiply-adds) of the Conv and ConvTranspose nodes of an ONNX model for one batch
    at size_hw, from ONNX shape inference on a copy with the input's dimensions fixed. Convolutions
    are nearly all of a matting U-Net's arithmetic; the counts agree with torch hook counts."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, [batch, dims[1].dim_value or 3, *size_hw]):
        d.ClearField("dim_param")
        d.dim_value = v
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:  # INT8 Q/DQ and FP16 graphs reach the weights through these
        if node.op_type in ("DequantizeLinear", "Cast", "Identity") and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = weights.get(node.input[1])
        shape = shapes.get(node.output[0] if node.op_type == "Conv" else node.input[0])
        if w is None or not shape or 0 in shape:
            raise ValueError(f"{path}: cannot infer the shape at {node.name or node.op_type}")
        total += 2 * int(np.prod(shape)) * w[1] * int(np.prod(w[2:]))
    return float(total)
