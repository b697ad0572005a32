"""The one path of an image, for every front door (`cvmatte matte`, `catalog run` local, watched
or on Ray, the API, the service): read and decode -> alpha from the cache, or the coarse pass
through the batcher then the tiles (MattingEngine.finish) -> foreground -> quality -> the
outputs (outputs.encode) -> a sink (files, or memory for the service) -> one Row.

Pipelined: the calling thread hands each decoded image's model input to the dynamic batcher and
goes on at once; a thread pool decodes the next images and refines, encodes and writes the
previous ones (OpenCV and NumPy release the GIL), so the model never waits for I/O and the CPU
never waits for the model. At most about 3 * max_inflight decoded images are held at once, fewer
under max_memory_mb (each image counted at BYTES_PER_PIXEL of its pixels). One bad file gets a
failed row and the run goes on.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import imageio, outputs, quality
from ..batching import DynamicBatcher
from ..errors import CvmatteError
from ..matting import MatteResult, MattingEngine, coarse_planes, dequantize
from ..refiners import TileRefiner
from ..settings import BYTES_PER_PIXEL, MatteSettings
from .store import AlphaCache, settings_digest
from .validate import Entry


@dataclass
class Row:
    """One input of one run: what the manifest holds and every front door reports."""

    input: str
    sha256: str = ""
    sku: str = ""
    #: The input's resolved path: the same file however it was spelled.
    path: str = ""
    #: ok, review (flags say why), failed (error says why) or rejected (by validation).
    status: str = "failed"
    error: str | None = None
    #: kind -> where it was written (a path; a label for the service's in-memory outputs).
    outputs: dict[str, str] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    tiles: int = 0
    quality: dict | None = None
    flags: list[str] = field(default_factory=list)
    #: hit or miss; None without a cache.
    cache: str | None = None
    duplicate_of: str | None = None
    model: str | None = None
    backend: str | None = None
    settings: str | None = None
    run: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "review")

    @property
    def identity(self) -> str:
        """The resolved path (rows of older manifests: the input as written, resolved now)."""
        return self.path or str(imageio.resolved_path(Path(self.input)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def failure(path: str, err: BaseException) -> str:
    """An exception as a row's error, always naming the file."""
    if isinstance(err, CvmatteError):
        return str(err)
    if isinstance(err, OSError):  # a full disk or a permission error is this file's error
        return f"{path}: cannot write output ({type(err).__name__}: {err})"
    return f"{path}: matting failed ({type(err).__name__}: {err})"


class FileSink:
    """Writes an image's outputs where the layout says, each atomically; all of them or none."""

    def __init__(self, layout: outputs.SkuLayout):
        self.layout = layout

    def __call__(self, e: Entry, encoded: dict[str, bytes]) -> dict[str, str]:
        written: dict[str, str] = {}
        try:
            for kind, data in encoded.items():
                path = self.layout.path(e.sku, e.stem, kind)
                imageio.atomic_write_bytes(path, data)
                written[kind] = str(path)
        except BaseException:
            for p in written.values():
                Path(p).unlink(missing_ok=True)
            raise
        return written


class MemorySink:
    """Keeps the encoded outputs by input (the service answers with them; nothing touches disk)."""

    def __init__(self):
        self.data: dict[str, dict[str, bytes]] = {}

    def __call__(self, e: Entry, encoded: dict[str, bytes]) -> dict[str, str]:
        self.data[e.input] = encoded
        return {kind: f"{e.stem}{outputs.KINDS[kind].suffix}" for kind in encoded}


@dataclass
class _Loaded:
    entry: Entry
    row: Row
    decoded: imageio.DecodedImage | None = None
    #: (alpha uint8, record) from the cache.
    hit: tuple[np.ndarray, dict] | None = None
    key: str = ""
    t0: float = 0.0
    pages: int = 1


