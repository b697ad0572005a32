"""OpenVINO's side of `cvmatte export --backend openvino`: INT8 by NNCF post-training quantization
(OpenVINO's own toolkit), and the accuracy gate of the reduced inference precisions (bf16, fp16)
that `--precision auto` reads from the model's spec.

The gate has two parts, each judged against the same model in fp32 on the same backend:
- parity on real photos (the coarse alpha at the model's size; parity.compare and its tolerance);
- where exact alpha is given (a folder of images with `<stem>.alpha.png` beside), the error of the
  whole per-image path (coarse pass, tiles, 8-bit alpha) against it: mean SAD at most
  TRUTH_SAD_RATIO times the fp32 path's. Users judge cut-outs, not coarse maps.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import numpy as np

from cvmatte.engine import metrics
from cvmatte.engine.backends.openvino import OpenVinoBackend, import_openvino, onnx_node_name
from cvmatte.engine.errors import ModelError
from cvmatte.engine.imageio import read_image
from cvmatte.engine.matting import MattingEngine
from cvmatte.engine.preprocess import coarse_input
from cvmatte.engine.spec import ModelSpec, ResolvedModel, sha256_file, spec_path_for

from . import parity

#: A reduced precision passes where its mean SAD against exact alpha is at most this times fp32's.
TRUTH_SAD_RATIO = 1.02
#: With exact alpha to decide, agreement with fp32 on real photos only guards against a collapse:
#: the mean IoU, and every photo's (one thin object may move where fp32 itself is wrong: the
#: wrench of the held-out set went from IoU 1 to 0.90 in INT8 at SAD +0.6% against exact alpha).
PHOTO_MEAN_IOU = 0.97
PHOTO_MIN_IOU = 0.85


def truth_pairs(folder: Path, limit: int | None = None) -> list[tuple[Path, Path]]:
    """(image, exact alpha) for every image under the folder with `<stem>.alpha.png` beside it; an
    even spread of `limit` of them where there are more."""
    from cvmatte.engine.imageio import IMAGE_SUFFIXES

    alpha_suffix = ".alpha.png"
    pairs = []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(alpha_suffix):
            a = p.with_name(p.stem + alpha_suffix)
            if a.is_file():
                pairs.append((p, a))
    if not pairs:
        raise FileNotFoundError(f"{folder}: no images with exact alpha (<stem>{alpha_suffix}) beside them")
    if limit is not None and len(pairs) > limit:
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, limit).round().astype(int)]
    return pairs


def _coarse(backend, spec: ModelSpec, images: list[np.ndarray]) -> list[np.ndarray]:
    return [backend.run(coarse_input(im, spec)[None])[0, 0] for im in images]


def _truth_sad(backend, spec: ModelSpec, truth: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    engine = MattingEngine(backend, spec)
    return [metrics.sad(engine.matte(rgb).alpha, gt) for rgb, gt in truth]


def load_truth(pairs: list[tuple[Path, Path]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(read_image(img).rgb, read_image(a).rgb[..., 0].astype(np.float32) / 255.0) for img, a in pairs]


def gate(reference, candidate, spec: ModelSpec, what: str, photos: list[np.ndarray],
         truth: list[tuple[np.ndarray, np.ndarray]] | None, tol: parity.Tolerance, log=print, note: str = "") -> dict:
    """A candidate backend (a reduced precision, or an INT8 file) against the reference (the model
    in fp32) side by side: {"passed", "evidence" (one line), and the figures}."""
    row = parity.judge(what, "fp32", parity.compare(_coarse(reference, spec, photos), _coarse(candidate, spec, photos)),
                       tol)
    # Without exact alpha, agreement is all there is: every photo within the tolerance.
    failures = [] if truth else list(row["failures"])
    evidence = f"{len(photos)} real photos: IoU with fp32 mean {row['iou_mean']:.3f}, min {row['iou']:.3f}"
    result = {"photos": len(photos), "photo_iou_min": round(row["iou"], 4), "photo_iou_mean": round(row["iou_mean"], 4),
              "photo_mean_abs": round(row["mean_abs"], 5)}
    if truth:
        if row["iou_mean"] < PHOTO_MEAN_IOU or row["iou"] < PHOTO_MIN_IOU:
            failures.append(f"real photos: IoU with fp32 mean {row['iou_mean']:.3f} (bound {PHOTO_MEAN_IOU}), "
                            f"min {row['iou']:.3f} (bound {PHOTO_MIN_IOU})")
        ref, got = _truth_sad(reference, spec, truth), _truth_sad(candidate, spec, truth)
        change = float(np.mean(got) / max(np.mean(ref), 1e-9) - 1.0)
        result.update(truth_images=len(truth), sad_fp32=round(float(np.mean(ref)), 4),
                      sad=round(float(np.mean(got)), 4), sad_change=round(change, 4))
        evidence += f"; SAD against exact alpha {change:+.1%} ({len(truth)} images)"
        if change > TRUTH_SAD_RATIO - 1.0:
            failures.append(f"SAD against exact alpha {change:+.1%} > {TRUTH_SAD_RATIO - 1.0:+.0%}")
    result.update(passed=not failures, measured=date.today().isoformat(),
                  evidence=f"{evidence}{note}; {candidate.device_name}"
                  + (f"; failed: {'; '.join(failures)}" if failures else ""))
    log(f"{'PASS' if result['passed'] else 'FAIL'}  {what}: {result['evidence']}")
    return result


def precision_gate(model: ResolvedModel, precision: str, photos: list[np.ndarray],
                   truth: list[tuple[np.ndarray, np.ndarray]] | None, log=print) -> dict:
    """The model on OpenVINO in `precision` (its fp32_layers kept) against itself in fp32. Raises
    DeviceError where this CPU has no such arithmetic: the gate cannot be measured here."""
    candidate = OpenVinoBackend(model, device="cpu", precision=precision)
    reference = OpenVinoBackend(model, device="cpu", precision="fp32")
    kept = model.spec.fp32_layers
    return gate(reference, candidate, model.spec, f"{precision} gate", photos, truth, parity.TOLERANCES[precision], log,
                f"; {len(kept)} layers kept in fp32" if kept else "")


def record_gate(spec_file: Path, precision: str, gate: dict) -> ModelSpec:
    """The gate written into a spec JSON (beside the model it judges)."""
    spec = ModelSpec.load(spec_file)
    spec = dataclasses.replace(spec, precision_gate={**spec.precision_gate, precision: gate})
    spec.save(spec_file)
    return spec


#: NNCF's accuracy control: layers go back to float until the INT8 model's mean SAD against exact
#: alpha on the calibration composites is within this share of fp32's (the held-out gate then
#: allows TRUTH_SAD_RATIO; the margin is for data it did not see).
CONTROL_MAX_DROP = 0.01


def quantize_int8(model: ResolvedModel, dst: Path, calib: list[Path], control: list[tuple[Path, Path]] | None = None,
                  log=print) -> ResolvedModel:
    """NNCF post-training quantization of the model at its own input size, calibrated on real
    images: OpenVINO IR `dst` (.xml + .bin) with its spec (precision int8) beside. With `control`
    (images with exact alpha, never the held-out ones that judge the result), NNCF's accuracy
    control returns the layers that cost the most accuracy to float, one at a time, until the SAD
    on them is within CONTROL_MAX_DROP of fp32's; those layers are the spec's fp32_layers.

    Weights keep 8 bits (NNCF's default overflow fix, 7 bits in the first layer only): on u2netp
    7-bit weights everywhere cost SAD +3.4% against exact alpha where 8 bits cost +0.6%. x86 CPUs
    without VNNI multiply int8 pairs with VPMADDUBSW, whose int16 sums may saturate at 8 bits, so
    the gate holds for CPUs with VNNI (or AMX), and `--precision auto` takes the INT8 file only
    there (see backends.choose_runtime)."""
    import cv2

    ov = import_openvino()
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    except ImportError:
        raise ModelError("INT8 for OpenVINO is quantized with NNCF: pip install nncf (the export extra)") from None
    spec = model.spec
    core = ov.Core()
    net = core.read_model(str(model.path))
    h, w = spec.input_size
    net.reshape({net.inputs[0].any_name: [1, spec.in_channels, h, w]})
    data = [coarse_input(read_image(p).rgb, spec)[None] for p in calib]
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.FIRST_LAYER)
    reverted: list[str] = []
    if control:
        log(f"NNCF: INT8 calibrated on {len(data)} images, accuracy control on {len(control)} images with exact alpha")
        checks = [(coarse_input(read_image(img).rgb, spec)[None],
                   cv2.resize(read_image(a).rgb[..., 0].astype(np.float32) / 255.0, (w, h),
                              interpolation=cv2.INTER_AREA)) for img, a in control]

        def validate(compiled, items):
            out = compiled.outputs[0]
            sads = [-metrics.sad(np.asarray(compiled(x)[out])[0, 0], gt) for x, gt in items]
            return float(np.mean(sads)), sads

        quantized = nncf.quantize_with_accuracy_control(
            net, nncf.Dataset(data), nncf.Dataset(checks), validation_fn=validate, max_drop=CONTROL_MAX_DROP,
            drop_type=nncf.DropType.RELATIVE, subset_size=len(data), advanced_quantization_parameters=advanced)
        convs = [op for op in quantized.get_ordered_ops() if op.get_type_name() == "Convolution"]
        # A quantized convolution reads its weights through a dequantization; a reverted one from a constant.
        reverted = sorted(onnx_node_name(op.get_friendly_name()) for op in convs
                          if op.input_value(1).get_node().get_type_name() == "Constant")
        log(f"NNCF: {len(reverted)} convolutions left in float: {', '.join(reverted) or 'none'}")
    else:
        log(f"NNCF: INT8 calibrated on {len(data)} images (no exact alpha given: no accuracy control)")
        quantized = nncf.quantize(net, nncf.Dataset(data), subset_size=len(data), advanced_parameters=advanced)
    dst = Path(dst).with_suffix(".xml")
    dst.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(dst), compress_to_fp16=False)
    out = dataclasses.replace(
        spec, precision="int8", sha256=sha256_file(dst), precision_gate={}, fp32_layers=tuple(reverted),
        extra={**spec.extra, "calibration": {"images": len(data), "tool": f"nncf {nncf.__version__}",
                                             "weights": "int8 symmetric per-channel (7-bit range in the first layer)",
                                             "accuracy_control": {"images": len(control or []),
                                                                  "max_relative_sad_drop": CONTROL_MAX_DROP,
                                                                  "float_convolutions": reverted} if control else None,
                                             "source_sha256": spec.sha256}},
        notes=(spec.notes + " INT8 by NNCF post-training quantization, OpenVINO IR (runs on --backend openvino).").strip())
    out.save(spec_path_for(dst))
    return ResolvedModel(dst, out)


def int8_gate(fp32: ResolvedModel, int8: ResolvedModel, photos: list[np.ndarray],
              truth: list[tuple[np.ndarray, np.ndarray]] | None, log=print) -> dict:
    """The INT8 file against the fp32 one, both on OpenVINO with the fp32 hint (float layers in
    fp32; on a CPU with bf16 a run may add the bf16 hint, gated on its own)."""
    floats = int8.spec.fp32_layers
    return gate(OpenVinoBackend(fp32, device="cpu"), OpenVinoBackend(int8, device="cpu"), fp32.spec,
                "int8 (NNCF) gate", photos, truth, parity.TOLERANCES["int8"], log,
                f"; {len(floats)} convolutions in float ({', '.join(floats)})" if floats else "")


__all__ = ["TRUTH_SAD_RATIO", "gate", "int8_gate", "load_truth", "precision_gate", "quantize_int8",
           "record_gate", "truth_pairs"]
