"""`cvmatte bench`: latency, catalog throughput and accuracy, side by side with the tools people use
today, each figure beside the machine's physical limit; results as JSON, a markdown table and PNG
plots under benchmarks/results/<machine>/.

- Latency: model x backend x precision x resolution x batch; median, p90, p99 after warm-up.
  ONNX Runtime's run() returns after the device has finished (its CUDA provider synchronises), so
  wall-clock timing around it is the GPU time plus the copies.
- Limit: FLOPs of the model's convolutions at that size (ONNX shape inference) over the machine's
  peak, measured on the spot with a large float32 matrix product; bandwidth from a large copy.
- Catalog throughput: decode -> matte -> encode -> write on a folder, in images/s and MP/s, with
  CPU utilisation and peak resident memory sampled during the run.
- Accuracy: SAD, MSE, gradient and connectivity errors (alphamatting.com definitions) against the
  exact alpha of synthetic product shots at 1, 4 and 16 MP (real photos for texture and backdrop).
- Peers, same images, same run: the plain rembg-style loop on the same model; the ModelScope
  whole-graph pipeline when the CV-UNet graph is installed; our configurations (tiles on/off,
  guided or learned refiner, FP32/FP16/INT8, distilled students).

    cvmatte bench [--quick] [--models u2netp cvunet-s] [--backends onnxruntime] [--out DIR]
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from cvmatte import Matter
from cvmatte.benchmarks.pipeline_vs_loop import plain_loop, plain_mask
from cvmatte.benchmarks.samples import SCENES, make_composite, write_demo_photos
from cvmatte.engine import metrics, zoo
from cvmatte.engine.errors import CvmatteError
from cvmatte.engine.onnx_graph import conv_flops
from cvmatte.engine.preprocess import normalize, resize

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class BenchConfig:
    quick: bool = False
    models: list[str] = field(default_factory=lambda: ["u2netp"])
    backends: list[str] = field(default_factory=lambda: ["onnxruntime"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16", "int8"])
    resolutions: list[int] = field(default_factory=lambda: [320, 512, 768])
    batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    repeats: int = 10
    accuracy_megapixels: list[float] = field(default_factory=lambda: [1.0, 4.0, 16.0])
    scenes: int = 3
    catalog_composites: int = 12
    catalog_megapixels: float = 2.0
    out: Path | None = None

    @classmethod
    def quick_config(cls, **overrides) -> "BenchConfig":
        """Under two minutes on a 2-core CPU: one model in FP32 at its own size, small sets."""
        base = dict(quick=True, precisions=["fp32"], resolutions=[320], batches=[1, 4], repeats=8,
                    accuracy_megapixels=[1.0], scenes=2, catalog_composites=3, catalog_megapixels=1.0)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


# ----------------------------------------------------------------------------- the machine


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "isa": cpu_isa(), "cores": _cores(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "gpu": gpu_name(), "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    import cv2
    import onnx
    import onnxruntime as ort

    import cvmatte

    info["versions"] = {"cvmatte": cvmatte.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                        "numpy": np.__version__, "opencv": cv2.__version__}
    info["onnxruntime_providers"] = ort.get_available_providers()
    return info


def _cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_isa() -> str:
    """The widest vector extension the CPU has (the development machines differ: AVX2 or AVX-512)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.machine()
    for isa in ("amx_tile", "avx512_vnni", "avx512f", "avx2", "neon", "asimd"):
        if isa in flags:
            return isa.replace("_tile", "").replace("avx512f", "avx512")
    return platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine_slug(info: dict) -> str:
    """A folder name for the machine: the GPU's name, or cpu-<cores>core-<model>-<vector ISA>."""
    if info.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    words = [w for w in re.sub(r"[^a-z0-9 ]+", " ", info["cpu"].lower()).split()
             if w not in {"amd", "intel", "r", "tm", "cpu", "processor", "core", "with", "radeon", "graphics"}]
    isa = info.get("isa", "").replace("_", "")
    return "-".join(x for x in [f"cpu-{info['cores']}core", *words[:2], isa] if x)


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


