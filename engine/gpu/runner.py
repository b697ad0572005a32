"""The per-image path with the pixels on the GPU: the same steps, entries, rows and sinks as
catalog.runner.Runner, but decode (nvjpeg for plain JPEGs), resize and normalise, the model, and
the finish (upsampling, band, guided filter, foreground) run as torch ops on the device, and only
the uint8 alpha and foreground come back. The CPU threads read files, measure quality, encode PNGs
and write, overlapped with the next batch on the GPU.

Used when the model runs on the torch backend on CUDA (Matter picks it); a cache hit takes the
CPU path of Runner (no model work to save there).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator

from .. import imageio
from ..catalog.runner import Row, Runner, _Loaded
from ..catalog.validate import Entry
from ..matting import MatteResult, dequantize
from . import decode, finish


class GpuRunner(Runner):
    """backend: the TorchBackend on CUDA behind the engine; batch: images per model call."""

    def __init__(self, *args, backend, batch: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.batch = batch
        self.decoder = decode.BatchDecoder(backend.device, self.settings.max_pixels, workers=self.settings.io_workers)
        #: seconds per stage over the run (GPU stages timed with synchronisation at batch ends).
        self.stage_s = {"read": 0.0, "decode": 0.0, "model": 0.0, "finish": 0.0, "download": 0.0}

    def run(self, entries: Iterable[Entry]) -> Iterator[Row]:
        torch = self.backend.torch
        pool = ThreadPoolExecutor(self.settings.io_workers, thread_name_prefix="cvmatte-gpu-io")
        writing: deque[Future] = deque()
        todo = list(entries)
        chunks = [todo[i:i + self.batch] for i in range(0, len(todo), self.batch)]
        try:
            reading = [pool.submit(lambda c=c: [self._read(e) for e in c]) for c in chunks[:2]]
            for k in range(len(chunks)):
                loaded = reading[k].result()
                if k + 2 < len(chunks):  # read two batches ahead
                    reading.append(pool.submit(lambda c=chunks[k + 2]: [self._read(e) for e in c]))
                for row in self._batch(loaded, pool, writing, torch):
                    yield row
                while writing and (len(writing) > 2 * self.batch or writing[0].done()):
                    yield writing.popleft().result()
            while writing:
                yield writing.popleft().result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)

    def _sync(self, torch) -> None:
        """Stage times need the device idle at the stage's end; on the CPU (tests) there is nothing to wait for."""
        if self.backend.device.type == "cuda":
            torch.cuda.synchronize(self.backend.device)

    def _batch(self, items: list[tuple[_Loaded, bytes | None]], pool, writing: deque, torch) -> list[Row]:
        """One batch: failures and cache hits leave at once (hits to the CPU path); the rest go
        through the device. Returns the rows that are final already."""
        done: list[Row] = []
        gpu: list[tuple[_Loaded, bytes]] = []
        for loaded, data in items:
            if data is None:
                done.append(loaded.row)
            elif loaded.hit is not None:
                try:
                    loaded.decoded = imageio.decode_image(data, loaded.entry.input, self.settings.max_pixels)
                    writing.append(pool.submit(self._from_cache, loaded))
                except Exception as err:
                    done.append(self._failed(loaded, err))
            else:
                gpu.append((loaded, data))
        if not gpu:
            return done
        t0 = time.perf_counter()
        decoded = self.decoder.decode([(loaded.entry.input, data) for loaded, data in gpu])
        ok = []
        for (loaded, _), d in zip(gpu, decoded):
            if isinstance(d, Exception):
                done.append(self._failed(loaded, d))
            else:
                loaded.row.height, loaded.row.width = d.rgb.shape[1:]
                ok.append((loaded, d))
        if not ok:
            return done
        spec = self.engine.spec
        with torch.inference_mode():
            x = decode.model_input([flatten_on_white(d.rgb, d.alpha) for _, d in ok], spec)
            self._sync(torch)
            t1 = time.perf_counter()
            coarse = self.backend.infer(x)[:, 0]
            self._sync(torch)
            t2 = time.perf_counter()
            results = [finish.finish(d.rgb, coarse[i], spec.input_size, self.settings, d.alpha)
                       for i, (_, d) in enumerate(ok)]
            self._sync(torch)
            t3 = time.perf_counter()
            host = [(a.cpu().numpy(), fg.permute(1, 2, 0).contiguous().cpu().numpy()) for a, fg in results]
        t4 = time.perf_counter()
        for key, seconds in (("decode", t1 - t0), ("model", t2 - t1), ("finish", t3 - t2), ("download", t4 - t3)):
            self.stage_s[key] += seconds
        per_image = {"decode_s": (t1 - t0) / len(ok), "coarse_s": (t2 - t1) / len(ok),
                     "refine_s": (t3 - t2) / len(ok), "download_s": (t4 - t3) / len(ok)}
        for (loaded, _), (alpha_u8, fg) in zip(ok, host):
            loaded.decoded = None
            result = MatteResult(dequantize(alpha_u8), None, fg, timings=dict(per_image))
            writing.append(pool.submit(self._measure_and_write, loaded, result))
        return done


def flatten_on_white(rgb, alpha):
    """preprocess.flatten_on_white on the device: an image with its own transparency is seen over white."""
    if alpha is None:
        return rgb
    a = alpha[None]
    return (rgb.float() * a + 255.0 * (1.0 - a) + 0.5).clamp(0, 255).to(rgb.dtype)
