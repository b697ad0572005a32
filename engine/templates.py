"""Platform templates: the cut-out placed on a canvas of a set size, on white, a colour, a vertical
gradient or an image, cropped to the alpha's bounding box, scaled so that it fills a set share of
the canvas and centred; optionally with a soft contact shadow under it, so that a product on white
stands on something instead of floating.

    parse_template("white") / ("#f4f4f4") / ("gradient:#ffffff,#e6e6e6") / ("image:backdrop.jpg")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import imageio

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_color(text: str) -> tuple[int, int, int]:
    m = _HEX.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a colour: write it as #RRGGBB")
    v = m.group(1)
    return int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16)


@dataclass(frozen=True)
class Template:
    #: "white", "#RRGGBB", "gradient:#TOP,#BOTTOM" or "image:PATH".
    background: str = "white"
    #: (width, height) of the canvas.
    size: tuple[int, int] = (800, 800)
    #: The product's bounding box fills this share of the canvas along its tighter dimension.
    fill: float = 0.8
    shadow: bool = False
    #: How dark the shadow's core is (0..1).
    shadow_strength: float = 0.45

    def __post_init__(self):
        if not 0.05 <= self.fill <= 1.0:
            raise ValueError(f"template fill must be in 0.05..1, got {self.fill}")
        if min(self.size) < 16:
            raise ValueError(f"template size must be at least 16x16, got {self.size}")
        self.canvas()  # a bad colour or a missing image fails here, before any work

    def canvas(self) -> np.ndarray:
        """uint8 [h, w, 3]: the empty background."""
        w, h = self.size
        bg = self.background
        if bg == "white":
            return np.full((h, w, 3), 255, np.uint8)
        if bg.startswith("gradient:"):
            parts = bg[len("gradient:"):].split(",")
            if len(parts) != 2:
                raise ValueError(f"{bg!r}: a gradient is gradient:#TOP,#BOTTOM")
            top, bottom = (np.asarray(parse_color(p), np.float32) for p in parts)
            t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
            return np.broadcast_to(np.rint(top * (1 - t) + bottom * t), (h, w, 3)).astype(np.uint8)
        if bg.startswith("image:"):
            path = Path(bg[len("image:"):])
            if not path.is_file():
                raise ValueError(f"template background image {path} not found")
            rgb = imageio.read_image(path).rgb
            s = max(w / rgb.shape[1], h / rgb.shape[0])  # cover the canvas, crop the overflow
            big = cv2.resize(rgb, (max(w, round(rgb.shape[1] * s)), max(h, round(rgb.shape[0] * s))),
                             interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
            return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])
        return np.full((h, w, 3), parse_color(bg), np.uint8)


def place(foreground: np.ndarray, alpha: np.ndarray, template: Template) -> tuple[np.ndarray, np.ndarray]:
    """The product cropped to its alpha's bounding box, scaled to fill the canvas and centred.
    -> (foreground uint8 [h, w, 3], alpha float32 [h, w]) at canvas size."""
    cw, ch = template.size
    ys, xs = np.nonzero(alpha > 0.02)
    if len(ys):
        foreground = foreground[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    bh, bw = alpha.shape
    s = min(cw * template.fill / bw, ch * template.fill / bh)
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
    sigma = max(1.0, half_h)
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigma)
    return np.clip(shadow / max(1e-6, shadow.max()), 0, 1) * strength


def render(foreground: np.ndarray, alpha: np.ndarray, template: Template) -> np.ndarray:
    """uint8 [h, w, 3]: the product on the template's canvas."""
    fg, a = place(foreground, alpha, template)
    bg = template.canvas().astype(np.float32)
    if template.shadow:
        bg *= 1.0 - contact_shadow(a, template.shadow_strength)[..., None]
    a3 = a[..., None]
    return np.clip(fg.astype(np.float32) * a3 + bg * (1.0 - a3) + 0.5, 0, 255).astype(np.uint8)
