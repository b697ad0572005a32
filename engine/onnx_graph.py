"""Small, checked edits of ONNX graphs the runtime needs (the converters proper live in export/)."""

from __future__ import annotations

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
