"""End-to-end catalog throughput: a folder of demo photos and synthetic product shots goes through
decode -> matte -> encode -> write once per catalog configuration (after a warm-up pass), the plain
rembg-style loop included; images/s and MP/s, with CPU utilisation, peak and growth of resident
memory, GPU utilisation and memory (ResourceSampler), and the batcher's model-busy share and batch
fill where the pipeline reports them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from cvmatte.benchmarks.plain_loop import plain_loop
from cvmatte.benchmarks.suite.config import BenchConfig
from cvmatte.benchmarks.suite.resources import ResourceSampler
from cvmatte.benchmarks.suite.variants import catalog_matter
from cvmatte.engine import zoo
from cvmatte.samples import SCENES, make_composite, write_demo_photos


def make_catalog(folder: Path, composites: int, megapixels: float) -> list[Path]:
    paths = write_demo_photos(folder)
    for i in range(composites):
        fg, bg = SCENES[i % len(SCENES)]
        c = make_composite(megapixels, seed=200 + i, fg_photo=fg, bg_photo=bg)
        p = folder / f"product_{i:02d}.jpg"
        Image.fromarray(c.rgb).save(p, quality=92)
        paths.append(p)
    return paths


def throughput(cfg: BenchConfig, configs: dict, folder: Path, log) -> list[dict]:
    paths = make_catalog(folder / "in", cfg.catalog_composites, cfg.catalog_megapixels)
    mpix = sum(np.prod(Image.open(p).size) for p in paths) / 1e6
    rows = []
    for name, kwargs in configs.items():
        out = folder / "out" / re.sub(r"[^a-z0-9]+", "_", name.lower())
        if "plain_loop" in kwargs:
            resolved = zoo.resolve(kwargs["plain_loop"])

            def run(o):
                plain_loop(paths, resolved.path, resolved.spec, o)
        else:
            m = catalog_matter(kwargs)

            def run(o):
                return m.matte_files(paths, o).batching
        run(out / "warm")  # thread pools, ONNX Runtime's first-run setup, file caches
        with ResourceSampler() as s:
            batching = run(out / "timed")
        rows.append({"config": name, "images": len(paths), "megapixels": mpix, "seconds": s.wall,
                     "images_per_s": len(paths) / s.wall, "mp_per_s": mpix / s.wall, "cpu_util": s.cpu_util,
                     "peak_rss_mib": s.peak / 2 ** 20, "rss_growth_mib": (s.peak - s.start) / 2 ** 20,
                     "model_busy": batching.busy_fraction if batching else None,
                     "gpu_util": s.gpu_util, "gpu_peak_mib": s.gpu_peak_mib,
                     "batch_fill": batching.fill if batching else None})
        log(f"throughput {name}: {len(paths) / s.wall:.2f} images/s")
    return rows
