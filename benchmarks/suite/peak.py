"""The machine's physical limits, measured on the spot, that every latency figure is read against:
the CPU's float32 matrix-product rate (GFLOP/s, numpy's BLAS on all cores) and copy bandwidth
(GB/s); on a CUDA GPU, when torch is present, its FP32 and FP16 matrix-product rates,
device-to-device copy bandwidth and pinned host-to-device upload rate, timed with CUDA events.
`peak_for` picks the rate a given backend and precision are compared with.
"""

from __future__ import annotations

import time

import numpy as np


def measured_peak(size: int = 2048, repeats: int = 5) -> dict:
    """The CPU's float32 matrix-product rate (GFLOP/s, numpy's BLAS on all cores) and its copy
    bandwidth (GB/s, read + write of a 256 MB array), best of `repeats`."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    src = np.ones(64 * 2 ** 20, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    copy = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats))
    peak = {"cpu_gflops": 2 * size ** 3 / best / 1e9, "cpu_gbs": 2 * src.nbytes / copy / 1e9}
    peak.update(gpu_peak())
    return peak


def gpu_peak(size: int = 8192, repeats: int = 5) -> dict:
    """On a CUDA GPU (through torch, when both are present): FP32 and FP16 matrix-product rates
    and device-to-device copy bandwidth, timed with CUDA events. {} elsewhere."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}

    def rate(fn, work):
        fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return work / best

    out = {}
    for name, dtype in (("gpu_fp32_gflops", torch.float32), ("gpu_fp16_gflops", torch.float16)):
        a = torch.randn(size, size, device="cuda", dtype=dtype)
        out[name] = rate(lambda: a @ a, 2 * size ** 3) / 1e9
    src = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    out["gpu_gbs"] = rate(lambda: dst.copy_(src), 2 * src.numel()) / 1e9
    host = torch.empty(src.numel(), dtype=torch.uint8, pin_memory=True)
    out["h2d_gbs"] = rate(lambda: src.copy_(host, non_blocking=True), src.numel()) / 1e9
    return out


def peak_for(backend, precision: str, peak: dict) -> float:
    """The limit a figure is read against: the GPU's matrix-product rate in the model's precision
    when the backend runs on a GPU, else the CPU's."""
    if getattr(backend, "on_gpu", False) and "gpu_fp32_gflops" in peak:
        return peak["gpu_fp16_gflops" if precision in ("fp16", "int8") else "gpu_fp32_gflops"]
    # The CPU's fp32 rate is measured; a reduced precision's is read off the instructions: a VNNI
    # (or AMX) dot product does 4 int8 multiply-adds per 32-bit lane where an FMA does one, a BF16
    # one 2 (AMX tiles do more: this is the vector units' limit, a floor of the real peak).
    return peak["cpu_gflops"] * {"int8": 4.0, "bf16": 2.0}.get(precision, 1.0)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
