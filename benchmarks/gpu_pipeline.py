"""End to end against the model's ceiling, on one device, in one run:

- model only: the input already on the device, batches through the torch backend (the ceiling);
- device pipeline: files -> nvjpeg decode, resize, model, finish on the GPU -> uint8 -> PNG on CPU
  threads (engine/gpu/runner.py);
- CPU-decode pipeline: the same files through the CPU runner (decode, resize and finish on CPU
  threads, the model on the GPU through the batcher's pinned ring);
- plain loop: one image at a time, Pillow decode, torch model, PNG (how most tools run).

Generated catalog of JPEGs (product composites with real textures) at 2 MP and 12 MP, written as
RGBA PNGs. Prints a table and writes JSON; the GPU busy fraction is the model's share of the wall
time. Runs on the CPU too at a tiny size (how the device script is tried before a GPU session):

    python -m cvmatte.benchmarks.gpu_pipeline --device cuda --n2 500 --n12 100 --out results/
    python -m cvmatte.benchmarks.gpu_pipeline --device cpu --n2 4 --n12 0 --mp2 0.3   # a dry run
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from cvmatte import Matter
from cvmatte.engine import imageio
from cvmatte.samples import make_composite


def make_catalog(folder: Path, n: int, megapixels: float, unique: int = 12) -> list[Path]:
    """n JPEGs: `unique` distinct composites, each written under several names (the runner does
    not deduplicate without a cache, so every file is decoded and matted)."""
    folder.mkdir(parents=True, exist_ok=True)
    fgs, bgs = ["coffee.png", "chelsea.png"], ["astronaut.png", "motorcycle_left.png", "rocket.jpg"]

    def one(i):
        c = make_composite(megapixels, seed=i, fg_photo=fgs[i % 2], bg_photo=bgs[i % 3])
        buf = io.BytesIO()
        Image.fromarray(c.rgb).save(buf, "JPEG", quality=90)
        return buf.getvalue()

    with ThreadPoolExecutor() as pool:
        blobs = list(pool.map(one, range(min(n, unique))))
    paths = []
    for i in range(n):
        p = folder / f"p{i:04d}.jpg"
        p.write_bytes(blobs[i % len(blobs)])
        paths.append(p)
    return paths


def sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(m: Matter, batch: int, seconds: float) -> dict:
    backend = m.backend
    torch = backend.torch
    h, w = m.spec.input_size
    x = torch.rand((batch, 3, h, w), device=backend.device)
    with torch.inference_mode():
        backend.infer(x)  # warm-up (and compile / graph capture)
        sync(torch, backend.device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            backend.infer(x)
            n += batch
        sync(torch, backend.device)
    return {"images_per_s": n / (time.perf_counter() - t0), "batch": batch}


def plain_loop(m: Matter, paths: list[Path], out: Path) -> dict:
    """Per image: Pillow decode, resize, the model, upsample, PNG with Pillow (no batching, no overlap)."""
    backend = m.backend
    torch = backend.torch
    F = torch.nn.functional
    mean = torch.tensor(m.spec.mean, device=backend.device).view(1, 3, 1, 1)
    std = torch.tensor(m.spec.std, device=backend.device).view(1, 3, 1, 1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            im = Image.open(p).convert("RGB")
            x = torch.from_numpy(np.asarray(im)).to(backend.device).permute(2, 0, 1)[None].float() / 255.0
            x = F.interpolate(x, m.spec.input_size, mode="bilinear", antialias=True)
            a = backend.infer((x - mean) / std)
            a = F.interpolate(a, (im.height, im.width), mode="bilinear").clamp(0, 1)[0, 0]
            alpha = (a * 255 + 0.5).to(torch.uint8).cpu().numpy()
            rgba = np.dstack([np.asarray(im), alpha])
            Image.fromarray(rgba).save(out / f"{p.stem}.png")
    return {"images_per_s": len(paths) / (time.perf_counter() - t0)}


def pipeline(m: Matter, paths: list[Path], out: Path, device_pipeline: bool) -> dict:
    m.device_pipeline = device_pipeline
    m.last_stage_s = {}
    t0 = time.perf_counter()
    report = m.matte_files(paths, out)
    wall = time.perf_counter() - t0
    stages = dict(getattr(m, "last_stage_s", {}) or {})
    row = {"images_per_s": len(report.succeeded) / wall, "failed": len(report.failed), "wall_s": wall}
    if stages:
        row["stage_s"] = stages
        row["gpu_busy"] = stages.get("model", 0.0) / wall
    elif report.batching is not None:
        row["gpu_busy"] = report.batching.busy_fraction
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="u2netp", help="a zoo name or file the torch backend runs")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--graphs", action="store_true", help="CUDA graphs for the model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n2", type=int, default=500, help="JPEGs at --mp2 megapixels")
    ap.add_argument("--mp2", type=float, default=2.0)
    ap.add_argument("--n12", type=int, default=100, help="JPEGs at 12 MP")
    ap.add_argument("--model-seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON and markdown here")
    args = ap.parse_args(argv)
    precision = args.precision if args.device == "cuda" else "fp32"
    m = Matter(args.model, backend="torch", device=args.device, precision=precision,
               cuda_graphs=args.graphs and args.device == "cuda", batch_size=args.batch)
    result = {"device": m.backend.describe(), "machine": platform.node(), "model": m.spec.name,
              "precision": precision, "graphs": bool(args.graphs), "batch": args.batch, "sets": {}}
    print(f"# {m.describe()}", flush=True)
    result["model_only"] = model_only(m, args.batch, args.model_seconds)
    print(f"model only: {result['model_only']['images_per_s']:.1f} images/s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="cvmatte-gpu-bench-"))
    try:
        for name, n, mp in (("2MP", args.n2, args.mp2), ("12MP", args.n12, 12.0)):
            if n <= 0:
                continue
            paths = make_catalog(tmp / name / "in", n, mp)
            rows = {"device pipeline": pipeline(m, paths, tmp / name / "gpu", True),
                    "CPU-decode pipeline": pipeline(m, paths, tmp / name / "cpu", False),
                    "plain loop": plain_loop(m, paths, tmp / name / "loop")}
            result["sets"][name] = {"files": n, "megapixels": mp, **rows}
            for k, v in rows.items():
                print(f"{name} {k}: {v['images_per_s']:.1f} images/s"
                      + (f", GPU busy {v['gpu_busy']:.0%}" if "gpu_busy" in v else ""), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        m.close()
    md = [f"# GPU pipeline: {result['device']}", "",
          f"model only (input on the device, batch {args.batch}): {result['model_only']['images_per_s']:.1f} images/s", "",
          "| set | configuration | images/s | of model-only | GPU busy | stages (s) |", "|---|---|---|---|---|---|"]
    for name, rows in result["sets"].items():
        for k, v in rows.items():
            if not isinstance(v, dict):
                continue
            share = v["images_per_s"] / result["model_only"]["images_per_s"]
            stages = ", ".join(f"{s} {t:.2f}" for s, t in v.get("stage_s", {}).items())
            busy = f"{v['gpu_busy']:.0%}" if "gpu_busy" in v else "-"
            md.append(f"| {name} | {k} | {v['images_per_s']:.1f} | {share:.0%} | {busy} | {stages} |")
    print("\n".join(md))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_pipeline.json").write_text(json.dumps(result, indent=1))
        (args.out / "gpu_pipeline.md").write_text("\n".join(md) + "\n")
    return result


if __name__ == "__main__":
    main()
