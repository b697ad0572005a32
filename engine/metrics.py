"""Alpha-matte errors, as the alphamatting.com benchmark defines them (Rhemann et al., CVPR 2009).

All take float alpha [H, W] in [0, 1] and an optional bool mask of the pixels to count.
SAD and gradient error are reported divided by 1000, MSE as a plain mean, as papers do.
"""

from __future__ import annotations

import cv2
import numpy as np


def _mask(pred, mask):
    return np.ones(pred.shape, bool) if mask is None else mask


def sad(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    m = _mask(pred, mask)
    return float(np.abs(pred - gt)[m].sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    m = _mask(pred, mask)
    return float(((pred - gt) ** 2)[m].mean()) if m.any() else 0.0


def _gradient_magnitude(alpha: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    # First-order Gaussian derivative filters, as in the benchmark's definition.
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    dg = -x / sigma ** 2 * g
    a = alpha.astype(np.float32)
    gx = cv2.sepFilter2D(a, -1, dg, g, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(a, -1, g, dg, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2)


def gradient_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    m = _mask(pred, mask)
    d = (_gradient_magnitude(pred) - _gradient_magnitude(gt)) ** 2
    return float(d[m].sum() / 1000.0)


def iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    p, g = pred > threshold, gt > threshold
    union = np.logical_or(p, g).sum()
    return float(np.logical_and(p, g).sum() / union) if union else 1.0


def edge_band(gt: np.ndarray, width: int) -> np.ndarray:
    """bool [H, W]: pixels within `width` of the true alpha's transition (where edges are judged)."""
    soft = ((gt > 0.0) & (gt < 1.0)).astype(np.uint8)
    edges = cv2.Canny((gt * 255).astype(np.uint8), 20, 60) > 0
    band = (soft | edges).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(band, k).astype(bool)


def connectivity_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, step: float = 0.1) -> float:
    """The benchmark's connectivity error (Rhemann et al. 2009, as in its reference code): at each
    threshold level, pixels outside the largest 4-connected region where both mattes are >= the level
    get that level's predecessor as their connection level l; phi = 1 - (alpha - l) where
    alpha - l >= 0.15 (else 1); the error is the summed |phi_pred - phi_gt|, divided by 1000."""
    m = _mask(pred, mask)
    level = np.full(pred.shape, -1.0, np.float32)
    thresholds = np.arange(0.0, 1.0 + step / 2, step)
    for prev, t in zip(thresholds[:-1], thresholds[1:]):
        both = ((pred >= t) & (gt >= t)).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(both, connectivity=4)
        omega = np.zeros(pred.shape, bool)
        if n > 1:
            omega = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        level[(level == -1) & ~omega] = prev
    level[level == -1] = 1.0
    d_pred, d_gt = pred - level, gt - level
    phi_pred = 1 - d_pred * (d_pred >= 0.15)
    phi_gt = 1 - d_gt * (d_gt >= 0.15)
    return float(np.abs(phi_pred - phi_gt)[m].sum() / 1000.0)
