"""Tiled high resolution: refine only the uncertain band of the coarse alpha, in overlapping tiles.

The coarse pass sees the whole image at the model's size (global context); upsampled, its alpha
is right almost everywhere but blurred along the object's edge. Tiles cover only that band, so
the cost grows with the boundary's length, not the image's area. Each tile carries the coarse
alpha as guidance; tiles are blended with feathered weights, and the coarse alpha decides outside
the band.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Tile:
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def uncertain_band(coarse: np.ndarray, low: float, high: float, dilate_px: int) -> np.ndarray:
    """bool [H, W]: pixels whose coarse alpha is neither ~0 nor ~1, grown by dilate_px."""
    band = ((coarse > low) & (coarse < high)).astype(np.uint8)
    if dilate_px > 0 and band.any():
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        band = cv2.dilate(band, k)
    return band.astype(bool)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile sits flush with the border: all tiles are one size
    return starts


def plan_tiles(band: np.ndarray, tile: int, overlap: int) -> list[Tile]:
    """Tiles of one size (tile x tile, or the image's side where smaller) on a regular grid with
    `overlap` pixels shared between neighbours, keeping only those that touch the band."""
    if overlap * 2 >= tile:
        raise ValueError(f"tile overlap must be under half the tile size; got overlap={overlap}, tile={tile}")
    H, W = band.shape
    th, tw = min(tile, H), min(tile, W)
    integral = cv2.integral(band.astype(np.uint8))
    tiles = []
    for y in _starts(H, th, tile - overlap):
        for x in _starts(W, tw, tile - overlap):
            count = integral[y + th, x + tw] - integral[y, x + tw] - integral[y + th, x] + integral[y, x]
            if count:
                tiles.append(Tile(y, x, y + th, x + tw))
    return tiles


def feather(tile: Tile, shape: tuple[int, int], overlap: int) -> np.ndarray:
    """float32 [h, w] blending weight: ramps up over `overlap` pixels on sides that face another
    tile, flat on sides at the image border (nothing there to blend with)."""
    H, W = shape
    h, w = tile.y1 - tile.y0, tile.x1 - tile.x0

    def ramp(n, at_start, at_end):
        r = np.ones(n, np.float32)
        m = min(overlap, n // 2)
        if m > 0:
            up = (np.arange(m, dtype=np.float32) + 0.5) / m
            if not at_start:
                r[:m] = np.minimum(r[:m], up)
            if not at_end:
                r[n - m:] = np.minimum(r[n - m:], up[::-1])
        return r

    wy = ramp(h, tile.y0 == 0, tile.y1 == H)
    wx = ramp(w, tile.x0 == 0, tile.x1 == W)
    return wy[:, None] * wx[None, :]


def blend(coarse: np.ndarray, weight: np.ndarray, tiles: list[Tile], refined: list[np.ndarray],
          overlap: int) -> np.ndarray:
    """Feather-blend refined tiles into the coarse alpha where the band says so.

    coarse: float32 [H, W]; weight: float32 [H, W] in [0, 1], the band (1 inside, a soft rim, 0
    outside: there the coarse alpha decides); refined: float32 [h, w] per tile.
    """
    # The accumulators cover the tiles' bounding box only, and the final mix runs in strips of
    # rows, so no full-frame float32 temporaries beyond these two (memory grows with the band).
    out = coarse.copy()
    if not tiles:
        return out
    if len(tiles) == 1 and tiles[0].slices == (slice(0, coarse.shape[0]), slice(0, coarse.shape[1])):
        # One tile over the whole image (the guided filter's at up to 1 MP): no neighbour to
        # feather against, so the mix is the band's weight alone (the same values, 3 ms less at 0.4 MP).
        for y in range(0, coarse.shape[0], 256):
            rows = slice(y, y + 256)
            c = coarse[rows]
            out[rows] = np.clip(c + weight[rows] * (refined[0][rows] - c), 0.0, 1.0)
        return out
    by0, by1 = min(t.y0 for t in tiles), max(t.y1 for t in tiles)
    bx0, bx1 = min(t.x0 for t in tiles), max(t.x1 for t in tiles)
    acc = np.zeros((by1 - by0, bx1 - bx0), np.float32)
    wsum = np.zeros_like(acc)
    for t, r in zip(tiles, refined):
        w = feather(t, coarse.shape, overlap)
        sl = (slice(t.y0 - by0, t.y1 - by0), slice(t.x0 - bx0, t.x1 - bx0))
        acc[sl] += w * r
        wsum[sl] += w
    for y in range(0, by1 - by0, 256):
        rows = slice(y, min(by1 - by0, y + 256))
        c = coarse[by0 + rows.start:by0 + rows.stop, bx0:bx1]
        covered = wsum[rows] > 0
        refined_full = np.divide(acc[rows], wsum[rows], out=c.copy(), where=covered)
        mask = weight[by0 + rows.start:by0 + rows.stop, bx0:bx1] * covered
        out[by0 + rows.start:by0 + rows.stop, bx0:bx1] = np.clip(c + mask * (refined_full - c), 0.0, 1.0)
    return out
