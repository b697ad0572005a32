"""ONNX-to-ONNX steps: clean-up, FP16, INT8 with Q/DQ nodes. Each takes a path and writes a path.

TensorRT 11 has no precision flags: precision lives in the graph. FP16 keeps
float32 inputs and outputs so the runtime feeds the same tensors; INT8 uses explicit Q/DQ nodes
(QDQ format, symmetric, per-channel weights), which TensorRT 10/11 and ONNX Runtime both run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from cvmatte.engine.errors import ModelError
from cvmatte.engine.imageio import IMAGE_SUFFIXES, read_image
from cvmatte.engine.preprocess import coarse_input
from cvmatte.engine.spec import ModelSpec, sha256_file, spec_path_for


def save_with_spec(model: onnx.ModelProto, path: Path, spec: ModelSpec, **changes) -> ModelSpec:
    """Write the model and its spec (sha256 of the written file) beside it."""
    from cvmatte.engine.imageio import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, model.SerializeToString())
    new = replace(spec, sha256=sha256_file(path), **changes)
    new.save(spec_path_for(path))
    return new


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order nodes so each comes after its inputs' producers (the FP16 converter appends its input
    casts at the end, which the ONNX checker and TensorRT's parser reject)."""
    nodes = list(model.graph.node)
    available = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    ordered, pending = [], nodes
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("the graph has a cycle or an input nothing produces")
        for n in ready:
            available.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


#: Per-channel Q/DQ needs opset 13+; 17 is inside TensorRT 10.3's (JetPack 6) and 11.x's range.
TARGET_OPSET = 17


def _omit_empty_resize_inputs(model: onnx.ModelProto) -> None:
    """Opset-11 exports pass Resize an empty `roi`/`scales` tensor next to `sizes`. Later passes
    (the FP16 converter's casts) hide that they are empty and shape inference then sees both
    scales and sizes; opset 13+ lets optional inputs be omitted, so omit them."""
    empty = {i.name for i in model.graph.initializer if 0 in i.dims}
    for node in model.graph.node:
        if node.op_type == "Resize":
            node.input[:] = [("" if 0 < k < 3 and name in empty else name) for k, name in enumerate(node.input)]


def clean(src: Path, dst: Path, spec: ModelSpec) -> ModelSpec:
    """Opset raised to TARGET_OPSET, then constant folding and dead-node removal with onnxslim;
    the graph's I/O stay as they were."""
    import onnxslim
    from onnx import version_converter

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), TARGET_OPSET)
    if opset < TARGET_OPSET:
        model = version_converter.convert_version(model, TARGET_OPSET)
    model = onnxslim.slim(model)  # folds Constant nodes into initializers, which the next pass reads
    _omit_empty_resize_inputs(model)
    onnx.checker.check_model(model)
    return save_with_spec(model, dst, spec)


