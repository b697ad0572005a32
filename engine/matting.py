"""One image's path: coarse pass -> tiled refinement of the uncertain band -> foreground colour.

Images are uint8 RGB [H, W, 3] at the edges; the model sees batched NCHW float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from . import preprocess, quality, tiling
from .backends.base import Backend
from .refine import estimate_foreground
from .refiners import GuidedFilterRefiner, TileRefiner
from .settings import MatteSettings
from .spec import ModelSpec


def quantize(alpha: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8, rounded."""
    return np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_8bit_grid(alpha: np.ndarray) -> np.ndarray:
    """dequantize(quantize(alpha)), in place in alpha's own float32 buffer (no extra full-frame
    float32 planes at 16 MP and up)."""
    alpha = alpha.astype(np.float32, copy=False)
    np.multiply(alpha, 255.0, out=alpha)
    alpha += 0.5
    np.clip(alpha, 0, 255, out=alpha)
    np.floor(alpha, out=alpha)
    np.divide(alpha, np.float32(255.0), out=alpha)
    return alpha


def dequantize(alpha_u8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 k / 255: the one way an 8-bit alpha becomes a float, fresh or cached."""
    return alpha_u8.astype(np.float32) / np.float32(255.0)


@dataclass
class MatteResult:
    """alpha: float32 [H, W] in [0, 1], on the 8-bit grid (k / 255: exactly what the PNG holds, so
    a result from the cache and a fresh one are the same); coarse: the upsampled coarse alpha,
    same shape (None when the alpha came from the catalog's cache); foreground: uint8 [H, W, 3],
    the photo with the old background's colour removed from semi-transparent pixels."""

    alpha: np.ndarray
    coarse: np.ndarray | None
    foreground: np.ndarray
    tiles: int = 0
    band_fraction: float = 0.0
    #: bool [H, W], where the tiles refined the coarse alpha (None when no tiles ran).
    band: np.ndarray | None = None
    timings: dict = field(default_factory=dict)
    #: A combined model's: the lowest IoU between two members' coarse alphas (None for one model).
    members_agreement: float | None = None

    @cached_property
    def alpha_u8(self) -> np.ndarray:
        """Computed once: the rgba and alpha outputs and the cache all take it."""
        return quantize(self.alpha)

    @property
    def bgra(self) -> np.ndarray:
        """rgba in OpenCV's channel order, built directly (the PNG encoder takes it without a copy)."""
        return self._with_alpha(cv2.COLOR_RGB2BGRA)

    @property
    def rgba(self) -> np.ndarray:
        """uint8 [H, W, 4]: foreground colour and alpha, not premultiplied. Fully transparent
        pixels carry black: the old background is not kept, and the PNG is half the size."""
        return self._with_alpha(cv2.COLOR_RGB2RGBA)

    def _with_alpha(self, conversion: int) -> np.ndarray:
        # OpenCV's vectorised channel ops: 53 ms at 16 MP against 257 for numpy's strided copy and
        # boolean mask. A masked bitwise_and into a new array leaves the unmasked pixels zero.
        a = self.alpha_u8
        out = cv2.cvtColor(self.foreground, conversion)
        out[..., 3] = a
        return cv2.bitwise_and(out, out, mask=cv2.compare(a, 0, cv2.CMP_NE))


def coarse_planes(out: np.ndarray) -> np.ndarray:
    """One image's model output [C, h, w] -> what `MattingEngine.finish` takes: the alpha [h, w],
    or for a combined model of M members [1 + M, h, w] (its alpha, then each member's)."""
    return out[0] if len(out) == 1 else out


class MattingEngine:
    def __init__(self, backend: Backend, spec: ModelSpec, settings: MatteSettings | None = None,
                 refiner: TileRefiner | None = None):
        self.backend = backend
        self.spec = spec
        self.settings = settings or MatteSettings()
        s = self.settings
        self.refiner = refiner or GuidedFilterRefiner.from_settings(s)
        self._refiner_from_settings = refiner is None

    def coarse(self, images: list[np.ndarray], source_alphas: list[np.ndarray | None] | None = None
               ) -> list[np.ndarray]:
        """Whole images at the model's size, batched: float32 [h, w] alpha per image, model resolution
        ([1 + M, h, w] for a combined model of M members: the alpha, then each member's)."""
        source_alphas = source_alphas or [None] * len(images)
        bs = self.settings.batch_size
        out = []
        for i in range(0, len(images), bs):
            batch = np.stack([self.coarse_input(im, a) for im, a in zip(images[i:i + bs], source_alphas[i:i + bs])])
            out.extend(map(coarse_planes, self.backend.run(batch)))
        return out

    def upsampling_scale(self, H: int, W: int) -> float:
        """Full-resolution pixels per model pixel."""
        h, w = self.spec.input_size
        return max(H / h, W / w)

    def band_weight(self, coarse_small: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """float32 [H, W] in [0, 1]: how much the tiles decide over the upsampled coarse alpha;
        1 inside the uncertain band, ramping to 0 over one model pixel at its rim. Found and grown
        at the model's resolution, then enlarged bilinearly: a full-resolution dilation by tens of
        pixels cost almost a second at 16 MP, and a nearest-neighbour enlargement left steps."""
        s = self.settings
        band = tiling.uncertain_band(coarse_small, s.band_low, s.band_high, int(np.ceil(s.band_dilate_model_px)))
        return np.clip(cv2.resize(band.astype(np.float32), size_hw[::-1], interpolation=cv2.INTER_LINEAR), 0, 1)

    def finish(self, rgb: np.ndarray, coarse_small: np.ndarray, source_alpha: np.ndarray | None = None,
               timings: dict | None = None, settings: MatteSettings | None = None,
               refiner: TileRefiner | None = None) -> MatteResult:
        """From the coarse alpha at model resolution to the final result at the photo's resolution.
        settings, refiner: this image's, when they differ from the engine's (a service request)."""
        s = settings or self.settings
        if refiner is None:
            # The default refiner follows this image's guided_* settings (a service request's).
            refiner = GuidedFilterRefiner.from_settings(s) if self._refiner_from_settings else self.refiner
        timings = dict(timings or {})
        t0 = time.perf_counter()
        members_agreement = None
        if coarse_small.ndim == 3:  # a combined model: its alpha, then its members'
            members_agreement = quality.members_agreement(coarse_small[1:])
            coarse_small = coarse_small[0]
        H, W = rgb.shape[:2]
        scale = self.upsampling_scale(H, W)
        coarse = preprocess.upsample_alpha(coarse_small, (H, W))
        alpha, n_tiles, band_fraction, band = coarse, 0, 0.0, None
        h, w = self.spec.input_size
        # An image no larger than the model's input: the plain pass is already at full resolution.
        if s.tile and (H > h or W > w):
            weight = self.band_weight(coarse_small, (H, W))
            band = weight > 0
            band_fraction = float(band.mean())
            tiles = tiling.plan_tiles(band, s.tile_size or refiner.tile_size, s.tile_overlap)
            refined = refiner.refine([rgb[t.slices] for t in tiles], [coarse[t.slices] for t in tiles], scale)
            alpha = tiling.blend(coarse, weight, tiles, refined, s.tile_overlap)
            n_tiles = len(tiles)
            del weight, refined  # full-frame and tile planes: gone before the foreground's
        if source_alpha is not None:
            alpha = alpha * source_alpha  # the file's own transparency stays transparent
        alpha = to_8bit_grid(alpha if alpha is not coarse else coarse.copy())
        timings["refine_s"] = time.perf_counter() - t0
        return self.cut_out(rgb, alpha, coarse, timings, s, tiles=n_tiles, band_fraction=band_fraction, band=band,
                            members_agreement=members_agreement)

    def cut_out(self, rgb: np.ndarray, alpha: np.ndarray, coarse: np.ndarray | None = None, timings: dict | None = None,
                settings: MatteSettings | None = None, **extra) -> MatteResult:
        """The result for a final alpha (float32 on the 8-bit grid), fresh or from a cache."""
        timings = dict(timings or {})
        t0 = time.perf_counter()
        foreground = self.foreground(rgb, alpha, settings)
        timings["foreground_s"] = time.perf_counter() - t0
        return MatteResult(alpha, coarse, foreground, timings=timings, **extra)

    def foreground(self, rgb: np.ndarray, alpha: np.ndarray, settings: MatteSettings | None = None) -> np.ndarray:
        """The photo's colours with the old background's removed from soft pixels (despill)."""
        H, W = rgb.shape[:2]
        # The blur radius must well exceed the soft edge's width, which grows with the upsampling.
        radius = max(90, int(10 * self.upsampling_scale(H, W)))
        return estimate_foreground(rgb, alpha, (settings or self.settings).despill, radius)

    def coarse_input(self, rgb: np.ndarray, source_alpha: np.ndarray | None = None) -> np.ndarray:
        """float32 [3, h, w]: what the coarse pass feeds the model; an image with its own
        transparency is seen over white."""
        return preprocess.coarse_input(rgb if source_alpha is None else preprocess.flatten_on_white(rgb, source_alpha),
                                       self.spec)

    def coarse_many(self, images: list[np.ndarray], source_alphas: list[np.ndarray | None]) -> tuple[list[np.ndarray], float]:
        """The batched coarse pass; an image with its own transparency is seen over white.
        Returns the coarse alphas at model resolution and the seconds per image."""
        t0 = time.perf_counter()
        coarse = self.coarse(images, source_alphas)
        return coarse, (time.perf_counter() - t0) / max(1, len(images))

    def matte_many(self, images: list[np.ndarray], source_alphas: list[np.ndarray | None] | None = None,
                   settings: MatteSettings | None = None, refiner: TileRefiner | None = None) -> list[MatteResult]:
        source_alphas = source_alphas or [None] * len(images)
        coarse, per_image = self.coarse_many(images, source_alphas)
        return [self.finish(im, c, a, {"coarse_s": per_image}, settings, refiner)
                for im, c, a in zip(images, coarse, source_alphas)]

    def matte(self, rgb: np.ndarray, source_alpha: np.ndarray | None = None, settings: MatteSettings | None = None,
              refiner: TileRefiner | None = None) -> MatteResult:
        return self.matte_many([rgb], [source_alpha], settings, refiner)[0]