def _peak_for(backend, precision: str, peak: dict) -> float:
    """The limit a figure is read against: the GPU's matrix-product rate in the model's precision
    when the backend runs on a GPU, else the CPU's."""
    if getattr(backend, "on_gpu", False) and "gpu_fp32_gflops" in peak:
        return peak["gpu_fp16_gflops" if precision in ("fp16", "int8") else "gpu_fp32_gflops"]
    return peak["cpu_gflops"]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class ResourceSampler:
    """Peak resident memory (sampled at 50 Hz from /proc) and CPU utilisation of this process
    over a with-block: CPU seconds / (wall seconds x cores); on a machine with nvidia-smi, the
    GPU's mean utilisation and peak memory used, sampled twice a second."""

    gpu_util: float | None = None
    gpu_peak_mib: float | None = None

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0, self._cpu0 = time.perf_counter(), self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self._t0
        self.cpu_util = (self._cpu() - self._cpu0) / max(1e-9, self.wall * _cores())

    def _run(self):
        gpu = [] if gpu_name() else None
        last_gpu = 0.0
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())
            if gpu is not None and time.perf_counter() - last_gpu > 0.5:
                last_gpu = time.perf_counter()
                sample = _nvidia_smi_sample()
                if sample:
                    gpu.append(sample)
        if gpu:
            self.gpu_util = float(np.mean([u for u, _ in gpu])) / 100.0
            self.gpu_peak_mib = float(max(m for _, m in gpu))

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _nvidia_smi_sample() -> tuple[float, float] | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        util, mem = out.stdout.strip().splitlines()[0].split(",")
        return float(util), float(mem)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- models


def model_variants(cfg: BenchConfig, work: Path, log) -> dict[str, tuple[str, str | Path]]:
    """label -> (precision, model) for every requested model and precision. FP16/INT8 files come
    from the export toolchain and are kept under <out>/models/ for the next run."""
    variants = {}
    for name in cfg.models:
        try:
            resolved = zoo.resolve(name)
        except CvmatteError as e:
            log(f"skipping {name}: {e}")
            continue
        variants[f"{name} fp32"] = ("fp32", name)
        wanted = [p for p in cfg.precisions if p != "fp32"]
        if not wanted:
            continue
        folder = work / resolved.spec.name
        missing = [p for p in wanted if not (folder / f"{resolved.spec.name}.{p}.onnx").is_file()]
        if missing:
            from cvmatte.export.convert import export

            log(f"exporting {name} to {', '.join(missing)} (kept in {folder} for the next run)")
            export(name, folder, precisions=["fp32", *missing], log=lambda *_: None)
        for p in wanted:
            variants[f"{name} {p}"] = (p, folder / f"{resolved.spec.name}.{p}.onnx")
    return variants


# ----------------------------------------------------------------------------- latency


def latency(cfg: BenchConfig, variants: dict, peak: dict, image: np.ndarray, log) -> list[dict]:
    rows = []
    for label, (precision, model) in variants.items():
        for backend in cfg.backends:
            for device in cfg.devices:
                try:
                    m = Matter(model, backend, device)
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
                    gflop = conv_flops(m.model.path, (res, res)) / 1e9
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
                                 "fraction_of_peak": gflop * batch / med / _peak_for(m.backend, precision, peak),
                                 # the host<->device copies' floor: input + output bytes over the pinned H2D rate
                                 "copy_ms_floor": (slot.host_in.nbytes + slot.host_out.nbytes) / peak["h2d_gbs"] / 1e6
                                 if getattr(m.backend, "on_gpu", False) and "h2d_gbs" in peak else None})
                    log(f"latency {label} {res}² batch {batch}: {med * 1e3:.1f} ms")
    return rows


# ----------------------------------------------------------------------------- catalog throughput


