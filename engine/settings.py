"""All options of a run, in one object that travels through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from .imageio import DEFAULT_MAX_PIXELS

#: Peak working memory of one image through the CPU path, per pixel (measured: 53 B/px at 16 MP
#: above a warmed-up process, benchmarks/highres.py), rounded up.
BYTES_PER_PIXEL = 60

#: Batch size on a GPU when the caller gives none.
GPU_BATCH = 8


@dataclass
class MatteSettings:
    #: Refine the uncertain band at full resolution in tiles (else: the upsampled coarse alpha).
    tile: bool = True
    #: Tile side in full-resolution pixels; None: the refiner's own (TileRefiner.tile_size: 1024 for
    #: the guided filter, whose cost is per pixel and whose overlaps are paid twice; 512 for a
    #: learned refiner, whose tiles are its batches).
    tile_size: int | None = None
    tile_overlap: int = 32
    #: Tiles per batch of a learned refiner (tiles of several images share batches); see batch_size.
    tile_batch: int = 1
    #: Coarse alpha strictly between these is uncertain.
    band_low: float = 0.02
    band_high: float = 0.98
    #: The band is grown by this many model pixels (times the upsampling scale) on each side.
    band_dilate_model_px: float = 3.0
    #: Guided-filter fallback: radius in full-resolution pixels per model pixel, and eps
    #: (tuned on the synthetic composites, see benchmarks/NOTES.md).
    guided_radius_per_scale: float = 6.0
    guided_eps: float = 1e-3
    #: Keep the coarse alpha where it is sure (near 0 or 1) and let the filter decide where it
    #: hesitates (refine.trust_where_hesitant): SAD on held-out composites -13% (issue 22).
    guided_confidence_weighted: bool = True
    #: Foreground colour estimation: 0 keeps the photo's colours, 1 removes the old background's.
    despill: float = 1.0
    #: Images per coarse-pass batch. 1 suits a CPU: a bigger batch is no faster there and ONNX
    #: Runtime's arena then holds about 3x the memory (1.6 GB against 0.6 GB at batch 4, measured,
    #: benchmarks/NOTES.md). Matter raises this and tile_batch to GPU_BATCH on a GPU unless given.
    batch_size: int = 1
    #: How long a part-filled batch waits for more images or tiles before it is launched anyway.
    flush_ms: float = 5.0
    #: Staging buffers per input shape, reused for the whole run (one filling, one computing,
    #: one draining).
    ring_depth: int = 3
    #: Threads for decoding and encoding (the model has its own).
    io_workers: int = 2
    #: Most decoded images held in memory at once.
    max_inflight: int = 8
    #: Working memory for the images in flight, in MB (estimated at BYTES_PER_PIXEL of each image's
    #: pixels): fewer images are admitted at once when they are large; one is always admitted.
    max_memory_mb: float | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        checks = {
            "tile_size": self.tile_size is None or self.tile_size >= 64,
            "tile_overlap": 0 <= self.tile_overlap < (self.tile_size or 512) // 2,
            "tile_batch": self.tile_batch >= 1,
            "band_low/band_high": 0.0 <= self.band_low < self.band_high <= 1.0,
            "despill": 0.0 <= self.despill <= 1.0,
            "batch_size": self.batch_size >= 1,
            "flush_ms": self.flush_ms >= 0,
            "ring_depth": self.ring_depth >= 1,
            "io_workers": self.io_workers >= 1,
            "max_inflight": self.max_inflight >= 1,
            "max_memory_mb": self.max_memory_mb is None or self.max_memory_mb > 0,
            "max_pixels": self.max_pixels >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = {k: getattr(self, k, None) for k in bad if "/" not in k}
            raise ValueError(f"invalid settings: {', '.join(bad)} {values or ''}".strip())
