"""The Python API: one object that owns a loaded model and mattes images or whole folders."""

from __future__ import annotations

import dataclasses
import functools
import weakref
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .engine import imageio, zoo
from .engine.backends import RuntimeChoice, choose_runtime, create_backend
from .engine.backends.combined import CombinedBackend
from .engine.batching import DynamicBatcher
from .engine.catalog import Entry, MemorySink, Row, RunReport, Runner, run_catalog
from .engine.catalog.watch import watch_catalog
from .engine.errors import ImageError, ModelError
from .engine.matting import MatteResult, MattingEngine
from .engine.outputs import DatedLayout, OutputSpec, SkuLayout, SkuResolver, plan_stems
from .engine.quality import QualityThresholds
from .engine.refiners import GuidedFilterRefiner, ModelRefiner, TileRefiner
from .engine.settings import GPU_BATCH, MatteSettings
from .engine.spec import sha256_file

__all__ = ["Matter", "MatteResult", "MatteSettings", "OutputSpec"]


class Matter:
    """Load a model once, then cut out images.

        with Matter() as m:                   # the default model (zoo.default_model: best on a GPU), best device
            r = m.matte("shoe.jpg")           # r.alpha float32 [H, W] in [0, 1], r.rgba uint8 [H, W, 4]
            m.matte_files(["photos/"], "outputs", background="white", canvas=(800, 800))
            m.catalog(["catalog/"], "out", resume=True)

    model: a zoo name (`cvmatte models`), an ONNX file with its spec JSON beside it, a folder
    holding both, or (backend="torch") a CV-UNet checkpoint `.pt`. backend: "onnxruntime",
    "torch" (precision "fp32"/"fp16"/"bf16" and cuda_graphs on CUDA; compile=True: torch.compile,
    once per input shape; on CUDA the decode, model and finish then run on the GPU, engine/gpu) or
    "tensorrt". device: "auto",
    "cpu", "cuda" or "tensorrt"; a GPU device that cannot be used raises DeviceError with the
    reason, unless allow_cpu_fallback=True. refiner: what refines the tiles: "guided" (the
    model-free colour guided filter), a learned refiner's zoo name or ONNX file (e.g.
    "cvunet-refiner"), or any TileRefiner object. Any MatteSettings field may be given as a
    keyword (tile=False, despill=0.5, ...).

    The model runs behind one dynamic batcher, shared by every call and thread; close() (or the
    with block) stops it.
    """

    def __init__(self, model: str | Path | None = None, backend: str = "auto", device: str = "auto",
                 *, threads: int | None = None, allow_cpu_fallback: bool = False,
                 cache_dir: str | Path | None = None, settings: MatteSettings | None = None,
                 refiner: TileRefiner | str | Path = "guided", precision: str = "auto", cuda_graphs: bool = False,
                 compile: bool = False, **setting_overrides):
        if settings is not None and setting_overrides:
            raise TypeError("give either settings= or individual setting keywords, not both")
        self.settings = settings or MatteSettings(**setting_overrides)
        model = zoo.default_model(device, cache_dir) if model is None else model
        # How to build this same Matter elsewhere (a Ray actor); a refiner object cannot travel.
        self.init_kwargs = dict(model=str(model), backend=backend, device=device, threads=threads,
                                allow_cpu_fallback=allow_cpu_fallback, cache_dir=cache_dir, settings=self.settings,
                                refiner=refiner if isinstance(refiner, (str, Path)) else "guided",
                                precision=precision, cuda_graphs=cuda_graphs, compile=compile)
        self.model = zoo.resolve(model, cache_dir)
        if self.model.spec.in_channels != 3:
            raise ModelError(f"{model}: takes {self.model.spec.in_channels} channels; a tile refiner is given "
                             "as refiner=, not as the model")
        if compile and backend not in ("torch", "auto"):
            raise ModelError("compile=True is torch.compile: it needs backend='torch'")

        def make_backend(resolved):
            if resolved.members:  # a combined model: each member on what suits it
                made = [(make_backend(r), r) for r in resolved.members]
                # Each member's spec as it runs (an INT8 variant's: its file's sha256 keys the cache).
                members = [(b, (c.model or r).spec) for (b, c), r in made]
                reason = "; ".join(f"{r.spec.name}: {c.reason or c.backend + ' ' + c.precision}" for (_, c), r in made)
                return CombinedBackend(resolved.spec, members), RuntimeChoice("combined", "fp32", reason)
            choice = choose_runtime(resolved, "torch" if (compile or cuda_graphs) and backend == "auto" else backend,
                                    device, precision)
            made = create_backend(choice.model or resolved, choice.backend, device, threads, allow_cpu_fallback,
                                  precision=choice.precision, cuda_graphs=cuda_graphs, compile=compile)
            return made, choice

        self._make_backend = lambda resolved: make_backend(resolved)[0]
        self._cache_dir = cache_dir
        self.backend, self.runtime = make_backend(self.model)
        if self.backend.on_gpu and settings is None:  # batches pay on a GPU only (see MatteSettings)
            gpu = {k: GPU_BATCH for k in ("batch_size", "tile_batch") if k not in setting_overrides}
            self.settings = dataclasses.replace(self.settings, **gpu)
        s = self.settings
        self._refiners: dict[str, TileRefiner] = {
            "guided": GuidedFilterRefiner.from_settings(s)}
        default = self.refiner(refiner) if isinstance(refiner, (str, Path)) else refiner
        self.batcher = DynamicBatcher(self.backend, s.batch_size, s.ring_depth, s.flush_ms)
        self.engine = MattingEngine(self.batcher, self.model.spec, s, default)
        # Dropped without close(), the batchers' threads would keep the model loaded for the life
        # of the process: they stop when the engine goes (with this Matter, or later where the
        # engine was handed on, as to a Ray actor). The finalizer holds the batchers only.
        self._finalizer = weakref.finalize(self.engine, _close_batchers, self.batcher, self._refiners)
        #: Decode, model and finish on the GPU (engine/gpu): None = when the torch backend runs on
        #: CUDA and the tiles go to the guided filter; True/False to force (benchmarks compare both).
        self.device_pipeline: bool | None = None
        #: The last device-pipeline run's seconds per stage (decode, model, finish, download).
        self.last_stage_s: dict[str, float] = {}

    def refiner(self, name: str | Path) -> TileRefiner:
        """A tile refiner by name ("guided", a zoo name or an ONNX file), loaded once and kept."""
        key = str(name)
        if key not in self._refiners:
            resolved = zoo.resolve(name, self._cache_dir)
            if resolved.spec.in_channels != 4:
                raise ModelError(f"{name}: not a tile refiner (takes {resolved.spec.in_channels} channels, "
                                 "a refiner takes RGB + coarse alpha)")
            self._refiners[key] = ModelRefiner(self._make_backend(resolved), resolved.spec,
                                               fallback=self._refiners["guided"], batch_size=self.settings.tile_batch,
                                               flush_ms=self.settings.flush_ms)
        return self._refiners[key]

    def close(self) -> None:
        """Stop the batchers' threads; the Matter cannot matte after this."""
        self._finalizer()

    def __enter__(self) -> "Matter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def spec(self):
        return self.model.spec

    def describe(self) -> str:
        """One line for a run's header: the model, what runs it and, where it was chosen for the
        user (backend or precision "auto"), why."""
        chosen = f"; chosen: {self.runtime.reason}" if self.runtime.reason else ""
        return (f"model {self.spec.name} ({self.model.path}) on {self.backend.describe()}, "
                f"tiles refined by {self.engine.refiner.name}{chosen}")

    @property
    def model_id(self) -> str:
        """Model name, the sha256 of the file that runs (an INT8 variant's where one was chosen)
        and a reduced inference precision: what the catalog cache keys on."""
        if isinstance(self.backend, CombinedBackend):  # the members' files and precisions, and the rule
            import hashlib

            parts = [self.spec.extra["rule"]] + [f"{s.sha256}:{getattr(b, 'precision', 'fp32')}"
                                                 for b, s in self.backend.members]
            return f"{self.spec.name}:{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:16]}"
        running = self.runtime.model or self.model
        precision = getattr(self.backend, "precision", "fp32")
        return (f"{self.spec.name}:{(running.spec.sha256 or sha256_file(running.path))[:16]}"
                + (f":{precision}" if precision not in ("fp32", running.spec.precision) else ""))

    def run_settings(self, tile: bool | None = None, **overrides) -> MatteSettings:
        """This Matter's settings with some changed for one call (tile=False, despill=0.5, ...)."""
        if tile is not None:
            overrides["tile"] = tile
        return dataclasses.replace(self.settings, **overrides) if overrides else self.settings

    def matte(self, image, *, tile: bool | None = None, refiner: str | None = None) -> MatteResult:
        """image: a path, a PIL image, or a uint8 array ([H, W] grey, [H, W, 3] RGB, [H, W, 4] RGBA)."""
        if isinstance(image, (str, Path)):
            decoded = imageio.read_image(image, self.settings.max_pixels)
            rgb, alpha = decoded.rgb, decoded.alpha
        elif isinstance(image, Image.Image):
            if image.width * image.height > self.settings.max_pixels:
                raise imageio.ImageTooLarge(None, f"{image.width}x{image.height} is over the pixel limit")
            decoded = imageio.from_pil(image)
            rgb, alpha = decoded.rgb, decoded.alpha
        else:
            rgb, alpha = _split_array(np.asarray(image), self.settings.max_pixels)
        return self.engine.matte(rgb, alpha, self.run_settings(tile), self.refiner(refiner) if refiner else None)

    def runner(self, spec: OutputSpec, sink: Callable, *, tile: bool | None = None,
               refiner: str | None = None) -> Runner:
        """The per-image runner on this Matter's engine, for a front door with its own sink (the
        service keeps the outputs in memory)."""
        return Runner(self.engine, spec, sink, model_id=self.model_id, backend_name=self.backend.describe(),
                      settings=self.run_settings(tile), refiner=self.refiner(refiner) if refiner else None)

    def matte_bytes(self, data: bytes, name: str = "image", spec: OutputSpec | None = None, *,
                    tile: bool | None = None, refiner: str | None = None) -> tuple[Row, dict[str, bytes]]:
        """One encoded image in memory -> (its row, the encoded outputs by kind), through the same
        Runner as every run over files (stdin/stdout in the CLI)."""
        sink = MemorySink()
        [row] = list(self.runner(spec or OutputSpec(), sink, tile=tile, refiner=refiner).run(
            [Entry(name, stem=plan_stems([(name, "")])[0], data=data)]))
        return row, sink.data.get(name, {})

    def matte_files(self, inputs, out_dir: str | Path, *, rgba: bool = True, alpha: bool = False,
                    background: str | None = None, canvas: tuple[int, int] | None = None, fill: float = 0.8,
                    shadow: bool = False, white_bg: bool = False, margin: float | None = None,
                    sku_regex: str | None = None, sku_csv: str | Path | None = None, min_side: int = 1,
                    thresholds: QualityThresholds | None = None, when: datetime | None = None,
                    on_row: Callable[[Row], None] | None = None) -> RunReport:
        """Files, folders and glob patterns into out_dir's dated layout
        (OUT/YYYYMMDD/HHMMSS_<SKU>/<stem>_matte.png, a manifest and a summary beside), no cache.
        One bad file becomes a failed row (report.failed), never the end of the run.
        white_bg and margin: the names of earlier releases for background="white" and fill."""
        spec = OutputSpec.with_aliases(white_bg, margin, rgba=rgba, alpha=alpha, background=background, canvas=canvas,
                                       fill=fill, shadow=shadow)
        return run_catalog(_as_list(inputs), self.engine, DatedLayout(Path(out_dir), when or datetime.now()), spec,
                           model_id=self.model_id, backend_name=self.backend.describe(), cache=False,
                           sku=SkuResolver(sku_regex, sku_csv), min_side=min_side, thresholds=thresholds,
                           on_row=on_row, runner_class=_runner_class(self))

    def catalog(self, inputs, out: str | Path, *, resume: bool = False, retry_failed: bool = True,
                rgba: bool = True, alpha: bool = False,
                background: str | None = None, canvas: tuple[int, int] | None = None, fill: float = 0.8,
                shadow: bool = False, thresholds: QualityThresholds | None = None, sku_regex: str | None = None,
                sku_csv: str | Path | None = None, min_side: int = 32, workers: int | None = None, ray: bool = False,
                ray_address: str | None = None, ray_actors: int | None = None, ray_gpus_per_actor: float = 0.0,
                on_row: Callable[[Row], None] | None = None, on_start: Callable[[int], None] | None = None
                ) -> RunReport:
        """The catalog pipeline (cvmatte.engine.catalog): validate, matte what is not cached, flag
        for review, write OUT/<SKU>/<stem>_matte.png (+ alpha, + background) and OUT/manifest.jsonl.
        resume=True finishes the last run without redoing its images (its failed ones are tried
        again unless retry_failed=False); ray=True sends the images to Ray Data actors (a local
        cluster unless ray_address). on_start(n): called with the number of inputs to do."""
        spec = OutputSpec(rgba=rgba, alpha=alpha, background=background, canvas=canvas, fill=fill, shadow=shadow)
        executor = None
        if ray:
            from .engine.catalog.ray import ray_executor

            kwargs = dict(self.init_kwargs)
            kwargs["threads"] = kwargs["threads"] or 1
            executor = ray_executor(functools.partial(_engine_for_actor, kwargs), ray_address, ray_actors,
                                    gpus_per_actor=ray_gpus_per_actor)
        return run_catalog(_as_list(inputs), self.engine, SkuLayout(Path(out)), spec, model_id=self.model_id,
                           backend_name=self.backend.describe(), cache=True, resume=resume, retry_failed=retry_failed,
                           sku=SkuResolver(sku_regex, sku_csv), min_side=min_side, thresholds=thresholds,
                           settings=self.run_settings(io_workers=workers) if workers else None, on_row=on_row,
                           on_start=on_start, executor=executor, runner_class=_runner_class(self))

    def watch(self, folder: str | Path, out: str | Path, *, settle_s: float = 1.0, idle_exit_s: float | None = None,
              **catalog_options) -> list[Row]:
        """catalog() on the files of a folder as they arrive (see engine/catalog/watch.py)."""
        return watch_catalog(folder, lambda paths, resume: self.catalog(paths, out, resume=resume, **catalog_options),
                             settle_s, idle_exit_s)


