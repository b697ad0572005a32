"""Training data for distillation: the user's photos labelled by the teacher (once, cached), and
synthetic composites with exact alpha; augmentations that keep image and alpha aligned."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cvmatte.samples import SCENES, make_composite
from cvmatte.engine.imageio import IMAGE_SUFFIXES, atomic_write_bytes, decode_image, encode_png


@dataclass
class Sample:
    """rgb: uint8 [H, W, 3]; alpha: float32 [H, W]; exact: True when alpha is ground truth."""

    rgb: np.ndarray
    alpha: np.ndarray
    exact: bool
    source: str


#: A photo `x.jpg` with a file `x.alpha.png` beside it has ground truth: the trainer learns that alpha
#: instead of the teacher's (composites from `distill/corpus.py` come this way).
ALPHA_SUFFIX = ".alpha.png"


def alpha_file(photo: str | Path) -> Path:
    photo = Path(photo)
    return photo.with_name(photo.stem + ALPHA_SUFFIX)


def list_photos(folders: list[Path]) -> list[Path]:
    paths = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder of photos")
        paths += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                        and not p.name.endswith(ALPHA_SUFFIX))
    if not paths:
        raise FileNotFoundError(f"no photos in {', '.join(map(str, folders))}")
    return paths


def is_held_out(index: int, holdout: float) -> bool:
    """The fixed held-out split: every k-th item (k = 1 / holdout) of a sorted list, so that it spans
    all folders, a resumed run holds out the same items, and benchmarks can find them again."""
    return holdout > 0 and index % max(2, int(round(1 / holdout))) == 0


def teacher_labels(matter, photos: list[Path], cache: Path, log=print) -> list[Sample]:
    """The teacher's alpha for every photo, through the engine (what users see), cached as PNG
    keyed by the photo's sha256 and the teacher's model_id; photos with an alpha file beside
    them take that ground truth instead."""
    cache.mkdir(parents=True, exist_ok=True)
    samples, fresh, exact = [], 0, 0
    for path in photos:
        truth = alpha_file(Path(path))
        if truth.is_file():
            rgb = decode_image(Path(path).read_bytes(), str(path)).rgb
            alpha = cv2.imread(str(truth), cv2.IMREAD_GRAYSCALE)
            if alpha is None or alpha.shape != rgb.shape[:2]:
                raise ValueError(f"{truth}: not a greyscale alpha of the size of {path}")
            samples.append(Sample(rgb, alpha.astype(np.float32) / 255.0, True, str(path)))
            exact += 1
            continue
        data = Path(path).read_bytes()
        # model_id: the file that runs and its precision; a combined model's members and rule
        key = hashlib.sha256(data + matter.model_id.encode()).hexdigest()[:24]
        label = cache / f"{key}.png"
        rgb = decode_image(data, str(path)).rgb  # the bytes already read for the key
        if label.is_file():
            alpha = cv2.imread(str(label), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        else:
            alpha = matter.matte(rgb).alpha
            atomic_write_bytes(label, encode_png(np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)))
            fresh += 1
        samples.append(Sample(rgb, alpha, False, str(path)))
    log(f"labels: {len(samples) - exact} photos by the teacher ({fresh} new, {len(samples) - exact - fresh} "
        f"from {cache}), {exact} with ground-truth alpha")
    return samples


def synthetic(count: int, seed: int, megapixels: float = 0.3) -> list[Sample]:
    out = []
    for i in range(count):
        fg, bg = SCENES[(seed + i) % len(SCENES)]
        c = make_composite(megapixels, seed=seed + i, fg_photo=fg, bg_photo=bg, strands=30)
        out.append(Sample(c.rgb, c.alpha, True, f"synthetic:{seed + i}"))
    return out


def augment(sample: Sample, size: int, rng: np.random.Generator, whole_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """With probability whole_share the whole image stretched to size x size (as the engine's
    coarse pass sees it), else a random square crop (60-100% of the shorter side) resized to
    size x size; then a random flip. Image and alpha get the very same geometry."""
    h, w = sample.alpha.shape
    if rng.random() < whole_share:
        y, x, sh, sw = 0, 0, h, w
    else:
        sh = sw = int(min(h, w) * rng.uniform(0.6, 1.0))
        y = int(rng.integers(0, h - sh + 1))
        x = int(rng.integers(0, w - sw + 1))
    rgb = cv2.resize(sample.rgb[y:y + sh, x:x + sw], (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(sample.alpha[y:y + sh, x:x + sw], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)


def whole(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation view: the whole image at size x size, as the engine's coarse pass sees it."""
    rgb = cv2.resize(sample.rgb, (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(sample.alpha, (size, size), interpolation=cv2.INTER_AREA)
    return rgb, alpha
