"""Training data for distillation: the user's photos labelled by the teacher (once, cached), and
synthetic composites with exact alpha; augmentations that keep image and alpha aligned."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cvmatte.benchmarks.samples import SCENES, make_composite
from cvmatte.engine.imageio import IMAGE_SUFFIXES, atomic_write_bytes, decode_image, encode_png


@dataclass
class Sample:
    """rgb: uint8 [H, W, 3]; alpha: float32 [H, W]; exact: True when alpha is ground truth."""

    rgb: np.ndarray
    alpha: np.ndarray
    exact: bool
    source: str


def list_photos(folders: list[Path]) -> list[Path]:
    paths = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder of photos")
        paths += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no photos in {', '.join(map(str, folders))}")
    return paths


def teacher_labels(matter, photos: list[Path], cache: Path, log=print) -> list[Sample]:
    """The teacher's alpha for every photo, through the engine (what users see), cached as PNG
    keyed by the photo's sha256 and the teacher model's sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    samples, fresh = [], 0
    for path in photos:
        data = Path(path).read_bytes()
        key = hashlib.sha256(data + matter.spec.sha256.encode()).hexdigest()[:24]
        label = cache / f"{key}.png"
        rgb = decode_image(data, str(path)).rgb  # the bytes already read for the key
        if label.is_file():
            alpha = cv2.imread(str(label), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        else:
            alpha = matter.matte(rgb).alpha
            atomic_write_bytes(label, encode_png(np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)))
            fresh += 1
        samples.append(Sample(rgb, alpha, False, str(path)))
    log(f"teacher labels: {len(samples)} photos ({fresh} new, {len(samples) - fresh} from {cache})")
    return samples


def synthetic(count: int, seed: int, megapixels: float = 0.3) -> list[Sample]:
    out = []
    for i in range(count):
        fg, bg = SCENES[(seed + i) % len(SCENES)]
        c = make_composite(megapixels, seed=seed + i, fg_photo=fg, bg_photo=bg, strands=30)
        out.append(Sample(c.rgb, c.alpha, True, f"synthetic:{seed + i}"))
    return out


def augment(sample: Sample, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random crop (60-100% of the shorter side) and flip, resized to size x size; image and
    alpha get the very same geometry."""
    h, w = sample.alpha.shape
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    rgb = cv2.resize(sample.rgb[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(sample.alpha[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)


def whole(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation view: the whole image at size x size, as the engine's coarse pass sees it."""
    rgb = cv2.resize(sample.rgb, (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(sample.alpha, (size, size), interpolation=cv2.INTER_AREA)
    return rgb, alpha
