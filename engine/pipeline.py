"""The file pipeline: decode on a thread pool -> coarse pass through the dynamic batcher ->
refine, encode and write on the pool.

The calling thread hands each decoded image's model input to the batcher (batching.py) and goes
on at once; the batcher launches full batches from its ring of staging buffers (page-locked on a
GPU, copies overlapping compute) while the pool decodes the next images and refines and writes the
previous ones (OpenCV and NumPy release the GIL). So the model never waits for I/O or for the
edges of earlier images, and the CPU never waits for the model. At most about 3 * max_inflight
decoded images are held at once. One bad file gets an error row and the run goes on; outputs are
written atomically, and a manifest row is appended per file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from . import imageio
from .batching import BatchStats, DynamicBatcher
from .errors import CvmatteError
from .matting import MattingEngine
from .outputs import OutputLayout, OutputOptions, SkuResolver, encode_outputs, safe_name


@dataclass
class FileResult:
    input: str
    sku: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    tiles: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class RunReport:
    results: list[FileResult]
    seconds: float
    manifest: Path | None
    backend: str
    #: The coarse pass's batches: fill, launches left part-filled, model busy fraction.
    batching: BatchStats | None = None

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    @property
    def succeeded(self) -> list[FileResult]:
        return [r for r in self.results if r.ok]


def _plan_names(paths: list[Path], layout: OutputLayout, options: OutputOptions, sku: SkuResolver
                ) -> list[tuple[str, dict[str, Path]]]:
    """Output paths for every input, decided up front so that two inputs never share one:
    `a.jpg` and `a.png` with the same SKU become `a_jpg_matte.png` and `a_png_matte.png`."""
    skus = [sku(p) for p in paths]
    counts: dict[tuple[str, str], int] = {}
    for s, p in zip(skus, paths):
        counts[s, p.stem] = counts.get((s, p.stem), 0) + 1
    used: set[tuple[str, str]] = set()
    planned = []
    for s, p in zip(skus, paths):
        stem = p.stem if counts[s, p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower() or 'noext'}"
        stem = safe_name(stem, "image")  # "a b" and "a_b" would otherwise share one file
        candidate, n = stem, 1
        while (s, candidate) in used:
            n += 1
            candidate = f"{stem}_{n}"
        used.add((s, candidate))
        planned.append((s, layout.paths(s, candidate, options)))
    return planned


def _decode(path: Path, max_pixels: int):
    """-> (decoded or None, sha256 of the file's bytes, error or None, seconds)."""
    t0 = time.perf_counter()
    digest = ""
    try:
        data = imageio.read_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        decoded = imageio.decode_image(data, str(path), max_pixels)
    except CvmatteError as e:
        return None, digest, e, time.perf_counter() - t0
    return decoded, digest, None, time.perf_counter() - t0


def _finish_and_write(engine: MattingEngine, decoded, coarse_small, coarse_s: float, paths: dict[str, Path],
                      options: OutputOptions):
    """Runs on the pool: tiles, foreground colour, encoding, atomic writes. -> (result, written)."""
    result = engine.finish(decoded.rgb, coarse_small, decoded.alpha, {"coarse_s": coarse_s})
    t0 = time.perf_counter()
    written = {}
    for kind, data in encode_outputs(result, options).items():
        imageio.atomic_write_bytes(paths[kind], data)
        written[kind] = str(paths[kind])
    result.timings["write_s"] = time.perf_counter() - t0
    return result, written


def run_files(engine: MattingEngine, paths: list[Path], out_root: str | Path,
              options: OutputOptions | None = None, sku: SkuResolver | None = None,
              when: datetime | None = None, on_done: Callable[[FileResult], None] | None = None,
              backend_name: str = "") -> RunReport:
    options = options or OutputOptions()
    sku = sku or SkuResolver()
    settings = engine.settings
    layout = OutputLayout(out_root, when)
    paths = [Path(p) for p in paths]
    planned = _plan_names(paths, layout, options, sku)
    results: list[FileResult | None] = [None] * len(paths)
    t_start = time.perf_counter()
    layout.day_dir.mkdir(parents=True, exist_ok=True)
    manifest = open(layout.manifest, "a", encoding="utf-8")

    def done(i: int, r: FileResult):
        results[i] = r
        row = asdict(r)
        row["model"] = engine.spec.name
        row["backend"] = backend_name
        manifest.write(json.dumps(row) + "\n")
        manifest.flush()
        if on_done:
            on_done(r)

    own_batcher = not isinstance(engine.backend, DynamicBatcher)
    batcher = DynamicBatcher(engine.backend, settings.batch_size, settings.ring_depth, settings.flush_ms) \
        if own_batcher else engine.backend
    with ThreadPoolExecutor(settings.io_workers, thread_name_prefix="cvmatte-io") as pool:
        decoding: deque[tuple[int, Future]] = deque()
        writing: deque[tuple[int, FileResult, Future]] = deque()
        next_index = 0

        def refill():
            nonlocal next_index
            while next_index < len(paths) and len(decoding) < settings.max_inflight:
                decoding.append((next_index, pool.submit(_decode, paths[next_index], settings.max_pixels)))
                next_index += 1

        def settle_writes(keep: int):
            while len(writing) > keep:
                i, r, fut = writing.popleft()
                try:
                    result, r.outputs = fut.result()
                    r.tiles = result.tiles
                    r.timings.update(result.timings)
                except OSError as e:  # a full disk or a permission error is this file's error
                    r.error = f"{paths[i]}: cannot write output ({type(e).__name__}: {e})"
                except Exception as e:
                    r.error = f"{paths[i]}: matting failed ({type(e).__name__}: {e})"
                done(i, r)

        def finish(i: int, decoded, r: FileResult, coarse_small, seconds: float):
            writing.append((i, r, pool.submit(_finish_and_write, engine, decoded, coarse_small, seconds,
                                              planned[i][1], options)))
            settle_writes(settings.max_inflight)

        def settle_coarse(keep: int):
            """Hand finished coarse passes to the pool, in order; wait while more than `keep` are out."""
            while coarse and (len(coarse) > keep or coarse[0][3].done()):
                i, decoded, r, fut = coarse.popleft()
                try:
                    out, seconds = fut.result()
                except Exception:
                    # A failed batch: run this image alone to learn whether it is the culprit.
                    try:
                        t0 = time.perf_counter()
                        out = batcher.run(engine.coarse_input(decoded.rgb, decoded.alpha)[None])[0]
                        seconds = time.perf_counter() - t0
                    except Exception as e:
                        r.error = f"{paths[i]}: matting failed ({type(e).__name__}: {e})"
                        done(i, r)
                        continue
                finish(i, decoded, r, out[0], seconds)

        coarse: deque[tuple[int, object, FileResult, Future]] = deque()
        refill()
        while decoding:
            i, fut = decoding.popleft()
            refill()
            decoded, digest, err, t_decode = fut.result()
            r = FileResult(input=str(paths[i]), sku=planned[i][0], sha256=digest, timings={"decode_s": t_decode})
            if err is not None:
                r.error = str(err)
                done(i, r)
            else:
                r.height, r.width = decoded.rgb.shape[:2]
                try:
                    x = engine.coarse_input(decoded.rgb, decoded.alpha)
                except Exception as e:
                    r.error = f"{paths[i]}: matting failed ({type(e).__name__}: {e})"
                    done(i, r)
                    continue
                coarse.append((i, decoded, r, batcher.submit(x, flush=not decoding)))
            settle_coarse(settings.max_inflight)
        settle_coarse(0)
        settle_writes(0)
    manifest.close()
    if own_batcher:
        batcher.close()
    return RunReport([r for r in results if r is not None], time.perf_counter() - t_start, layout.manifest,
                     backend_name, batcher.stats)
