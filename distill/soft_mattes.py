"""Photographic cut-outs with real soft alpha, from a Debian package, split into training and
held-out objects.

The training cut-outs of the corpus (Tux Paint's stamps) have hard, anti-aliased outlines; a
refiner of soft edges needs soft ones. FlightGear's scenery textures are photographs of trees,
shrubs, grasses and clouds cut out by hand with soft alpha: see-through foliage, twigs a pixel
wide, the fading rims of clouds (the cases of hair, fur, plants and glass). Each texture is an
atlas of objects; each object becomes one RGBA cut-out.

Held out by source file, never by object: an atlas often shows one tree several times, so both
sides of a split from one atlas would share it. Every third texture (sorted) is held out.

    python -m cvmatte.distill.soft_mattes ROOT -o soft-mattes    (ROOT: the extracted package)

scripts/soft_mattes.sh downloads the package, extracts it and runs this; the package's copyright
file is copied next to the cut-outs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

PACKAGE = "flightgear-data-base"
VERSION = "1:2020.3.16+dfsg-1"
#: Texture folders inside the package: photographic trees and shrubs, and clouds.
SOURCES = ["usr/share/games/flightgear/Textures/Trees/*.png",
           "usr/share/games/flightgear/Textures/Sky/cl_*.png",
           "usr/share/games/flightgear/Scenery/Models/Trees/*.png"]
HELD_OUT_EVERY = 3
#: An object smaller than this (longer side, px) is too small to be worth a tile.
MIN_SIDE = 160
#: Kept only if this share of its non-zero alpha is soft (between 8 and 247 of 255): the point of
#: the set is the soft edge.
MIN_SOFT_SHARE = 0.08


def soft_share(alpha: np.ndarray) -> float:
    """The share of the visible pixels (alpha > 0) whose alpha is soft (8 < alpha < 247)."""
    return float(((alpha > 8) & (alpha < 247)).sum() / max(1, (alpha > 0).sum()))


def source_files(root: Path) -> list[Path]:
    files = sorted({p for pattern in SOURCES for p in root.glob(pattern)})
    return [p for p in files if _has_alpha(p)]


def _has_alpha(path: Path) -> bool:
    im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return im is not None and im.ndim == 3 and im.shape[2] == 4 and im.dtype == np.uint8 and (im[..., 3] < 255).any()


def objects(rgba: np.ndarray) -> list[np.ndarray]:
    """The atlas's objects as RGBA crops (other objects' pixels cleared): components of the
    non-zero alpha, joined across gaps of a few pixels (a tree's separate twigs are one tree)."""
    a = rgba[..., 3]
    mask = cv2.dilate((a > 0).astype(np.uint8), np.ones((9, 9), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        if max(w, h) < MIN_SIDE:
            continue
        crop = rgba[y:y + h, x:x + w].copy()
        crop[..., 3][labels[y:y + h, x:x + w] != i] = 0
        alpha = crop[..., 3]
        if (alpha > 0).mean() < 0.05 or soft_share(alpha) < MIN_SOFT_SHARE:
            continue
        out.append(crop)
    return out


def _fingerprint(rgba: np.ndarray) -> bytes:
    """Equal for the copies of one object an atlas repeats (same shape, same coarse alpha)."""
    small = cv2.resize(rgba[..., 3], (16, 16), interpolation=cv2.INTER_AREA) // 32
    return hashlib.sha256(np.asarray(rgba.shape[:2], np.int64).tobytes() + small.tobytes()).digest()


def build(root: Path, out: Path, log=print) -> dict:
    files = source_files(root)
    if not files:
        raise SystemExit(f"{root}: no texture of {PACKAGE} found under {SOURCES}")
    seen: set[bytes] = set()
    index = []
    for k, path in enumerate(files):
        split = "heldout" if k % HELD_OUT_EVERY == 0 else "train"
        rgba = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        kept = 0
        for j, obj in enumerate(objects(rgba)):
            fp = _fingerprint(obj)
            if fp in seen:
                continue
            seen.add(fp)
            name = f"{path.stem}_{j:02d}.png"
            (out / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / split / name), cv2.cvtColor(obj, cv2.COLOR_RGBA2BGRA))
            index.append({"file": f"{split}/{name}", "split": split, "source": str(path.relative_to(root)),
                          "size": [int(obj.shape[1]), int(obj.shape[0])], "soft_share": round(soft_share(obj[..., 3]), 3)})
            kept += 1
        log(f"{split:8s} {path.relative_to(root)}: {kept} objects")
    summary = {"package": PACKAGE, "version": VERSION, "sources": SOURCES, "held_out_every": HELD_OUT_EVERY,
               "objects": index}
    (out / "index.json").write_text(json.dumps(summary, indent=1))
    counts = {s: sum(1 for o in index if o["split"] == s) for s in ("train", "heldout")}
    log(f"{counts['train']} training and {counts['heldout']} held-out cut-outs in {out}")
    return summary


def read_split(folder: Path, split: str) -> list[Path]:
    """The cut-outs of one split, in a stable order."""
    return sorted((Path(folder) / split).glob("*.png"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help=f"the extracted {PACKAGE} package (dpkg-deb -x)")
    ap.add_argument("-o", "--out", type=Path, default=Path("soft-mattes"))
    a = ap.parse_args(argv)
    build(a.root, a.out)


if __name__ == "__main__":
    main()
