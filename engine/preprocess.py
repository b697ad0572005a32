"""Images in, model tensors out: resizing and normalisation exactly as each model's spec says."""

from __future__ import annotations

import cv2
import numpy as np

from .spec import ModelSpec


def resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area interpolation when shrinking (no aliasing), bilinear when enlarging."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def normalize(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """rgb: uint8 [H, W, 3] -> float32 [3, H, W], (x/255 - mean) / std in the spec's channel order."""
    x = rgb.astype(np.float32) * (1.0 / 255.0)
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def coarse_input(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The whole image at the model's own size: float32 [3, h, w]."""
    return normalize(resize(rgb, spec.input_size), spec)


def upsample_alpha(alpha: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """alpha: float32 [h, w] -> float32 [H, W] in [0, 1], bilinear."""
    h, w = size_hw
    if alpha.shape == (h, w):
        return alpha
    return np.clip(cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def flatten_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """An image with its own transparency, as the model should see it: over white."""
    a = alpha[..., None]
    return np.clip(rgb.astype(np.float32) * a + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