def _runner_class(m: "Matter"):
    """Runner, or the device pipeline bound to this Matter's torch backend."""
    use = m.device_pipeline
    if use is None:
        use = (m.backend.name == "torch" and m.backend.on_gpu
               and isinstance(m.engine.refiner, GuidedFilterRefiner))
    if not use:
        return Runner
    from .engine.gpu.runner import GpuRunner

    def make(*args, **kwargs):
        runner = GpuRunner(*args, backend=m.backend, batch=m.settings.batch_size, **kwargs)
        m.last_stage_s = runner.stage_s
        return runner

    return make


def _close_batchers(batcher: DynamicBatcher, refiners: dict) -> None:
    batcher.close()
    for r in refiners.values():
        if isinstance(getattr(r, "batcher", None), DynamicBatcher):
            r.batcher.close()


def _engine_for_actor(kwargs: dict) -> MattingEngine:
    """Builds a Matter's engine inside a Ray actor (module level, so it pickles by reference)."""
    return Matter(**kwargs).engine


def _as_list(inputs) -> list:
    return [inputs] if isinstance(inputs, (str, Path)) else list(inputs)


def _split_array(image: np.ndarray, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    if image.dtype != np.uint8:
        raise ImageError(None, f"expected a uint8 image array, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(None, f"expected [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ImageError(None, f"the array has no pixels (shape {image.shape})")
    if h * w > max_pixels:
        raise imageio.ImageTooLarge(None, f"{w}x{h} is over the pixel limit of {max_pixels / 1e6:.1f} MP")
    if image.shape[2] == 4:
        a = image[..., 3].astype(np.float32) / 255.0
        return np.ascontiguousarray(image[..., :3]), (None if a.min() >= 1.0 else a)
    return np.ascontiguousarray(image), None