def make_catalog(folder: Path, composites: int, megapixels: float) -> list[Path]:
    paths = write_demo_photos(folder)
    for i in range(composites):
        fg, bg = SCENES[i % len(SCENES)]
        c = make_composite(megapixels, seed=200 + i, fg_photo=fg, bg_photo=bg)
        p = folder / f"product_{i:02d}.jpg"
        Image.fromarray(c.rgb).save(p, quality=92)
        paths.append(p)
    return paths


def catalog_configs(cfg: BenchConfig) -> dict[str, dict]:
    """name -> Matter keyword arguments (or {"plain_loop": model}) for the throughput and accuracy runs."""
    configs = {}
    for name in cfg.models:
        configs[f"plain loop (rembg-style), {name}"] = {"plain_loop": name}
        configs[f"cvmatte {name}, no tiles"] = {"model": name, "tile": False}
        configs[f"cvmatte {name}, tiles + guided filter"] = {"model": name}
        if "cvunet-refiner" in zoo.ZOO:
            configs[f"cvmatte {name}, tiles + learned refiner"] = {"model": name, "refiner": "cvunet-refiner"}
    return configs


def _matter(kwargs: dict) -> Matter:
    kw = dict(kwargs)
    return Matter(kw.pop("model"), device="cpu", **kw)


def throughput(cfg: BenchConfig, configs: dict, folder: Path, log) -> list[dict]:
    paths = make_catalog(folder / "in", cfg.catalog_composites, cfg.catalog_megapixels)
    mpix = sum(np.prod(Image.open(p).size) for p in paths) / 1e6
    rows = []
    for name, kwargs in configs.items():
        out = folder / "out" / re.sub(r"[^a-z0-9]+", "_", name.lower())
        if "plain_loop" in kwargs:
            resolved = zoo.resolve(kwargs["plain_loop"])

            def run(o):
                plain_loop(paths, resolved.path, resolved.spec, o)
        else:
            m = _matter(kwargs)

            def run(o):
                return m.matte_files(paths, o).batching
        run(out / "warm")  # thread pools, ONNX Runtime's first-run setup, file caches
        with ResourceSampler() as s:
            batching = run(out / "timed")
        rows.append({"config": name, "images": len(paths), "megapixels": mpix, "seconds": s.wall,
                     "images_per_s": len(paths) / s.wall, "mp_per_s": mpix / s.wall, "cpu_util": s.cpu_util,
                     "peak_rss_mib": s.peak / 2 ** 20, "rss_growth_mib": (s.peak - s.start) / 2 ** 20,
                     "model_busy": batching.busy_fraction if batching else None,
                     "gpu_util": s.gpu_util, "gpu_peak_mib": s.gpu_peak_mib,
                     "batch_fill": batching.fill if batching else None})
        log(f"throughput {name}: {len(paths) / s.wall:.2f} images/s")
    return rows


# ----------------------------------------------------------------------------- accuracy


def plain_alpha(session, spec, rgb: np.ndarray) -> np.ndarray:
    """The rembg-style loop's alpha for one image (pipeline_vs_loop.plain_mask)."""
    return np.asarray(plain_mask(session, spec, Image.fromarray(rgb)), np.float32) / 255.0


