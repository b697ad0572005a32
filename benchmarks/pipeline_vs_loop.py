"""Images/s of cvmatte's file pipeline against the plain per-image loop, same network, same files,
side by side in one run; with --truth, the accuracy of each configuration against exact alpha in
the same run.

The plain loop is how rembg runs a model (rembg/bg.py, session_simple.py): open with Pillow,
resize to 320x320 (Lanczos), normalise, run one image on ONNX Runtime in fp32, min-max the
output, resize back (Lanczos), cut out, save the PNG with Pillow. Everything runs in one process,
on the same files, with one warm-up pass each, interleaved repeats, best of them.

cvmatte configurations are BACKEND:PRECISION (the CLI's --backend and --precision; auto:auto is
what `cvmatte matte` runs by default); "notile" appended runs without tiles and despill (the
loop's own work).

    python -m cvmatte.benchmarks.pipeline_vs_loop --model u2netp --photos DIR [--longer-side 800] [--truth DIR] \
        [--configs auto:auto onnxruntime:fp32 openvino:fp32 openvino:bf16] [--out FILE.json]
    python -m cvmatte.benchmarks.pipeline_vs_loop            # the demo photos and 6 synthetic 2 MP shots
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cvmatte import Matter
from cvmatte.benchmarks.plain_loop import plain_loop, plain_mask, plain_session
from cvmatte.benchmarks.suite.config import machine_info
from cvmatte.engine import metrics, zoo
from cvmatte.engine.errors import CvmatteError
from cvmatte.engine.imageio import IMAGE_SUFFIXES, read_image
from cvmatte.samples import make_composite, write_demo_photos

ALPHA_SUFFIX = ".alpha.png"


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


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.endswith(ALPHA_SUFFIX))


def shrink_photos(paths: list[Path], side: int, folder: Path) -> list[Path]:
    """The photos whose longer side is at least `side`, shrunk to it (area filter, JPEG 95) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        rgb = read_image(p).rgb
        if max(rgb.shape[:2]) < side:
            continue
        f = side / max(rgb.shape[:2])
        small = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
        out.append(folder / f"{p.stem}.jpg")
        Image.fromarray(small).save(out[-1], quality=95)
    return out


def matter_for(model: str, config: str) -> Matter:
    backend, precision, *rest = config.split(":") + ["auto"] * (2 - len(config.split(":")))
    plain = rest == ["notile"]
    return Matter(model, backend, "cpu", precision=precision, **({"tile": False, "despill": 0.0} if plain else {}))


def truth_sad(matter: Matter | None, session, spec, truth: list[Path]) -> float:
    """Mean SAD (/1000) of the configuration's alpha against exact alpha over the truth images."""
    sads = []
    for p in truth:
        gt = read_image(p.with_name(p.stem + ALPHA_SUFFIX)).rgb[..., 0].astype(np.float32) / 255.0
        if matter is None:
            alpha = np.asarray(plain_mask(session, spec, Image.open(p).convert("RGB")), np.float32) / 255.0
        else:
            alpha = matter.matte(p).alpha
        sads.append(metrics.sad(alpha, gt))
    return float(np.mean(sads))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="zoo name or file (default: the default model)")
    ap.add_argument("--photos", type=Path, default=None, help="a folder of real photos (default: the demo "
                    "photos and --composites synthetic shots)")
    ap.add_argument("--longer-side", type=int, default=None, help="only the photos at least this large, "
                    "shrunk to it (the catalog case: photos of one size)")
    ap.add_argument("--truth", type=Path, default=None, help="a folder of images with <stem>.alpha.png beside: "
                    "each configuration's SAD against it")
    ap.add_argument("--configs", nargs="+", default=["auto:auto", "onnxruntime:fp32:notile", "onnxruntime:fp32"],
                    help="cvmatte configurations BACKEND:PRECISION[:notile]")
    ap.add_argument("--composites", type=int, default=6, help="synthetic product shots added to the demo photos")
    ap.add_argument("--megapixels", type=float, default=2.0, help="size of each synthetic shot")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cvmatte-bench-") as tmp:
        tmp = Path(tmp)
        paths = images_in(args.photos) if args.photos else make_catalog(tmp / "in", args.composites, args.megapixels)
        if args.longer_side:
            paths = shrink_photos(paths, args.longer_side, tmp / "shrunk")
        mpix = sum(np.prod(Image.open(p).size) for p in paths) / 1e6
        model = args.model or zoo.DEFAULT_MODEL
        ref = Matter(model, "onnxruntime", "cpu", precision="fp32")
        session = plain_session(ref.model.path)
        runs = {"plain loop (rembg-style), onnxruntime fp32": (None, lambda o: plain_loop(paths, ref.model.path,
                                                                                          ref.spec, o, session))}
        for config in args.configs:
            try:
                m = matter_for(model, config)
            except CvmatteError as e:
                print(f"{config}: skipped ({e})")
                continue
            runs[f"cvmatte {config} = {m.backend.describe()}"] = (m, (lambda m: lambda o: m.matte_files(paths, o))(m))
        for name, (_, fn) in runs.items():  # warm-up: caches, thread pools, first-run setup
            fn(tmp / "warm" / str(abs(hash(name))))
        seconds = {name: [] for name in runs}
        for rep in range(args.repeats):
            for name, (_, fn) in runs.items():  # interleaved, so drift in machine load hits all alike
                t0 = time.perf_counter()
                fn(tmp / f"out{rep}" / str(abs(hash(name))))
                seconds[name].append(time.perf_counter() - t0)
        truth = images_in(args.truth) if args.truth else []
        sads = {name: truth_sad(m, session, ref.spec, truth) for name, (m, _) in runs.items()} if truth else {}

    n = len(paths)
    base = min(seconds["plain loop (rembg-style), onnxruntime fp32"])
    info = machine_info()
    print(f"\n{n} images, {mpix:.1f} MP in all; {info['cores']} cores: {info['cpu']} ({', '.join(info['cpu_flags'])})")
    ref_sad = next((v for k, v in sads.items() if "onnxruntime:fp32" in k and "notile" not in k), None)
    head = "| configuration | best s | images/s | MP/s | vs plain loop |" + (" SAD vs exact alpha |" if sads else "")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    rows = []
    for name, ts in seconds.items():
        best = min(ts)
        row = {"config": name, "seconds": ts, "images_per_s": n / best, "mp_per_s": mpix / best, "vs_loop": base / best}
        line = f"| {name} | {best:.2f} | {n / best:.2f} | {mpix / best:.2f} | {base / best:.2f}x |"
        if sads:
            row["sad"] = sads[name]
            rel = f" ({sads[name] / ref_sad - 1:+.1%} vs cvmatte fp32)" if ref_sad else ""
            line += f" {sads[name]:.3f}{rel} |"
        rows.append(row)
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"images": n, "megapixels": mpix, "model": model, "machine": info,
                                        "truth_images": len(truth), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
