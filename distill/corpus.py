"""A training corpus for distillation from images that packages ship: real photos (labelled later by
the teacher) and product shots composited from cut-outs with their own alpha (exact ground truth).

Composites are written as `<name>.jpg` beside `<name>.alpha.png`; the trainer takes the alpha file
as ground truth instead of asking the teacher. Each composite is one cut-out, scaled to fill 35-85%
of the frame, over one of three backdrops e-commerce photos have: a studio sweep (plain or graded
colour with a soft contact shadow), a defocused real scene, or a sharp real scene.

    python -m cvmatte.distill.corpus --cutouts STAMPS_DIR --backgrounds WALLPAPERS_DIR... \
        --photos PHOTO_DIR... --count 400 -o corpus/

`scripts/training_corpus.sh` fetches the Debian packages used for `cvunet-s` and runs this.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

from cvmatte.engine.imageio import atomic_write_bytes, encode_png

from .data import alpha_file, is_held_out, list_photos


def photographic_cutouts(folders: list[Path], min_opaque: int = 5000, min_colour_share: float = 0.1) -> list[Path]:
    """RGBA images whose opaque part looks like a photo, not flat clip art: at least
    `min_colour_share` distinct colours per opaque pixel (clip art is far below 0.05)."""
    keep = []
    for path in list_photos(folders):
        im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if im is None or im.ndim != 3 or im.shape[2] != 4:
            continue
        opaque = im[..., 3] > 250
        n = int(opaque.sum())
        if n < min_opaque:
            continue
        colours = np.unique(np.ascontiguousarray(im[..., :3][opaque]).view(np.dtype((np.void, 3))))
        if len(colours) / n >= min_colour_share:
            keep.append(path)
    return keep


def _crop_resize(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of img with the aspect h:w (at least half its shorter side), resized to h x w."""
    ih, iw = img.shape[:2]
    scale = rng.uniform(0.5, 1.0) * min(ih / h, iw / w)
    ch, cw = int(h * scale), int(w * scale)
    y, x = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA)


