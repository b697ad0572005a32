"""Everything a cut-out becomes: the output kinds, the background vocabulary, names and folders.

Kinds are data (KINDS): `rgba` (<stem>_matte.png, RGBA at the photo's resolution), `alpha`
(<stem>_alpha.png, 8-bit) and `background` (<stem>_background.jpg: the product on a background,
at the photo's size or on a canvas). One vocabulary for every front door (CLI, catalog, API,
service, web page):

    background  white | any colour PIL knows (#f4f4f4, #fff, rgb(1,2,3), ivory) |
                gradient:TOP,BOTTOM | image:PATH
    canvas      WIDTHxHEIGHT; the product is cropped to its alpha, scaled to `fill` and centred
                (None: the photo's own size, nothing moved)
    fill        share of the canvas the product's bounding box fills along its tighter side
    shadow      a soft contact shadow under the product

Layouts name the files: `SkuLayout` (catalogs: OUT/<SKU>/<stem>_matte.png, the same place on
every run) and `DatedLayout` (`cvmatte matte`: OUT/YYYYMMDD/HHMMSS_<SKU>/...); `plan_stems` is
the one name planner: `a.jpg` and `a.png` in one SKU become `a` and `a_png`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import ImageColor

from . import imageio

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


#: Longest safe name: a stem plus "_background.jpg", or a SKU folder, stays far below the 255 bytes
#: a file name may have, with room for the temporary name written first.
MAX_NAME = 150


def safe_name(text: str, fallback: str = "unknown") -> str:
    """Only letters, digits, '.', '_' and '-': a SKU or stem never makes a path of its own. A longer
    name than MAX_NAME keeps its start and a hash of the whole, so distinct names stay distinct."""
    cleaned = _UNSAFE.sub("_", text).strip("._")
    if len(cleaned) > MAX_NAME:
        import hashlib

        cleaned = cleaned[:MAX_NAME - 13] + "-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return cleaned or fallback


def parse_size(text: str) -> tuple[int, int]:
    """'800x600' -> (800, 600); ValueError for anything else, zero or negative sides included."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT such as 800x800, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"expected WIDTHxHEIGHT such as 800x800, got {text!r}")
    return w, h


def parse_color(text: str) -> tuple[int, int, int]:
    """Any colour Pillow reads: #RRGGBB, #RGB, rgb(...), hsl(...), CSS names."""
    try:
        return ImageColor.getrgb(text.strip())[:3]
    except ValueError:
        raise ValueError(f"{text!r} is not a colour: write #RRGGBB, #RGB, rgb(R,G,B) or a name such as white") from None


# ---------------------------------------------------------------------------- what to write


@dataclass(frozen=True)
class OutputSpec:
    rgba: bool = True
    alpha: bool = False
    #: None: no background image; else the vocabulary above ("white", "#f4f4f4", ...).
    background: str | None = None
    canvas: tuple[int, int] | None = None
    fill: float = 0.8
    shadow: bool = False
    #: How dark the shadow's core is (0..1).
    shadow_strength: float = 0.45
    jpeg_quality: int = 92
    png_compression: int = 3

    def __post_init__(self):
        if not 0.05 <= self.fill <= 1.0:
            raise ValueError(f"fill must be in 0.05..1, got {self.fill}")
        if self.canvas is not None and min(self.canvas) < 16:
            raise ValueError(f"canvas must be at least 16x16, got {self.canvas}")
        if self.background is not None:
            backdrop(self.background, (16, 16))  # a bad colour or a missing image fails here, before any work

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if (self.background is not None if k == "background" else getattr(self, k))]

    @classmethod
    def with_aliases(cls, white_bg: bool = False, margin: float | None = None, **kw) -> "OutputSpec":
        """The options of earlier releases: white_bg=True is background="white"; margin m (empty
        share of the canvas on each side) is fill 1 - 2m."""
        if white_bg and kw.get("background") is None:
            kw["background"] = "white"
        if margin is not None:
            kw["fill"] = 1.0 - 2.0 * margin
        return cls(**kw)


@dataclass(frozen=True)
class OutputKind:
    suffix: str
    media_type: str
    #: (cut-out, spec) -> the file's bytes; the cut-out has .rgba, .alpha_u8, .foreground, .alpha.
    encode: Callable