def to_fp16(src: Path, dst: Path, spec: ModelSpec) -> ModelSpec:
    """FP16 arithmetic with float32 I/O (ONNX Runtime's own float16 converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = toposort(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    onnx.checker.check_model(model)
    return save_with_spec(model, dst, spec, precision="fp16",
                          notes=(spec.notes + " FP16 inside, float32 I/O.").strip())


def calibration_images(folder: Path, limit: int = 64) -> list[Path]:
    # Exact alphas beside composites (<stem>.alpha.png) are labels, not images.
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.endswith(".alpha.png"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no calibration images ({', '.join(IMAGE_SUFFIXES)})")
    if len(paths) > limit:  # an even spread over the folder, not its first files
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return paths


def _remaining(convs: list[str], excluded: list[str]) -> list[str]:
    kept = [c for c in convs if c not in excluded]
    if not kept:  # an empty list would mean "quantize everything" to onnxruntime
        raise ModelError("INT8 within tolerance would leave every convolution in float: this model "
                         "does not quantize within the INT8 tolerance")
    return kept


def _search(convs, excluded, solo, trial, ok, harmful, dst) -> dict:
    """Quantize all convolutions; if that fails, keep in float those that fail alone, then whole
    groups of eight (the worst alone first) until it passes. `excluded` collects what stays float."""
    result = trial(convs, dst)
    if ok(result):
        return result
    for i in range(0, len(convs), 8):
        excluded += harmful(convs[i:i + 8])
    result = trial(_remaining(convs, excluded), dst)
    groups = [tuple(convs[i:i + 8]) for i in range(0, len(convs), 8)]  # the ones `harmful` scored alone
    for group in sorted(groups, key=lambda g: solo.get(g, 0.0), reverse=True):
        if ok(result):
            break
        excluded += [c for c in group if c not in excluded]
        result = trial(_remaining(convs, excluded), dst)
    return result


def to_int8(src: Path, dst: Path, spec: ModelSpec, calib: list[Path], check_images: list[np.ndarray],
            tol, symmetric: bool = True, log=print) -> ModelSpec:
    """INT8 convolutions with Q/DQ nodes, calibrated on real images preprocessed as the engine does.

    symmetric=True (the default) gives int8 activations with zero-point 0, which TensorRT's
    explicit quantization requires; symmetric=False gives uint8 activations, faster on ONNX
    Runtime's x86 kernels but not for TensorRT. Weights are int8, symmetric, per channel, in a
    7-bit range so that the integer result is the same on x86 hosts with and without VNNI.

    Convolutions whose quantization moves the alpha too far on check_images stay in float, until
    the model passes `tol` (a parity.Tolerance: max and mean |diff|, per-image IoU and SAD against
    FP32): first the convolutions that break it alone (groups of eight quantized alone, bisected;
    u2netp's decoder has such layers), then whole groups, the worst first, as many as it takes.
    The result always passes, or a ModelError says the model does not quantize. The calibration
    ranges are computed once and kept beside dst as <name>.int8.calib.json.
    """
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cvmatte.engine.spec import ResolvedModel

    from .parity import compare, judge, onnx_alphas

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib)

        def get_next(self):
            path = next(self._it, None)
            if path is None:
                return None
            return {spec.input_name: coarse_input(read_image(path).rgb, spec)[None]}

    dst = Path(dst)
    cache = dst.with_suffix(".calib.json")
    cache.unlink(missing_ok=True)
    reference = onnx_alphas(ResolvedModel(Path(src), spec), check_images)
    with tempfile.TemporaryDirectory(prefix="cvmatte-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        trials = 0

        def trial(nodes: list[str], out: Path) -> dict:
            nonlocal trials
            trials += 1
            quantize_static(
                str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                # 7-bit weights: x86 CPUs without VNNI multiply int8 pairs with VPMADDUBSW, whose
                # int16 sums saturate at full range. The CI host (AVX2) lost IoU 0.95 -> 0.89 on
                # u2netp that the VNNI host did not; with 7 bits the integer result is exact on both.
                reduce_range=True, per_channel=True, calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv"],
                nodes_to_quantize=nodes, calibration_cache_path=str(cache),
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            )
            return compare(reference, onnx_alphas(ResolvedModel(out, spec), check_images))

        def ok(m: dict) -> bool:
            return judge("int8", "fp32", m, tol)["passed"]

        def harmful(nodes: list[str]) -> list[str]:
            """The nodes that fail alone (bisection): a group whose mean |diff| stays under a
            quarter of the tolerance is kept whole. (IoU is left to the final check: on thin
            objects it swings with a handful of pixels and would exclude half the network.)"""
            error = trial(nodes, Path(tmp) / "t.onnx")["mean_abs"]
            solo[tuple(nodes)] = error
            if error <= tol.mean_abs * 0.25:
                return []
            if len(nodes) == 1:
                return nodes
            half = len(nodes) // 2
            return harmful(nodes[:half]) + harmful(nodes[half:])

        excluded: list[str] = []
        solo: dict[tuple[str, ...], float] = {}
        try:
            result = _search(convs, excluded, solo, trial, ok, harmful, dst)
        except BaseException:
            dst.unlink(missing_ok=True)  # a file outside the tolerance is never left behind
            raise
        if not ok(result):
            dst.unlink(missing_ok=True)
            raise ModelError(f"INT8 stays outside the tolerance with {len(excluded)} of {len(convs)} convolutions in "
                             f"float ({'; '.join(judge('int8', 'fp32', result, tol)['failures'])}): this model does "
                             "not quantize within the INT8 tolerance")
        log(f"INT8: {len(convs) - len(excluded)} of {len(convs)} convolutions quantized "
            f"(kept in float: {', '.join(excluded) or 'none'}; {trials} trials); vs FP32 mean |diff| "
            f"{result['mean_abs']:.4f}, IoU {result['iou']:.4f}")
    model = onnx.load(str(dst))
    return save_with_spec(model, dst, spec, precision="int8",
                          extra={**spec.extra, "calibration": {
                              "images": len(calib), "method": "minmax", "ranges": cache.name,
                              "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
                              "weights": "int8 symmetric per-channel, 7-bit range",
                              "float_convolutions": excluded, "quantized_convolutions": len(convs) - len(excluded)}},
                          notes=(spec.notes + " INT8 Q/DQ convolutions (explicit quantization), float32 I/O.").strip())
