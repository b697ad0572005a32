"""Images for the demo, the tests and the benchmarks, all made on the spot from packaged data.

- Real photos: scikit-image's bundled sample data (the `scikit-image` wheel on PyPI; licences in
  its data/README.txt: coffee by Rachel Michetti, chelsea by Stefan van der Walt, rocket by SpaceX,
  astronaut by NASA, motorcycle from the Middlebury stereo set).
- Synthetic composites with exact alpha: a product-like silhouette with hair-thin strands, drawn
  anti-aliased at full resolution, textured with one real photo and laid over another. The alpha
  we draw is the ground truth, exactly, at any size (1, 4, 16 megapixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: scikit-image file -> name and format we write it as (JPEG and PNG both appear in catalogs).
PHOTOS = {
    "coffee.png": "coffee.jpg",
    "motorcycle_left.png": "motorcycle.jpg",
    "rocket.jpg": "rocket.jpg",
    "chelsea.png": "chelsea.png",
    "astronaut.png": "astronaut.png",
}


def skimage_data_dir() -> Path:
    try:
        import skimage
    except ImportError:
        raise RuntimeError("the sample photos come from scikit-image: pip install 'cvmatte[demo]'") from None
    return Path(skimage.__file__).parent / "data"


def load_photo(name: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a scikit-image sample (e.g. 'coffee.png')."""
    bgr = cv2.imread(str(skimage_data_dir() / name), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(skimage_data_dir() / name)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_demo_photos(dest: str | Path) -> list[Path]:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src, name in PHOTOS.items():
        rgb = load_photo(src)
        path = dest / name
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        written.append(path)
    return written


#: (foreground photo, background photo) pairs for synthetic product shots, used by the trainer,
#: the tests and the benchmarks alike.
SCENES = [("coffee.png", "astronaut.png"), ("chelsea.png", "motorcycle_left.png"), ("coffee.png", "rocket.jpg"),
          ("chelsea.png", "astronaut.png"), ("coffee.png", "motorcycle_left.png"), ("chelsea.png", "rocket.jpg")]


@dataclass
class Composite:
    """rgb: uint8 [H, W, 3]; alpha: float32 [H, W] exact ground truth; fg/bg: the layers."""

    rgb: np.ndarray
    alpha: np.ndarray
    foreground: np.ndarray
    background: np.ndarray


def _silhouette(h: int, w: int, rng: np.random.Generator, strands: int) -> np.ndarray:
    """A bottle-like product: a rounded body, a shoulder and a neck, plus fine strands
    (fibres, hair) leaving its outline; drawn with sub-pixel precision and anti-aliasing."""
    shift = 4
    S = 1 << shift
    canvas = np.zeros((h, w), np.uint8)
    cx, cy = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.52, 0.58)
    bw, bh = w * rng.uniform(0.16, 0.22), h * rng.uniform(0.22, 0.27)
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    n = 4.0  # superellipse: a rounded rectangle like a bottle's body
    xs = cx + bw * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** (2 / n)
    ys = cy + bh * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** (2 / n)
    body = np.stack([xs, ys], 1)
    neck_w, top = bw * 0.35, cy - bh * 1.75
    neck = np.array([[cx - neck_w, cy - bh * 0.9], [cx - neck_w, top], [cx + neck_w, top], [cx + neck_w, cy - bh * 0.9],
                     [cx + bw * 0.8, cy - bh * 0.85], [cx - bw * 0.8, cy - bh * 0.85]])
    for poly in (body, neck):
        cv2.fillPoly(canvas, [np.round(poly * S).astype(np.int32)], 255, cv2.LINE_AA, shift)
    cv2.circle(canvas, (int(cx * S), int((top + 1) * S)), int(neck_w * 1.1 * S), 255, -1, cv2.LINE_AA, shift)
    for _ in range(strands):
        a = rng.uniform(0, 2 * np.pi)
        x0, y0 = cx + bw * np.cos(a) * 0.98, cy + bh * np.sin(a) * 0.98
        length = rng.uniform(0.05, 0.14) * min(h, w)
        bend = rng.uniform(-0.8, 0.8)
        s = np.linspace(0, 1, 40)[:, None]
        d = np.array([np.cos(a), np.sin(a)])
        p = np.array([-d[1], d[0]])
        pts = np.array([x0, y0]) + s * length * d + (s ** 2) * bend * length * 0.4 * p
        thickness = 1 if rng.random() < 0.7 else 2
        cv2.polylines(canvas, [np.round(pts * S).astype(np.int32)], False, 255, thickness, cv2.LINE_AA, shift)
    return canvas.astype(np.float32) / 255.0


def make_composite(megapixels: float = 4.0, seed: int = 0, fg_photo: str = "coffee.png",
                   bg_photo: str = "astronaut.png", strands: int = 60, aspect: float = 4 / 3) -> Composite:
    """A synthetic product shot with exact alpha at about `megapixels` (width/height = aspect)."""
    rng = np.random.default_rng(seed)
    h = int(round(np.sqrt(megapixels * 1e6 / aspect)))
    w = int(round(h * aspect))
    alpha = _silhouette(h, w, rng, strands)
    fg = cv2.resize(load_photo(fg_photo), (w, h), interpolation=cv2.INTER_CUBIC)
    bg = cv2.resize(load_photo(bg_photo), (w, h), interpolation=cv2.INTER_CUBIC)
    # A studio backdrop: the background photo defocused and lightened, as product shots look.
    k = max(3, (min(h, w) // 60) | 1)
    bg = cv2.GaussianBlur(bg, (k, k), 0)
    bg = (bg.astype(np.float32) * 0.5 + 127).astype(np.uint8)
    a = alpha[..., None]
    rgb = np.clip(fg.astype(np.float32) * a + bg.astype(np.float32) * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    return Composite(rgb, alpha, fg, bg)
