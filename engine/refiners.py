"""Tile refiners: turn a batch of full-resolution tiles plus their coarse alpha into refined alpha.

The learned refiner (a small CV-UNet taking RGB + coarse alpha, from distill/) plugs in here with
the same interface; the guided filter is the model-free fallback.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .batching import DynamicBatcher
from .preprocess import normalize
from .refine import guided_filter
from .spec import ModelSpec


class TileRefiner(Protocol):
    name: str

    def refine(self, rgb: list[np.ndarray], coarse: list[np.ndarray], scale: float) -> list[np.ndarray]:
        """rgb: uint8 [h, w, 3] tiles; coarse: float32 [h, w] in [0, 1]; scale: full-resolution
        pixels per model pixel. Returns float32 [h, w] in [0, 1] per tile."""
        ...


class GuidedFilterRefiner:
    """The colour guided filter with the photo as guide: the coarse alpha's blurred edge snaps to
    the photo's edge. The radius is a number of model pixels (radius_per_scale) times the
    upsampling scale, because the coarse alpha's edge is blurred and misplaced by about that much.
    The filter's coefficients are computed at about the model's resolution (subsample = scale) and
    applied to the full-resolution photo: faster, and measured more accurate than computing them
    at full resolution (benchmarks/NOTES.md)."""

    name = "guided-filter"

    def __init__(self, radius: int | None = None, eps: float = 1e-3, radius_per_scale: float = 6.0,
                 subsample_per_scale: float = 1.0):
        self.radius = radius
        self.eps = eps
        self.radius_per_scale = radius_per_scale
        self.subsample_per_scale = subsample_per_scale

    def radius_for(self, scale: float) -> int:
        if self.radius is not None:
            return self.radius
        return max(2, int(round(self.radius_per_scale * scale)))

    def refine(self, rgb, coarse, scale):
        r = self.radius_for(scale)
        s = max(1, int(round(self.subsample_per_scale * scale)))
        out = []
        for image, alpha in zip(rgb, coarse):
            guide = image.astype(np.float32) * (1.0 / 255.0)
            out.append(np.clip(guided_filter(guide, alpha, r, self.eps, s), 0.0, 1.0))
        return out


class ModelRefiner:
    """A learned refiner (distill/refiner.py): a CV-UNet taking the tile's normalised RGB plus its
    coarse alpha (4 channels) and returning the refined alpha. All tiles of one image have one
    size, so a group of tiles is one batch."""

    name = "learned"

    #: Below this upsampling scale (full-resolution px per model px) the tiles go to the fallback:
    #: the refiner learnt from shots of 2000-4600 px (scale 6-14), and on small photos (scale ~1.5,
    #: looked at on the demo cat) it cut streaks into fur the coarse pass had right.
    MIN_SCALE = 3.0

    def __init__(self, backend, spec: ModelSpec, fallback: TileRefiner | None = None, batch_size: int = 8,
                 flush_ms: float = 5.0):
        if spec.in_channels != 4:
            raise ValueError(f"{spec.name}: a tile refiner takes 4 channels (RGB + coarse alpha), "
                             f"this model takes {spec.in_channels}")
        self.batcher = backend if isinstance(backend, DynamicBatcher) else DynamicBatcher(backend, batch_size,
                                                                                         flush_ms=flush_ms)
        self.spec = spec
        self.name = spec.name
        self.fallback = fallback or GuidedFilterRefiner()

    def refine(self, rgb, coarse, scale):
        if scale < self.MIN_SCALE:
            return self.fallback.refine(rgb, coarse, scale)
        inputs = (np.concatenate([normalize(im, self.spec), a[None].astype(np.float32)], 0)
                  for im, a in zip(rgb, coarse))
        # One tile at a time into the batcher: tiles of the images refined on other threads fill
        # the same batches, and the batcher's bound on queued inputs bounds memory.
        futures = [self.batcher.submit(x) for x in inputs]
        return [np.clip(f.result()[0][0], 0.0, 1.0) for f in futures]
