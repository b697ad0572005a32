"""Make docs/before_after.png: real photos and their cut-outs by the default model and by `best`.

    .venv/bin/python scripts/before_after.py [OUT.png]

One row per demo photo (coffee, chelsea the cat, astronaut, motorcycle, rocket): the original | the
cut-out by the default model | the cut-out by `best` (IS-Net and u2netp combined; fetched with npm
on first use), each over a checkerboard (what is transparent shows as squares). The photos are
scikit-image's samples (`cvmatte.samples.write_demo_photos`), cut out with `Matter(model)` on the
CPU. Only numpy, OpenCV and Pillow draw the sheet; it is saved as a 256-colour PNG.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cvmatte import Matter
from cvmatte.engine import zoo
from cvmatte.samples import write_demo_photos

PHOTOS = ["coffee.jpg", "chelsea.png", "astronaut.png", "motorcycle.jpg", "rocket.jpg"]
MODELS = [zoo.DEFAULT_MODEL, "best"]
COLUMNS = ["original"] + [f"{m}{' (default)' if m == zoo.DEFAULT_MODEL else ''}" for m in MODELS]
WIDTH = 1200
GAP = 8          # between panels and around the sheet
HEADER = 30      # the column titles
PAGE = 255       # sheet background
MAX_PANEL_H = 300


def checkerboard(h: int, w: int, square: int = 12) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    light = ((y // square + x // square) % 2 == 0)
    return np.where(light[..., None], 236, 200).astype(np.uint8).repeat(3, axis=2)


def over(rgba: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * a + backdrop.astype(np.float32) * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fit(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """img scaled to fit w x h, centred on the page colour (RGBA keeps its alpha)."""
    s = min(w / img.shape[1], h / img.shape[0])
    nw, nh = round(img.shape[1] * s), round(img.shape[0] * s)
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    cell = np.zeros((h, w, img.shape[2]), np.uint8)
    cell[..., :3] = PAGE
    y, x = (h - nh) // 2, (w - nw) // 2
    cell[y:y + nh, x:x + nw] = small
    return cell


def make_sheet() -> np.ndarray:
    """The sheet, uint8 RGB [H, WIDTH, 3]."""
    panel_w = (WIDTH - GAP * (len(COLUMNS) + 1)) // len(COLUMNS)
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_photos(tmp)
        paths = [Path(tmp) / name for name in PHOTOS]
        originals = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        cutouts = []  # per model, per photo
        for model in MODELS:
            with Matter(model, device="cpu") as m:
                cutouts.append([m.matte(p).rgba for p in paths])
    rows = []
    for k, rgb in enumerate(originals):
        panel_h = min(MAX_PANEL_H, round(rgb.shape[0] * panel_w / rgb.shape[1]))
        inside = np.zeros((panel_h, panel_w), bool)
        s = min(panel_w / rgb.shape[1], panel_h / rgb.shape[0])
        nw, nh = round(rgb.shape[1] * s), round(rgb.shape[0] * s)
        y, x = (panel_h - nh) // 2, (panel_w - nw) // 2
        inside[y:y + nh, x:x + nw] = True
        board = np.where(inside[..., None], checkerboard(panel_h, panel_w), PAGE).astype(np.uint8)
        # alpha 0 outside the photo: the page colour shows there
        rows.append([fit(rgb, panel_w, panel_h)] + [over(fit(per_photo[k], panel_w, panel_h), board)
                                                    for per_photo in cutouts])
    height = HEADER + sum(r[0].shape[0] for r in rows) + GAP * (len(rows) + 1)
    sheet = np.full((height, WIDTH, 3), PAGE, np.uint8)
    for c, title in enumerate(COLUMNS):
        x = GAP + c * (panel_w + GAP)
        cv2.putText(sheet, title, (x + 2, HEADER - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1, cv2.LINE_AA)
    y = HEADER + GAP
    for row in rows:
        for c, panel in enumerate(row):
            x = GAP + c * (panel_w + GAP)
            sheet[y:y + panel.shape[0], x:x + panel_w] = panel
        y += row[0].shape[0] + GAP
    return sheet


def main(out: Path) -> None:
    sheet = make_sheet()
    # 256 colours (no dithering) keep the PNG small; the true-colour sheet is about 730 KB.
    Image.fromarray(sheet).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, optimize=True)
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "before_after.png")
