"""Model-free refinement: the colour guided filter (edges) and foreground colour estimation (despill).

References: He, Sun, Tang, "Guided Image Filtering" (ECCV 2010, TPAMI 2013) for the filter;
Forte, Pitié, "Approximate Fast Foreground Colour Estimation" (ICIP 2021) for blur-fusion.
Both are written here from the papers' equations with OpenCV box filters, whose cost does not
depend on the radius.

Hand-written, measured against the libraries (benchmarks/results/cpu-2core-xeon-amx/refine-vs-libraries.md):
the guided filter at model resolution beats cv2.ximgproc.guidedFilter (band SAD -17%, gradient -28%);
blur-fusion is 3.7-4.5x faster than pymatting's estimate_foreground_ml but 26-41% less accurate: kept for speed.
"""

from __future__ import annotations

import cv2
import numpy as np


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """Colour guided filter.

    guide: the photo, uint8 [H, W, 3] (or float32 in [0, 1]); src: float32 [H, W]; returns
    float32 [H, W]. The output is locally an affine function of the guide's colours, so edges in
    `src` snap to edges in the photo; eps (in guide units squared, the guide read in [0, 1]) sets
    how strong an edge must be to be kept. With subsample s > 1 the affine coefficients are
    computed on an s-times smaller grid and upsampled before they are applied to the
    full-resolution guide (He and Sun, "Fast Guided Filter", 2015): s^2 times less work, and
    smoother coefficients.

    The full-resolution passes are OpenCV calls on the photo as it is: a uint8 guide is shrunk
    before it becomes float, and its 1/255 is folded into the small coefficients (at 0.5 MP this
    path took 18 ms in numpy, most of it float copies of the photo and a strided channel sum).
    """
    H, W = src.shape
    unit = np.float32(1.0 / 255.0) if guide.dtype == np.uint8 else np.float32(1.0)
    p, r = src.astype(np.float32, copy=False), int(radius)
    if subsample > 1:
        size = (max(1, W // subsample), max(1, H // subsample))
        I = cv2.resize(guide, size, interpolation=cv2.INTER_AREA).astype(np.float32) * unit
        p = cv2.resize(p, size, interpolation=cv2.INTER_AREA)
        r = max(1, round(radius / subsample))
    else:
        I = guide.astype(np.float32) * unit
    A, b = _guided_coefficients(I, p, r, eps)
    A *= unit  # applied to the guide's own values below
    if subsample > 1:
        A = cv2.resize(A, (W, H), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (W, H), interpolation=cv2.INTER_LINEAR)
    full = guide if guide.dtype == np.float32 else guide.astype(np.float32)
    return cv2.transform(cv2.multiply(A, full), np.ones((1, 3), np.float32)) + b


def trust_where_hesitant(coarse, filtered):
    """The filtered alpha where the coarse alpha hesitated (fully for 0.15..0.85), the coarse one
    where it was sure (near 0 or 1). The guided filter's linear fit over a window that spans the
    edge puts alpha into sure background and takes it from sure foreground across the whole band
    (SAD on 60 held-out composites: coarse alone 3.39, filter alone 3.79, this 3.27; on held-out
    real soft mattes band SAD -0.7..-1.1% against the filter alone, gradient +14..19%;
    benchmarks/NOTES.md, issue 22). numpy arrays or torch tensors."""
    hesitation = (8.0 * coarse * (1.0 - coarse)).clip(0.0, 1.0)
    return coarse + hesitation * (filtered - coarse)


def _guided_coefficients(I: np.ndarray, p: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Box-averaged affine coefficients (A: [H, W, 3], b: [H, W]) of the guided filter."""
    mean_I = _box(I, r)
    mean_p = _box(p, r)
    cov_Ip = _box(I * p[..., None], r) - mean_I * mean_p[..., None]
    # Covariance of the guide's colours: a symmetric 3x3 per pixel, kept as its 6 entries.
    ii = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    mean_prods = _box(np.stack([I[..., a] * I[..., b] for a, b in ii], axis=-1), r)
    var = {}
    for k, (a, b) in enumerate(ii):
        var[a, b] = mean_prods[..., k] - mean_I[..., a] * mean_I[..., b] + (eps if a == b else 0.0)
    a0, a1, a2 = solve_sym3(var, cov_Ip[..., 0], cov_Ip[..., 1], cov_Ip[..., 2])
    b = mean_p - a0 * mean_I[..., 0] - a1 * mean_I[..., 1] - a2 * mean_I[..., 2]
    return _box(np.stack([a0, a1, a2], axis=-1), r), _box(b, r)


def solve_sym3(var: dict, cx, cy, cz) -> tuple:
    """Per pixel, the inverse of the symmetric 3x3 `var` ((i, j) -> plane, i <= j) times (cx, cy,
    cz), by cofactors, all pixels at once. Plain arithmetic: numpy arrays and torch tensors alike
    (the GPU finish calls it too)."""
    c00 = var[1, 1] * var[2, 2] - var[1, 2] ** 2
    c01 = var[0, 2] * var[1, 2] - var[0, 1] * var[2, 2]
    c02 = var[0, 1] * var[1, 2] - var[0, 2] * var[1, 1]
    c11 = var[0, 0] * var[2, 2] - var[0, 2] ** 2
    c12 = var[0, 1] * var[0, 2] - var[0, 0] * var[1, 2]
    c22 = var[0, 0] * var[1, 1] - var[0, 1] ** 2
    inv_det = 1.0 / (var[0, 0] * c00 + var[0, 1] * c01 + var[0, 2] * c02)
    return ((c00 * cx + c01 * cy + c02 * cz) * inv_det, (c01 * cx + c11 * cy + c12 * cz) * inv_det,
            (c02 * cx + c12 * cy + c22 * cz) * inv_det)


#: Pixels of alpha up to 4/255 keep the photo's colour: on a composite their colour weighs at most
#: 4 levels, and the estimate there did not help. Measured on 6 product shots with exact layers
#: (benchmarks/NOTES.md, issue 17): with the engine's alpha the white-composite error over alpha
#: 1..16/255 fell 5.76 -> 5.62 levels; with the exact alpha it rose 0.61 -> 0.71.
FAINT = 4.5 / 255


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, strength: float = 1.0,
                        radius: int = 90) -> np.ndarray:
    """Remove the old background's colour from semi-transparent pixels.

    rgb: uint8 [H, W, 3]; alpha: float32 [H, W] in [0, 1]; returns uint8 [H, W, 3], the
    foreground colour F such that rgb ~ alpha*F + (1-alpha)*B, by two passes of blur-fusion
    (a wide one with `radius`, then a narrow one of 6 px). strength in [0, 1] blends between the
    photo's own colours (0) and the estimate (1).

    F differs from the photo only where FAINT < alpha < 1, a thin band, so the per-pixel algebra
    runs on those pixels alone, in strips of rows and, in each, the runs of columns holding them;
    the wide pass's blurs are smooth and run on a smaller grid.
    """
    if strength <= 0:
        return rgb
    soft = (alpha > FAINT) & (alpha < 1.0 - 1.0 / 512)
    rows, cols = np.nonzero(soft.any(axis=1))[0], np.nonzero(soft.any(axis=0))[0]
    if len(rows) == 0:
        return rgb
    y0, y1 = max(0, rows[0] - radius), min(alpha.shape[0], rows[-1] + 1 + radius)
    x0, x1 = max(0, cols[0] - radius), min(alpha.shape[1], cols[-1] + 1 + radius)
    out = rgb.copy()
    _blur_fusion(rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1], soft[y0:y1, x0:x1], strength, radius, out[y0:y1, x0:x1])
    return out


#: Rows per strip of the per-pixel passes: their float32 planes (about 100 bytes a pixel) exist for
#: one strip at a time, not for the whole frame (1.6 GB at 16 MP).
STRIP_ROWS = 128
#: cv2.blur with a 6-px kernel reads 3 rows above and 2 below: the strips overlap by this much.
_HALO = 3
#: Column runs of soft pixels closer than this merge into one block.
SEGMENT_GAP = 64


def _blur_fusion(rgb: np.ndarray, alpha: np.ndarray, soft: np.ndarray, strength: float, radius: int,
                 out: np.ndarray) -> None:
    """Writes F into `out` (uint8, the box's view of the result) at the soft pixels."""
    H, W = alpha.shape
    # Wide pass, on a grid `k` times smaller: local means of the foreground (weighted by alpha)
    # and of the background (by 1 - alpha). Shrunk from the uint8 photo: no full-size float copy.
    k = max(1, radius // 30)
    small = (max(1, W // k), max(1, H // k))
    si = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)
    sa = cv2.resize(alpha.astype(np.float32, copy=False), small, interpolation=cv2.INTER_AREA)[..., None]
    r = (max(1, round(radius / k)),) * 2
    blur_a = cv2.blur(sa, r)[..., None]
    # Each strip widens only the rows of the small grid it needs (horizontally, as cv2.resize's
    # INTER_LINEAR would) and takes its own rows between them by linear interpolation.
    small_F = cv2.blur(si * sa, r) / (blur_a + 1e-5)
    small_B = cv2.blur(si * (1 - sa), r) / (1 - blur_a + 1e-5)
    fy = np.maximum((np.arange(H, dtype=np.float64) + 0.5) * (small[1] / H) - 0.5, 0.0)
    lo = np.minimum(fy.astype(np.int64), small[1] - 1)
    hi = np.minimum(lo + 1, small[1] - 1)
    wy = np.where(lo == small[1] - 1, 0.0, fy - lo).astype(np.float32)[:, None, None]
    for s0 in range(0, H, STRIP_ROWS):
        s1 = min(H, s0 + STRIP_ROWS)
        if not soft[s0:s1].any():
            continue  # F is the photo there: `out` holds it already
        h0, h1 = max(0, s0 - _HALO), min(H, s1 + _HALO)
        r0, r1 = lo[h0], hi[h1 - 1] + 1
        wide_F = cv2.resize(small_F[r0:r1], (W, r1 - r0), interpolation=cv2.INTER_LINEAR).reshape(r1 - r0, W, 3)
        wide_B = cv2.resize(small_B[r0:r1], (W, r1 - r0), interpolation=cv2.INTER_LINEAR).reshape(r1 - r0, W, 3)
        # The per-pixel planes only over the runs of columns holding soft pixels (plus the narrow
        # blur's halo): along a product's outline a strip's soft pixels sit in a few short runs.
        for c0, c1 in _column_runs(soft[s0:s1].any(axis=0), _HALO, SEGMENT_GAP):
            _fuse_block(rgb, alpha, soft, strength, out, (s0, s1, h0, h1), (c0, c1), wide_F, wide_B, r0,
                        lo, hi, wy)


def _column_runs(cols: np.ndarray, halo: int, gap: int) -> list[tuple[int, int]]:
    """[c0, c1) runs covering the True columns grown by `halo`; runs closer than `gap` merge (each
    run costs a few cv2 calls, so tiny gaps are not worth a split)."""
    idx = np.flatnonzero(cols)
    breaks = np.flatnonzero(np.diff(idx) > gap)
    starts = np.concatenate([idx[:1], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], idx[-1:]]) + 1
    W = len(cols)
    return [(max(0, int(a) - halo), min(W, int(b) + halo)) for a, b in zip(starts, ends)]


def _fuse_block(rgb, alpha, soft, strength, out, strip, cols, wide_F, wide_B, r0, lo, hi, wy) -> None:
    """Both blur-fusion passes over rows h0:h1 and columns c0:c1 of one strip; writes the rows
    s0:s1 of the soft pixels at least `_HALO` columns inside the block (or at the image's side)."""
    s0, s1, h0, h1 = strip
    c0, c1 = cols
    rows, cs = slice(h0, h1), slice(c0, c1)
    ys, xs = np.nonzero(soft[rows, cs])
    img = rgb[rows, cs].astype(np.float32) * (1.0 / 255.0)
    a = alpha[rows, cs].astype(np.float32, copy=False)
    wF = wide_F[lo[rows] - r0, cs] * (1 - wy[rows]) + wide_F[hi[rows] - r0, cs] * wy[rows]
    wB = wide_B[lo[rows] - r0, cs] * (1 - wy[rows]) + wide_B[hi[rows] - r0, cs] * wy[rows]
    I_s, a_s = img[ys, xs], a[ys, xs][:, None]
    F1_s = np.clip(wF[ys, xs] + a_s * (I_s - a_s * wF[ys, xs] - (1 - a_s) * wB[ys, xs]), 0, 1)
    # Narrow pass: F1 equals the photo where alpha is 1 and is weighted by 0 where alpha is 0,
    # so F1 * alpha differs from photo * alpha only at the soft pixels.
    Fa = img * a[..., None]
    Fa[ys, xs] = F1_s * a_s
    Bb = wB * (1 - a)[..., None]
    # The halo rows and columns belong to the neighbouring strips and runs.
    inner = (ys >= s0 - h0) & (ys < s1 - h0)
    ys, xs, I_s, a_s = ys[inner], xs[inner], I_s[inner], a_s[inner]
    n = (6, 6)
    blur_a6 = cv2.blur(a, n)[ys, xs][:, None]
    nF = cv2.blur(Fa, n)[ys, xs] / (blur_a6 + 1e-5)
    nB = cv2.blur(Bb, n)[ys, xs] / (1 - blur_a6 + 1e-5)
    F_s = np.clip(nF + a_s * (I_s - a_s * nF - (1 - a_s) * nB), 0, 1)
    if strength < 1.0:
        F_s = I_s + strength * (F_s - I_s)
    out[h0 + ys, c0 + xs] = np.clip(F_s * 255.0 + 0.5, 0, 255).astype(np.uint8)
