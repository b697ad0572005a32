"""Parity between conversion steps: runners produce alphas on real images, a comparator judges
them against explicit tolerances (the Polygraphy shape: runner -> outputs -> compare)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cvmatte.engine.imageio import read_image
from cvmatte.engine.preprocess import coarse_input
from cvmatte.engine.spec import ModelSpec
from cvmatte.engine.spec import ResolvedModel


@dataclass(frozen=True)
class Tolerance:
    max_abs: float
    mean_abs: float
    min_iou: float
    #: |SAD(candidate) - SAD(reference)| against ground truth is not known here; this bounds the
    #: SAD between the two alphas, per image, in the benchmark's units (sum / 1000).
    max_sad: float


#: Alpha is in [0, 1]; SAD is per image at the model's resolution (320² for u2netp = 102 400 px).
TOLERANCES = {
    "fp32": Tolerance(max_abs=2e-3, mean_abs=1e-4, min_iou=0.999, max_sad=0.05),
    # FP16 and INT8 move pixels near 0.5 across the threshold on small objects (the rocket):
    # IoU is the per-image minimum, so these bounds are set for the worst image, not the mean.
    "fp16": Tolerance(max_abs=0.25, mean_abs=3e-3, min_iou=0.95, max_sad=1.0),
    # bf16 keeps fp32's range with 3 bits less mantissa than fp16: judged by the same bounds.
    "bf16": Tolerance(max_abs=0.25, mean_abs=3e-3, min_iou=0.95, max_sad=1.0),
    "int8": Tolerance(max_abs=0.6, mean_abs=0.02, min_iou=0.95, max_sad=3.0),
    "trt": Tolerance(max_abs=0.05, mean_abs=3e-3, min_iou=0.99, max_sad=0.5),
}


def onnx_alphas(model: ResolvedModel, images: list[np.ndarray]) -> list[np.ndarray]:
    """The model's alpha at its own resolution for each image, on the ONNX Runtime CPU provider."""
    from cvmatte.engine.backends.onnxruntime import OrtBackend

    backend = OrtBackend(model, device="cpu")
    return [backend.run(coarse_input(im, model.spec)[None])[0, 0] for im in images]


def load_images(paths: list[Path]) -> list[np.ndarray]:
    return [read_image(p).rgb for p in paths]


#: IoU is judged only where the reference or the candidate mask covers this share of the image: on
#: a near-empty mask (a few hundred pixels) a handful of pixels swings it, and SAD bounds those.
MIN_MASK_SHARE = 0.01


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    diffs = [np.abs(r.astype(np.float32) - c.astype(np.float32)) for r, c in zip(reference, candidate)]
    ious = []
    for r, c in zip(reference, candidate):
        a, b = r > 0.5, c > 0.5
        union = np.logical_or(a, b).sum()
        if union >= MIN_MASK_SHARE * a.size:
            ious.append(float(np.logical_and(a, b).sum() / union))
    return {
        "max_abs": float(max(d.max() for d in diffs)),
        "mean_abs": float(np.mean([d.mean() for d in diffs])),
        "sad": float(max(d.sum() / 1000.0 for d in diffs)),
        "iou": float(min(ious)) if ious else 1.0,
        "iou_mean": float(np.mean(ious)) if ious else 1.0,
        "images": len(diffs),
        "iou_images": len(ious),
    }


def judge(step: str, against: str, metrics: dict, tol: Tolerance) -> dict:
    failures = []
    if metrics["max_abs"] > tol.max_abs:
        failures.append(f"max |diff| {metrics['max_abs']:.4f} > {tol.max_abs}")
    if metrics["mean_abs"] > tol.mean_abs:
        failures.append(f"mean |diff| {metrics['mean_abs']:.5f} > {tol.mean_abs}")
    if metrics["iou"] < tol.min_iou:
        failures.append(f"IoU {metrics['iou']:.4f} < {tol.min_iou}")
    if metrics["sad"] > tol.max_sad:
        failures.append(f"SAD {metrics['sad']:.3f} > {tol.max_sad}")
    return {"step": step, "against": against, **metrics, "tolerance": asdict(tol),
            "passed": not failures, "failures": failures}


def format_row(row: dict) -> str:
    mark = "PASS" if row["passed"] else "FAIL"
    return (f"{mark}  {row['step']:<28} vs {row['against']:<28} max {row['max_abs']:.4f}  mean {row['mean_abs']:.5f}  "
            f"SAD {row['sad']:.3f}  IoU {row['iou']:.4f}" + ("  (" + "; ".join(row["failures"]) + ")" if row["failures"] else ""))


def spec_summary(spec: ModelSpec) -> str:
    return f"{spec.name} {spec.precision} {spec.input_size[0]}x{spec.input_size[1]}"
