"""Standardised outputs: names and folders, SKU resolution, compositing on a canvas.

Default layout: OUT/YYYYMMDD/HHMMSS_<SKU>/<stem>_matte.png (RGBA, original resolution), with
optional <stem>_alpha.png and <stem>_white.jpg beside it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from . import imageio

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, fallback: str = "unknown") -> str:
    """Only letters, digits, '.', '_' and '-': a SKU or stem never makes a path of its own."""
    cleaned = _UNSAFE.sub("_", text).strip("._")
    return cleaned or fallback


@dataclass
class OutputOptions:
    rgba: bool = True
    alpha: bool = False
    white_bg: bool = False
    #: (width, height) of the white-background canvas; None keeps the photo's own size.
    canvas: tuple[int, int] | None = None
    #: Share of the canvas left empty on each side around the product.
    margin: float = 0.05
    background: tuple[int, int, int] = (255, 255, 255)
    jpeg_quality: int = 95
    png_compression: int = 3


class SkuResolver:
    """SKU from a CSV mapping (columns: file name, SKU), else a regex on the file name (its group
    'sku' or group 1), else the parent folder's name."""

    def __init__(self, regex: str | None = None, csv_path: str | Path | None = None):
        self.regex = re.compile(regex) if regex else None
        self.mapping: dict[str, str] = {}
        if csv_path:
            with open(csv_path, newline="") as f:
                for row in csv.reader(f):
                    if len(row) >= 2 and row[0].strip() and not row[0].startswith("#"):
                        self.mapping[row[0].strip()] = row[1].strip()

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


class OutputLayout:
    def __init__(self, root: str | Path, when: datetime | None = None):
        self.root = Path(root)
        self.when = when or datetime.now()
        self.day_dir = self.root / self.when.strftime("%Y%m%d")

    def folder(self, sku: str) -> Path:
        return self.day_dir / f"{self.when.strftime('%H%M%S')}_{safe_name(sku)}"

    def paths(self, sku: str, stem: str, options: OutputOptions) -> dict[str, Path]:
        d, stem = self.folder(sku), safe_name(stem, "image")
        out = {}
        if options.rgba:
            out["rgba"] = d / f"{stem}_matte.png"
        if options.alpha:
            out["alpha"] = d / f"{stem}_alpha.png"
        if options.white_bg:
            out["white"] = d / f"{stem}_white.jpg"
        return out

    @property
    def manifest(self) -> Path:
        return self.day_dir / f"{self.when.strftime('%H%M%S')}_manifest.jsonl"


def parse_size(text: str) -> tuple[int, int]:
    """'800x600' -> (800, 600); ValueError for anything else, zero or negative sides included."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT such as 800x800, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"expected WIDTHxHEIGHT such as 800x800, got {text!r}")
    return w, h


def compose_on_canvas(foreground: np.ndarray, alpha: np.ndarray, canvas: tuple[int, int] | None = None,
                      margin: float = 0.05, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Composite over a plain colour. foreground: uint8 [H, W, 3]; alpha: float32 [H, W].

    With a canvas (width, height), the product (alpha's bounding box) is cropped, scaled to fit
    inside the margin and centred. Returns uint8 [h, w, 3].
    """
    if canvas is not None:
        cw, ch = canvas
        ys, xs = np.nonzero(alpha > 0.02)
        if len(ys):
            foreground = foreground[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        bh, bw = alpha.shape
        avail_w, avail_h = max(1, cw * (1 - 2 * margin)), max(1, ch * (1 - 2 * margin))
        s = min(avail_w / bw, avail_h / bh)
        nw, nh = max(1, round(bw * s)), max(1, round(bh * s))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        fg = cv2.resize(foreground, (nw, nh), interpolation=interp)
        a = np.clip(cv2.resize(alpha, (nw, nh), interpolation=interp), 0, 1)
        full_fg = np.zeros((ch, cw, 3), np.uint8)
        full_a = np.zeros((ch, cw), np.float32)
        y0, x0 = (ch - nh) // 2, (cw - nw) // 2
        full_fg[y0:y0 + nh, x0:x0 + nw] = fg
        full_a[y0:y0 + nh, x0:x0 + nw] = a
        foreground, alpha = full_fg, full_a
    a = alpha[..., None]
    out = foreground.astype(np.float32) * a + np.asarray(color, np.float32) * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def encode_outputs(result, options: OutputOptions) -> dict[str, bytes]:
    """The bytes of each requested output of one MatteResult, keyed like OutputLayout.paths."""
    out = {}
    if options.rgba:
        out["rgba"] = imageio.encode_png(result.rgba, options.png_compression)
    if options.alpha:
        out["alpha"] = imageio.encode_png(result.alpha_u8, options.png_compression)
    if options.white_bg:
        white = compose_on_canvas(result.foreground, result.alpha, options.canvas, options.margin, options.background)
        out["white"] = imageio.encode_jpeg(white, options.jpeg_quality)
    return out