def accuracy(cfg: BenchConfig, configs: dict, variants: dict, log) -> list[dict]:
    import onnxruntime as ort

    runners = {}
    for name, kwargs in configs.items():
        if "plain_loop" in kwargs:
            resolved = zoo.resolve(kwargs["plain_loop"])
            session = ort.InferenceSession(str(resolved.path), providers=["CPUExecutionProvider"])
            runners[name] = lambda rgb, s=session, sp=resolved.spec: plain_alpha(s, sp, rgb)
        else:
            runners[name] = lambda rgb, m=_matter(kwargs): m.engine.matte(rgb).alpha
    for label, (precision, model) in variants.items():
        if precision != "fp32":
            runners[f"cvmatte {label}, tiles + guided filter"] = \
                lambda rgb, m=Matter(model, device="cpu"): m.engine.matte(rgb).alpha
    rows = []
    for mp in cfg.accuracy_megapixels:
        for seed, (fg, bg) in enumerate(SCENES[:cfg.scenes]):
            c = make_composite(mp, seed=seed, fg_photo=fg, bg_photo=bg)
            for name, run in runners.items():
                t0 = time.perf_counter()
                a = run(c.rgb)
                rows.append({"config": name, "megapixels": mp, "scene": f"{fg.split('.')[0]} on {bg.split('.')[0]}",
                             "sad": metrics.sad(a, c.alpha), "mse": metrics.mse(a, c.alpha),
                             "grad": metrics.gradient_error(a, c.alpha), "conn": metrics.connectivity_error(a, c.alpha),
                             "seconds": time.perf_counter() - t0})
            log(f"accuracy {mp:g} MP scene {seed}: {len(runners)} configurations")
    return rows


def modelscope_peer() -> str:
    """The stock ModelScope pipeline needs the CV-UNet graph and ModelScope/TensorFlow; say why not."""
    if zoo.cached("cv-unet-universal") is None:
        return ("not run: the CV-UNet graph is not installed on this machine (ModelScope hub unreachable); "
                "`cvmatte models --fetch cv-unet-universal` where it is reachable")
    return "not run: the ModelScope whole-graph peer needs `pip install 'cvmatte[modelscope]'` and TensorFlow"


# ----------------------------------------------------------------------------- report


