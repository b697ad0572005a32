"""Model latency: every model variant on every requested backend and device, through one staging
slot as the pipeline runs it, at batch 1 for each input resolution and at the model's own size for
each batch; median, p90 and p99 wall time after warm-up (host<->device copies included), the compute
time the backend reports, images/s, GFLOP per image from the ONNX graph's convolutions, the rate
achieved and its fraction of the machine's measured peak, and on a GPU the copies' floor.
"""

from __future__ import annotations

import time

import numpy as np

from cvmatte import Matter
from cvmatte.benchmarks.suite.config import BenchConfig
from cvmatte.benchmarks.suite.peak import peak_for
from cvmatte.benchmarks.suite.variants import backend_runs
from cvmatte.engine import zoo
from cvmatte.engine.errors import CvmatteError
from cvmatte.engine.onnx_graph import conv_flops
from cvmatte.engine.preprocess import normalize, resize


def latency(cfg: BenchConfig, variants: dict, peak: dict, image: np.ndarray, log) -> list[dict]:
    rows = []
    for backend in cfg.backends:
        for label, precision, model, hint in backend_runs(backend, variants):
            for device in cfg.devices:
                try:
                    m = Matter(model, backend, device, precision=hint)
                except CvmatteError as e:
                    log(f"latency: {label} on {backend}/{device} skipped: {e}")
                    continue
                # Latency against resolution at batch 1, throughput against batch at the model's
                # own size: the two curves the plots draw, without the full product of both.
                own = m.spec.input_size[0]
                sizes = cfg.resolutions if m.spec.dynamic_hw else [own]
                grid = [(res, 1) for res in sizes] + [(own, b) for b in cfg.batches if b != 1]
                if own not in sizes:
                    grid.insert(0, (own, 1))
                for res, batch in grid:
                    x1 = normalize(resize(image, (res, res)), m.spec)[None]
                    # FLOPs from the ONNX graph (an OpenVINO IR file counts as its fp32 model's).
                    onnx_file = m.model.path if m.model.path.suffix == ".onnx" else zoo.resolve(label.rsplit(" ", 1)[0]).path
                    gflop = conv_flops(onnx_file, (res, res)) / 1e9
                    # Through one staging slot, as the pipeline runs it: wall time from launch
                    # to outputs on the host (copies included), and the compute time the
                    # backend reports (CUDA events on a GPU, the run itself on the CPU).
                    slot = m.backend.make_slot(0, batch, x1.shape[1:])
                    slot.host_in[:] = x1
                    slot.n = batch

                    def once():
                        t0 = time.perf_counter()
                        m.backend.launch(slot, batch)
                        compute = m.backend.wait(slot)
                        return time.perf_counter() - t0, compute

                    for _ in range(2):
                        once()
                    ts, cs = np.array([once() for _ in range(cfg.repeats)]).T
                    med = float(np.median(ts))
                    rows.append({"model": label.rsplit(" ", 1)[0], "precision": precision, "backend": backend,
                                 "device": m.backend.describe(), "resolution": res, "batch": batch,
                                 "median_ms": med * 1e3, "p90_ms": float(np.percentile(ts, 90)) * 1e3,
                                 "p99_ms": float(np.percentile(ts, 99)) * 1e3, "ms_per_image": med * 1e3 / batch,
                                 "compute_ms": float(np.median(cs)) * 1e3,
                                 "images_per_s": batch / med, "gflop_per_image": gflop,
                                 "gflops_achieved": gflop * batch / med,
                                 "fraction_of_peak": gflop * batch / med / peak_for(m.backend, precision, peak),
                                 # the host<->device copies' floor: input + output bytes over the pinned H2D rate
                                 "copy_ms_floor": (slot.host_in.nbytes + slot.host_out.nbytes) / peak["h2d_gbs"] / 1e6
                                 if getattr(m.backend, "on_gpu", False) and "h2d_gbs" in peak else None})
                    log(f"latency {label} {res}² batch {batch}: {med * 1e3:.1f} ms")
    return rows
