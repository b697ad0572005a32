"""Quality against exact alpha: every catalog configuration, and the FP16/INT8 variants with tiles
and the guided filter, on synthetic product shots (real photos for texture and backdrop) at each
requested size in megapixels; SAD, MSE, gradient and connectivity errors (alphamatting.com
definitions) and seconds per image, per scene, then their means per configuration and size.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from cvmatte import Matter
from cvmatte.benchmarks.plain_loop import plain_mask
from cvmatte.benchmarks.suite.config import BenchConfig
from cvmatte.benchmarks.suite.variants import catalog_matter
from cvmatte.engine import metrics, zoo
from cvmatte.samples import SCENES, make_composite


def plain_alpha(session, spec, rgb: np.ndarray) -> np.ndarray:
    """The rembg-style loop's alpha for one image (pipeline_vs_loop.plain_mask)."""
    return np.asarray(plain_mask(session, spec, Image.fromarray(rgb)), np.float32) / 255.0


def accuracy(cfg: BenchConfig, configs: dict, variants: dict, log) -> list[dict]:
    import onnxruntime as ort

    runners = {}
    for name, kwargs in configs.items():
        if "plain_loop" in kwargs:
            resolved = zoo.resolve(kwargs["plain_loop"])
            session = ort.InferenceSession(str(resolved.path), providers=["CPUExecutionProvider"])
            runners[name] = lambda rgb, s=session, sp=resolved.spec: plain_alpha(s, sp, rgb)
        else:
            runners[name] = lambda rgb, m=catalog_matter(kwargs): m.matte(rgb).alpha
    for label, (precision, model) in variants.items():
        if precision != "fp32":
            runners[f"cvmatte {label}, tiles + guided filter"] = \
                lambda rgb, m=Matter(model, device="cpu"): m.matte(rgb).alpha
    rows = []
    for mp in cfg.accuracy_megapixels:
        for seed, (fg, bg) in enumerate(SCENES[:cfg.scenes]):
            c = make_composite(mp, seed=seed, fg_photo=fg, bg_photo=bg)
            for name, run in runners.items():
                t0 = time.perf_counter()
                a = run(c.rgb)
                rows.append({"config": name, "megapixels": mp, "scene": f"{fg.split('.')[0]} on {bg.split('.')[0]}",
                             "sad": metrics.sad(a, c.alpha), "mse": metrics.mse(a, c.alpha),
                             "grad": metrics.gradient_error(a, c.alpha), "conn": metrics.connectivity_error(a, c.alpha),
                             "seconds": time.perf_counter() - t0})
            log(f"accuracy {mp:g} MP scene {seed}: {len(runners)} configurations")
    return rows


def summarize_accuracy(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["config"], r["megapixels"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for config, mp in keys:
        mine = [r for r in rows if r["config"] == config and r["megapixels"] == mp]
        out.append({"config": config, "megapixels": mp, "images": len(mine),
                    **{k: float(np.mean([r[k] for r in mine])) for k in ("sad", "mse", "grad", "conn", "seconds")}})
    return out

