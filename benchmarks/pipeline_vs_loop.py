"""Images/s of cvmatte's file pipeline against the plain per-image loop, same model, same files.

The plain loop is how rembg runs a model (rembg/bg.py, session_simple.py): open with Pillow,
resize to 320x320 (Lanczos), normalise, run one image, min-max the output, resize back (Lanczos),
cut out, save the PNG with Pillow. Everything runs in one process, on the same files, with one
warm-up pass each, so the ratio is measured side by side.

    python -m cvmatte.benchmarks.pipeline_vs_loop [--photos 5] [--composites 6] [--megapixels 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cvmatte import Matter
from cvmatte.samples import make_composite, write_demo_photos


def make_catalog(folder: Path, composites: int, megapixels: float) -> list[Path]:
    paths = write_demo_photos(folder / "photos")
    comp_dir = folder / "composites"
    comp_dir.mkdir(parents=True)
    backgrounds = ["astronaut.png", "motorcycle_left.png", "rocket.jpg"]
    fgs = ["coffee.png", "chelsea.png"]
    for i in range(composites):
        c = make_composite(megapixels, seed=i, fg_photo=fgs[i % 2], bg_photo=backgrounds[i % 3])
        p = comp_dir / f"product_{i:02d}.jpg"
        Image.fromarray(c.rgb).save(p, quality=92)
        paths.append(p)
    return paths


def plain_mask(session, spec, img: Image.Image) -> Image.Image:
    """The rembg-style mask of one RGB image: Lanczos resize to the model's size, normalise, run,
    min-max the output, Lanczos resize back."""
    small = np.array(img.resize(spec.input_size[::-1], Image.LANCZOS)) / 255.0
    x = ((small - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)[None].astype(np.float32)
    pred = session.run(None, {spec.input_name: x})[0][0, 0]
    pred = (pred - pred.min()) / max(1e-6, pred.max() - pred.min())
    return Image.fromarray((pred * 255).astype(np.uint8), "L").resize(img.size, Image.LANCZOS)


def plain_loop(paths: list[Path], model_path: Path, spec, out: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        img = Image.open(p).convert("RGB")
        mask = plain_mask(session, spec, img)
        cutout = Image.composite(img, Image.new("RGBA", img.size, 0), mask)
        cutout.save(out / f"{p.stem}.png")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--composites", type=int, default=6, help="synthetic product shots added to the 5 photos")
    ap.add_argument("--megapixels", type=float, default=2.0, help="size of each synthetic shot")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cvmatte-bench-") as tmp:
        tmp = Path(tmp)
        paths = make_catalog(tmp / "in", args.composites, args.megapixels)
        mpix = sum(np.prod(Image.open(p).size) for p in paths) / 1e6
        full = Matter(device="cpu")
        same_work = Matter(device="cpu", tile=False, despill=0.0)
        configs = {
            "plain loop (rembg-style)": lambda o: plain_loop(paths, full.model.path, full.spec, o),
            "cvmatte, --no-tile --despill 0 (same work)": lambda o: same_work.matte_files(paths, o),
            "cvmatte, default (tiles + despill)": lambda o: full.matte_files(paths, o),
        }
        for name, fn in configs.items():  # warm-up: caches, thread pools, ORT's first-run setup
            fn(tmp / "warm" / name.replace(" ", "_"))
        seconds = {name: [] for name in configs}
        for rep in range(args.repeats):
            for name, fn in configs.items():  # interleaved, so drift in machine load hits all alike
                seconds[name].append(timed(lambda: fn(tmp / f"out{rep}" / name.replace(" ", "_"))))

    n = len(paths)
    base = min(seconds["plain loop (rembg-style)"])
    rows = []
    print(f"\n{n} images, {mpix:.1f} MP in all; {os.cpu_count()} cores: {platform.processor() or platform.machine()}")
    print("| configuration | best s | images/s | MP/s | vs plain loop |")
    print("|---|---|---|---|---|")
    for name, ts in seconds.items():
        best = min(ts)
        rows.append({"config": name, "seconds": ts, "images_per_s": n / best, "mp_per_s": mpix / best})
        print(f"| {name} | {best:.2f} | {n / best:.2f} | {mpix / best:.2f} | {base / best:.2f}x |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"images": n, "megapixels": mpix, "machine": platform.uname()._asdict(),
                                        "cpu_count": os.cpu_count(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
