"""Tile refiners: turn a batch of full-resolution tiles plus their coarse alpha into refined alpha.

The learned refiner (a small CV-UNet taking RGB + coarse alpha, from distill/) plugs in here with
the same interface; the guided filter is the model-free fallback.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .batching import DynamicBatcher
from .preprocess import normalize
from .refine import guided_filter, trust_where_hesitant
from .spec import ModelSpec


class TileRefiner(Protocol):
    name: str
    #: The tile side it works best with (MatteSettings.tile_size None takes this).
    tile_size: int

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
    #: One 1024-px tile holds a 0.8 MP photo whole: at 512 the overlaps of its four tiles were
    #: filtered twice and blended (finish 36 -> 29 ms at 800 px, the same alpha within 0.06).
    tile_size = 1024

    def __init__(self, radius: int | None = None, eps: float = 1e-3, radius_per_scale: float = 6.0,
                 subsample_per_scale: float = 1.0, confidence_weighted: bool = True):
        self.radius = radius
        self.confidence_weighted = confidence_weighted
        self.eps = eps
        self.radius_per_scale = radius_per_scale
        self.subsample_per_scale = subsample_per_scale

    @classmethod
    def from_settings(cls, s) -> "GuidedFilterRefiner":
        return cls(eps=s.guided_eps, radius_per_scale=s.guided_radius_per_scale,
                   confidence_weighted=s.guided_confidence_weighted)

    def radius_for(self, scale: float) -> int:
        if self.radius is not None:
            return self.radius
        return max(2, int(round(self.radius_per_scale * scale)))

    def refine(self, rgb, coarse, scale):
        r = self.radius_for(scale)
        s = max(1, int(round(self.subsample_per_scale * scale)))
        out = []
        for image, alpha in zip(rgb, coarse):
            filtered = np.clip(guided_filter(image, alpha, r, self.eps, s), 0.0, 1.0)
            if self.confidence_weighted:
                filtered = trust_where_hesitant(alpha, filtered)
            out.append(filtered)
        return out


class ModelRefiner:
    """A learned refiner (distill/refiner.py): a CV-UNet taking the tile's normalised RGB plus its
    coarse alpha (4 channels) and returning the refined alpha, then a guided filter over that
    alpha with the photo as guide (`smooth`). All tiles of one image have one size, so a group of
    tiles is one batch.

    The guided filter after the network: the network puts back alpha the coarse pass lost and
    takes away what it smeared (band SAD), but leaves blotchy edges; a guided filter at 6 model
    pixels with eps 1e-2 makes them follow the photo again. On held-out real soft mattes (trees,
    shrubs, clouds) the packaged refiner then beats the guided filter alone in band SAD (-16..-20%)
    and gradient error (-9..-28%) at 2-8x upsampling; on hard product outlines it does not
    (gradient +30..+46%), so it is not the default. benchmarks/NOTES.md, issue 17."""

    name = "learned"
    tile_size = 512

    #: Below this upsampling scale (full-resolution px per model px) the tiles go to the fallback:
    #: the smallest scale measured on held-out real soft mattes (benchmarks/soft_edges.py), where it
    #: already beat the guided filter on both errors (-19.5% band SAD, -28% gradient at 640 px).
    MIN_SCALE = 2.0

    def __init__(self, backend, spec: ModelSpec, fallback: TileRefiner | None = None, batch_size: int = 8,
                 flush_ms: float = 5.0, smooth: TileRefiner | None = None):
        if spec.in_channels != 4:
            raise ValueError(f"{spec.name}: a tile refiner takes 4 channels (RGB + coarse alpha), "
                             f"this model takes {spec.in_channels}")
        self.batcher = backend if isinstance(backend, DynamicBatcher) else DynamicBatcher(backend, batch_size,
                                                                                         flush_ms=flush_ms)
        self.spec = spec
        self.name = spec.name
        self.fallback = fallback or GuidedFilterRefiner()
        self.smooth = smooth if smooth is not None else GuidedFilterRefiner(
            radius_per_scale=6.0, eps=1e-2, confidence_weighted=False)  # as measured in issue 17

    def refine(self, rgb, coarse, scale):
        if scale < self.MIN_SCALE:
            return self.fallback.refine(rgb, coarse, scale)
        inputs = (np.concatenate([normalize(im, self.spec), a[None].astype(np.float32)], 0)
                  for im, a in zip(rgb, coarse))
        # One tile at a time into the batcher: tiles of the images refined on other threads fill
        # the same batches, and the batcher's bound on queued inputs bounds memory.
        futures = [self.batcher.submit(x) for x in inputs]
        learned = [np.clip(f.result()[0][0], 0.0, 1.0) for f in futures]
        return self.smooth.refine(rgb, learned, scale)
