"""INT8 against FP32 through ONNX Runtime on this CPU, in one run: latency of the model at its own
size, and accuracy (SAD against exact alpha on synthetic product shots, and against FP32).

Two INT8 flavours: "int8 (TensorRT)", symmetric int8 activations as TensorRT's explicit
quantization requires (what `cvmatte export --precision int8` writes), and "int8 (uint8 acts)",
asymmetric uint8 activations, which ONNX Runtime's x86 kernels prefer. Both get the same
sensitivity search (layers that break parity stay in float).

    python -m cvmatte.benchmarks.int8_vs_fp32 [--repeats 20] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from cvmatte import Matter
from cvmatte.samples import SCENES, make_composite, write_demo_photos
from cvmatte.engine import metrics, zoo
from cvmatte.engine.spec import ResolvedModel
from cvmatte.export import parity
from cvmatte.export.onnx_passes import clean, to_int8


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cvmatte-int8-") as tmp:
        tmp = Path(tmp)
        source = zoo.resolve("u2netp")
        fp32_path = tmp / "u2netp.fp32.onnx"
        fp32 = ResolvedModel(fp32_path, clean(source.path, fp32_path, source.spec))
        calib = write_demo_photos(tmp / "calib")
        check = parity.load_images(calib)
        tol = parity.TOLERANCES["int8"]
        models = {"fp32": fp32}
        for name, symmetric in (("int8 (TensorRT)", True), ("int8 (uint8 acts)", False)):
            path = tmp / f"u2netp.{'sym' if symmetric else 'asym'}.onnx"
            spec = to_int8(fp32_path, path, fp32.spec, calib, check, tol, symmetric=symmetric)
            models[name] = ResolvedModel(path, spec)

        matters = {name: Matter(m.path, device="cpu", despill=0.0) for name, m in models.items()}
        x = np.random.default_rng(0).normal(size=(1, 3, 320, 320)).astype(np.float32)
        for m in matters.values():
            m.backend.run(x)  # warm-up
        times = {name: [] for name in matters}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            for name, m in matters.items():
                t0 = time.perf_counter()
                m.backend.run(x)
                times[name].append(time.perf_counter() - t0)

        composites = [make_composite(1.0, seed=i, fg_photo=f, bg_photo=b) for i, (f, b) in enumerate(SCENES)]
        sad, vs_fp32 = {}, {}
        reference = [matters["fp32"].matte(c.rgb).alpha for c in composites]
        for name, m in matters.items():
            alphas = [m.matte(c.rgb).alpha for c in composites]
            sad[name] = float(np.mean([metrics.sad(a, c.alpha) for a, c in zip(alphas, composites)]))
            vs_fp32[name] = float(np.mean([np.abs(a - r).mean() for a, r in zip(alphas, reference)]))

    base_ms = np.median(times["fp32"]) * 1000
    rows = []
    print(f"\nu2netp 320x320 batch 1, ONNX Runtime CPU, {platform.machine()}, median of {args.repeats}; "
          f"SAD against exact alpha on {len(composites)} synthetic 1 MP shots (whole image, tiles on)")
    print("| model | median ms | p90 ms | speed-up | SAD | SAD change | mean abs diff vs FP32 | quantized convs |")
    print("|---|---|---|---|---|---|---|---|")
    for name in matters:
        ms = np.median(times[name]) * 1000
        p90 = np.percentile(times[name], 90) * 1000
        change = (sad[name] - sad["fp32"]) / sad["fp32"] * 100
        cal = models[name].spec.extra.get("calibration", {})
        q = f"{cal['quantized_convolutions']} of {cal['quantized_convolutions'] + len(cal['float_convolutions'])}" if cal else "-"
        rows.append({"model": name, "median_ms": ms, "p90_ms": p90, "speedup": base_ms / ms, "sad": sad[name],
                     "sad_change_pct": change, "mean_abs_vs_fp32": vs_fp32[name], "quantized": q})
        print(f"| {name} | {ms:.0f} | {p90:.0f} | {base_ms / ms:.2f}x | {sad[name]:.2f} | {change:+.1f}% | "
              f"{vs_fp32[name]:.4f} | {q} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.uname()._asdict(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