def summarize_accuracy(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["config"], r["megapixels"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for config, mp in keys:
        mine = [r for r in rows if r["config"] == config and r["megapixels"] == mp]
        out.append({"config": config, "megapixels": mp, "images": len(mine),
                    **{k: float(np.mean([r[k] for r in mine])) for k in ("sad", "mse", "grad", "conn", "seconds")}})
    return out


def markdown(report: dict) -> str:
    m, peak = report["machine"], report["peak"]
    lines = [f"# cvmatte bench{' --quick' if report['config']['quick'] else ''}: {report['slug']}", "",
             f"{m['cpu']} ({m.get('isa', '?')}), {m['cores']} cores, {m['memory_gib']} GiB; GPU: {m['gpu'] or 'none'}; "
             f"{m['platform']}; {m['date']}", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}", "",
             f"Measured peak: {peak['cpu_gflops']:.0f} GFLOP/s (float32 matrix product), "
             f"{peak['cpu_gbs']:.1f} GB/s (copy)" + (
                 f"; GPU {peak['gpu_fp32_gflops'] / 1e3:.1f} TFLOP/s FP32, {peak['gpu_fp16_gflops'] / 1e3:.1f} TFLOP/s "
                 f"FP16, {peak['gpu_gbs']:.0f} GB/s device copy, {peak['h2d_gbs']:.1f} GB/s pinned upload"
                 if "gpu_fp32_gflops" in peak else ""), "",
             "## Latency", "",
             "| model | device | precision | resolution | batch | median ms | p90 ms | p99 ms | compute ms | ms/image | "
             "GFLOP/image | GFLOP/s | of peak |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["latency"]:
        lines.append(f"| {r['model']} | {r['device']} | {r['precision']} | {r['resolution']} | {r['batch']} | "
                     f"{r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r.get('compute_ms', float('nan')):.1f} | "
                     f"{r['ms_per_image']:.1f} | {r['gflop_per_image']:.2f} | "
                     f"{r['gflops_achieved']:.1f} | {r['fraction_of_peak']:.0%} |")
    t = report["throughput"]
    lines += ["", f"## Catalog throughput ({t[0]['images'] if t else 0} images, "
              f"{t[0]['megapixels'] if t else 0:.1f} MP, decode -> matte -> encode -> write)", "",
              "| configuration | images/s | MP/s | CPU utilisation | model busy | batch fill | GPU utilisation | "
              "peak RSS MiB (process) | RSS growth in the run MiB |", "|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    for r in t:
        lines.append(f"| {r['config']} | {r['images_per_s']:.2f} | {r['mp_per_s']:.2f} | {r['cpu_util']:.0%} | "
                     f"{pct(r.get('model_busy'))} | {pct(r.get('batch_fill'))} | {pct(r.get('gpu_util'))} | "
                     f"{r['peak_rss_mib']:.0f} | {r['rss_growth_mib']:.0f} |")
    lines += ["", "## Accuracy against exact alpha (synthetic product shots; means over scenes)", "",
              "| MP | configuration | SAD | MSE ×1e3 | gradient | connectivity | s/image |", "|---|---|---|---|---|---|---|"]
    for r in report["accuracy_summary"]:
        lines.append(f"| {r['megapixels']:g} | {r['config']} | {r['sad']:.2f} | {r['mse'] * 1e3:.2f} | {r['grad']:.2f} | "
                     f"{r['conn']:.2f} | {r['seconds']:.2f} |")
    lines += ["", f"ModelScope whole-graph pipeline: {report['modelscope']}", ""]
    return "\n".join(lines)


def plots(report: dict, out: Path, prefix: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    lat = report["latency"]
    by_resolution = {" ".join(key): sorted((r for r in lat if (r["model"], r["precision"]) == key and r["batch"] == 1),
                                           key=lambda r: r["resolution"])
                     for key in sorted({(r["model"], r["precision"]) for r in lat})}
    by_batch = {f"{k[0]} {k[1]} {k[2]}²": sorted((r for r in lat if (r["model"], r["precision"], r["resolution"]) == k),
                                                 key=lambda r: r["batch"])
                for k in sorted({(r["model"], r["precision"], r["resolution"]) for r in lat})}
    by_batch = {k: v for k, v in by_batch.items() if len(v) > 1}  # sizes timed at batch 1 only are the other plot
    figures = [("latency_vs_resolution", by_resolution, "resolution", "median_ms", "input side (px)",
                "median latency, batch 1 (ms)", "Latency against resolution"),
               ("throughput_vs_batch", by_batch, "batch", "images_per_s", "batch", "images/s (model only)",
                "Throughput against batch")]
    written = []
    for name, series, x, y, xlabel, ylabel, title in figures:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, rows in series.items():
            ax.plot([r[x] for r in rows], [r[y] for r in rows], "o-", label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out / f"{prefix}_{name}.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def run(cfg: BenchConfig, log=print) -> dict:
    info = machine_info()
    slug = machine_slug(info)
    out = Path(cfg.out) if cfg.out else RESULTS / slug
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"machine {slug}: {info['cpu']}, {info['cores']} cores, GPU {info['gpu'] or 'none'}")
    peak = measured_peak()
    log(f"peak {peak['cpu_gflops']:.0f} GFLOP/s, {peak['cpu_gbs']:.1f} GB/s")
    variants = model_variants(cfg, out / "models", log)
    configs = catalog_configs(cfg)
    with tempfile.TemporaryDirectory(prefix="cvmatte-bench-") as tmp:
        tmp = Path(tmp)
        image = np.asarray(Image.open(write_demo_photos(tmp / "one")[0]).convert("RGB"))
        report = {"slug": slug, "machine": info, "peak": peak,
                  "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                  "latency": latency(cfg, variants, peak, image, log),
                  "throughput": throughput(cfg, configs, tmp, log)}
    acc = accuracy(cfg, configs, variants, log)
    report.update(accuracy=acc, accuracy_summary=summarize_accuracy(acc), modelscope=modelscope_peer(),
                  seconds=time.perf_counter() - t0)
    name = "quick" if cfg.quick else "full"
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(markdown(report))
    report["files"] = [str(out / f"{name}.json"), str(out / f"{name}.md")] + [str(p) for p in plots(report, out, name)]
    log(f"wrote {', '.join(report['files'])} in {report['seconds']:.0f} s")
    return report