def _studio(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A plain or vertically graded backdrop, mostly light, with a little sensor noise."""
    top = rng.uniform(150, 255, 3) if rng.random() < 0.7 else rng.uniform(0, 255, 3)
    bottom = np.clip(top + rng.normal(0, 25, 3), 0, 255) if rng.random() < 0.6 else top
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    bg = (1 - t) * top + t * bottom
    return np.broadcast_to(bg, (h, w, 3)) + rng.normal(0, 2.0, (h, w, 3)).astype(np.float32)


def compose(cutout: np.ndarray | list[np.ndarray], background: np.ndarray, rng: np.random.Generator,
            side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One product shot: uint8 RGB [H, W, 3] and its exact float32 alpha [H, W].

    cutout: uint8 RGBA, or a list of them for a group shot (placed side by side, the later ones in
    front where they touch: the multi-part subjects a model may drop a part of); background: uint8
    RGB photo (used for the scene backdrops); side: the longer side in pixels (default: 480-800, the
    size catalog photos are trained at)."""
    cutouts = cutout if isinstance(cutout, list) else [cutout]
    side = side or int(rng.integers(480, 801))
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 4]))
    h, w = (side, int(side / aspect)) if aspect >= 1 else (int(side * aspect), side)
    alpha = np.zeros((h, w), np.float32)
    fg = np.zeros((h, w, 3), np.float32)  # premultiplied by alpha
    n = len(cutouts)
    feet = []
    for k, cutout in enumerate(cutouts):
        ys, xs = np.nonzero(cutout[..., 3] > 8)
        cut = cutout[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        # Each object gets a slot of the width; a little overlap between neighbours is allowed.
        slot_w = w / n
        fill = rng.uniform(0.35, 0.85) if n == 1 else rng.uniform(0.45, 0.8)
        s = fill * min(h / cut.shape[0], slot_w * (1.15 if n > 1 else 1) / cut.shape[1])
        fh, fw = max(8, min(h, int(cut.shape[0] * s))), max(8, min(w, int(cut.shape[1] * s)))
        cut = cv2.resize(cut, (fw, fh), interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
        cy = int(np.clip((h - fh) / 2 + rng.normal(0, 0.08) * h, 0, h - fh))
        cx = int(np.clip(slot_w * (k + 0.5) - fw / 2 + rng.normal(0, 0.08) * slot_w, 0, w - fw))
        a = np.clip(cut[..., 3].astype(np.float32) / 255.0, 0, 1)
        # Exposure and white-balance jitter of the product, as photo sessions differ.
        colour = cut[..., :3].astype(np.float32) * rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
        region = (slice(cy, cy + fh), slice(cx, cx + fw))
        fg[region] = colour * a[..., None] + fg[region] * (1 - a[..., None])
        alpha[region] = a + alpha[region] * (1 - a)
        feet.append((cx, cy, fw, fh))
    fg = fg / np.maximum(alpha, 1e-6)[..., None]

    kind = rng.choice(["studio", "defocused", "scene"], p=[0.45, 0.35, 0.2])
    if kind == "studio":
        bg = _studio(h, w, rng)
        # A soft contact shadow under the product; it belongs to the backdrop (alpha 0 there).
        shadow = np.zeros((h, w), np.float32)
        for cx, cy, fw, fh in feet:
            foot = (cx + fw // 2, min(h - 1, cy + fh))
            cv2.ellipse(shadow, foot, (max(2, int(fw * 0.45)), max(2, int(fh * 0.05))), 0, 0, 360, 1.0, -1)
        k = max(3, (max(f[2] for f in feet) // 8) | 1)
        shadow = cv2.GaussianBlur(shadow, (k, k), 0) * rng.uniform(0.15, 0.45)
        bg = bg * (1 - shadow[..., None])
    else:
        bg = _crop_resize(background, h, w, rng).astype(np.float32)
        if kind == "defocused":
            bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(2.0, 8.0))
    a = alpha[..., None]
    rgb = np.clip(fg * a + bg * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    return rgb, alpha


#: Every HELD_OUT_EVERY-th source file (sorted) is held out of training (in_split).
HELD_OUT_EVERY = 5


def in_split(index: int, split: str, every: int) -> bool:
    """The split of source files (cut-outs, backgrounds, photos) between the training corpus and
    the held-out evaluation set: every `every`-th file of a sorted list is held out, so no cut-out
    or backdrop of a held-out composite was ever seen in training."""
    if split == "all":
        return True
    held = every > 0 and is_held_out(index, 1 / every)
    return held if split == "heldout" else not held


def build_corpus(cutouts: list[Path], backgrounds: list[Path], photos: list[Path], count: int, out: Path,
                 seed: int = 0, max_side: int = 1280, split: str = "all", every: int = HELD_OUT_EVERY,
                 objects: tuple[int, int] = (1, 1), log=print) -> dict:
    """Write `count` composites and copies of the real photos (longer side capped) into out/, from
    the source files of `split` ("train", "heldout" or "all"; see in_split); each composite shows
    between objects[0] and objects[1] cut-outs side by side."""
    out = Path(out)
    (out / "composites").mkdir(parents=True, exist_ok=True)
    (out / "photos").mkdir(parents=True, exist_ok=True)
    cut_paths = [p for i, p in enumerate(photographic_cutouts(cutouts)) if in_split(i, split, every)]
    bg_paths = [p for i, p in enumerate(list_photos(backgrounds)) if in_split(i, split, every)]
    bgs = [cv2.cvtColor(_cap(img, max_side), cv2.COLOR_BGR2RGB) for img in map(read_photo, bg_paths) if img is not None]
    if not cut_paths or not bgs:
        raise FileNotFoundError("need photographic RGBA cut-outs and background photos")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cut_paths))  # every cut-out once before any twice, in mixed order
    drawn = 0
    for i in range(count):
        n = 1 if objects == (1, 1) else int(rng.integers(objects[0], objects[1] + 1))
        cuts = [read_cutout(cut_paths[order[(drawn + k) % len(order)]]) for k in range(n)]
        drawn += n
        rgb, alpha = compose(cuts if n > 1 else cuts[0], bgs[int(rng.integers(len(bgs)))], rng)
        name = out / "composites" / f"comp_{i:04d}.jpg"
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        atomic_write_bytes(name, jpg.tobytes())
        atomic_write_bytes(alpha_file(name), encode_png(np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)))
    n_photos = 0
    for i, p in enumerate(list_photos(photos) if photos else []):
        img = read_photo(p) if in_split(i, split, every) else None
        if img is None:
            continue
        dest = out / "photos" / f"{p.parent.name}_{p.stem}.jpg"
        if max(img.shape[:2]) > max_side or p.suffix.lower() not in (".jpg", ".jpeg"):
            ok, jpg = cv2.imencode(".jpg", _cap(img, max_side), [cv2.IMWRITE_JPEG_QUALITY, 92])
            atomic_write_bytes(dest, jpg.tobytes())
        else:
            shutil.copyfile(p, dest)
        n_photos += 1
    log(f"corpus in {out}: {count} composites from {len(cut_paths)} cut-outs over {len(bgs)} backgrounds, "
        f"{n_photos} photos")
    return {"composites": count, "cutouts": len(cut_paths), "backgrounds": len(bgs), "photos": n_photos}


def read_photo(path: Path) -> np.ndarray | None:
    """BGR, or None for what is no use as a photo: unreadable, tiny, or flat (a plain colour)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or min(img.shape[:2]) < 200 or cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).std() < 10:
        return None
    return img


def load_backgrounds(folders: list[Path], max_side: int | None = None) -> list[np.ndarray]:
    """uint8 RGB of every usable photo in the folders (read_photo), longer side capped at max_side."""
    bgr = (img for img in map(read_photo, list_photos(folders)) if img is not None)
    return [cv2.cvtColor(img if max_side is None else _cap(img, max_side), cv2.COLOR_BGR2RGB) for img in bgr]


def read_cutout(path: Path) -> np.ndarray:
    """uint8 RGBA of a cut-out file."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)


def _cap(img: np.ndarray, max_side: int) -> np.ndarray:
    s = max_side / max(img.shape[:2])
    return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cutouts", type=Path, nargs="+", required=True, help="folders of RGBA cut-outs")
    ap.add_argument("--backgrounds", type=Path, nargs="+", required=True, help="folders of background photos")
    ap.add_argument("--photos", type=Path, nargs="*", default=[], help="folders of real photos to copy in")
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["all", "train", "heldout"], default="all",
                    help="which source files to use: every --every-th of each list is held out")
    ap.add_argument("--every", type=int, default=HELD_OUT_EVERY)
    ap.add_argument("--objects", default="1", help="cut-outs per composite: N or MIN-MAX (group shots)")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args(argv)
    lo, _, hi = args.objects.partition("-")
    build_corpus(args.cutouts, args.backgrounds, args.photos, args.count, args.out, args.seed, split=args.split,
                 every=args.every, objects=(int(lo), int(hi or lo)))


if __name__ == "__main__":
    main()