def _encode_background(cutout, spec: OutputSpec) -> bytes:
    return imageio.encode_jpeg(on_background(cutout.foreground, cutout.alpha, spec), spec.jpeg_quality)


KINDS: dict[str, OutputKind] = {
    "rgba": OutputKind("_matte.png", "image/png", lambda c, s: imageio.encode_png(c.bgra, s.png_compression, bgr=True)),
    "alpha": OutputKind("_alpha.png", "image/png", lambda c, s: imageio.encode_png(c.alpha_u8, s.png_compression)),
    "background": OutputKind("_background.jpg", "image/jpeg", _encode_background),
}


def encode(cutout, spec: OutputSpec) -> dict[str, bytes]:
    """The bytes of every kind the spec asks for, keyed by kind."""
    return {kind: KINDS[kind].encode(cutout, spec) for kind in spec.kinds}


# ---------------------------------------------------------------------------- backgrounds


def backdrop(background: str, size: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, 3]: the empty background at size (width, height)."""
    w, h = size
    if background.startswith("gradient:"):
        parts = background[len("gradient:"):].split(",")
        if len(parts) != 2:
            raise ValueError(f"{background!r}: a gradient is gradient:TOP,BOTTOM (two colours)")
        top, bottom = (np.asarray(parse_color(p), np.float32) for p in parts)
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(np.rint(top * (1 - t) + bottom * t), (h, w, 3)).astype(np.uint8)
    if background.startswith("image:"):
        path = Path(background[len("image:"):])
        if not path.is_file():
            raise ValueError(f"background image {path} not found")
        rgb = imageio.read_image(path).rgb
        s = max(w / rgb.shape[1], h / rgb.shape[0])  # cover the canvas, crop the overflow
        big = cv2.resize(rgb, (max(w, round(rgb.shape[1] * s)), max(h, round(rgb.shape[0] * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])
    return np.full((h, w, 3), parse_color(background), np.uint8)


def place(foreground: np.ndarray, alpha: np.ndarray, canvas: tuple[int, int], fill: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """The product cropped to its alpha's bounding box, scaled to fill the canvas and centred.
    -> (foreground uint8 [h, w, 3], alpha float32 [h, w]) at canvas size."""
    cw, ch = canvas
    ys, xs = np.nonzero(alpha > 0.02)
    if len(ys):
        foreground = foreground[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    bh, bw = alpha.shape
    s = min(cw * fill / bw, ch * fill / bh)
    nw, nh = max(1, min(cw, round(bw * s))), max(1, min(ch, round(bh * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    fg = cv2.resize(foreground, (nw, nh), interpolation=interp)
    a = np.clip(cv2.resize(alpha.astype(np.float32), (nw, nh), interpolation=interp), 0, 1)
    full_fg = np.zeros((ch, cw, 3), np.uint8)
    full_a = np.zeros((ch, cw), np.float32)
    y0, x0 = (ch - nh) // 2, (cw - nw) // 2
    full_fg[y0:y0 + nh, x0:x0 + nw] = fg
    full_a[y0:y0 + nh, x0:x0 + nw] = a
    return full_fg, full_a


def contact_shadow(alpha: np.ndarray, strength: float) -> np.ndarray:
    """float32 [h, w] in [0, strength]: how much to darken the background. A flat ellipse under
    the product's footprint (the width of its lowest fifth), blurred: soft at the edges, darkest
    where the product meets the ground."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0.5)
    shadow = np.zeros((h, w), np.float32)
    if not len(ys):
        return shadow
    top, bottom = ys.min(), ys.max()
    foot = alpha[bottom - max(1, (bottom - top) // 5):bottom + 1] > 0.5
    cols = np.nonzero(foot.any(axis=0))[0]
    x0, x1 = (cols.min(), cols.max()) if len(cols) else (xs.min(), xs.max())
    cx, half_w = (x0 + x1) / 2.0, max(2.0, (x1 - x0) / 2.0 * 1.05)
    half_h = max(2.0, 0.04 * (bottom - top + 1))
    cv2.ellipse(shadow, (int(round(cx)), int(bottom)), (int(round(half_w)), int(round(half_h))), 0, 0, 360, 1.0, -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, half_h))
    return np.clip(shadow / max(1e-6, shadow.max()), 0, 1) * strength


def on_background(foreground: np.ndarray, alpha: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """uint8 [h, w, 3]: the product over the spec's background, on its canvas or at its own size."""
    if spec.canvas is not None:
        foreground, alpha = place(foreground, alpha, spec.canvas, spec.fill)
    h, w = alpha.shape
    bg = backdrop(spec.background or "white", (w, h)).astype(np.float32)
    if spec.shadow:
        bg *= 1.0 - contact_shadow(alpha, spec.shadow_strength)[..., None]
    a = alpha[..., None]
    return np.clip(foreground.astype(np.float32) * a + bg * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- names and folders


class SkuResolver:
    """SKU from a CSV mapping (columns: file name, SKU), else a regex on the file name (its group
    'sku' or group 1), else the parent folder's name."""

    def __init__(self, regex: str | None = None, csv_path: str | Path | None = None):
        self.regex = re.compile(regex) if regex else None
        self.mapping: dict[str, str] = {}
        if csv_path:
            # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which is not part of the
            # first file name.
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                for line, row in enumerate(csv.reader(f), 1):
                    if len(row) >= 2 and row[0].strip() and not row[0].startswith("#"):
                        key, sku = row[0].strip(), row[1].strip()
                        if self.mapping.get(key, sku) != sku:
                            raise ValueError(f"line {line}: {key} has two SKUs ({self.mapping[key]}, {sku})")
                        self.mapping[key] = sku

    def __call__(self, path: Path) -> str:
        path = Path(path)
        for key in (path.name, path.stem, str(path)):
            if key in self.mapping:
                return safe_name(self.mapping[key])
        if self.regex:
            m = self.regex.search(path.name)
            if m:
                return safe_name(m.group("sku") if "sku" in m.groupdict() else m.group(1) if m.groups() else m.group(0))
        return safe_name(path.parent.name or "root")


def plan_stems(inputs: list[tuple[str, str]], taken: dict[tuple[str, str], str] | None = None) -> list[str]:
    """inputs: (input, sku) pairs -> a unique output stem per input within its SKU. `a.jpg` and
    `a.png` become `a` and `a_png`; taken: (sku, stem) -> input, named by an earlier run, kept."""
    owner = dict(taken or {})
    by_input = {v: k[1] for k, v in owner.items()}
    stems = []
    for name, sku in inputs:
        if name in by_input:
            stems.append(by_input[name])
            continue
        stem = next(c for c in stem_candidates(name) if owner.get((sku, c), name) == name)
        owner[(sku, stem)] = name
        stems.append(stem)
    return stems


def stem_candidates(name: str):
    """An input's output stems in order of preference: `a`, `a_png`, `a_png_2`, ..."""
    p = Path(name)
    base = safe_name(p.stem, "image")
    yield base
    with_ext = f"{base}_{safe_name(p.suffix.lstrip('.').lower(), 'noext')}"
    yield with_ext
    for n in range(2, 100_000):
        yield f"{with_ext}_{n}"


@dataclass
class SkuLayout:
    """OUT/<SKU>/<stem><suffix>, OUT/manifest.jsonl, OUT/summary.json: a catalog lands in the same
    place on every run, so it can be resumed and cached."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    def folder(self, sku: str) -> Path:
        return self.root / safe_name(sku)

    def path(self, sku: str, stem: str, kind: str) -> Path:
        return self.folder(sku) / f"{stem}{KINDS[kind].suffix}"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


@dataclass
class DatedLayout(SkuLayout):
    """OUT/YYYYMMDD/HHMMSS_<SKU>/<stem><suffix> and OUT/YYYYMMDD/HHMMSS_manifest.jsonl: every
    `cvmatte matte` run in a folder of its own."""

    when: datetime = field(default_factory=datetime.now)

    @property
    def day_dir(self) -> Path:
        return self.root / self.when.strftime("%Y%m%d")

    def folder(self, sku: str) -> Path:
        return self.day_dir / f"{self.when.strftime('%H%M%S')}_{safe_name(sku)}"

    @property
    def manifest(self) -> Path:
        return self.day_dir / f"{self.when.strftime('%H%M%S')}_manifest.jsonl"

    @property
    def summary(self) -> Path:
        return self.day_dir / f"{self.when.strftime('%H%M%S')}_summary.json"
