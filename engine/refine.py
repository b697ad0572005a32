"""Model-free refinement: the colour guided filter (edges) and foreground colour estimation (despill).

References: He, Sun, Tang, "Guided Image Filtering" (ECCV 2010, TPAMI 2013) for the filter;
Forte, Pitié, "Approximate Fast Foreground Colour Estimation" (ICIP 2021) for blur-fusion.
Both are written here from the papers' equations with OpenCV box filters, whose cost does not
depend on the radius.
"""

from __future__ import annotations

import cv2
import numpy as np


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Colour guided filter.

    guide: float32 [H, W, 3] in [0, 1]; src: float32 [H, W]; returns float32 [H, W].
    The output is locally an affine function of the guide's colours, so edges in `src` snap to
    edges in the photo; eps (in guide units squared) sets how strong an edge must be to be kept.
    """
    r = int(radius)
    I = guide.astype(np.float32, copy=False)
    p = src.astype(np.float32, copy=False)
    mean_I = _box(I, r)
    mean_p = _box(p, r)
    mean_Ip = _box(I * p[..., None], r)
    cov_Ip = mean_Ip - mean_I * mean_p[..., None]
    # Covariance of the guide's colours: a symmetric 3x3 per pixel, kept as its 6 entries.
    ii = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    prods = np.stack([I[..., a] * I[..., b] for a, b in ii], axis=-1)
    mean_prods = _box(prods, r)
    var = {}
    for k, (a, b) in enumerate(ii):
        var[a, b] = mean_prods[..., k] - mean_I[..., a] * mean_I[..., b] + (eps if a == b else 0.0)
    # Inverse of the 3x3 by cofactors, all pixels at once.
    c00 = var[1, 1] * var[2, 2] - var[1, 2] ** 2
    c01 = var[0, 2] * var[1, 2] - var[0, 1] * var[2, 2]
    c02 = var[0, 1] * var[1, 2] - var[0, 2] * var[1, 1]
    c11 = var[0, 0] * var[2, 2] - var[0, 2] ** 2
    c12 = var[0, 1] * var[0, 2] - var[0, 0] * var[1, 2]
    c22 = var[0, 0] * var[1, 1] - var[0, 1] ** 2
    det = var[0, 0] * c00 + var[0, 1] * c01 + var[0, 2] * c02
    inv_det = 1.0 / det
    cx, cy, cz = cov_Ip[..., 0], cov_Ip[..., 1], cov_Ip[..., 2]
    a0 = (c00 * cx + c01 * cy + c02 * cz) * inv_det
    a1 = (c01 * cx + c11 * cy + c12 * cz) * inv_det
    a2 = (c02 * cx + c12 * cy + c22 * cz) * inv_det
    b = mean_p - a0 * mean_I[..., 0] - a1 * mean_I[..., 1] - a2 * mean_I[..., 2]
    A = _box(np.stack([a0, a1, a2], axis=-1), r)
    return (A * I).sum(axis=-1) + _box(b, r)


def _blur_fusion(image, F, B, alpha, r):
    a = alpha[..., None]
    k = (r, r)
    blurred_alpha = cv2.blur(alpha, k)[..., None]
    blurred_F = cv2.blur(F * a, k) / (blurred_alpha + 1e-5)
    blurred_B = cv2.blur(B * (1.0 - a), k) / ((1.0 - blurred_alpha) + 1e-5)
    F = blurred_F + a * (image - a * blurred_F - (1.0 - a) * blurred_B)
    return np.clip(F, 0.0, 1.0), blurred_B


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, strength: float = 1.0,
                        radius: int = 90) -> np.ndarray:
    """Remove the old background's colour from semi-transparent pixels.

    rgb: uint8 [H, W, 3]; alpha: float32 [H, W] in [0, 1]; returns uint8 [H, W, 3], the
    foreground colour F such that rgb ~ alpha*F + (1-alpha)*B. strength in [0, 1] blends between
    the photo's own colours (0) and the estimate (1). Only the bounding box of the
    semi-transparent pixels (plus the blur radius) is computed: elsewhere F is the photo itself.
    """
    if strength <= 0:
        return rgb
    soft = (alpha > 1.0 / 512) & (alpha < 1.0 - 1.0 / 512)
    ys, xs = np.nonzero(soft.any(axis=1))[0], np.nonzero(soft.any(axis=0))[0]
    if len(ys) == 0:
        return rgb
    H, W = alpha.shape
    m = radius
    y0, y1 = max(0, ys[0] - m), min(H, ys[-1] + 1 + m)
    x0, x1 = max(0, xs[0] - m), min(W, xs[-1] + 1 + m)
    img = rgb[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
    a = alpha[y0:y1, x0:x1].astype(np.float32)
    F, B = _blur_fusion(img, img, img, a, radius)
    F, _ = _blur_fusion(img, F, B, a, 6)
    if strength < 1.0:
        F = img + strength * (F - img)
    out = rgb.copy()
    crop = out[y0:y1, x0:x1]
    sel = soft[y0:y1, x0:x1]
    crop[sel] = np.clip(F[sel] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out
