"""The Python API: one object that owns a loaded model and mattes images or whole folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .engine import imageio, zoo
from .engine.backends import create_backend
from .engine.errors import ImageError, ModelError
from .engine.batching import DynamicBatcher
from .engine.catalog import CatalogOptions, CatalogReport, run_catalog
from .engine.matting import MatteResult, MattingEngine
from .engine.outputs import OutputOptions, SkuResolver
from .engine.pipeline import FileResult, RunReport, run_files
from .engine.refiners import GuidedFilterRefiner, ModelRefiner, TileRefiner
from .engine.quality import QualityThresholds
from .engine.settings import GPU_BATCH, MatteSettings
from .engine.spec import sha256_file
from .engine.templates import Template

__all__ = ["Matter", "MatteResult", "MatteSettings"]


class Matter:
    """Load a model once, then cut out images.

        m = Matter()                          # the default model (zoo.DEFAULT_MODEL), ONNX Runtime, best device
        r = m.matte("shoe.jpg")               # r.alpha float32 [H, W] in [0, 1], r.rgba uint8 [H, W, 4]
        report = m.matte_files(["photos/"], "outputs", white_bg=True)

    model: a zoo name (`cvmatte models`), an ONNX file with its spec JSON beside it, a folder
    holding both, or (backend="torch") a CV-UNet checkpoint `.pt`. backend: "onnxruntime",
    "torch" (precision "fp32"/"fp16" and cuda_graphs on CUDA) or "tensorrt". device: "auto", "cpu", "cuda" or "tensorrt"; a GPU device that cannot be used
    raises DeviceError with the reason, unless allow_cpu_fallback=True.
    refiner: what refines the tiles: "guided" (the model-free colour guided filter), a learned
    refiner's zoo name or ONNX file (e.g. "cvunet-refiner"), or any TileRefiner object.
    Any MatteSettings field may be given as a keyword (tile=False, despill=0.5, ...).
    """

    def __init__(self, model: str | Path = zoo.DEFAULT_MODEL, backend: str = "onnxruntime", device: str = "auto",
                 *, threads: int | None = None, allow_cpu_fallback: bool = False,
                 cache_dir: str | Path | None = None, settings: MatteSettings | None = None,
                 refiner: TileRefiner | str | Path = "guided", precision: str = "fp32", cuda_graphs: bool = False,
                 **setting_overrides):
        if settings is not None and setting_overrides:
            raise TypeError("give either settings= or individual setting keywords, not both")
        self.settings = settings or MatteSettings(**setting_overrides)
        # How to build this same Matter elsewhere (a Ray actor); a refiner object cannot travel.
        self.init_kwargs = dict(model=str(model), backend=backend, device=device, threads=threads,
                                allow_cpu_fallback=allow_cpu_fallback, cache_dir=cache_dir, settings=self.settings,
                                refiner=refiner if isinstance(refiner, (str, Path)) else "guided",
                                precision=precision, cuda_graphs=cuda_graphs)
        self.model = zoo.resolve(model, cache_dir)
        if self.model.spec.in_channels != 3:
            raise ModelError(f"{model}: takes {self.model.spec.in_channels} channels; a tile refiner is given "
                             "as refiner=, not as the model")
        gpu_options = dict(precision=precision, cuda_graphs=cuda_graphs) if backend == "torch" else {}
        self.backend = create_backend(self.model, backend, device, threads, allow_cpu_fallback, **gpu_options)
        if self.backend.on_gpu and settings is None:  # batches pay on a GPU only (see MatteSettings)
            gpu = {k: GPU_BATCH for k in ("batch_size", "tile_batch") if k not in setting_overrides}
            self.settings = dataclasses.replace(self.settings, **gpu)
        if isinstance(refiner, (str, Path)):
            guided = GuidedFilterRefiner(eps=self.settings.guided_eps,
                                         radius_per_scale=self.settings.guided_radius_per_scale)
            if str(refiner) == "guided":
                refiner = guided
            else:
                resolved = zoo.resolve(refiner, cache_dir)
                if resolved.spec.in_channels != 4:
                    raise ModelError(f"{refiner}: not a tile refiner (takes {resolved.spec.in_channels} channels, "
                                     "a refiner takes RGB + coarse alpha)")
                refiner = ModelRefiner(create_backend(resolved, backend, device, threads, allow_cpu_fallback, **gpu_options),
                                       resolved.spec, fallback=guided, batch_size=self.settings.tile_batch,
                                       flush_ms=self.settings.flush_ms)
        self.engine = MattingEngine(self.backend, self.model.spec, self.settings, refiner)

    @property
    def spec(self):
        return self.model.spec

    def describe(self) -> str:
        return (f"model {self.spec.name} ({self.model.path}) on {self.backend.describe()}, "
                f"tiles refined by {self.engine.refiner.name}")

    def matte(self, image) -> MatteResult:
        """image: a path, a PIL image, or a uint8 array ([H, W] grey, [H, W, 3] RGB, [H, W, 4] RGBA)."""
        if isinstance(image, (str, Path)):
            decoded = imageio.read_image(image, self.settings.max_pixels)
            return self.engine.matte(decoded.rgb, decoded.alpha)
        if isinstance(image, Image.Image):
            if image.width * image.height > self.settings.max_pixels:
                raise imageio.ImageTooLarge(None, f"{image.width}x{image.height} is over the pixel limit")
            decoded = imageio.from_pil(image)
            return self.engine.matte(decoded.rgb, decoded.alpha)
        rgb, alpha = _split_array(np.asarray(image), self.settings.max_pixels)
        return self.engine.matte(rgb, alpha)

    def matte_files(self, inputs, out_dir: str | Path, *, alpha: bool = False, white_bg: bool = False,
                    rgba: bool = True, canvas: tuple[int, int] | None = None, margin: float = 0.05,
                    sku_regex: str | None = None, sku_csv: str | Path | None = None,
                    on_done: Callable[[FileResult], None] | None = None) -> RunReport:
        """Matte files, folders and glob patterns into out_dir's standard layout; one bad file
        becomes an error row (report.failed), never the end of the run."""
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        paths = imageio.list_images(list(inputs))
        options = OutputOptions(rgba=rgba, alpha=alpha, white_bg=white_bg, canvas=canvas, margin=margin)
        return run_files(self.engine, paths, out_dir, options, SkuResolver(sku_regex, sku_csv),
                         on_done=on_done, backend_name=self.backend.describe())


    @property
    def model_id(self) -> str:
        """Model name and file sha256: what the catalog cache keys on."""
        return f"{self.spec.name}:{(self.spec.sha256 or sha256_file(self.model.path))[:16]}"

    def catalog(self, inputs, out: str | Path, *, resume: bool = False, alpha: bool = False,
                template: Template | None = None, thresholds: QualityThresholds | None = None,
                sku_regex: str | None = None, sku_csv: str | Path | None = None, min_side: int = 32,
                workers: int | None = None, ray: bool = False, ray_address: str | None = None,
                ray_actors: int | None = None, ray_gpus_per_actor: float = 0.0, on_row: Callable[[dict], None] | None = None) -> CatalogReport:
        """The catalog pipeline (cvmatte.engine.catalog): validate, matte what is not cached,
        flag for review, write OUT/<SKU>/<stem>_matte.png (+ alpha, + template) and
        OUT/manifest.jsonl. resume=True finishes the last run without redoing its images;
        ray=True sends the images to Ray Data actors (a local cluster unless ray_address)."""
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        options = CatalogOptions(alpha=alpha, template=template, min_side=min_side,
                                 thresholds=thresholds or QualityThresholds())
        executor = None
        if ray:
            from .engine.catalog_ray import ray_executor

            executor = ray_executor(self.init_kwargs, self.model_id, options, ray_address, ray_actors,
                                    gpus_per_actor=ray_gpus_per_actor)
        return run_catalog(list(inputs), out, self._batched_engine(), self.model_id, options, resume=resume,
                           sku=SkuResolver(sku_regex, sku_csv), workers=workers or self.settings.io_workers,
                           on_row=on_row, executor=executor)

    def _batched_engine(self) -> MattingEngine:
        """This Matter's engine with the coarse pass behind a dynamic batcher, so that images
        matted on several threads share batches."""
        if not hasattr(self, "_batched"):
            s = self.settings
            batcher = DynamicBatcher(self.backend, s.batch_size, s.ring_depth, s.flush_ms)
            self._batched = MattingEngine(batcher, self.spec, s, self.engine.refiner)
        return self._batched


def _split_array(image: np.ndarray, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    if image.dtype != np.uint8:
        raise ImageError(None, f"expected a uint8 image array, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(None, f"expected [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
    h, w = image.shape[:2]
    if h * w > max_pixels:
        raise imageio.ImageTooLarge(None, f"{w}x{h} is over the pixel limit of {max_pixels / 1e6:.1f} MP")
    if image.shape[2] == 4:
        a = image[..., 3].astype(np.float32) / 255.0
        return np.ascontiguousarray(image[..., :3]), (None if a.min() >= 1.0 else a)
    return np.ascontiguousarray(image), None
