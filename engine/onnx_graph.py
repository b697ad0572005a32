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


def keep_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Only the named graph outputs, and only the nodes they need (side outputs dropped: nothing
    is computed or kept alive for them)."""
    wanted = [o for o in model.graph.output if o.name in names]
    if len(wanted) != len(names):
        raise ValueError(f"graph has no output(s) {sorted(set(names) - {o.name for o in wanted})}")
    del model.graph.output[:]
    model.graph.output.extend(wanted)
    producer = {o: i for i, node in enumerate(model.graph.node) for o in node.output}
    needed, todo, used = set(names), list(names), set()
    while todo:  # by producers, not by node order: exported graphs are not always sorted
        i = producer.get(todo.pop())
        if i is None or i in used:
            continue
        used.add(i)
        for x in model.graph.node[i].input:
            if x and x not in needed:
                needed.add(x)
                todo.append(x)
    keep = topological_order([node for i, node in enumerate(model.graph.node) if i in used])
    del model.graph.node[:]
    model.graph.node.extend(keep)
    inits = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    return model


def topological_order(nodes: list) -> list:
    """The nodes so that each comes after the producers of its inputs (ONNX requires it; some
    converters write graphs that are not), otherwise in their given order."""
    made = {o for n in nodes for o in n.output}
    waiting = {i: {x for x in n.input if x in made} for i, n in enumerate(nodes)}
    consumers: dict[str, list[int]] = {}
    for i, deps in waiting.items():
        for x in deps:
            consumers.setdefault(x, []).append(i)
    ready = sorted(i for i, deps in waiting.items() if not deps)
    out = []
    import heapq
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        out.append(nodes[i])
        for o in nodes[i].output:
            for j in consumers.get(o, []):
                waiting[j].discard(o)
                if not waiting[j]:
                    heapq.heappush(ready, j)
    if len(out) != len(nodes):
        raise ValueError("graph has a cycle")
    return out


def fp16_to_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """A graph that computes in float16 between float32 I/O casts (what onnxconverter-common's
    float16 conversion writes, e.g. IS-Net in @imgly/background-removal-data) computing in float32:
    float16 weights and constants widened (exactly: every float16 is a float32), casts to float16
    removed. On a CPU float16 arithmetic is emulated or converted per op, and OpenVINO/TensorRT
    choose their own reduced precision from a float32 graph."""
    from onnx import TensorProto, numpy_helper

    def widen(t: onnx.TensorProto) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype("float32"), t.name)

    for i, t in enumerate(model.graph.initializer):
        if t.data_type == TensorProto.FLOAT16:
            model.graph.initializer[i].CopyFrom(widen(t))
    rename: dict[str, str] = {}
    graph_outputs = {o.name for o in model.graph.output}
    nodes = []
    for node in model.graph.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                a.t.CopyFrom(widen(a.t))
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == TensorProto.FLOAT16:
                to.i = TensorProto.FLOAT
            if to.i == TensorProto.FLOAT and node.output[0] not in graph_outputs:
                rename[node.output[0]] = node.input[0]  # float to float: the cast goes
                continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    return model