class Runner:
    """settings, refiner: this run's, when they differ from the engine's (a service request)."""

    def __init__(self, engine: MattingEngine, spec: outputs.OutputSpec, sink: Callable[[Entry, dict], dict], *,
                 model_id: str = "", backend_name: str = "", run_id: str = "", cache: AlphaCache | None = None,
                 thresholds: quality.QualityThresholds | None = None, settings: MatteSettings | None = None,
                 refiner: TileRefiner | None = None):
        self.engine = engine
        self.spec = spec
        self.sink = sink
        self.model_id = model_id
        self.backend_name = backend_name
        self.run_id = run_id
        self.cache = cache
        self.thresholds = thresholds or quality.QualityThresholds()
        self.settings = settings or engine.settings
        self.refiner = refiner or engine.refiner
        self.digest = settings_digest(self.settings, self.refiner.name)

    def run(self, entries: Iterable[Entry]) -> Iterator[Row]:
        """Rows in about the order of the entries, as they finish."""
        s = self.settings
        own = not isinstance(self.engine.backend, DynamicBatcher)
        batcher = DynamicBatcher(self.engine.backend, s.batch_size, s.ring_depth, s.flush_ms) if own \
            else self.engine.backend
        todo = iter(entries)
        upcoming = [next(todo, None)]
        budget = s.max_memory_mb * 1e6 if s.max_memory_mb else None
        held = [0.0]  # estimated bytes of the images admitted and not yet out as rows
        costs: dict[str, float] = {}
        self.max_in_flight = 0
        ready: deque[Row] = deque()
        loading: deque[Future] = deque()
        coarse: deque[tuple[_Loaded, np.ndarray, Future]] = deque()
        finishing: deque[Future] = deque()
        pool = ThreadPoolExecutor(s.io_workers, thread_name_prefix="cvmatte-io")
        try:
            def refill():
                while len(loading) < s.max_inflight and upcoming[0] is not None:
                    e = upcoming[0]
                    cost = e.width * e.height * BYTES_PER_PIXEL
                    if budget and held[0] > 0 and held[0] + cost > budget:
                        return  # --max-memory: wait until images in flight are out
                    held[0] += cost
                    costs[e.input] = cost
                    self.max_in_flight = max(self.max_in_flight, len(costs))
                    loading.append(pool.submit(self._load, e))
                    upcoming[0] = next(todo, None)

            def leave(row: Row) -> Row:
                held[0] -= costs.pop(row.input, 0.0)
                return row

            def settle_finishing(keep: int):
                while finishing and (len(finishing) > keep or finishing[0].done()):
                    ready.append(finishing.popleft().result())

            def settle_coarse(keep: int):
                """Hand finished coarse passes to the pool, in order; wait while more than `keep` are out."""
                while coarse and (len(coarse) > keep or coarse[0][2].done()):
                    loaded, x, fut = coarse.popleft()
                    try:
                        out, seconds = fut.result()
                    except Exception:
                        # A failed batch: run this image alone to learn whether it is the culprit.
                        try:
                            t0 = time.perf_counter()
                            out = batcher.run(x[None])[0]
                            seconds = time.perf_counter() - t0
                        except Exception as err:
                            ready.append(self._failed(loaded, err))
                            continue
                    finishing.append(pool.submit(self._finish, loaded, coarse_planes(out), seconds))
                    settle_finishing(s.max_inflight)

            refill()
            while loading or upcoming[0] is not None:
                if not loading:  # the memory budget holds the next image back: drain first
                    settle_coarse(0)
                    settle_finishing(0)
                    while ready:
                        yield leave(ready.popleft())
                    refill()
                    continue
                loaded = loading.popleft().result()
                refill()
                if loaded.decoded is None:
                    ready.append(loaded.row)
                elif loaded.hit is not None:
                    finishing.append(pool.submit(self._from_cache, loaded))
                    settle_finishing(s.max_inflight)
                else:
                    try:
                        x = self.engine.coarse_input(loaded.decoded.rgb, loaded.decoded.alpha)
                        coarse.append((loaded, x, batcher.submit(x, flush=not loading)))
                    except Exception as err:
                        ready.append(self._failed(loaded, err))
                settle_coarse(s.max_inflight)
                while ready:
                    yield leave(ready.popleft())
            settle_coarse(0)
            settle_finishing(0)
            while ready:
                yield leave(ready.popleft())
        except BaseException:
            # Ctrl-C, or the caller stopped (GeneratorExit): images not started are dropped; those
            # being written finish, so no half-written file and no temporary file stays behind.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
            if own:
                batcher.close()

    # --- the steps, each on the pool; none raises: an error becomes the row's ---------------------

    def _read(self, e: Entry) -> tuple[_Loaded, bytes | None]:
        """The file's bytes, checked against validation's sha256, and the cache looked up; the
        bytes are None when that failed (the row says why). Decoding is the caller's."""
        loaded = _Loaded(e, Row(e.input, e.sha256, e.sku, e.path, duplicate_of=e.duplicate_of, model=self.model_id,
                                backend=self.backend_name, settings=self.digest, run=self.run_id),
                         t0=time.perf_counter())
        try:
            data = e.data if e.data is not None else imageio.read_bytes(e.input)
            digest = hashlib.sha256(data).hexdigest()
            if e.sha256 and digest != e.sha256:
                raise CvmatteError(f"{e.input}: the file changed after validation; run again")
            loaded.row.sha256 = digest
            if self.cache is not None:
                loaded.key = self.cache.key(digest, self.model_id, self.digest)
                loaded.hit = self.cache.get(loaded.key)
            return loaded, data
        except Exception as err:
            self._failed(loaded, err)
            return loaded, None

    def _load(self, e: Entry) -> _Loaded:
        loaded, data = self._read(e)
        if data is None:
            return loaded
        try:
            loaded.decoded = imageio.decode_image(data, e.input, self.settings.max_pixels)
            loaded.row.height, loaded.row.width = loaded.decoded.rgb.shape[:2]
            loaded.row.timings["decode_s"] = time.perf_counter() - loaded.t0
            if loaded.hit is not None and loaded.hit[0].shape != loaded.decoded.rgb.shape[:2]:
                loaded.hit = None  # a damaged cache entry: a miss, computed and rewritten
        except Exception as err:
            loaded.decoded = None
            self._failed(loaded, err)
        return loaded

    def _finish(self, loaded: _Loaded, coarse_small: np.ndarray, coarse_s: float) -> Row:
        try:
            d = loaded.decoded
            result = self.engine.finish(d.rgb, coarse_small, d.alpha, {"coarse_s": coarse_s}, self.settings,
                                        self.refiner)
            del d  # _write releases the decoded image; no local may keep it alive
            return self._measure_and_write(loaded, result)
        except Exception as err:
            return self._failed(loaded, err)

    def _measure_and_write(self, loaded: _Loaded, result: MatteResult) -> Row:
        """A fresh result (this runner's or the device pipeline's): quality, the cache, the outputs."""
        try:
            t0 = time.perf_counter()
            measures = quality.measure(result.alpha, result.coarse, result.members_agreement)
            result.timings["quality_s"] = time.perf_counter() - t0
            if self.cache is not None:
                self.cache.put(loaded.key, result.alpha_u8, {"quality": measures, "input": loaded.entry.input})
                loaded.row.cache = "miss"
            return self._write(loaded, result, measures)
        except Exception as err:
            return self._failed(loaded, err)

    def _from_cache(self, loaded: _Loaded) -> Row:
        try:
            alpha_u8, record = loaded.hit
            result = self.engine.cut_out(loaded.decoded.rgb, dequantize(alpha_u8), None, None, self.settings)
            loaded.row.cache = "hit"
            return self._write(loaded, result, record["quality"])
        except Exception as err:
            return self._failed(loaded, err)

    def _write(self, loaded: _Loaded, result: MatteResult, measures: dict) -> Row:
        row = loaded.row
        if loaded.decoded is not None:
            loaded.pages = loaded.decoded.pages
        loaded.decoded = None  # the decoded image is not needed past here
        t0 = time.perf_counter()
        row.timings.update(result.timings)  # before the outputs: a failed write still ran the model
        row.outputs = self.sink(loaded.entry, outputs.encode(result, self.spec))
        row.timings["write_s"] = time.perf_counter() - t0
        row.tiles = result.tiles
        row.quality = measures
        row.flags = quality.flags(measures, self.thresholds)
        if loaded.pages > 1:
            row.flags.append(f"a file of {loaded.pages} pages or frames: only the first was cut out")
        row.status = "review" if row.flags else "ok"
        row.timings["total_s"] = time.perf_counter() - loaded.t0
        return row

    def _failed(self, loaded: _Loaded, err: BaseException) -> Row:
        loaded.row.status, loaded.row.error = "failed", failure(loaded.entry.input, err)
        loaded.row.timings["total_s"] = time.perf_counter() - loaded.t0
        return loaded.row
