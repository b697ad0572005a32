"""The hand-written refinement operations against the maintained libraries the field uses.

- engine.refine.guided_filter (colour guided filter, fast variant with subsample = scale, as
  GuidedFilterRefiner calls it) against cv2.ximgproc.guidedFilter (opencv-contrib), at full
  resolution and with its own `scale` (fast guided filter) argument.
- engine.refine.estimate_foreground (two-pass blur-fusion, Forte & Pitie 2021) against
  pymatting.estimate_foreground_ml (Germer et al., multi-level).

At the engine's operating point: a 320x320 model, radius 6 model px and eps 1e-3 for the filter,
blur radius max(90, 10 * scale) for the foreground. The coarse alpha is the exact alpha shrunk to
320x320 and enlarged bilinearly back (what the coarse pass gives at best). Errors against the
exact alpha of samples.make_composite; times are the best of 3 (pymatting after a warm-up call,
with pymatting's numba compile and first-call times reported apart).

Needs numpy, opencv-contrib-python-headless, pymatting and scikit-image (for the composites);
the project modules are loaded by path, so the project itself need not be installed:

    python benchmarks/refine_vs_libraries.py [--megapixels 2 4] [--seed 0] [--out rows.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = 320  # u2netp's input, the default model
EPS = 1e-3
RADIUS_PER_SCALE = 6.0


def _load(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


refine = _load("_cvm_refine", "engine/refine.py")
metrics = _load("_cvm_metrics", "engine/metrics.py")
samples = _load("_cvm_samples", "cvmatte/samples.py")


def best_of(fn, n=3):
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def edge_band(alpha: np.ndarray, width: int = 8) -> np.ndarray:
    soft = ((alpha > 0.02) & (alpha < 0.98)).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(soft, k).astype(bool)


def guided_rows(c, mp):
    H, W = c.alpha.shape
    scale = max(H / MODEL, W / MODEL)
    r = max(2, int(round(RADIUS_PER_SCALE * scale)))  # GuidedFilterRefiner.radius_for
    s = max(1, int(round(scale)))  # GuidedFilterRefiner: subsample = scale
    small = cv2.resize(c.alpha, (MODEL, MODEL), interpolation=cv2.INTER_AREA)
    coarse = np.clip(cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR), 0, 1)
    guide = c.rgb.astype(np.float32) * (1.0 / 255.0)
    band = edge_band(c.alpha)
    rs = max(1, int(round(r / s)))  # ximgproc's `scale` does not scale the radius: give it the small grid's
    as_float = lambda: c.rgb.astype(np.float32) * (1.0 / 255.0)  # as GuidedFilterRefiner.refine does
    clip = lambda a: np.clip(a, 0.0, 1.0)
    gf = cv2.ximgproc.guidedFilter
    variants = {
        "coarse alpha (no filter)": None,
        f"ours, subsample {s} (engine)": lambda: clip(refine.guided_filter(as_float(), coarse, r, EPS, s)),
        "ours, subsample 1": lambda: clip(refine.guided_filter(as_float(), coarse, r, EPS, 1)),
        # eps in the guide's units: with a [0, 1] guide and eps 1e-3, det(cov + eps I) falls under
        # ximgproc's 1e-6 floor (where it sets det = 1) in smooth regions and the output departs.
        "ximgproc, guide [0,1], eps 1e-3": lambda: clip(gf(guide, coarse, r, EPS)),
        "ximgproc, guide uint8, eps 1e-3*255^2": lambda: clip(gf(c.rgb, coarse, r, EPS * 255 ** 2)),
        f"ximgproc, guide uint8, eps 1e-3*255^2, scale 1/{s}, r {rs}": lambda: clip(
            gf(c.rgb, coarse, rs, EPS * 255 ** 2, dDepth=-1, scale=1.0 / s)),
    }
    rows = []
    for name, fn in variants.items():
        t, a = (0.0, coarse) if fn is None else best_of(fn)
        rows.append({"op": "guided filter", "mp": mp, "size": f"{W}x{H}", "radius": r, "variant": name,
                     "ms": 1000 * t, "sad_band": metrics.sad(a, c.alpha, band),
                     "grad_band": metrics.gradient_error(a, c.alpha, band), "out": a})
    # Agreement with our filter on the same grid (full resolution, or subsample s).
    ours_s, ours_1 = rows[1]["out"], rows[2]["out"]
    for row in rows[1:]:
        other = ours_s if ("scale" in row["variant"] or "engine" in row["variant"]) else ours_1
        row["max_diff_vs_ours"] = float(np.abs(row["out"] - other).max())
    for row in rows:
        del row["out"]
    return rows


def foreground_rows(c, mp):
    import pymatting

    H, W = c.alpha.shape
    scale = max(H / MODEL, W / MODEL)
    radius = max(90, int(10 * scale))  # MattingEngine.foreground
    a = c.alpha
    soft = (a > 0.05) & (a < 0.95)
    truth = c.foreground.astype(np.float64)
    a3 = a[..., None].astype(np.float64)
    on_white_truth = truth * a3 + 255.0 * (1 - a3)

    def errors(F):  # F: float RGB in 0..255
        fg_err = np.abs(F - truth)[soft].mean()
        white_err = np.abs(F * a3 + 255.0 * (1 - a3) - on_white_truth)[soft].mean()
        return float(fg_err), float(white_err)

    image = c.rgb.astype(np.float64) / 255.0
    alpha64 = a.astype(np.float64)
    t0 = time.perf_counter()
    pymatting.estimate_foreground_ml(image, alpha64)  # the first call: warm-up, reported apart
    first_s = time.perf_counter() - t0
    variants = {
        "photo as is (no despill)": None,
        f"ours, blur-fusion r={radius}": lambda: refine.estimate_foreground(c.rgb, a, 1.0, radius),  # uint8
        "pymatting.estimate_foreground_ml": lambda: pymatting.estimate_foreground_ml(image, alpha64),  # float in [0, 1]
    }
    rows = []
    for name, fn in variants.items():
        t, F = (0.0, c.rgb) if fn is None else best_of(fn)
        F = F.astype(np.float64) * (1.0 if F.dtype == np.uint8 else 255.0)
        fg_err, white_err = errors(F)
        row = {"op": "foreground", "mp": mp, "size": f"{W}x{H}", "radius": radius, "variant": name, "ms": 1000 * t,
               "fg_mae": fg_err, "on_white_mae": white_err}
        if "pymatting" in name:
            row["first_call_s"] = first_s
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    # pymatting's kernels are numba functions with signatures and cache=True: they compile when
    # pymatting is imported, once per machine (then load from the cache). The cold compile is
    # timed in a child process with an empty cache directory.
    with tempfile.TemporaryDirectory() as cache:
        code = "import time; t = time.perf_counter(); import pymatting; print(time.perf_counter() - t)"
        cold = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NUMBA_CACHE_DIR": cache},
                              capture_output=True, text=True, check=True)
    compile_s = float(cold.stdout.split()[-1])
    t0 = time.perf_counter()
    import pymatting
    import_s = time.perf_counter() - t0
    print(f"pymatting import: {compile_s:.1f} s with numba compiling (empty cache), {import_s:.1f} s from the cache")
    print(f"opencv {cv2.__version__}, pymatting {pymatting.__version__}, numpy {np.__version__}, "
          f"cv2 threads {cv2.getNumThreads()}")
    rows = []
    for mp in args.megapixels:
        c = samples.make_composite(mp, seed=args.seed)
        rows += guided_rows(c, mp)
        rows += foreground_rows(c, mp)
    print("\n| MP | size | guided filter | radius | ms (best of 3) | SAD in edge band | gradient in edge band "
          "| max abs diff vs ours, same grid |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["op"] == "guided filter":
            print(f"| {r['mp']:g} | {r['size']} | {r['variant']} | {r['radius']} | {r['ms']:.0f} | "
                  f"{r['sad_band']:.2f} | {r['grad_band']:.2f} | "
                  + (f"{r['max_diff_vs_ours']:.1e} |" if "max_diff_vs_ours" in r else "- |"))
    print("\n| MP | size | foreground | ms (best of 3) | first call ms | MAE vs true fg (0.05<a<0.95) "
          "| MAE on white |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["op"] == "foreground":
            jit = f"{1000 * r['first_call_s']:.0f}" if "first_call_s" in r else ""
            print(f"| {r['mp']:g} | {r['size']} | {r['variant']} | {r['ms']:.0f} | {jit} | "
                  f"{r['fg_mae']:.2f} | {r['on_white_mae']:.2f} |")
    if args.out:
        meta = {"opencv": cv2.__version__, "pymatting": pymatting.__version__, "numpy": np.__version__,
                "pymatting_import_compile_s": compile_s, "pymatting_import_cached_s": import_s}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
